//! The HTTP application: who is asking, rate limits, session tokens, and which tree answers.
//!
//! Every request goes through the same steps. Only the steps that wait on something outside
//! the process — the neighbour lookup, the password store, a posted body — can take time, and
//! each of those has a deadline ([`REQUEST_TIMEOUT`], 503 when it passes); everything else runs
//! inline on the connection's task and never waits:
//!
//! 1. the peer address the connection came from (axum's `ConnectInfo<SocketAddr>`); nothing
//!    the client sends (`X-Forwarded-For`, `Forwarded`, …) is ever consulted;
//! 2. the per-source-IP token bucket (429 + `Retry-After`), before any lookup;
//! 3. the peer's MAC ([`PeerMacs`]: the namespace's neighbour table for the real server) —
//!    none → 404 `No instance for <ip>`. The real server looks it up once per TCP connection
//!    (on its first request, from a neighbour dump taken after the connection was accepted)
//!    and keeps it in the connection's [`PeerConnection`]: a connection's source address
//!    cannot change, and the MAC is what the kernel held for it when the connection began;
//! 4. [`MetadataSource::identify`], inline (it must not block) — none → 404
//!    `No instance for <ip>`;
//! 5. the per-server token bucket (429);
//! 6. the trees: `/` and `/<ec2 version>/…` (session token checked), `PUT /latest/api/token`,
//!    `/openstack/…`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use std::fmt::Display;
use std::future::Future;
use std::pin::pin;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{http, Router};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::Body;
use http_body_util::BodyExt;

use super::documents::{DocumentCache, Documents};
use super::limit::{retry_after_secs, RateLimiter};
use super::reply::Reply;
use super::source::{InstanceMetadata, MetadataSource, SetPasswordError};
use super::stats::Counters;
use super::tokens::{parse_ttl, TokenStore};
use super::{ec2, openstack, MetadataOptions};

/// The longest a step that waits (neighbour lookup, password store, reading a posted body) may
/// take before the request is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest password a guest may post (nova: 4 chunks of 255 bytes).
pub const MAX_PASSWORD_BYTES: usize = 1020;

/// The most source IPs and servers tracked by the rate limits.
const MAX_TRACKED: usize = 65_536;

/// The header that asks for a session token's TTL (and carries it in the answer).
static TTL_HEADER: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token-ttl-seconds");
/// The header that presents a session token.
static TOKEN_HEADER: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token");
/// A proxy marker: token requests carrying it are refused (as on AWS).
static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Resolves the MAC address of a peer for [`router`]: `None` when it has none (the request is
/// then refused with 404).
pub type IdentifyPeer = Arc<dyn Fn(SocketAddr) -> Option<[u8; 6]> + Send + Sync>;

/// How the application learns a peer's MAC address.
pub(crate) trait PeerMacs: Send + Sync + 'static {
    /// The MAC of `peer` as known at `since` or later (when its connection was accepted);
    /// `Ok(None)` when there is none, `Err` (a reason for the log) when the lookup itself
    /// failed.
    fn mac(
        &self,
        peer: SocketAddr,
        since: Instant,
    ) -> BoxFuture<'_, Result<Option<[u8; 6]>, String>>;
}

/// [`PeerMacs`] from a plain function.
pub(crate) struct FnPeerMacs(pub(crate) IdentifyPeer);

impl PeerMacs for FnPeerMacs {
    fn mac(
        &self,
        peer: SocketAddr,
        _since: Instant,
    ) -> BoxFuture<'_, Result<Option<[u8; 6]>, String>> {
        let mac = (self.0)(peer);
        Box::pin(async move { Ok(mac) })
    }
}

/// What the server knows about one TCP connection, handed to [`App::serve`] with each of its
/// requests: when it was accepted, and the peer's MAC once found.
#[derive(Debug)]
pub(crate) struct PeerConnection {
    accepted: Instant,
    mac: OnceLock<[u8; 6]>,
}

impl PeerConnection {
    /// A connection accepted at `accepted`, its peer's MAC not looked up yet.
    pub(crate) fn new(accepted: Instant) -> Self {
        Self {
            accepted,
            mac: OnceLock::new(),
        }
    }
}

