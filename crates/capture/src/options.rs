//! Capture options: the raw wire form ([`RawCaptureOptions`], deserializable from a query
//! string or JSON) and the validated form ([`CaptureOptions`]), plus the cache key.
//!
//! Parse, don't validate: a [`CaptureOptions`] can only be built by
//! [`CaptureOptions::parse`], so code holding one knows every field is in range. The
//! network policy (scheme, forbidden addresses) is *not* checked here: it needs DNS and lives
//! in [`crate::guard`]; [`crate::CaptureService::check_target`] runs it without a browser.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use crate::error::OptionError;

/// Widest viewport accepted, in CSS pixels.
pub const MAX_WIDTH: u32 = 3840;
/// Tallest viewport accepted, in CSS pixels.
pub const MAX_HEIGHT: u32 = 10_000;
/// Longest `delay`, in milliseconds.
pub const MAX_DELAY_MS: u64 = 10_000;
/// Longest `timeout`, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 60;
/// Longest `cacheTtl`, in seconds (30 days).
pub const MAX_CACHE_TTL_SECS: u64 = 2_592_000;
/// Largest `html` document accepted, in bytes (it travels as a `data:` URL).
pub const MAX_HTML_BYTES: usize = 1_000_000;
/// Longest `url`, in bytes.
pub const MAX_URL_BYTES: usize = 8_192;
/// Longest CSS selector, in bytes.
pub const MAX_SELECTOR_BYTES: usize = 1_024;
/// Quality used for jpeg when none is given.
pub const DEFAULT_JPEG_QUALITY: u8 = 80;

/// A scalar as it arrives: a query string gives text, JSON gives numbers and booleans.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawValue {
    /// A JSON boolean.
    Bool(bool),
    /// A JSON integer.
    Int(i64),
    /// A JSON number with a fraction.
    Float(f64),
    /// Text (every value of a query string).
    Text(String),
}

impl From<&str> for RawValue {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}
impl From<i64> for RawValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<bool> for RawValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

/// The options exactly as a client sent them (camelCase), before validation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawCaptureOptions {
    pub url: Option<String>,
    pub html: Option<String>,
    pub width: Option<RawValue>,
    pub height: Option<RawValue>,
    pub full_page: Option<RawValue>,
    pub format: Option<String>,
    pub quality: Option<RawValue>,
    pub device_scale_factor: Option<RawValue>,
    pub delay: Option<RawValue>,
    pub wait_for_selector: Option<String>,
    pub selector: Option<String>,
    pub dark_mode: Option<RawValue>,
    pub timeout: Option<RawValue>,
    pub cache: Option<RawValue>,
    pub cache_ttl: Option<RawValue>,
    pub wait_until: Option<String>,
    /// `"x,y,width,height"`, or a JSON object with those four keys.
    pub clip: Option<serde_json::Value>,
    pub omit_background: Option<RawValue>,
    /// One selector, or a list (the parameter repeated in a query string, an array in JSON).
    pub hide_selectors: Option<serde_json::Value>,
    pub css: Option<String>,
    pub js: Option<String>,
    pub user_agent: Option<String>,
    /// `{"Name": "value"}`, or a list of `"Name: value"` (the parameter repeated in a query).
    pub headers: Option<serde_json::Value>,
    /// `{"name": "value"}`, or a list of `"name=value"` (the parameter repeated in a query).
    pub cookies: Option<serde_json::Value>,
    pub time_zone: Option<String>,
    pub reduced_motion: Option<RawValue>,
    pub block_ads: Option<RawValue>,
    pub block_cookie_banners: Option<RawValue>,
    pub fresh: Option<RawValue>,
}

/// The query-string parameters that may be repeated: each occurrence adds one entry.
const LIST_PARAMS: [&str; 3] = ["hideSelectors", "headers", "cookies"];
/// The query-string parameters that take one value.
const SCALAR_PARAMS: [&str; 26] = [
    "url",
    "html",
    "width",
    "height",
    "fullPage",
    "format",
    "quality",
    "deviceScaleFactor",
    "delay",
    "waitForSelector",
    "selector",
    "darkMode",
    "timeout",
    "cache",
    "cacheTtl",
    "waitUntil",
    "clip",
    "omitBackground",
    "css",
    "js",
    "userAgent",
    "timeZone",
    "reducedMotion",
    "blockAds",
    "blockCookieBanners",
    "fresh",
];

impl RawCaptureOptions {
    /// Options from a query string (as sent, percent-encoded). `hideSelectors`, `headers`
    /// and `cookies` may be repeated, each occurrence one entry; any other known parameter
    /// given twice is an error naming it. Unknown parameters are ignored.
    pub fn from_query(query: &str) -> Result<Self, OptionError> {
        let mut map = serde_json::Map::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if let Some(name) = LIST_PARAMS.iter().find(|n| **n == k) {
                let entry = map
                    .entry((*name).to_owned())
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let serde_json::Value::Array(a) = entry {
                    a.push(serde_json::Value::String(v.into_owned()));
                }
            } else if let Some(name) = SCALAR_PARAMS.iter().find(|n| **n == k) {
                if map
                    .insert(
                        (*name).to_owned(),
                        serde_json::Value::String(v.into_owned()),
                    )
                    .is_some()
                {
                    return Err(OptionError::new(
                        name,
                        format!(
                            "{name} is given more than once (only {} may be repeated)",
                            LIST_PARAMS.join(", ")
                        ),
                    ));
                }
            }
        }
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| OptionError::new("query", format!("the query string is malformed: {e}")))
    }

    /// For options that came as a JSON body: a number or a boolean given as a string
    /// (`"width": "800"`, `"fullPage": "true"`) is a wrong type, named by its field. A
    /// query string carries only text, so this check is for JSON alone.
    pub fn check_json_types(&self) -> Result<(), OptionError> {
        let fields: [(&'static str, &Option<RawValue>, &str); 15] = [
            ("width", &self.width, "a JSON integer"),
            ("height", &self.height, "a JSON integer"),
            ("fullPage", &self.full_page, "a JSON boolean"),
            ("quality", &self.quality, "a JSON integer"),
            (
                "deviceScaleFactor",
                &self.device_scale_factor,
                "a JSON number",
            ),
            ("delay", &self.delay, "a JSON integer"),
            ("darkMode", &self.dark_mode, "a JSON boolean"),
            ("timeout", &self.timeout, "a JSON integer"),
            ("cache", &self.cache, "a JSON boolean"),
            ("cacheTtl", &self.cache_ttl, "a JSON integer"),
            ("omitBackground", &self.omit_background, "a JSON boolean"),
            ("reducedMotion", &self.reduced_motion, "a JSON boolean"),
            ("blockAds", &self.block_ads, "a JSON boolean"),
            (
                "blockCookieBanners",
                &self.block_cookie_banners,
                "a JSON boolean",
            ),
            ("fresh", &self.fresh, "a JSON boolean"),
        ];
        for (field, value, wanted) in fields {
            if let Some(RawValue::Text(t)) = value {
                return Err(OptionError::new(
                    field,
                    format!("{field} must be {wanted}, not the string {t:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Png,
    Jpeg,
    Webp,
    Pdf,
}

impl Format {
    /// The `Content-Type` of the bytes.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
            Self::Pdf => "application/pdf",
        }
    }

    /// A file extension without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
            Self::Pdf => "pdf",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "png" => Some(Self::Png),
            "jpeg" | "jpg" => Some(Self::Jpeg),
            "webp" => Some(Self::Webp),
            "pdf" => Some(Self::Pdf),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Webp => "webp",
            Self::Pdf => "pdf",
        })
    }
}

/// What to load: a URL, or an HTML document given inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A URL; its scheme and address are checked by the guard, not by parsing.
    Url(Url),
    /// An HTML document, loaded as a `data:` URL (its subresources go through the guard).
    Html(String),
}

