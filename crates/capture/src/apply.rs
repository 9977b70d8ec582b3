//! Applying the page options to a capture: emulation (user agent, time zone, reduced
//! motion, transparent background), what the proxy adds or blocks (headers, ads), cookies,
//! `waitUntil`, injected CSS and JavaScript, hidden elements, lazy content scrolled into
//! view before a full-page capture, and `clip`.
//!
//! Which of them need CDP (Chromium's DevTools protocol through chromedriver) and which
//! work on any WebDriver endpoint:
//!
//! | option | how | without CDP |
//! |---|---|---|
//! | `css`, `js`, `hideSelectors`, `blockCookieBanners` | scripts run through WebDriver | works |
//! | `blockAds` | the proxy refuses listed hosts; ad slots hidden by CSS | works |
//! | `headers` | the proxy adds them to plain-http requests for the target's host and port (an https url is refused while parsing, on every endpoint: the proxy sees only an encrypted tunnel, and the browser alone cannot keep extra headers to one host) | works |
//! | `waitUntil=networkidle` | the proxy sees every request | works |
//! | `fullPage` lazy content | scrolled through by a script | works |
//! | `clip` | `Page.captureScreenshot` with a clip | works inside the viewport (cropped); beyond it `INVALID_REQUEST` |
//! | `cookies` | CDP `Network.setCookies` for the target's URL (host-only cookies) | the proxy adds them to plain-http requests for the target's host and port; for an https url refused: `400 INVALID_REQUEST` |
//! | `userAgent`, `timeZone`, `reducedMotion`, `omitBackground`, `waitUntil=domcontentloaded` | CDP emulation | refused: `400 INVALID_REQUEST` naming the field |

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use fantoccini::error::{CmdError, ErrorStatus};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error::{CaptureError, OptionError};
use crate::options::{CaptureOptions, Format, WaitUntil, NETWORK_IDLE_MS};
use crate::proxy::{normalize_host, Proxy, ProxyRules};
use crate::session::Session;
use crate::shoot::{map_cmd_error, Stage, MAX_FULL_PAGE_DEVICE_PX};

const AD_HOSTS: &str = include_str!("../lists/ad-hosts.txt");
const AD_SELECTORS: &str = include_str!("../lists/ad-selectors.txt");
const BANNER_SELECTORS: &str = include_str!("../lists/cookie-banner-selectors.txt");

/// The entries of a shipped list: one a line, blank lines and `# ` comments left out.
fn entries(list: &'static str) -> impl Iterator<Item = &'static str> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("# ") && *l != "#")
}

/// True when `host` (normalized) or a domain it belongs to is on the ad list.
pub(crate) fn is_ad_host(host: &str) -> bool {
    static HOSTS: OnceLock<Vec<&'static str>> = OnceLock::new();
    let hosts = HOSTS.get_or_init(|| entries(AD_HOSTS).collect());
    hosts
        .iter()
        .any(|d| host == *d || host.strip_suffix(d).is_some_and(|rest| rest.ends_with('.')))
}

/// The selectors of the ad-slot list.
pub fn ad_selectors() -> Vec<&'static str> {
    entries(AD_SELECTORS).collect()
}

/// The selectors of the cookie-banner list.
pub fn cookie_banner_selectors() -> Vec<&'static str> {
    entries(BANNER_SELECTORS).collect()
}

/// The emulation overrides a session was left with by its last capture, so that the next
/// capture clears only what was set (each clear is a round trip).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Overrides {
    user_agent: bool,
    time_zone: bool,
    reduced_motion: bool,
    background: bool,
}

fn overrides() -> &'static Mutex<HashMap<u64, Overrides>> {
    static MAP: OnceLock<Mutex<HashMap<u64, Overrides>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

fn needs_cdp(field: &'static str, what: &str) -> CaptureError {
    CaptureError::InvalidOptions(OptionError::new(
        field,
        format!(
            "{what} needs Chromium's DevTools protocol, which this browser endpoint does not offer (a remote WebDriver without CDP); leave {field} out"
        ),
    ))
}

