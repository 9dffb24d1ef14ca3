//! ONC RPC v2 (RFC 5531) over TCP with record marking, AUTH_SYS credentials.

use super::xdr::{Decoder, Encoder};
use super::NfsError;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest reply accepted, bytes.
const MAX_REPLY: usize = 4 << 20;

/// The machine name sent in AUTH_SYS credentials.
const MACHINE: &str = "hyperlet";

/// One TCP connection to an RPC server.
#[derive(Debug)]
pub struct RpcConn {
    stream: TcpStream,
    xid: u32,
}

impl RpcConn {
    /// Connects to `addr`, from a reserved source port (< 1024) when the process may bind one
    /// (servers that export with `secure` insist on it), else from any port.
    ///
    /// # Errors
    /// [`NfsError::Connect`].
    pub async fn connect(addr: SocketAddr) -> Result<Self, NfsError> {
        let connect_err = |source| NfsError::Connect { addr, source };
        let fresh = || {
            if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
        };
        let start = 600 + (std::process::id() % 400) as u16;
        let mut socket = None;
        for i in 0..24u16 {
            let port = 600 + (start - 600 + i * 17) % 424;
            let candidate = fresh().map_err(connect_err)?;
            let local: SocketAddr = if addr.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, port).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, port).into()
            };
            match candidate.bind(local) {
                Ok(()) => {
                    socket = Some(candidate);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => break,
                Err(_) => continue,
            }
        }
        let socket = match socket {
            Some(s) => s,
            None => fresh().map_err(connect_err)?,
        };
        let stream = match socket.connect(addr).await {
            Ok(stream) => stream,
            // The reserved port may be in TIME_WAIT towards this server: any port then.
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => fresh()
                .map_err(connect_err)?
                .connect(addr)
                .await
                .map_err(connect_err)?,
            Err(e) => return Err(connect_err(e)),
        };
        stream.set_nodelay(true).map_err(connect_err)?;
        Ok(Self {
            stream,
            xid: rand::random(),
        })
    }

    /// Calls `procedure` of `program`/`version` with XDR-encoded `args` as root (AUTH_SYS uid
    /// 0, gid 0) and returns the XDR-encoded results.
    ///
    /// # Errors
    /// [`NfsError::Io`] on the connection, [`NfsError::Rpc`] when the server refuses the call,
    /// [`NfsError::Protocol`] for a malformed reply.
    pub async fn call(
        &mut self,
        program: u32,
        version: u32,
        procedure: u32,
        args: &[u8],
    ) -> Result<Vec<u8>, NfsError> {
        self.xid = self.xid.wrapping_add(1);
        let xid = self.xid;
        let mut cred = Encoder::new();
        cred.u32(0).string(MACHINE).u32(0).u32(0).u32(0);
        let cred = cred.into_bytes();
        let mut msg = Encoder::new();
        msg.u32(xid)
            .u32(0) // CALL
            .u32(2) // RPC version
            .u32(program)
            .u32(version)
            .u32(procedure)
            .u32(1) // AUTH_SYS
            .opaque(&cred)
            .u32(0) // verifier AUTH_NONE
            .u32(0);
        let mut msg = msg.into_bytes();
        msg.extend_from_slice(args);
        let mut record = Vec::with_capacity(msg.len() + 4);
        record.extend_from_slice(&(0x8000_0000u32 | msg.len() as u32).to_be_bytes());
        record.extend_from_slice(&msg);
        self.stream.write_all(&record).await.map_err(NfsError::Io)?;
        loop {
            let reply = self.read_record().await?;
            let mut d = Decoder::new(&reply);
            if d.u32()? != xid {
                continue; // a late reply to an earlier call
            }
            if d.u32()? != 1 {
                return Err(NfsError::Protocol("not a reply".into()));
            }
            match d.u32()? {
                0 => {}
                1 => {
                    let why = match d.u32()? {
                        0 => "RPC version mismatch".to_owned(),
                        _ => format!("authentication refused (auth_stat {})", d.u32()?),
                    };
                    return Err(NfsError::Rpc(why));
                }
                other => return Err(NfsError::Protocol(format!("reply_stat {other}"))),
            }
            d.u32()?; // verifier flavour
            d.opaque(400)?;
            return match d.u32()? {
                0 => {
                    let consumed = reply.len() - remaining(&d, &reply);
                    Ok(reply[consumed..].to_vec())
                }
                1 => Err(NfsError::Rpc(format!("program {program} unavailable"))),
                2 => Err(NfsError::Rpc(format!(
                    "program {program} version {version} unavailable"
                ))),
                3 => Err(NfsError::Rpc(format!(
                    "procedure {procedure} of program {program} unavailable"
                ))),
                4 => Err(NfsError::Rpc("garbage arguments".into())),
                other => Err(NfsError::Rpc(format!("accept_stat {other}"))),
            };
        }
    }

    async fn read_record(&mut self) -> Result<Vec<u8>, NfsError> {
        let mut out = Vec::new();
        loop {
            let mut header = [0u8; 4];
            self.stream
                .read_exact(&mut header)
                .await
                .map_err(NfsError::Io)?;
            let header = u32::from_be_bytes(header);
            let len = (header & 0x7fff_ffff) as usize;
            if out.len() + len > MAX_REPLY {
                return Err(NfsError::Protocol(format!(
                    "reply larger than {MAX_REPLY} bytes"
                )));
            }
            let start = out.len();
            out.resize(start + len, 0);
            self.stream
                .read_exact(&mut out[start..])
                .await
                .map_err(NfsError::Io)?;
            if header & 0x8000_0000 != 0 {
                return Ok(out);
            }
        }
    }
}

/// Bytes a decoder has not read yet.
fn remaining(d: &Decoder<'_>, data: &[u8]) -> usize {
    data.len() - d.position()
}
