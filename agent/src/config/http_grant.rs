//! `[plugins.http]`: the parameters of the `http` grant — which origins and methods a plugin's
//! outgoing `wasi:http` requests may use, and how long and how large they may be.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Longest per-request deadline, milliseconds.
pub const MAX_HTTP_TIMEOUT_MS: u64 = 60_000;
/// Largest response or request body a grant may allow, bytes.
pub const MAX_HTTP_BODY_BYTES: u64 = 64 << 20;
/// Most requests one plugin call may make under any grant.
pub const MAX_HTTP_REQUESTS_PER_CALL: u32 = 1000;
/// Most response bytes one call may have the host buffer (`max_requests_per_call ×
/// max_response_bytes`).
pub const MAX_HTTP_BYTES_PER_CALL: u64 = 256 << 20;

/// The `http` grant's parameters (`[plugins.http]`, required with the grant).
///
/// ```toml
/// [plugins.http]
/// origins = ["http://127.0.0.1:8080", "https://array.example:8443"]  # scheme://host[:port]
/// methods = ["GET"]                 # default ["GET"]
/// timeout_ms = 1000                 # one request, connect to last byte; within the call's deadline
/// max_response_bytes = 1048576      # body; longer answers fail the request
/// max_request_bytes = 65536         # body the plugin may send
/// max_requests_per_call = 8
/// ca_file = "/etc/hyperlet/array-ca.pem"   # https roots; default: the system's
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Origins requests may go to, exactly (`http://host:port`, `https://host[:port]`; the
    /// port defaults to the scheme's). Nothing else is reachable — redirects included: a
    /// redirect is answered to the plugin, never followed by the host.
    pub origins: Vec<String>,
    /// Methods allowed, upper case [default: `["GET"]`].
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Deadline of one request, connect to the last byte of the body, milliseconds; a
    /// request never outlives the plugin call that made it [default: 1000].
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Largest response body, bytes [default: 1 MiB].
    #[serde(default = "default_response_bytes")]
    pub max_response_bytes: u64,
    /// Largest request body, bytes [default: 64 KiB].
    #[serde(default = "default_request_bytes")]
    pub max_request_bytes: u64,
    /// Most requests one call may make [default: 8].
    #[serde(default = "default_requests")]
    pub max_requests_per_call: u32,
    /// PEM file of the CAs https origins are checked against [default: the system's roots,
    /// `/etc/ssl/certs/ca-certificates.crt`].
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ca_file: Option<PathBuf>,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into()]
}
fn default_timeout() -> u64 {
    1000
}
fn default_response_bytes() -> u64 {
    1 << 20
}
fn default_request_bytes() -> u64 {
    64 << 10
}
fn default_requests() -> u32 {
    8
}