/// Before the navigation: tell the proxy what to add and block, set the emulation and the
/// cookies. Options a WebDriver endpoint without CDP cannot honour are refused here.
pub(crate) async fn before_navigation(
    session: &mut Session,
    opts: &CaptureOptions,
    proxy: &Proxy,
) -> Result<(), CaptureError> {
    let target = opts.url().and_then(|u| {
        Some((
            normalize_host(&u.host()?.to_owned()),
            u.port_or_known_default()?,
        ))
    });
    // Without CDP the browser cannot be given cookies before the navigation: the proxy
    // adds them to the target's plain-http requests instead (https is refused below).
    let proxy_cookies = if session.cdp {
        Vec::new()
    } else {
        opts.cookies().to_vec()
    };
    proxy.set_rules(ProxyRules {
        target,
        headers: opts.headers().to_vec(),
        cookies: proxy_cookies,
        block_ads: opts.block_ads(),
    });

    let before = crate::lock(overrides())
        .get(&session.id)
        .copied()
        .unwrap_or_default();
    let wanted = Overrides {
        user_agent: opts.user_agent().is_some(),
        time_zone: opts.time_zone().is_some(),
        reduced_motion: opts.reduced_motion(),
        background: opts.omit_background(),
    };
    if !session.cdp {
        for (field, what, given) in [
            ("userAgent", "userAgent", wanted.user_agent),
            ("timeZone", "timeZone", wanted.time_zone),
            ("reducedMotion", "reducedMotion", wanted.reduced_motion),
            ("omitBackground", "omitBackground", wanted.background),
            (
                "cookies",
                "cookies for an https url",
                !opts.cookies().is_empty() && opts.url().is_some_and(|u| u.scheme() != "http"),
            ),
            (
                "waitUntil",
                "waitUntil=domcontentloaded",
                opts.wait_until() == WaitUntil::DomContentLoaded,
            ),
            (
                "quality",
                "lossy webp (webp with a quality: the browser's encoder)",
                opts.format() == Format::Webp && opts.quality().is_some(),
            ),
        ] {
            if given {
                return Err(needs_cdp(field, what));
            }
        }
        return Ok(());
    }
    // Recorded first: if a step fails half-way, the next capture still clears what this
    // one may have set.
    let union = Overrides {
        user_agent: wanted.user_agent || before.user_agent,
        time_zone: wanted.time_zone || before.time_zone,
        reduced_motion: wanted.reduced_motion || before.reduced_motion,
        background: wanted.background || before.background,
    };
    crate::lock(overrides()).insert(session.id, union);
    let cdp = |e| map_cmd_error(e, "emulation");
    if wanted.user_agent || before.user_agent {
        // An empty override gives the browser its own user agent back.
        let ua = opts.user_agent().unwrap_or_default();
        session
            .cdp("Emulation.setUserAgentOverride", json!({"userAgent": ua}))
            .await
            .map_err(cdp)?;
    }
    if wanted.time_zone || before.time_zone {
        let tz = opts.time_zone().unwrap_or_default();
        match session
            .cdp("Emulation.setTimezoneOverride", json!({"timezoneId": tz}))
            .await
        {
            Ok(_) => {}
            Err(CmdError::Standard(wd)) if wd.message.to_ascii_lowercase().contains("timezone") => {
                return Err(CaptureError::InvalidOptions(OptionError::new(
                    "timeZone",
                    format!("timeZone {tz:?} is not a time zone the browser knows"),
                )))
            }
            Err(e) => return Err(cdp(e)),
        }
    }
    if wanted.background {
        session
            .cdp(
                "Emulation.setDefaultBackgroundColorOverride",
                json!({"color": {"r": 0, "g": 0, "b": 0, "a": 0}}),
            )
            .await
            .map_err(cdp)?;
    } else if before.background {
        session
            .cdp("Emulation.setDefaultBackgroundColorOverride", json!({}))
            .await
            .map_err(cdp)?;
    }
    crate::lock(overrides()).insert(session.id, wanted);

    if let (Some(url), false) = (opts.url(), opts.cookies().is_empty()) {
        // (With CDP the proxy adds none: the browser sends these.)
        // Cookies set for the target's URL are host-only: the browser sends them to that
        // host and to no other. The session's reset clears them after the capture.
        let cookies: Vec<Value> = opts
            .cookies()
            .iter()
            .map(|(name, value)| {
                json!({"name": name, "value": value, "url": url.as_str(),
                       "secure": url.scheme() == "https"})
            })
            .collect();
        session
            .cdp("Network.setCookies", json!({"cookies": cookies}))
            .await
            .map_err(|e| map_cmd_error(e, "cookies"))?;
    }
    Ok(())
}

