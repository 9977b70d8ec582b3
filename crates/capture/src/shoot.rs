//! The steps of one capture on a leased session: emulation, navigation, failure
//! classification, waits, the screenshot or PDF itself, and encoding.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::wd::{PrintConfiguration, TimeoutConfiguration};
use fantoccini::Locator;
use serde_json::{json, Value};
use tokio::time::Instant;
use url::Url;

use crate::error::CaptureError;
use crate::options::{CaptureOptions, Format, Target};
use crate::proxy::{normalize_host, Proxy, ProxyOutcome};
use crate::session::Session;

/// Tallest full-page capture, in device pixels (Chromium's texture limit).
pub const MAX_FULL_PAGE_DEVICE_PX: f64 = 16_384.0;

/// A finished capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The encoded image or PDF.
    pub bytes: Vec<u8>,
    /// Its MIME type (`image/png`, `image/jpeg`, `image/webp`, `application/pdf`).
    pub content_type: &'static str,
    /// Pixel width (0 for pdf).
    pub width: u32,
    /// Pixel height (0 for pdf).
    pub height: u32,
}

/// Where the capture is; reported in `TIMEOUT` errors.
pub(crate) type Stage = Arc<Mutex<&'static str>>;

fn set_stage(stage: &Stage, s: &'static str) {
    *crate::lock(stage) = s;
}

/// Run one capture. `deadline` bounds every wait; the caller also puts a hard timeout
/// around this future.
pub(crate) async fn run(
    session: &mut Session,
    opts: &CaptureOptions,
    proxy: &Proxy,
    deadline: Instant,
    stage: &Stage,
) -> Result<Captured, CaptureError> {
    let remaining = || deadline.saturating_duration_since(Instant::now());
    // The proxy forwards only while this capture runs (until this future ends or is
    // dropped on a timeout).
    let _lease = proxy.lease();
    proxy.clear_log();

    set_stage(stage, "emulation");
    let page_load = remaining().max(Duration::from_millis(500));
    session
        .client()
        .update_timeouts(TimeoutConfiguration::new(
            Some(page_load.min(Duration::from_secs(10))),
            Some(page_load),
            Some(Duration::ZERO),
        ))
        .await
        .map_err(|e| map_cmd_error(e, "emulation"))?;
    apply_viewport(session, opts).await?;
    apply_media(session, opts).await?;
    crate::apply::before_navigation(session, opts, proxy).await?;

    set_stage(stage, "page load");
    let nav_url = match opts.target() {
        Target::Url(u) => u.as_str().to_owned(),
        Target::Html(h) => format!(
            "data:text/html;charset=utf-8;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(h.as_bytes())
        ),
    };
    match crate::apply::goto(session, opts, &nav_url).await {
        Ok(()) => {}
        // A dialog the page guard did not reach interrupted the load: dismiss it and go on
        // with the page as it is (navigating again would only open it again).
        Err(e) if is_dialog(&e) => {
            let _ = session.client().dismiss_alert().await;
        }
        Err(e) => return Err(classify_navigation_error(e, opts, proxy)),
    }
    check_navigation(session, opts, proxy, deadline).await?;
    crate::apply::after_load(session, opts, proxy, deadline, stage).await?;

    if let Some(sel) = opts.wait_for_selector() {
        set_stage(stage, "waiting for selector");
        // Leave a moment before the deadline so a missing element is reported as such
        // rather than as a timeout of the whole capture.
        let wait = remaining().saturating_sub(Duration::from_millis(300));
        let c = session.client();
        let waited = dismissing(c, deadline, || {
            c.wait()
                .at_most(deadline.saturating_duration_since(Instant::now()).min(wait))
                .every(Duration::from_millis(100))
                .for_element(Locator::Css(sel))
        })
        .await;
        match waited {
            Ok(_) => {}
            Err(CmdError::WaitTimeout) => {
                return Err(CaptureError::SelectorNotFound {
                    selector: sel.to_owned(),
                })
            }
            Err(e) => {
                return Err(selector_error(
                    e,
                    "waitForSelector",
                    sel,
                    "waiting for selector",
                ))
            }
        }
    }

    if opts.delay_ms() > 0 {
        // A delay longer than the budget left ends in the caller's timeout, at this stage.
        set_stage(stage, "delay");
        tokio::time::sleep(Duration::from_millis(opts.delay_ms())).await;
    }

    set_stage(stage, "screenshot");
    if opts.format() == Format::Pdf {
        let config = PrintConfiguration::builder()
            .background(true)
            .build()
            .map_err(CaptureError::internal)?;
        let c = session.client();
        let pdf = dismissing(c, deadline, || c.print(config.clone()))
            .await
            .map_err(|e| map_cmd_error(e, "print"))?;
        if !pdf.starts_with(b"%PDF") {
            return Err(CaptureError::internal("print did not return a PDF"));
        }
        return Ok(Captured {
            bytes: pdf,
            content_type: Format::Pdf.content_type(),
            width: 0,
            height: 0,
        });
    }
    let shot = if let Some(png) = crate::apply::clipped_png(session, opts).await? {
        Shot::Png(png)
    } else if let Some(sel) = opts.selector() {
        element_shot(session, sel, opts, deadline).await?
    } else if opts.full_page() {
        full_page_shot(session, opts, deadline).await?
    } else {
        viewport_shot(session, opts, deadline).await?
    };
    set_stage(stage, "encoding");
    finish(shot, opts.format(), opts.effective_quality()).await
}

