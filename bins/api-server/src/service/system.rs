//! Health and readiness.

use crate::error::ApiError;
use crate::state::AppState;

/// `Ok` once the database answers; [`ApiError::NotReady`] while it does not.
pub async fn ready(state: &AppState) -> Result<(), ApiError> {
    match state.blocking(|s| Ok(s.ping())).await? {
        Ok(()) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "health check: the database does not answer");
            Err(ApiError::NotReady)
        }
    }
}

/// The `/readyz` answer: the database's checks ([`startup::database_checks`]) and the
/// browser pool's (`capture`): running, and its WebDriver endpoint ready to start or hand
/// out a session. A fake capturer (tests) counts as ready.
pub async fn readiness(state: &AppState) -> (u16, serde_json::Value) {
    let mut checks = match state.blocking(|s| Ok(startup::database_checks(s))).await {
        Ok(checks) => checks,
        Err(e) => vec![
            startup::Check::new("database", Err(e.to_string())),
            startup::Check::new(
                "migrations",
                Err("not checked: the database does not answer".into()),
            ),
        ],
    };
    let capture = match (&state.capture, &state.capturer) {
        (Some(service), _) => service.ready().await.map_err(|e| e.to_string()),
        (None, Some(_)) => Ok(()),
        (None, None) => Err(state
            .capture_unavailable
            .clone()
            .unwrap_or_else(|| "the browser pool is not running".into())),
    };
    checks.push(startup::Check::new("capture", capture));
    let answer = startup::readiness(&checks);
    if answer.0 != 200 {
        tracing::info!(answer = %answer.1, "not ready");
    }
    answer
}
