//! `webhook-receiver [--config FILE]` serves Polar's webhooks (and demo checkouts);
//! `webhook-receiver reconcile [--config FILE]` applies paid orders the receiver missed;
//! `webhook-receiver refused [--config FILE]` lists paid orders that were refused because
//! they did not match a checkout of ours (one JSON object a line, newest first), for an
//! operator to investigate: they are never credited automatically.

use std::net::TcpListener;

use anyhow::Context;
use settings::Settings;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let settings = Settings::from_args_and_env(&args)?;
    startup::init_logging(&settings)?;
    let metrics = std::sync::Arc::new(telemetry::Metrics::new());
    let payments = webhook_receiver::open_observed(&settings, metrics.clone())?;
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
    let observed = webhook_receiver::Observed {
        metrics,
        token: settings.metrics.token().map(str::to_owned),
    };
    actix_web::rt::System::new().block_on(async move {
        let metrics_server = match settings.metrics.webhooks_bind() {
            Some(bind) => Some(
                webhook_receiver::serve_metrics(payments.clone(), observed.clone(), bind)
                    .with_context(|| format!("metrics.webhooks_bind: cannot listen on {bind}"))?,
            ),
            None => None,
        };
        let server = webhook_receiver::server_observed(
            payments,
            observed,
            listener,
            settings.server.shutdown_timeout_secs,
            true,
        )?;
        let served = server.await.context("server");
        if let Some(handle) = metrics_server {
            handle.stop(true).await;
        }
        served
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
