//! The connection to etcd: endpoints, TLS, user and password from [`FleetConfig`], and a
//! deadline on every call.
//!
//! Both sides of the fleet use it: the agent's registry and the controller's view (`hyperlet
//! fleet …`). Streams (watches, lease keep-alives) are not deadlined as a whole; their owners
//! bound each message instead and reconnect themselves (the client does not).

use super::FleetError;
use crate::config::FleetConfig;
use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, PutOptions, Txn, TxnResponse};
use std::future::Future;
use std::time::Duration;

/// Keys read per page by [`Etcd::get_prefix`] (bounds one response's size).
pub const PAGE: i64 = 500;
/// Largest gRPC message accepted from etcd.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// How [`Etcd::read_prefix`] pages through a prefix.
#[derive(Debug, Clone, Copy)]
pub struct Pages {
    /// Keys per page (the first try; halved when a page is too large for one message).
    pub size: i64,
    /// Keys (and their leases and revisions) without values.
    pub keys_only: bool,
}

impl Default for Pages {
    fn default() -> Self {
        Self {
            size: PAGE,
            keys_only: false,
        }
    }
}

/// Whether a call failed because its answer exceeded the message limit.
fn too_large(error: &FleetError) -> bool {
    match error {
        FleetError::Etcd {
            source: etcd_client::Error::GRpcStatus(status),
            ..
        } => matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        _ => false,
    }
}

/// A connected etcd client with a deadline on every unary call.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    deadline: Duration,
}

/// Reads a small secret or certificate file named in the config.
fn read_file(setting: &'static str, path: &std::path::Path) -> Result<Vec<u8>, FleetError> {
    let meta = std::fs::metadata(path).map_err(|e| FleetError::Setup {
        setting,
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    if meta.len() > 1024 * 1024 {
        return Err(FleetError::Setup {
            setting,
            reason: format!("{} is larger than 1 MiB", path.display()),
        });
    }
    std::fs::read(path).map_err(|e| FleetError::Setup {
        setting,
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

/// The connect options the section asks for (TLS files and the password file are read here).
fn options(config: &FleetConfig) -> Result<ConnectOptions, FleetError> {
    let deadline = config.call_timeout();
    let mut options = ConnectOptions::new()
        .with_connect_timeout(deadline)
        .with_keep_alive(Duration::from_secs(5), deadline)
        .with_keep_alive_while_idle(true);
    if config.endpoints.iter().any(|e| e.starts_with("https://")) {
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &config.ca_cert {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read_file(
                "fleet.ca_cert",
                ca,
            )?));
        }
        if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read_file("fleet.client_cert", cert)?,
                read_file("fleet.client_key", key)?,
            ));
        }
        options = options.with_tls(tls);
    }
    if let (Some(user), Some(file)) = (&config.user, &config.password_file) {
        let password =
            String::from_utf8(read_file("fleet.password_file", file)?).map_err(|_| {
                FleetError::Setup {
                    setting: "fleet.password_file",
                    reason: "the password is not UTF-8".into(),
                }
            })?;
        options = options.with_user(user, password.trim_end_matches(['\r', '\n']));
    }
    Ok(options)
}

impl Etcd {
    /// Connects (and authenticates when a user is configured) within the call deadline.
    ///
    /// # Errors
    /// [`FleetError::Setup`] for unreadable TLS or password files, [`FleetError::Unreachable`]
    /// when no endpoint answers in time.
    pub async fn connect(config: &FleetConfig) -> Result<Self, FleetError> {
        let options = options(config)?;
        let deadline = config.call_timeout();
        let endpoints = config.endpoints.clone();
        let client = tokio::time::timeout(deadline, Client::connect(&endpoints, Some(options)))
            .await
            .map_err(|_| FleetError::Unreachable {
                endpoints: endpoints.join(","),
                reason: format!("no answer within {deadline:?}"),
            })?
            .map_err(|e| FleetError::Unreachable {
                endpoints: endpoints.join(","),
                reason: e.to_string(),
            })?;
        Ok(Self { client, deadline })
    }

