//! The `http` capability: a plugin's outgoing `wasi:http` requests, only to the origins and
//! with the methods its grant lists (`[plugins.http]`), each under a deadline inside its
//! call's, with bounded request and response bodies. The host sends the request itself (one
//! HTTP/1.1 connection per request, TLS with the system's or the configured roots), reads the
//! whole response within the caps, and only then hands it to the plugin; it never follows a
//! redirect (the plugin sees the 3xx, and a request to wherever it points is checked like any
//! other). Anything else fails with `HTTP-request-denied` before a byte leaves the host.
//! What the plugin holds host-side is bounded too: at most [`MAX_RESOURCES`] resources, a
//! header section of [`FIELD_SIZE_LIMIT`], body chunks of 64 KiB; and an instance that made
//! a request is never reused, so requests it left in flight and answers it did not read end
//! with the call that made them.

use super::bindings::LogLevel;
use super::host::{emit, LogBudget};
use crate::config::{HttpGrant, Origin};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::http;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Largest response header section, bytes (hyper's read buffer).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Where systems keep their CA bundle (Debian/Ubuntu, RHEL/Fedora, Alpine/others); the first
/// that exists is used.
const SYSTEM_ROOTS: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// Largest request header section the plugin's `fields` may hold, bytes.
pub const FIELD_SIZE_LIMIT: usize = 16 * 1024;
/// Most resources (requests, bodies, streams, fields, …) an http-granted instance may hold.
pub const MAX_RESOURCES: usize = 1024;
/// Largest chunk of a request body the plugin may write at once, bytes.
const MAX_BODY_CHUNK: usize = 64 * 1024;
/// Name lookups running at once for all plugins (each holds a blocking-pool thread).
static DNS_LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

/// One plugin's `http` grant, ready to send.
pub struct HttpHost {
    plugin: Arc<str>,
    origins: Vec<Origin>,
    methods: Vec<http::Method>,
    timeout: Duration,
    max_response_bytes: usize,
    max_request_bytes: usize,
    max_requests_per_call: u32,
    tls: Option<tokio_rustls::TlsConnector>,
    log: Arc<LogBudget>,
}

impl HttpHost {
    /// The host side of `grant` for `plugin`; reads the CA roots when an origin is https.
    ///
    /// # Errors
    /// Why the grant cannot be used (an origin or CA file that does not parse).
    pub fn new(plugin: Arc<str>, grant: &HttpGrant, log: Arc<LogBudget>) -> Result<Self, String> {
        let origins = grant.parsed_origins()?;
        let methods = grant
            .methods
            .iter()
            .map(|m| {
                http::Method::from_bytes(m.as_bytes()).map_err(|e| format!("http.methods: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = if origins.iter().any(|o| o.scheme == "https") {
            Some(match &grant.ca_file {
                Some(path) => connector(path, true)?,
                None => {
                    let path = SYSTEM_ROOTS
                        .iter()
                        .map(std::path::Path::new)
                        .find(|p| p.exists())
                        .ok_or_else(|| {
                            format!(
                                "http: no system CA bundle ({}); install ca-certificates or set \
                                 [plugins.http] ca_file",
                                SYSTEM_ROOTS.join(", ")
                            )
                        })?;
                    connector(path, false)?
                }
            })
        } else {
            None
        };
        Ok(Self {
            plugin,
            origins,
            methods,
            timeout: Duration::from_millis(grant.timeout_ms),
            max_response_bytes: usize::try_from(grant.max_response_bytes).unwrap_or(usize::MAX),
            max_request_bytes: usize::try_from(grant.max_request_bytes).unwrap_or(usize::MAX),
            max_requests_per_call: grant.max_requests_per_call,
            tls,
            log,
        })
    }

    fn denied(&self, why: &str) -> Error {
        emit(
            &self.plugin,
            &self.log,
            LogLevel::Warn,
            &format!("http request denied: {why}"),
        );
        Error::HttpRequestDenied
    }

    /// Whether the request may go out: its origin and method are on the grant's lists.
    fn check(&self, request: &http::Request<WasiBody>) -> Result<Origin, Error> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("");
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(self.denied("a user part in the authority"));
        }
        let Some(host) = uri.host() else {
            return Err(self.denied("no host"));
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(match scheme {
            "https" => 443,
            _ => 80,
        });
        let origin = Origin {
            scheme: scheme.to_string(),
            host,
            port,
        };
        if !self.origins.contains(&origin) {
            return Err(self.denied(&format!("{origin} is not among the granted origins")));
        }
        if !self.methods.contains(request.method()) {
            return Err(self.denied(&format!("method {} is not granted", request.method())));
        }
        Ok(origin)
    }

    /// Sends `request` to `origin` and reads the whole answer, all before `deadline`.
    async fn send(
        self: Arc<Self>,
        origin: Origin,
        request: http::Request<WasiBody>,
        deadline: Instant,
    ) -> Result<http::Response<WasiBody>, Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.exchange(origin, request)).await {
            Ok(result) => result,
            Err(_) => Err(Error::HttpResponseTimeout),
        }
    }

    async fn exchange(
        &self,
        origin: Origin,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let (mut parts, body) = request.into_parts();
        let body = Limited::new(body, self.max_request_bytes)
            .collect()
            .await
            .map_err(|_| Error::HttpRequestBodySize(Some(self.max_request_bytes as u64)))?
            .to_bytes();
        // Origin-form on the wire: the connection is already to the origin.
        let target = match parts.uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => "/".to_string(),
            Some(p) if p.starts_with('/') => p.to_string(),
            Some(p) => format!("/{p}"),
        };
        parts.uri = target.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
        // The Host header names the checked origin, never what the plugin wrote.
        let default_port = if origin.scheme == "https" { 443 } else { 80 };
        let host = match (origin.host.contains(':'), origin.port == default_port) {
            (true, true) => format!("[{}]", origin.host),
            (true, false) => format!("[{}]:{}", origin.host, origin.port),
            (false, true) => origin.host.clone(),
            (false, false) => format!("{}:{}", origin.host, origin.port),
        };
        parts.headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(&host).map_err(|_| Error::HttpRequestUriInvalid)?,
        );
        let request = http::Request::from_parts(parts, Full::new(body));
        // A name is resolved on tokio's blocking pool, where a lookup outlives the request's
        // deadline: at most DNS_LOOKUPS run at once, whichever plugins ask.
        let lookup = match origin.host.parse::<std::net::IpAddr>() {
            Ok(_) => None,
            Err(_) => Some(DNS_LOOKUPS.acquire().await.map_err(|_| Error::DnsTimeout)?),
        };
        let tcp = tokio::net::TcpStream::connect((origin.host.as_str(), origin.port))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
                _ => Error::Connect(e),
            })?;
        drop(lookup);
        let response = match (&self.tls, origin.scheme.as_str()) {
            (Some(tls), "https") => {
                let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
                    .map_err(|_| Error::HttpRequestUriInvalid)?;
                let stream = tls.connect(name, tcp).await.map_err(Error::Tls)?;
                round_trip(stream, request).await?
            }
            _ => round_trip(tcp, request).await?,
        };
        let (response, _connection) = response;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, self.max_response_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Error::HttpResponseBodySize(Some(self.max_response_bytes as u64))
                } else {
                    Error::HttpResponseIncomplete
                }
            })?
            .to_bytes();
        let body = Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync();
        Ok(http::Response::from_parts(parts, body))
    }
}