/// A screenshot as the browser gave it: already in the requested format (the browser's
/// own encoder, through CDP), or a PNG that Rust still has to encode.
#[derive(Debug)]
pub(crate) enum Shot {
    /// Encoded by the browser in the requested format.
    Encoded(Vec<u8>),
    /// A PNG to re-encode (the W3C fallback, and lossless webp).
    Png(Vec<u8>),
}

/// The `Page.captureScreenshot` parameters that make the browser encode the requested
/// format itself: png (with its fast zlib setting: the same pixels, a larger file, half
/// the encoding time), jpeg and lossy webp with their quality. `None` for what the browser
/// cannot encode: lossless webp (webp without a quality) is captured as PNG and encoded
/// here.
pub(crate) fn native_params(format: Format, quality: Option<u8>) -> Option<Value> {
    match (format, quality) {
        (Format::Png, _) => Some(json!({"format": "png", "optimizeForSpeed": true})),
        (Format::Jpeg, q) => Some(json!({"format": "jpeg", "quality": q.unwrap_or(80)})),
        (Format::Webp, Some(q)) => Some(json!({"format": "webp", "quality": q})),
        (Format::Webp, None) | (Format::Pdf, _) => None,
    }
}

/// The screenshot parameters for this capture: the native format where the browser can
/// encode it, PNG otherwise, plus `extra` (clip, captureBeyondViewport).
fn shot_params(opts: &CaptureOptions, extra: Value) -> (Value, bool) {
    let (mut params, native) = match native_params(opts.format(), opts.effective_quality()) {
        Some(p) => (p, true),
        None => (json!({"format": "png", "optimizeForSpeed": true}), false),
    };
    if let (Some(p), Value::Object(extra)) = (params.as_object_mut(), extra) {
        p.extend(extra);
    }
    (params, native)
}

/// `Page.captureScreenshot` with `extra` (clip, captureBeyondViewport), in the requested
/// format where the browser can encode it; `None` when the endpoint has no CDP.
async fn cdp_capture(
    session: &mut Session,
    opts: &CaptureOptions,
    extra: Value,
    stage: &str,
) -> Result<Option<Shot>, CaptureError> {
    if !session.cdp {
        return Ok(None);
    }
    let (params, native) = shot_params(opts, extra);
    let Some(v) = session
        .try_cdp("Page.captureScreenshot", params)
        .await
        .map_err(|e| map_cmd_error(e, stage))?
    else {
        return Ok(None);
    };
    let bytes = decode_b64(&v["data"])?;
    Ok(Some(if native {
        Shot::Encoded(bytes)
    } else {
        Shot::Png(bytes)
    }))
}

