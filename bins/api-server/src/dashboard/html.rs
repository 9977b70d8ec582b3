//! The few pieces every dashboard page is made of: escaping, the page frame, forms with
//! their CSRF token, and the answer that carries a page with its own
//! Content-Security-Policy.
//!
//! Pages are built as strings; every value that did not come from this file goes through
//! [`esc`] (text and attribute values alike), so nothing a user typed can become markup.

use std::fmt::Write as _;

use actix_web::http::header::{HeaderValue, CONTENT_SECURITY_POLICY};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;

/// What a dashboard page may load and do: its own style sheet and script, images of this
/// origin and the `data:`/`blob:` URLs of captured screenshots, requests and form posts to
/// this origin only; nothing inline, no framing.
pub const PAGE_CSP: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; \
    script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The name of the hidden field that carries the CSRF token in every form.
pub const CSRF_FIELD: &str = "csrf";

/// `text` escaped for HTML text and for a double- or single-quoted attribute value.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The hidden input that carries `token`.
pub fn csrf_input(token: &str) -> String {
    format!(
        r#"<input type="hidden" name="{CSRF_FIELD}" value="{}">"#,
        esc(token)
    )
}

/// A form that posts to `action` with the CSRF token, around `inner` (HTML).
pub fn post_form(action: &str, token: &str, class: &str, inner: &str) -> String {
    format!(
        r#"<form method="post" action="{}" class="{}">{}{inner}</form>"#,
        esc(action),
        esc(class),
        csrf_input(token)
    )
}

/// A notice at the top of a page: what happened, or what went wrong.
#[derive(Debug, Clone)]
pub enum Notice {
    Done(String),
    Failed(String),
}

impl Notice {
    fn html(&self) -> String {
        match self {
            Notice::Done(text) => {
                format!(r#"<p class="notice done" role="status">{}</p>"#, esc(text))
            }
            Notice::Failed(text) => {
                format!(r#"<p class="notice failed" role="alert">{}</p>"#, esc(text))
            }
        }
    }
}

/// Who is looking at a page: the header shows them and the log-out button.
pub struct Header<'a> {
    pub who: &'a str,
    pub csrf: &'a str,
    /// The path of the page, to mark the current link.
    pub current: &'a str,
}

const LINKS: [(&str, &str); 5] = [
    ("/", "Overview"),
    ("/keys", "API keys"),
    ("/history", "History"),
    ("/settings", "Settings"),
    ("/try", "Try a screenshot"),
];

/// A whole page: `title`, the header (signed in, or not), the notices and `main` (HTML).
pub fn page(title: &str, header: Option<&Header<'_>>, notices: &[Notice], main: &str) -> String {
    let mut nav = String::new();
    match header {
        Some(h) => {
            nav.push_str(r#"<nav aria-label="Dashboard"><ul>"#);
            for (href, text) in LINKS {
                let current = if href == h.current {
                    r#" aria-current="page""#
                } else {
                    ""
                };
                let _ = write!(nav, r#"<li><a href="{href}"{current}>{text}</a></li>"#);
            }
            nav.push_str("</ul></nav>");
            let _ = write!(
                nav,
                r#"<div class="who"><span>{}</span>{}</div>"#,
                esc(h.who),
                post_form(
                    "/logout",
                    h.csrf,
                    "inline",
                    r#"<button type="submit" class="secondary">Log out</button>"#
                )
            );
        }
        None => nav.push_str(
            r#"<nav aria-label="Account"><ul><li><a href="/login">Log in</a></li><li><a href="/signup">Sign up</a></li></ul></nav>"#,
        ),
    }
    let notices: String = notices.iter().map(Notice::html).collect();
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Shotledger</title>
<link rel="stylesheet" href="/dashboard/app.css">
<script src="/dashboard/app.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><p class="brand"><a href="/">Shotledger</a></p>{nav}</header>
<main id="main" tabindex="-1">
<h1>{title}</h1>
{notices}{main}
</main>
</body>
</html>
"##,
        title = esc(title),
    )
}

/// A page that goes on to `url` (another site: a payment provider's checkout) at once,
/// with a link for a browser that does not follow the refresh.
pub fn onward(url: &str) -> String {
    let url = esc(url);
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="0;url={url}">
<title>On to the checkout · Shotledger</title>
<link rel="stylesheet" href="/dashboard/app.css">
</head>
<body>
<main id="main"><h1>On to the checkout</h1><p><a href="{url}">Continue to the checkout</a></p></main>
</body>
</html>
"#
    )
}

/// The answer carrying `html` with `status` and the page's policy.
pub fn respond(status: StatusCode, html: String) -> HttpResponse {
    let mut res = HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(html);
    res.headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    res
}

/// A labelled input: `<label for=id>` then the input with `attrs` (HTML attributes).
pub fn field(id: &str, label: &str, attrs: &str) -> String {
    format!(
        r#"<p class="field"><label for="{id}">{}</label><input id="{id}" {attrs}></p>"#,
        esc(label)
    )
}

/// A labelled select of `(value, text)` options, `selected` marked.
pub fn select(
    id: &str,
    name: &str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
) -> String {
    let mut out = format!(
        r#"<p class="field"><label for="{id}">{}</label><select id="{id}" name="{}">"#,
        esc(label),
        esc(name)
    );
    for (value, text) in options {
        let sel = if value == selected { " selected" } else { "" };
        let _ = write!(
            out,
            r#"<option value="{}"{sel}>{}</option>"#,
            esc(value),
            esc(text)
        );
    }
    out.push_str("</select></p>");
    out
}

/// A money amount in cents as dollars (`$35.00`).
pub fn dollars(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}${}.{:02}", abs / 100, abs % 100)
}

/// An RFC 3339 instant shortened for a table (`2026-03-15 12:00 UTC`).
pub fn when(ts: ledger_core::Timestamp) -> String {
    let text = ts.rfc3339();
    match (text.get(..10), text.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(dollars(3500), "$35.00");
        assert_eq!(dollars(5), "$0.05");
        assert_eq!(dollars(-120), "-$1.20");
    }
}
