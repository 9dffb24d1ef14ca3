//! A fixed pool of OS threads for libvirt's blocking calls.
//!
//! libvirt's C API blocks, and a wedged libvirtd (or the QEMU behind it) can keep a call
//! blocked for minutes. Running such calls on tokio's blocking pool lets every stuck call take
//! one more thread from the pool the store also needs; this pool has `size` threads of its own,
//! made once, and never more. A caller first waits for a free worker (a slot), then for its
//! answer, both within one deadline. A worker stuck in libvirt keeps its slot until libvirt
//! answers; when every worker is stuck, calls fail fast with [`PoolError::Busy`] instead of
//! piling up.
//!
//! ```ignore
//! let pool = WorkerPool::new(4, "libvirt");
//! let answer = pool.run(Duration::from_secs(5), || 2 + 2).await?;
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

/// Why a job gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every worker was busy for the whole deadline.
    #[error("All {workers} workers stayed busy")]
    Busy {
        /// The pool's size.
        workers: usize,
    },
    /// A worker took the job but did not finish it within the deadline.
    #[error("The call did not finish in time")]
    Overrun,
    /// The job panicked (the worker survives).
    #[error("The call panicked: {0}")]
    Panicked(String),
}

/// A fixed set of worker threads with one queue slot per worker.
#[derive(Debug)]
pub struct WorkerPool {
    slots: Arc<Semaphore>,
    jobs: SyncSender<Job>,
    size: usize,
}

impl WorkerPool {
    /// Starts `size` (at least 1) threads named `<name>-<n>`.
    ///
    /// # Panics
    /// When the OS refuses to create a thread (at startup).
    pub fn new(size: usize, name: &str) -> Self {
        let size = size.max(1);
        let (jobs, queue) = sync_channel::<Job>(size);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..size {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || work(&queue))
                .expect("cannot start a libvirt worker thread");
        }
        Self {
            slots: Arc::new(Semaphore::new(size)),
            jobs,
            size,
        }
    }

    /// Workers free right now.
    pub fn idle(&self) -> usize {
        self.slots.available_permits()
    }

    /// Runs `f` on a worker and returns its result, all within `deadline`.
    ///
    /// # Errors
    /// [`PoolError::Busy`] when no worker became free in time, [`PoolError::Overrun`] when the
    /// worker did not finish in time (it keeps running `f`, and its slot, until `f` returns),
    /// [`PoolError::Panicked`] when `f` panicked.
    pub async fn run<R, F>(&self, deadline: Duration, f: F) -> Result<R, PoolError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let started = Instant::now();
        let busy = PoolError::Busy { workers: self.size };
        let slot = match tokio::time::timeout(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            // The semaphore is never closed; treat it like a full pool.
            Ok(Err(_)) | Err(_) => return Err(busy),
        };
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                PoolError::Panicked(text)
            });
            drop(slot); // the worker is free again only now
            let _ = answer.send(result);
        });
        // A slot is held for every queued or running job and the queue has one place per
        // slot, so it cannot be full; it is closed only if every worker thread died.
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return Err(busy),
        }
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PoolError::Panicked("the worker dropped the call".into())),
            Err(_) => Err(PoolError::Overrun),
        }
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return, // the pool is gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// This process's threads whose name starts with `prefix` (other tests run alongside).
    fn threads(prefix: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with(prefix))
            .count()
    }

    /// Waits (at most 5 s) for the pool's threads to have started and named themselves.
    fn started_threads(prefix: &str, expected: usize) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while threads(prefix) < expected && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        threads(prefix)
    }

    #[tokio::test]
    async fn answers_and_survives_a_panic() {
        let pool = WorkerPool::new(2, "test-pool");
        assert_eq!(pool.run(Duration::from_secs(5), || 2 + 2).await, Ok(4));
        let panicked = pool
            .run(Duration::from_secs(5), || -> u32 { panic!("boom") })
            .await;
        assert_eq!(panicked, Err(PoolError::Panicked("boom".into())));
        assert_eq!(pool.run(Duration::from_secs(5), || 7).await, Ok(7));
        assert_eq!(pool.idle(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stuck_workers_never_grow_the_pool() {
        let pool = Arc::new(WorkerPool::new(2, "test-stuck"));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        assert_eq!(started_threads("test-stuck", 2), 2);
        // Two calls get stuck and overrun their deadline; their workers stay occupied.
        for _ in 0..2 {
            let wait = wait.clone();
            let overrun = pool
                .run(Duration::from_millis(50), move || {
                    let _ = wait.lock().unwrap().recv();
                })
                .await;
            assert_eq!(overrun, Err(PoolError::Overrun));
        }
        // Many more calls find no worker within their deadline and fail fast.
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..50 {
            let ran = ran.clone();
            let busy = pool
                .run(Duration::from_millis(5), move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                })
                .await;
            assert_eq!(busy, Err(PoolError::Busy { workers: 2 }));
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(threads("test-stuck"), 2, "the pool grew");
        // Once libvirt answers, the workers are free again.
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert_eq!(pool.run(Duration::from_secs(5), || 1).await, Ok(1));
        assert_eq!(pool.run(Duration::from_secs(5), || 2).await, Ok(2));
    }
}
