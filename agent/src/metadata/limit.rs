//! Token-bucket rate limits, one bucket per key (a source IP, a server).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest `Retry-After` ever announced.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Per-key token buckets: each key may make `burst` requests at once and `rate` per second
/// after that. The number of buckets is capped; when the cap is reached, buckets that have
/// refilled completely (keys that went quiet) are dropped, and if none can be dropped new keys
/// are refused until some can.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    cap: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// `rate` requests per second with bursts of `burst`, tracking at most `cap` keys.
    pub(crate) fn new(rate: u32, burst: u32, cap: usize) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            cap,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`; `Err(wait)` says how long until one is available.
    pub(crate) fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) {
            if buckets.len() >= self.cap {
                let (rate, burst) = (self.rate, self.burst);
                buckets.retain(|_, b| refilled(*b, rate, burst, now) < burst);
                if buckets.len() >= self.cap {
                    return Err(Duration::from_secs(1));
                }
            }
            // The key is cloned only for a new bucket, not on every request.
            buckets.insert(
                key.clone(),
                Bucket {
                    tokens: self.burst,
                    updated: now,
                },
            );
        }
        let Some(bucket) = buckets.get_mut(key) else {
            unreachable!("the bucket was inserted above under the same lock");
        };
        bucket.tokens = refilled(*bucket, self.rate, self.burst, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else if self.rate > 0.0 {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate);
            Err(wait.min(MAX_RETRY_AFTER))
        } else {
            Err(MAX_RETRY_AFTER)
        }
    }

    /// How many keys are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The tokens `bucket` holds at `now`.
fn refilled(bucket: Bucket, rate: f64, burst: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_the_burst_then_the_rate() {
        let limiter = RateLimiter::new(2, 3, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check(&"a", t0).unwrap();
        }
        let wait = limiter.check(&"a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        // Another key has its own bucket.
        limiter.check(&"b", t0).unwrap();
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        limiter.check(&"a", t1).unwrap();
        assert!(limiter.check(&"a", t1).is_err());
        // Long quiet: back to the full burst, never more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            limiter.check(&"a", t2).unwrap();
        }
        assert!(limiter.check(&"a", t2).is_err());
    }

    #[test]
    fn the_number_of_buckets_is_capped() {
        let limiter = RateLimiter::new(1, 2, 2);
        let t0 = Instant::now();
        limiter.check(&1, t0).unwrap();
        limiter.check(&2, t0).unwrap();
        // Both buckets are still draining: a third key is refused.
        assert!(limiter.check(&3, t0).is_err());
        assert_eq!(limiter.len(), 2);
        // Once they have refilled they are dropped to make room.
        let t1 = t0 + Duration::from_secs(5);
        limiter.check(&3, t1).unwrap();
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn a_zero_rate_never_refills() {
        let limiter = RateLimiter::new(0, 1, 10);
        let t0 = Instant::now();
        limiter.check(&"a", t0).unwrap();
        assert_eq!(
            limiter.check(&"a", t0 + Duration::from_secs(100)),
            Err(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
