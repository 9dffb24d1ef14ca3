//! A small NFSv3 client (RFC 1813) for the `files` interface when shares are reached from
//! userspace (`access = "libnfs"`): no kernel mount, the same server QEMU's libnfs driver
//! talks to.
//!
//! It does only what the host needs — look up, create (guarded), truncate, chmod, remove,
//! read, write (`FILE_SYNC`), rename, list and `FSSTAT` in an export's top directory — over
//! TCP as root (AUTH_SYS), from a reserved port when allowed. Every operation opens its own
//! connection (portmapper → MOUNT → NFS) and runs under one deadline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hyperlet::volume::nfs::NfsError> {
//! use hyperlet::volume::nfs::NfsClient;
//! use std::time::Duration;
//!
//! let share = NfsClient::new("127.0.0.1", "/srv/nfs/abc", Duration::from_secs(30));
//! share.create("volume-1", 1 << 30, 0o660).await?; // sparse: only the size is set
//! assert_eq!(share.stat("volume-1").await?.map(|a| a.size), Some(1 << 30));
//! share.remove("volume-1").await?;
//! # Ok(()) }
//! ```

mod rpc;
mod xdr;

use rpc::RpcConn;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;
use xdr::{Decoder, Encoder};

const PORTMAP: u32 = 100_000;
const MOUNT: u32 = 100_005;
const NFS: u32 = 100_003;

/// Largest file handle (NFSv3).
const FHSIZE: usize = 64;
/// Bytes read or written per request.
const CHUNK: usize = 64 * 1024;

/// Errors of the NFS client.
#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    /// The server's address could not be resolved.
    #[error("Cannot resolve NFS server {host}")]
    Resolve {
        /// The host.
        host: String,
    },
    /// A TCP connection could not be made.
    #[error("Cannot connect to {addr}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed mid-call.
    #[error("NFS connection failed")]
    Io(#[source] std::io::Error),
    /// A name is not a regular file with one link (a symbolic link, a hard link, a
    /// directory); nothing was done to it.
    #[error("{name} is {what}; only regular files with a single link are used")]
    NotPlainFile {
        /// The name.
        name: String,
        /// What it is instead.
        what: String,
    },
    /// The server refused the RPC call.
    #[error("RPC call refused: {0}")]
    Rpc(String),
    /// The server's reply did not parse.
    #[error("Malformed RPC reply: {0}")]
    Protocol(String),
    /// MOUNT refused the export.
    #[error("The server refused to mount {export}: {status}")]
    Mount {
        /// The export.
        export: String,
        /// MOUNT's status, e.g. `MNT3ERR_ACCES`.
        status: &'static str,
    },
    /// An NFS procedure failed.
    #[error("{op}: {status}")]
    Status {
        /// The procedure and its argument, e.g. `CREATE volume-1`.
        op: String,
        /// The NFS status, e.g. `NFS3ERR_NOSPC`.
        status: &'static str,
        /// The NFS status number.
        code: u32,
    },
    /// The operation overran its deadline.
    #[error("No answer from the NFS server within {0:?}")]
    Timeout(Duration),
    /// A file is larger than the caller accepts.
    #[error("{name} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        name: String,
        /// The limit.
        limit: usize,
    },
}

impl NfsError {
    /// The plugin-error code: `not-found`, `exists`, `no-space`, `denied` or `failed`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Status { code: 2, .. } => "not-found",
            Self::Status { code: 17, .. } => "exists",
            Self::Status {
                code: 28 | 69 | 27, ..
            } => "no-space",
            Self::Status {
                code: 1 | 13 | 30, ..
            }
            | Self::Mount { .. }
            | Self::NotPlainFile { .. } => "denied",
            Self::TooLarge { .. } => "invalid",
            _ => "failed",
        }
    }

    fn is_status(&self, code: u32) -> bool {
        matches!(self, Self::Status { code: c, .. } if *c == code)
    }
}

fn nfs_status_name(code: u32) -> &'static str {
    match code {
        1 => "NFS3ERR_PERM",
        2 => "NFS3ERR_NOENT",
        5 => "NFS3ERR_IO",
        6 => "NFS3ERR_NXIO",
        13 => "NFS3ERR_ACCES",
        17 => "NFS3ERR_EXIST",
        18 => "NFS3ERR_XDEV",
        19 => "NFS3ERR_NODEV",
        20 => "NFS3ERR_NOTDIR",
        21 => "NFS3ERR_ISDIR",
        22 => "NFS3ERR_INVAL",
        27 => "NFS3ERR_FBIG",
        28 => "NFS3ERR_NOSPC",
        30 => "NFS3ERR_ROFS",
        63 => "NFS3ERR_NAMETOOLONG",
        66 => "NFS3ERR_NOTEMPTY",
        69 => "NFS3ERR_DQUOT",
        70 => "NFS3ERR_STALE",
        10001 => "NFS3ERR_BADHANDLE",
        10004 => "NFS3ERR_NOTSUPP",
        10006 => "NFS3ERR_SERVERFAULT",
        10008 => "NFS3ERR_JUKEBOX",
        _ => "NFS3ERR_(unknown)",
    }
}

