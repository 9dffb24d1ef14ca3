//! The host side of the `qemu-img` interface of `hyperlet:volume`: images in the granted
//! shares of a [`Files`] grant.
//!
//! Every call checks the share and the names as [`Files`] does, always passes explicit formats
//! (`-f`, `-O`, `-F`; a format is detected only when `info` is asked without one), and walks
//! the backing chain of any image it opens — each backing file must be a file of the same
//! share, with a recorded format, and no image may name a data file — before `qemu-img` runs.
//! `qemu-img` runs as argv under the grant's deadline.
//!
//! Backing references are written as a plain name with a kernel mount (resolved next to the
//! overlay, as cinder writes them) and as the backing file's full `nfs://` URL with
//! `access = "libnfs"` (QEMU 7.2's NFS driver resolves relative backing names wrongly). The
//! driver only ever sees names.

use super::command::{plain_stderr, Tool};
use super::files::{Files, ToolFile};
use super::{check_file_name, DiskFormat, Share, VolumeError};
use crate::config::ShareAccess;
use crate::tool::Limits;
use serde_json::Value;

/// Deepest backing chain accepted.
const MAX_CHAIN: usize = 32;
/// Bytes in a GiB.
const GIB: u64 = 1 << 30;

/// What `qemu-img info` reports, with the backing file as a name in the same share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The format.
    pub format: String,
    /// Virtual size, bytes.
    pub virtual_size_bytes: u64,
    /// Bytes used on disk.
    pub actual_size_bytes: u64,
    /// The backing file's name in the same share.
    pub backing_file: Option<String>,
    /// The backing file's recorded format.
    pub backing_format: Option<String>,
}

/// What an image refers to outside itself, read from its `qemu-img info --output=json`: the
/// one place the volume side reads these fields. [`QemuImg`] accepts a backing file only
/// inside the same share and no data file; [`super::copy_image_to`] accepts neither. (Uploads
/// are held to the same rule natively, from their headers: [`crate::image::inspect`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct References<'a> {
    /// The backing file as recorded in the image.
    pub backing_file: Option<&'a str>,
    /// The external data file (qcow2).
    pub data_file: Option<&'a str>,
}

impl<'a> References<'a> {
    /// The references in `info` (the JSON of `qemu-img info`).
    pub fn of(info: &'a Value) -> Self {
        Self {
            backing_file: info
                .get("backing-filename")
                .or_else(|| info.get("full-backing-filename"))
                .and_then(Value::as_str),
            data_file: info
                .pointer("/format-specific/data/data-file")
                .and_then(Value::as_str),
        }
    }

    /// Whether the image refers to nothing outside itself.
    pub fn is_none(&self) -> bool {
        self.backing_file.is_none() && self.data_file.is_none()
    }
}

/// Limits of `qemu-img` runs that write (create, convert, resize, commit, rebase): they read
/// images anyone with access to the share may have written, so their address space is bounded
/// (4 GiB: room for a copy's buffers and worker threads); their time is bounded by the grant's
/// deadline rather than a CPU limit, as a large copy is legitimately long. `info` runs under the
/// tighter [`Limits::QEMU_IMG`].
const WORK_LIMITS: Limits = Limits {
    address_space_bytes: 4 << 30,
    cpu_secs: 86_400,
};

/// The `json:` description of an image chain, top first: each layer's driver and file, each
/// qcow2 layer's backing given explicitly (`null` below the last), so QEMU opens exactly these
/// files.
fn chain_json(layers: &[(String, DiskFormat)]) -> Value {
    let Some(((file, format), below)) = layers.split_first() else {
        return Value::Null;
    };
    let mut layer = serde_json::json!({
        "driver": format.as_str(),
        "file": { "driver": "file", "filename": file },
    });
    if *format == DiskFormat::Qcow2 {
        layer["backing"] = chain_json(below);
    }
    layer
}

/// `qemu-img` restricted to the shares of a grant.
#[derive(Debug, Clone)]
pub struct QemuImg {
    files: Files,
}

