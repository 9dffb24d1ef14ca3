//! The operation journal: how a multi-step mutation survives a crash.
//!
//! A mutation that changes several things on the host (define a domain, create an overlay,
//! plug a tap, …) runs as an [`Operation`]. Before each step it records the step as `started`
//! with the data needed to undo it; after the step it marks it `done`. When the mutation
//! finishes it calls [`Operation::complete`]; when a step fails it calls
//! [`Operation::roll_back`], which undoes the recorded steps newest first.
//!
//! If the process dies in between (kill -9, power loss), the records stay behind.
//! [`Journal::recover`] runs at startup: every operation still `running` or `rolling_back` is
//! handed to the [`OperationHandler`] registered for its kind, which either resumes it or (the
//! default) undoes its steps. Undo must be idempotent: a step recorded as `started` may or may
//! not have happened.
//!
//! ```no_run
//! # async fn demo(journal: hyperlet::state::Journal) -> Result<(), hyperlet::state::StoreError> {
//! let mut op = journal.begin("server.create", "7d0c…", serde_json::json!({})).await?;
//! op.step("define_domain", serde_json::json!({"name": "instance-1"}), || async {
//!     /* call libvirt */
//!     Ok::<_, hyperlet::state::StoreError>(())
//! }).await?;
//! op.complete().await?;
//! # Ok(()) }
//! ```

use super::{now_rfc3339, Store, StoreError};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

/// Lifecycle of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    /// Steps are being run.
    Running,
    /// Steps are being undone (after a failure, or on restart).
    RollingBack,
    /// Finished successfully.
    Done,
    /// Every step was undone.
    RolledBack,
}

impl OpStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::RollingBack => "rolling_back",
            Self::Done => "done",
            Self::RolledBack => "rolled_back",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "running" => Self::Running,
            "rolling_back" => Self::RollingBack,
            "done" => Self::Done,
            "rolled_back" => Self::RolledBack,
            other => return Err(StoreError::Corrupt(format!("operation status {other:?}"))),
        })
    }
}

/// Lifecycle of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Recorded before the step ran; it may or may not have taken effect.
    Started,
    /// The step finished.
    Done,
    /// The step was undone.
    Undone,
}

impl StepStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Done => "done",
            Self::Undone => "undone",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "started" => Self::Started,
            "done" => Self::Done,
            "undone" => Self::Undone,
            other => return Err(StoreError::Corrupt(format!("step status {other:?}"))),
        })
    }
}

/// A recorded step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// Position in the operation, from 0.
    pub seq: i64,
    /// Name of the step, as the operation's code calls it.
    pub name: String,
    /// Where the step got to.
    pub status: StepStatus,
    /// What the step needs to be undone.
    pub data: Value,
}

/// A recorded operation with its steps.
#[derive(Debug, Clone, Serialize)]
pub struct OperationRecord {
    /// Operation id.
    pub id: String,
    /// Kind, e.g. `server.create`; selects the [`OperationHandler`].
    pub kind: String,
    /// The resource the operation works on.
    pub resource_id: String,
    /// Where the operation got to.
    pub status: OpStatus,
    /// The operation's input.
    pub input: Value,
    /// The last error, if any.
    pub error: Option<String>,
    /// Steps in order.
    pub steps: Vec<StepRecord>,
}

/// Future returned by [`OperationHandler`] methods.
pub type UndoFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// What a restarted agent does with an interrupted operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Undo the recorded steps, newest first.
    RollBack,
    /// Call [`OperationHandler::resume`] to finish the operation.
    Resume,
}

/// Knows how to undo (or finish) the steps of one kind of operation.
pub trait OperationHandler: Send + Sync + 'static {
    /// The operation kind this handler serves, e.g. `server.create`.
    fn kind(&self) -> &'static str;

    /// Undoes one step. Must succeed when the step's effect is already absent.
    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a>;

    /// What to do with an operation found unfinished at startup. Default: roll back.
    fn on_restart(&self, _op: &OperationRecord) -> RestartPolicy {
        RestartPolicy::RollBack
    }

    /// Finishes an interrupted operation (only called when [`Self::on_restart`] says so).
    fn resume<'a>(&'a self, _op: &'a OperationRecord) -> UndoFuture<'a> {
        Box::pin(async { Err("this operation kind cannot be resumed".to_string()) })
    }
}

