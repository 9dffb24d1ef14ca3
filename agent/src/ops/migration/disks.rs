//! The disk files of a cold migration: offered by the source (names, SHA-256, sizes), served
//! to the destination over the peer API, fetched and checked there, and kept by the source
//! (`<servers_dir>/<id>.retained`) until the move is confirmed or reverted.
//!
//! A fetched file is as untrusted as an uploaded image: its length and SHA-256 must be what
//! was offered, the root overlay must be plain qcow2 (no external data file, no encryption)
//! of the server's root size and is re-pointed at this node's copy of the base image
//! (`qemu-img rebase -u`: the backing name the source wrote is never opened), an ephemeral
//! disk must be qcow2 without a backing file of the flavor's size, and swap raw of its size.

use super::peer::PeerClient;
use super::wire::{DiskOffer, PeerNode};
use crate::image::inspect::{inspect, DiskFormat};
use crate::ops::servers::{build, ServerSpec};
use crate::ops::{OpError, Services};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One GiB.
const GIB: u64 = 1 << 30;
/// A qcow2 file's largest length over its virtual size (metadata: tables, refcounts).
const QCOW2_SLACK: u64 = 256 << 20;
/// How long a download may wait for its next bytes.
const IDLE: Duration = Duration::from_secs(60);
/// Deadline of `qemu-img rebase -u` (a header rewrite).
const REBASE_DEADLINE: Duration = Duration::from_secs(60);

/// The file in a server's directory holding the secret of its cold move away (carried into
/// the kept directory).
const SECRET_FILE: &str = "migration.secret";
/// The header a destination presents that secret in when it fetches disk files.
pub const SECRET_HEADER: &str = "x-hyperlet-migration-secret";

/// A new secret for a cold move (256 random bits, hex).
pub(crate) fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Writes the secret of a cold move into the server's directory (mode 0600).
///
/// # Errors
/// [`OpError::Interrupted`] when it cannot be written.
pub(crate) fn write_secret(dir: &Path, secret: &str) -> Result<(), OpError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(SECRET_FILE);
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(secret.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| OpError::Interrupted(format!("cannot write {}: {e}", path.display())))
}

/// Checks a presented secret against the one kept in `dir`.
///
/// # Errors
/// [`OpError::Conflict`] when none is kept or it differs.
pub(crate) fn check_secret(dir: &Path, presented: &str) -> Result<(), OpError> {
    let kept = std::fs::read_to_string(dir.join(SECRET_FILE)).unwrap_or_default();
    let same = kept.len() == presented.len()
        && kept
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if kept.is_empty() || !same {
        return Err(OpError::Conflict(
            "the migration secret is not this move's".into(),
        ));
    }
    Ok(())
}

/// The server's disk files in its directory (root overlay unless it boots from a volume,
/// ephemeral, swap): (file name, path).
pub(crate) fn local_files(spec: &ServerSpec) -> Vec<(String, PathBuf)> {
    let mut paths = Vec::new();
    if spec.boot_volume.is_none() {
        paths.push(spec.root_disk());
    }
    if spec.flavor.ephemeral_gb > 0 {
        paths.push(spec.ephemeral_disk());
    }
    if spec.flavor.swap_mb > 0 {
        paths.push(spec.swap_disk());
    }
    paths
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, p)
        })
        .collect()
}

/// The directory a node keeps a cold-migrated server's disks in until the move is confirmed
/// or reverted.
pub(crate) fn retained_dir(services: &Services, server_id: &str) -> PathBuf {
    services
        .config()
        .servers_dir()
        .join(format!("{server_id}.retained"))
}

/// The offers of the server's disk files (hashed here).
///
/// # Errors
/// [`OpError::Interrupted`] when a file cannot be read.
pub(crate) async fn offers(spec: &ServerSpec) -> Result<Vec<DiskOffer>, OpError> {
    let mut offers = Vec::new();
    for (file, path) in local_files(spec) {
        let (sha256, size) =
            tokio::task::spawn_blocking(move || super::outgoing::sha256_file(&path))
                .await
                .map_err(|e| OpError::Interrupted(format!("hashing worker failed: {e}")))??;
        offers.push(DiskOffer { file, sha256, size });
    }
    Ok(offers)
}

/// The largest length a disk file of `spec` may have.
fn max_len(spec: &ServerSpec, file: &str) -> u64 {
    let flavor = &spec.flavor;
    match file {
        // disk_gb 0 takes the image's size: checked in `fetch`, where the image is known.
        "root.qcow2" if flavor.disk_gb == 0 => u64::MAX,
        "root.qcow2" => (flavor.disk_gb * GIB).saturating_mul(2) + QCOW2_SLACK,
        "ephemeral.qcow2" => flavor.ephemeral_gb * GIB + QCOW2_SLACK,
        "swap.raw" => flavor.swap_mb << 20,
        _ => 0,
    }
}

