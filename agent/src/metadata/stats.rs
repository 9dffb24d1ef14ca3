//! Counters of one metadata server: its answers by status code, and the callers it could not
//! identify (a guest asking from an address or MAC that is no port of the network — a
//! misconfigured guest, or one trying to read another's metadata).
//!
//! Counting is two relaxed atomic additions per request; [`MetadataStats`] is a snapshot for
//! `GET /metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The status codes the application answers, each counted on its own; any other is counted
/// as `other`.
pub const STATUS_CODES: [u16; 10] = [200, 400, 401, 403, 404, 405, 409, 429, 500, 503];

/// A snapshot of a metadata server's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataStats {
    /// Answers per status code, in the order of [`STATUS_CODES`].
    pub answers: [u64; STATUS_CODES.len()],
    /// Answers with a status code not in [`STATUS_CODES`].
    pub other_answers: u64,
    /// Requests refused because the caller is no port of the network (404 `No instance for
    /// <ip>`; also counted in the 404 answers).
    pub unknown_callers: u64,
}

impl MetadataStats {
    /// The answers with status `code` (0 for a code not in [`STATUS_CODES`]).
    pub fn answers_with(&self, code: u16) -> u64 {
        STATUS_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.answers[i])
    }
}

/// The live counters behind [`MetadataStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    answers: [AtomicU64; STATUS_CODES.len()],
    other_answers: AtomicU64,
    unknown_callers: AtomicU64,
}

impl Counters {
    /// Counts one answer with status `code`.
    pub(crate) fn answered(&self, code: u16) {
        let counter = match STATUS_CODES.iter().position(|c| *c == code) {
            Some(i) => &self.answers[i],
            None => &self.other_answers,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one caller that is no port of the network.
    pub(crate) fn unknown_caller(&self) {
        self.unknown_callers.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> MetadataStats {
        MetadataStats {
            answers: std::array::from_fn(|i| self.answers[i].load(Ordering::Relaxed)),
            other_answers: self.other_answers.load(Ordering::Relaxed),
            unknown_callers: self.unknown_callers.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_code() {
        let counters = Counters::default();
        counters.answered(200);
        counters.answered(200);
        counters.answered(404);
        counters.answered(418);
        counters.unknown_caller();
        let stats = counters.snapshot();
        assert_eq!(stats.answers_with(200), 2);
        assert_eq!(stats.answers_with(404), 1);
        assert_eq!(stats.answers_with(418), 0);
        assert_eq!(stats.other_answers, 1);
        assert_eq!(stats.unknown_callers, 1);
    }
}
