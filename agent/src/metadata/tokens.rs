//! IMDSv2-style session tokens: issued by `PUT /latest/api/token`, bound to the server that
//! asked, valid for the TTL it asked for (1 s – 6 h).
//!
//! Tokens are 32 random bytes (URL-safe base64). Only their SHA-256 is kept, in memory: a
//! restart invalidates every token (clients then fetch a new one, as on AWS after a stop). The
//! table is capped: expired tokens are pruned when it fills, each server keeps at most
//! [`PER_SERVER`] live tokens (its oldest goes first), and past [`CAPACITY`] the token closest to
//! expiry is dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The longest TTL a client may ask for (AWS: 6 hours).
pub(crate) const MAX_TTL_SECS: u64 = 21_600;

/// The most tokens kept in memory.
pub(crate) const CAPACITY: usize = 16_384;

/// The most live tokens one server keeps.
pub(crate) const PER_SERVER: usize = 64;

/// The longest token string we bother hashing (ours are 43 characters).
const MAX_TOKEN_LEN: usize = 128;

/// One issued token.
#[derive(Debug, Clone)]
struct Entry {
    server: String,
    expires: Instant,
}

/// The issued tokens.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

/// The table key of a token.
fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenStore {
    /// Issues a token for `server`, valid for `ttl` from `now`.
    pub(crate) fn issue(&self, server: &str, ttl: Duration, now: Instant) -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.expires > now);
        }
        // Per server: drop the token closest to expiry while at the limit.
        let mine: Vec<([u8; 32], Instant)> = entries
            .iter()
            .filter(|(_, e)| e.server == server && e.expires > now)
            .map(|(k, e)| (*k, e.expires))
            .collect();
        if mine.len() >= PER_SERVER {
            if let Some((key, _)) = mine.iter().min_by_key(|(_, expires)| *expires) {
                entries.remove(key);
            }
        }
        if entries.len() >= CAPACITY {
            if let Some(key) = entries
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| *k)
            {
                entries.remove(&key);
            }
        }
        entries.insert(
            digest(&token),
            Entry {
                server: server.to_owned(),
                expires: now + ttl,
            },
        );
        token
    }

    /// Whether `token` is live at `now` and was issued to `server`. An expired token is
    /// forgotten.
    pub(crate) fn check(&self, token: &str, server: &str, now: Instant) -> bool {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return false;
        }
        let key = digest(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&key) {
            Some(e) if e.expires <= now => {
                entries.remove(&key);
                false
            }
            Some(e) => e.server == server,
            None => false,
        }
    }

    /// How many tokens are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Parses the `X-aws-ec2-metadata-token-ttl-seconds` value: an integer in 1..=21600.
pub(crate) fn parse_ttl(value: Option<&[u8]>) -> Option<Duration> {
    let text = std::str::from_utf8(value?).ok()?.trim();
    let secs: u64 = text.parse().ok()?;
    (1..=MAX_TTL_SECS)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_server_and_expire() {
        let store = TokenStore::default();
        let t0 = Instant::now();
        let token = store.issue("a", Duration::from_secs(10), t0);
        assert_eq!(token.len(), 43);
        assert!(store.check(&token, "a", t0));
        assert!(!store.check(&token, "b", t0));
        assert!(!store.check("nonsense", "a", t0));
        assert!(!store.check("", "a", t0));
        assert!(!store.check(&"x".repeat(4096), "a", t0));
        let other = store.issue("a", Duration::from_secs(10), t0);
        assert_ne!(token, other);
        assert!(!store.check(&token, "a", t0 + Duration::from_secs(10)));
        // The expired token was forgotten.
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn one_server_keeps_a_bounded_number_of_tokens() {
        let store = TokenStore::default();
        let t0 = Instant::now();
        let first = store.issue("a", Duration::from_secs(100), t0);
        for i in 1..PER_SERVER {
            store.issue("a", Duration::from_secs(100 + i as u64), t0);
        }
        assert_eq!(store.len(), PER_SERVER);
        assert!(store.check(&first, "a", t0));
        let newest = store.issue("a", Duration::from_secs(1000), t0);
        assert_eq!(store.len(), PER_SERVER);
        // The token closest to expiry made room.
        assert!(!store.check(&first, "a", t0));
        assert!(store.check(&newest, "a", t0));
        // Another server is not affected.
        let b = store.issue("b", Duration::from_secs(1), t0);
        assert!(store.check(&b, "b", t0));
    }

    #[test]
    fn ttls_are_validated() {
        assert_eq!(parse_ttl(Some(b"1")), Some(Duration::from_secs(1)));
        assert_eq!(parse_ttl(Some(b"21600")), Some(Duration::from_secs(21_600)));
        for bad in [&b""[..], b"0", b"21601", b"-1", b"ten", b"1.5", b"\xff"] {
            assert_eq!(parse_ttl(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(parse_ttl(None), None);
    }
}