fn mount_status_name(code: u32) -> &'static str {
    match code {
        1 => "MNT3ERR_PERM",
        2 => "MNT3ERR_NOENT",
        5 => "MNT3ERR_IO",
        13 => "MNT3ERR_ACCES",
        20 => "MNT3ERR_NOTDIR",
        22 => "MNT3ERR_INVAL",
        63 => "MNT3ERR_NAMETOOLONG",
        10004 => "MNT3ERR_NOTSUPP",
        10006 => "MNT3ERR_SERVERFAULT",
        _ => "MNT3ERR_(unknown)",
    }
}

/// File attributes (the parts the host uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// 1 regular file, 2 directory, 5 symbolic link, … (`ftype3`)
    pub kind: u32,
    /// Permission bits.
    pub mode: u32,
    /// Number of names (hard links).
    pub nlink: u32,
    /// Apparent size, bytes.
    pub size: u64,
    /// Bytes allocated.
    pub used: u64,
}

/// Capacity of an export's file system (`FSSTAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStat {
    /// Total bytes.
    pub total: u64,
    /// Free bytes.
    pub free: u64,
    /// Bytes available to this user.
    pub available: u64,
}

impl Attr {
    /// Why this is not a file the host may use, or `None` for a regular file with one link.
    pub fn not_plain(&self) -> Option<String> {
        crate::volume::share_dir::plain_file(
            self.kind == NF3LNK,
            self.kind == NF3DIR,
            self.kind == NF3REG,
            self.nlink.into(),
        )
    }
}

/// `ftype3` values.
const NF3REG: u32 = 1;
const NF3DIR: u32 = 2;
const NF3LNK: u32 = 5;

fn attr(d: &mut Decoder<'_>) -> Result<Attr, NfsError> {
    let kind = d.u32()?;
    let mode = d.u32()?;
    let nlink = d.u32()?;
    d.skip(8)?; // uid, gid
    let size = d.u64()?;
    let used = d.u64()?;
    d.skip(8 + 8 + 8 + 24)?; // rdev, fsid, fileid, atime, mtime, ctime
    Ok(Attr {
        kind,
        mode,
        nlink,
        size,
        used,
    })
}

fn post_op_attr(d: &mut Decoder<'_>) -> Result<Option<Attr>, NfsError> {
    if d.bool()? {
        Ok(Some(attr(d)?))
    } else {
        Ok(None)
    }
}

fn wcc_data(d: &mut Decoder<'_>) -> Result<(), NfsError> {
    if d.bool()? {
        d.skip(8 + 8 + 8)?;
    }
    post_op_attr(d).map(drop)
}

/// sattr3 with the mode, owner and/or size set, times unchanged.
fn sattr(e: &mut Encoder, mode: Option<u32>, owner: Option<(u32, u32)>, size: Option<u64>) {
    match mode {
        Some(m) => e.bool(true).u32(m),
        None => e.bool(false),
    };
    match owner {
        Some((uid, gid)) => e.bool(true).u32(uid).bool(true).u32(gid),
        None => e.bool(false).bool(false),
    };
    match size {
        Some(s) => e.bool(true).u64(s),
        None => e.bool(false),
    };
    e.u32(0).u32(0); // atime, mtime: DONT_CHANGE
}

/// One connection with the export mounted.
struct Session {
    conn: RpcConn,
    root: Vec<u8>,
    /// (uid, gid) given to files created or chmodded.
    owner: Option<(u32, u32)>,
}