/// What [`Journal::recover`] did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RecoveryReport {
    /// Operations whose steps were undone.
    pub rolled_back: Vec<String>,
    /// Operations finished by their handler.
    pub resumed: Vec<String>,
    /// Operations that could not be recovered, with the reason; retried on the next start.
    pub failed: Vec<(String, String)>,
}

/// The operation journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    store: Store,
    handlers: Arc<RwLock<HashMap<&'static str, Arc<dyn OperationHandler>>>>,
}

impl Journal {
    /// A journal over `store`, with no handlers yet.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            handlers: Arc::default(),
        }
    }

    /// Registers the handler of one operation kind (replacing an earlier one).
    pub fn register(&self, handler: Arc<dyn OperationHandler>) {
        let mut handlers = self.handlers.write().unwrap_or_else(|p| p.into_inner());
        handlers.insert(handler.kind(), handler);
    }

    fn handler(&self, kind: &str) -> Option<Arc<dyn OperationHandler>> {
        let handlers = self.handlers.read().unwrap_or_else(|p| p.into_inner());
        handlers.get(kind).cloned()
    }

    /// Records a new operation and returns the handle to run its steps.
    ///
    /// # Errors
    /// [`StoreError`] when the record cannot be written.
    pub async fn begin(
        &self,
        kind: &str,
        resource_id: &str,
        input: Value,
    ) -> Result<Operation, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (op_id, kind_owned, resource) = (id.clone(), kind.to_string(), resource_id.to_string());
        self.store
            .call(move |conn| {
                let now = now_rfc3339();
                conn.execute(
                    "INSERT INTO operations (id, kind, resource_id, status, input, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?5)",
                    params![op_id, kind_owned, resource, input.to_string(), now],
                )?;
                Ok(())
            })
            .await?;
        Ok(Operation {
            journal: self.clone(),
            id,
            kind: kind.to_string(),
            next_seq: 0,
        })
    }

    /// Loads one operation with its steps.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn get(&self, id: &str) -> Result<Option<OperationRecord>, StoreError> {
        let id = id.to_string();
        self.store.call(move |conn| load_operation(conn, &id)).await
    }

    /// Operations that did not finish: still `running` or `rolling_back`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn unfinished(&self) -> Result<Vec<OperationRecord>, StoreError> {
        self.store
            .call(|conn| {
                let ids: Vec<String> = conn
                    .prepare(
                        "SELECT id FROM operations WHERE status IN ('running', 'rolling_back')
                         ORDER BY created_at",
                    )?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let mut ops = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(op) = load_operation(conn, &id)? {
                        ops.push(op);
                    }
                }
                Ok(ops)
            })
            .await
    }

    /// Resumes or rolls back every unfinished operation. Run once at startup, before serving.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read; a failing handler is reported in the
    /// [`RecoveryReport`] instead.
    pub async fn recover(&self) -> Result<RecoveryReport, StoreError> {
        let mut report = RecoveryReport::default();
        for op in self.unfinished().await? {
            let Some(handler) = self.handler(&op.kind) else {
                let reason = format!("no handler is registered for operation kind {}", op.kind);
                self.set_status(&op.id, OpStatus::RollingBack, Some(&reason))
                    .await?;
                report.failed.push((op.id.clone(), reason));
                continue;
            };
            let policy = if op.status == OpStatus::RollingBack {
                RestartPolicy::RollBack
            } else {
                handler.on_restart(&op)
            };
            match policy {
                RestartPolicy::Resume => match handler.resume(&op).await {
                    Ok(()) => {
                        self.set_status(&op.id, OpStatus::Done, None).await?;
                        report.resumed.push(op.id.clone());
                    }
                    Err(reason) => {
                        self.set_status(&op.id, OpStatus::Running, Some(&reason))
                            .await?;
                        report.failed.push((op.id.clone(), reason));
                    }
                },
                RestartPolicy::RollBack => match self.undo_steps(&*handler, &op).await? {
                    Ok(()) => report.rolled_back.push(op.id.clone()),
                    Err(reason) => report.failed.push((op.id.clone(), reason)),
                },
            }
        }
        for (id, reason) in &report.failed {
            tracing::error!(op_id = %id, %reason, "could not recover an interrupted operation");
        }
        Ok(report)
    }

    /// Undoes the operation's steps newest first, recording each undo.
    async fn undo_steps(
        &self,
        handler: &dyn OperationHandler,
        op: &OperationRecord,
    ) -> Result<Result<(), String>, StoreError> {
        self.set_status(&op.id, OpStatus::RollingBack, op.error.as_deref())
            .await?;
        for step in op.steps.iter().rev() {
            if step.status == StepStatus::Undone {
                continue;
            }
            if let Err(reason) = handler.undo(op, step).await {
                let reason = format!("undo of step {} ({}) failed: {reason}", step.seq, step.name);
                self.set_status(&op.id, OpStatus::RollingBack, Some(&reason))
                    .await?;
                return Ok(Err(reason));
            }
            self.set_step_status(&op.id, step.seq, StepStatus::Undone)
                .await?;
        }
        self.set_status(&op.id, OpStatus::RolledBack, op.error.as_deref())
            .await?;
        Ok(Ok(()))
    }

    /// Retries the rollback of operation `id` whose undo failed before (the steps still to
    /// undo, newest first). Nothing to do when it is no longer rolling back.
    ///
    /// # Errors
    /// [`StoreError`] when the journal cannot be read or written; an undo failure is returned
    /// as `Ok(Err(reason))`.
    pub async fn retry_roll_back(&self, id: &str) -> Result<Result<(), String>, StoreError> {
        let Some(op) = self.get(id).await? else {
            return Ok(Ok(()));
        };
        if op.status != OpStatus::RollingBack {
            return Ok(Ok(()));
        }
        let Some(handler) = self.handler(&op.kind) else {
            return Ok(Err(format!("no handler for operation kind {}", op.kind)));
        };
        self.undo_steps(&*handler, &op).await
    }

    /// Marks an operation found open at start finished, once work its handler left running in
    /// the background has done it.
    ///
    /// # Errors
    /// [`StoreError`] when the record cannot be written.
    pub async fn mark_done(&self, id: &str) -> Result<(), StoreError> {
        self.set_status(id, OpStatus::Done, None).await
    }

    async fn set_status(
        &self,
        id: &str,
        status: OpStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let (id, error) = (id.to_string(), error.map(str::to_string));
        self.store
            .call(move |conn| {
                conn.execute(
                    "UPDATE operations SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
                    params![id, status.as_str(), error, now_rfc3339()],
                )?;
                Ok(())
            })
            .await
    }

    async fn set_step_status(
        &self,
        id: &str,
        seq: i64,
        status: StepStatus,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.store
            .call(move |conn| {
                conn.execute(
                    "UPDATE operation_steps SET status = ?3, updated_at = ?4
                     WHERE op_id = ?1 AND seq = ?2",
                    params![id, seq, status.as_str(), now_rfc3339()],
                )?;
                Ok(())
            })
            .await
    }

    /// Deletes finished operations older than `days` days. Unfinished ones are kept.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    pub async fn prune_finished(&self, days: i64) -> Result<usize, StoreError> {
        let cutoff = (chrono::Utc::now() - chrono::Duration::days(days))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.store
            .call(move |conn| {
                Ok(conn.execute(
                    "DELETE FROM operations WHERE status IN ('done', 'rolled_back') AND updated_at < ?1",
                    params![cutoff],
                )?)
            })
            .await
    }
}

