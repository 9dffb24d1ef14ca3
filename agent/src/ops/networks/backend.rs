//! Calls into the network backend plugins, each under the plugin's call deadline.

use crate::net::BackendNetwork;
use crate::ops::{OpError, Services};
use crate::plugin::{LoadedPlugin, PluginError};
use std::sync::Arc;

/// The configured network backend named `name`, or the only one when `name` is `None`.
///
/// # Errors
/// [`OpError::UnknownReference`] (404) for an unknown backend; [`OpError::Conflict`] (409)
/// when none is named and the number of configured backends is not exactly one.
pub fn resolve(services: &Services, name: Option<&str>) -> Result<String, OpError> {
    let names = services.plugins().network_backend_names();
    match name {
        Some(n) if names.iter().any(|b| b == n) => Ok(n.to_string()),
        Some(n) => Err(OpError::unknown_among(
            "backend",
            n,
            "network backend",
            &names,
        )),
        None => match names.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(OpError::Conflict(
                "no network backend is configured: add a plugin with kind = \"network-backend\" to the agent config".into(),
            )),
            _ => Err(OpError::Conflict(format!(
                "several network backends are configured ({}): name one in `backend`",
                list(&names)
            ))),
        },
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn plugin(services: &Services, name: &str) -> Result<Arc<LoadedPlugin>, OpError> {
    services
        .plugins()
        .network_backend(name)
        .map_err(|e| OpError::Plugin(Box::new(e)))
}

fn failed(e: PluginError) -> OpError {
    OpError::Plugin(Box::new(e))
}

/// Asks the backend whether it can serve the network; its refusal becomes a 400.
///
/// # Errors
/// [`OpError::InvalidInput`] with the backend's reason; [`OpError::Plugin`] when it failed.
pub async fn validate(
    services: &Services,
    backend: &str,
    net: &BackendNetwork,
) -> Result<(), OpError> {
    let plugin = plugin(services, backend)?;
    match plugin.validate_network(net).await {
        Err(PluginError::Reported {
            plugin, message, ..
        }) => Err(OpError::InvalidInput(format!(
            "network backend {plugin} refuses the network: {message}"
        ))),
        other => other.map_err(failed),
    }
}

/// Sets the network up on the host; returns the bridge guests plug into. The backend's
/// answer is checked against its grant by the plugin host (a granted prefix, an existing
/// bridge); here, that it is no other network's bridge.
///
/// # Errors
/// [`OpError::Plugin`] when the backend fails or answers another network's bridge.
pub async fn ensure(
    services: &Services,
    backend: &str,
    net: &BackendNetwork,
) -> Result<String, OpError> {
    let plugin = plugin(services, backend)?;
    let bridge = plugin.ensure_network(net).await.map_err(failed)?;
    let networks = services.store().list_networks().await?;
    if let Some(other) = networks
        .iter()
        .find(|n| n.id != net.id && n.bridge.as_deref() == Some(bridge.as_str()))
    {
        let e = PluginError::BadAnswer {
            plugin: backend.to_owned(),
            reason: format!(
                "bridge {bridge:?} belongs to network {}, not to network {}",
                other.id, net.id
            ),
        };
        tracing::warn!(plugin = %backend, error = %e, "plugin answer refused");
        return Err(OpError::Plugin(Box::new(e)));
    }
    Ok(bridge)
}

/// Removes the network from the host.
///
/// # Errors
/// [`OpError::Plugin`] when the backend fails.
pub async fn delete(
    services: &Services,
    backend: &str,
    net: &BackendNetwork,
) -> Result<(), OpError> {
    let plugin = plugin(services, backend)?;
    plugin.delete_network(net).await.map_err(failed)
}
