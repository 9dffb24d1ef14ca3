//! The one JSON error shape and the one place errors become HTTP statuses.
//!
//! Every error answer is `{"error": {"code": "...", "message": "..."}}`. `code` is a stable
//! machine-readable word; `message` is for people and carries the error chain.

use crate::compute::ComputeError;
use crate::console::ConsoleError;
use crate::image::ImageError;
use crate::ops::OpError;
use crate::sched::SchedError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `unauthorized`, `not_found`, `malformed_json`.
    pub code: String,
    /// Human-readable explanation, with the values that matter.
    pub message: String,
}

/// An error answer: status, code and message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message for people.
    pub message: String,
}

impl ApiError {
    /// An error answer with the given parts.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with code `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 with code `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 with code `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

fn console_status(err: &ConsoleError) -> (StatusCode, &'static str) {
    match err {
        ConsoleError::TokenUnknown => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ConsoleError::TokenSpent { .. } => (StatusCode::GONE, "console_url_spent"),
        ConsoleError::InUse { .. } => (StatusCode::CONFLICT, "console_in_use"),
        ConsoleError::HeldElsewhere { .. } => (StatusCode::CONFLICT, "console_in_use"),
        ConsoleError::TooManySessions { .. } | ConsoleError::TooManyTokens { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "too_many_consoles")
        }
        ConsoleError::NotRunning { .. } => (StatusCode::CONFLICT, "server_not_running"),
        ConsoleError::NoDisplay { .. } => (StatusCode::CONFLICT, "no_display"),
        ConsoleError::Libvirt { .. } | ConsoleError::Screenshot(_) => {
            (StatusCode::BAD_GATEWAY, "hypervisor_error")
        }
        ConsoleError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "hypervisor_timeout"),
        ConsoleError::NotWebSocket => (StatusCode::BAD_REQUEST, "websocket_required"),
    }
}

/// Maps an operation error to its status and code. The only such mapping in the agent.
pub fn status_of(err: &OpError) -> (StatusCode, &'static str) {
    match err {
        OpError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        OpError::Sched(SchedError::Invalid(_)) => (StatusCode::BAD_REQUEST, "invalid_request"),
        OpError::Sched(SchedError::Plugin(_)) => (StatusCode::BAD_GATEWAY, "plugin_failed"),
        OpError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        OpError::UnknownReference { .. } => (StatusCode::NOT_FOUND, "unknown_reference"),
        OpError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        OpError::Fleet(_) => (StatusCode::SERVICE_UNAVAILABLE, "fleet_unavailable"),
        OpError::Console(e) => console_status(e),
        OpError::Image(ImageError::Unsafe(_)) => (StatusCode::BAD_REQUEST, "image_refused"),
        OpError::Image(ImageError::TooLarge { .. }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        }
        OpError::Image(ImageError::Upload(_)) => (StatusCode::BAD_REQUEST, "upload_failed"),
        OpError::Image(ImageError::Convert(_)) => {
            (StatusCode::BAD_REQUEST, "image_conversion_failed")
        }
        OpError::Image(ImageError::Overlay(_)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "overlay_failed")
        }
        OpError::Image(ImageError::Io { .. }) => (StatusCode::INTERNAL_SERVER_ERROR, "image_io"),
        OpError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        OpError::Host(_) => (StatusCode::INTERNAL_SERVER_ERROR, "host_error"),
        OpError::Compute(ComputeError::Timeout { .. }) => {
            (StatusCode::GATEWAY_TIMEOUT, "hypervisor_timeout")
        }
        OpError::Compute(ComputeError::Busy { .. }) => {
            (StatusCode::SERVICE_UNAVAILABLE, "hypervisor_busy")
        }
        OpError::Compute(ComputeError::Libvirt { .. }) => {
            (StatusCode::BAD_GATEWAY, "hypervisor_error")
        }
        OpError::Compute(ComputeError::NoGuestAgent(_)) => (StatusCode::CONFLICT, "no_guest_agent"),
        OpError::Compute(ComputeError::KvmUnavailable(_)) => {
            (StatusCode::CONFLICT, "kvm_unavailable")
        }
        OpError::Plugin(_) => (StatusCode::BAD_GATEWAY, "plugin_failed"),
        OpError::Network(_) => (StatusCode::INTERNAL_SERVER_ERROR, "network_error"),
        OpError::Volume(_) => (StatusCode::INTERNAL_SERVER_ERROR, "volume_error"),
        OpError::Interrupted(_) => (StatusCode::INTERNAL_SERVER_ERROR, "interrupted"),
    }
}

/// The error and its sources, joined with `: `.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        // An error that already prints its source (`#[error("…: {0}")]` on a `#[source]`)
        // would otherwise repeat it.
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

impl From<OpError> for ApiError {
    fn from(err: OpError) -> Self {
        let (status, code) = status_of(&err);
        if status.is_server_error() {
            tracing::error!(error = %chain(&err), "request failed");
        }
        Self::new(status, code, chain(&err))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("inner problem")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("refused: {0}")]
        Printing(#[source] Inner),
        #[error("refused")]
        Silent(#[source] Inner),
    }

    #[test]
    fn a_source_the_error_already_prints_is_not_repeated() {
        assert_eq!(chain(&Outer::Printing(Inner)), "refused: inner problem");
        assert_eq!(chain(&Outer::Silent(Inner)), "refused: inner problem");
    }
}
