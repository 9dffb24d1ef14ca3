//! Work that outlives its request.
//!
//! A mutation that answers 202 must not be cut in half when the request is dropped (the
//! request deadline, a client that disconnects): [`run`] puts the whole mutation — recording
//! the transitional status and the journaled steps after it — on a task of its own, and the
//! request only waits for the answer that task sends once the transitional status is
//! recorded. Dropping the request then drops only that wait.

use super::{OpError, Services};
use crate::state::Operation;
use serde_json::Value;
use std::future::Future;
use tokio::sync::oneshot;

/// Where a background mutation sends its answer to the request (once, when its transitional
/// status is recorded or it was refused).
pub struct Answer<T>(oneshot::Sender<Result<T, OpError>>);

impl<T> Answer<T> {
    /// Answers the request; a request that stopped waiting is no error.
    pub fn send(self, answer: Result<T, OpError>) {
        let _ = self.0.send(answer);
    }
}

/// Runs `work` on its own task and waits for its [`Answer`].
///
/// # Errors
/// What `work` answers; [`OpError::Interrupted`] when it ended without answering.
pub async fn run<T, F, Fut>(work: F) -> Result<T, OpError>
where
    T: Send + 'static,
    F: FnOnce(Answer<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    tokio::spawn(work(Answer(tx)));
    rx.await.unwrap_or_else(|_| {
        Err(OpError::Interrupted(
            "the operation ended before it answered; see the agent's log".into(),
        ))
    })
}

/// Begins a journaled operation and runs its first step, `record`, which stores the
/// transitional status and returns what the request is answered with. Returns the operation
/// to go on with; `None` when it could not begin or `record` failed — then the operation is
/// rolled back and the error is the answer.
pub async fn begin_recorded<T, Fut>(
    services: &Services,
    kind: &str,
    resource_id: &str,
    input: Value,
    answer: Answer<T>,
    record: impl FnOnce() -> Fut,
) -> Option<Operation>
where
    T: Clone,
    Fut: Future<Output = Result<T, OpError>>,
{
    let mut op = match services.journal().begin(kind, resource_id, input).await {
        Ok(op) => op,
        Err(e) => {
            answer.send(Err(e.into()));
            return None;
        }
    };
    match op.step("record", Value::Null, record).await {
        Ok(value) => {
            answer.send(Ok(value));
            Some(op)
        }
        Err(e) => {
            if let Err(undo) = op.roll_back(&crate::api::error::chain(&e)).await {
                tracing::error!(kind, resource_id, error = %undo, "cannot record a refused operation");
            }
            answer.send(Err(e));
            None
        }
    }
}

/// Finishes a journaled operation: `complete` on success, else rolls it back with the error
/// (its handler's undo of `record` states the failure on the resource).
pub async fn finish(op: Operation, result: Result<(), OpError>) {
    let kind = op.kind().to_string();
    match result {
        Ok(()) => {
            if let Err(e) = op.complete().await {
                tracing::error!(%kind, error = %e, "cannot record a finished operation");
            }
        }
        Err(e) => {
            let error = crate::api::error::chain(&e);
            tracing::warn!(%kind, %error, "operation failed; rolling back");
            match op.roll_back(&error).await {
                Ok(Ok(())) => {}
                Ok(Err(undo)) => {
                    tracing::error!(%kind, %undo, "rollback is incomplete; the next start retries it");
                }
                Err(e) => tracing::error!(%kind, error = %e, "cannot record the rollback"),
            }
        }
    }
}
