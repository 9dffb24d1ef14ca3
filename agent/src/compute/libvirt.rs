//! libvirt access with a deadline on every call.
//!
//! libvirt's C API blocks. Each call runs on one of the agent's libvirt workers
//! ([`WorkerPool`]: a fixed number of OS threads, never tokio's blocking pool) over that
//! worker's long-lived connection (see `connection.rs`: reopened when it breaks). The caller
//! waits at most the call's deadline — for a free worker, then for the answer. A call that overruns is reported as [`ComputeError::Timeout`] and its worker stays
//! occupied until libvirt answers; when all workers are occupied, calls fail with
//! [`ComputeError::Busy`]. So a hung libvirtd or QEMU never hangs the agent and never grows
//! its thread count.

use super::connection::with_thread_connection;
use super::pool::{PoolError, WorkerPool};
use super::ComputeError;
use serde::Serialize;
use std::sync::Arc;
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

/// What every handle on one libvirt endpoint shares.
#[derive(Debug)]
struct Endpoint {
    uri: String,
    workers: WorkerPool,
    /// Held (by the worker) while a domain listing runs: listings are single-flight.
    listing: Arc<tokio::sync::Mutex<()>>,
}

/// A libvirt endpoint with a per-call deadline. Cheap to clone; clones share the workers and
/// the connection.
#[derive(Debug, Clone)]
pub struct Libvirt {
    endpoint: Arc<Endpoint>,
    timeout: Duration,
    lifecycle_timeout: Duration,
}

impl Libvirt {
    /// An endpoint at `uri` (e.g. `qemu:///system`) served by `workers` threads, whose
    /// queries time out after `timeout` and whose lifecycle calls (define, start, destroy,
    /// save…) after `lifecycle_timeout`. Starts the worker threads; each connects on first
    /// use.
    pub fn new(
        uri: impl Into<String>,
        workers: usize,
        timeout: Duration,
        lifecycle_timeout: Duration,
    ) -> Self {
        Self {
            endpoint: Arc::new(Endpoint {
                uri: uri.into(),
                workers: WorkerPool::new(workers, "libvirt"),
                listing: Arc::default(),
            }),
            timeout,
            lifecycle_timeout,
        }
    }

    /// The libvirt URI this handle connects to.
    pub fn uri(&self) -> &str {
        &self.endpoint.uri
    }

    /// The deadline of this handle's calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Workers not busy with a call right now (for diagnostics and tests).
    pub fn idle_workers(&self) -> usize {
        self.endpoint.workers.idle()
    }

    /// The lock a domain listing holds while it runs (see [`Libvirt::list_ours`]).
    pub(super) fn listing_lock(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.endpoint.listing.clone()
    }

    /// Whether a domain listing is still running (perhaps one whose caller gave up).
    pub fn listing_in_flight(&self) -> bool {
        self.endpoint.listing.try_lock().is_err()
    }

    /// The same endpoint with the lifecycle deadline for every call: starting or saving a
    /// domain legitimately takes longer than a query, above all on a loaded host.
    pub fn lifecycle(&self) -> Self {
        Self {
            timeout: self.lifecycle_timeout,
            ..self.clone()
        }
    }

    /// Runs `f` on a libvirt worker with its connection, within the deadline.
    ///
    /// # Errors
    /// [`ComputeError::Libvirt`] when connecting or `f` fails, [`ComputeError::Busy`] when no
    /// worker became free in time, [`ComputeError::Timeout`] when `f` overran the deadline.
    pub async fn with_connection<R, F>(&self, call: &'static str, f: F) -> Result<R, ComputeError>
    where
        R: Send + 'static,
        F: FnOnce(&Connect) -> Result<R, virt::error::Error> + Send + 'static,
    {
        let endpoint = self.endpoint.clone();
        let work = move || {
            with_thread_connection(&endpoint.uri, f)
                .map_err(|e| ComputeError::Libvirt {
                    call: "virConnectOpen",
                    message: e.to_string(),
                })?
                .map_err(|e| ComputeError::Libvirt {
                    call,
                    message: e.to_string(),
                })
        };
        let seconds = self.timeout.as_secs();
        match self.endpoint.workers.run(self.timeout, work).await {
            Ok(result) => result,
            Err(PoolError::Busy { workers }) => Err(ComputeError::Busy {
                call,
                workers,
                seconds,
            }),
            Err(PoolError::Overrun) => Err(ComputeError::Timeout { call, seconds }),
            Err(PoolError::Panicked(message)) => Err(ComputeError::Libvirt {
                call,
                message: format!("worker failed: {message}"),
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
