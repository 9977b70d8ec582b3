//! Readiness.

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
