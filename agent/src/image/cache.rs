//! The content-addressed image cache under `<state-dir>/images`.
//!
//! ```text
//! images/tmp/upload-<uuid>          bytes being received (removed at every start)
//! images/blobs/<sha256>.<format>    one file per distinct upload, raw or qcow2, mode 0644
//! ```
//!
//! An upload streams into `tmp/` while its SHA-256 is computed. [`ImageCache::store`] then
//! takes a per-checksum lock (single flight): if a blob with that checksum exists, the upload is
//! dropped and the blob reused, so two concurrent imports of the same bytes keep one copy.
//! Otherwise the bytes are inspected ([`super::inspect`]) *before* anything else reads them,
//! converted to qcow2 with `qemu-img convert -f <format>` when they are not raw or qcow2 (under
//! address-space and CPU limits: a valid image can still be expensive to parse), and
//! renamed into `blobs/`. Blobs no image refers to are removed at start ([`ImageCache::gc`]).

use super::inspect::{inspect, DiskFormat, InspectError};
use super::ImageError;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Longest pause between two chunks of an upload.
const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Limits applied to uploads.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Largest accepted upload, bytes.
    pub max_upload_bytes: u64,
    /// Largest accepted virtual disk size, bytes.
    pub max_virtual_size: u64,
    /// Deadline of a `qemu-img convert`.
    pub convert_timeout: Duration,
    /// Resource limits of `qemu-img` reading an upload.
    pub qemu_img: crate::tool::Limits,
}

/// Bytes received into a temporary file, with their checksum.
#[derive(Debug)]
pub struct Received {
    path: PathBuf,
    /// SHA-256, hex.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
}

impl Drop for Received {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A stored blob.
#[derive(Debug, Clone)]
pub struct Blob {
    /// File name under `blobs/`.
    pub name: String,
    /// raw or qcow2.
    pub format: DiskFormat,
    /// Virtual disk size, bytes.
    pub virtual_size: u64,
}

/// The image cache. Cheap to clone.
#[derive(Clone)]
pub struct ImageCache {
    dir: PathBuf,
    limits: CacheLimits,
    flights: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

fn io_err(context: &str, path: &Path, e: std::io::Error) -> ImageError {
    ImageError::Io {
        context: format!("{context} {}", path.display()),
        source: e,
    }
}

impl ImageCache {
    /// Opens the cache in `dir` (created if missing) and empties its `tmp/`.
    ///
    /// # Errors
    /// [`ImageError::Io`] when the directories cannot be created.
    pub fn open(dir: &Path, limits: CacheLimits) -> Result<Self, ImageError> {
        for sub in ["blobs", "tmp"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| io_err("cannot create", &path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| io_err("cannot chmod", &path, e))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io_err("cannot chmod", dir, e))?;
        if let Ok(entries) = std::fs::read_dir(dir.join("tmp")) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            limits,
            flights: Arc::default(),
        })
    }

    /// Path of a blob.
    pub fn blob_path(&self, name: &str) -> PathBuf {
        self.dir.join("blobs").join(name)
    }

