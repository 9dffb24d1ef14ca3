//! The precompiled-plugin cache: compile once per (content hash, engine), load in
//! microseconds afterwards.
//!
//! Loading a precompiled component is `unsafe`: its bytes are machine code the engine runs as
//! they are. The cache directory is configurable (`plugin_runtime.cache_dir`) and may be
//! shared, so its files are trusted only when nobody but the agent's own user can have
//! written them:
//!
//! * the directory must be owned by the agent's effective user and not writable by group or
//!   others; one that is not is never read or written — plugins are compiled fresh, with one
//!   warning per directory;
//! * a file is opened without following symbolic links and checked on the open descriptor
//!   (a regular file, same owner, not writable by group or others), then read from that
//!   descriptor, so it cannot be swapped between the check and the read; a file that fails is
//!   ignored and replaced by a fresh compilation.
//!
//! New files are written 0600 under a unique temporary name and renamed into place.

use super::PluginError;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{DirBuilder, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use wasmtime::component::Component;
use wasmtime::Engine;

/// Permission bits that let group or others write.
const GROUP_OTHER_WRITE: u32 = 0o022;

/// Compiles `bytes`, or loads the cached compilation for the same bytes and engine when the
/// cache can be trusted (see the module docs). Returns the component and the SHA-256 of the
/// bytes.
///
/// # Errors
/// [`PluginError::Runtime`] when the bytes are not a valid component.
pub fn load(engine: &Engine, dir: &Path, bytes: &[u8]) -> Result<(Component, String), PluginError> {
    let sha = hex::encode(Sha256::digest(bytes));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let file: PathBuf = dir.join(format!("{sha}-{:016x}.cwasm", hasher.finish()));
    let trusted = match trusted_dir(dir) {
        Ok(()) => true,
        Err(reason) => {
            warn_once(dir, &reason);
            false
        }
    };
    if trusted {
        match read_trusted(&file) {
            Ok(Some(compiled)) => {
                // SAFETY: the bytes were read from a regular file owned by the agent's user and
                // writable by nobody else, in a directory with the same guarantees: only this
                // agent (or root) wrote them, with `Engine::precompile_component` below, for an
                // engine with the same compatibility hash (it is in the name).
                match unsafe { Component::deserialize(engine, &compiled) } {
                    Ok(component) => return Ok((component, sha)),
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %e, "dropping an unusable precompiled plugin");
                        let _ = std::fs::remove_file(&file);
                    }
                }
            }
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(file = %file.display(), %reason, "not loading an untrusted precompiled plugin; compiling it");
            }
        }
    }
    let compiled = engine
        .precompile_component(bytes)
        .map_err(|e| PluginError::Runtime(format!("not a valid WebAssembly component: {e:#}")))?;
    if trusted {
        store(&file, &compiled);
    }
    // SAFETY: `compiled` was produced just now by this engine's `precompile_component`.
    let component = unsafe { Component::deserialize(engine, &compiled) }
        .map_err(|e| PluginError::Runtime(format!("{e:#}")))?;
    Ok((component, sha))
}

/// Why `meta` (of `what`) could have been written by someone other than this user, if so.
fn untrusted(meta: &std::fs::Metadata, what: &str) -> Option<String> {
    let uid = nix::unistd::Uid::effective().as_raw();
    if meta.uid() != uid {
        return Some(format!(
            "{what} is owned by uid {}, not the agent's uid {uid}",
            meta.uid()
        ));
    }
    if meta.mode() & GROUP_OTHER_WRITE != 0 {
        return Some(format!(
            "{what} is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Creates the directory (0700) when missing, then checks it.
fn trusted_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create the cache directory: {e}"))?;
            trusted_dir_meta(dir)
        }
        Err(e) => Err(format!("cannot inspect the cache directory: {e}")),
        Ok(_) => trusted_dir_meta(dir),
    }
}

fn trusted_dir_meta(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot inspect it: {e}"))?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    untrusted(&meta, "the directory").map_or(Ok(()), Err)
}

/// The contents of a trusted cache file, `None` when there is none.
fn read_trusted(file: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it (a symbolic link?): {e}")),
    };
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot inspect it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if let Some(reason) = untrusted(&meta, "the file") {
        return Err(reason);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(Some(bytes))
}

/// Writes a compilation (0600, temporary name + rename); failures only cost a recompile.
fn store(file: &Path, compiled: &[u8]) {
    // A unique temporary name: agents sharing the cache may compile the same plugin at once.
    let tmp = file.with_extension(format!(
        "{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f: File| f.write_all(compiled).and_then(|()| f.sync_all()));
    if written.is_err() || std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Warns about an untrusted cache directory once per directory.
fn warn_once(dir: &Path, reason: &str) {
    static WARNED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if warned
        .get_or_insert_with(HashSet::new)
        .insert(dir.to_path_buf())
    {
        tracing::warn!(
            dir = %dir.display(),
            %reason,
            "not using the precompiled plugin cache: plugins are compiled at every load"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The smallest component: the header of the component encoding.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";
    /// A component holding one empty core module (section 1, 8 bytes).
    const WITH_MODULE: &[u8] = b"\0asm\x0d\0\x01\0\x01\x08\0asm\x01\0\0\0";

    fn engine() -> Engine {
        Engine::default()
    }

    /// The cache file `load` uses for `bytes`.
    fn cache_file(engine: &Engine, dir: &Path, bytes: &[u8]) -> PathBuf {
        let sha = hex::encode(Sha256::digest(bytes));
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        dir.join(format!("{sha}-{:016x}.cwasm", hasher.finish()))
    }

    /// Plants the compilation of WITH_MODULE under EMPTY's name with `mode`, then loads EMPTY:
    /// returns whether the planted code came back (was deserialized).
    fn planted_is_used(dir: &Path, mode: u32, owner: Option<u32>) -> bool {
        let engine = engine();
        let other = engine.precompile_component(WITH_MODULE).unwrap();
        let file = cache_file(&engine, dir, EMPTY);
        std::fs::write(&file, &other).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some(uid) = owner {
            nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
        }
        let (component, _) = load(&engine, dir, EMPTY).unwrap();
        component.serialize().unwrap() == other
    }

    #[test]
    fn a_trusted_cache_is_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(planted_is_used(dir.path(), 0o600, None));
    }

    #[test]
    fn files_others_could_write_are_never_loaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!planted_is_used(dir.path(), 0o666, None));
        // Replaced by a fresh compilation, 0600.
        let file = cache_file(&engine(), dir.path(), EMPTY);
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert!(!planted_is_used(dir.path(), 0o644, Some(65534)));
    }

    #[test]
    fn a_world_writable_directory_is_never_read_or_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!planted_is_used(dir.path(), 0o600, None));
        // The planted file is left as it was, and nothing was added.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let file = cache_file(&engine(), dir.path(), EMPTY);
        let other = engine().precompile_component(WITH_MODULE).unwrap();
        assert_eq!(std::fs::read(file).unwrap(), other);
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        let engine = engine();
        load(&engine, &dir, EMPTY).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert!(cache_file(&engine, &dir, EMPTY).exists());
    }
}