/// The viewport: one `Page.captureScreenshot` in the requested format; without CDP the
/// W3C screenshot (PNG).
async fn viewport_shot(
    session: &mut Session,
    opts: &CaptureOptions,
    deadline: Instant,
) -> Result<Shot, CaptureError> {
    if let Some(shot) = cdp_capture(session, opts, json!({}), "screenshot").await? {
        return Ok(shot);
    }
    let c = session.client();
    dismissing(c, deadline, || c.screenshot())
        .await
        .map(Shot::Png)
        .map_err(|e| map_cmd_error(e, "screenshot"))
}

/// Turn a screenshot into the answer: bytes the browser encoded are only measured, a PNG
/// is encoded as the requested format (off the async threads).
pub(crate) async fn finish(
    shot: Shot,
    format: Format,
    quality: Option<u8>,
) -> Result<Captured, CaptureError> {
    match shot {
        Shot::Encoded(bytes) => measured(bytes, format),
        Shot::Png(png) if format == Format::Png => encode(png, format, quality),
        Shot::Png(png) => tokio::task::spawn_blocking(move || encode(png, format, quality))
            .await
            .map_err(CaptureError::internal)?,
    }
}

/// An image the browser encoded in `format`: its size from its header.
pub(crate) fn measured(bytes: Vec<u8>, format: Format) -> Result<Captured, CaptureError> {
    let image_format = match format {
        Format::Png => image::ImageFormat::Png,
        Format::Jpeg => image::ImageFormat::Jpeg,
        Format::Webp => image::ImageFormat::WebP,
        Format::Pdf => return Err(CaptureError::internal("pdf is not an image format")),
    };
    let (width, height) =
        image::ImageReader::with_format(std::io::Cursor::new(&bytes), image_format)
            .into_dimensions()
            .map_err(|e| {
                CaptureError::internal(format!("the browser returned no {format}: {e}"))
            })?;
    Ok(Captured {
        bytes,
        content_type: format.content_type(),
        width,
        height,
    })
}

/// The colour scheme and reduced motion, through CDP; set only when they change (the
/// override stays across navigations). Without CDP the page gets the browser's own light
/// scheme (and `reducedMotion` was refused before this).
async fn apply_media(session: &mut Session, opts: &CaptureOptions) -> Result<(), CaptureError> {
    let wanted = (opts.dark_mode(), opts.reduced_motion());
    if !session.cdp || session.media == Some(wanted) {
        return Ok(());
    }
    session.media = None;
    let scheme = if wanted.0 { "dark" } else { "light" };
    let motion = if wanted.1 { "reduce" } else { "no-preference" };
    let done = session
        .try_cdp(
            "Emulation.setEmulatedMedia",
            json!({"media": "", "features": [
                {"name": "prefers-color-scheme", "value": scheme},
                {"name": "prefers-reduced-motion", "value": motion}]}),
        )
        .await
        .map_err(|e| map_cmd_error(e, "emulation"))?;
    if done.is_some() {
        session.media = Some(wanted);
    }
    Ok(())
}

