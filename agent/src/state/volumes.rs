//! Volume types, volumes and snapshots (`volume_types`, `volumes`, `snapshots` tables). Each
//! row stores its record as JSON next to the columns queries filter on.

use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A volume type: a name bound to a backend (cinder's `volume_backend_name` extra spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeType {
    /// Id (UUID).
    pub id: String,
    /// Name, unique.
    pub name: String,
    /// The volume driver plugin (backend) that serves it.
    pub backend: String,
    /// Used when a volume names no type.
    pub is_default: bool,
    /// Creation time.
    pub created_at: String,
}

/// Where a volume's first contents came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VolumeSource {
    /// Empty.
    Blank,
    /// An image of the cache.
    Image {
        /// The image.
        image_id: String,
    },
    /// A snapshot.
    Snapshot {
        /// The snapshot.
        snapshot_id: String,
    },
    /// Another volume (clone).
    Volume {
        /// The source volume.
        volume_id: String,
    },
}

/// A volume (cinder's statuses: creating, available, in-use, extending, deleting, error,
/// error_deleting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    /// Id (UUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// Size, GiB.
    pub size_gb: u64,
    /// The volume type's name.
    pub volume_type: String,
    /// The backend holding it.
    pub backend: String,
    /// Lifecycle.
    pub status: String,
    /// Where its contents came from.
    pub source: VolumeSource,
    /// The image it was made from (directly or through its source), whose properties (kernel,
    /// ramdisk, command line) a server booting from it uses.
    pub image_id: Option<String>,
    /// Can a server boot from it.
    pub bootable: bool,
    /// The server it is attached to.
    pub attached_to: Option<String>,
    /// The guest device (`vdb`, …) while attached.
    pub device: Option<String>,
    /// Why it is in error.
    pub error: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// A snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// Id (UUID).
    pub id: String,
    /// The volume.
    pub volume_id: String,
    /// Name.
    pub name: String,
    /// Size of the volume when taken, GiB.
    pub size_gb: u64,
    /// creating, available, deleting, error.
    pub status: String,
    /// Why it is in error.
    pub error: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

fn doc<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("volume records serialise")
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("volume record: {e}")))
}

fn all<T: serde::de::DeserializeOwned>(
    conn: &rusqlite::Connection,
    sql: &str,
    arg: Option<&str>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let docs: Vec<String> = match arg {
        Some(a) => stmt
            .query_map([a], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?,
        None => stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?,
    };
    docs.iter().map(|d| parse(d)).collect()
}

impl Store {
    /// Inserts a volume type; when it is the default, the previous default stops being one.
    ///
    /// # Errors
    /// [`StoreError`]; a duplicate name is a constraint error.
    pub async fn insert_volume_type(&self, t: VolumeType) -> Result<(), StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            if t.is_default {
                let others: Vec<VolumeType> = all(&tx, "SELECT doc FROM volume_types", None)?;
                for mut other in others.into_iter().filter(|o| o.is_default) {
                    other.is_default = false;
                    tx.execute(
                        "UPDATE volume_types SET doc = ?2 WHERE id = ?1",
                        params![other.id, doc(&other)],
                    )?;
                }
            }
            tx.execute(
                "INSERT INTO volume_types (id, name, doc) VALUES (?1, ?2, ?3)",
                params![t.id, t.name, doc(&t)],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Every volume type, by name.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list_volume_types(&self) -> Result<Vec<VolumeType>, StoreError> {
        self.call(|conn| all(conn, "SELECT doc FROM volume_types ORDER BY name", None))
            .await
    }

    /// Removes a volume type.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn delete_volume_type(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM volume_types WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    /// Number of volumes of a type (by name).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn count_volumes_of_type(&self, name: &str) -> Result<u64, StoreError> {
        let name = name.to_string();
        self.call(move |conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM volumes WHERE volume_type = ?1",
                [&name],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Inserts or replaces a volume record.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn put_volume(&self, v: Volume) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO volumes (id, volume_type, attached_to, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET volume_type = ?2, attached_to = ?3, doc = ?5",
                params![v.id, v.volume_type, v.attached_to, v.created_at, doc(&v)],
            )?;
            Ok(())
        })
        .await
    }

    /// One volume.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get_volume(&self, id: &str) -> Result<Option<Volume>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let text: Option<String> = conn
                .query_row("SELECT doc FROM volumes WHERE id = ?1", [&id], |r| r.get(0))
                .optional()?;
            text.as_deref().map(parse).transpose()
        })
        .await
    }

    /// Volumes, oldest first; only those attached to `server_id` when given.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list_volumes(&self, server_id: Option<&str>) -> Result<Vec<Volume>, StoreError> {
        let server_id = server_id.map(str::to_string);
        self.call(move |conn| match &server_id {
            Some(s) => all(
                conn,
                "SELECT doc FROM volumes WHERE attached_to = ?1 ORDER BY created_at, id",
                Some(s),
            ),
            None => all(
                conn,
                "SELECT doc FROM volumes ORDER BY created_at, id",
                None,
            ),
        })
        .await
    }

    /// Removes a volume record.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn delete_volume(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM volumes WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    /// Inserts or replaces a snapshot record.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn put_snapshot(&self, s: Snapshot) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO snapshots (id, volume_id, created_at, doc) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET doc = ?4",
                params![s.id, s.volume_id, s.created_at, doc(&s)],
            )?;
            Ok(())
        })
        .await
    }

    /// One snapshot.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let text: Option<String> = conn
                .query_row("SELECT doc FROM snapshots WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .optional()?;
            text.as_deref().map(parse).transpose()
        })
        .await
    }

    /// Snapshots, oldest first; only those of `volume_id` when given.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list_snapshots(
        &self,
        volume_id: Option<&str>,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let volume_id = volume_id.map(str::to_string);
        self.call(move |conn| match &volume_id {
            Some(v) => all(
                conn,
                "SELECT doc FROM snapshots WHERE volume_id = ?1 ORDER BY created_at, id",
                Some(v),
            ),
            None => all(
                conn,
                "SELECT doc FROM snapshots ORDER BY created_at, id",
                None,
            ),
        })
        .await
    }

    /// Removes a snapshot record.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM snapshots WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }
}