/// The task driving one connection, aborted when the exchange that owns it ends (answered,
/// failed or dropped at its deadline), so a peer that never closes holds nothing.
struct Connection(tokio::task::JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP/1.1 exchange on `io`: the response, and the connection to keep until its body
/// is read.
async fn round_trip<S>(
    io: S,
    request: http::Request<Full<Bytes>>,
) -> Result<(http::Response<hyper::body::Incoming>, Connection), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEADER_BYTES)
        .handshake(hyper_util::rt::TokioIo::new(io))
        .await?;
    let connection = Connection(tokio::spawn(async move {
        let _ = connection.await;
    }));
    Ok((sender.send_request(request).await?, connection))
}

/// A TLS connector trusting the CAs in the PEM file `path`: every one of them when `strict`
/// (an operator's file: a bad certificate is an error), else those that parse (a system
/// bundle).
fn connector(path: &std::path::Path, strict: bool) -> Result<tokio_rustls::TlsConnector, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("http: cannot read CA file {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("http: {}: {e}", path.display()))?;
    if strict {
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("http: {}: {e}", path.display()))?;
        }
    } else {
        roots.add_parsable_certificates(certs);
    }
    if roots.is_empty() {
        return Err(format!("http: {} holds no certificate", path.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("http: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The `wasi:http` hooks of one instance: its grant (none: every request is denied), the
/// current call's deadline and how many requests the call has made.
#[derive(Default)]
pub struct HttpHooks {
    /// The grant; `None` for a plugin without it (it cannot even link `wasi:http`).
    pub host: Option<Arc<HttpHost>>,
    /// The deadline of the call in progress.
    pub deadline: Option<Instant>,
    /// Requests made in the call in progress.
    pub requests: u32,
    /// Requests made since the instance was made: an instance that made any is not reused
    /// (what it left in flight or unread goes with it).
    pub requests_total: u64,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn set_host_header(&mut self) -> bool {
        // `exchange` sets it from the checked origin.
        false
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        self.host
            .as_ref()
            .map_or(1, |h| h.max_request_bytes.clamp(1, MAX_BODY_CHUNK))
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let denied = |e: Error| -> SendFuture { Box::new(async move { Err(e) }) };
        let Some(host) = self.host.clone() else {
            return denied(Error::HttpRequestDenied);
        };
        if self.requests >= host.max_requests_per_call {
            return denied(host.denied(&format!(
                "more than {} requests in one call",
                host.max_requests_per_call
            )));
        }
        self.requests += 1;
        self.requests_total += 1;
        let origin = match host.check(&request) {
            Ok(origin) => origin,
            Err(e) => return denied(e),
        };
        let mut deadline = Instant::now() + host.timeout;
        if let Some(call) = self.deadline {
            deadline = deadline.min(call);
        }
        Box::new(async move {
            let response = host.send(origin, request, deadline).await?;
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}