/// A running operation. Record each step with [`Operation::step`], then [`Operation::complete`]
/// or [`Operation::roll_back`]. Dropping it without either leaves it `running`: the next start
/// recovers it, exactly as after a crash.
pub struct Operation {
    journal: Journal,
    id: String,
    kind: String,
    next_seq: i64,
}

impl Operation {
    /// The operation id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The operation kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Records the step as started (with `data`, what undo needs), runs `run`, and marks the
    /// step done when it succeeds. A failing step stays `started`: roll back afterwards.
    ///
    /// # Errors
    /// The step's own error, or a [`StoreError`] converted into it.
    pub async fn step<T, E, F, Fut>(&mut self, name: &str, data: Value, run: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let seq = self.record_step(name, data).await?;
        let value = run().await?;
        self.journal
            .set_step_status(&self.id, seq, StepStatus::Done)
            .await?;
        failpoint(&self.kind, name).await;
        Ok(value)
    }

    /// Records a step as started without running anything; returns its sequence number.
    ///
    /// # Errors
    /// [`StoreError`] when the record cannot be written.
    pub async fn record_step(&mut self, name: &str, data: Value) -> Result<i64, StoreError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (id, step_name) = (self.id.clone(), name.to_string());
        self.journal
            .store
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO operation_steps (op_id, seq, name, status, data, updated_at)
                     VALUES (?1, ?2, ?3, 'started', ?4, ?5)",
                    params![id, seq, step_name, data.to_string(), now_rfc3339()],
                )?;
                Ok(())
            })
            .await?;
        failpoint(&self.kind, &format!("{name}:started")).await;
        Ok(seq)
    }

    /// Marks the operation finished.
    ///
    /// # Errors
    /// [`StoreError`] when the record cannot be written.
    pub async fn complete(self) -> Result<(), StoreError> {
        self.journal
            .set_status(&self.id, OpStatus::Done, None)
            .await
    }

    /// Undoes the recorded steps newest first with the registered handler, recording `error`
    /// as the reason.
    ///
    /// # Errors
    /// [`StoreError`] when the journal cannot be written; an undo failure is returned as
    /// `Ok(Err(reason))` and left for the next start to retry.
    pub async fn roll_back(self, error: &str) -> Result<Result<(), String>, StoreError> {
        self.journal
            .set_status(&self.id, OpStatus::RollingBack, Some(error))
            .await?;
        let Some(handler) = self.journal.handler(&self.kind) else {
            return Ok(Err(format!(
                "no handler is registered for operation kind {}",
                self.kind
            )));
        };
        let Some(record) = self.journal.get(&self.id).await? else {
            return Err(StoreError::Corrupt(format!(
                "operation {} vanished",
                self.id
            )));
        };
        self.journal.undo_steps(&*handler, &record).await
    }
}

