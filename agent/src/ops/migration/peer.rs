//! Finding a node in the fleet, and calling its agent as a peer (the fleet's peer token, TLS
//! checked against `[migration] peer_ca_cert` or the system's roots, a deadline on every call).

use crate::fleet::etcd::Etcd;
use crate::fleet::keys::Keys;
use crate::fleet::record::{self, NodeRecord};
use crate::ops::{OpError, Services};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Deadline of a peer call that does quick work.
pub const CALL: Duration = Duration::from_secs(30);
/// Deadline of the destination's preparation (it may fetch image blobs first).
pub const PREPARE: Duration = Duration::from_secs(900);
/// Largest answer read from a peer's JSON call.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Another node as the fleet describes it.
#[derive(Debug, Clone)]
pub struct FleetNode {
    /// Its record.
    pub record: NodeRecord,
    /// Whether its lease is alive.
    pub up: bool,
}

/// Reads node `name` from the fleet.
///
/// # Errors
/// [`OpError::Conflict`] when this node is not in a fleet or no such node is listed,
/// [`OpError::Fleet`] when etcd cannot be read.
pub async fn find(services: &Services, name: &str) -> Result<FleetNode, OpError> {
    let Some(fleet) = &services.config().fleet else {
        return Err(OpError::Conflict(
            "this node is not in a fleet ([fleet] is not configured)".into(),
        ));
    };
    let keys = Keys::new(&fleet.prefix);
    let etcd = Etcd::connect(fleet).await?;
    let (node_key, alive_key) = (keys.node(name), keys.alive(name));
    let (record, alive) = tokio::join!(etcd.get(&node_key), etcd.get(&alive_key));
    let Some(kv) = record? else {
        return Err(OpError::Conflict(format!(
            "no node named {name:?} in the fleet"
        )));
    };
    let record: NodeRecord = record::parse(kv.value())
        .map_err(|e| OpError::Conflict(format!("node {name}'s record is unreadable: {e}")))?;
    if record.name != name {
        return Err(OpError::Conflict(format!(
            "node {name}'s record names another node"
        )));
    }
    Ok(FleetNode {
        record,
        up: alive?.is_some(),
    })
}

/// A client for other agents' `/v1/peer/…` routes.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    token: String,
}

fn peer_error(what: &str, url: &str, reason: impl std::fmt::Display) -> OpError {
    OpError::Conflict(format!("peer {url}: {what} failed: {reason}"))
}

impl PeerClient {
    /// A client with this node's peer token.
    ///
    /// # Errors
    /// [`OpError::Conflict`] when this node has no peer token, or the CA file is unusable.
    pub fn new(services: &Services) -> Result<Self, OpError> {
        let token = services
            .migrations()
            .peer_token()
            .ok_or_else(|| {
                OpError::Conflict(
                    "this node takes no part in migrations: set [migration] peer_token_file".into(),
                )
            })?
            .as_str()
            .to_string();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &services.config().migration.peer_ca_cert {
            let pem = std::fs::read(ca)
                .map_err(|e| OpError::Conflict(format!("cannot read {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                OpError::Conflict(format!("{} is not a PEM certificate: {e}", ca.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| OpError::Conflict(format!("cannot build the peer client: {e}")))?;
        Ok(Self { http, token })
    }

    /// `POST {base}{path}` with a JSON body; the JSON answer (at most 4 MiB) within `deadline`.
    ///
    /// # Errors
    /// [`OpError::Conflict`] naming the peer and its answer when the call fails or is refused.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &B,
        deadline: Duration,
    ) -> Result<T, OpError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let call = async {
            let resp = self
                .http
                .post(&url)
                .bearer_auth(&self.token)
                .json(body)
                .send()
                .await
                .map_err(|e| peer_error("the call", &url, e))?;
            let status = resp.status();
            let bytes = read_bounded(resp, MAX_ANSWER)
                .await
                .map_err(|e| peer_error("reading the answer", &url, e))?;
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err(OpError::NotFound {
                    kind: "peer resource",
                    id: url.clone(),
                });
            }
            if !status.is_success() {
                let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(500).collect());
                return Err(OpError::Conflict(format!(
                    "peer {url} answered {status}: {message}"
                )));
            }
            serde_json::from_slice(&bytes).map_err(|e| peer_error("decoding the answer", &url, e))
        };
        tokio::time::timeout(deadline, call)
            .await
            .map_err(|_| peer_error("the call", &url, format!("no answer within {deadline:?}")))?
    }

    /// `GET {base}{path}` as a byte stream (its own idle deadline is the receiver's).
    ///
    /// # Errors
    /// [`OpError::Conflict`] when the peer cannot be reached or refuses.
    pub async fn get_stream(
        &self,
        base: &str,
        path: &str,
        header: Option<(&str, &str)>,
    ) -> Result<impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>>, OpError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let mut request = self.http.get(&url).bearer_auth(&self.token);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let resp = tokio::time::timeout(CALL, request.send())
            .await
            .map_err(|_| peer_error("the call", &url, "no answer within 30 s"))?
            .map_err(|e| peer_error("the call", &url, e))?;
        if !resp.status().is_success() {
            return Err(peer_error("the download", &url, resp.status()));
        }
        Ok(resp.bytes_stream())
    }
}

async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {max} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
