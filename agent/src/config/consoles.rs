//! `[consoles]`: interactive serial consoles and the VNC display over WebSocket.

use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// Console settings (`[consoles]`).
///
/// ```toml
/// [consoles]
/// max_sessions = 256
/// idle_timeout_secs = 900
/// token_ttl_secs = 30
/// vnc = true
/// # public_base_url = "wss://consoles.example.com/node-7"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsolesConfig {
    /// WebSocket console sessions (serial and VNC, all servers) open at once on this node
    /// (1–4,096); one more is refused with 429.
    pub max_sessions: usize,
    /// A session with no byte in either direction for this long is closed (close code 4003),
    /// seconds (10–86,400).
    pub idle_timeout_secs: u64,
    /// How long a console URL can be used before it is opened, seconds (5–300). A URL opens
    /// one session, once.
    pub token_ttl_secs: u64,
    /// Give every server a VNC display (a unix socket only QEMU and root can reach, no VNC
    /// password) and a VGA video device, for `{"type": "novnc"}` consoles and screenshots.
    /// Applies to servers started after the change.
    pub vnc: bool,
    /// Where clients reach this agent's consoles when that is not where they reached its API
    /// (a reverse proxy, TLS terminated elsewhere): `ws://` or `wss://`, host, optional port
    /// and path prefix; console URLs are `<this>/v1/consoles/<token>`. Unset: the scheme of
    /// the listener and the `Host` the client used.
    pub public_base_url: Option<String>,
}

impl Default for ConsolesConfig {
    fn default() -> Self {
        Self {
            max_sessions: 256,
            idle_timeout_secs: 900,
            token_ttl_secs: 30,
            vnc: true,
            public_base_url: None,
        }
    }
}

impl ConsolesConfig {
    /// [`Self::idle_timeout_secs`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// [`Self::token_ttl_secs`].
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_secs)
    }

    /// Checks the section on its own.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first setting that cannot be used.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_string(),
            })
        };
        if !(1..=4096).contains(&self.max_sessions) {
            return invalid("consoles.max_sessions", "must be 1-4096");
        }
        if !(10..=86_400).contains(&self.idle_timeout_secs) {
            return invalid("consoles.idle_timeout_secs", "must be 10-86400");
        }
        if !(5..=300).contains(&self.token_ttl_secs) {
            return invalid("consoles.token_ttl_secs", "must be 5-300");
        }
        if let Some(url) = &self.public_base_url {
            if let Err(reason) = check_base_url(url) {
                return invalid("consoles.public_base_url", &reason);
            }
        }
        Ok(())
    }
}

/// Checks a `public_base_url`: `ws://` or `wss://`, a host, no user part, query or fragment.
fn check_base_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("ws" | "wss")) {
        return Err(format!("{url:?} must start with ws:// or wss://"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{url:?} names no host"));
    };
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(format!("{url:?} must name a host without a user part"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    if url.len() > 512 {
        return Err("must be at most 512 characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_are_checked() {
        assert!(ConsolesConfig::default().validate().is_ok());
        let bad = [
            ConsolesConfig {
                max_sessions: 0,
                ..Default::default()
            },
            ConsolesConfig {
                idle_timeout_secs: 5,
                ..Default::default()
            },
            ConsolesConfig {
                token_ttl_secs: 301,
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn public_base_urls_are_websocket_urls_with_a_host() {
        for good in [
            "wss://consoles.example.com",
            "ws://10.0.0.7:8787",
            "wss://proxy.example.com/node-7/",
        ] {
            assert_eq!(check_base_url(good), Ok(()), "{good}");
        }
        for bad in [
            "https://example.com",
            "wss://",
            "wss://user@example.com",
            "wss://example.com/?a=1",
            "wss://example.com/#x",
            "example.com",
            "wss://exa mple.com",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }
}
