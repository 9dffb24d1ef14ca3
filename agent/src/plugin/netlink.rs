//! The host side of `hyperlet:network/netlink`: each call is checked against the plugin's
//! `netlink` grant ([`NetGrant`]) and only then run natively over rtnetlink
//! ([`crate::net::links::Netlink`], host namespace, no `ip` forks).
//!
//! The imports are `async` host functions: a request runs on the runtime that drives the call,
//! under the links deadline ([`crate::net::links::DEFAULT_TIMEOUT`]) and the call's own (when
//! the call runs out of time it is dropped, and the request with it).

use super::answer::cap;
use super::bindings::{network, WitLinkInfo, WitPluginError};
use super::host::HostState;
use super::net_grant::{NetGrant, NetlinkOp};
use crate::net::links::{LinkInfo, Netlink, VxlanOptions, DEFAULT_TIMEOUT};
use crate::net::NetError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long one host call may take: it makes at most three netlink requests, each under the
/// links deadline.
const CALL_DEADLINE: Duration = Duration::from_secs(3 * DEFAULT_TIMEOUT.as_secs() + 5);

/// What a host call answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetlinkReply {
    /// Done.
    Done,
    /// The name of a created link.
    Name(String),
    /// A link's state, or none.
    Info(Option<LinkInfo>),
}

/// A network backend's access to the host's links.
#[derive(Debug, Clone)]
pub struct NetlinkHost {
    plugin: Arc<str>,
    grant: NetGrant,
}

impl NetlinkHost {
    /// Access for `plugin` within `grant`.
    pub fn new(plugin: Arc<str>, grant: NetGrant) -> Self {
        Self { plugin, grant }
    }

    /// Checks `op` against the grant, then runs it.
    ///
    /// # Errors
    /// A plugin-error with code `denied`/`invalid` (refused before any request), or the
    /// request's failure mapped by [`net_error`].
    pub async fn call(&self, op: NetlinkOp) -> Result<NetlinkReply, WitPluginError> {
        if let Err(e) = self.grant.check(&op) {
            tracing::warn!(plugin = %self.plugin, error = %cap(&e.to_string()), "netlink request refused");
            return Err(WitPluginError {
                code: e.code().into(),
                message: e.to_string(),
            });
        }
        let what = op.describe();
        let reply = tokio::time::timeout(CALL_DEADLINE, execute(op))
            .await
            .map_err(|_| failed(format!("Cannot {what}: no answer within {CALL_DEADLINE:?}")))?;
        match reply {
            Ok(reply) => {
                tracing::debug!(plugin = %self.plugin, op = %what, "netlink request done");
                Ok(reply)
            }
            Err(e) => Err(net_error(&e)),
        }
    }
}

impl NetlinkHost {
    /// Checks the bridge the backend answered from `ensure-network` before the agent plugs
    /// anything into it: allowed by the grant ([`NetGrant::check_bridge_answer`]), present,
    /// and a bridge (so never a physical interface or any other kind of link). Whether it is
    /// another network's bridge is for the caller, which knows the networks.
    ///
    /// # Errors
    /// Why the answer is refused.
    pub async fn check_bridge_answer(&self, name: &str) -> Result<(), String> {
        self.grant
            .check_bridge_answer(name)
            .map_err(|e| e.to_string())?;
        match self.call(NetlinkOp::LinkInfo(name.to_owned())).await {
            Ok(NetlinkReply::Info(Some(link))) if link.kind.as_deref() == Some("bridge") => Ok(()),
            Ok(NetlinkReply::Info(Some(link))) => Err(format!(
                "{name:?} is a {} link, not a bridge",
                link.kind.as_deref().unwrap_or("plain")
            )),
            Ok(NetlinkReply::Info(None)) => Err(format!("bridge {name:?} does not exist")),
            Ok(other) => Err(format!("unexpected netlink answer {other:?}")),
            Err(e) => Err(format!("cannot read link {name:?}: {}", e.message)),
        }
    }
}

fn failed(message: String) -> WitPluginError {
    WitPluginError {
        code: "failed".into(),
        message,
    }
}

/// Runs one checked request in the host namespace.
async fn execute(op: NetlinkOp) -> Result<NetlinkReply, NetError> {
    let nl = Netlink::host().await?.with_timeout(DEFAULT_TIMEOUT);
    Ok(match op {
        NetlinkOp::CreateBridge(name) => {
            nl.create_bridge(&name).await?;
            NetlinkReply::Done
        }
        NetlinkOp::CreateVlan { parent, vid } => {
            NetlinkReply::Name(nl.create_vlan(&parent, vid).await?)
        }
        NetlinkOp::CreateVxlan { vni, options } => {
            NetlinkReply::Name(nl.create_vxlan(vni, &options).await?)
        }
        NetlinkOp::SetMaster { link, bridge } => {
            nl.set_master(&link, &bridge).await?;
            NetlinkReply::Done
        }
        NetlinkOp::SetUp(link) => {
            nl.set_up(&link).await?;
            NetlinkReply::Done
        }
        NetlinkOp::SetDown(link) => {
            nl.set_down(&link).await?;
            NetlinkReply::Done
        }
        NetlinkOp::SetMtu { link, mtu } => {
            nl.set_mtu(&link, mtu).await?;
            NetlinkReply::Done
        }
        NetlinkOp::Delete(link) => {
            nl.delete(&link).await?;
            NetlinkReply::Done
        }
        NetlinkOp::LinkInfo(link) => NetlinkReply::Info(nl.link(&link).await?),
    })
}