    /// The deadline of one call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The underlying client (for streams: watches and keep-alives).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs one etcd call within the deadline.
    pub async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(self.deadline, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(FleetError::Etcd { op, source }),
            Err(_) => Err(FleetError::Timeout {
                op,
                after: self.deadline,
            }),
        }
    }

    /// One key's value, or `None`.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, FleetError> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut resp = self.call("get", kv.get(key, None)).await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// Every key under `prefix`, read page by page at one revision (a consistent snapshot
    /// of any size, no response larger than [`PAGE`] keys). Returns the keys and that revision.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), FleetError> {
        self.get_prefix_at(prefix, 0).await
    }

    /// The store's current revision.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn revision(&self) -> Result<i64, FleetError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(
                "get",
                kv.get("\0", Some(GetOptions::new().with_count_only())),
            )
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// [`Etcd::get_prefix`] at `revision` (0: the current one).
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails, does not answer in time, or compacted `revision` away.
    pub async fn get_prefix_at(
        &self,
        prefix: &str,
        at: i64,
    ) -> Result<(Vec<KeyValue>, i64), FleetError> {
        self.read_prefix(prefix, at, Pages::default()).await
    }

    /// Every key under `prefix` at revision `at` (0: the current one), page by page as `pages`
    /// says. A page too large for one message (someone wrote huge values) is read again in
    /// halves, down to one key per page, so no value etcd accepts makes a prefix unreadable.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails, does not answer in time, or compacted `at` away.
    pub async fn read_prefix(
        &self,
        prefix: &str,
        at: i64,
        pages: Pages,
    ) -> Result<(Vec<KeyValue>, i64), FleetError> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let end = prefix_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = at;
        let mut limit = pages.size.max(1);
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            if pages.keys_only {
                options = options.with_keys_only();
            }
            let mut resp = match self.call("get", kv.get(start.clone(), Some(options))).await {
                Ok(resp) => resp,
                Err(e) if limit > 1 && too_large(&e) => {
                    limit = (limit / 2).max(1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            start = last.key().to_vec();
            start.push(0);
            out.extend(kvs);
            if !more {
                break;
            }
        }
        Ok((out, revision))
    }

    /// Writes a key, under a lease when `lease` is not 0.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<(), FleetError> {
        let mut kv = self.client.kv_client();
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        self.call("put", kv.put(key, value, options)).await?;
        Ok(())
    }

    /// Deletes a key; returns how many were deleted.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn delete(&self, key: &str) -> Result<i64, FleetError> {
        let mut kv = self.client.kv_client();
        Ok(self.call("delete", kv.delete(key, None)).await?.deleted())
    }

    /// Runs a transaction.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, FleetError> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        self.call("txn", kv.txn(txn)).await
    }

    /// Grants a lease of `ttl` seconds; returns its id.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn grant(&self, ttl: i64) -> Result<i64, FleetError> {
        let mut lease = self.client.lease_client();
        Ok(self.call("lease grant", lease.grant(ttl, None)).await?.id())
    }

    /// Revokes a lease (its keys are deleted at once).
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn revoke(&self, id: i64) -> Result<(), FleetError> {
        let mut lease = self.client.lease_client();
        self.call("lease revoke", lease.revoke(id)).await?;
        Ok(())
    }

    /// Seconds a lease has left and its granted TTL, or `None` when it no longer exists.
    ///
    /// # Errors
    /// [`FleetError`] when etcd fails or does not answer in time.
    pub async fn time_to_live(&self, id: i64) -> Result<Option<(i64, i64)>, FleetError> {
        let mut lease = self.client.lease_client();
        let resp = self
            .call("lease time-to-live", lease.time_to_live(id, None))
            .await?;
        Ok((resp.ttl() > 0).then(|| (resp.ttl(), resp.granted_ttl())))
    }
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