/// The metadata application of one network without the namespace binding — for tests and
/// benchmarks; [`super::MetadataServer`] serves the same application inside a namespace.
///
/// Every request must carry the peer's address as an `axum::extract::ConnectInfo<SocketAddr>`
/// extension: serve the router with `into_make_service_with_connect_info::<SocketAddr>()`, or
/// insert the extension (or add `axum::extract::connect_info::MockConnectInfo`) when calling it
/// with `tower::ServiceExt::oneshot`. A request without it is refused with 404. `identify_peer`
/// gives the MAC of a peer (the real server reads the namespace's neighbour table instead).
///
/// `options` are used as given: check them with [`MetadataOptions::validate`] first.
pub fn router(
    network_id: &str,
    source: Arc<dyn MetadataSource>,
    options: MetadataOptions,
    identify_peer: IdentifyPeer,
) -> Router {
    App::new(
        network_id,
        source,
        options,
        Arc::new(FnPeerMacs(identify_peer)),
        REQUEST_TIMEOUT,
    )
    .into_router()
}

/// The shared state of the application.
#[derive(Clone)]
pub(crate) struct App(Arc<Inner>);

struct Inner {
    network_id: String,
    source: Arc<dyn MetadataSource>,
    options: MetadataOptions,
    macs: Arc<dyn PeerMacs>,
    timeout: Duration,
    documents: DocumentCache,
    tokens: TokenStore,
    by_ip: RateLimiter<Ipv4Addr>,
    by_server: RateLimiter<String>,
    counters: Arc<Counters>,
}

impl App {
    /// The application of network `network_id`; each step of a request that waits must finish
    /// within `timeout`.
    pub(crate) fn new(
        network_id: &str,
        source: Arc<dyn MetadataSource>,
        options: MetadataOptions,
        macs: Arc<dyn PeerMacs>,
        timeout: Duration,
    ) -> Self {
        let (rate, burst) = (options.requests_per_second, options.burst);
        Self(Arc::new(Inner {
            network_id: network_id.to_owned(),
            source,
            options,
            macs,
            timeout,
            documents: DocumentCache::default(),
            tokens: TokenStore::default(),
            by_ip: RateLimiter::new(rate, burst, MAX_TRACKED),
            by_server: RateLimiter::new(rate, burst, MAX_TRACKED),
            counters: Arc::default(),
        }))
    }

    /// The axum router: one fallback handler sees every path and method.
    pub(crate) fn into_router(self) -> Router {
        Router::new().fallback(handle).with_state(self)
    }

    /// Answers one request: steps 1–6 of the module documentation, counted in the server's
    /// [`Counters`]. `peer` is the TCP peer (`None` is refused with 404); `connection` what is
    /// known about its connection (`None`: the MAC is looked up for this request alone).
    pub(crate) async fn serve<B>(
        &self,
        peer: Option<SocketAddr>,
        connection: Option<&PeerConnection>,
        req: http::Request<B>,
    ) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: Display,
    {
        let reply = self.answer(peer, connection, req).await;
        self.0.counters.answered(reply.status.as_u16());
        reply
    }

