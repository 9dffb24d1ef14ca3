//! Server records (`servers` table). The spec is stored as JSON and owned by `ops::servers`.

use super::{now_rfc3339, Store, StoreError};
use rusqlite::{params, OptionalExtension, Row};

/// A server row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRow {
    /// Server id (UUID, also the domain UUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// Status (`BUILD`, `ACTIVE`, …).
    pub status: String,
    /// Task in progress (`deleting`, `rebooting`, …), if any.
    pub task_state: Option<String>,
    /// Root image id.
    pub image_id: String,
    /// The spec as JSON text.
    pub spec: String,
    /// Why the server is in ERROR.
    pub fault: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

const COLUMNS: &str = "id, name, status, task_state, image_id, spec, fault, created_at, updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ServerRow> {
    Ok(ServerRow {
        id: r.get(0)?,
        name: r.get(1)?,
        status: r.get(2)?,
        task_state: r.get(3)?,
        image_id: r.get(4)?,
        spec: r.get(5)?,
        fault: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

impl Store {
    /// Inserts a server row.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn insert_server(&self, row: ServerRow) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO servers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    row.id,
                    row.name,
                    row.status,
                    row.task_state,
                    row.image_id,
                    row.spec,
                    row.fault,
                    row.created_at,
                    row.updated_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// One server row.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get_server(&self, id: &str) -> Result<Option<ServerRow>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM servers WHERE id = ?1"),
                    params![id],
                    from_row,
                )
                .optional()?)
        })
        .await
    }

    /// All server rows, oldest first.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list_servers(&self) -> Result<Vec<ServerRow>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM servers ORDER BY created_at, id"
            ))?;
            let rows = stmt
                .query_map([], from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Sets status, task state and fault; returns `false` when the server does not exist.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn set_server_status(
        &self,
        id: &str,
        status: &str,
        task_state: Option<&str>,
        fault: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (id, status) = (id.to_string(), status.to_string());
        let (task, fault) = (task_state.map(str::to_string), fault.map(str::to_string));
        self.call(move |conn| {
            Ok(conn.execute(
                "UPDATE servers SET status = ?2, task_state = ?3, fault = ?4, updated_at = ?5
                 WHERE id = ?1",
                params![id, status, task, fault, now_rfc3339()],
            )? == 1)
        })
        .await
    }

    /// Replaces the spec (and root image) of a server.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn set_server_spec(
        &self,
        id: &str,
        image_id: &str,
        spec: &str,
    ) -> Result<(), StoreError> {
        let (id, image, spec) = (id.to_string(), image_id.to_string(), spec.to_string());
        self.call(move |conn| {
            conn.execute(
                "UPDATE servers SET image_id = ?2, spec = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, image, spec, now_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes a server row.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn delete_server(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM servers WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await
    }

    /// Ids of servers that use an image, as root image or as its kernel or ramdisk.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn servers_using_image(&self, image_id: &str) -> Result<Vec<String>, StoreError> {
        let id = image_id.to_string();
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id FROM servers
                 WHERE image_id = ?1
                    OR json_extract(spec, '$.kernel_image_id') = ?1
                    OR json_extract(spec, '$.ramdisk_image_id') = ?1
                 ORDER BY created_at",
            )?;
            let ids = stmt
                .query_map(params![id], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(ids)
        })
        .await
    }
}
