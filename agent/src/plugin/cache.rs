//! The precompiled-plugin cache: compile once per (content hash, engine), load in
//! microseconds afterwards.

use super::PluginError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Compiles `bytes`, or loads the cached compilation for the same bytes and engine.
/// Returns the component and the SHA-256 of the bytes.
///
/// # Errors
/// [`PluginError::Runtime`] when the bytes are not a valid component.
pub fn load(engine: &Engine, dir: &Path, bytes: &[u8]) -> Result<(Component, String), PluginError> {
    let sha = hex::encode(Sha256::digest(bytes));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let file: PathBuf = dir.join(format!("{sha}-{:016x}.cwasm", hasher.finish()));
    if file.exists() {
        // SAFETY: the file was written by `Engine::precompile_component` below, for an engine
        // with the same compatibility hash (it is in the name), into the agent's own state
        // directory that only root can write.
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(component) => return Ok((component, sha)),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "dropping an unusable precompiled plugin");
                let _ = std::fs::remove_file(&file);
            }
        }
    }
    let compiled = engine
        .precompile_component(bytes)
        .map_err(|e| PluginError::Runtime(format!("not a valid WebAssembly component: {e:#}")))?;
    if std::fs::create_dir_all(dir).is_ok() {
        // A unique temporary name: agents sharing the cache may compile the same plugin at once.
        let tmp = file.with_extension(format!(
            "{}.{}.tmp",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        if std::fs::write(&tmp, &compiled).is_err() || std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    // SAFETY: `compiled` was produced just now by this engine's `precompile_component`.
    let component = unsafe { Component::deserialize(engine, &compiled) }
        .map_err(|e| PluginError::Runtime(format!("{e:#}")))?;
    Ok((component, sha))
}
