//! Settings: small JSON documents stored by key (e.g. the host's enabled/disabled status).

use super::{now_rfc3339, Store, StoreError};
use rusqlite::{params, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

impl Store {
    /// Reads the setting `key`, or `None` when it was never written.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or the value does not decode as `T`.
    pub async fn get_setting<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let key = key.to_string();
        self.call(move |conn| {
            let text: Option<String> = conn
                .query_row(
                    "SELECT value FROM settings WHERE key = ?1",
                    params![key],
                    |r| r.get(0),
                )
                .optional()?;
            text.map(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| StoreError::Corrupt(format!("setting {key}: {e}")))
            })
            .transpose()
        })
        .await
    }

    /// Writes the setting `key`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn put_setting<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let key = key.to_string();
        let text = serde_json::to_string(value)
            .map_err(|e| StoreError::Corrupt(format!("setting {key}: {e}")))?;
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![key, text, now_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }
}