async fn apply_viewport(session: &mut Session, opts: &CaptureOptions) -> Result<(), CaptureError> {
    let (w, h) = (opts.width(), opts.height());
    let wanted = (w, h, opts.device_scale_factor().to_bits());
    if session.cdp && session.metrics == Some(wanted) {
        return Ok(());
    }
    session.metrics = None;
    let done = session
        .try_cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": w, "height": h, "deviceScaleFactor": opts.device_scale_factor(), "mobile": false}),
        )
        .await
        .map_err(|e| map_cmd_error(e, "emulation"))?;
    if done.is_some() {
        session.metrics = Some(wanted);
        return Ok(());
    }
    // W3C fallback: size the window so that the viewport is w×h (DPR stays 1).
    let c = session.client();
    c.set_window_size(w, h)
        .await
        .map_err(|e| map_cmd_error(e, "emulation"))?;
    let inner = c
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await
        .map_err(|e| map_cmd_error(e, "emulation"))?;
    let iw = inner[0].as_u64().unwrap_or(w as u64) as u32;
    let ih = inner[1].as_u64().unwrap_or(h as u64) as u32;
    if (iw, ih) != (w, h) {
        c.set_window_size(w + w.saturating_sub(iw), h + h.saturating_sub(ih))
            .await
            .map_err(|e| map_cmd_error(e, "emulation"))?;
    }
    Ok(())
}

async fn full_page_shot(
    session: &mut Session,
    opts: &CaptureOptions,
    deadline: Instant,
) -> Result<Shot, CaptureError> {
    let dpr = opts.device_scale_factor();
    let max_css = (MAX_FULL_PAGE_DEVICE_PX / dpr).floor();
    if let Some(metrics) = session
        .try_cdp("Page.getLayoutMetrics", json!({}))
        .await
        .map_err(|e| map_cmd_error(e, "full page"))?
    {
        let content_h = metrics["cssContentSize"]["height"]
            .as_f64()
            .or_else(|| metrics["contentSize"]["height"].as_f64())
            .unwrap_or(opts.height() as f64);
        let h = content_h.ceil().max(opts.height() as f64).min(max_css);
        let page = json!({"captureBeyondViewport": true, "fromSurface": true,
                          "clip": {"x": 0, "y": 0, "width": opts.width(), "height": h, "scale": 1}});
        return cdp_capture(session, opts, page, "full page")
            .await?
            .ok_or_else(|| CaptureError::internal("CDP went away during a full-page capture"));
    }
    // W3C fallback: grow the window to the document height, shoot, restore.
    let c = session.client();
    let h = dismissing(c, deadline, || {
        c.execute(
            "const d = document.documentElement, b = document.body || d; \
             return Math.max(d.scrollHeight, b.scrollHeight, d.offsetHeight, b.offsetHeight, d.clientHeight);",
            vec![],
        )
    })
    .await
        .map_err(|e| map_cmd_error(e, "full page"))?
        .as_f64()
        .unwrap_or(opts.height() as f64)
        .max(opts.height() as f64)
        .min(max_css) as u32;
    c.set_window_size(opts.width(), h)
        .await
        .map_err(|e| map_cmd_error(e, "full page"))?;
    let png = dismissing(c, deadline, || c.screenshot())
        .await
        .map(Shot::Png)
        .map_err(|e| map_cmd_error(e, "full page"));
    let _ = c.set_window_size(opts.width(), opts.height()).await;
    png
}

async fn element_shot(
    session: &mut Session,
    selector: &str,
    opts: &CaptureOptions,
    deadline: Instant,
) -> Result<Shot, CaptureError> {
    let not_found = || CaptureError::SelectorNotFound {
        selector: selector.to_owned(),
    };
    if session.cdp {
        let c = session.client();
        let rect = dismissing(c, deadline, || {
            c.execute(
                "const e = Document.prototype.querySelector.call(document, arguments[0]); \
                 if (!e) return null; \
                 const r = Element.prototype.getBoundingClientRect.call(e); \
                 return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];",
                vec![json!(selector)],
            )
        })
        .await;
        let rect = match rect {
            Ok(Value::Array(r)) => r,
            Ok(_) => return Err(not_found()),
            Err(e) => return Err(selector_error(e, "selector", selector, "element")),
        };
        let f = |i: usize| rect.get(i).and_then(Value::as_f64).unwrap_or(0.0);
        let (x, y, w, h) = (f(0), f(1), f(2), f(3));
        if w < 1.0 || h < 1.0 {
            return Err(not_found());
        }
        let region = json!({"captureBeyondViewport": true, "fromSurface": true,
                            "clip": {"x": x, "y": y, "width": w, "height": h, "scale": 1}});
        if let Some(shot) = cdp_capture(session, opts, region, "element").await? {
            return Ok(shot);
        }
    }
    let c = session.client();
    let el = dismissing(c, deadline, || c.find(Locator::Css(selector)))
        .await
        .map_err(|e| selector_error(e, "selector", selector, "element"))?;
    dismissing(c, deadline, || el.screenshot())
        .await
        .map(Shot::Png)
        .map_err(|e| selector_error(e, "selector", selector, "element"))
}

