//! API keys: create (the key and its signing secret shown once, in the answer to the
//! post, never stored or shown again), list with last use, revoke after a confirmation
//! page (no script needed).

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use ledger_core::Timestamp;

use super::account::error_page;
use super::html::{self, esc, field, Notice};
use super::session::{viewer, Posted, Viewer};
use super::{message_of, see_other, status_of};
use crate::routes::AppData;
use crate::service::accounts::{self, CreatedKey};
use crate::state::AppState;

/// The keys page, with `created` (just made: shown this once) and `notices`.
async fn keys_page(
    state: &AppState,
    v: &Viewer,
    status: StatusCode,
    created: Option<&CreatedKey>,
    notices: &[Notice],
) -> HttpResponse {
    let keys = match accounts::api_keys(state, &v.who).await {
        Ok(k) => k,
        Err(e) => return error_page(&e),
    };
    let mut main = String::new();
    if let Some(c) = created {
        let _ = write!(
            main,
            r#"<section aria-labelledby="new-key-h" class="card secret"><h2 id="new-key-h">New API key</h2><p>Copy the key and its signing secret now: they are shown only this once and cannot be shown again.</p><p class="label" id="new-key-label">Key “{name}”</p><p><code id="new-key" aria-labelledby="new-key-label">{key}</code> <button type="button" class="secondary copy" data-copy="new-key" hidden>Copy key</button></p><p class="label" id="new-secret-label">Signing secret (for signed URLs)</p><p><code id="new-secret" aria-labelledby="new-secret-label">{secret}</code> <button type="button" class="secondary copy" data-copy="new-secret" hidden>Copy signing secret</button></p></section>"#,
            name = esc(&c.stored.name),
            key = esc(&c.key),
            secret = esc(&c.signing_secret),
        );
    }
    let inner = format!(
        "{}<p><button type=\"submit\">Create key</button></p>",
        field(
            "key-name",
            "Key name",
            r#"type="text" name="name" required maxlength="100" autocomplete="off""#
        )
    );
    let _ = write!(
        main,
        r#"<section aria-labelledby="create-h" class="card"><h2 id="create-h">Create a key</h2>{}</section>"#,
        html::post_form("/keys", &v.csrf, "stack", &inner)
    );
    main.push_str(
        r#"<section aria-labelledby="list-h" class="card"><h2 id="list-h">Your keys</h2>"#,
    );
    if keys.is_empty() {
        main.push_str("<p>No keys yet.</p>");
    } else {
        main.push_str(r#"<table class="list"><caption>API keys</caption><thead><tr><th scope="col">Name</th><th scope="col">Prefix</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col"><span class="visually-hidden">Action</span></th></tr></thead><tbody>"#);
        for k in &keys {
            let last = k
                .last_used_at_ms
                .map(|ms| html::when(Timestamp::from_millis(ms)))
                .unwrap_or_else(|| "never".into());
            let _ = write!(
                main,
                r#"<tr><td class="wrap">{name}</td><td><code>{prefix}…</code></td><td>{created}</td><td>{last}</td><td><form method="get" action="/keys/{id}/revoke" class="inline"><button type="submit" class="danger">Revoke</button></form></td></tr>"#,
                name = esc(&k.name),
                prefix = esc(&k.prefix),
                created = html::when(Timestamp::from_millis(k.created_at_ms)),
                last = esc(&last),
                id = esc(&k.id),
            );
        }
        main.push_str("</tbody></table>");
    }
    main.push_str("</section>");
    html::respond(
        status,
        html::page("API keys", Some(&v.header("/keys")), notices, &main),
    )
}

/// The keys of the account the person may see (an owner: all; a member: their own).
#[get("/keys")]
pub async fn list(
    state: AppData,
    req: HttpRequest,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    let v = match viewer(&state, &req).await {
        Ok(Some(v)) => v,
        Ok(None) => return see_other("/login"),
        Err(e) => return error_page(&e),
    };
    let notices = match query.get("revoked") {
        Some(_) => vec![Notice::Done(
            "Key revoked: it stopped working at once.".into(),
        )],
        None => Vec::new(),
    };
    keys_page(&state, &v, StatusCode::OK, None, &notices).await
}

/// Creates a key and shows it, and its signing secret, this once.
#[post("/keys")]
pub async fn create(state: AppData, posted: Posted) -> HttpResponse {
    let Posted { viewer: v, form } = posted;
    match accounts::create_api_key(&state, &v.who, form.text("name")).await {
        Ok(created) => {
            let done = [Notice::Done(format!(
                "Key “{}” created.",
                created.stored.name
            ))];
            keys_page(&state, &v, StatusCode::CREATED, Some(&created), &done).await
        }
        Err(e) => {
            let failed = [Notice::Failed(format!("Key name: {}", message_of(&e)))];
            keys_page(&state, &v, status_of(&e), None, &failed).await
        }
    }
}

/// Asks to confirm revoking a key (works without a script).
#[get("/keys/{id}/revoke")]
pub async fn confirm(state: AppData, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let v = match viewer(&state, &req).await {
        Ok(Some(v)) => v,
        Ok(None) => return see_other("/login"),
        Err(e) => return error_page(&e),
    };
    let keys = match accounts::api_keys(&state, &v.who).await {
        Ok(k) => k,
        Err(e) => return error_page(&e),
    };
    let Some(key) = keys.iter().find(|k| k.id == *id) else {
        return error_page(&crate::error::ApiError::NotFound(format!(
            "API key {} not found (it may be revoked already)",
            id.as_str()
        )));
    };
    let inner = r#"<p class="actions"><button type="submit" class="danger">Revoke</button> <a href="/keys">Cancel</a></p>"#;
    let main = format!(
        r#"<section aria-labelledby="confirm-h" class="card"><h2 id="confirm-h">Revoke “{name}”?</h2><p>The key <code>{prefix}…</code> and its signed URLs stop working at once; this cannot be undone.</p>{form}</section>"#,
        name = esc(&key.name),
        prefix = esc(&key.prefix),
        form = html::post_form(&format!("/keys/{}/revoke", key.id), &v.csrf, "", inner),
    );
    html::respond(
        StatusCode::OK,
        html::page("Revoke a key", Some(&v.header("/keys")), &[], &main),
    )
}

/// Revokes a key (confirmed); it stops working at once.
#[post("/keys/{id}/revoke")]
pub async fn revoke(state: AppData, id: web::Path<String>, posted: Posted) -> HttpResponse {
    let v = posted.viewer;
    match accounts::revoke_api_key(&state, &v.who, id.into_inner()).await {
        Ok(()) => see_other("/keys?revoked=1"),
        Err(e) => {
            let failed = [Notice::Failed(message_of(&e))];
            keys_page(&state, &v, status_of(&e), None, &failed).await
        }
    }
}

/// Mounts the keys pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list)
        .service(create)
        .service(confirm)
        .service(revoke);
}