/// Navigate to `url`, waiting as `waitUntil` says. For `domcontentloaded` a script on the
/// new document stops loading once it is parsed (what is still loading, images and frames,
/// is left out), so that WebDriver, which waits for `load`, answers at once.
pub(crate) async fn goto(
    session: &Session,
    opts: &CaptureOptions,
    url: &str,
) -> Result<(), CmdError> {
    if opts.wait_until() != WaitUntil::DomContentLoaded || !session.cdp {
        return session.client().goto(url).await;
    }
    let added = session
        .cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": STOP_AT_DOMCONTENTLOADED_JS}),
        )
        .await?;
    let navigated = session.client().goto(url).await;
    if let Some(id) = added["identifier"].as_str() {
        session
            .cdp(
                "Page.removeScriptToEvaluateOnNewDocument",
                json!({"identifier": id}),
            )
            .await?;
    }
    navigated
}

const STOP_AT_DOMCONTENTLOADED_JS: &str = "if (window === window.top) { \
    document.addEventListener('DOMContentLoaded', () => window.stop(), {once: true}); }";

fn set_stage(stage: &Stage, s: &'static str) {
    *crate::lock(stage) = s;
}

/// A script command; a page that broke what the script needs is the page's fault.
async fn run_script(
    session: &Session,
    script: &str,
    args: Vec<Value>,
    stage: &str,
) -> Result<Value, CaptureError> {
    session
        .client()
        .execute(script, args)
        .await
        .map_err(|e| map_cmd_error(e, stage))
}

/// After the page loaded (and `check_navigation` accepted it): wait for network idle, add
/// the style sheet (`css`, `hideSelectors`, the banner and ad-slot lists), run `js`, and for
/// a full-page capture scroll the lazy content in and check the height.
pub(crate) async fn after_load(
    session: &Session,
    opts: &CaptureOptions,
    proxy: &Proxy,
    deadline: Instant,
    stage: &Stage,
) -> Result<(), CaptureError> {
    if opts.wait_until() == WaitUntil::NetworkIdle {
        set_stage(stage, "waiting for network idle");
        wait_network_idle(proxy, deadline).await;
    }

    let mut sheet = String::new();
    let mut hide: Vec<&str> = opts.hide_selectors().iter().map(String::as_str).collect();
    if opts.block_cookie_banners() {
        hide.extend(cookie_banner_selectors());
    }
    if opts.block_ads() {
        hide.extend(ad_selectors());
    }
    // One rule per selector: a selector the browser does not know drops only its own rule.
    for sel in hide {
        sheet.push_str(sel);
        sheet.push_str(" { display: none !important; }\n");
    }
    if let Some(css) = opts.css() {
        sheet.push_str(css);
    }
    if !sheet.is_empty() {
        set_stage(stage, "injecting css");
        run_script(
            session,
            "const s = document.createElement('style'); s.textContent = arguments[0]; \
             (document.head || document.documentElement).appendChild(s); return true;",
            vec![json!(sheet)],
            "injecting css",
        )
        .await?;
    }
    if let Some(js) = opts.js() {
        set_stage(stage, "running js");
        // The script is the body of a function; a promise it returns is awaited.
        if let Err(e) = session.client().execute(js, vec![]).await {
            return Err(match e {
                CmdError::Standard(wd) if wd.error == ErrorStatus::JavascriptError => {
                    CaptureError::InvalidOptions(OptionError::new(
                        "js",
                        format!(
                            "the js threw: {}",
                            wd.message.chars().take(300).collect::<String>()
                        ),
                    ))
                }
                e => map_cmd_error(e, "running js"),
            });
        }
    }
    if opts.full_page() {
        set_stage(stage, "scrolling lazy content");
        let max_css = (MAX_FULL_PAGE_DEVICE_PX / opts.device_scale_factor()).floor() as u64;
        let height = run_script(session, LAZY_SCROLL_JS, vec![json!(max_css)], "full page")
            .await?
            .as_f64()
            .unwrap_or(0.0)
            .ceil() as u64;
        if height > max_css {
            return Err(CaptureError::PageTooTall {
                height,
                max: max_css,
            });
        }
    }
    Ok(())
}

