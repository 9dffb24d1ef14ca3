//! The host side of `hyperlet:volume`'s `lvm`, `files` and `qemu-img` imports: each call is
//! checked and run by [`crate::volume`] ([`Lvm`], [`Files`], [`QemuImg`]) within the plugin's
//! grants (`[plugins.lvm]`, `[plugins.files]`).
//!
//! The imports are `async` host functions: the host work (tools under tokio with deadlines, the
//! NFS client) runs on the runtime that drives the call. Every tool and NFS operation of a call
//! gets at most what is left of the call's deadline, and when the call runs out of time it is
//! dropped, and the host work with it (a tool is killed when its handle is dropped).

use super::answer::cap;
use super::bindings::volume::hyperlet::volume as wit;
use super::bindings::WitPluginError;
use super::host::HostState;
use crate::config::PluginConfig;
use crate::volume::{
    check_connection, DiskFormat, Files, Lvm, QemuImg, VolumeConnection, VolumeError, VolumeRef,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Extra time a request may take beyond what is left of the call's deadline.
const MARGIN: Duration = Duration::from_secs(5);

/// How long checking a driver's answer may take (an `lvs`, an NFS lookup).
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// A volume driver's access to the host, as its grants allow.
#[derive(Debug)]
pub struct VolumeHost {
    plugin: Arc<str>,
    lvm: Option<Lvm>,
    files: Option<Files>,
    qemu_img: bool,
}

fn plugin_error(e: &VolumeError) -> WitPluginError {
    WitPluginError {
        code: e.code().into(),
        message: crate::api::error::chain(e),
    }
}

fn failed(message: String) -> WitPluginError {
    WitPluginError {
        code: "failed".into(),
        message,
    }
}

fn denied(plugin: &str, grant: &str, what: &str) -> WitPluginError {
    WitPluginError {
        code: "denied".into(),
        message: format!("Denied: {what}: plugin {plugin} has no {grant} grant"),
    }
}

fn format_of(f: wit::types::DiskFormat) -> DiskFormat {
    match f {
        wit::types::DiskFormat::Raw => DiskFormat::Raw,
        wit::types::DiskFormat::Qcow2 => DiskFormat::Qcow2,
    }
}

impl VolumeHost {
    /// The host access of a volume driver configured as `config`: `lvm` when granted (with its
    /// table), `files` and `qemu-img` when granted (with `[plugins.files]`).
    ///
    /// # Errors
    /// A message naming the grant parameter that cannot be used.
    pub fn new(plugin: Arc<str>, config: &PluginConfig) -> Result<Self, String> {
        let granted = |g: &str| config.grants.iter().any(|x| x == g);
        let lvm = match (&config.lvm, granted("lvm")) {
            (Some(grant), true) => {
                let mut lvm = Lvm::new(grant.volume_groups.iter().cloned())
                    .map_err(|e| format!("lvm.volume_groups: {e}"))?
                    .with_deadline(Duration::from_secs(grant.command_timeout_secs));
                if let Some(dir) = &grant.lvm_system_dir {
                    lvm = lvm.with_system_dir(dir);
                }
                Some(lvm)
            }
            _ => None,
        };
        let files = match (&config.files, granted("files") || granted("qemu-img")) {
            (Some(grant), true) => {
                Some(Files::new(grant).map_err(|e| format!("[plugins.files]: {e}"))?)
            }
            _ => None,
        };
        Ok(Self {
            plugin,
            lvm,
            files,
            qemu_img: granted("qemu-img"),
        })
    }

    /// Checks a connection the driver answered for `volume` against its grants
    /// ([`check_connection`]: LVs of its volume groups, its volume's files in its shares),
    /// under a deadline of its own.
    ///
    /// # Errors
    /// Why the answer is refused (the error chain).
    pub async fn check_connection(
        &self,
        volume: &VolumeRef,
        answer: &VolumeConnection,
    ) -> Result<(), String> {
        let deadline = Instant::now() + ANSWER_DEADLINE;
        let lvm = self.lvm.clone().map(|l| {
            let limit = l.deadline().min(ANSWER_DEADLINE);
            l.with_deadline(limit)
        });
        let files = self.files.clone().map(|f| {
            let limit = f.deadline().min(ANSWER_DEADLINE);
            f.with_deadline(limit)
        });
        let (volume, answer) = (volume.clone(), answer.clone());
        self.run("check the connection", deadline, async move {
            check_connection(lvm.as_ref(), files.as_ref(), &volume, &answer).await
        })
        .await
        .map(drop)
        .map_err(|e| e.message)
    }

    /// Runs `work` until `deadline` (+ a margin) at most.
    async fn run<T>(
        &self,
        what: &str,
        deadline: Instant,
        work: impl Future<Output = Result<T, VolumeError>>,
    ) -> Result<T, WitPluginError> {
        let wait = deadline.saturating_duration_since(Instant::now()) + MARGIN;
        let answer = tokio::time::timeout(wait, work)
            .await
            .map_err(|_| failed(format!("Cannot {what}: no answer within {wait:?}")))?;
        answer.map_err(|e| {
            if e.code() == "denied" {
                tracing::warn!(plugin = %self.plugin, error = %cap(&e.to_string()), "volume host call refused");
            }
            plugin_error(&e)
        })
    }

    fn lvm(&self, deadline: Instant, what: &str) -> Result<Lvm, WitPluginError> {
        let lvm = self
            .lvm
            .clone()
            .ok_or_else(|| denied(&self.plugin, "lvm", what))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let command = lvm.deadline().min(left);
        Ok(lvm.with_deadline(command).with_copy_deadline(left))
    }

    fn files(&self, deadline: Instant, what: &str) -> Result<Files, WitPluginError> {
        let files = self
            .files
            .clone()
            .ok_or_else(|| denied(&self.plugin, "files", what))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = files.deadline().min(left);
        Ok(files.with_deadline(limit))
    }

    fn qemu(&self, deadline: Instant, what: &str) -> Result<QemuImg, WitPluginError> {
        if !self.qemu_img {
            return Err(denied(&self.plugin, "qemu-img", what));
        }
        Ok(QemuImg::new(self.files(deadline, what)?))
    }
}

impl HostState {
    fn volume(&self, what: &str) -> Result<(Arc<VolumeHost>, Instant), WitPluginError> {
        let host = self.volume.clone().ok_or_else(|| WitPluginError {
            code: "denied".into(),
            message: format!(
                "Denied: {what}: plugin {} is not a volume driver with host grants",
                self.plugin
            ),
        })?;
        let deadline = self
            .call_deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        Ok((host, deadline))
    }
}

impl wit::types::Host for HostState {}

impl wit::lvm::Host for HostState {
    async fn vg_info(&mut self, vg: String) -> Result<wit::lvm::VgStats, WitPluginError> {
        let what = format!("read VG {vg}");
        let (host, deadline) = self.volume(&what)?;
        let lvm = host.lvm(deadline, &what)?;
        let info = host
            .run(&what, deadline, async move { lvm.vg_info(&vg).await })
            .await?;
        Ok(wit::lvm::VgStats {
            size_bytes: info.size_bytes,
            free_bytes: info.free_bytes,
            lv_count: info.lv_count,
        })
    }

    async fn thin_pool_info(
        &mut self,
        vg: String,
        pool: String,
    ) -> Result<Option<wit::lvm::ThinPoolStats>, WitPluginError> {
        let what = format!("read thin pool {vg}/{pool}");
        let (host, deadline) = self.volume(&what)?;
        let lvm = host.lvm(deadline, &what)?;
        let info = host
            .run(&what, deadline, async move {
                lvm.thin_pool_info(&vg, &pool).await
            })
            .await?;
        Ok(info.map(|i| wit::lvm::ThinPoolStats {
            size_bytes: i.size_bytes,
            used_bytes: i.used_bytes,
        }))
    }

    async fn lv_create(
        &mut self,
        request: wit::lvm::LvCreateRequest,
    ) -> Result<(), WitPluginError> {
        let what = format!("create LV {}/{}", request.vg, request.name);
        let (host, deadline) = self.volume(&what)?;
        let lvm = host.lvm(deadline, &what)?;
        host.run(&what, deadline, async move {
            lvm.lv_create(
                &request.vg,
                &request.name,
                request.size_gb,
                request.thin_pool.as_deref(),
            )
            .await
        })
        .await
    }

    async fn lv_extend(
        &mut self,
        vg: String,
        name: String,
        new_size_gb: u64,
    ) -> Result<(), WitPluginError> {
        let what = format!("extend LV {vg}/{name}");
        let (host, deadline) = self.volume(&what)?;
        let lvm = host.lvm(deadline, &what)?;
        host.run(&what, deadline, async move {
            lvm.lv_extend(&vg, &name, new_size_gb).await
        })
        .await
    }

    async fn lv_remove(&mut self, vg: String, name: String) -> Result<(), WitPluginError> {
        let what = format!("remove LV {vg}/{name}");
        let (host, deadline) = self.volume(&what)?;
        let lvm = host.lvm(deadline, &what)?;
        host.run(
            &what,
            deadline,
            async move { lvm.lv_remove(&vg, &name).await },
        )
        .await
    }

    async fn lv_snapshot(
        &mut self,
        vg: String,
        origin: String,
        snapshot_name: String,
        size_gb: Option<u64>,
    ) -> Result<(), WitPluginError> {
        let what = format!("snapshot LV {vg}/{origin}");
        let (host, deadline) = self.volume(&what)?;
        let lvm = host.lvm(deadline, &what)?;
        host.run(&what, deadline, async move {
            lvm.lv_snapshot(&vg, &origin, &snapshot_name, size_gb).await
        })
        .await
    }

    async fn lv_copy(
        &mut self,
        vg: String,
        source: String,
        target: String,
    ) -> Result<(), WitPluginError> {
        let what = format!("copy LV {vg}/{source} to {target}");
        let (host, deadline) = self.volume(&what)?;
        let lvm = host.lvm(deadline, &what)?;
        host.run(&what, deadline, async move {
            lvm.lv_copy(&vg, &source, &target).await
        })
        .await
    }

    async fn lv_list(&mut self, vg: String) -> Result<Vec<wit::lvm::Lv>, WitPluginError> {
        let what = format!("list LVs of {vg}");
        let (host, deadline) = self.volume(&what)?;
        let lvm = host.lvm(deadline, &what)?;
        let lvs = host
            .run(&what, deadline, async move { lvm.lv_list(&vg).await })
            .await?;
        Ok(lvs
            .into_iter()
            .map(|lv| wit::lvm::Lv {
                name: lv.name,
                size_bytes: lv.size_bytes,
                origin: lv.origin,
            })
            .collect())
    }
}

impl wit::files::Host for HostState {
    async fn create_sparse(
        &mut self,
        share: String,
        name: String,
        size_bytes: u64,
    ) -> Result<(), WitPluginError> {
        let what = format!("create {name} on {share}");
        let (host, deadline) = self.volume(&what)?;
        let files = host.files(deadline, &what)?;
        host.run(&what, deadline, async move {
            files.create_sparse(&share, &name, size_bytes).await
        })
        .await
    }

    async fn remove(&mut self, share: String, name: String) -> Result<(), WitPluginError> {
        let what = format!("remove {name} from {share}");
        let (host, deadline) = self.volume(&what)?;
        let files = host.files(deadline, &what)?;
        host.run(
            &what,
            deadline,
            async move { files.remove(&share, &name).await },
        )
        .await
    }

    async fn stat(
        &mut self,
        share: String,
        name: String,
    ) -> Result<Option<wit::files::FileStat>, WitPluginError> {
        let what = format!("stat {name} on {share}");
        let (host, deadline) = self.volume(&what)?;
        let files = host.files(deadline, &what)?;
        let stat = host
            .run(
                &what,
                deadline,
                async move { files.stat(&share, &name).await },
            )
            .await?;
        Ok(stat.map(|s| wit::files::FileStat {
            size_bytes: s.size_bytes,
            allocated_bytes: s.allocated_bytes,
        }))
    }

    async fn write_info_file(
        &mut self,
        share: String,
        name: String,
        contents: String,
    ) -> Result<(), WitPluginError> {
        let what = format!("write {name} on {share}");
        let (host, deadline) = self.volume(&what)?;
        let files = host.files(deadline, &what)?;
        host.run(&what, deadline, async move {
            files.write_info_file(&share, &name, &contents).await
        })
        .await
    }

    async fn read_info_file(
        &mut self,
        share: String,
        name: String,
    ) -> Result<Option<String>, WitPluginError> {
        let what = format!("read {name} on {share}");
        let (host, deadline) = self.volume(&what)?;
        let files = host.files(deadline, &what)?;
        host.run(&what, deadline, async move {
            files.read_info_file(&share, &name).await
        })
        .await
    }

    async fn share_info(
        &mut self,
        share: String,
    ) -> Result<wit::files::ShareStats, WitPluginError> {
        let what = format!("measure share {share}");
        let (host, deadline) = self.volume(&what)?;
        let files = host.files(deadline, &what)?;
        let stats = host
            .run(
                &what,
                deadline,
                async move { files.share_info(&share).await },
            )
            .await?;
        Ok(wit::files::ShareStats {
            total_bytes: stats.total_bytes,
            available_bytes: stats.available_bytes,
            allocated_bytes: stats.allocated_bytes,
        })
    }
}

impl wit::qemu_img::Host for HostState {
    async fn create(
        &mut self,
        share: String,
        name: String,
        format: wit::types::DiskFormat,
        size_gb: u64,
        backing: Option<wit::qemu_img::BackingFile>,
    ) -> Result<(), WitPluginError> {
        let what = format!("create image {name} on {share}");
        let (host, deadline) = self.volume(&what)?;
        let q = host.qemu(deadline, &what)?;
        host.run(&what, deadline, async move {
            let backing = backing.map(|b| (b.name, format_of(b.format)));
            q.create(
                &share,
                &name,
                format_of(format),
                size_gb,
                backing.as_ref().map(|(n, f)| (n.as_str(), *f)),
            )
            .await
        })
        .await
    }

    async fn convert(
        &mut self,
        share: String,
        source: String,
        source_format: wit::types::DiskFormat,
        target: String,
        format: wit::types::DiskFormat,
    ) -> Result<(), WitPluginError> {
        let what = format!("convert {source} to {target} on {share}");
        let (host, deadline) = self.volume(&what)?;
        let q = host.qemu(deadline, &what)?;
        host.run(&what, deadline, async move {
            q.convert(
                &share,
                &source,
                format_of(source_format),
                &target,
                format_of(format),
            )
            .await
        })
        .await
    }

    async fn info(
        &mut self,
        share: String,
        name: String,
        format: Option<wit::types::DiskFormat>,
    ) -> Result<wit::qemu_img::ImageInfo, WitPluginError> {
        let what = format!("inspect {name} on {share}");
        let (host, deadline) = self.volume(&what)?;
        let q = host.qemu(deadline, &what)?;
        let info = host
            .run(&what, deadline, async move {
                q.info(&share, &name, format.map(format_of)).await
            })
            .await?;
        Ok(wit::qemu_img::ImageInfo {
            format: info.format,
            virtual_size_bytes: info.virtual_size_bytes,
            actual_size_bytes: info.actual_size_bytes,
            backing_file: info.backing_file,
            backing_format: info.backing_format,
        })
    }

    async fn resize(
        &mut self,
        share: String,
        name: String,
        format: wit::types::DiskFormat,
        new_size_gb: u64,
    ) -> Result<(), WitPluginError> {
        let what = format!("resize {name} on {share}");
        let (host, deadline) = self.volume(&what)?;
        let q = host.qemu(deadline, &what)?;
        host.run(&what, deadline, async move {
            q.resize(&share, &name, format_of(format), new_size_gb)
                .await
        })
        .await
    }

    async fn commit(&mut self, share: String, name: String) -> Result<(), WitPluginError> {
        let what = format!("commit {name} on {share}");
        let (host, deadline) = self.volume(&what)?;
        let q = host.qemu(deadline, &what)?;
        host.run(
            &what,
            deadline,
            async move { q.commit(&share, &name).await },
        )
        .await
    }

    async fn rebase(
        &mut self,
        share: String,
        name: String,
        backing: wit::qemu_img::BackingFile,
    ) -> Result<(), WitPluginError> {
        let what = format!("rebase {name} on {share}");
        let (host, deadline) = self.volume(&what)?;
        let q = host.qemu(deadline, &what)?;
        host.run(&what, deadline, async move {
            q.rebase(&share, &name, (&backing.name, format_of(backing.format)))
                .await
        })
        .await
    }
}
