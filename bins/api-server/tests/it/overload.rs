//! A saturated database pool answers a quick 503, not a long wait and a 500.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use actix_web::test;
use api_server::{app, AppState};
use test_support::{on_both_backends, TestDb};

on_both_backends!(
    every_connection_taken_is_a_quick_503,
    a_debit_needs_no_store_permit
);

async fn every_connection_taken_is_a_quick_503(backend: &'static str) {
    let db = TestDb::of(backend);
    let mut settings = crate::common::settings();
    settings.database.max_connections = 2;
    settings.database.acquire_timeout_secs = 1;
    let state = AppState::new(db.store.clone(), settings, api_server::system_clock()).unwrap();
    let svc = test::init_service(app(state.clone())).await;
    // Two slow store calls take both permits.
    let (release, wait) = mpsc::channel::<()>();
    let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
    let mut slow = Vec::new();
    for _ in 0..2 {
        let (state, wait) = (state.clone(), wait.clone());
        slow.push(actix_rt::spawn(async move {
            state
                .blocking(move |_| {
                    let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(30));
                    Ok(())
                })
                .await
        }));
    }
    while state.blocking.available_permits() > 0 {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let res = test::call_service(&svc, test::TestRequest::get().uri("/healthz").to_request()).await;
    let waited = started.elapsed();
    assert_eq!(res.status().as_u16(), 503);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["code"], "DATABASE_UNAVAILABLE", "{body}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    for _ in 0..2 {
        release.send(()).unwrap();
    }
    for s in slow {
        s.await.unwrap().unwrap();
    }
    let res = test::call_service(&svc, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(res.status().as_u16(), 200);
}

/// Ledger operations wait for the group commit, which holds none of the pool's
/// connections: they are bounded by the operations that may wait at once
/// (`blocking::LEDGER_WAITERS`), not by the pool's permits, so a busy server's batches are
/// not capped at the pool's size. With every store permit taken, a debit still commits.
async fn a_debit_needs_no_store_permit(backend: &'static str) {
    let app = crate::common::TestApp::with(backend, |s| {
        s.database.max_connections = 2;
        s.database.acquire_timeout_secs = 1;
    })
    .await;
    let account = app.admin_account().await;
    let id = ledger_core::AccountId::new(account.clone());
    let available = |state: &AppState| {
        state
            .store
            .ledger()
            .balance(&id, state.now())
            .unwrap()
            .available
    };
    let state = app.state.clone();
    let before = available(&state);
    let (release, wait) = mpsc::channel::<()>();
    let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
    let mut slow = Vec::new();
    for _ in 0..2 {
        let (state, wait) = (state.clone(), wait.clone());
        slow.push(actix_rt::spawn(async move {
            state
                .blocking(move |_| {
                    let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(30));
                    Ok(())
                })
                .await
        }));
    }
    while state.blocking.available_permits() > 0 {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let res = app.debit(&account, serde_json::json!(1)).await;
    assert_eq!(res.status, 201, "{}", res.text());
    // Store work still waits for its permit: a quick 503.
    let res = app.send(test_support::Req::get("/healthz")).await;
    assert_eq!(res.status, 503, "{}", res.text());
    for _ in 0..2 {
        release.send(()).unwrap();
    }
    for s in slow {
        s.await.unwrap().unwrap();
    }
    assert_eq!(available(&state), before - test_support::c(1));
}