/// When the page counts as loaded (`waitUntil`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitUntil {
    /// The `load` event (the default).
    #[default]
    Load,
    /// `DOMContentLoaded`: the document is parsed, images and frames may still load.
    DomContentLoaded,
    /// `load`, then no network request in flight for [`NETWORK_IDLE_MS`].
    NetworkIdle,
}

/// Quiet time that counts as network idle, in milliseconds.
pub const NETWORK_IDLE_MS: u64 = 500;
/// Largest `css` or `js`, in bytes.
pub const MAX_INJECT_BYTES: usize = 100_000;
/// Most entries of `hideSelectors`, `headers` or `cookies`.
pub const MAX_LIST_ENTRIES: usize = 50;
/// Longest `userAgent`, in bytes.
pub const MAX_USER_AGENT_BYTES: usize = 512;
/// Longest header or cookie value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4_096;
/// Largest clip offset (`x`, `y`), in CSS pixels.
pub const MAX_CLIP_OFFSET: u32 = 16_384;

/// A rectangle of the page in CSS pixels (`clip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Clip {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Validated capture options. Build with [`CaptureOptions::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureOptions {
    target: Target,
    width: u32,
    height: u32,
    full_page: bool,
    format: Format,
    quality: Option<u8>,
    device_scale_factor: f64,
    delay_ms: u64,
    wait_for_selector: Option<String>,
    selector: Option<String>,
    dark_mode: bool,
    timeout_secs: Option<u64>,
    cache: bool,
    cache_ttl_secs: Option<u64>,
    wait_until: WaitUntil,
    clip: Option<Clip>,
    omit_background: bool,
    hide_selectors: Vec<String>,
    css: Option<String>,
    js: Option<String>,
    user_agent: Option<String>,
    headers: Vec<(String, String)>,
    cookies: Vec<(String, String)>,
    time_zone: Option<String>,
    reduced_motion: bool,
    block_ads: bool,
    block_cookie_banners: bool,
    fresh: bool,
}

impl CaptureOptions {
    /// Validate raw options. The error names the first wrong field and what is allowed.
    pub fn parse(raw: RawCaptureOptions) -> Result<Self, OptionError> {
        let url = raw.url.filter(|s| !s.is_empty());
        let html = raw.html.filter(|s| !s.is_empty());
        let target = match (url, html) {
            (Some(_), Some(_)) => {
                return Err(OptionError::new("url", "give either url or html, not both"))
            }
            (None, None) => {
                return Err(OptionError::new(
                    "url",
                    "url is required (an http or https URL), unless html is given",
                ))
            }
            (Some(u), None) => Target::Url(parse_url(&u)?),
            (None, Some(h)) => {
                if h.len() > MAX_HTML_BYTES {
                    return Err(OptionError::new(
                        "html",
                        format!("html must be at most {MAX_HTML_BYTES} bytes"),
                    ));
                }
                Target::Html(h)
            }
        };

        let format = match raw.format.as_deref().map(str::trim) {
            None | Some("") => Format::Png,
            Some(f) => Format::parse(f).ok_or_else(|| {
                OptionError::new("format", "format must be one of png, jpeg, webp, pdf")
            })?,
        };
        let width =
            int_in(raw.width, "width", 1, MAX_WIDTH as i64, "pixels")?.unwrap_or(1280) as u32;
        let height =
            int_in(raw.height, "height", 1, MAX_HEIGHT as i64, "pixels")?.unwrap_or(800) as u32;
        let quality =
            match int_in(raw.quality, "quality", 1, 100, "").map_err(|_| quality_error())? {
                None => None,
                Some(_) if !matches!(format, Format::Jpeg | Format::Webp) => {
                    return Err(quality_error())
                }
                Some(q) => Some(q as u8),
            };
        let device_scale_factor = match raw.device_scale_factor {
            None => 1.0,
            Some(v) => {
                let msg = "deviceScaleFactor must be a number from 1 to 3 (at most two decimals)";
                let f = match v {
                    RawValue::Int(i) => i as f64,
                    RawValue::Float(f) => f,
                    RawValue::Text(t) => t
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| OptionError::new("deviceScaleFactor", msg))?,
                    RawValue::Bool(_) => return Err(OptionError::new("deviceScaleFactor", msg)),
                };
                let hundredths = (f * 100.0).round();
                if !f.is_finite()
                    || !(1.0..=3.0).contains(&f)
                    || (hundredths - f * 100.0).abs() > 1e-6
                {
                    return Err(OptionError::new("deviceScaleFactor", msg));
                }
                hundredths / 100.0
            }
        };
        let delay_ms =
            int_in(raw.delay, "delay", 0, MAX_DELAY_MS as i64, "milliseconds")?.unwrap_or(0) as u64;
        let wait_for_selector = selector_field(raw.wait_for_selector, "waitForSelector")?;
        let selector = selector_field(raw.selector, "selector")?;
        let full_page = bool_field(raw.full_page, "fullPage")?.unwrap_or(false);
        if selector.is_some() && format == Format::Pdf {
            return Err(OptionError::new(
                "selector",
                "selector cannot be used with format pdf",
            ));
        }
        if selector.is_some() && full_page {
            return Err(OptionError::new(
                "fullPage",
                "fullPage cannot be combined with selector (the element is captured whole)",
            ));
        }
        let dark_mode = bool_field(raw.dark_mode, "darkMode")?.unwrap_or(false);
        let timeout_secs = int_in(
            raw.timeout,
            "timeout",
            1,
            MAX_TIMEOUT_SECS as i64,
            "seconds",
        )?
        .map(|v| v as u64);
        let cache = bool_field(raw.cache, "cache")?.unwrap_or(true);
        let cache_ttl_secs = int_in(
            raw.cache_ttl,
            "cacheTtl",
            1,
            MAX_CACHE_TTL_SECS as i64,
            "seconds",
        )?
        .map(|v| v as u64);

