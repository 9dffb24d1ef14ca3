//! Request middleware, outermost first:
//!
//! 1. [`request_context`] — gives the request an id (`X-Request-Id`, kept from the client when
//!    sane), opens the tracing span every log line of the request carries, logs the outcome,
//!    records metrics and puts the id on the response.
//! 2. [`deadline`] — answers 503 `request_timeout` when the handler overruns.
//! 3. [`body_limit`] — refuses a declared body over the limit with 413 before reading it.
//! 4. [`require_token`] — checks the bearer token on every route but the public ones and the
//!    console WebSocket (whose one-time URL is its credential).
//! 5. [`json_errors`] — turns any plain-text error answer (extractor rejections) into the
//!    JSON error shape.

use super::error::ApiError;
use crate::ops::Services;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tracing::Instrument;

/// Header carrying the request id.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Routes served without a token.
pub const PUBLIC_PATHS: [&str; 2] = ["/healthz", "/v1/openapi.json"];

/// The id of the current request, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn sane_client_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| text.to_string())
}

/// Request id, tracing span, access log and metrics.
pub async fn request_context(
    State(services): State<Services>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(sane_client_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    // A console URL's path is its credential: never logged.
    let path = if req.uri().path().starts_with("/v1/consoles/") {
        "/v1/consoles/<token>".to_string()
    } else {
        req.uri().path().to_string()
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    services
        .metrics()
        .observe(method.as_str(), &route, status.as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}

/// Fails the request with 503 `request_timeout` when it takes longer than the configured time.
/// Streamed uploads are exempt: they are bounded by an idle timeout between chunks instead.
pub async fn deadline(State(services): State<Services>, req: Request, next: Next) -> Response {
    if req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| p.as_str() == UPLOAD_ROUTE)
    {
        return next.run(req).await;
    }
    // Peer calls run their work detached and are bounded by their callers' deadlines.
    if req.uri().path().starts_with(PEER_PREFIX) {
        return next.run(req).await;
    }
    let limit = services.config().api.request_timeout();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!("The request did not complete within {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// The console WebSocket: its one-time token is its credential (a browser cannot send a
/// bearer token with a WebSocket), and its path is not logged.
pub const CONSOLE_ROUTE: &str = "/v1/consoles/{token}";

/// The node page's files: public like the page itself (see [`crate::ui`]).
pub const UI_FILE_ROUTE: &str = "/ui/{*path}";

/// Routes served without the admin token besides [`PUBLIC_PATHS`]: the console WebSocket
/// (its one-time token is the credential) and the node page (it holds no data).
const TOKENLESS_ROUTES: [&str; 4] = [CONSOLE_ROUTE, "/ui", "/ui/", UI_FILE_ROUTE];

/// The streamed image upload: its size is bounded by `images.max_upload_gb` instead.
pub const UPLOAD_ROUTE: &str = "/v1/images/{id}/file";

/// Refuses a request whose `Content-Length` is over the limit, before reading the body.
/// Bodies without a length are cut at the same limit by the JSON extractor. The image upload
/// route has its own limit.
pub async fn body_limit(State(services): State<Services>, req: Request, next: Next) -> Response {
    if req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| p.as_str() == UPLOAD_ROUTE)
    {
        return next.run(req).await;
    }
    let limit = services.config().api.body_limit_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared {
        if length > limit as u64 {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("The request body has {length} bytes; the limit is {limit}"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// The credentials of an `Authorization: Bearer <token>` header: the scheme is matched without
/// regard to case (RFC 7235 §2.1), one or more spaces follow it, and the rest is the token
/// exactly as sent (it is compared byte for byte, nothing trimmed or decoded). `None` for any
/// other scheme or an empty token.
pub fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &value[SCHEME.len()..];
    let token = &rest[rest.iter().position(|b| *b != b' ')?..];
    (rest[0] == b' ').then_some(token)
}

/// Largest error text taken over from a plain-text rejection.
const REJECTION_TEXT_LIMIT: usize = 16 * 1024;

/// Puts every error answer into the one JSON shape. Handlers and [`ApiError`] already answer
/// JSON; this catches the rest: axum's extractor rejections (a path parameter that is not
/// UTF-8, an unknown query field, …), which are plain text, whatever extractor a future
/// handler uses.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, REJECTION_TEXT_LIMIT).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("The request failed")
            .to_string(),
    };
    let mut answer = ApiError::new(status, code_for_status(status), text).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        answer.headers_mut().insert(header::ALLOW, allow.clone());
    }
    answer
}

/// The error code of an answer that did not come with one.
fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_server_error() => "internal_error",
        _ => "invalid_request",
    }
}

/// The routes agents of one fleet call on each other (`/v1/peer/…`).
pub const PEER_PREFIX: &str = "/v1/peer/";

/// Requires `Authorization: Bearer <admin token>` except on [`PUBLIC_PATHS`] and
/// [`TOKENLESS_ROUTES`], and the fleet's peer token (only it) on [`PEER_PREFIX`].
pub async fn require_token(State(services): State<Services>, req: Request, next: Next) -> Response {
    let tokenless = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| TOKENLESS_ROUTES.contains(&p.as_str()));
    if tokenless || PUBLIC_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer_credentials(v.as_bytes()));
    if req.uri().path().starts_with(PEER_PREFIX) {
        let Some(peer) = services.migrations().peer_token() else {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "peer_disabled",
                "This node takes no peer calls: set [migration] peer_token_file",
            )
            .into_response();
        };
        return match presented {
            Some(token) if peer.matches_bytes(token) => next.run(req).await,
            Some(_) => ApiError::unauthorized("The peer token is not valid").into_response(),
            None => ApiError::unauthorized(
                "Missing bearer token: peers send Authorization: Bearer <the fleet's peer token>",
            )
            .into_response(),
        };
    }
    match presented {
        None => ApiError::unauthorized(
            "Missing bearer token: send Authorization: Bearer <token> (the admin token is in \
             <state-dir>/admin.token)",
        )
        .into_response(),
        Some(token) if services.token().matches_bytes(token) => next.run(req).await,
        Some(_) => ApiError::unauthorized("The bearer token is not valid").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::load_or_create;
    use crate::compute::DomainType;
    use crate::config::Config;
    use crate::host::KvmProbe;
    use crate::ops::ServicesParts;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use std::time::Duration;
    use tower::ServiceExt;

    fn services(dir: &std::path::Path, timeout_secs: u64) -> Services {
        services_configured(dir, |c| c.api.request_timeout_secs = timeout_secs)
    }

    fn services_configured(dir: &std::path::Path, change: impl FnOnce(&mut Config)) -> Services {
        let mut config = Config {
            state_dir: dir.to_path_buf(),
            ..Config::default()
        };
        change(&mut config);
        let store = crate::state::Store::open(&dir.join("db")).unwrap();
        let (token, _) = load_or_create(&config).unwrap();
        Services::new(ServicesParts {
            config,
            store,
            token,
            kvm: KvmProbe {
                usable: false,
                reason: "test".into(),
            },
            domain_type: DomainType::Qemu,
            shutdown: Default::default(),
            images: crate::image::ImageCache::open(
                &dir.join("images"),
                crate::image::CacheLimits {
                    max_upload_bytes: 1 << 20,
                    max_virtual_size: 1 << 30,
                    convert_timeout: Duration::from_secs(5),
                    qemu_img: crate::tool::Limits::QEMU_IMG,
                },
            )
            .unwrap(),
            node_id: "test-node".into(),
            // No plugins: loading completes without waiting.
            plugins: std::sync::Arc::new(
                futures_util::FutureExt::now_or_never(crate::plugin::PluginRegistry::load(
                    crate::plugin::PluginEngine::new().unwrap(),
                    dir.join("plugin-cache"),
                    &[],
                    10,
                ))
                .expect("an empty registry loads at once"),
            ),
        })
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_the_token_exact() {
        assert_eq!(bearer_credentials(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"BEARER  abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"Bearer abc "), Some(&b"abc "[..]));
        assert_eq!(bearer_credentials(b"Bearer"), None);
        assert_eq!(bearer_credentials(b"Bearer "), None);
        assert_eq!(bearer_credentials(b"Bearerabc"), None);
        assert_eq!(bearer_credentials(b"Basic abc"), None);
        assert_eq!(bearer_credentials(b"\tBearer abc"), None);
    }

    #[tokio::test]
    async fn slow_handlers_get_a_json_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let services = services(dir.path(), 1);
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                services.clone(),
                deadline,
            ))
            .with_state(services);
        let slow = app
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(slow.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "request_timeout");
        let fast = app
            .oneshot(Request::get("/fast").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(fast.status(), StatusCode::OK);
    }

    async fn status_of_get(app: &Router, path: &str) -> StatusCode {
        app.clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn the_node_page_is_public_only_where_it_is_routed() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::api::router(services(dir.path(), 30));
        assert_eq!(status_of_get(&app, "/ui/").await, StatusCode::OK);
        assert_eq!(status_of_get(&app, "/ui/app.js").await, StatusCode::OK);
        assert_eq!(
            status_of_get(&app, "/ui/none.js").await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_of_get(&app, "/ui").await,
            StatusCode::PERMANENT_REDIRECT
        );
        // Paths that only look like the page's stay behind the token.
        assert_eq!(status_of_get(&app, "/uix").await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status_of_get(&app, "/v1/host").await,
            StatusCode::UNAUTHORIZED
        );

        let off = tempfile::tempdir().unwrap();
        let app = crate::api::router(services_configured(off.path(), |c| c.api.node_page = false));
        assert_eq!(status_of_get(&app, "/ui/").await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status_of_get(&app, "/ui/app.js").await,
            StatusCode::UNAUTHORIZED
        );
    }
}