    /// The live counters of this application's answers.
    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.0.counters.clone()
    }

    /// 404 for a caller that is no port of the network, counted.
    fn unknown_caller(&self, ip: Ipv4Addr) -> Reply {
        self.0.counters.unknown_caller();
        Reply::not_found(format!("No instance for {ip}"))
    }

    /// [`App::serve`] without the counting.
    async fn answer<B>(
        &self,
        peer: Option<SocketAddr>,
        connection: Option<&PeerConnection>,
        req: http::Request<B>,
    ) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: Display,
    {
        let Some(peer) = peer else {
            tracing::error!(
                network_id = %self.0.network_id,
                "request without a peer address: serve the metadata router with connect info"
            );
            self.0.counters.unknown_caller();
            return Reply::not_found("No instance for an unknown peer");
        };
        let ip = match peer.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(ip) => ip,
                None => {
                    self.0.counters.unknown_caller();
                    return Reply::not_found(format!("No instance for {v6}"));
                }
            },
        };
        if let Err(wait) = self.0.by_ip.check(&ip, Instant::now()) {
            return too_many(wait);
        }
        let mac = match self.peer_mac(peer, connection).await {
            Ok(Some(mac)) => mac,
            Ok(None) => {
                tracing::info!(
                    network_id = %self.0.network_id, %ip,
                    "refused: the namespace's neighbour table has no usable MAC for this address"
                );
                return self.unknown_caller(ip);
            }
            Err(reason) => {
                tracing::warn!(
                    network_id = %self.0.network_id, %ip, %reason,
                    "cannot look up the caller's MAC address"
                );
                return Reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The metadata service cannot identify the caller right now; retry",
                );
            }
        };
        let md = match self.0.source.identify(&self.0.network_id, ip, Some(mac)) {
            Some(md) => md,
            None => {
                tracing::info!(
                    network_id = %self.0.network_id, %ip,
                    mac = %crate::net::neigh::format_mac(&mac),
                    "refused: no port on this network has this address and MAC"
                );
                return self.unknown_caller(ip);
            }
        };
        if let Err(wait) = self.0.by_server.check(&md.uuid, Instant::now()) {
            return too_many(wait);
        }
        let docs = self.0.documents.get(&md);
        self.dispatch(&md, &docs, req).await
    }

    /// Step 3: the peer's MAC, from its connection when that knows it already.
    async fn peer_mac(
        &self,
        peer: SocketAddr,
        connection: Option<&PeerConnection>,
    ) -> Result<Option<[u8; 6]>, String> {
        let Some(connection) = connection else {
            return self.deadline(self.0.macs.mac(peer, Instant::now())).await?;
        };
        if let Some(mac) = connection.mac.get() {
            return Ok(Some(*mac));
        }
        let found = self
            .deadline(self.0.macs.mac(peer, connection.accepted))
            .await??;
        if let Some(mac) = found {
            // Only a MAC is kept: a connection without one asks again on its next request.
            let _ = connection.mac.set(mac);
        }
        Ok(found)
    }

    /// Runs a step that waits under the request deadline; `Err` (a reason for the log) when
    /// it did not finish in time.
    async fn deadline<T>(&self, step: impl Future<Output = T>) -> Result<T, String> {
        tokio::time::timeout(self.0.timeout, step)
            .await
            .map_err(|_| format!("no answer within {} ms", self.0.timeout.as_millis()))
    }

    /// Step 6: the trees.
    async fn dispatch<B>(
        &self,
        md: &InstanceMetadata,
        docs: &Documents,
        req: http::Request<B>,
    ) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: Display,
    {
        let (head, body) = req.into_parts();
        let segments: Vec<&str> = head
            .uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let method = &head.method;
        match segments.as_slice() {
            ["openstack", rest @ ..] => self.openstack(md, docs, &head, rest, body).await,
            ["latest", "api", "token"] => self.issue_token(md, method, &head.headers),
            [] => self
                .ec2_gate(md, &head.headers)
                .unwrap_or_else(|| read_only(method, ec2::versions())),
            [version, rest @ ..] if ec2::is_version(version) => self
                .ec2_gate(md, &head.headers)
                .unwrap_or_else(|| read_only(method, ec2::get(md, docs, rest))),
            _ => Reply::no_such_path(),
        }
    }

    /// The session-token check of the EC2 tree: `Some(401)` when a presented token is not
    /// valid for this server, or when none is presented and tokens are required.
    fn ec2_gate(&self, md: &InstanceMetadata, headers: &HeaderMap) -> Option<Reply> {
        match headers.get(&TOKEN_HEADER) {
            Some(token) => {
                let token = token.to_str().unwrap_or_default();
                (!self.0.tokens.check(token, &md.uuid, Instant::now())).then(|| {
                    Reply::error(
                        StatusCode::UNAUTHORIZED,
                        "The session token is invalid or expired: get a new one with PUT /latest/api/token",
                    )
                })
            }
            None if self.0.options.require_tokens => Some(Reply::error(
                StatusCode::UNAUTHORIZED,
                "A session token is required: get one with PUT /latest/api/token and send it as X-aws-ec2-metadata-token",
            )),
            None => None,
        }
    }

    /// `PUT /latest/api/token`.
    fn issue_token(&self, md: &InstanceMetadata, method: &Method, headers: &HeaderMap) -> Reply {
        if method != Method::PUT {
            return Reply::method_not_allowed("PUT");
        }
        if headers.contains_key(&FORWARDED_FOR) {
            return Reply::error(
                StatusCode::FORBIDDEN,
                "Session tokens are not issued to requests carrying X-Forwarded-For",
            );
        }
        let Some(ttl) = parse_ttl(headers.get(&TTL_HEADER).map(HeaderValue::as_bytes)) else {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "Send X-aws-ec2-metadata-token-ttl-seconds with a whole number of seconds from 1 to 21600",
            );
        };
        let token = self.0.tokens.issue(&md.uuid, ttl, Instant::now());
        Reply::text(token).header(TTL_HEADER.clone(), HeaderValue::from(ttl.as_secs()))
    }

    /// `/openstack/…`.
    async fn openstack<B>(
        &self,
        md: &InstanceMetadata,
        docs: &Documents,
        head: &http::request::Parts,
        rest: &[&str],
        body: B,
    ) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: Display,
    {
        match openstack::resolve(md, docs, rest) {
            openstack::Target::Read(reply) => read_only(&head.method, reply),
            openstack::Target::Password => match head.method {
                Method::GET | Method::HEAD => self.read_password(md).await,
                Method::POST => self.set_password(md, &head.headers, body).await,
                _ => Reply::method_not_allowed("GET, HEAD, POST"),
            },
        }
    }

    /// `GET /openstack/<v>/password`: the stored password, or an empty body.
    async fn read_password(&self, md: &InstanceMetadata) -> Reply {
        let source = self.0.source.clone();
        let id = md.uuid.clone();
        match self.blocking(move || source.password(&id)).await {
            Ok(password) => Reply::text(password.unwrap_or_default()),
            Err(reply) => reply,
        }
    }

    /// `POST /openstack/<v>/password`: stores the body once.
    async fn set_password<B>(&self, md: &InstanceMetadata, headers: &HeaderMap, body: B) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: Display,
    {
        let too_large = || {
            Reply::error(
                StatusCode::BAD_REQUEST,
                format!("The password is larger than {MAX_PASSWORD_BYTES} bytes"),
            )
        };
        let declared = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_PASSWORD_BYTES as u64) {
            return too_large();
        }
        let body = match self.deadline(read_limited(body)).await {
            Ok(Ok(body)) => body,
            Ok(Err(BodyError::TooLarge)) => return too_large(),
            Ok(Err(BodyError::Read(reason))) => {
                tracing::info!(network_id = %self.0.network_id, server_id = %md.uuid, %reason, "cannot read a posted password");
                return Reply::error(StatusCode::BAD_REQUEST, "Cannot read the request body");
            }
            Err(reason) => return late(&self.0.network_id, &reason),
        };
        let Ok(password) = String::from_utf8(body) else {
            return Reply::error(StatusCode::BAD_REQUEST, "The password is not UTF-8 text");
        };
        if password.is_empty() {
            return Reply::error(StatusCode::BAD_REQUEST, "The password is empty");
        }
        let source = self.0.source.clone();
        let id = md.uuid.clone();
        match self
            .blocking(move || source.set_password(&id, &password))
            .await
        {
            Ok(Ok(())) => Reply::text(""),
            Ok(Err(SetPasswordError::AlreadySet)) => Reply::error(
                StatusCode::CONFLICT,
                "A password is already set for this instance",
            ),
            Ok(Err(e @ SetPasswordError::Store(_))) => {
                tracing::error!(
                    network_id = %self.0.network_id, server_id = %md.uuid, error = %e,
                    "cannot store the password a guest posted"
                );
                Reply::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The password could not be stored; retry later",
                )
            }
            Err(reply) => reply,
        }
    }

    /// Runs a call into the [`MetadataSource`] that may block on a blocking thread, under
    /// the deadline; a panic becomes a 500, a late answer a 503.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Reply> {
        match self.deadline(tokio::task::spawn_blocking(f)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the metadata source failed");
                Err(Reply::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                ))
            }
            Err(reason) => Err(late(&self.0.network_id, &reason)),
        }
    }
}