/// Scroll down a viewport at a time (lazy images and infinite lists load as they come into
/// view), back to the top, wait for the images that started loading (at most 3 s), and
/// answer the document's height in CSS pixels. Stops scrolling past `arguments[0]`.
const LAZY_SCROLL_JS: &str = r#"return (async () => {
  const max = arguments[0];
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const height = () => {
    const d = document.documentElement, b = document.body || d;
    return Math.max(d.scrollHeight, b.scrollHeight, d.offsetHeight, b.offsetHeight);
  };
  const step = Math.max(200, window.innerHeight);
  let y = 0, steps = 0;
  while (y + window.innerHeight < height() && y < max && steps < 200) {
    y += step; steps += 1;
    window.scrollTo(0, y);
    await sleep(50);
  }
  window.scrollTo(0, 0);
  if (steps > 0) {
    const t0 = Date.now();
    while (Date.now() - t0 < 3000 && Array.from(document.images).some((i) => !i.complete)) {
      await sleep(50);
    }
    await sleep(50);
  }
  return height();
})();"#;

/// Wait until the proxy saw no request for [`NETWORK_IDLE_MS`], or until shortly before the
/// deadline (then the capture goes on with the page as it is).
async fn wait_network_idle(proxy: &Proxy, deadline: Instant) {
    let quiet = Duration::from_millis(NETWORK_IDLE_MS);
    let give_up = deadline
        .checked_sub(Duration::from_millis(300))
        .unwrap_or(deadline);
    while !proxy.is_idle_for(quiet) && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// With `clip`: the PNG of that rectangle, else `None`. Through CDP the rectangle may lie
/// anywhere on the page; without CDP the viewport is captured and cropped, so the
/// rectangle must lie inside it.
pub(crate) async fn clipped_png(
    session: &mut Session,
    opts: &CaptureOptions,
) -> Result<Option<Vec<u8>>, CaptureError> {
    let Some(clip) = opts.clip() else {
        return Ok(None);
    };
    if let Some(shot) = session
        .try_cdp(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true, "fromSurface": true,
                   "clip": {"x": clip.x, "y": clip.y, "width": clip.width,
                            "height": clip.height, "scale": 1}}),
        )
        .await
        .map_err(|e| map_cmd_error(e, "clip"))?
    {
        use base64::Engine as _;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| CaptureError::internal("CDP screenshot returned no data"))?;
        return base64::engine::general_purpose::STANDARD
            .decode(data)
            .map(Some)
            .map_err(CaptureError::internal);
    }
    if clip.x + clip.width > opts.width() || clip.y + clip.height > opts.height() {
        return Err(CaptureError::InvalidOptions(OptionError::new(
            "clip",
            "on this browser endpoint (no DevTools protocol) the clip must lie inside the viewport (x + width <= width, y + height <= height)",
        )));
    }
    let png = session
        .client()
        .screenshot()
        .await
        .map_err(|e| map_cmd_error(e, "clip"))?;
    tokio::task::spawn_blocking(move || crop_png(&png, clip))
        .await
        .map_err(CaptureError::internal)?
        .map(Some)
}

fn crop_png(png: &[u8], clip: crate::options::Clip) -> Result<Vec<u8>, CaptureError> {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .map_err(CaptureError::internal)?;
    // Without CDP the device scale factor is 1: CSS pixels are image pixels.
    let part = img.crop_imm(clip.x, clip.y, clip.width, clip.height);
    let mut out = Vec::new();
    part.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(CaptureError::internal)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_hosts_match_the_domain_and_its_subdomains_only() {
        assert!(is_ad_host("doubleclick.net"));
        assert!(is_ad_host("ad.doubleclick.net"));
        assert!(is_ad_host("a.b.googlesyndication.com"));
        assert!(!is_ad_host("notdoubleclick.net"));
        assert!(!is_ad_host("doubleclick.net.example.com"));
        assert!(!is_ad_host("example.com"));
    }

    #[test]
    fn shipped_lists_are_valid_and_not_empty() {
        assert!(entries(AD_HOSTS).count() >= 20);
        for host in entries(AD_HOSTS) {
            assert!(
                url::Host::parse(host).is_ok() && host.contains('.'),
                "{host:?}"
            );
        }
        for sel in ad_selectors().into_iter().chain(cookie_banner_selectors()) {
            assert!(crate::selector::check(sel).is_ok(), "{sel:?}");
        }
        assert!(cookie_banner_selectors().contains(&"#onetrust-consent-sdk"));
    }
}
