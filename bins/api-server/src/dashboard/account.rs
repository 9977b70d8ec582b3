//! Signing up (or joining from an invitation), logging in and out, and the overview: the
//! balance, the plan and buying credit packs.

use std::fmt::Write as _;

use actix_web::cookie::{time::Duration, Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use ledger_core::{EntryKind, Page, Timestamp};

use super::html::{self, esc, field, Notice};
use super::session::{self, viewer, Form, Posted, Viewer};
use super::{message_of, see_other, status_of};
use crate::auth::Credential;
use crate::error::ApiError;
use crate::routes::AppData;
use crate::service::{accounts, members, subscription};
use crate::state::AppState;

/// The cookie that remembers a checkout started from this browser (`<pack id>.<unix
/// millis>`), so the overview can say the payment is on its way and watch for it.
pub const PENDING_COOKIE: &str = "checkout_pending";

/// A page that only says what went wrong (with the API's status and message).
pub fn error_page(e: &ApiError) -> HttpResponse {
    html::respond(
        status_of(e),
        html::page(
            "Something went wrong",
            None,
            &[Notice::Failed(message_of(e))],
            r#"<p><a href="/">Back to the dashboard</a></p>"#,
        ),
    )
}

/// The log-in or sign-up form: `kind` is `login` or `signup`.
fn credentials_page(
    kind: &str,
    token: &str,
    email: &str,
    invite: Option<&str>,
    notices: &[Notice],
) -> String {
    let (title, button, autocomplete, other) = match (kind, invite) {
        ("login", _) => (
            "Log in",
            "Log in",
            "current-password",
            r#"<p>No account yet? <a href="/signup">Sign up</a></p>"#,
        ),
        (_, Some(_)) => (
            "Join an account",
            "Sign up",
            "new-password",
            r#"<p>Already have a login? <a href="/login">Log in</a></p>"#,
        ),
        _ => (
            "Sign up",
            "Sign up",
            "new-password",
            r#"<p>Already have an account? <a href="/login">Log in</a></p>"#,
        ),
    };
    let invite_field = invite
        .map(|t| format!(r#"<input type="hidden" name="invite" value="{}">"#, esc(t)))
        .unwrap_or_default();
    let intro = match (kind, invite) {
        ("signup", Some(_)) => "<p>You were invited to an account: choose the email the invitation was sent to and a password.</p>",
        ("signup", None) => "<p>A new account starts with a welcome bonus of free credits.</p>",
        _ => "",
    };
    let inner = format!(
        "{intro}{invite_field}{}{}<p><button type=\"submit\">{button}</button></p>",
        field(
            "email",
            "Email",
            &format!(
                r#"type="email" name="email" autocomplete="email" required value="{}""#,
                esc(email)
            )
        ),
        field(
            "password",
            "Password",
            &format!(
                r#"type="password" name="password" autocomplete="{autocomplete}" required minlength="8" aria-describedby="password-hint""#
            )
        ),
    );
    let action = format!("/{kind}");
    let form = html::post_form(&action, token, "stack", &inner);
    let hint = r#"<p id="password-hint" class="hint">At least 8 characters.</p>"#;
    html::page(title, None, notices, &format!("{form}{hint}{other}"))
}

/// A signed-out form page, with this browser's form cookie set when it is new.
fn signed_out_form(
    req: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    kind: &str,
    email: &str,
    invite: Option<&str>,
    notices: &[Notice],
) -> HttpResponse {
    let (token, cookie) = match session::form_value(req, state) {
        Ok(v) => v,
        Err(e) => return error_page(&e),
    };
    let mut res = html::respond(
        status,
        credentials_page(kind, &token, email, invite, notices),
    );
    if let Some(c) = cookie {
        let _ = res.add_cookie(&c);
    }
    res
}

/// The log-in page (signed in already: the overview).
#[get("/login")]
pub async fn login_page(state: AppData, req: HttpRequest) -> HttpResponse {
    if let Ok(Some(_)) = viewer(&state, &req).await {
        return see_other("/");
    }
    signed_out_form(&req, &state, StatusCode::OK, "login", "", None, &[])
}

/// The sign-up page; `?invite=<token>` joins the inviting account.
#[get("/signup")]
pub async fn signup_page(
    state: AppData,
    req: HttpRequest,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    let invite = query.get("invite").map(String::as_str);
    signed_out_form(&req, &state, StatusCode::OK, "signup", "", invite, &[])
}

/// The answer that starts the session of `who` and goes to the overview.
fn signed_in(state: &AppState, who: accounts::LoggedIn) -> HttpResponse {
    let mut res = see_other("/");
    let _ = res.add_cookie(&crate::routes::auth::session_cookie(
        state,
        who.session_token,
    ));
    res
}

async fn credentials_post(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    kind: &str,
) -> HttpResponse {
    let form = Form::parse(body);
    if !session::form_value_matches(req, &form) {
        return session::csrf_refused();
    }
    let (email, password) = (form.text("email"), form.text("password"));
    let invite = form.get("invite").filter(|t| !t.is_empty());
    let result = match (kind, invite) {
        ("login", _) => accounts::login(state, email, password).await,
        (_, Some(token)) => members::join(state, email, password, token).await,
        _ => accounts::signup(state, email, password).await,
    };
    match result {
        Ok(who) => signed_in(state, who),
        Err(e) => signed_out_form(
            req,
            state,
            status_of(&e),
            kind,
            email,
            invite,
            &[Notice::Failed(message_of(&e))],
        ),
    }
}

/// Logs in: the overview, or the form again saying what was wrong.
#[post("/login")]
pub async fn login(state: AppData, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    credentials_post(&state, &req, &body, "login").await
}

/// Signs up (or joins from an invitation) and logs in.
#[post("/signup")]
pub async fn signup(state: AppData, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    credentials_post(&state, &req, &body, "signup").await
}

/// Ends the session (revoked server-side) and goes to the login page.
#[post("/logout")]
pub async fn logout(state: AppData, posted: Posted) -> HttpResponse {
    let v = posted.viewer;
    if let Credential::Session(hash) = v.who.credential {
        if let Err(e) = accounts::logout(&state, hash).await {
            return error_page(&e);
        }
    }
    let mut gone = Cookie::build(crate::auth::SESSION_COOKIE, "")
        .path("/")
        .finish();
    gone.make_removal();
    let mut res = see_other("/login");
    let _ = res.add_cookie(&gone);
    res
}

/// A checkout this browser started: the pack and when.
struct Pending {
    pack_name: String,
    since: Timestamp,
}

fn pending(state: &AppState, req: &HttpRequest) -> Option<Pending> {
    let value = req.cookie(PENDING_COOKIE)?.value().to_owned();
    let (pack, millis) = value.rsplit_once('.')?;
    let pack = state.catalogue.find_active(pack)?;
    Some(Pending {
        pack_name: pack.name.clone(),
        since: Timestamp::from_millis(millis.parse().ok()?),
    })
}

/// The overview: balance, plan, packs. Signed out: the login page.
#[get("/")]
pub async fn overview(state: AppData, req: HttpRequest) -> HttpResponse {
    let v = match viewer(&state, &req).await {
        Ok(Some(v)) => v,
        Ok(None) => return see_other("/login"),
        Err(e) => return error_page(&e),
    };
    overview_answer(&state, &req, &v, StatusCode::OK, Vec::new()).await
}

async fn overview_answer(
    state: &AppState,
    req: &HttpRequest,
    v: &Viewer,
    status: StatusCode,
    mut notices: Vec<Notice>,
) -> HttpResponse {
    match overview_html(state, req, v, &mut notices).await {
        Ok((html, arrived)) => {
            let mut res = html::respond(status, html);
            if arrived {
                let mut gone = Cookie::build(PENDING_COOKIE, "").path("/").finish();
                gone.make_removal();
                let _ = res.add_cookie(&gone);
            }
            res
        }
        Err(e) => error_page(&e),
    }
}

/// The overview's HTML, and whether a pending purchase has arrived (its cookie is then
/// cleared).
async fn overview_html(
    state: &AppState,
    req: &HttpRequest,
    v: &Viewer,
    notices: &mut Vec<Notice>,
) -> Result<(String, bool), ApiError> {
    let balance = accounts::available(state, &v.who.account_id).await?;
    let mut main = String::new();
    let mut arrived = false;
    if let Some(p) = pending(state, req) {
        let recent = accounts::history(
            state,
            v.who.account_id.clone(),
            Page::new(20, 0).map_err(ApiError::from)?,
        )
        .await?;
        arrived = recent
            .iter()
            .any(|e| e.kind == EntryKind::Purchase && e.created_at >= p.since);
        if arrived {
            notices.push(Notice::Done(format!(
                "Your purchase of {} arrived: your balance is now {balance} credits.",
                p.pack_name
            )));
        } else {
            let _ = write!(
                main,
                r#"<p id="purchase-notice" class="notice waiting" role="status" data-waiting="1" data-pack="{}">Payment received, credits on their way. This page updates by itself when they land.</p>"#,
                esc(&p.pack_name)
            );
        }
    }
    let _ = write!(
        main,
        r#"<section aria-labelledby="balance-h" class="card"><h2 id="balance-h">Balance</h2><p class="big"><span id="balance" data-balance="{balance}">{balance}</span> credits</p><p class="hint">What you can spend now: your credits minus what running captures hold.</p></section>"#
    );
    main.push_str(&plan_html(state, v).await?);
    main.push_str(&packs_html(state, v));
    Ok((
        html::page("Overview", Some(&v.header("/")), notices, &main),
        arrived,
    ))
}

/// The plan with its period, use, extra and billed overage, and the subscription status.
async fn plan_html(state: &AppState, v: &Viewer) -> Result<String, ApiError> {
    let mut out =
        String::from(r#"<section aria-labelledby="plan-h" class="card"><h2 id="plan-h">Plan</h2>"#);
    match subscription::view(state, v.who.account_id.clone()).await {
        Ok(s) => {
            let period = s
                .period
                .map(|p| format!("{} to {}", html::when(p.start), html::when(p.end)))
                .unwrap_or_else(|| "not started".into());
            let _ = write!(
                out,
                "<dl class=\"facts\"><dt>Plan</dt><dd>{}</dd><dt>Status</dt><dd>{}</dd><dt>Period</dt><dd>{}</dd><dt>Used this period</dt><dd>{} credits</dd><dt>Extra</dt><dd>{} credits</dd><dt>Billed overage</dt><dd>{} credits ({})</dd><dt>Hard limit</dt><dd>{} credits</dd></dl>",
                esc(&s.plan.name),
                esc(s.status.as_str()),
                esc(&period),
                s.used,
                s.extra,
                s.extra_billed(),
                html::dollars(s.charge.get()),
                s.hard_limit,
            );
        }
        Err(subscription::SubscriptionError::Api(e)) => return Err(e),
        Err(_) => out.push_str(
            "<dl class=\"facts\"><dt>Plan</dt><dd>Pay as you go</dd><dt>Status</dt><dd>inactive (no subscription)</dd></dl>",
        ),
    }
    out.push_str("</section>");
    Ok(out)
}

/// A button per active pack (owners), or the packs as a list (members cannot buy).
fn packs_html(state: &AppState, v: &Viewer) -> String {
    let mut out = String::from(
        r#"<section aria-labelledby="buy-h" class="card"><h2 id="buy-h">Buy credits</h2><ul class="packs">"#,
    );
    for pack in state.catalogue.active() {
        let popular = if pack.popular {
            r#" <span class="tag">Popular</span>"#
        } else {
            ""
        };
        let button = if v.is_owner() {
            html::post_form(
                "/buy",
                &v.csrf,
                "inline",
                &format!(
                    r#"<input type="hidden" name="pack" value="{}"><button type="submit">Buy {}</button>"#,
                    esc(pack.id.as_str()),
                    esc(&pack.name)
                ),
            )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            r#"<li><h3>{}{popular}</h3><p>{} credits for {}</p>{button}</li>"#,
            esc(&pack.name),
            pack.credits.grouped(),
            html::dollars(pack.price.get()),
        );
    }
    out.push_str("</ul>");
    if !v.is_owner() {
        out.push_str("<p class=\"hint\">Only an owner of the account buys credits.</p>");
    }
    out.push_str("<p class=\"hint\">Credits are added once the payment provider confirms the payment; purchased credits never expire.</p></section>");
    out
}

/// Starts the checkout of a pack (owners): on to the payment provider's checkout page, with
/// a cookie so the overview can watch for the credits when the buyer comes back. The
/// answer is a page that goes on at once (`<meta http-equiv="refresh">`), not a redirect:
/// the pages' `form-action 'self'` also covers where a form's redirects may lead, and
/// the checkout is on the provider's site.
#[post("/buy")]
pub async fn buy(state: AppData, req: HttpRequest, posted: Posted) -> HttpResponse {
    let Posted { viewer: v, form } = posted;
    let pack = form.text("pack").trim().to_owned();
    let started = match members::require_owner(&v.who) {
        Ok(()) => accounts::purchase(&state, v.who.account_id.clone(), &pack).await,
        Err(e) => Err(e),
    };
    match started {
        Ok(url) => {
            let mut res = html::respond(StatusCode::OK, html::onward(&url));
            let cookie = Cookie::build(PENDING_COOKIE, format!("{pack}.{}", state.now().millis()))
                .path("/")
                .http_only(true)
                .same_site(SameSite::Lax)
                .secure(state.settings.auth.cookie_secure)
                .max_age(Duration::hours(1))
                .finish();
            let _ = res.add_cookie(&cookie);
            res
        }
        Err(e) => {
            let notices = vec![Notice::Failed(message_of(&e))];
            overview_answer(&state, &req, &v, status_of(&e), notices).await
        }
    }
}

/// Mounts the account pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(overview)
        .service(login_page)
        .service(login)
        .service(signup_page)
        .service(signup)
        .service(logout)
        .service(buy);
}