/// One allowed origin: scheme, host (lower case; an IPv6 address without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (nothing after the authority but an optional `/`).
    ///
    /// # Errors
    /// Why it is not an origin.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("origin {text:?}: {why}"));
        let Some((scheme, rest)) = text.split_once("://") else {
            return bad("write it as scheme://host[:port]");
        };
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return bad("the scheme must be http or https"),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty()
            || authority.contains(['/', '?', '#', '@'])
            || authority.contains(char::is_whitespace)
        {
            return bad("only scheme://host[:port] (no path, query, user or spaces)");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((addr, after)) = v6.split_once(']') else {
                return bad("an IPv6 address needs its closing ]");
            };
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return bad("junk after the IPv6 address"),
            };
            (addr.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host.len() > 253 {
            return bad("the host must have 1 to 253 characters");
        }
        let bracketed = authority.starts_with('[');
        let fine =
            |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || (bracketed && c == ':');
        if !host.chars().all(fine) || (bracketed && host.parse::<std::net::Ipv6Addr>().is_err()) {
            return bad(
                "the host must be a name (letters, digits, - and .), an IPv4 address or a \
                 bracketed IPv6 address ([::1])",
            );
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return bad("the port must be 1-65535"),
            },
        };
        Ok(Self {
            scheme: scheme.to_string(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// Methods a grant may allow.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl HttpGrant {
    /// The parsed origins.
    ///
    /// # Errors
    /// The first origin that does not parse.
    pub fn parsed_origins(&self) -> Result<Vec<Origin>, String> {
        self.origins.iter().map(|o| Origin::parse(o)).collect()
    }

    /// Checks the table.
    ///
    /// # Errors
    /// What is wrong, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.origins.is_empty() {
            return Err("http.origins must list at least one origin (scheme://host[:port])".into());
        }
        self.parsed_origins()
            .map_err(|e| format!("http.origins: {e}"))?;
        if self.methods.is_empty() {
            return Err("http.methods must list at least one method".into());
        }
        if let Some(m) = self.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(format!(
                "http.methods: {m:?} is not one of {}",
                METHODS.join(", ")
            ));
        }
        if !(1..=MAX_HTTP_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(format!(
                "http.timeout_ms must be 1 to {MAX_HTTP_TIMEOUT_MS}"
            ));
        }
        for (key, value) in [
            ("max_response_bytes", self.max_response_bytes),
            ("max_request_bytes", self.max_request_bytes),
        ] {
            if value > MAX_HTTP_BODY_BYTES {
                return Err(format!(
                    "http.{key} must be at most {MAX_HTTP_BODY_BYTES} (64 MiB)"
                ));
            }
        }
        if !(1..=MAX_HTTP_REQUESTS_PER_CALL).contains(&self.max_requests_per_call) {
            return Err(format!(
                "http.max_requests_per_call must be 1 to {MAX_HTTP_REQUESTS_PER_CALL}"
            ));
        }
        let per_call =
            u64::from(self.max_requests_per_call).saturating_mul(self.max_response_bytes);
        if per_call > MAX_HTTP_BYTES_PER_CALL {
            return Err(format!(
                "http.max_requests_per_call × http.max_response_bytes is {per_call} bytes; at \
                 most {MAX_HTTP_BYTES_PER_CALL} (256 MiB) per call"
            ));
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_absolute() {
                return Err(format!(
                    "http.ca_file = {:?} must be an absolute path",
                    ca.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_strictly() {
        let o = Origin::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.host.as_str(), o.port),
            ("http", "127.0.0.1", 8080)
        );
        assert_eq!(Origin::parse("https://Array.Example/").unwrap().port, 443);
        assert_eq!(
            Origin::parse("https://Array.Example").unwrap().host,
            "array.example"
        );
        assert_eq!(Origin::parse("http://[::1]:9").unwrap().host, "::1");
        assert_eq!(
            Origin::parse("http://[::1]:9").unwrap().to_string(),
            "http://[::1]:9"
        );
        for bad in [
            "127.0.0.1:80",
            "ftp://x",
            "http://x/path",
            "http://user@x",
            "http://x:0",
            "http://x:99999",
            "http://",
            "http://x?y",
            "http://[::1",
            "http://fe80::1:8080",
            "http://::1",
            "http://a_b",
            "http://[zz]:1",
            "http://x%2e:1",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_are_checked() {
        let grant = |toml: &str| -> HttpGrant { toml::from_str(toml).unwrap() };
        let ok = grant("origins = [\"http://127.0.0.1:1\"]");
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.methods, ["GET"]);
        assert_eq!((ok.timeout_ms, ok.max_response_bytes), (1000, 1 << 20));
        for (toml, says) in [
            ("origins = []", "at least one origin"),
            ("origins = [\"http://x/p\"]", "no path"),
            (
                "origins = [\"http://x\"]\nmethods = [\"get\"]",
                "not one of",
            ),
            ("origins = [\"http://x\"]\ntimeout_ms = 0", "timeout_ms"),
            (
                "origins = [\"http://x\"]\nmax_response_bytes = 99999999999",
                "64 MiB",
            ),
            (
                "origins = [\"http://x\"]\nmax_requests_per_call = 0",
                "max_requests_per_call",
            ),
            ("origins = [\"http://x\"]\nca_file = \"ca.pem\"", "absolute"),
            (
                "origins = [\"http://x\"]\nmax_requests_per_call = 1000\nmax_response_bytes = 1048576",
                "256 MiB",
            ),
        ] {
            let e = grant(toml).validate().unwrap_err();
            assert!(e.contains(says), "{toml}: {e}");
        }
    }
}
