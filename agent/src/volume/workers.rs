//! A few threads of their own for blocking calls on mounted shares.
//!
//! A hard NFS mount whose server stops answering blocks every system call on it,
//! uninterruptibly. Run on tokio's shared blocking pool, such calls would pile up until they
//! starve everything else that needs it (image uploads, libvirt, DNS). Calls on mounted shares
//! therefore run here: [`WORKERS`] threads fed by a queue of [`QUEUE`] jobs. The caller waits
//! at most its deadline; a job whose caller gave up before a worker took it is dropped
//! unstarted, and when the queue is full the call is refused at once. A hung share costs at
//! most these threads.

use super::VolumeError;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Worker threads.
pub const WORKERS: usize = 4;
/// Jobs waiting for a worker, at most.
const QUEUE: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

fn queue() -> &'static SyncSender<Job> {
    static QUEUE_TX: OnceLock<SyncSender<Job>> = OnceLock::new();
    QUEUE_TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WORKERS {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("share-io-{i}"))
                .spawn(move || work(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a worker for mounted shares");
            }
        }
        tx
    })
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        job();
    }
}

/// Runs `job` (a blocking call on a mounted share: `op` on `path`) on the workers and waits
/// for it at most `deadline`.
///
/// # Errors
/// What `job` returns; [`VolumeError::WorkersBusy`] when the queue is full;
/// [`VolumeError::Io`] with a timed-out error when no answer came within `deadline` (the
/// job may still run later on a worker, or never when it had not started).
pub async fn run<T: Send + 'static>(
    op: &'static str,
    path: PathBuf,
    deadline: Duration,
    job: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, VolumeError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let boxed: Job = Box::new(move || {
        if tx.is_closed() {
            return; // The caller gave up: do not start late.
        }
        let _ = tx.send(job());
    });
    match queue().try_send(boxed) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(VolumeError::WorkersBusy { workers: WORKERS }),
        Err(TrySendError::Disconnected(_)) => {
            return Err(VolumeError::Io {
                op,
                path,
                source: std::io::Error::other("the workers for mounted shares are gone"),
            })
        }
    }
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(VolumeError::Io {
            op,
            path,
            source: std::io::Error::other("the worker for mounted shares failed"),
        }),
        Err(_) => Err(VolumeError::Io {
            op,
            path,
            source: std::io::Error::new(
                ErrorKind::TimedOut,
                format!("no answer within {deadline:?} (is the share hung?)"),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn hung_calls_cost_only_the_workers_and_late_jobs_never_start() {
        // Every worker stuck (as on a hung hard mount) …
        let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        for _ in 0..WORKERS {
            let release = Arc::clone(&release);
            let stuck = run(
                "stat",
                "/hung".into(),
                Duration::from_millis(50),
                move || {
                    let (lock, cv) = &*release;
                    let mut go = lock.lock().unwrap();
                    while !*go {
                        go = cv.wait(go).unwrap();
                    }
                    Ok(())
                },
            );
            let e = stuck.await.unwrap_err();
            assert!(e.to_string().contains("stat"), "{e}");
        }
        // … a new call times out, and does not run once they are free again …
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let e = run(
            "chmod",
            "/hung".into(),
            Duration::from_millis(50),
            move || {
                flag.store(true, Ordering::SeqCst);
                Ok(())
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, VolumeError::Io { source, .. } if source.kind() == ErrorKind::TimedOut),
            "{e}"
        );
        // … while tokio's blocking pool stays free.
        tokio::task::spawn_blocking(|| ())
            .await
            .expect("the shared blocking pool answers");
        {
            let (lock, cv) = &*release;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        let answer = run("stat", "/ok".into(), Duration::from_secs(5), || Ok(7))
            .await
            .unwrap();
        assert_eq!(answer, 7);
        assert!(
            !ran.load(Ordering::SeqCst),
            "a call its caller gave up on was started"
        );
    }
}