/// Environment variable naming a failpoint: `<kind>:<step>` stops the operation forever right
/// after that step is done, `<kind>:<step>:started` right after it is recorded (before it
/// runs), so crash tests can SIGKILL the agent at a precise point.
pub const FAILPOINT_ENV: &str = "HYPERLET_FAILPOINT";

/// Environment variable that turns the failpoint into a pause: the operation waits that many
/// milliseconds there and goes on (tests of work that outlives its request's deadline).
pub const FAILPOINT_DELAY_ENV: &str = "HYPERLET_FAILPOINT_DELAY_MS";

/// Stops (or pauses) here when [`FAILPOINT_ENV`] names `<kind>:<step>`.
pub(crate) async fn failpoint(kind: &str, step: &str) {
    let Ok(point) = std::env::var(FAILPOINT_ENV) else {
        return;
    };
    if point == format!("{kind}:{step}") {
        let delay = std::env::var(FAILPOINT_DELAY_ENV)
            .ok()
            .and_then(|d| d.parse::<u64>().ok());
        if let Some(ms) = delay {
            tracing::warn!(
                kind,
                step,
                ms,
                "failpoint reached; this operation pauses here"
            );
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            return;
        }
        tracing::warn!(kind, step, "failpoint reached; this operation stops here");
        std::future::pending::<()>().await;
    }
}

