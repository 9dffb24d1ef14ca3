//! Calls into the volume driver plugins, each under the plugin's call deadline, with their
//! errors mapped to what the caller did wrong (400/409) or what failed (502).

use crate::ops::{OpError, Services};
use crate::plugin::{LoadedPlugin, PluginError};
use std::future::Future;
use std::sync::Arc;

/// The loaded driver of `backend`.
///
/// # Errors
/// [`OpError::Plugin`] when the backend's driver is not loaded.
pub fn plugin(services: &Services, backend: &str) -> Result<Arc<LoadedPlugin>, OpError> {
    services
        .plugins()
        .volume_driver(backend)
        .map_err(|e| OpError::Plugin(Box::new(e)))
}

/// Runs a driver call `f` on the backend's driver; `in-use` and `no-space` become 409,
/// `invalid` 400.
///
/// # Errors
/// As described; anything else is [`OpError::Plugin`].
pub async fn call<T, F>(
    services: &Services,
    backend: &str,
    f: impl FnOnce(Arc<LoadedPlugin>) -> F,
) -> Result<T, OpError>
where
    F: Future<Output = Result<T, PluginError>>,
{
    let plugin = plugin(services, backend)?;
    f(plugin).await.map_err(map_error)
}

/// Maps a driver's error to the API's.
pub fn map_error(e: PluginError) -> OpError {
    match e {
        PluginError::Reported {
            plugin,
            code,
            message,
        } => match code.as_str() {
            "in-use" | "no-space" => OpError::Conflict(format!("backend {plugin}: {message}")),
            "invalid" => OpError::InvalidInput(format!("backend {plugin}: {message}")),
            _ => OpError::Plugin(Box::new(PluginError::Reported {
                plugin,
                code,
                message,
            })),
        },
        other => OpError::Plugin(Box::new(other)),
    }
}
