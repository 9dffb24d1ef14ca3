//! The agent side of the fleet: one lease per agent, kept alive about every TTL/3, a liveness
//! key under it, and the node record beside it (rewritten when it changes, debounced, and
//! once a minute, never on every heartbeat). The lease and the record are kept by separate
//! loops: a record that is slow or impossible to build never costs a heartbeat.
//!
//! A renewal that fails is retried every second while the lease can still be alive. When etcd
//! stays unreachable, is partitioned, restarted or loses the lease, the agent keeps serving;
//! the link shows `degraded` and [`Registration::run`] retries with backoff, keeps the same
//! lease when etcd still has it, grants a new one otherwise, and puts its keys again.
//! Stopping revokes the lease so the node shows down at once.

use super::backoff::Backoff;
use super::etcd::Etcd;
use super::keys::Keys;
use super::link::FleetLink;
use super::record::{self, Liveness, NodeRecord};
use super::FleetError;
use crate::config::FleetConfig;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the record is rebuilt and compared with what etcd holds.
pub const RECORD_CHECK: Duration = Duration::from_secs(5);
/// A record that did not change is written again after this long.
pub const RECORD_REFRESH: Duration = Duration::from_secs(60);
/// Changes announced through [`Registration::changed`] within this window are written once.
pub const RECORD_DEBOUNCE: Duration = Duration::from_millis(500);
/// Wait before retrying a lease renewal that failed.
pub const KEEP_ALIVE_RETRY: Duration = Duration::from_secs(1);

/// An open keep-alive stream: the sender of renewals and the stream of etcd's answers.
type KeepAlive = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

/// `n` seconds (none when negative).
fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(0).unsigned_abs())
}

/// A failed keep-alive call.
fn keep_alive_failed(source: etcd_client::Error) -> FleetError {
    FleetError::Etcd {
        op: "lease keep-alive",
        source,
    }
}

/// Opens the keep-alive stream of `lease`. Opening renews the lease once (etcd answers the
/// first renewal before the stream is handed over) and fails when etcd no longer has it.
async fn open_keep_alive(etcd: &Etcd, lease: i64) -> Result<KeepAlive, etcd_client::Error> {
    etcd.client().lease_client().keep_alive(lease).await
}

/// Boxed future returned by a [`RecordSource`].
pub type RecordFuture<'a> = Pin<Box<dyn Future<Output = Result<NodeRecord, String>> + Send + 'a>>;

/// Builds this node's record from live figures (the agent) or from a model (the simulator).
pub trait RecordSource: Send + Sync + 'static {
    /// The record as it should be now (`updated_at` is set by the registry).
    fn record(&self) -> RecordFuture<'_>;
}

/// How a registration reaches etcd.
#[derive(Clone)]
pub enum Connection {
    /// Connect from the `[fleet]` section, again after every failure (an agent).
    Config(Box<FleetConfig>),
    /// Share one client (many simulated nodes in one process).
    Shared(Box<Etcd>),
}

/// One node's registration.
pub struct Registration {
    /// How to reach etcd.
    pub connection: Connection,
    /// The key layout.
    pub keys: Keys,
    /// The node's name.
    pub name: String,
    /// The node's stable identity.
    pub node_id: String,
    /// Lease TTL, seconds.
    pub ttl: i64,
    /// The link state this registration reports into.
    pub link: Arc<FleetLink>,
    /// Builds the record.
    pub source: Arc<dyn RecordSource>,
    /// Notified when something in the record changed (written after [`RECORD_DEBOUNCE`]).
    pub changed: Arc<Notify>,
}

/// What one session knows across failures.
#[derive(Default)]
struct Held {
    lease: Option<i64>,
    written: Option<(NodeRecord, Instant)>,
    /// The last record write failed (logged once).
    failing: bool,
}

