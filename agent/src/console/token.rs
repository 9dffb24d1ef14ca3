//! One-time console URLs: a 256-bit random token, bound to one server and one kind of
//! console, that opens one session within `consoles.token_ttl_secs` of being issued.
//!
//! Only the token's SHA-256 is kept (a lookup compares digests, not the secret). A spent or
//! expired token is remembered for [`KEEP_SPENT`] so it answers 410 rather than 401.

use super::ConsoleError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most tokens remembered at once; spent ones are forgotten first when it is reached.
pub const MAX_TOKENS: usize = 4096;
/// How long a spent or expired token is remembered (410 instead of 401).
pub const KEEP_SPENT: Duration = Duration::from_secs(600);
/// Length of a token: 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;

/// What a token opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleKind {
    /// The serial console.
    Serial {
        /// Watch only.
        read_only: bool,
        /// Take the interactive console over from its current writer.
        force: bool,
    },
    /// The VNC display.
    Vnc,
}

/// A token's binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The server.
    pub server_id: String,
    /// Its libvirt domain.
    pub domain_name: String,
    /// What it opens.
    pub kind: ConsoleKind,
}

#[derive(Debug)]
enum State {
    Fresh(Grant),
    Spent,
}

#[derive(Debug)]
struct Entry {
    state: State,
    expires: Instant,
    forget: Instant,
}

/// The tokens issued by this agent (in memory: a restart invalidates them all).
#[derive(Debug)]
pub struct TokenTable {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl TokenTable {
    /// A table whose tokens live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// How long a token may wait to be opened.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `grant`.
    ///
    /// # Errors
    /// [`ConsoleError::TooManyTokens`] when [`MAX_TOKENS`] unexpired ones wait.
    pub fn issue(&self, grant: Grant) -> Result<String, ConsoleError> {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| e.forget > now);
        if entries.len() >= MAX_TOKENS {
            entries.retain(|_, e| matches!(e.state, State::Fresh(_)) && e.expires > now);
        }
        if entries.len() >= MAX_TOKENS {
            return Err(ConsoleError::TooManyTokens { max: MAX_TOKENS });
        }
        entries.insert(
            digest(&token),
            Entry {
                state: State::Fresh(grant),
                expires: now + self.ttl,
                forget: now + self.ttl + KEEP_SPENT,
            },
        );
        Ok(token)
    }

    /// Spends `token`: its grant the first time within the TTL, an error after.
    ///
    /// # Errors
    /// [`ConsoleError::TokenUnknown`] for a token never issued, [`ConsoleError::TokenSpent`]
    /// for one used or expired.
    pub fn redeem(&self, token: &str) -> Result<Grant, ConsoleError> {
        if !well_formed(token) {
            return Err(ConsoleError::TokenUnknown);
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries
            .get_mut(&digest(token))
            .ok_or(ConsoleError::TokenUnknown)?;
        match std::mem::replace(&mut entry.state, State::Spent) {
            State::Fresh(grant) if now < entry.expires => Ok(grant),
            _ => Err(ConsoleError::TokenSpent {
                ttl_secs: self.ttl.as_secs(),
            }),
        }
    }

    /// Spends every unused token of `server_id` (the server is going away).
    pub fn revoke_server(&self, server_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for entry in entries.values_mut() {
            if matches!(&entry.state, State::Fresh(g) if g.server_id == server_id) {
                entry.state = State::Spent;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(server: &str) -> Grant {
        Grant {
            server_id: server.into(),
            domain_name: format!("hyperlet-{server}"),
            kind: ConsoleKind::Serial {
                read_only: false,
                force: false,
            },
        }
    }

    #[test]
    fn a_token_opens_once() {
        let table = TokenTable::new(Duration::from_secs(30));
        let token = table.issue(grant("a")).unwrap();
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(table.redeem(&token).unwrap(), grant("a"));
        assert!(matches!(
            table.redeem(&token),
            Err(ConsoleError::TokenSpent { ttl_secs: 30 })
        ));
    }

    #[test]
    fn unknown_malformed_expired_and_revoked_tokens_are_refused() {
        let table = TokenTable::new(Duration::from_millis(1));
        assert_eq!(table.redeem("x"), Err(ConsoleError::TokenUnknown));
        assert_eq!(
            table.redeem(&"A".repeat(TOKEN_LEN)),
            Err(ConsoleError::TokenUnknown)
        );
        let token = table.issue(grant("a")).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(
            table.redeem(&token),
            Err(ConsoleError::TokenSpent { .. })
        ));
        let table = TokenTable::new(Duration::from_secs(30));
        let a = table.issue(grant("a")).unwrap();
        let b = table.issue(grant("b")).unwrap();
        table.revoke_server("a");
        assert!(table.redeem(&a).is_err());
        assert_eq!(table.redeem(&b).unwrap(), grant("b"));
    }

    #[test]
    fn the_table_is_bounded() {
        let table = TokenTable::new(Duration::from_secs(30));
        for _ in 0..MAX_TOKENS {
            table.issue(grant("a")).unwrap();
        }
        assert_eq!(
            table.issue(grant("a")),
            Err(ConsoleError::TooManyTokens { max: MAX_TOKENS })
        );
    }
}