fn load_operation(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Option<OperationRecord>, StoreError> {
    let row = conn
        .query_row(
            "SELECT id, kind, resource_id, status, input, error FROM operations WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((id, kind, resource_id, status, input, error)) = row else {
        return Ok(None);
    };
    let mut stmt = conn.prepare(
        "SELECT seq, name, status, data FROM operation_steps WHERE op_id = ?1 ORDER BY seq",
    )?;
    let raw: Vec<(i64, String, String, String)> = stmt
        .query_map(params![id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut steps = Vec::with_capacity(raw.len());
    for (seq, name, status, data) in raw {
        steps.push(StepRecord {
            seq,
            name,
            status: StepStatus::parse(&status)?,
            data: parse_json(&data)?,
        });
    }
    Ok(Some(OperationRecord {
        status: OpStatus::parse(&status)?,
        input: parse_json(&input)?,
        id,
        kind,
        resource_id,
        error,
        steps,
    }))
}

fn parse_json(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("bad JSON in journal: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records undo calls instead of touching the host.
    struct Recorder {
        undone: Arc<Mutex<Vec<String>>>,
        fail_on: Option<&'static str>,
    }

    impl OperationHandler for Recorder {
        fn kind(&self) -> &'static str {
            "test.op"
        }
        fn undo<'a>(&'a self, _op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
            Box::pin(async move {
                if self.fail_on == Some(step.name.as_str()) {
                    return Err("disk on fire".into());
                }
                self.undone.lock().unwrap().push(step.name.clone());
                Ok(())
            })
        }
    }

    fn journal_with(
        fail_on: Option<&'static str>,
    ) -> (tempfile::TempDir, Journal, Arc<Mutex<Vec<String>>>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let journal = Journal::new(store);
        let undone = Arc::new(Mutex::new(Vec::new()));
        journal.register(Arc::new(Recorder {
            undone: undone.clone(),
            fail_on,
        }));
        (dir, journal, undone)
    }

    #[tokio::test]
    async fn failed_step_rolls_back_newest_first() {
        let (_dir, journal, undone) = journal_with(None);
        let mut op = journal.begin("test.op", "r1", Value::Null).await.unwrap();
        op.step("a", Value::Null, || async { Ok::<_, StoreError>(()) })
            .await
            .unwrap();
        op.step("b", Value::Null, || async { Ok::<_, StoreError>(()) })
            .await
            .unwrap();
        let err = op
            .step("c", Value::Null, || async {
                Err::<(), _>(StoreError::Corrupt("boom".into()))
            })
            .await;
        assert!(err.is_err());
        let id = op.id().to_string();
        op.roll_back("boom").await.unwrap().unwrap();
        assert_eq!(*undone.lock().unwrap(), ["c", "b", "a"]);
        let record = journal.get(&id).await.unwrap().unwrap();
        assert_eq!(record.status, OpStatus::RolledBack);
        assert!(record.steps.iter().all(|s| s.status == StepStatus::Undone));
        assert!(journal.unfinished().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn dropped_operation_is_recovered() {
        let (_dir, journal, undone) = journal_with(None);
        let mut op = journal.begin("test.op", "r1", Value::Null).await.unwrap();
        op.step("a", Value::Null, || async { Ok::<_, StoreError>(()) })
            .await
            .unwrap();
        op.record_step("b", Value::Null).await.unwrap();
        drop(op);
        let report = journal.recover().await.unwrap();
        assert_eq!(report.rolled_back.len(), 1);
        assert_eq!(*undone.lock().unwrap(), ["b", "a"]);
    }

    #[tokio::test]
    async fn failed_undo_is_retried_on_next_recovery() {
        let (dir, journal, _undone) = journal_with(Some("b"));
        let mut op = journal.begin("test.op", "r1", Value::Null).await.unwrap();
        op.step("a", Value::Null, || async { Ok::<_, StoreError>(()) })
            .await
            .unwrap();
        op.step("b", Value::Null, || async { Ok::<_, StoreError>(()) })
            .await
            .unwrap();
        drop(op);
        let report = journal.recover().await.unwrap();
        assert_eq!(report.failed.len(), 1);
        assert!(report.failed[0].1.contains("disk on fire"));
        // A fixed handler finishes the job on the next start.
        let store = Store::open(&dir.path().join("db")).unwrap();
        let journal = Journal::new(store);
        let undone = Arc::new(Mutex::new(Vec::new()));
        journal.register(Arc::new(Recorder {
            undone: undone.clone(),
            fail_on: None,
        }));
        let report = journal.recover().await.unwrap();
        assert_eq!(report.rolled_back.len(), 1);
        assert_eq!(*undone.lock().unwrap(), ["b", "a"]);
    }

    #[tokio::test]
    async fn completed_operation_is_left_alone() {
        let (_dir, journal, undone) = journal_with(None);
        let mut op = journal.begin("test.op", "r1", Value::Null).await.unwrap();
        op.step("a", Value::Null, || async { Ok::<_, StoreError>(()) })
            .await
            .unwrap();
        op.complete().await.unwrap();
        let report = journal.recover().await.unwrap();
        assert!(report.rolled_back.is_empty() && report.failed.is_empty());
        assert!(undone.lock().unwrap().is_empty());
    }
}