fn decode_b64(v: &Value) -> Result<Vec<u8>, CaptureError> {
    let s = v
        .as_str()
        .ok_or_else(|| CaptureError::internal("CDP screenshot returned no data"))?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(CaptureError::internal)
}

/// Encode a PNG screenshot as the requested format and read its pixel size.
pub(crate) fn encode(
    png: Vec<u8>,
    format: Format,
    quality: Option<u8>,
) -> Result<Captured, CaptureError> {
    use image::{ExtendedColorType, ImageEncoder};
    match format {
        Format::Png => {
            let (width, height) = png_size(&png)
                .ok_or_else(|| CaptureError::internal("the browser returned no PNG"))?;
            Ok(Captured {
                bytes: png,
                content_type: format.content_type(),
                width,
                height,
            })
        }
        Format::Jpeg | Format::Webp => {
            let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
                .map_err(CaptureError::internal)?;
            let (width, height) = (img.width(), img.height());
            let mut out = Vec::with_capacity(png.len() / 4);
            if format == Format::Jpeg {
                let rgb = img.to_rgb8();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.unwrap_or(80))
                    .write_image(rgb.as_raw(), width, height, ExtendedColorType::Rgb8)
                    .map_err(CaptureError::internal)?;
            } else {
                let rgba = img.to_rgba8();
                image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                    .write_image(rgba.as_raw(), width, height, ExtendedColorType::Rgba8)
                    .map_err(CaptureError::internal)?;
            }
            Ok(Captured {
                bytes: out,
                content_type: format.content_type(),
                width,
                height,
            })
        }
        Format::Pdf => Err(CaptureError::internal("pdf is not an image format")),
    }
}

/// Width and height from a PNG's IHDR chunk.
pub(crate) fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}

/// What loaded: the document's URL, its HTTP status, the proxy's error marker, and the
/// `net::ERR_*` code of a Chromium error page.
const NAVIGATION_CHECK_JS: &str = "const n = performance.getEntriesByType('navigation')[0]; \
     const m = document.querySelector('meta[name=capture-proxy-error]'); \
     let code = null; \
     if (document.URL.startsWith('chrome-error:')) { \
       const t = document.documentElement ? document.documentElement.outerHTML : ''; \
       const f = t.match(/(?:net::)?ERR_[A-Z0-9_]+/); code = f ? f[0] : 'ERR_FAILED'; } \
     return [document.URL, n && n.responseStatus ? n.responseStatus : null, m ? m.content : null, code];";

