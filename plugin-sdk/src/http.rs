//! Outgoing HTTP requests through the host's `wasi:http/outgoing-handler` — for plugins that
//! talk to a REST service (a storage array, an SDN controller, a maintenance calendar).
//!
//! A plugin needs the `http` grant and a `[plugins.http]` table listing the origins
//! (`scheme://host:port`) and methods it may use; the agent refuses anything else before a
//! byte leaves the host ([`HttpError::Denied`]), gives each request a deadline inside the
//! call's, caps the request and response bodies, and never follows redirects (a 3xx comes
//! back as it is). The component imports `wasi:http` only when the code uses this module.
//!
//! ```no_run
//! use hyperlet_plugin_sdk::http;
//!
//! let answer = http::get("http://127.0.0.1:8080/maintenance")?;
//! if answer.status == 200 {
//!     let text = String::from_utf8_lossy(&answer.body);
//!     // …
//! }
//! # Ok::<(), http::HttpError>(())
//! ```
//!
//! Off wasm (unit tests) requests go to the handler [`testing::http`](crate::testing::http)
//! sets; without one they are denied.

/// Largest response body this module reads (the agent's `max_response_bytes` is usually
/// smaller and applies first).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// A request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// `http://host[:port]/path?query` or `https://…`.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body (empty: none).
    pub body: Vec<u8>,
}

/// A response, read whole.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The grant does not allow it (origin, method, too many requests in one call) or the
    /// plugin has no `http` grant.
    Denied,
    /// It did not finish within its deadline.
    Timeout,
    /// A body was larger than the grant allows.
    TooLarge,
    /// The URL is not `http(s)://host[:port]/…`.
    BadUrl(String),
    /// Anything else (connection refused, TLS, protocol), as the host reported it.
    Failed(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied => write!(f, "denied by the plugin's http grant"),
            Self::Timeout => write!(f, "timed out"),
            Self::TooLarge => write!(f, "body larger than the grant allows"),
            Self::BadUrl(url) => write!(f, "bad URL {url:?}"),
            Self::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// The parts of an `http(s)` URL: scheme, authority, path with query.
pub(crate) fn split_url(url: &str) -> Result<(&str, &str, &str), HttpError> {
    let bad = || HttpError::BadUrl(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.is_empty() {
        return Err(bad());
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// `GET url`.
///
/// # Errors
/// [`HttpError`].
pub fn get(url: &str) -> Result<Response, HttpError> {
    send(&Request {
        method: "GET".into(),
        url: url.into(),
        headers: Vec::new(),
        body: Vec::new(),
    })
}

/// Sends `request` and reads the whole response.
///
/// # Errors
/// [`HttpError`].
pub fn send(request: &Request) -> Result<Response, HttpError> {
    split_url(&request.url)?;
    imp::send(request)
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{HttpError, Request, Response};

    pub fn send(request: &Request) -> Result<Response, HttpError> {
        crate::testing::http::handle(request)
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{split_url, HttpError, Request, Response, MAX_BODY_BYTES};
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    use wasip2::io::streams::StreamError;

    fn failed(e: ErrorCode) -> HttpError {
        match e {
            ErrorCode::HttpRequestDenied => HttpError::Denied,
            ErrorCode::HttpResponseTimeout
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout => HttpError::Timeout,
            ErrorCode::HttpResponseBodySize(_) | ErrorCode::HttpRequestBodySize(_) => {
                HttpError::TooLarge
            }
            other => HttpError::Failed(format!("{other:?}")),
        }
    }

    pub fn send(request: &Request) -> Result<Response, HttpError> {
        let (scheme, authority, path) = split_url(&request.url)?;
        let bad = || HttpError::BadUrl(request.url.clone());
        let headers = Fields::new();
        for (name, value) in &request.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| HttpError::Failed(format!("header {name}: {e:?}")))?;
        }
        let out = OutgoingRequest::new(headers);
        let method = match request.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        };
        out.set_method(&method).map_err(|()| bad())?;
        let scheme = if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        out.set_scheme(Some(&scheme)).map_err(|()| bad())?;
        out.set_authority(Some(authority)).map_err(|()| bad())?;
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        out.set_path_with_query(Some(&path)).map_err(|()| bad())?;
        let body = out.body().map_err(|()| bad())?;
        // The request goes out first and the body streams to it (the host buffers only a
        // chunk or two before someone reads them).
        let pending = outgoing_handler::handle(out, None).map_err(failed)?;
        let answer = |pending: &wasip2::http::types::FutureIncomingResponse| {
            pending.subscribe().block();
            match pending.get() {
                Some(Ok(Ok(response))) => Ok(response),
                Some(Ok(Err(e))) => Err(failed(e)),
                Some(Err(())) | None => Err(HttpError::Failed("no response".into())),
            }
        };
        if !request.body.is_empty() {
            let stream = body.write().map_err(|()| bad())?;
            for chunk in request.body.chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    // The host stopped reading: its answer says why (denied, too large, …).
                    drop(stream);
                    drop(body);
                    answer(&pending)?;
                    return Err(HttpError::Failed("the request body was not taken".into()));
                }
            }
            drop(stream);
        }
        if let Err(e) = OutgoingBody::finish(body, None) {
            answer(&pending)?;
            return Err(failed(e));
        }
        let response = answer(&pending)?;
        let mut answer = Response {
            status: response.status(),
            headers: response
                .headers()
                .entries()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect(),
            body: Vec::new(),
        };
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Failed("no body".into()))?;
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::Failed("no body stream".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if answer.body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(HttpError::TooLarge);
                    }
                    answer.body.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::Failed(e.to_debug_string()))
                }
            }
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/a?b=1").unwrap(),
            ("http", "127.0.0.1:8080", "/a?b=1")
        );
        assert_eq!(split_url("https://x").unwrap(), ("https", "x", "/"));
        assert_eq!(split_url("https://x?q").unwrap(), ("https", "x", "?q"));
        for bad in ["ftp://x/", "x/y", "http:///p"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_mock_host_answers_or_denies() {
        assert_eq!(get("http://a/").unwrap_err(), HttpError::Denied);
        crate::testing::http::respond(|request| {
            Ok(Response {
                status: 200,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: request.url.clone().into_bytes(),
            })
        });
        let answer = get("http://a/x").unwrap();
        assert_eq!(answer.body, b"http://a/x");
        assert_eq!(answer.header("Content-Type"), Some("text/plain"));
        crate::testing::http::clear();
        assert_eq!(get("http://a/").unwrap_err(), HttpError::Denied);
    }
}