        let wait_until = match raw.wait_until.as_deref().map(str::trim) {
            None | Some("") => WaitUntil::Load,
            Some(w) => match w.to_ascii_lowercase().as_str() {
                "load" => WaitUntil::Load,
                "domcontentloaded" => WaitUntil::DomContentLoaded,
                "networkidle" => WaitUntil::NetworkIdle,
                _ => {
                    return Err(OptionError::new(
                        "waitUntil",
                        "waitUntil must be one of load, domcontentloaded, networkidle",
                    ))
                }
            },
        };
        let clip = parse_clip(raw.clip)?;
        if clip.is_some() {
            let clash = if format == Format::Pdf {
                Some("format pdf")
            } else if selector.is_some() {
                Some("selector")
            } else if full_page {
                Some("fullPage")
            } else {
                None
            };
            if let Some(other) = clash {
                return Err(OptionError::new(
                    "clip",
                    format!("clip cannot be combined with {other}"),
                ));
            }
        }
        let omit_background = bool_field(raw.omit_background, "omitBackground")?.unwrap_or(false);
        if omit_background && !matches!(format, Format::Png | Format::Webp) {
            return Err(OptionError::new(
                "omitBackground",
                "omitBackground needs format png or webp (jpeg and pdf have no transparency)",
            ));
        }
        let hide_selectors = parse_hide_selectors(raw.hide_selectors)?;
        let css = text_field(raw.css, "css", MAX_INJECT_BYTES)?;
        let js = text_field(raw.js, "js", MAX_INJECT_BYTES)?;
        let user_agent = match text_field(raw.user_agent, "userAgent", MAX_USER_AGENT_BYTES)? {
            Some(ua) if !ua.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                return Err(OptionError::new(
                    "userAgent",
                    "userAgent must be printable ASCII",
                ))
            }
            ua => ua,
        };
        let headers = parse_pairs(raw.headers, "headers", ':')?;
        for (name, value) in &headers {
            check_header(name, value)?;
        }
        let cookies = parse_pairs(raw.cookies, "cookies", '=')?;
        for (name, value) in &cookies {
            check_cookie(name, value)?;
        }
        for (field, given) in [
            ("headers", !headers.is_empty()),
            ("cookies", !cookies.is_empty()),
        ] {
            if !given {
                continue;
            }
            match &target {
                Target::Html(_) => {
                    return Err(OptionError::new(
                        field,
                        format!("{field} are sent to the target's host, so they need a url (not html)"),
                    ))
                }
                Target::Url(u) if field == "headers" && u.scheme() != "http" => {
                    return Err(OptionError::new(
                        "headers",
                        "headers can only be sent to an http:// url: https traffic passes the capture proxy encrypted, and the browser alone cannot limit extra headers to one host (use cookies, which the browser keeps to the target's host)",
                    ))
                }
                Target::Url(_) => {}
            }
        }
        let time_zone = match raw.time_zone.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(tz) if valid_time_zone(tz) => Some(tz.to_owned()),
            Some(_) => {
                return Err(OptionError::new(
                    "timeZone",
                    "timeZone must be an IANA time zone name such as Europe/Paris, America/New_York or UTC",
                ))
            }
        };
        let reduced_motion = bool_field(raw.reduced_motion, "reducedMotion")?.unwrap_or(false);
        let block_ads = bool_field(raw.block_ads, "blockAds")?.unwrap_or(false);
        let block_cookie_banners =
            bool_field(raw.block_cookie_banners, "blockCookieBanners")?.unwrap_or(false);
        let fresh = bool_field(raw.fresh, "fresh")?.unwrap_or(false);

        Ok(Self {
            target,
            width,
            height,
            // A PDF always holds the whole document; fullPage does not change it.
            full_page: full_page && format != Format::Pdf,
            format,
            quality,
            device_scale_factor,
            delay_ms,
            wait_for_selector,
            selector,
            dark_mode,
            timeout_secs,
            cache,
            cache_ttl_secs,
            wait_until,
            clip,
            omit_background,
            hide_selectors,
            css,
            js,
            user_agent,
            headers,
            cookies,
            time_zone,
            reduced_motion,
            block_ads,
            block_cookie_banners,
            fresh,
        })
    }

    /// A stable key (hex SHA-256) over exactly the options that change the output bytes.
    /// `cache`, `cacheTtl`, `fresh` and `timeout` are left out; the URL is taken in its normalized
    /// form and the html by its own hash. Quality is the effective one (webp without a
    /// quality is lossless and keyed as before).
    pub fn cache_key(&self) -> String {
        #[derive(Serialize)]
        struct Canon<'a> {
            v: u8,
            url: Option<&'a str>,
            html_sha256: Option<String>,
            width: u32,
            height: u32,
            full_page: bool,
            format: Format,
            quality: Option<u8>,
            dpr_hundredths: u32,
            delay_ms: u64,
            wait_for_selector: Option<&'a str>,
            selector: Option<&'a str>,
            dark_mode: bool,
            // The newer options are left out at their defaults, so that the keys of
            // captures that use none of them stay what they were.
            #[serde(skip_serializing_if = "is_load")]
            wait_until: WaitUntil,
            #[serde(skip_serializing_if = "Option::is_none")]
            clip: Option<Clip>,
            #[serde(skip_serializing_if = "is_false")]
            omit_background: bool,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            hide_selectors: &'a [String],
            #[serde(skip_serializing_if = "Option::is_none")]
            css: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            js: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            user_agent: Option<&'a str>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            headers: &'a [(String, String)],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            cookies: &'a [(String, String)],
            #[serde(skip_serializing_if = "Option::is_none")]
            time_zone: Option<&'a str>,
            #[serde(skip_serializing_if = "is_false")]
            reduced_motion: bool,
            #[serde(skip_serializing_if = "is_false")]
            block_ads: bool,
            #[serde(skip_serializing_if = "is_false")]
            block_cookie_banners: bool,
        }
        fn is_false(b: &bool) -> bool {
            !*b
        }
        fn is_load(w: &WaitUntil) -> bool {
            *w == WaitUntil::Load
        }
        let (url, html_sha256) = match &self.target {
            Target::Url(u) => (Some(u.as_str()), None),
            Target::Html(h) => (None, Some(hex(&Sha256::digest(h.as_bytes())))),
        };
        let canon = Canon {
            v: 1,
            url,
            html_sha256,
            width: self.width,
            height: self.height,
            full_page: self.full_page,
            format: self.format,
            quality: self.effective_quality(),
            dpr_hundredths: (self.device_scale_factor * 100.0).round() as u32,
            delay_ms: self.delay_ms,
            wait_for_selector: self.wait_for_selector.as_deref(),
            selector: self.selector.as_deref(),
            dark_mode: self.dark_mode,
            wait_until: self.wait_until,
            clip: self.clip,
            omit_background: self.omit_background,
            hide_selectors: &self.hide_selectors,
            css: self.css.as_deref(),
            js: self.js.as_deref(),
            user_agent: self.user_agent.as_deref(),
            headers: &self.headers,
            cookies: &self.cookies,
            time_zone: self.time_zone.as_deref(),
            reduced_motion: self.reduced_motion,
            block_ads: self.block_ads,
            block_cookie_banners: self.block_cookie_banners,
        };
        // Derived `Serialize` over strings, integers, booleans and a unit enum, with no
        // maps: serde_json has nothing to fail on.
        #[allow(clippy::expect_used)]
        let json = serde_json::to_string(&canon).expect("canonical options serialize");
        hex(&Sha256::digest(json.as_bytes()))
    }

    /// What to load.
    pub fn target(&self) -> &Target {
        &self.target
    }
    /// The URL, when the target is one.
    pub fn url(&self) -> Option<&Url> {
        match &self.target {
            Target::Url(u) => Some(u),
            Target::Html(_) => None,
        }
    }
    /// Viewport width in CSS pixels.
    pub fn width(&self) -> u32 {
        self.width
    }
    /// Viewport height in CSS pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Capture the whole scrollable page.
    pub fn full_page(&self) -> bool {
        self.full_page
    }
    /// Output format.
    pub fn format(&self) -> Format {
        self.format
    }
    /// Quality as given (jpeg/webp only).
    pub fn quality(&self) -> Option<u8> {
        self.quality
    }
    /// The quality the encoder uses: jpeg defaults to 80; webp with a quality is lossy
    /// (the browser's encoder), webp without one lossless (none).
    pub fn effective_quality(&self) -> Option<u8> {
        match self.format {
            Format::Jpeg => Some(self.quality.unwrap_or(DEFAULT_JPEG_QUALITY)),
            Format::Webp => self.quality,
            Format::Png | Format::Pdf => None,
        }
    }
    /// Device scale factor, 1..=3.
    pub fn device_scale_factor(&self) -> f64 {
        self.device_scale_factor
    }
    /// Extra wait after load, in milliseconds.
    pub fn delay_ms(&self) -> u64 {
        self.delay_ms
    }
    /// CSS selector to wait for before capturing.
    pub fn wait_for_selector(&self) -> Option<&str> {
        self.wait_for_selector.as_deref()
    }
    /// CSS selector of the one element to capture.
    pub fn selector(&self) -> Option<&str> {
        self.selector.as_deref()
    }
    /// Emulate `prefers-color-scheme: dark`.
    pub fn dark_mode(&self) -> bool {
        self.dark_mode
    }
    /// Time budget of the whole capture in seconds, when given (else the service default).
    pub fn timeout_secs(&self) -> Option<u64> {
        self.timeout_secs
    }
    /// Whether a cached answer may be served (the caller's business; default true).
    pub fn cache(&self) -> bool {
        self.cache
    }
    /// Requested cache lifetime in seconds (the caller's business).
    pub fn cache_ttl_secs(&self) -> Option<u64> {
        self.cache_ttl_secs
    }
    /// When the page counts as loaded.
    pub fn wait_until(&self) -> WaitUntil {
        self.wait_until
    }
    /// The rectangle to capture, when given.
    pub fn clip(&self) -> Option<Clip> {
        self.clip
    }
    /// A transparent page background (png and webp).
    pub fn omit_background(&self) -> bool {
        self.omit_background
    }
    /// Selectors of elements to hide (`display: none`).
    pub fn hide_selectors(&self) -> &[String] {
        &self.hide_selectors
    }
    /// A style sheet to add to the page before the capture.
    pub fn css(&self) -> Option<&str> {
        self.css.as_deref()
    }
    /// A script to run in the page before the capture.
    pub fn js(&self) -> Option<&str> {
        self.js.as_deref()
    }
    /// The `User-Agent` the browser presents.
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }
    /// Extra request headers, sent to the target's own host only.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
    /// Cookies set for the target's own host only.
    pub fn cookies(&self) -> &[(String, String)] {
        &self.cookies
    }
    /// The IANA time zone the page sees.
    pub fn time_zone(&self) -> Option<&str> {
        self.time_zone.as_deref()
    }
    /// Emulate `prefers-reduced-motion: reduce`.
    pub fn reduced_motion(&self) -> bool {
        self.reduced_motion
    }
    /// Refuse requests to the hosts of the shipped ad list (and hide known ad slots).
    pub fn block_ads(&self) -> bool {
        self.block_ads
    }
    /// Hide the elements of the shipped cookie-banner list.
    pub fn block_cookie_banners(&self) -> bool {
        self.block_cookie_banners
    }
    /// Bypass the cache lookup and refresh the entry (the caller's business).
    pub fn fresh(&self) -> bool {
        self.fresh
    }
}

