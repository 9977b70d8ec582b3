//! `webhook-receiver [--config FILE]` serves Polar's webhooks (and demo checkouts);
//! `webhook-receiver reconcile [--config FILE]` applies paid orders the receiver missed;
//! `webhook-receiver refused [--config FILE]` lists paid orders that were refused because
//! they did not match a checkout of ours (one JSON object a line, newest first), for an
//! operator to investigate: they are never credited automatically.

use std::net::TcpListener;

use anyhow::Context;
use settings::Settings;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    let settings = Settings::from_args_and_env(&args)?;
    let payments = webhook_receiver::open(&settings)?;
    if subcommand(&args).as_deref() == Some("reconcile") {
        let report = payments.reconcile(payments::now())?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if subcommand(&args).as_deref() == Some("refused") {
        for r in payments.store().orders().refusals(10_000)? {
            let line = serde_json::json!({
                "orderId": r.order_id,
                "reason": r.reason,
                "source": r.source.as_str(),
                "checkoutId": r.checkout_id,
                "accountId": r.account_id,
                "firstSeenAt": r.first_seen_at.rfc3339(),
                "lastSeenAt": r.last_seen_at.rfc3339(),
                "timesSeen": r.times_seen,
                "order": serde_json::from_str::<serde_json::Value>(&r.order_json).unwrap_or_default(),
            });
            println!("{line}");
        }
        return Ok(());
    }
    if let Some(other) = subcommand(&args) {
        anyhow::bail!(
            "unknown command `{other}` (use `reconcile`, `refused`, or no command to serve)"
        );
    }
    let listener = TcpListener::bind(&settings.webhooks.bind)
        .with_context(|| format!("webhooks.bind: cannot listen on {}", settings.webhooks.bind))?;
    actix_web::rt::System::new().block_on(async move {
        let server = webhook_receiver::server(
            payments,
            listener,
            settings.server.shutdown_timeout_secs,
            true,
        )?;
        server.await.context("server")
    })
}

/// The first argument that is neither a flag nor a flag's value.
fn subcommand(args: &[String]) -> Option<String> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--config" {
            it.next();
        } else if !a.starts_with("--") {
            return Some(a.clone());
        }
    }
    None
}
