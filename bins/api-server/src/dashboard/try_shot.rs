//! "Try a screenshot": a URL and a few options, posted with the session's CSRF token (a
//! GET never spends credits on the session cookie alone), answered with the image inline
//! (a `data:` URL: nothing to fetch afterwards, nothing kept), its cost and the balance
//! after it. The capture is the API's own flow ([`crate::service::screenshot::take`]): the
//! same price, hold, cache and refusals.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use base64::Engine as _;
use capture::{RawCaptureOptions, RawValue};

use super::account::error_page;
use super::html::{self, esc, field, Notice};
use super::session::{viewer, Form, Posted, Viewer};
use super::{message_of, see_other, status_of};
use crate::service::screenshot::{self as service, ShotRequest};
use crate::state::AppState;

/// The formats the page offers (an image the page can show; PDF is the API's).
const FORMATS: [(&str, &str); 3] = [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WebP")];

/// The form, filled with what was asked, and `result` (HTML) below it.
fn try_page(
    state: &AppState,
    v: &Viewer,
    status: StatusCode,
    form: &Form,
    notices: &[Notice],
    result: &str,
) -> HttpResponse {
    let format = form.get("format").unwrap_or("png");
    let formats: Vec<(String, String)> = FORMATS
        .iter()
        .map(|(v, t)| ((*v).to_owned(), (*t).to_owned()))
        .collect();
    let checked = if form.ticked("full_page") {
        " checked"
    } else {
        ""
    };
    let costs = &state.settings.screenshots;
    let inner = format!(
        r#"{url}<p class="field check"><input type="checkbox" id="shot-full" name="full_page" value="on"{checked}><label for="shot-full">Full page</label></p>{format}<p><button type="submit">Take screenshot</button></p>"#,
        url = field(
            "shot-url",
            "URL",
            &format!(
                r#"type="url" name="url" required placeholder="https://example.com" value="{}""#,
                esc(form.text("url"))
            )
        ),
        format = html::select("shot-format", "format", "Format", &formats, format),
    );
    let main = format!(
        r#"<section aria-labelledby="try-h" class="card"><h2 id="try-h">Capture a page</h2><p class="hint">A capture costs {} credit(s), {} more for a full page; only a successful, fresh capture is charged.</p>{}</section>{result}"#,
        costs.base_cost,
        costs.full_page_cost,
        html::post_form("/try", &v.csrf, "stack", &inner)
    );
    html::respond(
        status,
        html::page("Try a screenshot", Some(&v.header("/try")), notices, &main),
    )
}

/// The form.
#[get("/try")]
pub async fn page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let v = match viewer(&state, &req).await {
        Ok(Some(v)) => v,
        Ok(None) => return see_other("/login"),
        Err(e) => return error_page(&e),
    };
    try_page(&state, &v, StatusCode::OK, &Form::default(), &[], "")
}

/// Takes the screenshot and shows it with its cost and the balance after it.
#[post("/try")]
pub async fn take(state: web::Data<AppState>, posted: Posted) -> HttpResponse {
    let Posted { viewer: v, form } = posted;
    let options = RawCaptureOptions {
        url: Some(form.text("url").trim().to_owned()),
        full_page: form.ticked("full_page").then_some(RawValue::Bool(true)),
        format: Some(form.get("format").unwrap_or("png").to_owned()),
        ..RawCaptureOptions::default()
    };
    let shot = service::take(
        &state,
        ShotRequest {
            account: v.who.account_id.clone(),
            options: Ok(options),
            key: Ok(None),
        },
    )
    .await;
    let remaining = shot
        .remaining
        .map(|b| format!("{b} credits"))
        .unwrap_or_else(|| "unknown".into());
    match shot.answer {
        Ok(image) => {
            let mut result = String::from(
                r#"<section aria-labelledby="result-h" class="card"><h2 id="result-h">Result</h2>"#,
            );
            let _ = write!(
                result,
                r#"<dl class="facts"><dt>Cost</dt><dd id="shot-cost">{} credits{}</dd><dt>Balance after</dt><dd id="shot-balance">{remaining}</dd></dl><figure class="shot"><img alt="Screenshot" src="data:{};base64,{}"></figure></section>"#,
                shot.charged,
                if shot.cache_hit {
                    " (from the cache)"
                } else {
                    ""
                },
                esc(&image.content_type),
                base64::engine::general_purpose::STANDARD.encode(&image.bytes),
            );
            try_page(&state, &v, StatusCode::OK, &form, &[], &result)
        }
        Err(e) => {
            let notices = [Notice::Failed(format!(
                "{} Nothing was charged; your balance is {remaining}.",
                message_of(&e)
            ))];
            try_page(&state, &v, status_of(&e), &form, &notices, "")
        }
    }
}

/// Mounts the page.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(page).service(take);
}