fn parse_clip(v: Option<serde_json::Value>) -> Result<Option<Clip>, OptionError> {
    use serde_json::Value;
    let msg = || {
        OptionError::new(
            "clip",
            format!(
                "clip must be x,y,width,height in CSS pixels (integers; x and y from 0 to {MAX_CLIP_OFFSET}, width from 1 to {MAX_WIDTH}, height from 1 to {MAX_HEIGHT})"
            ),
        )
    };
    let nums: Vec<i64> = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s
            .split(',')
            .map(|p| p.trim().parse::<i64>().map_err(|_| msg()))
            .collect::<Result<_, _>>()?,
        Some(Value::Object(m)) => {
            if m.len() != 4 {
                return Err(msg());
            }
            ["x", "y", "width", "height"]
                .iter()
                .map(|k| m.get(*k).and_then(Value::as_i64).ok_or_else(msg))
                .collect::<Result<_, _>>()?
        }
        Some(_) => return Err(msg()),
    };
    let [x, y, w, h] = nums[..] else {
        return Err(msg());
    };
    let off = 0..=MAX_CLIP_OFFSET as i64;
    if !off.contains(&x)
        || !off.contains(&y)
        || !(1..=MAX_WIDTH as i64).contains(&w)
        || !(1..=MAX_HEIGHT as i64).contains(&h)
    {
        return Err(msg());
    }
    Ok(Some(Clip {
        x: x as u32,
        y: y as u32,
        width: w as u32,
        height: h as u32,
    }))
}

