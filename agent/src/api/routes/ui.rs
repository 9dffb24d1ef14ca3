//! `GET /ui/…` — the node page and its files (see [`crate::ui`]). Served without the admin
//! token (the page holds no data), never listed in the OpenAPI document.

use crate::api::error::ApiError;
use crate::ops::Services;
use crate::ui;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

/// `GET /ui` → `/ui/`.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the page, with a fresh style nonce.
pub async fn index(State(services): State<Services>) -> Response {
    page(&services)
}

/// `GET /ui/{*path}`: one embedded file.
pub async fn file(
    State(services): State<Services>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    if path == ui::INDEX {
        return page(&services);
    }
    let (Some(bytes), Some(etag)) = (ui::asset(&path), ui::etag(&path)) else {
        return ApiError::not_found(format!("The node page has no file {path:?}")).into_response();
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| ui::etag_matches(v, etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, ui::content_type(&path))], bytes).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ui::FILE_CONTENT_SECURITY_POLICY),
    );
    protect(h);
    response
}

/// The page with its nonce; never cached (each load has its own nonce).
fn page(services: &Services) -> Response {
    let nonce = ui::new_nonce();
    let mut response = (
        [(header::CONTENT_TYPE, ui::content_type(ui::INDEX))],
        ui::index_page(&nonce),
    )
        .into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let consoles_elsewhere = services.config().consoles.public_base_url.as_deref();
    let console_origin = consoles_elsewhere.and_then(ui::origin_of);
    let csp = ui::content_security_policy(&nonce, console_origin.as_deref());
    // Fails closed: a policy that cannot be written allows nothing.
    let csp = HeaderValue::from_str(&csp)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    protect(h);
    response
}

/// Headers every node page response carries besides its CSP: no sniffing, no framing, no
/// referrer, its own browsing context group.
fn protect(h: &mut HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}
