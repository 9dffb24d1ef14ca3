//! The host side of the `lvm` interface of `hyperlet:volume`.
//!
//! Every call checks its arguments against the grant (the volume groups this driver may touch)
//! and the name and size rules before any command runs. The LVM tools run as argv with
//! `LC_ALL=C`, stdin closed, a deadline (the process is killed on overrun) and, when configured,
//! `LVM_SYSTEM_DIR`; reports are read in the machine-readable form
//! (`--noheadings --units b --nosuffix --separator '|'`).

use super::command::Tool;
use super::VolumeError;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes in a GiB.
const GIB: u64 = 1 << 30;

/// The longest LV or VG name LVM accepts.
const MAX_NAME: usize = 127;

/// Capacity of a volume group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VgInfo {
    /// Size, bytes.
    pub size_bytes: u64,
    /// Unallocated space, bytes.
    pub free_bytes: u64,
    /// Logical volumes in the group.
    pub lv_count: u32,
}

/// One logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvInfo {
    /// The LV's name.
    pub name: String,
    /// Size, bytes.
    pub size_bytes: u64,
    /// The origin LV when this one is a snapshot.
    pub origin: Option<String>,
}

/// Capacity of a thin pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinPoolInfo {
    /// The pool's data size, bytes.
    pub size_bytes: u64,
    /// Data used by its thin volumes, bytes.
    pub used_bytes: u64,
}

/// What `lvcreate -s` says when LVM runs without device-mapper.
const NO_DM_SNAPSHOT: &str = "Can't create snapshot without using device-mapper";

/// Logical volume management restricted to a granted set of volume groups.
#[derive(Debug, Clone)]
pub struct Lvm {
    granted: BTreeSet<String>,
    system_dir: Option<PathBuf>,
    deadline: Duration,
    copy_deadline: Duration,
}

impl Lvm {
    /// The deadline of one LVM command unless [`Lvm::with_deadline`] says otherwise.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
    /// The deadline of [`Lvm::lv_copy`] unless [`Lvm::with_copy_deadline`] says otherwise.
    pub const DEFAULT_COPY_DEADLINE: Duration = Duration::from_secs(3600);

