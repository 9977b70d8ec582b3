//! Settings the API has: the hard limit, auto top-up, members (owners change them;
//! members see them read-only, and the server refuses their changes too), and the webhook
//! endpoints with the low-balance alert ([`super::webhooks`]).

use std::collections::HashMap;
use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use ledger_core::Credits;
use payments::AutoTopupRequest;

use super::account::error_page;
use super::html::{self, esc, field, Notice};
use super::session::{viewer, Form, Posted, Viewer};
use super::{message_of, see_other, status_of};
use crate::error::ApiError;
use crate::routes::AppData;
use crate::service::subscription::{self, SubscriptionError};
use crate::service::{accounts, members};
use crate::state::AppState;

/// A number of credits typed in a form field named `field`.
pub(super) fn credits_field(form: &Form, name: &str, field: &str) -> Result<Credits, ApiError> {
    let text = form.text(name).trim();
    let parsed: Result<Credits, _> = text.parse();
    parsed.ok().filter(|c| !c.is_negative()).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("{field} must be a number of credits from 0, such as 15000 (got “{text}”)"),
        )
    })
}

fn subscription_error(e: SubscriptionError) -> ApiError {
    match e {
        SubscriptionError::Api(e) => e,
        SubscriptionError::Coded {
            status, message, ..
        } if status == StatusCode::FORBIDDEN => ApiError::Forbidden(message),
        SubscriptionError::Coded {
            status, message, ..
        } if status == StatusCode::NOT_FOUND => ApiError::NotFound(message),
        SubscriptionError::Coded {
            status,
            message,
            code,
        } if status == StatusCode::CONFLICT => ApiError::Conflict { code, message },
        SubscriptionError::Coded { message, .. } => ApiError::invalid("hardLimit", message),
    }
}

