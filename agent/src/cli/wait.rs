//! Waiting for work the agent answered 202 for: polls a resource until it leaves its
//! transitional statuses, or until it is gone.

use super::client::{ApiClient, ClientError};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long a command waits for the agent's background work.
const WAIT_LIMIT: Duration = Duration::from_secs(600);
/// How often it looks.
const POLL: Duration = Duration::from_millis(500);

/// Polls `path` until its `status` is none of `transitional` (or the wait limit passed) and
/// returns the last answer.
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses.
pub(super) async fn settled(
    api: &ApiClient,
    path: &str,
    transitional: &[&str],
) -> Result<Value, ClientError> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let item: Value = api.request(Method::GET, path, None::<&()>).await?;
        let status = item["status"].as_str().unwrap_or_default();
        if !transitional.contains(&status) || Instant::now() > deadline {
            return Ok(item);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `path` until it answers 404 (`None`) or its `status` is none of `transitional`
/// (`Some`: the work stopped there, e.g. `ERROR`).
///
/// # Errors
/// [`ClientError`] when the agent cannot be reached or refuses; [`ClientError::Failed`] when
/// the wait limit passed.
pub(super) async fn gone(
    api: &ApiClient,
    path: &str,
    transitional: &[&str],
) -> Result<Option<Value>, ClientError> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        match api.request::<Value, ()>(Method::GET, path, None).await {
            Err(ClientError::Api { status, .. }) if status == StatusCode::NOT_FOUND => {
                return Ok(None)
            }
            Err(e) => return Err(e),
            Ok(item) => {
                let status = item["status"].as_str().unwrap_or_default();
                if !transitional.contains(&status) {
                    return Ok(Some(item));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(ClientError::Failed(format!(
                "{path} is still there after {} s; see `GET {path}`",
                WAIT_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}
