//! Consoles of servers: one-time URLs, opening a session, screenshots.
//!
//! The WebSocket work is `crate::console`; this is what the API asks of it, with the server
//! checks every front shares.

use super::servers;
use super::{OpError, Services};
use crate::compute::PowerState;
use crate::console::{self, ConsoleError, ConsoleKind, Grant, SerialAttach, SessionGuard};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleType {
    /// The serial console: raw bytes both ways (binary messages; text messages are taken as
    /// their UTF-8 bytes).
    Serial,
    /// The VNC display: RFB over WebSocket, for noVNC or any RFB-over-WebSocket client.
    Novnc,
}

/// `POST /v1/servers/{id}/remote-consoles` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteConsoleRequest {
    /// Which console.
    #[serde(rename = "type")]
    pub console_type: ConsoleType,
    /// Watch the serial console without typing (any number of watchers may join). Serial
    /// only.
    #[serde(default)]
    #[schema(default = false)]
    pub read_only: bool,
    /// Take the interactive serial console over: its current session is closed (code 4001),
    /// as is a `virsh console` holding it. Serial only.
    #[serde(default)]
    #[schema(default = false)]
    pub force: bool,
}

/// A one-time console URL.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RemoteConsole {
    /// Which console.
    #[serde(rename = "type")]
    pub console_type: ConsoleType,
    /// `ws://` or `wss://` URL of the session; the token in it is the only credential needed
    /// and opens one session, once.
    pub url: String,
    /// When the URL stops working if not opened (RFC 3339).
    pub expires_at: String,
    /// Whether the session only watches.
    pub read_only: bool,
}

/// An opened session, ready to be served over the WebSocket.
pub enum OpenedConsole {
    /// A serial console session.
    Serial(SerialAttach),
    /// A connection to the VNC display.
    Vnc(tokio::net::UnixStream),
}

/// The server's domain if it runs (or is paused), else [`ConsoleError::NotRunning`].
async fn running_domain(services: &Services, id: &str) -> Result<String, OpError> {
    let loaded = servers::load(services, id).await?;
    if loaded.status == servers::ServerStatus::Deleted {
        return Err(OpError::NotFound {
            kind: "server",
            id: id.to_string(),
        });
    }
    let domain = loaded.spec.domain_name.clone();
    let state = services.libvirt().state(&domain).await?;
    if !matches!(state, Some(PowerState::Running | PowerState::Paused)) {
        return Err(ConsoleError::NotRunning {
            server_id: id.to_string(),
            status: loaded.status.as_str().to_string(),
        }
        .into());
    }
    Ok(domain)
}

/// The VNC socket of a running domain.
async fn vnc_socket(
    services: &Services,
    id: &str,
    domain: &str,
) -> Result<std::path::PathBuf, OpError> {
    let xml = services
        .libvirt()
        .xml(domain, false)
        .await?
        .unwrap_or_default();
    console::vnc::socket_of(&xml).ok_or_else(|| {
        ConsoleError::NoDisplay {
            server_id: id.to_string(),
        }
        .into()
    })
}

/// Issues a one-time URL for a console of server `id`; `base` is `ws://host:port` as the
/// client reached the agent.
///
/// # Errors
/// [`OpError::InvalidInput`] for options that do not fit the type, [`OpError::NotFound`],
/// [`ConsoleError`]s (not running, no display, in use, limits).
pub async fn create_remote_console(
    services: &Services,
    id: &str,
    request: RemoteConsoleRequest,
    base: &str,
) -> Result<RemoteConsole, OpError> {
    let kind = match request.console_type {
        ConsoleType::Serial if request.read_only && request.force => {
            return Err(OpError::InvalidInput(
                "read_only and force cannot be combined: a watcher takes nothing over".into(),
            ))
        }
        ConsoleType::Serial => ConsoleKind::Serial {
            read_only: request.read_only,
            force: request.force,
        },
        ConsoleType::Novnc if request.read_only || request.force => {
            return Err(OpError::InvalidInput(
                "read_only and force apply to serial consoles only".into(),
            ))
        }
        ConsoleType::Novnc => ConsoleKind::Vnc,
    };
    let domain = running_domain(services, id).await?;
    if kind == ConsoleKind::Vnc {
        vnc_socket(services, id, &domain).await?;
    }
    let grant = Grant {
        server_id: id.to_string(),
        domain_name: domain,
        kind,
    };
    let consoles = services.consoles();
    consoles.precheck(&grant)?;
    let token = consoles.tokens().issue(grant)?;
    let expires = chrono::Utc::now()
        + chrono::Duration::from_std(consoles.tokens().ttl()).unwrap_or_default();
    Ok(RemoteConsole {
        console_type: request.console_type,
        url: format!("{}/v1/consoles/{token}", base.trim_end_matches('/')),
        expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        read_only: request.read_only,
    })
}

/// Spends `token` and opens its console: the session's permit and its stream.
///
/// # Errors
/// [`ConsoleError::TokenUnknown`] / [`ConsoleError::TokenSpent`], the limits, and what
/// opening the console can fail with (the server stopped or was deleted meanwhile).
pub async fn open_console(
    services: &Services,
    token: &str,
) -> Result<(SessionGuard, OpenedConsole), OpError> {
    let consoles = services.consoles();
    let grant = consoles.tokens().redeem(token)?;
    let guard = consoles.register(&grant.server_id)?;
    let domain = running_domain(services, &grant.server_id).await?;
    if domain != grant.domain_name {
        return Err(ConsoleError::TokenUnknown.into());
    }
    let opened = match grant.kind {
        ConsoleKind::Serial { read_only, force } => {
            OpenedConsole::Serial(consoles.attach_serial(&grant, read_only, force).await?)
        }
        ConsoleKind::Vnc => {
            let socket = vnc_socket(services, &grant.server_id, &domain).await?;
            let timeout = services.config().hypervisor.call_timeout();
            OpenedConsole::Vnc(console::vnc::connect(&grant.server_id, &socket, timeout).await?)
        }
    };
    Ok((guard, opened))
}

/// A PNG of the server's screen.
///
/// # Errors
/// [`OpError::NotFound`], [`ConsoleError::NotRunning`], libvirt's errors (no display),
/// [`ConsoleError::Screenshot`].
pub async fn screenshot(services: &Services, id: &str) -> Result<Vec<u8>, OpError> {
    let domain = running_domain(services, id).await?;
    let _permit = services
        .consoles()
        .screenshot_permit(services.config().hypervisor.call_timeout())
        .await?;
    let (mime, picture) = services
        .libvirt()
        .screenshot(&domain, console::screenshot::MAX_SCREENSHOT_BYTES)
        .await?;
    let png = tokio::task::spawn_blocking(move || console::screenshot::to_png(&mime, &picture))
        .await
        .map_err(|e| OpError::Interrupted(format!("the PNG conversion failed: {e}")))??;
    Ok(png)
}
