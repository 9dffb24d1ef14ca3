//! Image records (`images` table).

use super::{now_rfc3339, Store, StoreError};
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;
use std::collections::BTreeMap;

/// Lifecycle of an image, as glance names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    /// Created, waiting for its bytes.
    Queued,
    /// Bytes are being uploaded, inspected or converted.
    Saving,
    /// Ready to boot from.
    Active,
}

impl ImageStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Saving => "saving",
            Self::Active => "active",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "queued" => Self::Queued,
            "saving" => Self::Saving,
            "active" => Self::Active,
            other => return Err(StoreError::Corrupt(format!("image status {other:?}"))),
        })
    }
}

/// One image.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ImageRecord {
    /// Image id (UUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// Lifecycle status.
    pub status: ImageStatus,
    /// Format of the uploaded bytes: raw, qcow2, vmdk, vdi, vhdx, aki, ari.
    pub disk_format: String,
    /// bare, aki (kernel) or ari (ramdisk).
    pub container_format: String,
    /// Free-form properties (`kernel_id`, `ramdisk_id`, `os_command_line`, `architecture`, …).
    pub properties: BTreeMap<String, String>,
    /// SHA-256 of the uploaded bytes (hex).
    pub checksum: Option<String>,
    /// Always `sha256`.
    pub os_hash_algo: String,
    /// Size of the uploaded bytes.
    pub size: Option<u64>,
    /// Virtual disk size in bytes (as inspected).
    pub virtual_size: Option<u64>,
    /// Format of the cached copy (raw or qcow2; other formats are converted to qcow2).
    pub stored_format: Option<String>,
    /// Why the last upload failed.
    pub error: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Cache file name (internal).
    #[serde(skip)]
    pub blob: Option<String>,
}

const COLUMNS: &str = "id, name, status, disk_format, container_format, properties, checksum, \
                       size, virtual_size, stored_format, blob, error, created_at, updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(ImageRecord, String, String)> {
    Ok((
        ImageRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            status: ImageStatus::Queued,
            disk_format: r.get(3)?,
            container_format: r.get(4)?,
            properties: BTreeMap::new(),
            checksum: r.get(6)?,
            os_hash_algo: "sha256".into(),
            size: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
            virtual_size: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
            stored_format: r.get(9)?,
            blob: r.get(10)?,
            error: r.get(11)?,
            created_at: r.get(12)?,
            updated_at: r.get(13)?,
        },
        r.get(2)?,
        r.get(5)?,
    ))
}

fn finish(raw: (ImageRecord, String, String)) -> Result<ImageRecord, StoreError> {
    let (mut image, status, properties) = raw;
    image.status = ImageStatus::parse(&status)?;
    image.properties = serde_json::from_str(&properties)
        .map_err(|e| StoreError::Corrupt(format!("image {} properties: {e}", image.id)))?;
    Ok(image)
}

/// The bytes of an uploaded image once stored.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// SHA-256 of the upload.
    pub checksum: String,
    /// Upload size.
    pub size: u64,
    /// Virtual size.
    pub virtual_size: u64,
    /// raw or qcow2.
    pub stored_format: String,
    /// Cache file name.
    pub blob: String,
}

impl Store {
    /// Inserts a new `queued` image.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn insert_image(
        &self,
        id: &str,
        name: &str,
        disk_format: &str,
        container_format: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<ImageRecord, StoreError> {
        let (id, name, disk, container) = (
            id.to_string(),
            name.to_string(),
            disk_format.to_string(),
            container_format.to_string(),
        );
        let props = serde_json::to_string(properties).expect("string map serialises");
        let id2 = id.clone();
        self.call(move |conn| {
            let now = now_rfc3339();
            conn.execute(
                "INSERT INTO images (id, name, status, disk_format, container_format, properties,
                                     created_at, updated_at)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?6)",
                params![id, name, disk, container, props, now],
            )?;
            Ok(())
        })
        .await?;
        self.get_image(&id2)
            .await?
            .ok_or_else(|| StoreError::Corrupt("image vanished after insert".into()))
    }

    /// One image.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM images WHERE id = ?1"),
                params![id],
                from_row,
            )
            .optional()?
            .map(finish)
            .transpose()
        })
        .await
    }

    /// All images, oldest first.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM images ORDER BY created_at, id"
            ))?;
            let rows = stmt.query_map([], from_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(finish(row?)?);
            }
            Ok(out)
        })
        .await
    }

    /// Moves a `queued` image to `saving`; returns `false` when it was not `queued` (another
    /// upload is running, or it is already active).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn begin_image_upload(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            Ok(conn.execute(
                "UPDATE images SET status = 'saving', error = NULL, updated_at = ?2
                 WHERE id = ?1 AND status = 'queued'",
                params![id, now_rfc3339()],
            )? == 1)
        })
        .await
    }

    /// Marks an upload failed: back to `queued` with the reason, so it can be retried.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn fail_image_upload(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let (id, error) = (id.to_string(), error.to_string());
        self.call(move |conn| {
            conn.execute(
                "UPDATE images SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, ImageStatus::Queued.as_str(), error, now_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }

    /// Marks an image `active` with its stored bytes.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn activate_image(&self, id: &str, stored: &StoredImage) -> Result<(), StoreError> {
        let id = id.to_string();
        let s = stored.clone();
        self.call(move |conn| {
            conn.execute(
                "UPDATE images SET status = 'active', checksum = ?2, size = ?3, virtual_size = ?4,
                        stored_format = ?5, blob = ?6, error = NULL, updated_at = ?7
                 WHERE id = ?1",
                params![
                    id,
                    s.checksum,
                    s.size as i64,
                    s.virtual_size as i64,
                    s.stored_format,
                    s.blob,
                    now_rfc3339()
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Uploads left `saving` by a crash go back to `queued`; returns how many.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn reset_interrupted_uploads(&self) -> Result<usize, StoreError> {
        self.call(|conn| {
            Ok(conn.execute(
                "UPDATE images SET status = 'queued',
                        error = 'upload interrupted by an agent restart; upload again',
                        updated_at = ?1
                 WHERE status = 'saving'",
                params![now_rfc3339()],
            )?)
        })
        .await
    }

    /// Cache file names still referenced by an image.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn referenced_blobs(&self) -> Result<Vec<String>, StoreError> {
        self.call(|conn| {
            let mut stmt =
                conn.prepare("SELECT DISTINCT blob FROM images WHERE blob IS NOT NULL")?;
            let blobs = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(blobs)
        })
        .await
    }

    /// Deletes an image record; returns its blob when no other image uses that blob any more.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn delete_image(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let blob: Option<String> = tx
                .query_row("SELECT blob FROM images WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })
                .optional()?
                .flatten();
            tx.execute("DELETE FROM images WHERE id = ?1", params![id])?;
            let orphan = match blob {
                Some(blob) => {
                    let users: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM images WHERE blob = ?1",
                        params![blob],
                        |r| r.get(0),
                    )?;
                    (users == 0).then_some(blob)
                }
                None => None,
            };
            tx.commit()?;
            Ok(orphan)
        })
        .await
    }
}
