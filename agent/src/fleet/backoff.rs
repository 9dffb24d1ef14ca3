//! The retry pacing of the fleet's long-running loops (registration, l2population): jittered
//! exponential backoff, cut short by a stop.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// First wait after a failure.
pub const FIRST: Duration = Duration::from_millis(250);
/// Longest wait between attempts.
pub const MAX: Duration = Duration::from_secs(5);

/// Waits that double from [`FIRST`] to [`MAX`], each with up to [`FIRST`] of random jitter
/// (so many nodes that lost etcd together do not come back in lockstep).
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Backoff {
    /// Sleeps the next wait; `false` when `stop` came first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let wait = self.step();
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = stop.cancelled() => false,
        }
    }

    /// The next wait (with its jitter), and the one after doubled.
    fn step(&mut self) -> Duration {
        let jitter = Duration::from_millis(rand::random::<u64>() % FIRST.as_millis() as u64);
        let wait = self.next + jitter;
        self.next = (self.next * 2).min(MAX);
        wait
    }

    /// Back to [`FIRST`] (after a session that worked).
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::default();
        let waits: Vec<Duration> = (0..7).map(|_| backoff.step()).collect();
        for (wait, floor) in waits.iter().zip([250, 500, 1000, 2000, 4000, 5000, 5000]) {
            let floor = Duration::from_millis(floor);
            assert!(*wait >= floor && *wait < floor + FIRST, "{waits:?}");
        }
        backoff.reset();
        assert!(backoff.step() < FIRST * 2);
    }

    #[tokio::test]
    async fn a_stop_cuts_the_wait_short() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut backoff = Backoff { next: MAX };
        assert!(!backoff.wait(&stop).await);
    }
}
