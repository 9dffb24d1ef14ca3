//! Fingerprints of creates that chose their own id (`POST …` with `id`): see
//! `ops::idempotent`.

use super::{now_rfc3339, Store, StoreError};
use rusqlite::{params, OptionalExtension};

impl Store {
    /// The fingerprint recorded for a create of `kind` with `id`, if any.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn create_fingerprint(
        &self,
        kind: &'static str,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT fingerprint FROM create_requests WHERE kind = ?1 AND id = ?2",
                    params![kind, id],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    /// Records (or replaces) the fingerprint of a create of `kind` with `id`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn put_create_fingerprint(
        &self,
        kind: &'static str,
        id: &str,
        fingerprint: &str,
    ) -> Result<(), StoreError> {
        let (id, fingerprint) = (id.to_string(), fingerprint.to_string());
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO create_requests (kind, id, fingerprint, created_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(kind, id) DO UPDATE SET fingerprint = excluded.fingerprint,
                     created_at = excluded.created_at",
                params![kind, id, fingerprint, now_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }
}