    /// LVM access to exactly the volume groups in `granted`.
    ///
    /// # Errors
    /// [`VolumeError::InvalidName`] when a granted name is not a valid VG name.
    pub fn new<I, S>(granted: I) -> Result<Self, VolumeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let granted: BTreeSet<String> = granted.into_iter().map(Into::into).collect();
        for vg in &granted {
            check_name("volume group", vg)?;
        }
        Ok(Self {
            granted,
            system_dir: None,
            deadline: Self::DEFAULT_DEADLINE,
            copy_deadline: Self::DEFAULT_COPY_DEADLINE,
        })
    }

    /// Kills a block copy ([`Lvm::lv_copy`]) still running after `deadline`.
    #[must_use]
    pub fn with_copy_deadline(mut self, deadline: Duration) -> Self {
        self.copy_deadline = deadline;
        self
    }

    /// Runs the tools with `LVM_SYSTEM_DIR` set to `dir` (the directory of the `lvm.conf` to use).
    #[must_use]
    pub fn with_system_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.system_dir = Some(dir.into());
        self
    }

    /// Kills any LVM command still running after `deadline`.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The deadline of one LVM command.
    #[must_use]
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The granted volume groups, sorted.
    pub fn granted(&self) -> impl Iterator<Item = &str> {
        self.granted.iter().map(String::as_str)
    }

    /// The `LVM_SYSTEM_DIR` the tools run with, if set.
    #[must_use]
    pub fn system_dir(&self) -> Option<&Path> {
        self.system_dir.as_deref()
    }

    /// Capacity of a granted volume group.
    ///
    /// # Errors
    /// [`VolumeError::NotGranted`] for a group outside the grant; [`VolumeError::CommandFailed`],
    /// [`VolumeError::Timeout`], [`VolumeError::ToolMissing`] or [`VolumeError::Parse`] from `vgs`.
    pub async fn vg_info(&self, vg: &str) -> Result<VgInfo, VolumeError> {
        self.check_vg(vg)?;
        let out = self
            .run(
                "vgs",
                &report_args("vg_size,vg_free,lv_count", vg.to_owned()),
            )
            .await?;
        let line = out
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| parse_error("vgs", &out))?;
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        match fields.as_slice() {
            [size, free, count] => Ok(VgInfo {
                size_bytes: size.parse().map_err(|_| parse_error("vgs", line))?,
                free_bytes: free.parse().map_err(|_| parse_error("vgs", line))?,
                lv_count: count.parse().map_err(|_| parse_error("vgs", line))?,
            }),
            _ => Err(parse_error("vgs", line)),
        }
    }

    /// Creates logical volume `name` of `size_gb` GiB in `vg` (`lvcreate -L <n>g -n name vg`),
    /// or a thin volume of that virtual size in `thin_pool` (`lvcreate -V <n>g --thinpool …`).
    ///
    /// # Errors
    /// [`VolumeError::NotGranted`], [`VolumeError::InvalidName`] or [`VolumeError::InvalidSize`]
    /// before anything runs; [`VolumeError::CommandFailed`] (no space, name taken, no such thin
    /// pool), [`VolumeError::Timeout`] or [`VolumeError::ToolMissing`] from `lvcreate`.
    pub async fn lv_create(
        &self,
        vg: &str,
        name: &str,
        size_gb: u64,
        thin_pool: Option<&str>,
    ) -> Result<(), VolumeError> {
        self.check_vg(vg)?;
        check_name("logical volume", name)?;
        check_size(size_gb)?;
        if let Some(pool) = thin_pool {
            check_name("thin pool", pool)?;
        }
        self.run("lvcreate", &create_args(vg, name, size_gb, thin_pool))
            .await
            .map(drop)
    }

    /// Grows `vg/name` to `new_size_gb` GiB. Asking for the current size does nothing.
    ///
    /// # Errors
    /// [`VolumeError::NotGranted`], [`VolumeError::InvalidName`] or [`VolumeError::InvalidSize`]
    /// before anything runs; [`VolumeError::LvNotFound`]; [`VolumeError::Shrink`] when the LV is
    /// larger than asked; errors of `lvs` and `lvextend`.
    pub async fn lv_extend(
        &self,
        vg: &str,
        name: &str,
        new_size_gb: u64,
    ) -> Result<(), VolumeError> {
        self.check_vg(vg)?;
        check_name("logical volume", name)?;
        let new_bytes = check_size(new_size_gb)?;
        let current = self
            .lv_list(vg)
            .await?
            .into_iter()
            .find(|lv| lv.name == name)
            .ok_or_else(|| not_found(vg, name))?;
        if current.size_bytes > new_bytes {
            return Err(VolumeError::Shrink {
                vg: vg.to_owned(),
                name: name.to_owned(),
                current_bytes: current.size_bytes,
                requested_gb: new_size_gb,
            });
        }
        if current.size_bytes == new_bytes {
            return Ok(());
        }
        self.run(
            "lvextend",
            &[
                "-L".to_owned(),
                format!("{new_size_gb}g"),
                lv_path(vg, name),
            ],
        )
        .await
        .map_err(|e| lv_missing(e, vg, name))
        .map(drop)
    }

    /// Removes `vg/name` (`lvremove -f`). An LV that is the origin of snapshots is refused:
    /// `lvremove` would take the snapshots with it.
    ///
    /// # Errors
    /// [`VolumeError::NotGranted`] or [`VolumeError::InvalidName`] before anything runs;
    /// [`VolumeError::LvNotFound`] when there is no such LV; [`VolumeError::InUse`] when it has
    /// snapshots; other errors of `lvs` and `lvremove`.
    pub async fn lv_remove(&self, vg: &str, name: &str) -> Result<(), VolumeError> {
        self.check_vg(vg)?;
        check_name("logical volume", name)?;
        let lvs = self.lv_list(vg).await?;
        if !lvs.iter().any(|lv| lv.name == name) {
            return Err(not_found(vg, name));
        }
        let snapshots: Vec<&str> = lvs
            .iter()
            .filter(|lv| lv.origin.as_deref() == Some(name))
            .map(|lv| lv.name.as_str())
            .collect();
        if !snapshots.is_empty() {
            return Err(VolumeError::InUse {
                vg: vg.to_owned(),
                name: name.to_owned(),
                snapshots: snapshots.join(", "),
            });
        }
        self.run("lvremove", &["-f".to_owned(), lv_path(vg, name)])
            .await
            .map_err(|e| lv_missing(e, vg, name))
            .map(drop)
    }

    /// Takes a copy-on-write snapshot `snap_name` of `vg/origin`: with `size_gb` GiB of room
    /// for changes (`lvcreate -s -L <n>g -n snap_name vg/origin`), or, when `size_gb` is
    /// `None`, a thin snapshot of a thin origin (`lvcreate -s -n snap_name vg/origin`).
    ///
    /// LVM refuses `lvcreate -s` when it runs without device-mapper (`activation = 0` in its
    /// `lvm.conf`, as on a build machine without the kernel driver). No LV is ever active there,
    /// so no data exists to copy: the host then writes the same metadata in two steps, the
    /// exception store (`lvcreate -L`) and its conversion into a snapshot of the origin
    /// (`lvconvert -s -Zn`), and removes the store again if the conversion fails.
    ///
    /// # Errors
    /// [`VolumeError::NotGranted`], [`VolumeError::InvalidName`] or [`VolumeError::InvalidSize`]
    /// before anything runs; [`VolumeError::LvNotFound`] when the origin does not exist; other
    /// errors of `lvcreate`/`lvconvert`.
    pub async fn lv_snapshot(
        &self,
        vg: &str,
        origin: &str,
        snap_name: &str,
        size_gb: Option<u64>,
    ) -> Result<(), VolumeError> {
        self.check_vg(vg)?;
        check_name("logical volume", origin)?;
        check_name("logical volume", snap_name)?;
        if let Some(size_gb) = size_gb {
            check_size(size_gb)?;
        }
        let mut args = vec!["-s".to_owned()];
        if let Some(size_gb) = size_gb {
            args.extend(["-L".to_owned(), format!("{size_gb}g")]);
        }
        args.extend(["-n".to_owned(), snap_name.to_owned(), lv_path(vg, origin)]);
        match self.run("lvcreate", &args).await {
            Ok(_) => Ok(()),
            Err(VolumeError::CommandFailed { ref stderr, .. })
                if size_gb.is_some() && stderr.contains(NO_DM_SNAPSHOT) =>
            {
                self.snapshot_without_dm(vg, origin, snap_name, size_gb.unwrap_or(1))
                    .await
            }
            Err(e) => Err(lv_missing(e, vg, origin)),
        }
    }

    /// The metadata-only snapshot of a host whose LVM runs without device-mapper.
    async fn snapshot_without_dm(
        &self,
        vg: &str,
        origin: &str,
        snap_name: &str,
        size_gb: u64,
    ) -> Result<(), VolumeError> {
        if !self.lv_list(vg).await?.iter().any(|lv| lv.name == origin) {
            return Err(not_found(vg, origin));
        }
        tracing::info!(
            vg,
            origin,
            snapshot = snap_name,
            "LVM runs without device-mapper: writing the snapshot's metadata in two steps"
        );
        self.run("lvcreate", &create_args(vg, snap_name, size_gb, None))
            .await?;
        let convert = [
            "-y".to_owned(),
            "-Zn".to_owned(),
            "-s".to_owned(),
            lv_path(vg, origin),
            lv_path(vg, snap_name),
        ];
        if let Err(e) = self.run("lvconvert", &convert).await {
            let _ = self
                .run("lvremove", &["-f".to_owned(), lv_path(vg, snap_name)])
                .await;
            return Err(e);
        }
        Ok(())
    }

    /// Capacity of thin pool `vg/pool`, or `None` when the group has no LV of that name.
    ///
    /// # Errors
    /// [`VolumeError::NotGranted`] or [`VolumeError::InvalidName`] before anything runs;
    /// [`VolumeError::Invalid`] when the LV is not a thin pool; errors of `lvs`.
    pub async fn thin_pool_info(
        &self,
        vg: &str,
        pool: &str,
    ) -> Result<Option<ThinPoolInfo>, VolumeError> {
        self.check_vg(vg)?;
        check_name("thin pool", pool)?;
        let out = self
            .run(
                "lvs",
                &report_args("lv_name,lv_size,segtype,data_percent", vg.to_owned()),
            )
            .await?;
        for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            let [name, size, segtype, percent] = fields.as_slice() else {
                return Err(parse_error("lvs", line));
            };
            if *name != pool {
                continue;
            }
            if *segtype != "thin-pool" {
                return Err(VolumeError::Invalid(format!(
                    "{vg}/{pool} is a {segtype} LV, not a thin pool"
                )));
            }
            let size_bytes: u64 = size.parse().map_err(|_| parse_error("lvs", line))?;
            let percent: f64 = if percent.is_empty() {
                0.0
            } else {
                percent.parse().map_err(|_| parse_error("lvs", line))?
            };
            let used = (size_bytes as f64 * percent.clamp(0.0, 100.0) / 100.0).round() as u64;
            return Ok(Some(ThinPoolInfo {
                size_bytes,
                used_bytes: used.min(size_bytes),
            }));
        }
        Ok(None)
    }

    /// Copies the contents of `vg/source` onto `vg/target` (`qemu-img convert -n -f raw -O raw`
    /// between the two device nodes), under the copy deadline ([`Lvm::with_copy_deadline`]).
    ///
    /// # Errors
    /// [`VolumeError::NotGranted`] or [`VolumeError::InvalidName`] before anything runs;
    /// [`VolumeError::LvNotFound`] for a missing LV; [`VolumeError::Invalid`] when the target
    /// is smaller than the source; [`VolumeError::NotActive`] when a device node is missing;
    /// errors of `qemu-img`.
    pub async fn lv_copy(&self, vg: &str, source: &str, target: &str) -> Result<(), VolumeError> {
        self.check_vg(vg)?;
        check_name("logical volume", source)?;
        check_name("logical volume", target)?;
        if source == target {
            return Err(VolumeError::Invalid(format!(
                "cannot copy {vg}/{source} onto itself"
            )));
        }
        let lvs = self.lv_list(vg).await?;
        let size = |name: &str| {
            lvs.iter()
                .find(|lv| lv.name == name)
                .map(|lv| lv.size_bytes)
                .ok_or_else(|| not_found(vg, name))
        };
        let (from, to) = (size(source)?, size(target)?);
        if to < from {
            return Err(VolumeError::Invalid(format!(
                "{vg}/{target} ({to} bytes) is smaller than {vg}/{source} ({from} bytes)"
            )));
        }
        let (src, dst) = (device_path(vg, source), device_path(vg, target));
        for path in [&src, &dst] {
            if !Path::new(path).exists() {
                return Err(VolumeError::NotActive { path: path.clone() });
            }
        }
        let args: Vec<String> = ["convert", "-n", "-f", "raw", "-O", "raw", &src, &dst]
            .into_iter()
            .map(str::to_owned)
            .collect();
        Tool::new("qemu-img", "qemu-utils", self.copy_deadline)
            .run(&args, super::command::plain_stderr)
            .await
            .map(drop)
    }

    /// The logical volumes of a granted volume group.
    ///
    /// # Errors
    /// [`VolumeError::NotGranted`] for a group outside the grant; [`VolumeError::CommandFailed`],
    /// [`VolumeError::Timeout`], [`VolumeError::ToolMissing`] or [`VolumeError::Parse`] from `lvs`.
    pub async fn lv_list(&self, vg: &str) -> Result<Vec<LvInfo>, VolumeError> {
        self.check_vg(vg)?;
        let out = self
            .run("lvs", &report_args("lv_name,lv_size,origin", vg.to_owned()))
            .await?;
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split('|').map(str::trim).collect();
                match fields.as_slice() {
                    [name, size, origin] if !name.is_empty() => Ok(LvInfo {
                        name: (*name).to_owned(),
                        size_bytes: size.parse().map_err(|_| parse_error("lvs", line))?,
                        origin: (!origin.is_empty()).then(|| (*origin).to_owned()),
                    }),
                    _ => Err(parse_error("lvs", line)),
                }
            })
            .collect()
    }

    /// Checks a block device a driver answered as a volume's connection against the grant:
    /// it must be spelled `/dev/<vg>/<lv>` with `<vg>` granted and `<lv>` an LV that `lvs`
    /// reports in it (names checked as when asked for). When the path exists, it is resolved
    /// (symbolic links followed by the kernel, the spelling above leaves no room for `..`) and
    /// must be a block device whose device number is the LV's kernel major:minor as `lvs`
    /// reports it — so a planted link `/dev/<vg>/<lv>` → `/dev/sda` is refused. A missing path
    /// is accepted: the LV is not active here, which whoever opens it reports.
    ///
    /// # Errors
    /// [`VolumeError::RefusedConnection`] for another spelling or a device that is not the LV;
    /// [`VolumeError::NotGranted`], [`VolumeError::Escape`] or [`VolumeError::InvalidName`] for
    /// the names; [`VolumeError::LvNotFound`]; errors of `lvs`.
    pub async fn check_device(&self, path: &str) -> Result<(), VolumeError> {
        let refuse = |reason: String| VolumeError::RefusedConnection {
            answer: format!("block device {path:?}"),
            reason,
        };
        let (vg, lv) = path
            .strip_prefix("/dev/")
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(|| {
                refuse("a block device must be /dev/<granted volume group>/<logical volume>".into())
            })?;
        self.check_vg(vg)?;
        check_name("logical volume", lv)?;
        let out = self
            .run(
                "lvs",
                &report_args("lv_name,lv_kernel_major,lv_kernel_minor", vg.to_owned()),
            )
            .await?;
        let mut device = None;
        for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            let [name, major, minor] = fields.as_slice() else {
                return Err(parse_error("lvs", line));
            };
            if *name == lv {
                let number = |n: &str| n.parse::<i64>().map_err(|_| parse_error("lvs", line));
                device = Some((number(major)?, number(minor)?));
            }
        }
        let (major, minor) = device.ok_or_else(|| not_found(vg, lv))?;
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(VolumeError::Io {
                    op: "inspect",
                    path: path.into(),
                    source,
                })
            }
            Ok(_) => {}
        }
        let real = std::fs::canonicalize(path).map_err(|source| VolumeError::Io {
            op: "resolve",
            path: path.into(),
            source,
        })?;
        let meta = std::fs::metadata(&real).map_err(|source| VolumeError::Io {
            op: "inspect",
            path: real.clone(),
            source,
        })?;
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if !meta.file_type().is_block_device() {
            return Err(refuse(format!(
                "it resolves to {}, which is not a block device",
                real.display()
            )));
        }
        let (found_major, found_minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        let lv_device = u32::try_from(major).ok().zip(u32::try_from(minor).ok());
        match lv_device {
            Some(lv_device) if lv_device == (found_major, found_minor) => Ok(()),
            Some((lv_major, lv_minor)) => Err(refuse(format!(
                "it resolves to {} (device {found_major}:{found_minor}), not to LV {vg}/{lv} \
                 (device {lv_major}:{lv_minor})",
                real.display()
            ))),
            None => Err(refuse(format!(
                "it resolves to {} (device {found_major}:{found_minor}), but LV {vg}/{lv} is not \
                 active on this host",
                real.display()
            ))),
        }
    }

    /// Refuses a volume group outside the grant.
    fn check_vg(&self, vg: &str) -> Result<(), VolumeError> {
        if self.granted.contains(vg) {
            return Ok(());
        }
        let granted = if self.granted.is_empty() {
            "none".to_owned()
        } else {
            self.granted().collect::<Vec<_>>().join(", ")
        };
        Err(VolumeError::NotGranted {
            vg: vg.to_owned(),
            granted,
        })
    }

    /// Runs one LVM tool with a deadline and returns its stdout.
    async fn run(&self, tool: &'static str, args: &[String]) -> Result<String, VolumeError> {
        let mut runner = Tool::new(tool, "lvm2", self.deadline);
        runner
            .env
            .push(("LVM_SUPPRESS_FD_WARNINGS", OsStr::new("1")));
        if let Some(dir) = &self.system_dir {
            runner.env.push(("LVM_SYSTEM_DIR", dir.as_os_str()));
        }
        runner.run(args, clean_stderr).await
    }
}