/// Maps a [`NetError`] to a plugin-error: `unsupported` (missing kernel support), `exists`,
/// `not-found`, `denied` (no privileges), `invalid` (bad argument) or `failed`; the message is
/// the whole error chain.
pub fn net_error(e: &NetError) -> WitPluginError {
    let code = match e {
        NetError::Unsupported { .. } => "unsupported",
        NetError::LinkExists(_) | NetError::NamespaceExists(_) => "exists",
        NetError::LinkNotFound(_) | NetError::NamespaceNotFound(_) => "not-found",
        NetError::PermissionDenied { .. } => "denied",
        NetError::InvalidName { .. } | NetError::OutOfRange { .. } => "invalid",
        _ => "failed",
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    WitPluginError {
        code: code.into(),
        message,
    }
}

fn wit_info(info: LinkInfo) -> WitLinkInfo {
    WitLinkInfo {
        index: info.index,
        name: info.name,
        kind: info.kind,
        mtu: info.mtu,
        up: info.up,
        master_index: info.master,
    }
}

impl HostState {
    /// The request under the plugin's grant; the future holds no borrow of the store's data.
    fn netlink_call(
        &self,
        op: NetlinkOp,
    ) -> impl Future<Output = Result<NetlinkReply, WitPluginError>> + Send + 'static {
        let host = self.netlink.clone();
        let plugin = self.plugin.clone();
        async move {
            match host {
                Some(host) => host.call(op).await,
                None => Err(WitPluginError {
                    code: "denied".into(),
                    message: format!(
                        "Denied: {}: plugin {plugin} has no netlink grant",
                        op.describe(),
                    ),
                }),
            }
        }
    }

    fn netlink_done(
        &self,
        op: NetlinkOp,
    ) -> impl Future<Output = Result<(), WitPluginError>> + Send + 'static {
        let call = self.netlink_call(op);
        async move { call.await.map(drop) }
    }

    fn netlink_name(
        &self,
        op: NetlinkOp,
    ) -> impl Future<Output = Result<String, WitPluginError>> + Send + 'static {
        let call = self.netlink_call(op);
        async move {
            match call.await? {
                NetlinkReply::Name(name) => Ok(name),
                other => Err(failed(format!("Unexpected netlink answer {other:?}"))),
            }
        }
    }
}

impl network::hyperlet::network::types::Host for HostState {}

impl network::hyperlet::network::netlink::Host for HostState {
    async fn create_bridge(&mut self, name: String) -> Result<(), WitPluginError> {
        self.netlink_done(NetlinkOp::CreateBridge(name)).await
    }

    async fn create_vlan(&mut self, parent: String, vid: u16) -> Result<String, WitPluginError> {
        self.netlink_name(NetlinkOp::CreateVlan { parent, vid })
            .await
    }

    async fn create_vxlan(
        &mut self,
        vni: u32,
        local: Option<String>,
        dev: Option<String>,
        port: Option<u16>,
    ) -> Result<String, WitPluginError> {
        let local = match local {
            Some(text) => Some(text.parse().map_err(|_| WitPluginError {
                code: "invalid".into(),
                message: format!(
                    "Invalid request: create VXLAN {vni}: local address {text:?} is not an IPv4 address"
                ),
            })?),
            None => None,
        };
        let options = VxlanOptions {
            local,
            dev,
            port,
            learning: true,
        };
        self.netlink_name(NetlinkOp::CreateVxlan { vni, options })
            .await
    }

    async fn set_master(&mut self, link: String, bridge: String) -> Result<(), WitPluginError> {
        self.netlink_done(NetlinkOp::SetMaster { link, bridge })
            .await
    }

    async fn set_up(&mut self, link: String) -> Result<(), WitPluginError> {
        self.netlink_done(NetlinkOp::SetUp(link)).await
    }

    async fn set_down(&mut self, link: String) -> Result<(), WitPluginError> {
        self.netlink_done(NetlinkOp::SetDown(link)).await
    }

    async fn set_mtu(&mut self, link: String, mtu: u32) -> Result<(), WitPluginError> {
        self.netlink_done(NetlinkOp::SetMtu { link, mtu }).await
    }

    async fn delete_link(&mut self, link: String) -> Result<(), WitPluginError> {
        self.netlink_done(NetlinkOp::Delete(link)).await
    }

    async fn link_info(&mut self, link: String) -> Result<Option<WitLinkInfo>, WitPluginError> {
        match self.netlink_call(NetlinkOp::LinkInfo(link)).await? {
            NetlinkReply::Info(info) => Ok(info.map(wit_info)),
            other => Err(failed(format!("Unexpected netlink answer {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetlinkGrant;

    #[test]
    fn errors_map_to_codes() {
        let e = net_error(&NetError::Unsupported {
            kind: "vlan",
            module: "8021q",
            config: "CONFIG_VLAN_8021Q",
        });
        assert_eq!(e.code, "unsupported");
        assert!(e.message.contains("8021q"), "{}", e.message);
        assert_eq!(net_error(&NetError::LinkExists("x".into())).code, "exists");
        assert_eq!(
            net_error(&NetError::LinkNotFound("x".into())).code,
            "not-found"
        );
        assert_eq!(
            net_error(&NetError::PermissionDenied { op: "x".into() }).code,
            "denied"
        );
        let e = net_error(&NetError::Timeout {
            op: "create bridge x".into(),
            after: Duration::from_secs(1),
        });
        assert_eq!(e.code, "failed");
    }

    #[tokio::test]
    async fn refused_calls_never_reach_netlink() {
        let host = NetlinkHost::new(Arc::from("p"), NetGrant::new(NetlinkGrant::default()));
        let e = host
            .call(NetlinkOp::Delete("eth0".into()))
            .await
            .unwrap_err();
        assert_eq!(e.code, "denied");
        assert!(e.message.contains("netlink.name_prefixes"), "{}", e.message);
    }
}
