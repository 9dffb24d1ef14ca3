//! `hyperlet server console --attach ID`: the server's serial console in this terminal, over
//! the agent's console WebSocket (as `virsh console`; `Ctrl-]` leaves).
//!
//! The terminal is put in raw mode while attached and restored on every way out: `Ctrl-]`,
//! the agent closing the session (its reason is printed), SIGTERM/SIGHUP/SIGINT, an error,
//! and a panic (the guard's `Drop` runs while unwinding).

use super::client::{ApiClient, ClientArgs, ClientError};
use futures_util::{SinkExt, StreamExt};
use nix::sys::termios::{self, SetArg, Termios};
use serde_json::{json, Value};
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Longest a send to the agent may take before the session counts as broken.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `Ctrl-]`, the escape byte (as virsh).
pub const ESCAPE: u8 = 0x1d;

/// Restores the terminal's settings when dropped.
struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Raw mode on stdin when it is a terminal; `None` otherwise (a pipe is passed as is).
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// How the session ended.
enum Ended {
    /// The user typed the escape byte or stdin ended.
    Left,
    /// A signal asked us to stop.
    Signal,
    /// The agent closed it: code and reason.
    Closed(u16, String),
    /// The connection failed.
    Broken(String),
}

/// The TLS client configuration for `wss://`: the `--ca-cert` CA or the system's roots, and
/// the `--client-identity` for mutual TLS.
fn tls_config(args: &ClientArgs) -> Result<rustls::ClientConfig, ClientError> {
    let bad = |path: &std::path::Path, reason: String| ClientError::TlsFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let bundle = args.ca_cert.clone().unwrap_or_else(|| {
        [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into())
    });
    let pem = std::fs::read(&bundle).map_err(|e| bad(&bundle, e.to_string()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&bundle, e.to_string()))?;
    roots.add_parsable_certificates(certs);
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Usage(e.to_string()))?
    .with_root_certificates(roots);
    Ok(match &args.client_identity {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| bad(path, e.to_string()))?;
            let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| bad(path, e.to_string()))?;
            let key = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| bad(path, e.to_string()))?
                .ok_or_else(|| bad(path, "no private key in the file".into()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(path, e.to_string()))?
        }
    })
}

/// A byte stream: plain TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A WebSocket over plain TCP or TLS.
type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Opens the console URL the agent gave.
async fn connect(url: &str, args: &ClientArgs) -> Result<Socket, ClientError> {
    // Never print the URL: its token still opens the console.
    let shown = url
        .split("/v1/consoles/")
        .next()
        .unwrap_or_default()
        .to_string();
    let unreachable = |reason: String| {
        ClientError::Failed(format!("Cannot open the console at {shown}: {reason}"))
    };
    let (tls, rest) = if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else {
        return Err(ClientError::Decode(format!("not a WebSocket URL: {shown}")));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        TcpStream::connect(authority),
    )
    .await
    .map_err(|_| unreachable("no connection within 10 s".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if tls {
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| unreachable(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(args)?));
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    match tokio_tungstenite::client_async(url, stream).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let detail: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            Err(ClientError::Api {
                status: reqwest::StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(reqwest::StatusCode::BAD_GATEWAY),
                code: detail["error"]["code"].as_str().unwrap_or("").to_string(),
                message: detail["error"]["message"]
                    .as_str()
                    .unwrap_or("the console refused the connection")
                    .to_string(),
            })
        }
        Err(e) => Err(unreachable(e.to_string())),
    }
}

/// Reads stdin on a thread of its own (a blocking read would hold the runtime's shutdown).
fn stdin_reader() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let _ = std::thread::Builder::new()
        .name("console-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match std::io::Read::read(&mut stdin, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    rx
}