fn parse_hide_selectors(v: Option<serde_json::Value>) -> Result<Vec<String>, OptionError> {
    use serde_json::Value;
    let msg = || {
        OptionError::new(
            "hideSelectors",
            format!("hideSelectors must be a CSS selector or a list of at most {MAX_LIST_ENTRIES} of them"),
        )
    };
    let items: Vec<Value> = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(s @ Value::String(_)) => vec![s],
        Some(_) => return Err(msg()),
    };
    if items.len() > MAX_LIST_ENTRIES {
        return Err(msg());
    }
    let mut out = Vec::new();
    for item in items {
        let Value::String(s) = item else {
            return Err(msg());
        };
        if let Some(sel) = selector_field(Some(s), "hideSelectors")? {
            out.push(sel);
        }
    }
    Ok(out)
}

fn text_field(
    v: Option<String>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, OptionError> {
    match v {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) if s.len() > max || s.contains('\0') => Err(OptionError::new(
            field,
            format!("{field} must be text of at most {max} bytes"),
        )),
        Some(s) => Ok(Some(s)),
    }
}

/// `{"a": "b"}`, `["a<sep>b", ...]` or `"a<sep>b"` as name/value pairs.
fn parse_pairs(
    v: Option<serde_json::Value>,
    field: &'static str,
    sep: char,
) -> Result<Vec<(String, String)>, OptionError> {
    use serde_json::Value;
    let shape = if sep == ':' {
        "Name: value"
    } else {
        "name=value"
    };
    let msg = || {
        OptionError::new(
            field,
            format!(
                "{field} must be an object of names to text values, or a list of at most {MAX_LIST_ENTRIES} \"{shape}\" (the parameter repeated in a query string)"
            ),
        )
    };
    let split = |s: &str| -> Result<(String, String), OptionError> {
        let (n, v) = s.split_once(sep).ok_or_else(msg)?;
        Ok((n.trim().to_owned(), v.trim().to_owned()))
    };
    let pairs: Vec<(String, String)> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if s.trim().is_empty() => Vec::new(),
        Some(Value::String(s)) => vec![split(&s)?],
        Some(Value::Array(a)) => a
            .iter()
            .map(|i| i.as_str().ok_or_else(msg).and_then(split))
            .collect::<Result<_, _>>()?,
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(msg)?.to_owned())))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(msg()),
    };
    if pairs.len() > MAX_LIST_ENTRIES {
        return Err(msg());
    }
    Ok(pairs)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Headers the capture sets itself, or that would change how the request travels.
const RESERVED_HEADERS: [&str; 14] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-authorization",
    "proxy-connection",
    "cookie",
    "user-agent",
    "accept-encoding",
];