/// Checks offered disks against the spec: exactly its local disk files, each with a SHA-256
/// and a possible length. A revert offers none (the destination kept them).
///
/// # Errors
/// [`OpError::InvalidInput`] naming the fault.
pub(crate) fn check_offers(
    spec: &ServerSpec,
    offers: &[DiskOffer],
    revert: bool,
) -> Result<(), OpError> {
    let bad = |m: String| Err(OpError::InvalidInput(m));
    let wanted: Vec<String> = local_files(spec).into_iter().map(|(f, _)| f).collect();
    let offered: Vec<&str> = offers.iter().map(|o| o.file.as_str()).collect();
    if revert {
        if !offers.is_empty() {
            return bad("a revert offers no disks (the destination kept them)".into());
        }
        return Ok(());
    }
    if offered != wanted {
        return bad(format!(
            "the disks offered ({offered:?}) are not the server's ({wanted:?})"
        ));
    }
    for offer in offers {
        if offer.sha256.len() != 64 || !offer.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad(format!("disk {} has no SHA-256", offer.file));
        }
        if offer.size > max_len(spec, &offer.file) {
            return bad(format!(
                "disk {} of {} bytes is larger than the flavor allows",
                offer.file, offer.size
            ));
        }
    }
    Ok(())
}

/// The path of a disk file the peer API serves for an outgoing cold migration of `spec`'s
/// server: only one of its own disk files.
///
/// # Errors
/// [`OpError::NotFound`] for any other name.
pub(crate) fn served(spec: &ServerSpec, file: &str) -> Result<PathBuf, OpError> {
    local_files(spec)
        .into_iter()
        .find(|(name, _)| name == file)
        .map(|(_, path)| path)
        .ok_or_else(|| OpError::NotFound {
            kind: "disk",
            id: file.to_string(),
        })
}

/// Fetches the offered disks into `spec.dir` (created here) and checks each; the root
/// overlay is pointed at this node's base image.
///
/// # Errors
/// [`OpError::Conflict`] when the source cannot be reached or a file arrives different from
/// its offer; [`OpError::InvalidInput`] when a file is not the disk it claims to be.
pub(crate) async fn fetch(
    services: &Services,
    source: &PeerNode,
    server_id: &str,
    spec: &ServerSpec,
    offers: &[DiskOffer],
    secret: &str,
    images: &build::ResolvedImages,
) -> Result<(), OpError> {
    if let Some(root) = offers.iter().find(|o| o.file == "root.qcow2") {
        // The root may be the image's size (disk_gb 0): bounded once the image is known.
        let max = build::root_size(spec, images).saturating_mul(2) + QCOW2_SLACK;
        if root.size > max {
            return Err(OpError::InvalidInput(format!(
                "disk root.qcow2 of {} bytes is larger than the server's root disk allows",
                root.size
            )));
        }
    }
    let dir = spec.dir.clone();
    std::fs::create_dir(&dir)
        .map_err(|e| OpError::Interrupted(format!("cannot create {}: {e}", dir.display())))?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| OpError::Interrupted(format!("cannot chmod {}: {e}", dir.display())))?;
    let client = PeerClient::new(services)?;
    for offer in offers {
        let path = dir.join(&offer.file);
        let url_path = format!("/v1/peer/migrations/{server_id}/disks/{}", offer.file);
        download(&client, &source.api_url, &url_path, secret, &path, offer).await?;
        check_file(spec, images, &offer.file, &path).await?;
    }
    Ok(())
}