impl Registration {
    /// Registers and keeps the registration until `stop`, then revokes the lease.
    pub async fn run(self, stop: CancellationToken) {
        let mut held = Held::default();
        let mut backoff = Backoff::default();
        loop {
            let result = match &self.connection {
                Connection::Config(config) => tokio::select! {
                    connected = Etcd::connect(config) => match connected {
                        Ok(etcd) => self.session(&etcd, &mut held, &stop).await,
                        Err(e) => Err(e),
                    },
                    () = stop.cancelled() => Ok(()),
                },
                Connection::Shared(etcd) => self.session(etcd, &mut held, &stop).await,
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    let message = crate::api::error::chain(&e);
                    if self.link.state() != super::link::LinkState::Degraded {
                        tracing::warn!(node = %self.name, error = %message, "fleet link degraded; retrying with backoff");
                    }
                    self.link.failed(&message);
                    if matches!(e, FleetError::LeaseLost) {
                        held.lease = None;
                    }
                }
            }
            if !backoff.wait(&stop).await {
                return;
            }
            if self.link.state() == super::link::LinkState::Up {
                backoff.reset();
            }
        }
    }

    /// One connected session: (re)register, then keep alive until an error or `stop`.
    async fn session(
        &self,
        etcd: &Etcd,
        held: &mut Held,
        stop: &CancellationToken,
    ) -> Result<(), FleetError> {
        let lease = match held.lease {
            Some(id) if etcd.time_to_live(id).await?.is_some() => id,
            _ => {
                let id = etcd.grant(self.ttl).await?;
                held.lease = Some(id);
                id
            }
        };
        self.claim(etcd, lease).await?;
        // Opening the stream renews the lease: it runs a full TTL from here.
        let opened = Instant::now();
        let stream = etcd
            .call("lease keep-alive", open_keep_alive(etcd, lease))
            .await?;
        // The lease and the record are kept by two loops side by side, so a record that is
        // slow to build (a busy host, a slow disk) never delays a renewal.
        let records = async {
            self.try_write_record(etcd, held, true).await;
            self.link.registered();
            tracing::info!(node = %self.name, lease = format!("{lease:x}"), "registered in the fleet");
            self.keep_record(etcd, held).await
        };
        // Only the lease decides whether the node is up: the session ends when it is lost.
        tokio::select! {
            () = stop.cancelled() => {
                match etcd.revoke(lease).await {
                    Ok(()) => tracing::info!(node = %self.name, "fleet lease revoked; the node shows down"),
                    Err(e) => tracing::warn!(node = %self.name, error = %e, "could not revoke the fleet lease; the node shows down after its TTL"),
                }
                Ok(())
            }
            kept = self.keep_lease(etcd, lease, stream, opened + secs(self.ttl)) => kept,
            never = records => match never {},
        }
    }

    /// Renews `lease` (whose renewal is good until `expires`) about every TTL/3. An answer
    /// later than the call deadline turns the link `degraded`, but is still awaited for as long
    /// as the lease can be alive (a slow etcd costs no down-time); a renewal that fails is
    /// retried every [`KEEP_ALIVE_RETRY`] on a fresh stream (whose opening is the renewal,
    /// awaited the same way). The session ends only when the lease must have expired, or when
    /// etcd answers TTL 0 (the lease is gone).
    async fn keep_lease(
        &self,
        etcd: &Etcd,
        lease: i64,
        stream: KeepAlive,
        mut expires: Instant,
    ) -> Result<(), FleetError> {
        let mut stream = Some(stream);
        let mut wait = secs(self.ttl) / 3;
        loop {
            tokio::time::sleep(wait).await;
            let sent = Instant::now();
            let renewal = async {
                let Some((keeper, answers)) = stream.as_mut() else {
                    stream = Some(
                        open_keep_alive(etcd, lease)
                            .await
                            .map_err(keep_alive_failed)?,
                    );
                    return Ok(self.ttl);
                };
                keeper.keep_alive().await.map_err(keep_alive_failed)?;
                match answers.message().await {
                    Ok(Some(resp)) => Ok(resp.ttl()),
                    Ok(None) => Err(FleetError::Unreachable {
                        endpoints: String::new(),
                        reason: "the keep-alive stream ended".into(),
                    }),
                    Err(source) => Err(keep_alive_failed(source)),
                }
            };
            let answer = self.await_renewal(renewal, etcd.deadline(), expires).await;
            match answer {
                Ok(ttl) if ttl > 0 => {
                    if self.link.state() == super::link::LinkState::Degraded {
                        tracing::info!(node = %self.name, "fleet lease renewed again");
                        self.link.registered();
                    }
                    self.link.heartbeat();
                    expires = sent + secs(ttl);
                    wait = secs(ttl) / 3;
                }
                Ok(_) => return Err(FleetError::LeaseLost),
                Err(e) => {
                    // A broken stream is not used again.
                    stream = None;
                    if Instant::now() >= expires {
                        return Err(e);
                    }
                    self.degraded(&e);
                    wait = KEEP_ALIVE_RETRY;
                }
            }
        }
    }

    /// Awaits one renewal until `expires`; past `deadline` the link is `degraded` meanwhile.
    async fn await_renewal(
        &self,
        renewal: impl Future<Output = Result<i64, FleetError>>,
        deadline: Duration,
        expires: Instant,
    ) -> Result<i64, FleetError> {
        tokio::pin!(renewal);
        let late = FleetError::Timeout {
            op: "lease keep-alive",
            after: deadline,
        };
        match tokio::time::timeout(deadline, &mut renewal).await {
            Ok(answer) => return answer,
            Err(_) => self.degraded(&late),
        }
        let until = tokio::time::Instant::from_std(expires);
        tokio::time::timeout_at(until, renewal)
            .await
            .unwrap_or(Err(late))
    }

    /// Reports a failed or late renewal: the link is `degraded` (logged once per spell).
    fn degraded(&self, error: &FleetError) {
        let message = crate::api::error::chain(error);
        if self.link.state() != super::link::LinkState::Degraded {
            tracing::warn!(node = %self.name, error = %message, "fleet lease renewal failed or is late; retrying while the lease lasts");
        }
        self.link.failed(&message);
    }

    /// Compares the record every [`RECORD_CHECK`] and soon after [`Registration::changed`],
    /// and writes it when due. Never ends: a failed write is tried again at the next check.
    async fn keep_record(&self, etcd: &Etcd, held: &mut Held) -> Infallible {
        let mut check = tokio::time::interval(RECORD_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        loop {
            tokio::select! {
                _ = check.tick() => {}
                () = self.changed.notified() => tokio::time::sleep(RECORD_DEBOUNCE).await,
            }
            self.try_write_record(etcd, held, false).await;
        }
    }

    /// [`Registration::write_record`], logging a failure (once until a write succeeds) instead
    /// of returning it: a record this node cannot build right now (its hypervisor is stopped,
    /// say) or etcd cannot take leaves the fleet with the last one written, and the node up
    /// while its lease is kept. After a failure the next check writes whatever it builds.
    async fn try_write_record(&self, etcd: &Etcd, held: &mut Held, force: bool) {
        match self.write_record(etcd, held, force).await {
            Ok(()) => held.failing = false,
            Err(e) => {
                if !held.failing {
                    tracing::warn!(node = %self.name, error = %crate::api::error::chain(&e), "could not write the node record; the fleet keeps the last one; retrying");
                }
                held.failing = true;
                held.written = None;
            }
        }
    }

    /// Puts the liveness key under `lease`: created when absent, taken over when it belongs
    /// to this node id (a restart before the old lease expired), refused when another agent
    /// holds the name.
    async fn claim(&self, etcd: &Etcd, lease: i64) -> Result<(), FleetError> {
        let key = self.keys.alive(&self.name);
        let value = serde_json::to_vec(&Liveness {
            node_id: self.node_id.clone(),
            since: crate::state::now_rfc3339(),
        })
        .map_err(|e| FleetError::Record(e.to_string()))?;
        let put = TxnOp::put(
            key.clone(),
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        // Created when absent; otherwise the holder is read in the same transaction.
        let created = etcd
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([put.clone()])
                    .or_else([TxnOp::get(key.clone(), None)]),
            )
            .await?;
        if created.succeeded() {
            return Ok(());
        }
        let existing = created.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        let Some(existing) = existing else {
            return Err(FleetError::Record(
                "the liveness key changed; retrying".into(),
            ));
        };
        let holder: Liveness = record::parse(existing.value())
            .map_err(|e| FleetError::Record(format!("{key}: {e}")))?;
        if holder.node_id != self.node_id {
            return Err(FleetError::NameTaken {
                name: self.name.clone(),
                holder: holder.node_id,
            });
        }
        if existing.lease() == lease {
            return Ok(());
        }
        let taken = etcd
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        existing.mod_revision(),
                    )])
                    .and_then([put]),
            )
            .await?;
        if !taken.succeeded() {
            return Err(FleetError::Record(
                "the liveness key changed; retrying".into(),
            ));
        }
        // The previous process's lease holds nothing now; end it rather than let it linger.
        if existing.lease() != 0 {
            let _ = etcd.revoke(existing.lease()).await;
        }
        Ok(())
    }

    /// Writes the record (and its placement entry) when it changed, when the last write is older than
    /// [`RECORD_REFRESH`], or always with `force` (after a (re)registration).
    async fn write_record(
        &self,
        etcd: &Etcd,
        held: &mut Held,
        force: bool,
    ) -> Result<(), FleetError> {
        let mut record = self.source.record().await.map_err(FleetError::Record)?;
        let due = match &held.written {
            Some((last, at)) => {
                force || record.differs_from(last) || at.elapsed() >= RECORD_REFRESH
            }
            None => true,
        };
        if !due {
            return Ok(());
        }
        record.updated_at = crate::state::now_rfc3339();
        let value = serde_json::to_vec(&record).map_err(|e| FleetError::Record(e.to_string()))?;
        if value.len() > record::MAX_VALUE_BYTES {
            return Err(FleetError::Record(format!(
                "the node record has {} bytes; at most {}",
                value.len(),
                record::MAX_VALUE_BYTES
            )));
        }
        let entry = serde_json::to_vec(&record::HostEntry::of(&record))
            .map_err(|e| FleetError::Record(e.to_string()))?;
        // Record and placement entry together: placement never sees one without the other.
        etcd.txn(Txn::new().and_then(vec![
            TxnOp::put(self.keys.node(&self.name), value, None),
            TxnOp::put(self.keys.host(&self.name), entry, None),
        ]))
        .await?;
        self.link.record_written();
        held.written = Some((record, Instant::now()));
        Ok(())
    }
}
