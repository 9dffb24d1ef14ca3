//! Live migration of a domain to another node's libvirtd (managed peer-to-peer).
//!
//! `virDomainMigrateToURI3` blocks for as long as the migration runs (minutes), so it never
//! runs on the agent's libvirt workers: [`Libvirt::migrate`] gives it its own OS thread and
//! its own connection, one per migration (the caller bounds how many run at once). The job is
//! watched, tuned and ended from the workers with short calls ([`Libvirt::migration_progress`],
//! [`Libvirt::set_max_downtime`], [`Libvirt::abort_job`], [`Libvirt::start_post_copy`]); an
//! aborted job makes the migrating thread return, so no thread outlives its migration for long.

use super::libvirt::Libvirt;
use super::ComputeError;
use serde::Serialize;
use virt::domain::{Domain, MigrateParameters};
use virt::sys;

/// What to migrate where.
#[derive(Debug, Clone)]
pub struct MigrationPlan {
    /// The domain's name (the same on both nodes).
    pub domain: String,
    /// The destination libvirtd (`qemu+tls://host/system`).
    pub dest_uri: String,
    /// Where QEMU sends the memory (and the disks' NBD stream): `tcp://<dest address>`.
    pub data_uri: String,
    /// The domain's definition on the destination (its own paths).
    pub dest_xml: String,
    /// Disk targets to copy (local disks; empty: shared storage only).
    pub copy_disks: Vec<String>,
    /// Keep the guest running while its memory is copied.
    pub live: bool,
    /// Allow a later switch to post-copy.
    pub post_copy: bool,
}

/// A running migration's figures (`GET /v1/servers/{id}` `migration`, `server.migration`
/// events).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MigrationProgress {
    /// Memory still to send, bytes.
    pub memory_remaining_bytes: u64,
    /// Guest memory, bytes.
    pub memory_total_bytes: u64,
    /// Disk data still to copy, bytes.
    pub disk_remaining_bytes: u64,
    /// Disk data to copy, bytes.
    pub disk_total_bytes: u64,
    /// Passes over memory so far.
    pub iteration: u64,
    /// The pause the guest would see if the migration ended now, ms (QEMU's estimate).
    pub expected_downtime_ms: u64,
    /// Seconds since the job started.
    pub elapsed_ms: u64,
}

fn libvirt_error(call: &'static str, e: &virt::error::Error) -> ComputeError {
    ComputeError::Libvirt {
        call,
        message: e.to_string(),
    }
}

impl Libvirt {
    /// Migrates per `plan` on a thread of its own with a connection of its own; resolves when
    /// libvirt returns (done, failed or aborted). On success the domain runs (and is defined)
    /// on the destination and is gone from here.
    ///
    /// # Errors
    /// [`ComputeError::Libvirt`] with libvirt's reason when the migration fails or is aborted.
    pub async fn migrate(&self, plan: MigrationPlan) -> Result<(), ComputeError> {
        let uri = self.uri().to_string();
        let (done, answer) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("migrate-{}", plan.domain))
            .spawn(move || {
                let _ = done.send(migrate_blocking(&uri, &plan));
            });
        if let Err(e) = spawned {
            return Err(ComputeError::Libvirt {
                call: "virDomainMigrateToURI3",
                message: format!("cannot start a migration thread: {e}"),
            });
        }
        answer.await.unwrap_or_else(|_| {
            Err(ComputeError::Libvirt {
                call: "virDomainMigrateToURI3",
                message: "the migration thread ended without an answer".into(),
            })
        })
    }

    /// The figures of the domain's running job, or `None` when no job runs.
    ///
    /// # Errors
    /// As [`Libvirt::with_connection`].
    pub async fn migration_progress(
        &self,
        domain: &str,
    ) -> Result<Option<MigrationProgress>, ComputeError> {
        let name = domain.to_string();
        self.with_connection("virDomainGetJobStats", move |conn| {
            let dom = Domain::lookup_by_name(conn, &name)?;
            let stats = dom.get_job_stats(0)?;
            if stats.r#type == sys::VIR_DOMAIN_JOB_NONE as i32 {
                return Ok(None);
            }
            Ok(Some(MigrationProgress {
                memory_remaining_bytes: stats.mem_remaining.unwrap_or(0),
                memory_total_bytes: stats.mem_total.unwrap_or(0),
                disk_remaining_bytes: stats.disk_remaining.unwrap_or(0),
                disk_total_bytes: stats.disk_total.unwrap_or(0),
                iteration: stats.mem_iteration.unwrap_or(0),
                expected_downtime_ms: stats.downtime.unwrap_or(0),
                elapsed_ms: stats.time_elapsed.unwrap_or(0),
            }))
        })
        .await
    }

    /// Sets the longest pause the running migration may end with.
    ///
    /// # Errors
    /// As [`Libvirt::with_connection`].
    pub async fn set_max_downtime(&self, domain: &str, ms: u64) -> Result<(), ComputeError> {
        let name = domain.to_string();
        self.with_connection("virDomainMigrateSetMaxDowntime", move |conn| {
            Domain::lookup_by_name(conn, &name)?.migrate_set_max_downtime(ms, 0)?;
            Ok(())
        })
        .await
    }

    /// Aborts the domain's running job (a migration rolls back: the guest keeps running
    /// here).
    ///
    /// # Errors
    /// As [`Libvirt::with_connection`].
    pub async fn abort_job(&self, domain: &str) -> Result<(), ComputeError> {
        let name = domain.to_string();
        self.with_connection("virDomainAbortJob", move |conn| {
            let dom = Domain::lookup_by_name(conn, &name)?;
            // SAFETY: `dom` is a valid domain handle for the duration of the call.
            if unsafe { sys::virDomainAbortJob(dom.as_ptr()) } < 0 {
                return Err(virt::error::Error::last_error());
            }
            Ok(())
        })
        .await
    }

    /// Switches a migration started with post-copy allowed to post-copy.
    ///
    /// # Errors
    /// As [`Libvirt::with_connection`].
    pub async fn start_post_copy(&self, domain: &str) -> Result<(), ComputeError> {
        let name = domain.to_string();
        self.with_connection("virDomainMigrateStartPostCopy", move |conn| {
            let dom = Domain::lookup_by_name(conn, &name)?;
            // SAFETY: `dom` is a valid domain handle for the duration of the call.
            if unsafe { sys::virDomainMigrateStartPostCopy(dom.as_ptr(), 0) } < 0 {
                return Err(virt::error::Error::last_error());
            }
            Ok(())
        })
        .await
    }
}

