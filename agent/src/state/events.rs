//! The event log: numbered state changes, kept in a bounded backlog for resumption.
//!
//! [`EventLog::publish`] stores the event (SQLite assigns the next sequence number) and
//! broadcasts it to live subscribers under the same lock, so subscribers see events in sequence
//! order. [`EventLog::since`] reads the backlog after a given sequence number; together they
//! give `GET /v1/events` its `Last-Event-ID` resumption.
//!
//! Replays go through [`EventLog::replay_page`]: pages of events as JSON text straight from the
//! stored columns (no parse and re-serialise), read by one replay at a time. Hundreds of
//! clients replaying a large backlog at once then queue for the store instead of filling the
//! blocking pool and the CPUs, and every other request keeps being answered.

use super::{now_rfc3339, Store, StoreError};
use rusqlite::params;
use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, Semaphore};

/// One state change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// Sequence number; strictly increasing, never reused.
    pub seq: u64,
    /// When it happened (RFC 3339).
    pub time: String,
    /// What happened, e.g. `agent.started`, `server.status`.
    pub kind: String,
    /// Type of the resource that changed, e.g. `host`, `server`.
    pub resource_type: String,
    /// Id of the resource that changed.
    pub resource_id: String,
    /// Details of the change.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// The event log. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    store: Store,
    live: broadcast::Sender<Event>,
    backlog: u64,
    published: Arc<AtomicU64>,
    /// One backlog page read at a time, whoever asks.
    replay_gate: Arc<Semaphore>,
}

/// One stored event as the JSON text of an [`Event`], for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventJson {
    /// Sequence number.
    pub seq: u64,
    /// What happened (the SSE event name).
    pub kind: String,
    /// The whole event as compact JSON (no line breaks).
    pub json: String,
}

/// How many published events between two prunes of the backlog.
const PRUNE_EVERY: u64 = 64;

impl EventLog {
    /// An event log over `store` keeping at most `backlog` past events.
    pub fn new(store: Store, backlog: u64) -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            store,
            live,
            backlog,
            published: Arc::default(),
            replay_gate: Arc::new(Semaphore::new(1)),
        }
    }

    /// Stores and broadcasts an event; returns it with its sequence number.
    ///
    /// # Errors
    /// [`StoreError`] when the event cannot be stored (it is then not broadcast either).
    pub async fn publish(
        &self,
        kind: &str,
        resource_type: &str,
        resource_id: &str,
        data: Value,
    ) -> Result<Event, StoreError> {
        let live = self.live.clone();
        let prune = self
            .published
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PRUNE_EVERY);
        let backlog = self.backlog;
        let (kind, resource_type, resource_id) = (
            kind.to_string(),
            resource_type.to_string(),
            resource_id.to_string(),
        );
        self.store
            .call(move |conn| {
                let time = now_rfc3339();
                conn.execute(
                    "INSERT INTO events (time, kind, resource_type, resource_id, data)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![time, kind, resource_type, resource_id, data.to_string()],
                )?;
                let seq = conn.last_insert_rowid() as u64;
                if prune {
                    conn.execute(
                        "DELETE FROM events WHERE seq <= ?1",
                        params![seq.saturating_sub(backlog) as i64],
                    )?;
                }
                let event = Event {
                    seq,
                    time,
                    kind,
                    resource_type,
                    resource_id,
                    data,
                };
                // Sent while the connection is held, so live order equals sequence order.
                let _ = live.send(event.clone());
                Ok(event)
            })
            .await
    }

    /// A receiver of events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Stored events with a sequence number above `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn since(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.store
            .call(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT seq, time, kind, resource_type, resource_id, data FROM events
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![after as i64, limit as i64], stored_row)?;
                let mut events = Vec::new();
                for row in rows {
                    let (seq, time, kind, resource_type, resource_id, data) = row?;
                    events.push(Event {
                        seq: seq as u64,
                        time,
                        kind,
                        resource_type,
                        resource_id,
                        data: serde_json::from_str(&data)
                            .map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?,
                    });
                }
                Ok(events)
            })
            .await
    }

    /// Stored events with a sequence number above `after`, oldest first, at most `limit`, as
    /// JSON text; one such read runs at a time (the others wait their turn).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or a stored event is not valid.
    pub async fn replay_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventJson>, StoreError> {
        let _turn = self
            .replay_gate
            .acquire()
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        self.store
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, time, kind, resource_type, resource_id, data FROM events
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![after as i64, limit as i64], stored_row)?;
                let mut page = Vec::new();
                for row in rows {
                    let (seq, time, kind, resource_type, resource_id, data) = row?;
                    // Stored as compact JSON by `publish`: checked, then spliced in as is.
                    serde_json::from_str::<serde::de::IgnoredAny>(&data)
                        .map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?;
                    let text = |v: &str| serde_json::Value::from(v).to_string();
                    let json = format!(
                        "{{\"seq\":{seq},\"time\":{},\"kind\":{},\"resource_type\":{},\"resource_id\":{},\"data\":{data}}}",
                        text(&time),
                        text(&kind),
                        text(&resource_type),
                        text(&resource_id),
                    );
                    page.push(EventJson {
                        seq: seq as u64,
                        kind,
                        json,
                    });
                }
                Ok(page)
            })
            .await
    }

    /// The oldest and newest stored sequence numbers, or `None` when the backlog is empty.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn bounds(&self) -> Result<Option<(u64, u64)>, StoreError> {
        self.store
            .call(|conn| {
                let (low, high): (Option<i64>, Option<i64>) =
                    conn.query_row("SELECT MIN(seq), MAX(seq) FROM events", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                Ok(low.zip(high).map(|(l, h)| (l as u64, h as u64)))
            })
            .await
    }
}

/// One stored event as read by [`EventLog::since`] and [`EventLog::replay_page`]:
/// (seq, time, kind, resource type, resource id, data as JSON text).
type StoredRow = (i64, String, String, String, String, String);

fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sequence_increases_and_backlog_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let log = EventLog::new(store, 10);
        let mut last = 0;
        for i in 0..(PRUNE_EVERY + 5) {
            let e = log
                .publish("test", "host", "h", serde_json::json!({ "i": i }))
                .await
                .unwrap();
            assert!(e.seq > last);
            last = e.seq;
        }
        let (low, high) = log.bounds().await.unwrap().unwrap();
        assert_eq!(high, last);
        assert!(
            high - low < 10 + PRUNE_EVERY,
            "backlog not pruned: {low}..{high}"
        );
        let tail = log.since(last - 3, 100).await.unwrap();
        assert_eq!(
            tail.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [last - 2, last - 1, last]
        );
        let page = log.replay_page(last - 3, 2).await.unwrap();
        assert_eq!(page.len(), 2);
        for (raw, event) in page.iter().zip(&tail) {
            assert_eq!(raw.seq, event.seq);
            assert_eq!(raw.kind, event.kind);
            assert!(!raw.json.contains('\n'));
            let parsed: serde_json::Value = serde_json::from_str(&raw.json).unwrap();
            assert_eq!(parsed, serde_json::to_value(event).unwrap());
        }
    }
}
