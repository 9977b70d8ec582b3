//! Who is looking at a dashboard page, what a form posted, and the CSRF check every post
//! passes before anything else happens.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use ledger_core::Role;

use super::html::{self, Notice, CSRF_FIELD};
use crate::auth::{csrf_token, new_session_token, secrets_equal, Authed, Proof, SESSION_COOKIE};
use crate::error::ApiError;
use crate::service::accounts;
use crate::state::AppState;

/// The cookie that holds a signed-out form's CSRF value (log in, sign up): compared with
/// the form's hidden field (double submit). `SameSite=Strict` and `HttpOnly`.
pub const FORM_COOKIE: &str = "form_csrf";

/// A signed-in person: their account and role, and the session's CSRF token.
pub struct Viewer {
    pub who: Authed,
    pub csrf: String,
    /// What the header shows: the login's email (the account id for an account made
    /// without a login).
    pub label: String,
}

impl Viewer {
    /// True for an owner of the account (who manages billing and members).
    pub fn is_owner(&self) -> bool {
        self.who.role.manages_billing()
    }

    /// The page header for this person on the page at `current`.
    pub fn header<'a>(&'a self, current: &'a str) -> html::Header<'a> {
        html::Header {
            who: &self.label,
            csrf: &self.csrf,
            current,
        }
    }
}

/// The session token the request's cookie holds, if any.
pub fn session_token(req: &HttpRequest) -> Option<String> {
    req.cookie(SESSION_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|t| !t.is_empty() && !t.contains('\0'))
}

/// The person whose live session the request carries; `None` without one (or with one
/// that expired, was revoked, or whose account is gone).
pub async fn viewer(state: &AppState, req: &HttpRequest) -> Result<Option<Viewer>, ApiError> {
    let Some(token) = session_token(req) else {
        return Ok(None);
    };
    let Some(caller) = accounts::authenticate(state, true, &token).await? else {
        return Ok(None);
    };
    if !caller.exists {
        return Ok(None);
    }
    let role = caller.member.as_ref().map_or(Role::Owner, |m| m.role);
    let label = caller
        .member
        .as_ref()
        .map(|m| m.email.clone())
        .unwrap_or_else(|| caller.account_id.as_str().to_owned());
    Ok(Some(Viewer {
        who: Authed {
            account_id: caller.account_id,
            credential: caller.credential,
            proof: Proof::SessionOnly,
            role,
            member: caller.member,
        },
        csrf: csrf_token(&token),
        label,
    }))
}

/// The fields of a posted form (`application/x-www-form-urlencoded`).
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or "" when it is missing.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// Every value of `name` (checkboxes sharing a name), in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// True when a checkbox `name` was ticked (sent at all).
    pub fn ticked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// The `403` of a post whose CSRF token is missing or wrong: nothing was read or changed.
pub fn csrf_refused() -> HttpResponse {
    html::respond(
        StatusCode::FORBIDDEN,
        html::page(
            "Form refused",
            None,
            &[Notice::Failed(
                "This form could not be accepted: its security token is missing or does not \
                 belong to your session (the page may be old, or another site sent it). \
                 Nothing was changed. Go back, reload the page and try again."
                    .into(),
            )],
            r#"<p><a href="/">Back to the dashboard</a></p>"#,
        ),
    )
}

/// The signed-in person who posted `form` with their session's CSRF token; otherwise the
/// answer to give instead: `403` for a missing or wrong token, a redirect to the login
/// page without a session.
pub async fn poster(
    state: &AppState,
    req: &HttpRequest,
    form: &Form,
) -> Result<Viewer, HttpResponse> {
    let viewer = match viewer(state, req).await {
        Ok(Some(v)) => v,
        Ok(None) => return Err(super::see_other("/login")),
        Err(e) => return Err(super::account::error_page(&e)),
    };
    let given = form.text(CSRF_FIELD);
    if given.is_empty() || !secrets_equal(given, &viewer.csrf) {
        return Err(csrf_refused());
    }
    let mut viewer = viewer;
    viewer.who.proof = Proof::SessionWithToken;
    Ok(viewer)
}

/// A signed-in person's form post, its CSRF token checked ([`poster`]): what every
/// state-changing dashboard handler takes. When the check fails, the handler never runs
/// and the answer is [`poster`]'s (`403`, or the login page without a session).
pub struct Posted {
    pub viewer: Viewer,
    pub form: Form,
}

impl actix_web::FromRequest for Posted {
    type Error = actix_web::Error;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Posted, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        let body = actix_web::web::Bytes::from_request(&req, payload);
        Box::pin(async move {
            let refused = |res: HttpResponse| -> actix_web::Error {
                actix_web::error::InternalError::from_response("dashboard post refused", res).into()
            };
            let state = req
                .app_data::<actix_web::web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| {
                    refused(super::account::error_page(&ApiError::internal(
                        "application state missing",
                    )))
                })?;
            let form = Form::parse(&body.await?);
            let viewer = poster(&state, &req, &form).await.map_err(refused)?;
            Ok(Posted { viewer, form })
        })
    }
}

/// The signed-out form value of this browser (kept in [`FORM_COOKIE`]), and the cookie to
/// set when it is new.
pub fn form_value(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(String, Option<Cookie<'static>>), ApiError> {
    if let Some(c) = req.cookie(FORM_COOKIE) {
        let v = c.value();
        if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok((v.to_owned(), None));
        }
    }
    let value = new_session_token()?;
    let cookie = Cookie::build(FORM_COOKIE, value.clone())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.settings.auth.cookie_secure)
        .finish();
    Ok((value, Some(cookie)))
}

/// True when a signed-out form carries the value of this browser's [`FORM_COOKIE`].
pub fn form_value_matches(req: &HttpRequest, form: &Form) -> bool {
    let given = form.text(CSRF_FIELD);
    match req.cookie(FORM_COOKIE) {
        Some(c) => !given.is_empty() && !c.value().is_empty() && secrets_equal(given, c.value()),
        None => false,
    }
}
