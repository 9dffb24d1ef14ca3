//! Tombstones of servers that moved to another node: `GET /v1/servers/{id}` on the old node
//! answers 301 with where the server went.

use super::{now_rfc3339, Store, StoreError};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// Where a server went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MovedServer {
    /// The server's id.
    pub id: String,
    /// Its name when it left.
    pub name: String,
    /// The node it moved to.
    pub node: String,
    /// That node's API URL.
    pub api_url: String,
    /// When it moved (RFC 3339).
    pub moved_at: String,
}

impl Store {
    /// Records that server `id` now lives on `node` (replacing an older tombstone).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn put_moved(
        &self,
        id: &str,
        name: &str,
        node: &str,
        api_url: &str,
    ) -> Result<(), StoreError> {
        let (id, name, node, url) = (
            id.to_string(),
            name.to_string(),
            node.to_string(),
            api_url.to_string(),
        );
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO moved_servers (id, name, node, api_url, moved_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, node = excluded.node,
                     api_url = excluded.api_url, moved_at = excluded.moved_at",
                params![id, name, node, url, now_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }

    /// Where server `id` went, if it moved away from this node.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get_moved(&self, id: &str) -> Result<Option<MovedServer>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT id, name, node, api_url, moved_at FROM moved_servers WHERE id = ?1",
                    params![id],
                    |r| {
                        Ok(MovedServer {
                            id: r.get(0)?,
                            name: r.get(1)?,
                            node: r.get(2)?,
                            api_url: r.get(3)?,
                            moved_at: r.get(4)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    /// Forgets a tombstone (the server came back to this node).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn delete_moved(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM moved_servers WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await
    }
}
