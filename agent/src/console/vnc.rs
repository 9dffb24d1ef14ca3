//! The VNC display of a server: where QEMU listens, and connecting to it.
//!
//! Servers get `<graphics type='vnc'><listen type='socket'/></graphics>` (see
//! `compute/domain.rs`): libvirt makes a unix socket in the domain's private directory that
//! only root and QEMU reach, and no VNC password is set — the one-time URL is the credential.
//! Each WebSocket session is one RFB connection to that socket; QEMU shares the display
//! between them.

use super::ConsoleError;
use std::path::PathBuf;
use std::time::Duration;

/// The VNC unix socket named by a running domain's XML, if it has one.
pub fn socket_of(domain_xml: &str) -> Option<PathBuf> {
    let doc = roxmltree::Document::parse(domain_xml).ok()?;
    let graphics = doc
        .descendants()
        .find(|n| n.has_tag_name("graphics") && n.attribute("type") == Some("vnc"))?;
    let from_listen = graphics
        .children()
        .find(|n| n.has_tag_name("listen") && n.attribute("type") == Some("socket"))
        .and_then(|n| n.attribute("socket"));
    let path = PathBuf::from(from_listen.or_else(|| graphics.attribute("socket"))?);
    path.is_absolute().then_some(path)
}

/// Connects to the display's socket within `timeout`.
///
/// # Errors
/// [`ConsoleError::Libvirt`] when QEMU does not accept, [`ConsoleError::Timeout`].
pub async fn connect(
    server_id: &str,
    socket: &std::path::Path,
    timeout: Duration,
) -> Result<tokio::net::UnixStream, ConsoleError> {
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(socket)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(ConsoleError::Libvirt {
            action: "reach the VNC display",
            server_id: server_id.to_string(),
            message: format!("{}: {e}", socket.display()),
        }),
        Err(_) => Err(ConsoleError::Timeout {
            action: "accept a VNC connection",
            seconds: timeout.as_secs(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_read_from_the_live_xml() {
        let xml = "<domain><devices><graphics type='vnc' socket='/run/a/vnc.sock'>\
                   <listen type='socket' socket='/var/lib/libvirt/qemu/domain-1-x/vnc.sock'/>\
                   </graphics></devices></domain>";
        assert_eq!(
            socket_of(xml),
            Some(PathBuf::from("/var/lib/libvirt/qemu/domain-1-x/vnc.sock"))
        );
        let tcp = "<domain><devices><graphics type='vnc' port='5900'>\
                   <listen type='address' address='127.0.0.1'/></graphics></devices></domain>";
        assert_eq!(socket_of(tcp), None);
        assert_eq!(socket_of("<domain/>"), None);
        let relative = "<domain><graphics type='vnc'><listen type='socket' socket='x'/>\
                        </graphics></domain>";
        assert_eq!(socket_of(relative), None);
    }
}