async fn hard_limit_html(state: &AppState, v: &Viewer) -> Result<String, ApiError> {
    let mut out = String::from(
        r#"<section aria-labelledby="limit-h" class="card"><h2 id="limit-h">Plan and hard limit</h2>"#,
    );
    match subscription::view(state, v.who.account_id.clone()).await {
        Ok(s) => {
            let _ = write!(
                out,
                "<p>{} plan: {} credits a period; at most {} with the hard limit.</p>",
                esc(&s.plan.name),
                s.plan.limit(),
                s.max_hard_limit
            );
            if v.is_owner() && s.plan.paying {
                let inner = format!(
                    "{}<p><button type=\"submit\">Save hard limit</button></p>",
                    field(
                        "hard-limit",
                        "Hard limit",
                        &format!(
                            r#"type="number" name="hard_limit" inputmode="numeric" min="{}" max="{}" value="{}" aria-describedby="limit-hint" required"#,
                            s.plan.limit(),
                            s.max_hard_limit,
                            s.hard_limit
                        )
                    )
                );
                out.push_str(&html::post_form("/settings/hard-limit", &v.csrf, "stack", &inner));
                out.push_str(r#"<p id="limit-hint" class="hint">Above the plan's limit turns on charging extra, billed per started 1,000 credits.</p>"#);
            } else {
                let why = if v.is_owner() {
                    "a free plan cannot charge extra"
                } else {
                    "only an owner of the account can change it"
                };
                let _ = write!(
                    out,
                    r#"<dl class="facts"><dt>Hard limit</dt><dd>{} credits</dd></dl><p class="hint">Read-only: {why}.</p>"#,
                    s.hard_limit
                );
            }
        }
        Err(SubscriptionError::Api(e)) => return Err(e),
        Err(_) => out.push_str(
            "<p>No subscription: pay as you go with credits. A plan (set by the operator) brings a monthly allowance and a hard limit.</p>",
        ),
    }
    out.push_str("</section>");
    Ok(out)
}

fn auto_topup_html(
    state: &AppState,
    v: &Viewer,
    view: Result<payments::AutoTopupView, ApiError>,
) -> String {
    let mut out = String::from(
        r#"<section aria-labelledby="topup-h" class="card"><h2 id="topup-h">Auto top-up</h2>"#,
    );
    let view = match view {
        Ok(view) => view,
        Err(e) => {
            let _ = write!(out, "<p>{}</p></section>", esc(&message_of(&e)));
            return out;
        }
    };
    let packs: Vec<(String, String)> = state
        .catalogue
        .active()
        .into_iter()
        .map(|p| {
            (
                p.id.as_str().to_owned(),
                format!(
                    "{} ({} credits, {})",
                    p.name,
                    p.credits.grouped(),
                    html::dollars(p.price.get())
                ),
            )
        })
        .collect();
    let _ = write!(out, "<p>Status: {}", esc(&view.status));
    if let Some(why) = &view.paused_reason {
        let _ = write!(out, " ({})", esc(why));
    }
    out.push_str("</p>");
    if v.is_owner() {
        let checked = if view.enabled { " checked" } else { "" };
        let inner = format!(
            r#"<p class="field check"><input type="checkbox" id="topup-on" name="enabled" value="on"{checked}><label for="topup-on">Auto top-up</label></p>{}{}<p><button type="submit">Save auto top-up</button></p>"#,
            field(
                "topup-threshold",
                "Threshold",
                &format!(
                    r#"type="number" name="threshold" inputmode="decimal" min="0" step="any" value="{}" aria-describedby="topup-hint" required"#,
                    view.threshold_credits
                )
            ),
            html::select(
                "topup-pack",
                "pack",
                "Pack",
                &packs,
                view.pack_id.as_deref().unwrap_or(""),
            ),
        );
        out.push_str(&html::post_form(
            "/settings/auto-topup",
            &v.csrf,
            "stack",
            &inner,
        ));
        out.push_str(r#"<p id="topup-hint" class="hint">When the balance falls below the threshold, the pack is bought again with the saved payment method.</p>"#);
    } else {
        let _ = write!(
            out,
            r#"<dl class="facts"><dt>Auto top-up</dt><dd>{}</dd><dt>Threshold</dt><dd>{} credits</dd><dt>Pack</dt><dd>{}</dd></dl><p class="hint">Read-only: only an owner of the account can change it.</p>"#,
            if view.enabled { "on" } else { "off" },
            view.threshold_credits,
            esc(view.pack_id.as_deref().unwrap_or("none"))
        );
    }
    out.push_str("</section>");
    out
}

async fn members_html(
    state: &AppState,
    v: &Viewer,
    invited: Option<&str>,
) -> Result<String, ApiError> {
    let list = members::list(state, &v.who).await?;
    let mut out = String::from(
        r#"<section aria-labelledby="members-h" class="card"><h2 id="members-h">Members</h2>"#,
    );
    if let Some(link) = invited {
        let _ = write!(
            out,
            r#"<div class="secret" role="status"><p>Send this invitation link to the person you invited (it works once, for 7 days, and is shown only now):</p><p><code id="invite-link">{}</code> <button type="button" class="secondary copy" data-copy="invite-link" hidden>Copy link</button></p></div>"#,
            esc(link)
        );
    }
    out.push_str(r#"<table class="list"><caption>Members of the account</caption><thead><tr><th scope="col">Email</th><th scope="col">Role</th><th scope="col">Joined</th>"#);
    if v.is_owner() {
        out.push_str(r#"<th scope="col"><span class="visually-hidden">Action</span></th>"#);
    }
    out.push_str("</tr></thead><tbody>");
    for m in &list {
        let _ = write!(
            out,
            r#"<tr><td class="wrap">{}</td><td>{}</td><td>{}</td>"#,
            esc(&m.email),
            esc(m.role.as_str()),
            html::when(m.created_at)
        );
        if v.is_owner() {
            let button = format!(
                r#"<button type="submit" class="danger" aria-label="Remove {}">Remove</button>"#,
                esc(&m.email)
            );
            let _ = write!(
                out,
                "<td>{}</td>",
                html::post_form(
                    &format!("/settings/members/{}/remove", m.id),
                    &v.csrf,
                    "inline",
                    &button
                )
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    if v.is_owner() {
        let roles = [
            (
                "member".to_owned(),
                "Member: uses credits, makes own keys".to_owned(),
            ),
            (
                "owner".to_owned(),
                "Owner: also buys, sets limits, manages members".to_owned(),
            ),
        ];
        let inner = format!(
            "{}{}<p><button type=\"submit\">Invite</button></p>",
            field(
                "invite-email",
                "Invite email",
                r#"type="email" name="email" autocomplete="off" required"#
            ),
            html::select("invite-role", "role", "Role", &roles, "member"),
        );
        out.push_str("<h3>Invite someone</h3>");
        out.push_str(&html::post_form(
            "/settings/members",
            &v.csrf,
            "stack",
            &inner,
        ));
    } else {
        out.push_str("<p class=\"hint\">Read-only: only an owner invites and removes members.</p>");
    }
    out.push_str("</section>");
    Ok(out)
}

/// What the settings page shows once, in the answer to the post that made it.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Shown<'a> {
    /// A member's invitation link.
    pub invited: Option<&'a str>,
    /// A webhook endpoint just added (its secret).
    pub endpoint: Option<&'a ledger_store::Endpoint>,
}

pub(super) async fn settings_page(
    state: &AppState,
    v: &Viewer,
    status: StatusCode,
    notices: &[Notice],
    shown: Shown<'_>,
) -> HttpResponse {
    let topup = accounts::auto_topup(state, v.who.account_id.clone()).await;
    let parts = async {
        let limit = hard_limit_html(state, v).await?;
        let people = members_html(state, v, shown.invited).await?;
        let hooks = super::webhooks::section_html(state, v, shown.endpoint).await?;
        Ok::<_, ApiError>(format!(
            "{limit}{}{people}{hooks}",
            auto_topup_html(state, v, topup)
        ))
    }
    .await;
    match parts {
        Ok(main) => html::respond(
            status,
            html::page("Settings", Some(&v.header("/settings")), notices, &main),
        ),
        Err(e) => error_page(&e),
    }
}

/// The settings page.
#[get("/settings")]
pub async fn page(
    state: AppData,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let v = match viewer(&state, &req).await {
        Ok(Some(v)) => v,
        Ok(None) => return see_other("/login"),
        Err(e) => return error_page(&e),
    };
    let notices: Vec<Notice> = match query.get("saved").map(String::as_str) {
        Some("hard-limit") => vec![Notice::Done("Hard limit saved.".into())],
        Some("auto-topup") => vec![Notice::Done("Auto top-up saved.".into())],
        Some("removed") => vec![Notice::Done(
            "Member removed: their sessions and keys stopped working.".into(),
        )],
        Some("webhook-deleted") => vec![Notice::Done(
            "Endpoint deleted: it is sent nothing more.".into(),
        )],
        Some("alert") => vec![Notice::Done("Low balance alert saved.".into())],
        _ => Vec::new(),
    };
    settings_page(&state, &v, StatusCode::OK, &notices, Shown::default()).await
}

/// The answer to a settings post: back to the page saying it was saved, or the page again
/// saying what was wrong (nothing changed).
pub(super) async fn after(
    state: &AppState,
    v: &Viewer,
    result: Result<&str, ApiError>,
) -> HttpResponse {
    match result {
        Ok(saved) => see_other(&format!("/settings?saved={saved}")),
        Err(e) => {
            let notices = [Notice::Failed(message_of(&e))];
            settings_page(state, v, status_of(&e), &notices, Shown::default()).await
        }
    }
}

/// Sets the hard limit (owners of paying plans; the service refuses anyone else).
#[post("/settings/hard-limit")]
pub async fn hard_limit(state: AppData, posted: Posted) -> HttpResponse {
    let Posted { viewer: v, form } = posted;
    let result = async {
        let limit = credits_field(&form, "hard_limit", "Hard limit")?;
        subscription::set_hard_limit(&state, v.who.account_id.clone(), v.who.role, limit)
            .await
            .map_err(subscription_error)?;
        Ok("hard-limit")
    }
    .await;
    after(&state, &v, result).await
}

/// Sets auto top-up (owners).
#[post("/settings/auto-topup")]
pub async fn auto_topup(state: AppData, posted: Posted) -> HttpResponse {
    let Posted { viewer: v, form } = posted;
    let result = async {
        members::require_owner(&v.who)?;
        let request = AutoTopupRequest {
            enabled: form.ticked("enabled"),
            threshold_credits: credits_field(&form, "threshold", "Threshold")?,
            pack_id: form.text("pack").trim().to_owned(),
        };
        accounts::set_auto_topup(&state, v.who.account_id.clone(), request).await?;
        Ok("auto-topup")
    }
    .await;
    after(&state, &v, result).await
}

/// Invites someone (owners): the page again with the invitation link, shown once.
#[post("/settings/members")]
pub async fn invite(state: AppData, posted: Posted) -> HttpResponse {
    let Posted { viewer: v, form } = posted;
    match members::invite(&state, &v.who, form.text("email"), form.text("role")).await {
        Ok((invite, token)) => {
            let link = format!(
                "{}/signup?invite={token}",
                state.settings.server.public_url.trim_end_matches('/')
            );
            let notices = [Notice::Done(format!("{} invited.", invite.email))];
            let shown = Shown {
                invited: Some(&link),
                ..Shown::default()
            };
            settings_page(&state, &v, StatusCode::CREATED, &notices, shown).await
        }
        Err(e) => after(&state, &v, Err(e)).await,
    }
}

/// Removes a member (owners); their sessions and keys stop working at once.
#[post("/settings/members/{id}/remove")]
pub async fn remove(state: AppData, id: web::Path<String>, posted: Posted) -> HttpResponse {
    let v = posted.viewer;
    let result = members::remove(&state, &v.who, id.into_inner())
        .await
        .map(|()| "removed");
    after(&state, &v, result).await
}

/// Mounts the settings pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(page)
        .service(hard_limit)
        .service(auto_topup)
        .service(invite)
        .service(remove);
}