/// Arguments of `lvcreate` for a thick or thin volume.
fn create_args(vg: &str, name: &str, size_gb: u64, thin_pool: Option<&str>) -> Vec<String> {
    let size = format!("{size_gb}g");
    match thin_pool {
        None => vec![
            "-L".to_owned(),
            size,
            "-n".to_owned(),
            name.to_owned(),
            vg.to_owned(),
        ],
        Some(pool) => vec![
            "-V".to_owned(),
            size,
            "--thinpool".to_owned(),
            lv_path(vg, pool),
            "-n".to_owned(),
            name.to_owned(),
        ],
    }
}

/// Arguments of `vgs`/`lvs` for a machine-readable report of `fields` about `target`.
fn report_args(fields: &str, target: String) -> Vec<String> {
    [
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "--separator",
        "|",
        "-o",
        fields,
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([target])
    .collect()
}

/// `vg/name`, as the tools take it.
fn lv_path(vg: &str, name: &str) -> String {
    format!("{vg}/{name}")
}

/// The device node of an active LV, `/dev/<vg>/<name>`.
pub fn device_path(vg: &str, name: &str) -> String {
    format!("/dev/{vg}/{name}")
}

/// Checks a VG, LV or thin pool name: `[A-Za-z0-9_+.-]`, no leading `-`, at most 127
/// characters, not `.`/`..` and no `..` anywhere.
fn check_name(what: &'static str, name: &str) -> Result<(), VolumeError> {
    if name.contains('/') || name.contains("..") {
        return Err(VolumeError::Escape {
            what,
            name: name.to_owned(),
            within: "its volume group",
        });
    }
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME {
        Some("must be at most 127 characters")
    } else if name.starts_with('-') {
        Some("must not start with '-'")
    } else if name == "." {
        Some("must not be '.'")
    } else if !super::names::has_portable_chars(name) {
        Some("only letters, digits and _ + . - are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(VolumeError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
    }
}

/// Checks a size in GiB and returns it in bytes.
fn check_size(size_gb: u64) -> Result<u64, VolumeError> {
    if size_gb == 0 {
        return Err(VolumeError::InvalidSize {
            size_gb,
            reason: "must be greater than 0",
        });
    }
    size_gb.checked_mul(GIB).ok_or(VolumeError::InvalidSize {
        size_gb,
        reason: "too large",
    })
}

/// Turns LVM's "Failed to find logical volume" (`lvremove`, `lvextend`) and "Snapshot origin LV
/// … not found" (`lvcreate -s`) into [`VolumeError::LvNotFound`] (the tools run with `LC_ALL=C`).
fn lv_missing(e: VolumeError, vg: &str, name: &str) -> VolumeError {
    match e {
        VolumeError::CommandFailed { ref stderr, .. }
            if stderr.contains("Failed to find logical volume")
                || stderr.contains("Snapshot origin LV") =>
        {
            not_found(vg, name)
        }
        e => e,
    }
}

fn not_found(vg: &str, name: &str) -> VolumeError {
    VolumeError::LvNotFound {
        vg: vg.to_owned(),
        name: name.to_owned(),
    }
}

fn parse_error(tool: &'static str, line: &str) -> VolumeError {
    VolumeError::Parse {
        tool,
        line: line.to_owned(),
    }
}

/// LVM's stderr without the warnings it prints on every call of a host without activation, so
/// the message names the actual failure; all of it when nothing else is left.
fn clean_stderr(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let failures: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with("WARNING:"))
        .collect();
    if failures.is_empty() {
        lines.join("; ")
    } else {
        failures.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A throwaway volume group on a loop device over a sparse file, with an `lvm.conf` that
    /// disables activation and sees only loop devices. Dropping it removes everything it made,
    /// even when the test fails.
    struct TestVg {
        vg: String,
        conf_dir: PathBuf,
        loop_dev: Option<String>,
        pv_created: bool,
        _dir: tempfile::TempDir,
    }

    impl TestVg {
        /// Size of the backing file: sparse, and LVM with activation off writes only metadata.
        const FILE_BYTES: u64 = 8 * GIB;

        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let conf_dir = dir.path().join("lvm");
            std::fs::create_dir(&conf_dir).expect("lvm conf dir");
            std::fs::write(
                conf_dir.join("lvm.conf"),
                "global { activation = 0 }\n\
                 devices { filter = [ \"a|^/dev/loop|\", \"r|.*|\" ] }\n",
            )
            .expect("lvm.conf");
            let file = dir.path().join("pv.img");
            std::fs::File::create(&file)
                .and_then(|f| f.set_len(Self::FILE_BYTES))
                .expect("sparse backing file");
            let uuid = uuid::Uuid::new_v4().simple().to_string();
            let mut guard = Self {
                vg: format!("hyperlet-test-{}", &uuid[..8]),
                conf_dir,
                loop_dev: None,
                pv_created: false,
                _dir: dir,
            };
            let dev = sh(
                "losetup",
                &["-f", "--show", file.to_str().expect("utf-8 path")],
                None,
            );
            guard.loop_dev = Some(dev.trim().to_owned());
            let dev = guard.loop_dev.clone().expect("loop device");
            sh("pvcreate", &[&dev], Some(&guard.conf_dir));
            guard.pv_created = true;
            sh("vgcreate", &[&guard.vg, &dev], Some(&guard.conf_dir));
            guard
        }

        fn lvm(&self) -> Lvm {
            Lvm::new([self.vg.clone()])
                .expect("valid grant")
                .with_system_dir(&self.conf_dir)
        }

        /// `(name, bytes, origin)` of every LV, read with `lvs` directly.
        fn lvs(&self) -> Vec<(String, u64, String)> {
            let out = sh(
                "lvs",
                &[
                    "--noheadings",
                    "--units",
                    "b",
                    "--nosuffix",
                    "--separator",
                    ",",
                    "-o",
                    "lv_name,lv_size,origin",
                    &self.vg,
                ],
                Some(&self.conf_dir),
            );
            let mut lvs: Vec<_> = out
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let f: Vec<&str> = l.trim().split(',').collect();
                    (
                        f[0].to_owned(),
                        f[1].parse().expect("size"),
                        f[2].to_owned(),
                    )
                })
                .collect();
            lvs.sort();
            lvs
        }

        /// `vg_free` in bytes, read with `vgs` directly.
        fn vg_free(&self) -> u64 {
            sh(
                "vgs",
                &[
                    "--noheadings",
                    "--units",
                    "b",
                    "--nosuffix",
                    "-o",
                    "vg_free",
                    &self.vg,
                ],
                Some(&self.conf_dir),
            )
            .trim()
            .parse()
            .expect("vg_free")
        }
    }

    impl Drop for TestVg {
        fn drop(&mut self) {
            let env = [("LVM_SYSTEM_DIR", &self.conf_dir)];
            let quiet = |tool: &str, args: &[&str]| {
                let _ = Command::new(tool)
                    .args(args)
                    .envs(env)
                    .env("LVM_SUPPRESS_FD_WARNINGS", "1")
                    .output();
            };
            if let Some(dev) = self.loop_dev.take() {
                if self.pv_created {
                    quiet("vgremove", &["-f", &self.vg]);
                    quiet("pvremove", &["-ff", "-y", &dev]);
                }
                quiet("losetup", &["-d", &dev]);
            }
        }
    }

    /// Runs a setup or check command and returns its stdout; panics with a clear message.
    fn sh(tool: &str, args: &[&str], conf_dir: Option<&Path>) -> String {
        let mut cmd = Command::new(tool);
        cmd.args(args).env("LVM_SUPPRESS_FD_WARNINGS", "1");
        if let Some(dir) = conf_dir {
            cmd.env("LVM_SYSTEM_DIR", dir);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool} (install lvm2 and util-linux): {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    fn vol(n: u8) -> String {
        format!("volume-4e1b0a9c-0000-4000-8000-0000000000{n:02}")
    }

    #[tokio::test]
    async fn lifecycle_against_real_lvm() {
        let t = TestVg::new();
        let lvm = t.lvm();
        let vg = t.vg.as_str();

        let info = lvm.vg_info(vg).await.expect("vg_info");
        assert_eq!(info.lv_count, 0);
        assert_eq!(info.free_bytes, t.vg_free());
        assert!(info.size_bytes > 7 * GIB && info.size_bytes <= TestVg::FILE_BYTES);
        assert!(lvm.lv_list(vg).await.expect("empty list").is_empty());

        lvm.lv_create(vg, &vol(1), 1, None).await.expect("create 1");
        lvm.lv_create(vg, &vol(2), 2, None).await.expect("create 2");
        assert_eq!(
            t.lvs(),
            vec![
                (vol(1), GIB, String::new()),
                (vol(2), 2 * GIB, String::new())
            ]
        );
        let info = lvm.vg_info(vg).await.expect("vg_info");
        assert_eq!(info.lv_count, 2);
        assert_eq!(info.free_bytes, t.vg_free());
        assert_eq!(info.free_bytes, info.size_bytes - 3 * GIB);

        // A name that is taken: lvcreate's own message comes back.
        match lvm.lv_create(vg, &vol(1), 1, None).await {
            Err(VolumeError::CommandFailed { tool, stderr }) => {
                assert_eq!(tool, "lvcreate");
                assert!(stderr.contains("already exists"), "{stderr}");
                assert!(!stderr.contains("WARNING"), "{stderr}");
            }
            other => panic!("duplicate create: {other:?}"),
        }
        // More than the group holds.
        let e = lvm.lv_create(vg, &vol(3), 100, None).await.unwrap_err();
        assert!(e.to_string().starts_with("lvcreate failed: "), "{e}");
        assert!(e.to_string().contains("insufficient free space"), "{e}");

        lvm.lv_extend(vg, &vol(1), 3).await.expect("extend");
        lvm.lv_extend(vg, &vol(1), 3)
            .await
            .expect("extend to the same size");
        let mut listed = lvm.lv_list(vg).await.expect("list");
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            listed,
            vec![
                LvInfo {
                    name: vol(1),
                    size_bytes: 3 * GIB,
                    origin: None
                },
                LvInfo {
                    name: vol(2),
                    size_bytes: 2 * GIB,
                    origin: None
                },
            ]
        );
        assert_eq!(t.lvs()[0], (vol(1), 3 * GIB, String::new()));

        // A snapshot: with device-mapper by lvcreate -s, here (activation off) as metadata.
        let snap = "_snapshot-4e1b0a9c-0000-4000-8000-000000000009";
        lvm.lv_snapshot(vg, &vol(2), snap, Some(1))
            .await
            .expect("snapshot");
        let listed = lvm.lv_list(vg).await.expect("list");
        let s = listed
            .iter()
            .find(|lv| lv.name == snap)
            .expect("snapshot listed");
        assert_eq!(s.origin.as_deref(), Some(vol(2).as_str()));
        assert!(t.lvs().contains(&(snap.to_owned(), GIB, vol(2))));
        // The origin cannot go before its snapshot.
        match lvm.lv_remove(vg, &vol(2)).await {
            Err(e @ VolumeError::InUse { .. }) => {
                assert_eq!(e.code(), "in-use");
                assert!(e.to_string().contains(snap), "{e}");
            }
            other => panic!("remove of an origin: {other:?}"),
        }
        lvm.lv_remove(vg, snap).await.expect("remove snapshot");
        // A thin snapshot needs a thin origin.
        let e = lvm.lv_snapshot(vg, &vol(2), snap, None).await.unwrap_err();
        assert!(matches!(e, VolumeError::CommandFailed { .. }), "{e}");
        // No thin pool of that name; a thick LV is not one.
        assert_eq!(lvm.thin_pool_info(vg, "pool").await.expect("pool"), None);
        assert!(matches!(
            lvm.thin_pool_info(vg, &vol(2)).await,
            Err(VolumeError::Invalid(_))
        ));
        // A block copy needs both LVs active: here there are no device nodes.
        match lvm.lv_copy(vg, &vol(2), &vol(1)).await {
            Err(e @ VolumeError::NotActive { .. }) => assert_eq!(e.code(), "unsupported"),
            other => panic!("copy: {other:?}"),
        }
        assert!(matches!(
            lvm.lv_copy(vg, &vol(1), &vol(2)).await,
            Err(VolumeError::Invalid(_))
        ));
        assert!(matches!(
            lvm.lv_copy(vg, &vol(8), &vol(2)).await,
            Err(VolumeError::LvNotFound { .. })
        ));
        assert_eq!(t.lvs().len(), 2);
        assert!(matches!(
            lvm.lv_snapshot(vg, &vol(7), snap, Some(1)).await,
            Err(VolumeError::LvNotFound { .. })
        ));

        // No such thin pool: lvcreate refuses, nothing is created.
        let e = lvm
            .lv_create(vg, &vol(4), 1, Some("pool"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                VolumeError::CommandFailed {
                    tool: "lvcreate",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("pool not found"), "{e}");
        assert_eq!(t.lvs().len(), 2);

        lvm.lv_remove(vg, &vol(1)).await.expect("remove 1");
        assert_eq!(t.lvs(), vec![(vol(2), 2 * GIB, String::new())]);
        match lvm.lv_remove(vg, &vol(1)).await {
            Err(VolumeError::LvNotFound { vg: v, name }) => {
                assert_eq!((v.as_str(), name), (vg, vol(1)));
            }
            other => panic!("second remove: {other:?}"),
        }
        assert!(matches!(
            lvm.lv_extend(vg, &vol(1), 5).await,
            Err(VolumeError::LvNotFound { .. })
        ));
        lvm.lv_remove(vg, &vol(2)).await.expect("remove 2");
        assert!(t.lvs().is_empty());
        assert_eq!(lvm.vg_info(vg).await.expect("vg_info").lv_count, 0);
    }

    #[tokio::test]
    async fn refusals_leave_the_group_unchanged() {
        let t = TestVg::new();
        let lvm = t.lvm();
        let vg = t.vg.as_str();
        lvm.lv_create(vg, &vol(1), 2, None).await.expect("create");
        let before = (t.lvs(), t.vg_free());

        // Ungranted groups, including ones that exist on this machine.
        let e = lvm
            .lv_create("cinder-volumes", &vol(2), 1, None)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("VG cinder-volumes is not granted to this driver (granted: {vg})")
        );
        let other = Lvm::new(["cinder-volumes"])
            .expect("grant")
            .with_system_dir(&t.conf_dir);
        for e in [
            other.vg_info(vg).await.unwrap_err(),
            other.lv_list(vg).await.unwrap_err(),
            other.lv_remove(vg, &vol(1)).await.unwrap_err(),
            other.lv_extend(vg, &vol(1), 4).await.unwrap_err(),
            other
                .lv_snapshot(vg, &vol(1), "snap", Some(1))
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(e, VolumeError::NotGranted { .. }), "{e}");
        }
        let none = Lvm::new(Vec::<String>::new()).expect("empty grant");
        assert!(none
            .vg_info(vg)
            .await
            .unwrap_err()
            .to_string()
            .ends_with("(granted: none)"));

        // Bad names never reach a command.
        for bad in [
            "../x",
            "-rf",
            "a/b",
            "",
            "x..y",
            ".",
            "vol ume",
            "v;rm",
            &"a".repeat(128),
        ] {
            for e in [
                lvm.lv_create(vg, bad, 1, None).await.unwrap_err(),
                lvm.lv_remove(vg, bad).await.unwrap_err(),
                lvm.lv_extend(vg, bad, 3).await.unwrap_err(),
                lvm.lv_snapshot(vg, &vol(1), bad, Some(1))
                    .await
                    .unwrap_err(),
                lvm.lv_snapshot(vg, bad, "snap", Some(1)).await.unwrap_err(),
                lvm.lv_create(vg, &vol(3), 1, Some(bad)).await.unwrap_err(),
            ] {
                let escape = bad.contains('/') || bad.contains("..");
                let expected = if escape { "denied" } else { "invalid" };
                assert_eq!(e.code(), expected, "{bad:?}: {e}");
                assert!(
                    matches!(
                        e,
                        VolumeError::InvalidName { .. } | VolumeError::Escape { .. }
                    ),
                    "{bad:?}: {e}"
                );
            }
        }
        assert!(matches!(
            lvm.vg_info("-rf").await,
            Err(VolumeError::NotGranted { .. })
        ));
        assert!(matches!(
            Lvm::new(["../etc"]),
            Err(VolumeError::Escape { .. })
        ));

        // Sizes.
        for e in [
            lvm.lv_create(vg, &vol(2), 0, None).await.unwrap_err(),
            lvm.lv_extend(vg, &vol(1), 0).await.unwrap_err(),
            lvm.lv_snapshot(vg, &vol(1), "snap", Some(0))
                .await
                .unwrap_err(),
            lvm.lv_create(vg, &vol(2), u64::MAX, None)
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(e, VolumeError::InvalidSize { .. }), "{e}");
        }
        match lvm.lv_extend(vg, &vol(1), 1).await {
            Err(e @ VolumeError::Shrink { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "Refusing to shrink {vg}/{} from {} bytes to 1 GiB",
                    vol(1),
                    2 * GIB
                )
            ),
            other => panic!("shrink: {other:?}"),
        }

        // A command that overruns its deadline is killed and reported.
        let hasty = t.lvm().with_deadline(Duration::ZERO);
        match hasty.vg_info(vg).await {
            Err(e @ VolumeError::Timeout { tool: "vgs", .. }) => {
                assert_eq!(e.to_string(), "vgs did not finish within 0 s");
            }
            other => panic!("deadline: {other:?}"),
        }

        assert_eq!((t.lvs(), t.vg_free()), before);
        lvm.lv_remove(vg, &vol(1)).await.expect("remove");
    }

    #[test]
    fn lvcreate_arguments() {
        assert_eq!(
            create_args("cinder-volumes", "volume-1", 10, None),
            ["-L", "10g", "-n", "volume-1", "cinder-volumes"]
        );
        assert_eq!(
            create_args(
                "cinder-volumes",
                "volume-1",
                10,
                Some("cinder-volumes-pool")
            ),
            [
                "-V",
                "10g",
                "--thinpool",
                "cinder-volumes/cinder-volumes-pool",
                "-n",
                "volume-1"
            ]
        );
    }

    #[test]
    fn names_and_stderr() {
        for ok in [
            "volume-4e1b0a9c-0000-4000-8000-000000000001",
            "_snapshot-4e1b0a9c-0000-4000-8000-000000000001",
            "a+b.c_d",
            &"a".repeat(127),
        ] {
            check_name("logical volume", ok).expect(ok);
        }
        assert_eq!(
            check_name("logical volume", "-rf").unwrap_err().to_string(),
            "Invalid logical volume name \"-rf\": must not start with '-'"
        );
        assert_eq!(
            clean_stderr("  WARNING: Activation disabled.\n  Volume group \"x\" not found\n"),
            "Volume group \"x\" not found"
        );
        assert_eq!(clean_stderr("  WARNING: only this\n"), "WARNING: only this");
    }
}
