//! A WebSocket client of the agent's console sessions, for tests (blocking API over a
//! runtime of its own).

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// An open console session.
pub struct ConsoleSocket {
    runtime: tokio::runtime::Runtime,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every byte received so far (lossy UTF-8, `\r` removed).
    pub seen: String,
    /// The close frame, once received: code and reason.
    pub closed: Option<(u16, String)>,
}

/// Why opening a console URL failed: the HTTP status and body of the refusal.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

impl ConsoleSocket {
    /// Opens `url` (`ws://…`).
    ///
    /// # Errors
    /// The refusal when the agent does not switch protocols.
    pub fn open(url: &str) -> Result<Self, Refused> {
        let runtime = runtime();
        let opened = runtime.block_on(tokio_tungstenite::connect_async(url));
        Self::opened(runtime, url, opened.map(|(socket, _)| socket))
    }

    /// The session, or the agent's refusal.
    fn opened(
        runtime: tokio::runtime::Runtime,
        url: &str,
        opened: Result<
            WebSocketStream<MaybeTlsStream<TcpStream>>,
            tokio_tungstenite::tungstenite::Error,
        >,
    ) -> Result<Self, Refused> {
        match opened {
            Ok(socket) => Ok(Self {
                runtime,
                socket,
                seen: String::new(),
                closed: None,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            }),
            Err(e) => panic!("WebSocket to {url}: {e}"),
        }
    }

    /// Opens `url` over a socket with a 4 KiB receive buffer, for a client that stops
    /// reading: what the agent sends it piles up on the agent's side almost at once.
    ///
    /// # Errors
    /// The refusal when the agent does not switch protocols.
    pub fn open_small_window(url: &str) -> Result<Self, Refused> {
        let runtime = runtime();
        let authority = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("authority");
        let tcp = std::net::TcpStream::connect(authority).expect("connect");
        nix::sys::socket::setsockopt(&tcp, nix::sys::socket::sockopt::RcvBuf, &4096)
            .expect("SO_RCVBUF");
        tcp.set_nonblocking(true).expect("non-blocking");
        let opened = runtime.block_on(async {
            let tcp = TcpStream::from_std(tcp).expect("tokio socket");
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await
        });
        Self::opened(runtime, url, opened.map(|(socket, _)| socket))
    }

    /// The first binary message, raw (e.g. a VNC server's greeting).
    pub fn first_binary(&mut self, limit: Duration) -> Vec<u8> {
        let socket = &mut self.socket;
        let next = self
            .runtime
            .block_on(async { tokio::time::timeout(limit, socket.next()).await });
        match next {
            Ok(Some(Ok(Message::Binary(data)))) => data.to_vec(),
            other => panic!("no binary message within {limit:?}: {other:?}"),
        }
    }

    /// Sends `bytes` as one binary message.
    pub fn send(&mut self, bytes: &[u8]) {
        let message = Message::Binary(bytes.to_vec().into());
        self.runtime
            .block_on(self.socket.send(message))
            .expect("send to the console");
    }

    /// Sends `bytes` as one text message (what xterm.js's attach addon does).
    pub fn send_text(&mut self, text: &str) {
        let message = Message::Text(text.to_string().into());
        self.runtime
            .block_on(self.socket.send(message))
            .expect("send to the console");
    }

