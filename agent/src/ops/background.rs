//! Work that outlives its request.
//!
//! A mutation that answers 202 must not be cut in half when the request is dropped (the
//! request deadline, a client that disconnects): [`run`] puts the whole mutation — recording
//! the transitional status and the journaled steps after it — on a task of its own, and the
//! request only waits for the answer that task sends once the transitional status is
//! recorded. Dropping the request then drops only that wait.

use super::OpError;
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
