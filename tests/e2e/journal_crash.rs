//! The operation journal under SIGKILL: a child process runs a multi-step operation that
//! creates files, is killed mid-way, and recovery in a fresh process removes every file the
//! operation created (including the one whose step was only `started`).

use hyperlet::state::{
    Journal, OpStatus, OperationHandler, OperationRecord, StepRecord, Store, StoreError, UndoFuture,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "HYPERLET_JOURNAL_CHILD_DIR";
const CHILD_STOP: &str = "HYPERLET_JOURNAL_CHILD_STOP";

/// Undoes `create_file` steps by removing the file named in the step data.
struct FilesHandler;

impl OperationHandler for FilesHandler {
    fn kind(&self) -> &'static str {
        "test.create_files"
    }
    fn undo<'a>(&'a self, _op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let path = PathBuf::from(step.data["path"].as_str().ok_or("no path")?);
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// Runs in the child process: creates files a, b, c in steps and hangs where told, after
/// writing `ready` so the parent knows where it is.
#[test]
fn child_runs_operation() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // only meaningful as the parent's child process
    };
    let stop = std::env::var(CHILD_STOP).unwrap();
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(&dir.join("journal.db")).unwrap();
        let journal = Journal::new(store);
        let mut op = journal
            .begin("test.create_files", "r1", json!({}))
            .await
            .unwrap();
        for name in ["a", "b", "c"] {
            let path = dir.join(name);
            let data = json!({ "path": path });
            if stop == format!("before-effect-{name}") {
                op.record_step("create_file", data).await.unwrap();
                hang(&dir);
            }
            op.step("create_file", data, || async {
                std::fs::write(&path, name).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
            if stop == format!("after-{name}") {
                hang(&dir);
            }
        }
        op.complete().await.unwrap();
    });
}

fn hang(dir: &Path) -> ! {
    std::fs::write(dir.join("ready"), "").unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn kill_child_at(stop: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "journal_crash::child_runs_operation",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_STOP, stop)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.path().join("ready").exists() {
        assert!(Instant::now() < deadline, "the child never reached {stop}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child exited before {stop}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    dir
}

fn recover(dir: &Path) -> (hyperlet::state::RecoveryReport, Journal) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(&dir.join("journal.db")).unwrap();
    let journal = Journal::new(store);
    journal.register(Arc::new(FilesHandler));
    let report = rt.block_on(journal.recover()).unwrap();
    (report, journal)
}

#[test]
fn sigkill_between_steps_rolls_back_on_restart() {
    let dir = kill_child_at("after-b");
    assert!(dir.path().join("a").exists() && dir.path().join("b").exists());
    let (report, journal) = recover(dir.path());
    assert_eq!(report.rolled_back.len(), 1, "{report:?}");
    for f in ["a", "b", "c"] {
        assert!(!dir.path().join(f).exists(), "{f} was leaked");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let op = rt
        .block_on(journal.get(&report.rolled_back[0]))
        .unwrap()
        .unwrap();
    assert_eq!(op.status, OpStatus::RolledBack);
    // A second recovery finds nothing left to do.
    let (again, _) = recover(dir.path());
    assert!(again.rolled_back.is_empty() && again.failed.is_empty());
}

#[test]
fn sigkill_inside_a_started_step_rolls_back_on_restart() {
    let dir = kill_child_at("before-effect-c");
    assert!(!dir.path().join("c").exists());
    let (report, _) = recover(dir.path());
    assert_eq!(report.rolled_back.len(), 1, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    for f in ["a", "b"] {
        assert!(!dir.path().join(f).exists(), "{f} was leaked");
    }
}
