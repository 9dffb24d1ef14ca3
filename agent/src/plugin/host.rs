//! What a plugin instance's store holds, and the host side of its imports: the `log`
//! capability and a deny-all WASI whose stdout/stderr land in the agent's log. (The `netlink`
//! capability of network backends is in `netlink.rs`, the `lvm`, `files` and `qemu-img`
//! capabilities of volume drivers in `volume_host.rs`.)

use super::answer::cap;
use super::bindings::{filter, LogLevel, WitHostIdentity};
use super::memory::MemoryBudget;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Most bytes of guest stdout/stderr kept between two flushes; the rest is dropped.
const OUTPUT_CAP: usize = 64 * 1024;

/// A per-plugin budget of log lines per minute, shared by all its instances. Lines over the
/// budget are dropped and counted; the first line of the next minute says how many.
#[derive(Debug)]
pub struct LogBudget {
    per_minute: u32,
    state: Mutex<(Instant, u32, u64)>,
}

impl LogBudget {
    /// A budget of `per_minute` lines.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// Whether one more line may be written now, and how many were dropped before it (in the
    /// minutes since the last line written).
    pub fn take(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0.elapsed() >= Duration::from_secs(60) {
            *state = (Instant::now(), 0, state.2);
        }
        if state.1 < self.per_minute {
            state.1 += 1;
            Some(std::mem::take(&mut state.2))
        } else {
            state.2 += 1;
            None
        }
    }
}

/// Writes one plugin log line into the agent's log, cut to 1 KiB ([`cap`]) and within the
/// budget.
pub fn emit(plugin: &str, budget: &LogBudget, level: LogLevel, message: &str) {
    let Some(dropped) = budget.take() else {
        return;
    };
    if dropped > 0 {
        tracing::warn!(
            plugin,
            dropped,
            "plugin log lines dropped: over the budget of log_lines_per_minute"
        );
    }
    let message = cap(message);
    match level {
        LogLevel::Trace | LogLevel::Debug => tracing::debug!(plugin, "{message}"),
        LogLevel::Info => tracing::info!(plugin, "{message}"),
        LogLevel::Warn => tracing::warn!(plugin, "{message}"),
        LogLevel::Error => tracing::error!(plugin, "{message}"),
    }
}

/// Captured guest stdout/stderr.
#[derive(Clone, Default)]
pub struct GuestOutput {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl GuestOutput {
    /// Takes the complete lines written so far.
    pub fn take_lines(&self) -> Vec<String> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            if buf.len() >= OUTPUT_CAP {
                let text = String::from_utf8_lossy(&buf).into_owned();
                buf.clear();
                return vec![text];
            }
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..=end);
        text.lines().map(str::to_string).collect()
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let room = OUTPUT_CAP.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
        // Report everything written: a chatty plugin loses lines, it does not fail.
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// The data of one plugin instance's store.
pub struct HostState {
    /// Plugin name, for log lines.
    pub plugin: Arc<str>,
    /// Shared log budget of the plugin.
    pub budget: Arc<LogBudget>,
    /// Memory cap of the instance: its memories and what the host keeps of its answers.
    pub memory: MemoryBudget,
    /// Deny-all WASI context.
    pub wasi: WasiCtx,
    /// WASI resources.
    pub table: ResourceTable,
    /// Captured stdout and stderr.
    pub output: GuestOutput,
    /// The `netlink` capability of a network backend granted it.
    pub netlink: Option<Arc<super::netlink::NetlinkHost>>,
    /// The `lvm`, `files` and `qemu-img` capabilities of a volume driver granted them.
    pub volume: Option<Arc<super::volume_host::VolumeHost>>,
    /// When the call in progress must be over: the epoch callback traps a computing guest
    /// then, and host work gets at most what is left.
    pub call_deadline: Option<Instant>,
    /// Who the hosts of the scheduler call in progress are (the `hosts` import); `None`
    /// outside a call.
    pub call_hosts: Option<Arc<dyn HostIdentitySource>>,
    /// The `http` capability's hooks (its grant, the call's deadline, requests made).
    pub http: super::http::HttpHooks,
    /// `wasi:http`'s own state.
    pub http_ctx: wasmtime_wasi_http::WasiHttpCtx,
}

impl HostState {
    /// Arms the store for a call ending at `deadline`: the epoch callback's deadline, the
    /// deadline and request count of its outgoing HTTP requests.
    pub fn begin_call(&mut self, deadline: Instant) {
        self.call_deadline = Some(deadline);
        self.http.deadline = Some(deadline);
        self.http.requests = 0;
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

/// Answers a scheduler plugin's `hosts.identity` for the batch of the call in progress: the
/// scheduler builds it (lazily — most plugins never ask) from the hosts it evaluates.
pub trait HostIdentitySource: Send + Sync {
    /// Names, traits and metadata of the call's hosts, in batch order.
    fn identity(&self) -> WitHostIdentity;
}

/// The identity of no hosts: what `hosts.identity` answers outside a call.
pub fn no_hosts() -> WitHostIdentity {
    WitHostIdentity {
        strings: Vec::new(),
        names: Vec::new(),
        trait_start: vec![0],
        trait_idx: Vec::new(),
        metadata_start: vec![0],
        metadata_key_idx: Vec::new(),
        metadata_value_idx: Vec::new(),
    }
}

impl HostState {
    /// A store's data for `plugin` with a memory cap of `memory_bytes`.
    pub fn new(plugin: Arc<str>, budget: Arc<LogBudget>, memory_bytes: usize) -> Self {
        let output = GuestOutput::default();
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .insecure_random_seed(0)
            .build();
        Self {
            plugin,
            budget,
            memory: MemoryBudget::new(memory_bytes),
            wasi,
            table: ResourceTable::new(),
            output,
            netlink: None,
            volume: None,
            call_deadline: None,
            call_hosts: None,
            http: super::http::HttpHooks::default(),
            http_ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
        }
    }

    /// Moves captured guest output into the agent's log.
    pub fn flush_output(&self) {
        for line in self.output.take_lines() {
            emit(
                &self.plugin,
                &self.budget,
                LogLevel::Info,
                &format!("stderr: {line}"),
            );
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl filter::hyperlet::common::log::Host for HostState {
    async fn log(&mut self, level: LogLevel, message: String) {
        emit(&self.plugin, &self.budget, level, &message);
    }
}

impl filter::hyperlet::common::types::Host for HostState {}
impl filter::hyperlet::scheduler::types::Host for HostState {}

impl filter::hyperlet::scheduler::hosts::Host for HostState {
    async fn identity(&mut self) -> WitHostIdentity {
        match &self.call_hosts {
            Some(source) => source.identity(),
            None => no_hosts(),
        }
    }
}