fn check_header(name: &str, value: &str) -> Result<(), OptionError> {
    if !is_token(name) {
        return Err(OptionError::new(
            "headers",
            format!("headers: {name:?} is not a valid header name"),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
        return Err(OptionError::new(
            "headers",
            format!("headers: {name} cannot be set (use cookies for Cookie and userAgent for User-Agent; Host, Connection, Content-Length, Transfer-Encoding, Proxy-* and the like belong to the capture)"),
        ));
    }
    if value.len() > MAX_VALUE_BYTES
        || !value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(OptionError::new(
            "headers",
            format!("headers: the value of {name} must be printable ASCII of at most {MAX_VALUE_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn check_cookie(name: &str, value: &str) -> Result<(), OptionError> {
    if !is_token(name) {
        return Err(OptionError::new(
            "cookies",
            format!("cookies: {name:?} is not a valid cookie name"),
        ));
    }
    let ok = value.len() <= MAX_VALUE_BYTES
        && value
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && !b",;\\\"".contains(&b));
    if !ok {
        return Err(OptionError::new(
            "cookies",
            format!("cookies: the value of {name} must be printable ASCII without spaces, commas, semicolons, quotes or backslashes, at most {MAX_VALUE_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// `UTC`, or an IANA name: `Area/Location` parts of letters, digits, `_`, `-`, `+`.
fn valid_time_zone(tz: &str) -> bool {
    if tz.len() > 64 {
        return false;
    }
    if matches!(tz, "UTC" | "GMT") {
        return true;
    }
    let mut parts = tz.split('/');
    let first_ok = parts
        .next()
        .is_some_and(|p| p.len() >= 2 && p.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_'));
    let parts: Vec<&str> = parts.collect();
    first_ok
        && !parts.is_empty()
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-+".contains(&b))
        })
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn quality_error() -> OptionError {
    OptionError::new(
        "quality",
        "quality must be an integer from 1 to 100 (only for jpeg and webp)",
    )
}

fn parse_url(raw: &str) -> Result<Url, OptionError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(OptionError::new(
            "url",
            format!("url must be at most {MAX_URL_BYTES} bytes"),
        ));
    }
    if raw.trim() != raw {
        return Err(OptionError::new(
            "url",
            "url must not start or end with whitespace",
        ));
    }
    let url = Url::parse(raw).map_err(|e| {
        OptionError::new(
            "url",
            format!("url must be an absolute http or https URL ({e})"),
        )
    })?;
    if matches!(url.scheme(), "http" | "https") && url.host().is_none() {
        return Err(OptionError::new("url", "url must have a host"));
    }
    Ok(url)
}

fn selector_field(v: Option<String>, field: &'static str) -> Result<Option<String>, OptionError> {
    match v {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) if s.len() > MAX_SELECTOR_BYTES || s.contains('\0') => Err(OptionError::new(
            field,
            format!("{field} must be a CSS selector of at most {MAX_SELECTOR_BYTES} bytes"),
        )),
        Some(s) => match crate::selector::check(&s) {
            Ok(()) => Ok(Some(s)),
            Err(why) => Err(OptionError::new(
                field,
                format!("{field} is not a valid CSS selector: {why}"),
            )),
        },
    }
}

fn int_in(
    v: Option<RawValue>,
    field: &'static str,
    min: i64,
    max: i64,
    unit: &str,
) -> Result<Option<i64>, OptionError> {
    let err = || {
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" ({unit})")
        };
        OptionError::new(
            field,
            format!("{field} must be an integer from {min} to {max}{unit}"),
        )
    };
    let n = match v {
        None => return Ok(None),
        Some(RawValue::Int(i)) => i,
        Some(RawValue::Text(t)) if t.trim().is_empty() => return Ok(None),
        Some(RawValue::Text(t)) => t.trim().parse::<i64>().map_err(|_| err())?,
        Some(RawValue::Float(f)) if f.fract() == 0.0 && f.abs() < 1e15 => f as i64,
        Some(_) => return Err(err()),
    };
    if (min..=max).contains(&n) {
        Ok(Some(n))
    } else {
        Err(err())
    }
}

fn bool_field(v: Option<RawValue>, field: &'static str) -> Result<Option<bool>, OptionError> {
    let err = || OptionError::new(field, format!("{field} must be true or false (or 1 or 0)"));
    match v {
        None => Ok(None),
        Some(RawValue::Bool(b)) => Ok(Some(b)),
        Some(RawValue::Int(0)) => Ok(Some(false)),
        Some(RawValue::Int(1)) => Ok(Some(true)),
        Some(RawValue::Text(t)) => match t.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(err()),
        },
        Some(_) => Err(err()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn json_bodies_give_numbers_and_booleans_their_own_types() {
        let json = |body: &str| serde_json::from_str::<RawCaptureOptions>(body).unwrap();
        let ok = json(
            r#"{"url":"https://example.com","width":800,"fullPage":true,"deviceScaleFactor":1.5}"#,
        );
        assert_eq!(ok.check_json_types(), Ok(()));
        for (body, field) in [
            (r#"{"url":"https://example.com","width":"800"}"#, "width"),
            (
                r#"{"url":"https://example.com","fullPage":"true"}"#,
                "fullPage",
            ),
            (
                r#"{"url":"https://example.com","cacheTtl":"60"}"#,
                "cacheTtl",
            ),
            (
                r#"{"url":"https://example.com","deviceScaleFactor":"2"}"#,
                "deviceScaleFactor",
            ),
        ] {
            let e = json(body).check_json_types().unwrap_err();
            assert_eq!(e.field(), field, "{body}: {e}");
            assert!(e.to_string().contains("must be a JSON"), "{e}");
        }
    }
    use super::*;

    fn raw_url(url: &str) -> RawCaptureOptions {
        RawCaptureOptions {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    fn err_of(raw: RawCaptureOptions) -> OptionError {
        CaptureOptions::parse(raw).expect_err("should be rejected")
    }

    #[test]
    fn defaults() {
        let o = CaptureOptions::parse(raw_url("https://example.com/")).unwrap();
        assert_eq!((o.width(), o.height()), (1280, 800));
        assert_eq!(o.format(), Format::Png);
        assert!(!o.full_page() && !o.dark_mode() && o.cache());
        assert_eq!(o.device_scale_factor(), 1.0);
        assert_eq!(o.delay_ms(), 0);
        assert_eq!(o.timeout_secs(), None);
    }

    #[test]
    fn field_errors_name_the_field() {
        // (the options as JSON, the field the error names, what its message says)
        let cases = [
            (r#"{}"#, "url", "url is required"),
            (
                r#"{"url":"https://a.test","html":"<p>"}"#,
                "url",
                "not both",
            ),
            (
                r#"{"url":"not a url"}"#,
                "url",
                "absolute http or https URL",
            ),
            (r#"{"url":" https://a.test"}"#, "url", "whitespace"),
            (
                r#"{"url":"https://a.test","width":"0"}"#,
                "width",
                "width must be an integer from 1 to 3840",
            ),
            (
                r#"{"url":"https://a.test","width":"12.5"}"#,
                "width",
                "integer",
            ),
            (
                r#"{"url":"https://a.test","height":10001}"#,
                "height",
                "from 1 to 10000",
            ),
            (
                r#"{"url":"https://a.test","format":"gif"}"#,
                "format",
                "png, jpeg, webp, pdf",
            ),
            (
                r#"{"url":"https://a.test","quality":"80"}"#,
                "quality",
                "quality must be an integer from 1 to 100 (only for jpeg and webp)",
            ),
            (
                r#"{"url":"https://a.test","quality":"101","format":"jpeg"}"#,
                "quality",
                "from 1 to 100",
            ),
            (
                r#"{"url":"https://a.test","deviceScaleFactor":"4"}"#,
                "deviceScaleFactor",
                "from 1 to 3",
            ),
            (
                r#"{"url":"https://a.test","delay":"10001"}"#,
                "delay",
                "from 0 to 10000 (milliseconds)",
            ),
            (
                r#"{"url":"https://a.test","timeout":"61"}"#,
                "timeout",
                "from 1 to 60 (seconds)",
            ),
            (
                r#"{"url":"https://a.test","fullPage":"yes"}"#,
                "fullPage",
                "true or false",
            ),
            (
                r##"{"url":"https://a.test","selector":"#x","format":"pdf"}"##,
                "selector",
                "pdf",
            ),
            (
                r#"{"url":"https://a.test","cacheTtl":"0"}"#,
                "cacheTtl",
                "from 1 to",
            ),
        ];
        for (body, field, needle) in cases {
            let raw: RawCaptureOptions = serde_json::from_str(body).unwrap();
            let e = err_of(raw.clone());
            assert_eq!(e.field(), field, "{raw:?} -> {e}");
            assert!(
                e.message().contains(needle),
                "{:?} lacks {needle:?}",
                e.message()
            );
        }
    }

    /// Before the fix these parsed, reached the browser and answered INTERNAL.
    #[test]
    fn selectors_are_checked_before_any_browser() {
        for bad in ["a[", "<<<", "::", "div >", "*:not(", ":foo", "#1a", "a,"] {
            for field in ["waitForSelector", "selector"] {
                let mut raw = raw_url("https://a.test/");
                let slot = if field == "selector" {
                    &mut raw.selector
                } else {
                    &mut raw.wait_for_selector
                };
                *slot = Some(bad.into());
                let e = err_of(raw);
                assert_eq!(e.field(), field, "{bad:?}: {e}");
                assert!(
                    e.message().contains("is not a valid CSS selector"),
                    "{bad:?}: {e}"
                );
            }
        }
        let o = CaptureOptions::parse(RawCaptureOptions {
            wait_for_selector: Some("main > article:nth-child(2n+1) a[href^='https:']".into()),
            selector: Some("#box".into()),
            ..raw_url("https://a.test/")
        })
        .unwrap();
        assert_eq!(o.selector(), Some("#box"));
    }

    #[test]
    fn booleans_and_numbers_from_query_strings_and_json() {
        let o = CaptureOptions::parse(RawCaptureOptions {
            full_page: Some("1".into()),
            dark_mode: Some(RawValue::Bool(true)),
            cache: Some("0".into()),
            width: Some(RawValue::Int(800)),
            device_scale_factor: Some(RawValue::Float(1.5)),
            format: Some("JPG".into()),
            quality: Some("55".into()),
            ..raw_url("https://a.test/x?y=1")
        })
        .unwrap();
        assert!(o.full_page() && o.dark_mode() && !o.cache());
        assert_eq!(o.width(), 800);
        assert_eq!(o.device_scale_factor(), 1.5);
        assert_eq!(o.format(), Format::Jpeg);
        assert_eq!(o.effective_quality(), Some(55));

        let json: RawCaptureOptions = serde_json::from_str(
            r#"{"url":"https://a.test","fullPage":true,"width":640,"deviceScaleFactor":2,"darkMode":"false"}"#,
        )
        .unwrap();
        let o = CaptureOptions::parse(json).unwrap();
        assert_eq!((o.width(), o.device_scale_factor()), (640, 2.0));
        assert!(o.full_page() && !o.dark_mode());
    }

    #[test]
    fn non_http_schemes_parse_but_are_left_to_the_guard() {
        let o = CaptureOptions::parse(raw_url("file:///etc/passwd")).unwrap();
        assert_eq!(o.url().unwrap().scheme(), "file");
    }

    #[test]
    fn cache_key_ignores_cache_settings_and_tracks_pixels() {
        let base = CaptureOptions::parse(raw_url("https://A.test/p")).unwrap();
        let same = CaptureOptions::parse(RawCaptureOptions {
            cache: Some("false".into()),
            cache_ttl: Some("60".into()),
            timeout: Some("5".into()),
            ..raw_url("https://a.test/p")
        })
        .unwrap();
        assert_eq!(base.cache_key(), same.cache_key());
        assert_eq!(base.cache_key().len(), 64);
        let wider = CaptureOptions::parse(RawCaptureOptions {
            width: Some("1281".into()),
            ..raw_url("https://a.test/p")
        })
        .unwrap();
        assert_ne!(base.cache_key(), wider.cache_key());
        let dark = CaptureOptions::parse(RawCaptureOptions {
            dark_mode: Some("true".into()),
            ..raw_url("https://a.test/p")
        })
        .unwrap();
        assert_ne!(base.cache_key(), dark.cache_key());
        // jpeg default quality is 80, so an explicit 80 is the same output.
        let j = |q: Option<&str>| {
            CaptureOptions::parse(RawCaptureOptions {
                format: Some("jpeg".into()),
                quality: q.map(Into::into),
                ..raw_url("https://a.test/p")
            })
            .unwrap()
            .cache_key()
        };
        assert_eq!(j(None), j(Some("80")));
        assert_ne!(j(None), j(Some("81")));
        // webp with a quality is lossy: each quality is its own output; without one it is
        // lossless.
        let w = |q: Option<&str>| {
            CaptureOptions::parse(RawCaptureOptions {
                format: Some("webp".into()),
                quality: q.map(Into::into),
                ..raw_url("https://a.test/p")
            })
            .unwrap()
        };
        assert_eq!(w(Some("10")).quality(), Some(10));
        assert_eq!(w(Some("10")).effective_quality(), Some(10));
        assert_eq!(w(None).effective_quality(), None);
        assert_ne!(w(None).cache_key(), w(Some("10")).cache_key());
        assert_ne!(w(Some("10")).cache_key(), w(Some("11")).cache_key());
        // html is keyed by its content.
        let h = |html: &str| {
            CaptureOptions::parse(RawCaptureOptions {
                html: Some(html.into()),
                ..Default::default()
            })
            .unwrap()
            .cache_key()
        };
        assert_eq!(h("<p>a</p>"), h("<p>a</p>"));
        assert_ne!(h("<p>a</p>"), h("<p>b</p>"));
    }

    #[test]
    fn query_strings_repeat_lists_and_refuse_repeated_scalars() {
        let raw = RawCaptureOptions::from_query(
            "url=http%3A%2F%2Fa.test%2F&hideSelectors=.a&hideSelectors=%23b&headers=X-A%3A%201&cookies=k%3Dv&cookies=j%3Dw&fullPage=1&keyId=k1&signature=ff&unknown=1",
        )
        .unwrap();
        let o = CaptureOptions::parse(raw).unwrap();
        assert_eq!(o.hide_selectors(), [".a".to_owned(), "#b".to_owned()]);
        assert_eq!(o.headers(), [("X-A".to_owned(), "1".to_owned())]);
        assert_eq!(o.cookies().len(), 2);
        assert!(o.full_page());
        let e = RawCaptureOptions::from_query("url=x&width=1&width=2").unwrap_err();
        assert_eq!(e.field(), "width", "{e}");
        // JSON gives the same options as objects and arrays.
        let json: RawCaptureOptions = serde_json::from_str(
            r#"{"url":"http://a.test/","hideSelectors":".a","headers":{"X-A":"1"},"cookies":{"k":"v"},"clip":{"x":1,"y":2,"width":3,"height":4},"blockAds":true}"#,
        )
        .unwrap();
        assert_eq!(json.check_json_types(), Ok(()));
        let o = CaptureOptions::parse(json).unwrap();
        assert_eq!(o.hide_selectors(), [".a".to_owned()]);
        assert_eq!(o.headers(), [("X-A".to_owned(), "1".to_owned())]);
        assert_eq!(
            o.clip(),
            Some(Clip {
                x: 1,
                y: 2,
                width: 3,
                height: 4
            })
        );
        assert!(o.block_ads());
        let typed: RawCaptureOptions =
            serde_json::from_str(r#"{"url":"http://a.test/","fresh":"true"}"#).unwrap();
        assert_eq!(typed.check_json_types().unwrap_err().field(), "fresh");
    }

    #[test]
    fn page_option_errors_name_the_field() {
        let q = |qs: &str| {
            CaptureOptions::parse(
                RawCaptureOptions::from_query(&format!("url=http%3A%2F%2Fa.test%2F&{qs}")).unwrap(),
            )
        };
        // One case a line: the query, the field the error names, what its message says.
        let cases = "
            waitUntil=soon | waitUntil | load, domcontentloaded, networkidle
            clip=1,2,3 | clip | x,y,width,height
            clip=0,0,0,10 | clip | width from 1
            clip=-1,0,10,10 | clip | x and y from 0
            clip=0,0,10,10&selector=%23a | clip | selector
            clip=0,0,10,10&fullPage=true | clip | fullPage
            clip=0,0,10,10&format=pdf | clip | pdf
            omitBackground=true&format=jpeg | omitBackground | png or webp
            omitBackground=maybe | omitBackground | true or false
            hideSelectors=a%5B | hideSelectors | not a valid CSS selector
            userAgent=a%0Ab | userAgent | printable ASCII
            headers=nocolon | headers | Name: value
            headers=Host%3A%20x | headers | cannot be set
            headers=Cookie%3A%20a%3Db | headers | use cookies
            headers=Proxy-Foo%3A%20x | headers | cannot be set
            headers=X%20Y%3A%20x | headers | not a valid header name
            headers=X-A%3A%20a%0Db | headers | printable ASCII
            cookies=novalue | cookies | name=value
            cookies=a%3Db%3Bc | cookies | semicolons
            timeZone=Not%20A%20Zone | timeZone | IANA
            reducedMotion=2 | reducedMotion | true or false
            blockAds=x | blockAds | true or false
            blockCookieBanners=x | blockCookieBanners | true or false
            fresh=x | fresh | true or false
        ";
        let cases: Vec<&str> = cases
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(cases.len(), 24);
        for case in cases {
            let [qs, field, needle] = <[&str; 3]>::try_from(case.split(" | ").collect::<Vec<_>>())
                .unwrap_or_else(|_| panic!("query | field | needle: {case}"));
            let e = q(qs).expect_err(qs);
            assert_eq!(e.field(), field, "{qs}: {e}");
            assert!(e.message().contains(needle), "{qs}: {e}");
        }
        let css = "a".repeat(MAX_INJECT_BYTES + 1);
        let e = err_of(RawCaptureOptions {
            css: Some(css),
            ..raw_url("http://a.test/")
        });
        assert_eq!(e.field(), "css");
        // Headers go to http targets only; headers and cookies need a url.
        assert!(
            q("headers=X-A%3A%201").is_ok(),
            "an http target takes headers"
        );
        let https = CaptureOptions::parse(
            RawCaptureOptions::from_query("url=https%3A%2F%2Fa.test%2F&headers=X-A%3A%201")
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(https.field(), "headers");
        assert!(https.message().contains("http://"), "{https}");
        let html = err_of(RawCaptureOptions {
            html: Some("<p>".into()),
            cookies: Some(serde_json::json!({"a": "b"})),
            ..Default::default()
        });
        assert_eq!(html.field(), "cookies");
        for tz in [
            "UTC",
            "Europe/Paris",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
        ] {
            assert!(
                q(&format!(
                    "timeZone={}",
                    tz.replace('/', "%2F").replace('+', "%2B")
                ))
                .is_ok(),
                "{tz}"
            );
        }
    }

    #[test]
    fn page_options_that_change_pixels_change_the_cache_key() {
        let key = |qs: &str| {
            CaptureOptions::parse(
                RawCaptureOptions::from_query(&format!("url=http%3A%2F%2Fa.test%2F&{qs}")).unwrap(),
            )
            .unwrap()
            .cache_key()
        };
        let base = key("");
        // Captures that use none of the newer options keep the keys they had before them
        // (the canonical JSON of the first key version, hashed), so the cache stays warm.
        let before = CaptureOptions::parse(raw_url("https://a.test/p")).unwrap();
        assert_eq!(
            before.cache_key(),
            "c018454962f023b303b6cc541b62d18973a013cd116d8fb6a04e3ceedf10c5d8"
        );
        // The defaults, given explicitly, and `fresh` leave it as it was.
        for same in [
            "waitUntil=load",
            "omitBackground=false",
            "reducedMotion=false",
            "blockAds=0",
            "blockCookieBanners=false",
            "fresh=true",
        ] {
            assert_eq!(key(same), base, "{same}");
        }
        let mut seen = std::collections::HashSet::new();
        for other in [
            "waitUntil=networkidle",
            "waitUntil=domcontentloaded",
            "clip=0,0,10,10",
            "omitBackground=true",
            "hideSelectors=.a",
            "hideSelectors=.a&hideSelectors=.b",
            "css=a%7Bb%3Ac%7D",
            "js=1",
            "userAgent=x",
            "headers=X-A%3A%201",
            "headers=X-A%3A%202",
            "cookies=a%3Db",
            "timeZone=UTC",
            "reducedMotion=true",
            "blockAds=true",
            "blockCookieBanners=true",
        ] {
            let k = key(other);
            assert_ne!(k, base, "{other}");
            assert!(seen.insert(k), "{other} has its own key");
        }
    }

    #[test]
    fn full_page_rules_and_html_size() {
        let pdf = |full_page: &str| {
            CaptureOptions::parse(RawCaptureOptions {
                format: Some("pdf".into()),
                full_page: Some(full_page.into()),
                ..raw_url("https://a.test/p")
            })
            .unwrap()
        };
        assert!(!pdf("true").full_page(), "fullPage is ignored for pdf");
        assert_eq!(pdf("true").cache_key(), pdf("false").cache_key());

        let e = err_of(RawCaptureOptions {
            full_page: Some("true".into()),
            selector: Some("#x".into()),
            ..raw_url("https://a.test/p")
        });
        assert_eq!(e.field(), "fullPage", "{e}");

        let html = |len: usize| RawCaptureOptions {
            html: Some("x".repeat(len)),
            ..Default::default()
        };
        assert!(CaptureOptions::parse(html(MAX_HTML_BYTES)).is_ok());
        let e = err_of(html(MAX_HTML_BYTES + 1));
        assert_eq!(e.field(), "html", "{e}");
    }
}