async fn download(
    client: &PeerClient,
    base: &str,
    url_path: &str,
    secret: &str,
    path: &Path,
    offer: &DiskOffer,
) -> Result<(), OpError> {
    use futures_util::StreamExt;
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let differs = |what: String| OpError::Conflict(format!("disk {} arrived {what}", offer.file));
    let io =
        |e: std::io::Error| OpError::Interrupted(format!("cannot write {}: {e}", path.display()));
    let stream = client
        .get_stream(base, url_path, Some((SECRET_HEADER, secret)))
        .await?;
    tokio::pin!(stream);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .await
        .map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    loop {
        let next = tokio::time::timeout(IDLE, stream.next())
            .await
            .map_err(|_| differs(format!("incomplete: nothing for {} s", IDLE.as_secs())))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| differs(format!("incomplete: {e}")))?;
        len += chunk.len() as u64;
        if len > offer.size {
            return Err(differs(format!(
                "longer than the {} bytes offered",
                offer.size
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    let sha = hex::encode(hasher.finalize());
    if len != offer.size || sha != offer.sha256 {
        return Err(differs(format!(
            "with {len} bytes and SHA-256 {sha}, not {} bytes and {}",
            offer.size, offer.sha256
        )));
    }
    Ok(())
}

/// Checks a fetched file is the disk it claims to be; re-points the root overlay.
async fn check_file(
    spec: &ServerSpec,
    images: &build::ResolvedImages,
    file: &str,
    path: &Path,
) -> Result<(), OpError> {
    let bad = |m: String| OpError::InvalidInput(format!("disk {file}: {m}"));
    match file {
        "root.qcow2" => {
            let header = {
                let mut f =
                    std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
                crate::image::qcow2::read_header(&mut f).map_err(|e| bad(e.to_string()))?
            };
            if header.has_external_data_file() || header.crypt_method != 0 || header.is_corrupt() {
                return Err(bad(
                    "not a plain qcow2 overlay (external data file, encryption or corrupt)".into(),
                ));
            }
            let want = build::root_size(spec, images);
            if header.virtual_size != want {
                return Err(bad(format!(
                    "virtual size {} instead of {want}",
                    header.virtual_size
                )));
            }
            let backing = images.root_blob.display().to_string();
            let path = path.display().to_string();
            crate::image::qemu_img::run(
                &[
                    "rebase",
                    "-q",
                    "-u",
                    "-f",
                    "qcow2",
                    "-F",
                    &images.root_format,
                    "-b",
                    &backing,
                    &path,
                ],
                REBASE_DEADLINE,
            )
            .await?;
            Ok(())
        }
        "ephemeral.qcow2" => {
            let want = spec.flavor.ephemeral_gb * GIB;
            let found = inspect(path, DiskFormat::Qcow2, want).map_err(|e| bad(e.to_string()))?;
            if found.virtual_size != want {
                return Err(bad(format!(
                    "virtual size {} instead of {want}",
                    found.virtual_size
                )));
            }
            Ok(())
        }
        "swap.raw" => {
            let len = std::fs::metadata(path)
                .map_err(|e| bad(e.to_string()))?
                .len();
            if len != spec.flavor.swap_mb << 20 {
                return Err(bad(format!(
                    "{len} bytes instead of {} MiB",
                    spec.flavor.swap_mb
                )));
            }
            Ok(())
        }
        other => Err(bad(format!("unknown disk file {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ephemeral_gb: u64, swap_mb: u64) -> ServerSpec {
        serde_json::from_value(serde_json::json!({
            "flavor": {"vcpus": 1, "ram_mb": 128, "disk_gb": 1,
                       "ephemeral_gb": ephemeral_gb, "swap_mb": swap_mb},
            "image_id": "i", "kernel_image_id": null, "ramdisk_image_id": null,
            "os_command_line": null, "key_name": null, "public_keys": {}, "user_data": null,
            "metadata": {}, "availability_zone": "nova", "domain_name": "hyperlet-x",
            "dir": "/srv/servers/x"
        }))
        .expect("spec")
    }

    fn offer(file: &str, size: u64) -> DiskOffer {
        DiskOffer {
            file: file.into(),
            sha256: "ab".repeat(32),
            size,
        }
    }

    #[test]
    fn offers_must_be_the_servers_own_disk_files() {
        let s = spec(1, 64);
        let names: Vec<String> = local_files(&s).into_iter().map(|(f, _)| f).collect();
        assert_eq!(names, ["root.qcow2", "ephemeral.qcow2", "swap.raw"]);
        let good = [
            offer("root.qcow2", 1 << 20),
            offer("ephemeral.qcow2", 1 << 20),
            offer("swap.raw", 64 << 20),
        ];
        check_offers(&s, &good, false).expect("the server's files");
        assert!(check_offers(&s, &good[..2], false).is_err(), "one missing");
        let mut renamed = good.clone();
        renamed[0].file = "../../etc/shadow".into();
        assert!(check_offers(&s, &renamed, false).is_err());
        let mut huge = good.clone();
        huge[2].size = (64 << 20) + 1;
        assert!(
            check_offers(&s, &huge, false).is_err(),
            "swap larger than the flavor"
        );
        let mut unhashed = good.clone();
        unhashed[1].sha256 = "zz".repeat(32);
        assert!(check_offers(&s, &unhashed, false).is_err());
        assert!(
            check_offers(&s, &good, true).is_err(),
            "a revert fetches nothing"
        );
        check_offers(&s, &[], true).expect("a revert");
        assert!(served(&s, "root.qcow2").is_ok());
        assert!(
            served(&s, "console.log").is_err(),
            "only disk files are served"
        );
    }
}