impl Session {
    async fn open(addr: IpAddr, export: &str) -> Result<Self, NfsError> {
        let mut portmap = RpcConn::connect((addr, 111).into()).await?;
        let getport = |prog: u32| {
            let mut e = Encoder::new();
            e.u32(prog).u32(3).u32(6).u32(0);
            e.into_bytes()
        };
        let args = getport(MOUNT);
        let mount_port = Decoder::new(&portmap.call(PORTMAP, 2, 3, &args).await?).u32()?;
        if mount_port == 0 {
            return Err(NfsError::Rpc(
                "the portmapper knows no MOUNT v3 over TCP".into(),
            ));
        }
        let args = getport(NFS);
        let nfs_port = match Decoder::new(&portmap.call(PORTMAP, 2, 3, &args).await?).u32()? {
            0 => 2049,
            p => p,
        };
        drop(portmap);
        let mut mount = RpcConn::connect((addr, mount_port as u16).into()).await?;
        let mut e = Encoder::new();
        e.string(export);
        let reply = mount.call(MOUNT, 3, 1, &e.into_bytes()).await?;
        let mut d = Decoder::new(&reply);
        let status = d.u32()?;
        if status != 0 {
            return Err(NfsError::Mount {
                export: export.to_owned(),
                status: mount_status_name(status),
            });
        }
        let root = d.opaque(FHSIZE)?.to_vec();
        let conn = RpcConn::connect((addr, nfs_port as u16).into()).await?;
        Ok(Self {
            conn,
            root,
            owner: None,
        })
    }

    /// Calls an NFSv3 procedure; returns the decoder positioned after an OK status, or the
    /// status error.
    async fn call(
        &mut self,
        procedure: u32,
        op: String,
        args: Encoder,
    ) -> Result<Vec<u8>, NfsError> {
        let reply = self
            .conn
            .call(NFS, 3, procedure, &args.into_bytes())
            .await?;
        let status = Decoder::new(&reply).u32()?;
        if status != 0 {
            return Err(NfsError::Status {
                op,
                status: nfs_status_name(status),
                code: status,
            });
        }
        Ok(reply[4..].to_vec())
    }

    fn dirop(&self, name: &str) -> Encoder {
        let mut e = Encoder::new();
        e.opaque(&self.root).string(name);
        e
    }

