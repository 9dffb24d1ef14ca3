//! The `volume-<id>.info` file of a volume with snapshots (cinder's remotefs layout): a JSON
//! object mapping each snapshot id to the overlay file created when it was taken, and
//! `"active"` to the file the volume is read and written through.

use hyperlet_plugin_sdk::prelude::*;
use hyperlet_plugin_sdk::volume::errors;
use serde_json::{Map, Value};

/// The snapshot map of one volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapInfo {
    /// The active file.
    pub active: String,
    /// Snapshot id → the overlay file created when it was taken.
    pub snapshots: Vec<(String, String)>,
}

impl SnapInfo {
    /// No snapshots: the base file is active.
    pub fn base(base: &str) -> Self {
        Self {
            active: base.to_owned(),
            snapshots: Vec::new(),
        }
    }

    /// Parses an info file.
    ///
    /// # Errors
    ///
    /// `failed` when it is not a JSON object of strings with `"active"`.
    pub fn parse(name: &str, text: &str) -> Result<Self, PluginError> {
        let bad = |why: &str| PluginError::new(errors::FAILED, format!("Info file {name}: {why}"));
        let map: Map<String, Value> =
            serde_json::from_str(text).map_err(|_| bad("not a JSON object"))?;
        let mut active = None;
        let mut snapshots = Vec::new();
        for (key, value) in map {
            let file = value
                .as_str()
                .ok_or_else(|| bad("a value is not a string"))?
                .to_owned();
            if key == "active" {
                active = Some(file);
            } else {
                snapshots.push((key, file));
            }
        }
        Ok(Self {
            active: active.ok_or_else(|| bad("no \"active\" file"))?,
            snapshots,
        })
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        let mut map = Map::new();
        map.insert("active".into(), Value::String(self.active.clone()));
        for (id, file) in &self.snapshots {
            map.insert(id.clone(), Value::String(file.clone()));
        }
        Value::Object(map).to_string()
    }

    /// The overlay of snapshot `id`.
    pub fn file_of(&self, id: &str) -> Option<&str> {
        self.snapshots
            .iter()
            .find(|(s, _)| s == id)
            .map(|(_, f)| f.as_str())
    }
}
