//! The API reference page at `/docs`: served by us, with the security headers, loading
//! nothing from another origin.

use actix_web::test;
use api_server::{app, AppState};
use test_support::TestDb;

fn header<'a, B>(res: &'a actix_web::dev::ServiceResponse<B>, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Every `src="..."` and `href="..."` of an HTML text.
fn references(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len()..];
            out.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    out
}

#[actix_rt::test]
async fn the_reference_page_is_ours_alone() {
    let db = TestDb::sqlite();
    let state = AppState::new(
        db.store.clone(),
        crate::common::settings(),
        api_server::system_clock(),
    )
    .unwrap();
    let svc = test::init_service(app(state)).await;

    let res = test::call_service(&svc, test::TestRequest::get().uri("/docs").to_request()).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
    let csp = header(&res, "content-security-policy").to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    assert_eq!(header(&res, "x-frame-options"), "DENY");
    let html = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert!(!html.contains("<script>"), "an inline script: {html}");
    assert!(!html.contains("style="), "an inline style: {html}");
    let refs = references(&html);
    assert!(refs.contains(&"/docs/reference.js".to_owned()), "{refs:?}");
    for r in &refs {
        assert!(
            r.starts_with('/') && !r.starts_with("//"),
            "not same-origin: {r}"
        );
    }

    for (path, content_type) in [
        ("/docs/reference.js", "text/javascript; charset=utf-8"),
        ("/docs/reference.css", "text/css; charset=utf-8"),
    ] {
        let res = test::call_service(&svc, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(res.status().as_u16(), 200, "{path}");
        assert_eq!(header(&res, "content-type"), content_type, "{path}");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{path}");
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} names another origin"
        );
        if path.ends_with(".js") {
            assert!(
                body.contains("fetch(\"/openapi.json\""),
                "the script does not read the document"
            );
        }
    }
    // Every other answer keeps the strict policy.
    let res = test::call_service(
        &svc,
        test::TestRequest::get().uri("/openapi.json").to_request(),
    )
    .await;
    assert_eq!(
        header(&res, "content-security-policy"),
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    );
}
