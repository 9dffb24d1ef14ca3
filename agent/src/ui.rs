//! The node page (`GET /ui/`): one page and its scripts, embedded at build time from
//! `agent/ui/` (see `agent/build.rs`), and the headers they are served with.
//!
//! The page holds no data: it asks for the admin token, keeps it in session storage and calls
//! the REST API with it, so its files are served without a token. Its Content-Security-Policy
//! allows scripts from this origin only (no inline script, no `eval`), connections to this
//! origin only (HTTP and WebSocket), and styles from this origin plus the `<style>` elements
//! xterm.js creates at run time, which carry a nonce made fresh for every page load, and the
//! style attributes it colours 24-bit text with.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Every file under `agent/ui/`, sorted by path (relative, `/`-separated).
static ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// The page itself.
pub const INDEX: &str = "index.html";

/// Where the page's per-load style nonce goes in `index.html`.
const NONCE_PLACEHOLDER: &str = "__STYLE_NONCE__";

/// The bytes of the embedded file at `path` (relative to `/ui/`).
pub fn asset(path: &str) -> Option<&'static [u8]> {
    ASSETS
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .map(|i| ASSETS[i].1)
}

/// The `Content-Type` a file is served with, by its extension; licences and other files
/// without a known extension are plain text.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

/// A strong validator for the embedded file at `path` (`"<sha-256 prefix>"`), computed once.
pub fn etag(path: &str) -> Option<&'static str> {
    static TAGS: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(p, bytes)| {
                let digest = Sha256::digest(bytes);
                (*p, format!("\"{}\"", hex::encode(&digest[..12])))
            })
            .collect()
    })
    .get(path)
    .map(String::as_str)
}

/// A fresh nonce for one page load (128 random bits, base64).
pub fn new_nonce() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

/// `index.html` with `nonce` in place.
pub fn index_page(nonce: &str) -> String {
    let page = asset(INDEX).expect("agent/ui/index.html is embedded");
    String::from_utf8_lossy(page).replace(NONCE_PLACEHOLDER, nonce)
}

/// The Content-Security-Policy of the page. `style_nonce` admits the `<style>` elements the
/// page's scripts create (xterm.js writes its theme and cell metrics into them); no inline
/// script or event handler is allowed. Style attributes are (`style-src-attr`): xterm.js
/// colours 24-bit text with them; an attribute holds declarations for its own element only
/// (no selectors to read the page with) and can load nothing `img-src`/`font-src` refuse.
/// `console_origin` (`wss://host[:port]`, from `consoles.public_base_url`) is where console
/// WebSockets go when that is not this origin.
pub fn content_security_policy(style_nonce: &str, console_origin: Option<&str>) -> String {
    let connect = match console_origin {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_string(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; \
         style-src-elem 'self' 'nonce-{style_nonce}'; style-src-attr 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self'; connect-src {connect}; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'; object-src 'none'"
    )
}

/// The Content-Security-Policy of the page's other files (scripts, styles, licences): they
/// are never documents of their own that may run or load anything.
pub const FILE_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// Whether `if_none_match` (an `If-None-Match` value) matches the strong tag `etag`: weak
/// comparison over a list (RFC 9110 §13.1.2), `*` matching anything.
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The origin (`scheme://host[:port]`) of a checked `consoles.public_base_url`.
pub fn origin_of(url: &str) -> Option<String> {
    let uri: axum::http::Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_libraries_are_embedded_with_their_licences() {
        for path in [
            INDEX,
            "app.js",
            "style.css",
            "vendor/xterm/xterm.mjs",
            "vendor/xterm/LICENSE",
            "vendor/novnc/core/rfb.js",
            "vendor/novnc/LICENSE.txt",
            "vendor/novnc/vendor/pako/LICENSE",
        ] {
            assert!(asset(path).is_some(), "{path} is not embedded");
        }
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("").is_none());
    }

    #[test]
    fn the_page_names_no_other_origin_and_has_no_inline_script() {
        let page = index_page("n0nce");
        assert!(page.contains("nonce=\"n0nce\""));
        assert!(!page.contains(NONCE_PLACEHOLDER));
        for path in ASSETS
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| p.ends_with(".html"))
        {
            let text = String::from_utf8_lossy(asset(path).unwrap()).to_lowercase();
            assert!(!text.contains("<script>"), "{path}: inline script");
            assert!(
                !has_event_handler_attribute(&text),
                "{path}: inline event handler"
            );
            assert!(!text.contains("javascript:"), "{path}");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{path}"
            );
            assert!(!text.contains(" style=\""), "{path}: inline style");
        }
    }

    /// Whether `html` has an attribute like ` onclick=`.
    fn has_event_handler_attribute(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        })
    }

    #[test]
    fn a_console_origin_elsewhere_is_the_only_other_connection_allowed() {
        let csp = content_security_policy("n", None);
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("style-src-elem 'self' 'nonce-n';"), "{csp}");
        let origin = origin_of("wss://proxy.example:8443/node-7").unwrap();
        assert_eq!(origin, "wss://proxy.example:8443");
        let csp = content_security_policy("n", Some(&origin));
        assert!(
            csp.contains("connect-src 'self' wss://proxy.example:8443;"),
            "{csp}"
        );
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(
            content_type("vendor/xterm/xterm.mjs"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("vendor/xterm/LICENSE"),
            "text/plain; charset=utf-8"
        );
        assert!(etag(INDEX).is_some_and(|t| t.len() == 26));
    }

    #[test]
    fn if_none_match_is_a_weak_comparison_over_a_list() {
        let tag = "\"abc\"";
        assert!(etag_matches("\"abc\"", tag));
        assert!(etag_matches("W/\"abc\"", tag));
        assert!(etag_matches("\"x\", W/\"abc\"", tag));
        assert!(etag_matches("*", tag));
        assert!(!etag_matches("\"abd\"", tag));
        assert!(!etag_matches("abc", tag));
        assert!(!etag_matches("", tag));
    }
}
