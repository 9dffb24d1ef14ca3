//! Consoles: `POST /v1/servers/{id}/remote-consoles` (a one-time URL),
//! `GET /v1/consoles/{token}` (the WebSocket it opens; no bearer token — the URL is the
//! credential, so a browser can open it), `GET /v1/servers/{id}/screenshot` (PNG).

use crate::api::error::{ApiError, ErrorBody};
use crate::api::json::ApiJson;
use crate::config::Config;
use crate::console::{session, ConsoleError};
use crate::daemon::listener::ConnectionSocket;
use crate::ops::consoles::{self, OpenedConsole, RemoteConsole, RemoteConsoleRequest};
use crate::ops::Services;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, Path, State};
use axum::http::{header, uri::Authority, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Read buffer of a console WebSocket (small: many sessions are idle).
const READ_BUFFER: usize = 4 * 1024;
/// Write buffer before a flush.
const WRITE_BUFFER: usize = 4 * 1024;
/// Most output the socket holds for a client that does not read (then the send fails).
const MAX_WRITE_BUFFER: usize = 256 * 1024;

/// `consoles.public_base_url` when set; else `ws://` or `wss://` and the authority the client
/// used to reach the agent (its `Host`), or the listen address when it sent none usable.
fn websocket_base(config: &Config, headers: &HeaderMap, uri: &Uri) -> String {
    if let Some(base) = &config.consoles.public_base_url {
        return base.clone();
    }
    let scheme = if config.tls.enabled() { "wss" } else { "ws" };
    let from_client = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Authority>().ok())
        .or_else(|| uri.authority().cloned())
        .filter(|a| !a.as_str().contains('@'));
    let authority = match from_client {
        Some(a) => a.to_string(),
        None => {
            let listen = config.listen;
            if listen.ip().is_unspecified() {
                format!("localhost:{}", listen.port())
            } else {
                listen.to_string()
            }
        }
    };
    format!("{scheme}://{authority}")
}

/// Issues a one-time console URL.
#[utoipa::path(post, path = "/v1/servers/{id}/remote-consoles", tag = "consoles",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id")),
    request_body = RemoteConsoleRequest,
    responses(
        (status = 200, description = "The URL: open it with a WebSocket client within \
            `consoles.token_ttl_secs` (30 s by default); it opens one session", body = RemoteConsole),
        (status = 400, description = "Invalid request (options that do not fit the type)", body = ErrorBody),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 409, description = "The server is not running (`server_not_running`), has no \
            VNC display (`no_display`), or another session types into its serial console \
            (`console_in_use`: join with read_only or take over with force)", body = ErrorBody),
        (status = 429, description = "consoles.max_sessions sessions are open, or too many URLs \
            wait to be opened (`too_many_consoles`)", body = ErrorBody),
        (status = 502, description = "libvirt failed", body = ErrorBody),
        (status = 504, description = "libvirt did not answer in time", body = ErrorBody),
    ))]
pub async fn create(
    State(services): State<Services>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    ApiJson(request): ApiJson<RemoteConsoleRequest>,
) -> Result<Json<RemoteConsole>, ApiError> {
    let base = websocket_base(services.config(), &headers, &uri);
    Ok(Json(
        consoles::create_remote_console(&services, &id, request, &base).await?,
    ))
}

/// Opens the console session of a one-time URL (WebSocket, binary messages both ways).
///
/// The session ends with a close frame saying why: 1001 the agent is shutting down, 4001
/// another session took over, 4002 the server stopped or moved, 4003 idle for
/// `consoles.idle_timeout_secs`, 4004 the client did not keep up with the output, 4006 the
/// server was deleted, 4010 the console failed.
#[utoipa::path(get, path = "/v1/consoles/{token}", tag = "consoles",
    params(("token" = String, Path, description = "The token of the URL from remote-consoles")),
    responses(
        (status = 101, description = "Switching to the WebSocket session"),
        (status = 400, description = "Not a WebSocket handshake (`websocket_required`); the URL \
            stays valid", body = ErrorBody),
        (status = 401, description = "No such console URL", body = ErrorBody),
        (status = 404, description = "The server was deleted", body = ErrorBody),
        (status = 409, description = "The server stopped, or its serial console got an \
            interactive session since the URL was issued", body = ErrorBody),
        (status = 410, description = "The URL was used already or has expired", body = ErrorBody),
        (status = 429, description = "consoles.max_sessions sessions are open", body = ErrorBody),
        (status = 502, description = "libvirt failed", body = ErrorBody),
        (status = 504, description = "libvirt did not answer in time", body = ErrorBody),
    ))]
pub async fn open(
    State(services): State<Services>,
    Path(token): Path<String>,
    socket: Option<Extension<ConnectionSocket>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Checked before the token is spent: a plain GET leaves the URL usable.
    let upgrade = upgrade.map_err(|_| crate::ops::OpError::from(ConsoleError::NotWebSocket))?;
    let (guard, opened) = consoles::open_console(&services, &token).await?;
    let socket = socket.map(|Extension(s)| s);
    let idle = services.config().consoles.idle_timeout();
    let upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(session::MAX_CLIENT_MESSAGE)
        .max_frame_size(session::MAX_CLIENT_MESSAGE)
        // noVNC asks for "binary"; other clients ask for nothing.
        .protocols(["binary"]);
    Ok(match opened {
        OpenedConsole::Serial(attach) => upgrade
            .on_upgrade(move |ws| session::run_serial(ws, socket, attach, guard, idle))
            .into_response(),
        OpenedConsole::Vnc(display) => upgrade
            .on_upgrade(move |ws| session::run_vnc(ws, socket, display, guard, idle))
            .into_response(),
    })
}

/// A PNG of the server's screen (its VNC display).
#[utoipa::path(get, path = "/v1/servers/{id}/screenshot", tag = "consoles",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id")),
    responses(
        (status = 200, description = "The screen", content_type = "image/png", body = Vec<u8>),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 409, description = "The server is not running", body = ErrorBody),
        (status = 502, description = "libvirt failed (no display)", body = ErrorBody),
        (status = 504, description = "libvirt did not answer in time", body = ErrorBody),
    ))]
pub async fn screenshot(
    State(services): State<Services>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let png = consoles::screenshot(&services, &id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_urls_start_where_clients_reach_the_agent() {
        let mut config = Config::default();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "node-7.example:8787".parse().unwrap());
        let uri: Uri = "/v1/servers/x/remote-consoles".parse().unwrap();
        assert_eq!(
            websocket_base(&config, &headers, &uri),
            "ws://node-7.example:8787"
        );
        // A Host with a user part is not used.
        headers.insert(header::HOST, "user@evil.example".parse().unwrap());
        assert!(!websocket_base(&config, &headers, &uri).contains("evil"));
        config.consoles.public_base_url = Some("wss://proxy.example/node-7".into());
        assert_eq!(
            websocket_base(&config, &headers, &uri),
            "wss://proxy.example/node-7"
        );
    }
}
