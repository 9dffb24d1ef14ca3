//! What a tree answers, and how it becomes an HTTP response.
//!
//! Errors are short `text/plain` bodies (as nova and EC2 answer), never the JSON shape of the
//! agent's REST API: guests parse these responses, operators do not.

use axum::body::Body;
use axum::http::{self, header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::Full;

/// `text/plain` for listings, values and messages.
const TEXT: &str = "text/plain; charset=utf-8";
/// `application/json` for the `.json` files.
const JSON: &str = "application/json";
/// Raw bytes (user data) are labelled text without a charset: they may be anything.
const RAW: &str = "text/plain";

/// One response of the metadata service.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The status code.
    pub(crate) status: StatusCode,
    /// The `Content-Type`.
    content_type: &'static str,
    /// The body.
    pub(crate) body: Bytes,
    /// Extra headers.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    /// 200 with a text body.
    pub(crate) fn text(text: impl Into<String>) -> Self {
        Self::with(StatusCode::OK, TEXT, Bytes::from(text.into()))
    }

    /// 200 with a newline-separated listing.
    pub(crate) fn listing<S: AsRef<str>>(items: &[S]) -> Self {
        let lines: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
        Self::text(lines.join("\n"))
    }

    /// 200 with a JSON document already serialized.
    pub(crate) fn json_bytes(body: Bytes) -> Self {
        Self::with(StatusCode::OK, JSON, body)
    }

    /// 200 with raw bytes.
    pub(crate) fn raw(bytes: Bytes) -> Self {
        Self::with(StatusCode::OK, RAW, bytes)
    }

    /// An error status with a short message.
    pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::with(status, TEXT, Bytes::from(message.into()))
    }

    /// 404 with a short message.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::error(StatusCode::NOT_FOUND, message)
    }

    /// 404 for a path that is not in a tree.
    pub(crate) fn no_such_path() -> Self {
        Self::not_found("Not found")
    }

    /// 405 naming the methods the path accepts.
    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        Self::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method not allowed: use {allow}"),
        )
        .header(header::ALLOW, HeaderValue::from_static(allow))
    }

    /// Adds a header.
    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    fn with(status: StatusCode, content_type: &'static str, body: Bytes) -> Self {
        Self {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }
}

impl Reply {
    /// The HTTP response hyper sends: the body in one buffer, its length known.
    pub(crate) fn into_http(self) -> http::Response<Full<Bytes>> {
        let mut response = http::Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        self.into_http().map(Body::new)
    }
}