    /// Reads for up to `limit`; returns what arrived. Stops early at a close frame.
    pub fn read_for(&mut self, limit: Duration) -> String {
        let start = self.seen.len();
        let deadline = Instant::now() + limit;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.read_once(left) {
                break;
            }
        }
        self.seen[start..].to_string()
    }

    /// Reads until `needle` appears in what arrived after this call started; panics after
    /// `limit` with everything seen.
    pub fn read_until(&mut self, needle: &str, limit: Duration) -> String {
        let start = self.seen.len();
        let deadline = Instant::now() + limit;
        // Where the next search starts: only new text (and a needle's length before it).
        let mut from = start;
        loop {
            if let Some(at) = self.seen[from..].find(needle) {
                return self.seen[start..from + at + needle.len()].to_string();
            }
            from = self.seen.len().saturating_sub(needle.len()).max(start);
            while !self.seen.is_char_boundary(from) {
                from -= 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && self.closed.is_none(),
                "{needle:?} did not arrive within {limit:?} (closed: {:?}); seen:\n{}",
                self.closed,
                &self.seen[start..]
            );
            self.read_once(left);
        }
    }

    /// Waits up to `limit` for the agent's close frame and returns it.
    pub fn wait_closed(&mut self, limit: Duration) -> (u16, String) {
        let deadline = Instant::now() + limit;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no close frame within {limit:?}; seen:\n{}",
                self.seen
            );
            if !self.read_once(left) && self.closed.is_none() {
                panic!("the connection ended without a close frame");
            }
        }
        self.closed.clone().expect("closed")
    }

    /// One message within `limit`; false when the connection ended or time ran out.
    fn read_once(&mut self, limit: Duration) -> bool {
        let socket = &mut self.socket;
        let next = self
            .runtime
            .block_on(async { tokio::time::timeout(limit, socket.next()).await });
        match next {
            Err(_) => false,
            Ok(None | Some(Err(_))) => false,
            Ok(Some(Ok(message))) => {
                match message {
                    Message::Binary(data) => self
                        .seen
                        .push_str(&String::from_utf8_lossy(&data).replace('\r', "")),
                    Message::Text(text) => self.seen.push_str(text.as_str()),
                    Message::Close(frame) => {
                        self.closed = Some(frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        }));
                    }
                    _ => {}
                }
                true
            }
        }
    }

    /// Closes the session from the client's side.
    pub fn close(mut self) {
        let _ = self.runtime.block_on(self.socket.close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            },
        )));
    }
}

/// A command run on a pseudo-terminal (a real terminal for programs that set raw mode).
pub struct PtyProcess {
    /// The process.
    pub child: std::process::Child,
    master: std::fs::File,
    slave: std::os::fd::OwnedFd,
    output: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Everything the process wrote so far (lossy UTF-8, `\r` removed).
    pub seen: String,
}

impl PtyProcess {
    /// Starts `program args` with a new pseudo-terminal as stdin, stdout and stderr.
    pub fn spawn(program: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::os::fd::AsFd;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let stdio = |fd: &std::os::fd::OwnedFd| {
            std::process::Stdio::from(fd.try_clone().expect("dup the pty"))
        };
        let child = std::process::Command::new(program)
            .args(args)
            .env_remove("HYPERLET_TOKEN")
            .env_remove("HYPERLET_URL")
            .envs(env.iter().copied())
            .stdin(stdio(&pty.slave))
            .stdout(stdio(&pty.slave))
            .stderr(stdio(&pty.slave))
            .spawn()
            .expect("spawn on a pty");
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().expect("dup the master");
        let (tx, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let _ = pty.slave.as_fd();
        Self {
            child,
            master,
            slave: pty.slave,
            output,
            seen: String::new(),
        }
    }

    /// The terminal's settings now (what the process set, or restored).
    pub fn termios(&self) -> nix::sys::termios::Termios {
        nix::sys::termios::tcgetattr(&self.slave).expect("tcgetattr")
    }

    /// Types `bytes` into the terminal.
    pub fn type_bytes(&mut self, bytes: &[u8]) {
        std::io::Write::write_all(&mut self.master, bytes).expect("write to the pty");
    }

    /// Reads for up to `limit`, returning what arrived.
    pub fn read_for(&mut self, limit: Duration) -> String {
        let start = self.seen.len();
        let deadline = Instant::now() + limit;
        while let Ok(chunk) = self
            .output
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen
                .push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
        }
        self.seen[start..].to_string()
    }

    /// Reads until `needle` appears after this call started; panics after `limit`.
    pub fn read_until(&mut self, needle: &str, limit: Duration) {
        let start = self.seen.len();
        let deadline = Instant::now() + limit;
        while !self.seen[start..].contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{needle:?} not shown within {limit:?}; shown:\n{}",
                self.seen
            );
            if let Ok(chunk) = self.output.recv_timeout(left) {
                self.seen
                    .push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
            }
        }
    }

    /// Reads until `needle` appears after this call started: `true`; `false` when the process
    /// exits first or `limit` passes.
    pub fn shows(&mut self, needle: &str, limit: Duration) -> bool {
        let start = self.seen.len();
        let deadline = Instant::now() + limit;
        while !self.seen[start..].contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if let Ok(chunk) = self
                .output
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                self.seen
                    .push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
            }
        }
        true
    }

    /// Waits up to `limit` for the process to exit; collects what it wrote.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            while let Ok(chunk) = self.output.try_recv() {
                self.seen
                    .push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(100));
                while let Ok(chunk) = self.output.try_recv() {
                    self.seen
                        .push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {limit:?}; shown:\n{}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PtyProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