/// The flags of a plan: peer-to-peer, persistent on the destination, undefined here, with
/// auto-converge for live ones and an incremental copy of the local disks (their backing
/// images are already on the destination).
fn flags(plan: &MigrationPlan) -> u32 {
    let mut flags = sys::VIR_MIGRATE_PEER2PEER
        | sys::VIR_MIGRATE_PERSIST_DEST
        | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
    if plan.live {
        flags |= sys::VIR_MIGRATE_LIVE | sys::VIR_MIGRATE_AUTO_CONVERGE;
    }
    if !plan.copy_disks.is_empty() {
        flags |= sys::VIR_MIGRATE_NON_SHARED_INC;
    }
    if plan.post_copy {
        flags |= sys::VIR_MIGRATE_POSTCOPY;
    }
    flags
}

fn migrate_blocking(uri: &str, plan: &MigrationPlan) -> Result<(), ComputeError> {
    let call = "virDomainMigrateToURI3";
    let conn =
        virt::connect::Connect::open(Some(uri)).map_err(|e| libvirt_error("virConnectOpen", &e))?;
    let result = (|| {
        let dom = Domain::lookup_by_name(&conn, &plan.domain)
            .map_err(|e| libvirt_error("virDomainLookupByName", &e))?;
        let params = MigrateParameters {
            dest_xml: Some(plan.dest_xml.clone()),
            persist_xml: Some(plan.dest_xml.clone()),
            uri: Some(plan.data_uri.clone()),
            migrate_disks: plan.copy_disks.clone(),
            ..MigrateParameters::default()
        };
        dom.migrate_to_uri3(Some(&plan.dest_uri), params, flags(plan))
            .map_err(|e| libvirt_error(call, &e))
    })();
    let mut conn = conn;
    let _ = conn.close();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_plan() {
        let mut plan = MigrationPlan {
            domain: "d".into(),
            dest_uri: "qemu+tcp://b/system".into(),
            data_uri: "tcp://b".into(),
            dest_xml: String::new(),
            copy_disks: vec!["vda".into()],
            live: true,
            post_copy: false,
        };
        let f = flags(&plan);
        assert_ne!(f & sys::VIR_MIGRATE_LIVE, 0);
        assert_ne!(f & sys::VIR_MIGRATE_NON_SHARED_INC, 0);
        assert_eq!(f & sys::VIR_MIGRATE_POSTCOPY, 0);
        plan.live = false;
        plan.copy_disks.clear();
        let f = flags(&plan);
        assert_eq!(
            f & (sys::VIR_MIGRATE_LIVE | sys::VIR_MIGRATE_NON_SHARED_INC),
            0
        );
        assert_ne!(f & sys::VIR_MIGRATE_UNDEFINE_SOURCE, 0);
    }
}
