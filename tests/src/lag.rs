//! A TCP relay on loopback that delays everything it carries by an adjustable time in each
//! direction: a dependency (etcd) that is slow to answer but otherwise healthy, without
//! touching its own timers (SIGSTOP would freeze its lease expiry too).
//!
//! ```no_run
//! let lag = hyperlet_tests::lag::LagRelay::start("127.0.0.1:2379");
//! lag.set_delay(std::time::Duration::from_millis(700));
//! println!("{}", lag.endpoint());
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Bytes read at once from either side.
const CHUNK: usize = 64 * 1024;

/// A running relay; stops accepting on drop (connections end when either side closes).
pub struct LagRelay {
    addr: std::net::SocketAddr,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl LagRelay {
    /// Relays a fresh loopback port to `target` (`host:port`), with no delay yet.
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let target = target.to_string();
        {
            let (delay_ms, stop) = (delay_ms.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(&target) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    pump(&client, &server, &delay_ms);
                    pump(&server, &client, &delay_ms);
                }
            });
        }
        Self {
            addr,
            delay_ms,
            stop,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Delay of every byte from now on, each way.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl Drop for LagRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so it sees the stop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` on two threads: a reader stamping each chunk with when it is due, and
/// a writer sending it then (order kept).
fn pump(from: &TcpStream, to: &TcpStream, delay_ms: &Arc<AtomicU64>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    let delay_ms = delay_ms.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let when =
                        Instant::now() + Duration::from_millis(delay_ms.load(Ordering::SeqCst));
                    if chunks.send((when, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (when, chunk) in due {
            std::thread::sleep(when.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