/// After a navigation that WebDriver reported as done: did it really load what was asked?
async fn check_navigation(
    session: &Session,
    opts: &CaptureOptions,
    proxy: &Proxy,
    deadline: Instant,
) -> Result<(), CaptureError> {
    let c = session.client();
    let info = if session.cdp {
        // One `Runtime.evaluate`: WebDriver's `execute` costs several milliseconds more
        // (it wraps the script and checks the page's state around it).
        let v = dismissing(c, deadline, || {
            session.cdp(
                "Runtime.evaluate",
                json!({"expression": format!("(() => {{ {NAVIGATION_CHECK_JS} }})()"),
                       "returnByValue": true}),
            )
        })
        .await
        .map_err(|e| map_cmd_error(e, "page load"))?;
        if v.get("exceptionDetails").is_some() {
            return Err(CaptureError::PageError {
                detail: "it broke the browser functions the capture uses (page load)".into(),
            });
        }
        v["result"]["value"].clone()
    } else {
        dismissing(c, deadline, || c.execute(NAVIGATION_CHECK_JS, vec![]))
            .await
            .map_err(|e| map_cmd_error(e, "page load"))?
    };
    let doc_url = info[0].as_str().unwrap_or_default().to_owned();
    let status = info[1].as_u64().map(|s| s as u16);
    let proxy_marker = info[2].as_str().is_some();
    let error_page_code = info[3].as_str().map(str::to_owned);

    let target = opts.url();
    // The document is the proxy's own error page: the proxy log says why.
    if proxy_marker {
        let doc = Url::parse(&doc_url).ok();
        if let Some(e) = doc.as_ref().and_then(|d| failure_for_url(proxy, d)) {
            return Err(e);
        }
    }
    if let Some(code) = error_page_code {
        // A chrome error page (https through a refused CONNECT, or a network error). Only
        // a failed tunnel hides which hop failed; any other code (a certificate the
        // browser refused, say) is the target's own, and the proxy's latest failure may be
        // a request of the browser's own to another host.
        let tunnel = code.contains("TUNNEL") || code.contains("PROXY");
        return Err(target
            .and_then(|t| failure_for_url(proxy, t))
            .or_else(|| tunnel.then(|| tunnel_failure(proxy)).flatten())
            .unwrap_or_else(|| net_error(&code, target)));
    }
    if let Some(status) = status.filter(|s| *s >= 400) {
        return Err(CaptureError::TargetHttpError {
            url: doc_url,
            status,
        });
    }
    Ok(())
}

/// The proxy's latest failure for this URL's host and port, as the error to report.
fn failure_for_url(proxy: &Proxy, url: &Url) -> Option<CaptureError> {
    let host = normalize_host(&url.host()?.to_owned());
    let outcome = proxy.failure_for(&host, url.port_or_known_default()?)?;
    Some(outcome_error(outcome, url.as_str().to_owned(), host))
}

/// Why a tunnel failed: the failure of the latest plain-http redirect's target when there
/// is one (the browser's own requests to other hosts may have failed since), else the
/// proxy's latest failure on any host.
fn tunnel_failure(proxy: &Proxy) -> Option<CaptureError> {
    match proxy.redirect_failure() {
        Some(event) => {
            let target = format!("{}:{}", event.host, event.port);
            Some(outcome_error(event.outcome, target, event.host))
        }
        None => last_failure(proxy),
    }
}

/// The proxy's latest failure on any host. The browser may hide which hop failed (a
/// redirect through a CONNECT tunnel), so the error names the host and port the proxy
/// could not reach, not the URL that was asked for.
fn last_failure(proxy: &Proxy) -> Option<CaptureError> {
    let event = proxy.last_failure()?;
    let target = format!("{}:{}", event.host, event.port);
    Some(outcome_error(event.outcome, target, event.host))
}

fn outcome_error(outcome: ProxyOutcome, target: String, host: String) -> CaptureError {
    match outcome {
        ProxyOutcome::Forbidden(reason) => CaptureError::ForbiddenTarget { target, reason },
        ProxyOutcome::DnsFailure => CaptureError::DnsFailure { host },
        ProxyOutcome::ConnectionRefused => CaptureError::ConnectionRefused { target },
        ProxyOutcome::NetworkError(detail) => CaptureError::NetworkError { target, detail },
        ProxyOutcome::Connected(_) | ProxyOutcome::Redirected => {
            CaptureError::internal("no failure to report")
        }
    }
}

