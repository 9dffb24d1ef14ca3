//! The embedded durable store.
//!
//! One SQLite database (`<state_dir>/hyperlet.db`, WAL mode, `synchronous=FULL`) holds all of
//! the agent's records. SQLite was chosen over redb because later features need relational
//! queries (ports by network, volumes by backend, allocations summed per host), because the
//! `sqlite3` shell lets an operator inspect a node by hand, and because its WAL durability is
//! proven by decades of crash testing.
//!
//! All access goes through [`Store::call`], which runs a closure on a blocking thread with the
//! connection, so the async runtime never waits on disk I/O. On top of it sit:
//!
//! * [`Journal`] — the operation journal every multi-step mutation runs under;
//! * [`EventLog`] — the numbered event stream behind `GET /v1/events`;
//! * settings — small JSON documents by key ([`Store::get_setting`], [`Store::put_setting`]).

mod create_requests;
mod events;
mod images;
mod journal;
mod moved;
mod networks;
mod schema;
mod security_groups;
mod servers;
mod settings;
mod volumes;

pub use events::{Event, EventLog};
pub use images::{ImageRecord, ImageStatus, StoredImage};
pub(crate) use journal::failpoint;
pub use journal::{
    Journal, OpStatus, Operation, OperationHandler, OperationRecord, RecoveryReport, RestartPolicy,
    StepRecord, StepStatus, UndoFuture, FAILPOINT_ENV,
};
pub use moved::MovedServer;
pub use networks::{AllocError, IpRequest, NewPort, PortFilter};
pub use security_groups::{new_group, GroupError, PortChange};
pub use servers::ServerRow;
pub use volumes::{Snapshot, Volume, VolumeSource, VolumeType};

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Errors of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("Cannot open the store at {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("Store query failed")]
    Query(#[from] rusqlite::Error),
    /// A stored record could not be decoded.
    #[error("Stored record is corrupt: {0}")]
    Corrupt(String),
    /// The blocking task running the query was lost.
    #[error("Store worker failed: {0}")]
    Worker(String),
}

/// Handle to the embedded database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&mut conn).map_err(open_err)?;
        security_groups::ensure_default(&mut conn).map_err(|e| match e {
            StoreError::Query(source) => open_err(source),
            other => other,
        })?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on a blocking thread.
    ///
    /// # Errors
    /// Whatever `f` returns, or [`StoreError::Worker`] when the blocking task panicked.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poison| poison.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    /// Runs `f` with the connection on the current thread (for startup and tests).
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub fn call_blocking<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut guard = self
            .conn
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut guard)
    }

    /// Writes the WAL back into the main database file. Called on shutdown.
    ///
    /// # Errors
    /// [`StoreError::Query`] when the checkpoint fails.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.call_blocking(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

/// Current time as RFC 3339 text with milliseconds, the format of every stored timestamp.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