fn parse_format(text: &str) -> Option<DiskFormat> {
    match text {
        "raw" => Some(DiskFormat::Raw),
        "qcow2" => Some(DiskFormat::Qcow2),
        _ => None,
    }
}

fn check_size_gb(size_gb: u64) -> Result<u64, VolumeError> {
    if size_gb == 0 {
        return Err(VolumeError::InvalidSize {
            size_gb,
            reason: "must be greater than 0",
        });
    }
    size_gb
        .checked_mul(GIB)
        .filter(|b| *b <= i64::MAX as u64)
        .ok_or(VolumeError::InvalidSize {
            size_gb,
            reason: "too large",
        })
}

impl QemuImg {
    /// `qemu-img` on the shares `files` is granted.
    pub fn new(files: Files) -> Self {
        Self { files }
    }

    /// The file access this works through.
    pub fn files(&self) -> &Files {
        &self.files
    }

    fn tool(&self) -> Tool<'static> {
        Tool::new("qemu-img", "qemu-utils", self.files.deadline())
    }

    /// Runs `qemu-img` on `files` (which it inherits), under [`WORK_LIMITS`].
    async fn run(&self, args: Vec<String>, files: &[&ToolFile]) -> Result<String, VolumeError> {
        self.tool()
            .with_limits(WORK_LIMITS)
            .with_inherited(files.iter().filter_map(|f| f.inherited()))
            .run(&args, plain_stderr)
            .await
    }

    /// Runs `qemu-img info` on a file someone else may have written: under [`Limits::QEMU_IMG`].
    async fn run_info(&self, args: Vec<String>, file: &ToolFile) -> Result<String, VolumeError> {
        self.tool()
            .with_limits(Limits::QEMU_IMG)
            .with_inherited(file.inherited())
            .run(&args, plain_stderr)
            .await
    }

    /// How an overlay in `share` refers to backing file `name`.
    fn backing_ref(&self, share: &Share, name: &str) -> String {
        match self.files.access() {
            ShareAccess::Libnfs => share.url(name),
            ShareAccess::Mount => name.to_owned(),
        }
    }

    /// Opens the images of a chain (`layers`, top first, from [`QemuImg::check_chain`]) and
    /// returns them with the argument that names the chain: with libnfs the top's URL (QEMU
    /// follows the recorded backing URLs), in mount mode a `json:` description giving every
    /// layer as a descriptor, so QEMU never resolves a path of the share itself. The top is
    /// opened read-write when `write_top`, and so is its backing file when `write_backing`.
    async fn open_chain(
        &self,
        share: &Share,
        layers: &[(String, DiskFormat)],
        write_top: bool,
        write_backing: bool,
    ) -> Result<(Vec<ToolFile>, String), VolumeError> {
        let mut files = Vec::with_capacity(layers.len());
        for (i, (name, _)) in layers.iter().enumerate() {
            let write = (i == 0 && write_top) || (i == 1 && write_backing);
            files.push(
                self.files
                    .open_for_tool(share.as_str(), name, write, false)
                    .await?,
            );
            if self.files.access() == ShareAccess::Libnfs {
                break;
            }
        }
        let arg = match self.files.access() {
            ShareAccess::Libnfs => files[0].arg(),
            ShareAccess::Mount => {
                let described: Vec<(String, DiskFormat)> = files
                    .iter()
                    .zip(layers)
                    .map(|(f, (_, format))| (f.arg(), *format))
                    .collect();
                format!("json:{}", chain_json(&described))
            }
        };
        Ok((files, arg))
    }

    /// Maps a backing reference found in an image to a name of the same share.
    fn backing_name(
        &self,
        share: &Share,
        name: &str,
        reference: &str,
    ) -> Result<String, VolumeError> {
        let outside = || VolumeError::OutsideShare {
            share: share.to_string(),
            name: name.to_owned(),
            reference: reference.to_owned(),
        };
        let candidate = if !reference.contains('/') {
            reference.to_owned()
        } else if let Some(rest) = reference.strip_prefix(&share.url("")) {
            rest.to_owned()
        } else {
            let point = self.files.mount_point(share);
            match std::path::Path::new(reference).strip_prefix(&point) {
                Ok(rest) => rest.to_string_lossy().into_owned(),
                Err(_) => return Err(outside()),
            }
        };
        check_file_name(&candidate).map_err(|_| outside())?;
        Ok(candidate)
    }

    /// `qemu-img info` of one image (not its chain), refused when it names a data file or a
    /// backing file outside the share.
    async fn info_one(
        &self,
        share: &Share,
        name: &str,
        format: Option<DiskFormat>,
    ) -> Result<ImageInfo, VolumeError> {
        // Under a mount the open below refuses a missing or non-plain file itself.
        if self.files.access() == ShareAccess::Libnfs
            && self.files.stat(share.as_str(), name).await?.is_none()
        {
            return Err(VolumeError::FileNotFound {
                share: share.to_string(),
                name: name.to_owned(),
            });
        }
        let file = self
            .files
            .open_for_tool(share.as_str(), name, false, false)
            .await?;
        let mut args = vec!["info".to_owned(), "-U".into(), "--output=json".into()];
        if let Some(f) = format {
            args.extend(["-f".into(), f.as_str().into()]);
        }
        args.push(file.arg());
        let out = self.run_info(args, &file).await?;
        let json: Value = serde_json::from_str(&out).map_err(|_| VolumeError::Parse {
            tool: "qemu-img",
            line: out.chars().take(200).collect(),
        })?;
        let field = |key: &str| json.get(key).and_then(Value::as_u64);
        let parse = || VolumeError::Parse {
            tool: "qemu-img",
            line: out.chars().take(200).collect(),
        };
        let refs = References::of(&json);
        if let Some(data_file) = refs.data_file {
            return Err(VolumeError::OutsideShare {
                share: share.to_string(),
                name: name.to_owned(),
                reference: data_file.to_owned(),
            });
        }
        let backing_file = refs
            .backing_file
            .map(|r| self.backing_name(share, name, r))
            .transpose()?;
        Ok(ImageInfo {
            format: json
                .get("format")
                .and_then(Value::as_str)
                .ok_or_else(parse)?
                .to_owned(),
            virtual_size_bytes: field("virtual-size").ok_or_else(parse)?,
            actual_size_bytes: field("actual-size").unwrap_or(0),
            backing_file,
            backing_format: json
                .get("backing-filename-format")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// Walks the chain from `name` (read as `format`): every backing file in the share, with a
    /// raw or qcow2 format recorded. Returns the top image's info and the chain's layers
    /// (name and format, top first).
    async fn check_chain(
        &self,
        share: &Share,
        name: &str,
        format: DiskFormat,
    ) -> Result<(ImageInfo, Vec<(String, DiskFormat)>), VolumeError> {
        let top = self.info_one(share, name, Some(format)).await?;
        let mut layers = vec![(name.to_owned(), format)];
        let mut current = top.clone();
        let mut current_name = name.to_owned();
        for _ in 0..MAX_CHAIN {
            let Some(backing) = current.backing_file.clone() else {
                return Ok((top, layers));
            };
            let backing_format = current
                .backing_format
                .as_deref()
                .and_then(parse_format)
                .ok_or_else(|| VolumeError::OutsideShare {
                    share: share.to_string(),
                    name: current_name.clone(),
                    reference: format!("{backing} without a raw or qcow2 backing format recorded"),
                })?;
            current = self.info_one(share, &backing, Some(backing_format)).await?;
            layers.push((backing.clone(), backing_format));
            current_name = backing;
        }
        Err(VolumeError::Invalid(format!(
            "the backing chain of {name} is deeper than {MAX_CHAIN}"
        )))
    }

    async fn refuse_existing(&self, share: &Share, name: &str) -> Result<(), VolumeError> {
        if self.files.stat(share.as_str(), name).await?.is_some() {
            return Err(VolumeError::FileExists {
                share: share.to_string(),
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// Creates image `name` of `size_gb`, optionally a qcow2 overlay on `backing` (a file of
    /// the same share with its format). Refuses to overwrite a file.
    ///
    /// # Errors
    /// [`VolumeError::ShareNotGranted`], [`VolumeError::Escape`], [`VolumeError::InvalidName`],
    /// [`VolumeError::InvalidSize`] or [`VolumeError::Invalid`] (a raw overlay) before
    /// anything runs; [`VolumeError::FileExists`]; [`VolumeError::OutsideShare`] for a backing
    /// chain leaving the share; errors of `qemu-img`.
    pub async fn create(
        &self,
        share: &str,
        name: &str,
        format: DiskFormat,
        size_gb: u64,
        backing: Option<(&str, DiskFormat)>,
    ) -> Result<(), VolumeError> {
        let share = self.files.share(share)?.clone();
        check_file_name(name)?;
        check_size_gb(size_gb)?;
        if let Some((backing_name, _)) = backing {
            check_file_name(backing_name)?;
            if format != DiskFormat::Qcow2 {
                return Err(VolumeError::Invalid(format!(
                    "an image with a backing file must be qcow2, not {format}"
                )));
            }
        }
        self.refuse_existing(&share, name).await?;
        let mut args = vec![
            "create".to_owned(),
            "-q".into(),
            "-f".into(),
            format.as_str().into(),
        ];
        if let Some((backing_name, backing_format)) = backing {
            self.check_chain(&share, backing_name, backing_format)
                .await?;
            args.extend([
                "-u".into(),
                "-b".into(),
                self.backing_ref(&share, backing_name),
                "-F".into(),
                backing_format.as_str().into(),
            ]);
        }
        let file = self
            .files
            .open_for_tool(share.as_str(), name, true, true)
            .await?;
        args.extend([file.arg(), format!("{size_gb}G")]);
        if let Err(e) = self.run(args, &[&file]).await {
            let _ = self.files.remove(share.as_str(), name).await;
            return Err(e);
        }
        self.files.apply_mode(share.as_str(), name).await
    }

    /// Copies `source` (read as `source_format`, with its chain) into a new image `target` of
    /// `format` in the same share. A failed copy leaves no target behind.
    ///
    /// # Errors
    /// As [`QemuImg::create`]; [`VolumeError::FileNotFound`] for a missing source.
    pub async fn convert(
        &self,
        share: &str,
        source: &str,
        source_format: DiskFormat,
        target: &str,
        format: DiskFormat,
    ) -> Result<(), VolumeError> {
        let share = self.files.share(share)?.clone();
        check_file_name(source)?;
        check_file_name(target)?;
        if source == target {
            return Err(VolumeError::Invalid(format!(
                "cannot convert {source} onto itself"
            )));
        }
        let (_, layers) = self.check_chain(&share, source, source_format).await?;
        self.refuse_existing(&share, target).await?;
        let (sources, from) = self.open_chain(&share, &layers, false, false).await?;
        let to = self
            .files
            .open_for_tool(share.as_str(), target, true, true)
            .await?;
        let mut args = vec!["convert".to_owned(), "-q".into()];
        if self.files.access() == ShareAccess::Libnfs {
            args.extend(["-f".into(), source_format.as_str().into()]);
        }
        args.extend(["-O".into(), format.as_str().into(), from, to.arg()]);
        let mut files: Vec<&ToolFile> = sources.iter().collect();
        files.push(&to);
        if let Err(e) = self.run(args, &files).await {
            let _ = self.files.remove(share.as_str(), target).await;
            return Err(e);
        }
        self.files.apply_mode(share.as_str(), target).await
    }

    /// Inspects image `name`, read as `format`, or with its format detected when `None`.
    ///
    /// # Errors
    /// As [`QemuImg::create`]; [`VolumeError::FileNotFound`];
    /// [`VolumeError::OutsideShare`] when it names a backing file outside the share or a data
    /// file.
    pub async fn info(
        &self,
        share: &str,
        name: &str,
        format: Option<DiskFormat>,
    ) -> Result<ImageInfo, VolumeError> {
        let share = self.files.share(share)?.clone();
        check_file_name(name)?;
        self.info_one(&share, name, format).await
    }

    /// Grows image `name` (of `format`) to `new_size_gb`; the same size does nothing.
    ///
    /// # Errors
    /// As [`QemuImg::create`]; [`VolumeError::ShrinkImage`].
    pub async fn resize(
        &self,
        share: &str,
        name: &str,
        format: DiskFormat,
        new_size_gb: u64,
    ) -> Result<(), VolumeError> {
        let share = self.files.share(share)?.clone();
        check_file_name(name)?;
        let new_bytes = check_size_gb(new_size_gb)?;
        let (current, layers) = self.check_chain(&share, name, format).await?;
        if current.virtual_size_bytes > new_bytes {
            return Err(VolumeError::ShrinkImage {
                name: name.to_owned(),
                current_bytes: current.virtual_size_bytes,
                requested_gb: new_size_gb,
            });
        }
        if current.virtual_size_bytes == new_bytes {
            return Ok(());
        }
        let (files, image) = self.open_chain(&share, &layers, true, false).await?;
        let mut args = vec!["resize".to_owned(), "-q".into()];
        if self.files.access() == ShareAccess::Libnfs {
            args.extend(["-f".into(), format.as_str().into()]);
        }
        args.extend([image, format!("{new_size_gb}G")]);
        self.run(args, &files.iter().collect::<Vec<_>>())
            .await
            .map(drop)
    }

    /// Writes the changes of qcow2 overlay `name` into its backing file (`qemu-img commit -d`).
    ///
    /// # Errors
    /// As [`QemuImg::create`]; [`VolumeError::Invalid`] when `name` has no backing file.
    pub async fn commit(&self, share: &str, name: &str) -> Result<(), VolumeError> {
        let share = self.files.share(share)?.clone();
        check_file_name(name)?;
        let (top, layers) = self.check_chain(&share, name, DiskFormat::Qcow2).await?;
        if top.backing_file.is_none() {
            return Err(VolumeError::Invalid(format!(
                "{name} has no backing file to commit into"
            )));
        }
        let (files, image) = self.open_chain(&share, &layers, true, true).await?;
        let mut args = vec!["commit".to_owned(), "-q".into(), "-d".into()];
        match self.files.access() {
            ShareAccess::Mount => args.push(image),
            // QEMU's NFS driver cannot reopen a backing file read-write: open it so.
            ShareAccess::Libnfs => args.extend([
                "--image-opts".into(),
                format!(
                    "driver=qcow2,file.driver=nfs,file.server.type=inet,file.server.host={},\
                     file.path={},backing.read-only=off",
                    share.host(),
                    share.file_path(name)
                ),
            ]),
        }
        self.run(args, &files.iter().collect::<Vec<_>>())
            .await
            .map(drop)
    }

    /// Points qcow2 overlay `name` at `backing` without copying (`qemu-img rebase -u`).
    ///
    /// # Errors
    /// As [`QemuImg::create`].
    pub async fn rebase(
        &self,
        share: &str,
        name: &str,
        backing: (&str, DiskFormat),
    ) -> Result<(), VolumeError> {
        let share = self.files.share(share)?.clone();
        check_file_name(name)?;
        check_file_name(backing.0)?;
        if backing.0 == name {
            return Err(VolumeError::Invalid(format!(
                "{name} cannot be its own backing file"
            )));
        }
        self.info_one(&share, name, Some(DiskFormat::Qcow2)).await?;
        self.check_chain(&share, backing.0, backing.1).await?;
        let file = self
            .files
            .open_for_tool(share.as_str(), name, true, false)
            .await?;
        self.run(
            vec![
                "rebase".into(),
                "-q".into(),
                "-u".into(),
                "-f".into(),
                "qcow2".into(),
                "-b".into(),
                self.backing_ref(&share, backing.0),
                "-F".into(),
                backing.1.as_str().into(),
                file.arg(),
            ],
            &[&file],
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_described_layer_by_layer_with_explicit_backing() {
        let layers = vec![
            ("/proc/self/fd/7".to_owned(), DiskFormat::Qcow2),
            ("/proc/self/fd/8".to_owned(), DiskFormat::Qcow2),
            ("/proc/self/fd/9".to_owned(), DiskFormat::Raw),
        ];
        let file = |n: u32| serde_json::json!({ "driver": "file", "filename": format!("/proc/self/fd/{n}") });
        assert_eq!(
            chain_json(&layers),
            serde_json::json!({
                "driver": "qcow2", "file": file(7),
                "backing": {
                    "driver": "qcow2", "file": file(8),
                    "backing": { "driver": "raw", "file": file(9) }
                }
            })
        );
        assert_eq!(
            chain_json(&layers[..1]),
            serde_json::json!({ "driver": "qcow2", "file": file(7), "backing": null })
        );
    }
    use crate::config::FilesGrant;

    fn qemu(access: ShareAccess, root: &std::path::Path) -> QemuImg {
        let grant = FilesGrant {
            shares: vec!["127.0.0.1:/srv/nfs/a".into()],
            access,
            mount_root: root.to_path_buf(),
            mount_options: None,
            file_mode: "0660".into(),
            file_owner: None,
            file_group: None,
            command_timeout_secs: 1,
        };
        QemuImg::new(Files::new(&grant).unwrap())
    }

    #[test]
    fn backing_references_must_stay_in_the_share() {
        let root = tempfile::tempdir().unwrap();
        let share = Share::parse("127.0.0.1:/srv/nfs/a").unwrap();
        for access in [ShareAccess::Mount, ShareAccess::Libnfs] {
            let q = qemu(access, root.path());
            let point = q.files().mount_point(&share);
            let name = |r: &str| q.backing_name(&share, "volume-2", r);
            assert_eq!(name("volume-1").unwrap(), "volume-1");
            assert_eq!(
                name("nfs://127.0.0.1/srv/nfs/a/volume-1").unwrap(),
                "volume-1"
            );
            assert_eq!(
                name(&point.join("volume-1").display().to_string()).unwrap(),
                "volume-1"
            );
            for outside in [
                "/etc/passwd",
                "../volume-1",
                "nfs://127.0.0.1/srv/nfs/b/volume-1",
                "nfs://127.0.0.2/srv/nfs/a/volume-1",
                "nfs://127.0.0.1/srv/nfs/a/../b/volume-1",
                "nfs://127.0.0.1/srv/nfs/a/sub/volume-1",
                "json:{\"file.filename\":\"/etc/passwd\"}",
                ".hidden",
            ] {
                let e = name(outside).unwrap_err();
                assert!(
                    matches!(e, VolumeError::OutsideShare { .. }),
                    "{outside}: {e}"
                );
                assert_eq!(e.code(), "denied");
            }
        }
    }

    #[tokio::test]
    async fn refusals_come_before_qemu_img_runs() {
        let root = tempfile::tempdir().unwrap();
        let q = qemu(ShareAccess::Libnfs, root.path());
        let share = "127.0.0.1:/srv/nfs/a";
        let other = "127.0.0.1:/srv/nfs/b";
        let raw = DiskFormat::Raw;
        let qcow2 = DiskFormat::Qcow2;
        for e in [
            q.create(other, "v", raw, 1, None).await.unwrap_err(),
            q.create(share, "../v", raw, 1, None).await.unwrap_err(),
            q.create(share, "v", qcow2, 1, Some(("../../etc/passwd", raw)))
                .await
                .unwrap_err(),
            q.convert(share, "../secret", raw, "v", raw)
                .await
                .unwrap_err(),
            q.convert(share, "v", raw, "/tmp/x", raw).await.unwrap_err(),
            q.info(other, "v", None).await.unwrap_err(),
            q.resize(share, "a/b", raw, 2).await.unwrap_err(),
            q.commit(other, "v").await.unwrap_err(),
            q.rebase(share, "v", ("/etc/shadow", raw))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(e.code(), "denied", "{e}");
        }
        for e in [
            q.create(share, "v", raw, 0, None).await.unwrap_err(),
            q.create(share, "v", raw, u64::MAX, None).await.unwrap_err(),
            q.create(share, "v", raw, 1, Some(("b", raw)))
                .await
                .unwrap_err(),
            q.convert(share, "v", raw, "v", raw).await.unwrap_err(),
            q.rebase(share, "v", ("v", raw)).await.unwrap_err(),
        ] {
            assert_eq!(e.code(), "invalid", "{e}");
        }
    }
}