/// Attaches this terminal to server `id`'s serial console.
///
/// # Errors
/// The agent's refusal (409 while another session types: use `--force` or `--read-only`),
/// a connection failure, or the agent closing the session (its reason).
pub async fn attach(
    id: &str,
    args: &ClientArgs,
    read_only: bool,
    force: bool,
) -> Result<(), ClientError> {
    let api = ApiClient::from_args(args)?;
    let body = json!({"type": "serial", "read_only": read_only, "force": force});
    let answer: Value = api
        .request(
            reqwest::Method::POST,
            &format!("/v1/servers/{id}/remote-consoles"),
            Some(&body),
        )
        .await?;
    let given = answer["url"]
        .as_str()
        .ok_or_else(|| ClientError::Decode("no url in the agent's answer".into()))?;
    // The session goes where this command's --url points (the agent builds its URL from the
    // Host it was reached by, which a proxy may have changed); only the path is taken.
    let path = given
        .find("/v1/consoles/")
        .map(|at| &given[at..])
        .ok_or_else(|| ClientError::Decode("the console URL has no /v1/consoles/ path".into()))?;
    let base = args.url.clone().unwrap_or_else(super::default_url);
    let base = base.trim_end_matches('/');
    let url = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}{path}")
    } else {
        format!("ws://{}{path}", base.trim_start_matches("http://"))
    };
    let mut socket = connect(&url, args).await?;
    // Handlers first: a signal from here on restores the terminal instead of killing us.
    let signals = Signals::install()?;
    let mode = if read_only { " (read-only)" } else { "" };
    let ended = {
        let _raw = RawTerminal::enter();
        eprint!("Connected to server {id}{mode}\r\nEscape character is ^] (Ctrl + ])\r\n");
        session(&mut socket, read_only, signals).await
    };
    match ended {
        Ended::Left | Ended::Signal => {
            let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close(None)).await;
            eprintln!();
            Ok(())
        }
        Ended::Closed(code, reason) => Err(ClientError::Failed(format!(
            "The agent closed the console ({code}): {reason}"
        ))),
        Ended::Broken(reason) => Err(ClientError::Failed(format!(
            "The console connection failed: {reason}"
        ))),
    }
}

/// The signals that end a session (and restore the terminal) instead of the process.
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, ClientError> {
        use tokio::signal::unix::{signal, SignalKind};
        let failed = |e: std::io::Error| ClientError::Failed(format!("cannot handle signals: {e}"));
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(failed)?,
            hup: signal(SignalKind::hangup()).map_err(failed)?,
            int: signal(SignalKind::interrupt()).map_err(failed)?,
        })
    }
}

/// Copies bytes both ways until the session ends.
async fn session(socket: &mut Socket, read_only: bool, mut signals: Signals) -> Ended {
    let mut input = stdin_reader();
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            _ = signals.term.recv() => return Ended::Signal,
            _ = signals.hup.recv() => return Ended::Signal,
            _ = signals.int.recv() => return Ended::Signal,
            typed = input.recv() => {
                let Some(typed) = typed else { return Ended::Left };
                let (data, leave) = match typed.iter().position(|b| *b == ESCAPE) {
                    Some(at) => (typed[..at].to_vec(), true),
                    None => (typed, false),
                };
                if !data.is_empty() && !read_only {
                    let sent = tokio::time::timeout(
                        SEND_TIMEOUT,
                        socket.send(Message::Binary(data.into())),
                    )
                    .await;
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Ended::Broken(e.to_string()),
                        Err(_) => return Ended::Broken("the agent stopped taking input".into()),
                    }
                }
                if leave {
                    return Ended::Left;
                }
            }
            message = socket.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    let _ = stdout.write_all(&data);
                    let _ = stdout.flush();
                }
                Some(Ok(Message::Text(text))) => {
                    let _ = stdout.write_all(text.as_bytes());
                    let _ = stdout.flush();
                }
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) => Ended::Closed(u16::from(f.code), f.reason.to_string()),
                        None => Ended::Closed(1005, "no reason given".into()),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ended::Broken(e.to_string()),
                None => return Ended::Broken("the connection closed".into()),
            },
        }
    }
}
