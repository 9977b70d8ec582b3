//! The webhook endpoints and the low-balance alert on the settings page (ADR 12), over
//! [`crate::service::notifications`]: the list of endpoints with their recent deliveries,
//! an add form (the new endpoint's secret shown once, in the answer to the post), delete
//! after a confirmation page, and the `credits.low` threshold. Owners change them;
//! members see them read-only, and the service refuses their changes too (`403`).

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use ledger_core::{Credits, Event};
use ledger_store::Endpoint;

use super::account::error_page;
use super::html::{self, esc, field, Notice};
use super::see_other;
use super::session::{viewer, Posted, Viewer};
use super::settings::{after, settings_page, Shown};
use crate::error::ApiError;
use crate::routes::AppData;
use crate::service::members::require_owner;
use crate::service::notifications;
use crate::state::AppState;

/// Deliveries shown per endpoint on the page (the newest).
pub const DELIVERIES_SHOWN: usize = 10;

fn events_text(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The "Webhook endpoints" and "Low balance alert" sections; `created` is an endpoint
/// just added, whose secret is shown this once.
pub async fn section_html(
    state: &AppState,
    v: &Viewer,
    created: Option<&Endpoint>,
) -> Result<String, ApiError> {
    let account = v.who.account_id.clone();
    let endpoints = notifications::list(state, account.clone()).await?;
    let mut out = String::from(
        r#"<section aria-labelledby="webhooks-h" class="card"><h2 id="webhooks-h">Webhook endpoints</h2><p>Your server is told of low balances, purchases, top-ups and extra charges by signed POSTs (see the README, “Notifications to your system”).</p>"#,
    );
    if let Some(e) = created {
        let _ = write!(
            out,
            r#"<div class="secret" role="region" aria-label="New webhook secret"><p>Endpoint {url} added. Copy its signing secret now: it is shown only this once and verifies the <code>webhook-signature</code> header.</p><p><code id="webhook-secret">{secret}</code> <button type="button" class="secondary copy" data-copy="webhook-secret" hidden>Copy secret</button></p></div>"#,
            url = esc(&e.url),
            secret = esc(&e.secret),
        );
    }
    if endpoints.is_empty() {
        out.push_str("<p>No endpoints yet.</p>");
    } else {
        out.push_str(r#"<table class="list"><caption>Endpoints</caption><thead><tr><th scope="col">URL</th><th scope="col">Events</th><th scope="col">Created</th>"#);
        if v.is_owner() {
            out.push_str(r#"<th scope="col"><span class="visually-hidden">Action</span></th>"#);
        }
        out.push_str("</tr></thead><tbody>");
        for e in &endpoints {
            let _ = write!(
                out,
                r#"<tr><td class="wrap">{}</td><td class="wrap">{}</td><td>{}</td>"#,
                esc(&e.url),
                esc(&events_text(&e.events)),
                html::when(e.created_at)
            );
            if v.is_owner() {
                let _ = write!(
                    out,
                    r#"<td><a href="/settings/webhooks/{}/delete" aria-label="Delete {}">Delete</a></td>"#,
                    esc(&e.id),
                    esc(&e.url)
                );
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
        for e in &endpoints {
            let list = notifications::deliveries(state, account.clone(), e.id.clone()).await?;
            if list.is_empty() {
                let _ = write!(
                    out,
                    r#"<p class="wrap">No deliveries to {} yet.</p>"#,
                    esc(&e.url)
                );
                continue;
            }
            let _ = write!(
                out,
                r#"<table class="list deliveries"><caption>Recent deliveries to {}</caption><thead><tr><th scope="col">Event</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Response status</th></tr></thead><tbody>"#,
                esc(&e.url)
            );
            for d in list.iter().take(DELIVERIES_SHOWN) {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    d.event.as_str(),
                    d.status.as_str(),
                    d.attempts,
                    d.response_status
                        .map_or_else(|| "none".to_owned(), |s| s.to_string()),
                );
            }
            out.push_str("</tbody></table>");
        }
    }
    if v.is_owner() {
        let mut boxes = String::from(r#"<fieldset><legend>Events</legend>"#);
        for (i, ev) in Event::ALL.iter().enumerate() {
            let _ = write!(
                boxes,
                r#"<p class="field check"><input type="checkbox" id="webhook-event-{i}" name="events" value="{name}"><label for="webhook-event-{i}">{name}</label></p>"#,
                name = ev.as_str()
            );
        }
        boxes.push_str("</fieldset>");
        let inner = format!(
            "{}{boxes}<p><button type=\"submit\">Add endpoint</button></p>",
            field(
                "webhook-url",
                "Endpoint URL",
                r#"type="url" name="url" inputmode="url" autocomplete="off" maxlength="2048" required"#
            ),
        );
        out.push_str(r#"<h3 class="sub">Add an endpoint</h3>"#);
        out.push_str(&html::post_form(
            "/settings/webhooks",
            &v.csrf,
            "stack",
            &inner,
        ));
    } else {
        out.push_str("<p class=\"hint\">Read-only: only an owner adds and deletes endpoints.</p>");
    }
    out.push_str("</section>");
    out.push_str(&alert_html(v, notifications::alerts(state, account).await?));
    Ok(out)
}

fn alert_html(v: &Viewer, low: Option<Credits>) -> String {
    let mut out = String::from(
        r#"<section aria-labelledby="alert-h" class="card"><h2 id="alert-h">Low balance alert</h2>"#,
    );
    if v.is_owner() {
        let value = low.map(|c| c.to_string()).unwrap_or_default();
        let inner = format!(
            "{}<p><button type=\"submit\">Save alert</button></p>",
            field(
                "alert-low",
                "Low balance alert",
                &format!(
                    r#"type="number" name="low_balance" inputmode="decimal" min="0" step="any" value="{}" aria-describedby="alert-hint""#,
                    esc(&value)
                )
            )
        );
        out.push_str(&html::post_form(
            "/settings/alerts",
            &v.csrf,
            "stack",
            &inner,
        ));
        out.push_str(r#"<p id="alert-hint" class="hint">When the balance falls below this many credits, endpoints subscribed to credits.low are told once (again after it rose back). Empty turns it off.</p>"#);
    } else {
        let _ = write!(
            out,
            r#"<dl class="facts"><dt>Low balance alert</dt><dd>{}</dd></dl><p class="hint">Read-only: only an owner of the account can change it.</p>"#,
            low.map_or_else(|| "off".to_owned(), |c| format!("below {c} credits"))
        );
    }
    out.push_str("</section>");
    out
}

/// Adds an endpoint (owners): the settings page again, with its secret shown once.
#[post("/settings/webhooks")]
pub async fn create(state: AppData, posted: Posted) -> HttpResponse {
    let Posted { viewer: v, form } = posted;
    let events = form.all("events");
    match notifications::create(&state, &v.who, form.text("url"), &events).await {
        Ok(endpoint) => {
            let notices = [Notice::Done(format!("Endpoint {} added.", endpoint.url))];
            let shown = Shown {
                endpoint: Some(&endpoint),
                ..Shown::default()
            };
            settings_page(&state, &v, StatusCode::CREATED, &notices, shown).await
        }
        Err(e) => after(&state, &v, Err(e)).await,
    }
}

/// Asks to confirm deleting an endpoint (works without a script).
#[get("/settings/webhooks/{id}/delete")]
pub async fn confirm(state: AppData, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let v = match viewer(&state, &req).await {
        Ok(Some(v)) => v,
        Ok(None) => return see_other("/login"),
        Err(e) => return error_page(&e),
    };
    if let Err(e) = require_owner(&v.who) {
        return error_page(&e);
    }
    let endpoints = match notifications::list(&state, v.who.account_id.clone()).await {
        Ok(list) => list,
        Err(e) => return error_page(&e),
    };
    let Some(e) = endpoints.iter().find(|e| e.id == *id) else {
        return error_page(&ApiError::NotFound(format!(
            "Webhook endpoint {} not found (it may be deleted already)",
            id.as_str()
        )));
    };
    let inner = r#"<p class="actions"><button type="submit" class="danger">Delete endpoint</button> <a href="/settings">Cancel</a></p>"#;
    let main = format!(
        r#"<section aria-labelledby="confirm-h" class="card"><h2 id="confirm-h">Delete the endpoint {url}?</h2><p>It is sent nothing more, including deliveries still waiting; this cannot be undone.</p>{form}</section>"#,
        url = esc(&e.url),
        form = html::post_form(
            &format!("/settings/webhooks/{}/delete", e.id),
            &v.csrf,
            "",
            inner
        ),
    );
    html::respond(
        StatusCode::OK,
        html::page(
            "Delete an endpoint",
            Some(&v.header("/settings")),
            &[],
            &main,
        ),
    )
}

/// Deletes an endpoint (owners, confirmed).
#[post("/settings/webhooks/{id}/delete")]
pub async fn delete(state: AppData, id: web::Path<String>, posted: Posted) -> HttpResponse {
    let v = posted.viewer;
    let result = notifications::delete(&state, &v.who, id.into_inner())
        .await
        .map(|()| "webhook-deleted");
    after(&state, &v, result).await
}

/// Sets (empty: turns off) the low-balance alert (owners).
#[post("/settings/alerts")]
pub async fn alert(state: AppData, posted: Posted) -> HttpResponse {
    let Posted { viewer: v, form } = posted;
    let result = async {
        require_owner(&v.who)?;
        let text = form.text("low_balance").trim();
        let low = if text.is_empty() {
            None
        } else {
            Some(super::settings::credits_field(
                &form,
                "low_balance",
                "Low balance alert",
            )?)
        };
        notifications::set_alerts(&state, v.who.account_id.clone(), low).await?;
        Ok("alert")
    }
    .await;
    after(&state, &v, result).await
}

/// Mounts the webhook and alert forms.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create)
        .service(confirm)
        .service(delete)
        .service(alert);
}