/// The one axum handler (the [`router`] for tests and benchmarks; the real server calls
/// [`App::serve`] from hyper directly).
async fn handle(State(app): State<App>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    // Through the router every request looks its caller's MAC up on its own.
    app.serve(peer, None, req).await.into_response()
}

/// `reply` for GET and HEAD; 405 for other methods on an existing path (404 stays 404).
fn read_only(method: &Method, reply: Reply) -> Reply {
    if reply.status == StatusCode::NOT_FOUND || matches!(*method, Method::GET | Method::HEAD) {
        reply
    } else {
        Reply::method_not_allowed("GET, HEAD")
    }
}

/// 429 with `Retry-After`.
fn too_many(wait: Duration) -> Reply {
    Reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many metadata requests; slow down",
    )
    .header(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(wait)),
    )
}

/// Why a posted body could not be read.
enum BodyError {
    /// More than [`MAX_PASSWORD_BYTES`].
    TooLarge,
    /// The client's stream failed (the reason, for the log).
    Read(String),
}

/// Reads a posted body of at most [`MAX_PASSWORD_BYTES`].
async fn read_limited<B>(body: B) -> Result<Vec<u8>, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Display,
{
    let mut body = pin!(body);
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(chunk) = frame.into_data() {
            if bytes.len() + chunk.len() > MAX_PASSWORD_BYTES {
                return Err(BodyError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
    }
    Ok(bytes)
}

/// 503 for a step that passed its deadline.
fn late(network_id: &str, reason: &str) -> Reply {
    tracing::warn!(%network_id, %reason, "metadata request did not finish in time");
    Reply::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The metadata service did not answer in time; retry",
    )
}