    /// Streams `body` into a temporary file, hashing it; refuses more than the upload limit.
    ///
    /// # Errors
    /// [`ImageError::TooLarge`] over the limit, [`ImageError::Upload`] when the client's stream
    /// fails, [`ImageError::Io`] on disk errors.
    pub async fn receive<S, E>(&self, mut body: S) -> Result<Received, ImageError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use sha2::Digest;
        let path = self
            .dir
            .join("tmp")
            .join(format!("upload-{}", uuid::Uuid::new_v4()));
        let mut received = Received {
            path: path.clone(),
            sha256: String::new(),
            size: 0,
        };
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| io_err("cannot create", &path, e))?;
        let mut hasher = sha2::Sha256::new();
        let mut size: u64 = 0;
        loop {
            let next = tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, body.next())
                .await
                .map_err(|_| {
                    ImageError::Upload(format!(
                        "no data for {} s; the upload was abandoned",
                        UPLOAD_IDLE_TIMEOUT.as_secs()
                    ))
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| ImageError::Upload(e.to_string()))?;
            size += chunk.len() as u64;
            if size > self.limits.max_upload_bytes {
                return Err(ImageError::TooLarge {
                    limit: self.limits.max_upload_bytes,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| io_err("cannot write", &path, e))?;
        }
        file.sync_all()
            .await
            .map_err(|e| io_err("cannot sync", &path, e))?;
        if size == 0 {
            return Err(ImageError::Upload("the upload is empty".into()));
        }
        received.sha256 = hex::encode(hasher.finalize());
        received.size = size;
        Ok(received)
    }

    fn flight(&self, sha: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.retain(|_, lock| Arc::strong_count(lock) > 1);
        flights.entry(sha.to_string()).or_default().clone()
    }

    /// Inspects, converts if needed and stores received bytes; reuses an existing blob with the
    /// same checksum.
    ///
    /// # Errors
    /// [`ImageError::Unsafe`] when inspection refuses the bytes, [`ImageError::Convert`] when
    /// `qemu-img` fails or times out, [`ImageError::Io`] on disk errors.
    pub async fn store(&self, upload: Received, declared: DiskFormat) -> Result<Blob, ImageError> {
        let lock = self.flight(&upload.sha256);
        let _guard = lock.lock().await;
        let stored_format = match declared {
            DiskFormat::Raw => DiskFormat::Raw,
            _ => DiskFormat::Qcow2,
        };
        let name = format!("{}.{}", upload.sha256, stored_format.as_str());
        let target = self.blob_path(&name);
        let max = self.limits.max_virtual_size;
        // Inspect the upload itself, before anything (qemu-img included) reads it.
        let path = upload.path.clone();
        let inspection = tokio::task::spawn_blocking(move || inspect(&path, declared, max))
            .await
            .map_err(|e| ImageError::Upload(format!("inspection worker failed: {e}")))?
            .map_err(ImageError::Unsafe)?;
        if target.exists() {
            return Ok(Blob {
                name,
                format: stored_format,
                virtual_size: inspection.virtual_size,
            });
        }
        let staged = if stored_format == declared {
            upload.path.clone()
        } else {
            let out = self
                .dir
                .join("tmp")
                .join(format!("convert-{}", uuid::Uuid::new_v4()));
            self.convert(&upload.path, declared, &out).await?;
            out
        };
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| io_err("cannot chmod", &staged, e))?;
        std::fs::rename(&staged, &target).map_err(|e| io_err("cannot store", &target, e))?;
        if let Ok(dir) = std::fs::File::open(self.dir.join("blobs")) {
            let _ = dir.sync_all();
        }
        Ok(Blob {
            name,
            format: stored_format,
            virtual_size: inspection.virtual_size,
        })
    }

    /// Converts an inspected upload to qcow2 under the cache's `qemu-img` limits; a failed
    /// conversion leaves no output behind.
    async fn convert(&self, from: &Path, format: DiskFormat, to: &Path) -> Result<(), ImageError> {
        let (from_arg, to_arg) = (from.display().to_string(), to.display().to_string());
        let args = [
            "convert",
            "-f",
            format.as_str(),
            "-O",
            "qcow2",
            &from_arg,
            &to_arg,
        ];
        let converted = super::qemu_img::run_with(
            &args,
            self.limits.convert_timeout,
            Some(self.limits.qemu_img),
        )
        .await;
        if converted.is_err() {
            let _ = std::fs::remove_file(to);
        }
        converted
    }

    /// Removes one blob (when the last image using it is deleted).
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.blob_path(name));
    }

    /// Removes blobs that no image refers to (left by a crash between storing and recording).
    pub fn gc(&self, referenced: &[String]) -> usize {
        let mut removed = 0;
        if let Ok(entries) = std::fs::read_dir(self.dir.join("blobs")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

impl From<InspectError> for ImageError {
    fn from(e: InspectError) -> Self {
        ImageError::Unsafe(e)
    }
}