    async fn lookup(&mut self, name: &str) -> Result<Option<(Vec<u8>, Attr)>, NfsError> {
        let args = self.dirop(name);
        match self.call(3, format!("LOOKUP {name}"), args).await {
            Ok(reply) => {
                let mut d = Decoder::new(&reply);
                let fh = d.opaque(FHSIZE)?.to_vec();
                let attr = match post_op_attr(&mut d)? {
                    Some(a) => a,
                    None => self.getattr(&fh, name).await?,
                };
                Ok(Some((fh, attr)))
            }
            Err(e) if e.is_status(2) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn getattr(&mut self, fh: &[u8], name: &str) -> Result<Attr, NfsError> {
        let mut e = Encoder::new();
        e.opaque(fh);
        let reply = self.call(1, format!("GETATTR {name}"), e).await?;
        attr(&mut Decoder::new(&reply))
    }

    async fn setattr(
        &mut self,
        fh: &[u8],
        name: &str,
        mode: Option<u32>,
        size: Option<u64>,
    ) -> Result<(), NfsError> {
        let mut e = Encoder::new();
        e.opaque(fh);
        sattr(&mut e, mode, mode.and(self.owner), size);
        e.bool(false); // no guard
        self.call(2, format!("SETATTR {name}"), e).await.map(drop)
    }

    /// The file handle of `name` when it is a regular file with one link; `None` when it is
    /// missing.
    async fn lookup_plain(&mut self, name: &str) -> Result<Option<Vec<u8>>, NfsError> {
        match self.lookup(name).await? {
            None => Ok(None),
            Some((fh, attr)) => match attr.not_plain() {
                None => Ok(Some(fh)),
                Some(what) => Err(NfsError::NotPlainFile {
                    name: name.to_owned(),
                    what,
                }),
            },
        }
    }

    /// CREATE, guarded (fails with NFS3ERR_EXIST) or unchecked.
    async fn create(&mut self, name: &str, mode: u32, guarded: bool) -> Result<Vec<u8>, NfsError> {
        let mut e = self.dirop(name);
        e.u32(if guarded { 1 } else { 0 });
        sattr(&mut e, Some(mode), self.owner, Some(0));
        let reply = self.call(8, format!("CREATE {name}"), e).await?;
        let mut d = Decoder::new(&reply);
        if d.bool()? {
            return Ok(d.opaque(FHSIZE)?.to_vec());
        }
        match self.lookup(name).await? {
            Some((fh, _)) => Ok(fh),
            None => Err(NfsError::Protocol(format!(
                "{name} is missing right after CREATE"
            ))),
        }
    }

    async fn remove(&mut self, name: &str) -> Result<(), NfsError> {
        let args = self.dirop(name);
        let reply = self.call(12, format!("REMOVE {name}"), args).await?;
        wcc_data(&mut Decoder::new(&reply))
    }

    async fn rename(&mut self, from: &str, to: &str) -> Result<(), NfsError> {
        let mut e = self.dirop(from);
        e.opaque(&self.root.clone()).string(to);
        self.call(14, format!("RENAME {from} {to}"), e)
            .await
            .map(drop)
    }

    async fn write_all(&mut self, fh: &[u8], name: &str, data: &[u8]) -> Result<(), NfsError> {
        let mut offset = 0usize;
        while offset < data.len() {
            let end = (offset + CHUNK).min(data.len());
            let mut e = Encoder::new();
            e.opaque(fh)
                .u64(offset as u64)
                .u32((end - offset) as u32)
                .u32(2) // FILE_SYNC
                .opaque(&data[offset..end]);
            let reply = self.call(7, format!("WRITE {name}"), e).await?;
            let mut d = Decoder::new(&reply);
            wcc_data(&mut d)?;
            let count = d.u32()? as usize;
            if count == 0 {
                return Err(NfsError::Protocol(format!("WRITE {name} wrote nothing")));
            }
            offset += count.min(end - offset);
        }
        Ok(())
    }

    async fn read_all(&mut self, fh: &[u8], name: &str, limit: usize) -> Result<Vec<u8>, NfsError> {
        let mut out = Vec::new();
        loop {
            let mut e = Encoder::new();
            e.opaque(fh).u64(out.len() as u64).u32(CHUNK as u32);
            let reply = self.call(6, format!("READ {name}"), e).await?;
            let mut d = Decoder::new(&reply);
            post_op_attr(&mut d)?;
            d.u32()?; // count
            let eof = d.bool()?;
            let data = d.opaque(CHUNK)?;
            out.extend_from_slice(data);
            if out.len() > limit {
                return Err(NfsError::TooLarge {
                    name: name.to_owned(),
                    limit,
                });
            }
            if eof || data.is_empty() {
                return Ok(out);
            }
        }
    }

    /// The regular files of the export's top directory with their attributes.
    async fn list(&mut self) -> Result<Vec<(String, Attr)>, NfsError> {
        let mut out = Vec::new();
        let (mut cookie, mut verifier) = (0u64, [0u8; 8]);
        loop {
            let mut e = Encoder::new();
            e.opaque(&self.root)
                .u64(cookie)
                .fixed(&verifier)
                .u32(8192)
                .u32(64 * 1024);
            let reply = self.call(17, "READDIRPLUS".into(), e).await?;
            let mut d = Decoder::new(&reply);
            post_op_attr(&mut d)?;
            verifier.copy_from_slice(d.fixed(8)?);
            let mut entries = 0;
            while d.bool()? {
                entries += 1;
                d.u64()?; // fileid
                let name = d.string(1024)?;
                cookie = d.u64()?;
                let attr = post_op_attr(&mut d)?;
                if d.bool()? {
                    d.opaque(FHSIZE)?;
                }
                if let Some(attr) = attr {
                    if attr.kind == 1 {
                        out.push((name, attr));
                    }
                }
            }
            if d.bool()? || entries == 0 {
                return Ok(out);
            }
        }
    }

    async fn fsstat(&mut self) -> Result<FsStat, NfsError> {
        let mut e = Encoder::new();
        e.opaque(&self.root);
        let reply = self.call(18, "FSSTAT".into(), e).await?;
        let mut d = Decoder::new(&reply);
        post_op_attr(&mut d)?;
        Ok(FsStat {
            total: d.u64()?,
            free: d.u64()?,
            available: d.u64()?,
        })
    }
}

/// Access to the top directory of one NFS export.
#[derive(Debug, Clone)]
pub struct NfsClient {
    host: String,
    export: String,
    deadline: Duration,
    owner: Option<(u32, u32)>,
}

impl NfsClient {
    /// A client for `export` on `host`; every operation must finish within `deadline`.
    pub fn new(host: impl Into<String>, export: impl Into<String>, deadline: Duration) -> Self {
        Self {
            host: host.into(),
            export: export.into(),
            deadline,
            owner: None,
        }
    }

    /// Gives files this client creates or chmods the owner `(uid, gid)`.
    #[must_use]
    pub fn with_owner(mut self, owner: (u32, u32)) -> Self {
        self.owner = Some(owner);
        self
    }

    async fn with_session<T, F>(&self, f: F) -> Result<T, NfsError>
    where
        F: for<'s> FnOnce(
            &'s mut Session,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, NfsError>> + Send + 's>,
        >,
    {
        let host = self.host.clone();
        let export = self.export.clone();
        let owner = self.owner;
        let work = async move {
            let addr = tokio::task::spawn_blocking(move || {
                (host.as_str(), 111)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .map(|a| a.ip())
                    .ok_or(NfsError::Resolve { host })
            })
            .await
            .map_err(|e| NfsError::Protocol(format!("resolver task failed: {e}")))??;
            let mut session = Session::open(addr, &export).await?;
            session.owner = owner;
            f(&mut session).await
        };
        tokio::time::timeout(self.deadline, work)
            .await
            .map_err(|_| NfsError::Timeout(self.deadline))?
    }

    /// Creates `name` with `mode` and apparent size `size` (nothing allocated: sparse);
    /// fails with `NFS3ERR_EXIST` when it exists.
    ///
    /// # Errors
    /// [`NfsError`]; nothing is left behind when the size cannot be set.
    pub async fn create(&self, name: &str, size: u64, mode: u32) -> Result<(), NfsError> {
        let name = name.to_owned();
        self.with_session(move |s| {
            Box::pin(async move {
                let fh = s.create(&name, mode, true).await?;
                if let Err(e) = s.setattr(&fh, &name, None, Some(size)).await {
                    let _ = s.remove(&name).await;
                    return Err(e);
                }
                Ok(())
            })
        })
        .await
    }

    /// Removes `name`; a missing file is not an error.
    ///
    /// # Errors
    /// [`NfsError`].
    pub async fn remove(&self, name: &str) -> Result<(), NfsError> {
        let name = name.to_owned();
        self.with_session(move |s| {
            Box::pin(async move {
                match s.remove(&name).await {
                    Err(e) if e.is_status(2) => Ok(()),
                    other => other,
                }
            })
        })
        .await
    }

    /// The attributes of `name`, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`NfsError`].
    pub async fn stat(&self, name: &str) -> Result<Option<Attr>, NfsError> {
        let name = name.to_owned();
        self.with_session(move |s| {
            Box::pin(async move { Ok(s.lookup(&name).await?.map(|(_, a)| a)) })
        })
        .await
    }

    /// Sets the permissions (and the owner given with [`NfsClient::with_owner`]) of the
    /// regular file `name`.
    ///
    /// # Errors
    /// [`NfsError::NotPlainFile`] for a link, a directory or a hard-linked file; other
    /// [`NfsError`]s (`NFS3ERR_NOENT` when it does not exist).
    pub async fn chmod(&self, name: &str, mode: u32) -> Result<(), NfsError> {
        let name = name.to_owned();
        self.with_session(move |s| {
            Box::pin(async move {
                let fh = s
                    .lookup_plain(&name)
                    .await?
                    .ok_or_else(|| NfsError::Status {
                        op: format!("LOOKUP {name}"),
                        status: nfs_status_name(2),
                        code: 2,
                    })?;
                s.setattr(&fh, &name, Some(mode), None).await
            })
        })
        .await
    }

    /// Replaces `name` with `contents` atomically: written to a temporary file with
    /// `FILE_SYNC`, then renamed over it. An existing `name` must be a regular file with one
    /// link.
    ///
    /// # Errors
    /// [`NfsError::NotPlainFile`]; other [`NfsError`]s; the temporary file is removed on
    /// failure.
    pub async fn write_atomic(
        &self,
        name: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), NfsError> {
        let name = name.to_owned();
        let contents = contents.to_vec();
        let tmp = format!(".{name}.tmp-{:08x}", rand::random::<u32>());
        self.with_session(move |s| {
            Box::pin(async move {
                s.lookup_plain(&name).await?;
                let fh = s.create(&tmp, mode, false).await?;
                let written = async {
                    s.write_all(&fh, &tmp, &contents).await?;
                    s.rename(&tmp, &name).await
                }
                .await;
                if written.is_err() {
                    let _ = s.remove(&tmp).await;
                }
                written
            })
        })
        .await
    }

    /// The contents of the regular file `name`, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`NfsError::TooLarge`] beyond `limit` bytes, [`NfsError::NotPlainFile`], other
    /// [`NfsError`]s.
    pub async fn read(&self, name: &str, limit: usize) -> Result<Option<Vec<u8>>, NfsError> {
        let name = name.to_owned();
        self.with_session(move |s| {
            Box::pin(async move {
                match s.lookup_plain(&name).await? {
                    None => Ok(None),
                    Some(fh) => s.read_all(&fh, &name, limit).await.map(Some),
                }
            })
        })
        .await
    }

    /// The file system's capacity and the regular files of the top directory.
    ///
    /// # Errors
    /// [`NfsError`].
    pub async fn usage(&self) -> Result<(FsStat, Vec<(String, Attr)>), NfsError> {
        self.with_session(|s| {
            Box::pin(async move {
                let stat = s.fsstat().await?;
                Ok((stat, s.list().await?))
            })
        })
        .await
    }
}
