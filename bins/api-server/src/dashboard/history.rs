//! Transaction history with paging, usage of a month as a chart drawn on the server, and
//! the month as CSV.

use std::collections::HashMap;
use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use ledger_core::{Page, YearMonth};

use super::account::error_page;
use super::chart;
use super::html::{self, esc, Notice};
use super::session::viewer;
use super::{message_of, see_other, status_of};
use crate::error::ApiError;
use crate::routes::AppData;
use crate::service::accounts;
use crate::wire::UsageView;

/// Transactions a page shows.
pub const PAGE_SIZE: u32 = 20;

type Query = web::Query<HashMap<String, String>>;

/// The `offset` of the query: a whole number from 0 (400 naming it otherwise).
fn offset_of(query: &Query) -> Result<u64, ApiError> {
    match query.get("offset").map(|s| s.trim()) {
        None | Some("") => Ok(0),
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::invalid(
                "offset",
                "offset must be a whole number from 0, such as offset=20",
            )
        }),
    }
}

/// The month of the query (`year` and `month`, as the usage endpoint reads them).
fn month_of(query: &Query, now: ledger_core::Timestamp) -> Result<YearMonth, ApiError> {
    let (y, m) = (query.get("year"), query.get("month"));
    Ok(chart::month_of(
        y.map(String::as_str),
        m.map(String::as_str),
        now,
    )?)
}

fn month_query(m: YearMonth) -> String {
    format!("year={}&month={}", m.year(), m.month())
}

/// The month before `m`.
fn previous(m: YearMonth) -> Option<YearMonth> {
    if m.month() == 1 {
        YearMonth::new(m.year() - 1, 12).ok()
    } else {
        YearMonth::new(m.year(), m.month() - 1).ok()
    }
}

/// History and usage.
#[get("/history")]
pub async fn page(state: AppData, req: HttpRequest, query: Query) -> HttpResponse {
    let v = match viewer(&state, &req).await {
        Ok(Some(v)) => v,
        Ok(None) => return see_other("/login"),
        Err(e) => return error_page(&e),
    };
    let refused = |e: ApiError| {
        html::respond(
            status_of(&e),
            html::page(
                "History",
                Some(&v.header("/history")),
                &[Notice::Failed(message_of(&e))],
                r#"<p><a href="/history">Back to the history</a></p>"#,
            ),
        )
    };
    let (offset, month) = match (offset_of(&query), month_of(&query, state.now())) {
        (Ok(o), Ok(m)) => (o, m),
        (Err(e), _) | (_, Err(e)) => return refused(e),
    };
    // One more than a page: whether there is a next page.
    let page = match Page::new(PAGE_SIZE + 1, offset) {
        Ok(p) => p,
        Err(e) => return refused(e.into()),
    };
    let account = v.who.account_id.clone();
    let mut entries = match accounts::history(&state, account.clone(), page).await {
        Ok(e) => e,
        Err(e) => return refused(e),
    };
    let more = entries.len() > PAGE_SIZE as usize;
    entries.truncate(PAGE_SIZE as usize);
    let (y, m) = (month.year().to_string(), month.month().to_string());
    let of_month = match accounts::month(&state, account, Some(&y), Some(&m)).await {
        Ok(e) => e,
        Err(e) => return refused(e),
    };

    let mut main = String::from(r#"<section aria-labelledby="txn-caption" class="card">"#);
    main.push_str(r#"<table class="list"><caption id="txn-caption">Transactions</caption><thead><tr><th scope="col">Date</th><th scope="col">Type</th><th scope="col" class="num">Amount</th><th scope="col">Description</th></tr></thead><tbody>"#);
    if entries.is_empty() {
        main.push_str(r#"<tr><td colspan="4">No transactions on this page.</td></tr>"#);
    }
    for e in &entries {
        let _ = write!(
            main,
            r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td class="wrap">{}</td></tr>"#,
            html::when(e.created_at),
            esc(e.kind.as_str()),
            e.amount,
            esc(&e.description),
        );
    }
    main.push_str("</tbody></table>");
    let here = month_query(month);
    let mut paging = String::new();
    if offset > 0 {
        let prev = offset.saturating_sub(PAGE_SIZE as u64);
        let _ = write!(
            paging,
            r#"<a href="/history?offset={prev}&amp;{here}" rel="prev">Previous page</a>"#,
        );
    }
    if more {
        let _ = write!(
            paging,
            r#"<a href="/history?offset={}&amp;{here}" rel="next">Next page</a>"#,
            offset + PAGE_SIZE as u64
        );
    }
    if !paging.is_empty() {
        let _ = write!(
            main,
            r#"<nav aria-label="Transaction pages" class="paging">{paging}</nav>"#
        );
    }
    main.push_str("</section>");

    let per_day = chart::usage_by_day(month, &of_month);
    let _ = write!(
        main,
        r#"<section aria-labelledby="usage-h" class="card"><h2 id="usage-h">Usage in {label}</h2>{svg}<nav aria-label="Months" class="paging">"#,
        label = esc(&format!("{}-{:02}", month.year(), month.month())),
        svg = chart::svg(month, &per_day),
    );
    if let Some(p) = previous(month) {
        let _ = write!(
            main,
            r#"<a href="/history?{}">Previous month</a>"#,
            month_query(p)
        );
    }
    if month.next() <= YearMonth::containing(state.now()) {
        let _ = write!(
            main,
            r#"<a href="/history?{}">Next month</a>"#,
            month_query(month.next())
        );
    }
    let _ = write!(
        main,
        r#"</nav><p><a href="/history/usage.csv?{here}" download>Export {} as CSV</a></p></section>"#,
        esc(&format!("{}-{:02}", month.year(), month.month()))
    );
    html::respond(
        StatusCode::OK,
        html::page("History", Some(&v.header("/history")), &[], &main),
    )
}

/// One CSV field, quoted when it needs to be; a leading `=`, `+`, `-` or `@` of text is
/// prefixed with `'` so a spreadsheet never runs it as a formula.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) && text.parse::<f64>().is_err() {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The month's entries as CSV (the fields of `GET /api/v1/credits/usage`).
#[get("/history/usage.csv")]
pub async fn csv(state: AppData, req: HttpRequest, query: Query) -> HttpResponse {
    let v = match viewer(&state, &req).await {
        Ok(Some(v)) => v,
        Ok(None) => return see_other("/login"),
        Err(e) => return error_page(&e),
    };
    let month = match month_of(&query, state.now()) {
        Ok(m) => m,
        Err(e) => return error_page(&e),
    };
    let (y, m) = (month.year().to_string(), month.month().to_string());
    let entries = match accounts::month(&state, v.who.account_id.clone(), Some(&y), Some(&m)).await
    {
        Ok(e) => e,
        Err(e) => return error_page(&e),
    };
    let mut out =
        String::from("transactionId,type,amount,source,description,plan,transactionDate\r\n");
    for e in &entries {
        let u = UsageView::from(e);
        let _ = write!(
            out,
            "{},{},{},{},{},{},{}\r\n",
            csv_field(&u.transaction_id),
            u.direction,
            u.amount,
            csv_field(&u.source),
            csv_field(&u.description),
            csv_field(&u.plan),
            u.transaction_date.rfc3339(),
        );
    }
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "content-disposition",
            format!(
                "attachment; filename=\"usage-{}-{:02}.csv\"",
                month.year(),
                month.month()
            ),
        ))
        .body(out)
}

/// Mounts the history pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(page).service(csv);
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("-5"), "-5");
    }
}
