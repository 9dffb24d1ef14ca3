//! libvirt access with a deadline on every call.
//!
//! libvirt's C API blocks. Each call runs on a blocking thread and the caller waits at most the
//! configured deadline; a call that overruns is reported as [`ComputeError::Timeout`] and its
//! thread is left to finish on its own, so a hung libvirtd or QEMU never hangs the agent.

use super::ComputeError;
use serde::Serialize;
use std::time::Duration;
use virt::connect::Connect;

/// Versions reported by libvirt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HypervisorInfo {
    /// Hypervisor driver name, e.g. `QEMU`.
    pub hypervisor_type: String,
    /// Version of the hypervisor (QEMU), `major.minor.release`; absent until libvirt has
    /// answered the (slow) version query.
    pub hypervisor_version: Option<String>,
    /// Version of libvirt, `major.minor.release`.
    pub libvirt_version: String,
}

/// A libvirt endpoint with a per-call deadline.
#[derive(Debug, Clone)]
pub struct Libvirt {
    uri: String,
    timeout: Duration,
    lifecycle_timeout: Duration,
}

impl Libvirt {
    /// An endpoint at `uri` (e.g. `qemu:///system`) whose queries time out after `timeout`
    /// and whose lifecycle calls (define, start, destroy, save…) after `lifecycle_timeout`.
    pub fn new(uri: impl Into<String>, timeout: Duration, lifecycle_timeout: Duration) -> Self {
        Self {
            uri: uri.into(),
            timeout,
            lifecycle_timeout,
        }
    }

    /// The same endpoint with the lifecycle deadline for every call: starting or saving a
    /// domain legitimately takes longer than a query, above all on a loaded host.
    pub fn lifecycle(&self) -> Self {
        Self {
            timeout: self.lifecycle_timeout,
            ..self.clone()
        }
    }

    /// Runs `f` on a fresh connection on a blocking thread, within the deadline.
    ///
    /// # Errors
    /// [`ComputeError::Libvirt`] when connecting or `f` fails, [`ComputeError::Timeout`] when
    /// the deadline passes first.
    pub async fn with_connection<R, F>(&self, call: &'static str, f: F) -> Result<R, ComputeError>
    where
        R: Send + 'static,
        F: FnOnce(&Connect) -> Result<R, virt::error::Error> + Send + 'static,
    {
        let uri = self.uri.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = Connect::open(Some(&uri)).map_err(|e| ComputeError::Libvirt {
                call: "virConnectOpen",
                message: e.to_string(),
            })?;
            let result = f(&conn).map_err(|e| ComputeError::Libvirt {
                call,
                message: e.to_string(),
            });
            // virt 0.4 does not close connections on drop.
            let _ = conn.close();
            result
        });
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(ComputeError::Libvirt {
                call,
                message: format!("worker thread failed: {join}"),
            }),
            Err(_) => Err(ComputeError::Timeout {
                call,
                seconds: self.timeout.as_secs(),
            }),
        }
    }

    /// A cheap liveness check: the driver name and libvirt's version (no hypervisor probe).
    ///
    /// # Errors
    /// As [`Libvirt::with_connection`].
    pub async fn ping(&self) -> Result<HypervisorInfo, ComputeError> {
        self.with_connection("virConnectGetLibVersion", |conn| {
            Ok(HypervisorInfo {
                hypervisor_type: conn.get_type()?,
                hypervisor_version: None,
                libvirt_version: version_text(conn.get_lib_version()?),
            })
        })
        .await
    }

    /// The hypervisor's (QEMU's) version. libvirt may probe QEMU's capabilities to answer,
    /// which takes seconds (every time on hosts where `/dev/kvm` exists but KVM cannot run), so
    /// this call gets its own, longer deadline.
    ///
    /// # Errors
    /// As [`Libvirt::with_connection`].
    pub async fn hypervisor_version(&self, deadline: Duration) -> Result<String, ComputeError> {
        let slow = Self {
            timeout: deadline,
            ..self.clone()
        };
        slow.with_connection("virConnectGetVersion", |conn| {
            Ok(version_text(conn.get_hyp_version()?))
        })
        .await
    }
}

/// libvirt encodes versions as `major * 1_000_000 + minor * 1_000 + release`.
fn version_text(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_decoded() {
        assert_eq!(version_text(9_000_000), "9.0.0");
        assert_eq!(version_text(7_002_022), "7.2.22");
    }
}