/// Map a `net::ERR_*` code seen without the proxy's help.
fn net_error(code: &str, url: Option<&Url>) -> CaptureError {
    let target = url.map_or_else(|| "the page".to_owned(), |u| u.as_str().to_owned());
    let code = code.trim_start_matches("net::");
    match code {
        "ERR_NAME_NOT_RESOLVED" | "ERR_NAME_RESOLUTION_FAILED" => CaptureError::DnsFailure {
            host: url
                .and_then(|u| u.host_str())
                .unwrap_or("the host")
                .to_owned(),
        },
        "ERR_CONNECTION_REFUSED" => CaptureError::ConnectionRefused { target },
        "ERR_TIMED_OUT" | "ERR_CONNECTION_TIMED_OUT" => CaptureError::NetworkError {
            target,
            detail: "the connection timed out".into(),
        },
        other => CaptureError::NetworkError {
            target,
            detail: other.to_owned(),
        },
    }
}

fn classify_navigation_error(e: CmdError, opts: &CaptureOptions, proxy: &Proxy) -> CaptureError {
    let target = opts.url();
    if let CmdError::Standard(wd) = &e {
        // A page-load timeout is mapped below, whatever its message says.
        let net_code = wd
            .message
            .find("ERR_")
            .filter(|_| wd.error != ErrorStatus::Timeout);
        if let Some(pos) = net_code {
            if let Some(e) = target.and_then(|t| failure_for_url(proxy, t)) {
                return e;
            }
            let code: String = wd.message[pos..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if code.contains("TUNNEL") || code.contains("PROXY") {
                if let Some(e) = tunnel_failure(proxy) {
                    return e;
                }
            }
            return net_error(&code, target);
        }
    }
    map_cmd_error(e, "page load")
}

/// A JavaScript dialog was open when WebDriver ran a command.
fn is_dialog(e: &CmdError) -> bool {
    matches!(e, CmdError::Standard(wd) if wd.error == ErrorStatus::UnexpectedAlertOpen)
}

/// Run a WebDriver command; while a JavaScript dialog interrupts it, dismiss the dialog and
/// run it again, until `deadline`. A page that keeps opening dialogs ends as `PAGE_ERROR`
/// (or the capture's timeout), never as a broken session.
async fn dismissing<T, F, Fut>(
    c: &fantoccini::Client,
    deadline: Instant,
    mut command: F,
) -> Result<T, CmdError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CmdError>>,
{
    loop {
        match command().await {
            Err(e) if is_dialog(&e) && Instant::now() < deadline => {
                let _ = c.dismiss_alert().await;
            }
            r => return r,
        }
    }
}

/// Errors of commands that use the client's selector: the browser refusing the selector is
/// the client's fault (`400`, naming the field), a missing element is `SELECTOR_NOT_FOUND`.
/// Selectors are checked while parsing; this is the net for a browser whose dialect differs.
pub(crate) fn selector_error(
    e: CmdError,
    field: &'static str,
    selector: &str,
    stage: &str,
) -> CaptureError {
    if let CmdError::Standard(wd) = &e {
        let syntax = wd.error == ErrorStatus::InvalidSelector
            || (wd.error == ErrorStatus::JavascriptError
                && wd.message.contains("is not a valid selector"));
        if syntax {
            return CaptureError::InvalidOptions(crate::error::OptionError::new(
                field,
                format!("{field} is not a valid CSS selector for the browser"),
            ));
        }
        if matches!(
            wd.error,
            ErrorStatus::NoSuchElement | ErrorStatus::StaleElementReference
        ) {
            return CaptureError::SelectorNotFound {
                selector: selector.to_owned(),
            };
        }
    }
    map_cmd_error(e, stage)
}

/// Map a WebDriver error. A `TIMEOUT` gets its budget from the service, which knows it.
/// Errors the page causes are page-level (`PAGE_ERROR`, the session is kept); only errors
/// that say the browser or the connection to it broke are `BROWSER_CRASH`.
pub(crate) fn map_cmd_error(e: CmdError, stage: &str) -> CaptureError {
    match &e {
        CmdError::Standard(wd) => match wd.error {
            ErrorStatus::UnexpectedAlertOpen => CaptureError::PageError {
                detail: format!("it kept opening JavaScript dialogs ({stage})"),
            },
            ErrorStatus::JavascriptError => CaptureError::PageError {
                detail: format!("it broke the browser functions the capture uses ({stage})"),
            },
            ErrorStatus::Timeout | ErrorStatus::ScriptTimeout => CaptureError::Timeout {
                timeout_secs: 0,
                stage: stage.to_owned(),
            },
            ErrorStatus::InvalidSessionId
            | ErrorStatus::NoSuchWindow
            | ErrorStatus::SessionNotCreated => CaptureError::BrowserCrash {
                detail: format!("{stage}: {}", wd.message),
            },
            _ if crashed(&wd.message) => CaptureError::BrowserCrash {
                detail: format!("{stage}: {}", wd.message),
            },
            _ => CaptureError::internal(format!("{stage}: {e}")),
        },
        CmdError::Lost(_) | CmdError::Failed(_) | CmdError::FailedC(_) => {
            CaptureError::BrowserCrash {
                detail: format!("{stage}: lost the WebDriver connection: {e}"),
            }
        }
        _ => CaptureError::internal(format!("{stage}: {e}")),
    }
}

fn crashed(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "chrome not reachable",
        "tab crashed",
        "session deleted",
        "disconnected",
        "target window already closed",
        "target closed",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(w, h, image::Rgba([10, 20, 30, 255]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn encodes_every_image_format() {
        let p = png(7, 5);
        assert_eq!(png_size(&p), Some((7, 5)));
        for (format, magic) in [
            (Format::Png, &b"\x89PNG"[..]),
            (Format::Jpeg, &b"\xff\xd8\xff"[..]),
            (Format::Webp, &b"RIFF"[..]),
        ] {
            let c = encode(p.clone(), format, Some(50)).unwrap();
            assert!(c.bytes.starts_with(magic), "{format}");
            assert_eq!((c.width, c.height), (7, 5));
            let back = image::load_from_memory(&c.bytes).unwrap();
            assert_eq!((back.width(), back.height()), (7, 5));
        }
    }

    /// What the browser is asked to encode, and what is left to Rust.
    #[test]
    fn the_browser_encodes_png_jpeg_and_lossy_webp() {
        assert_eq!(
            native_params(Format::Png, None),
            Some(json!({"format": "png", "optimizeForSpeed": true}))
        );
        assert_eq!(
            native_params(Format::Jpeg, Some(35)),
            Some(json!({"format": "jpeg", "quality": 35}))
        );
        assert_eq!(native_params(Format::Jpeg, None).unwrap()["quality"], 80);
        assert_eq!(
            native_params(Format::Webp, Some(60)),
            Some(json!({"format": "webp", "quality": 60}))
        );
        assert_eq!(
            native_params(Format::Webp, None),
            None,
            "lossless webp is Rust's"
        );
        assert_eq!(native_params(Format::Pdf, None), None);
    }

    /// Bytes the browser encoded are passed on as they are, measured from their header.
    #[test]
    fn browser_encoded_images_are_measured_not_decoded() {
        let p = png(9, 4);
        for format in [Format::Png, Format::Jpeg, Format::Webp] {
            let bytes = encode(p.clone(), format, Some(50)).unwrap().bytes;
            let c = measured(bytes.clone(), format).unwrap();
            assert_eq!((c.width, c.height), (9, 4), "{format}");
            assert_eq!(c.bytes, bytes);
            assert_eq!(c.content_type, format.content_type());
        }
        assert!(measured(b"not an image".to_vec(), Format::Jpeg).is_err());
    }

    #[test]
    fn net_errors_are_classified() {
        let u = Url::parse("http://x.test/").unwrap();
        assert_eq!(
            net_error("net::ERR_NAME_NOT_RESOLVED", Some(&u)).code(),
            "DNS_FAILURE"
        );
        assert_eq!(
            net_error("ERR_CONNECTION_REFUSED", Some(&u)).code(),
            "CONNECTION_REFUSED"
        );
        assert_eq!(
            net_error("ERR_CONNECTION_RESET", Some(&u)).code(),
            "NETWORK_ERROR"
        );
    }
}
