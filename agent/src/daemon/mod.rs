//! `hyperlet serve`: bring the agent up, serve until SIGTERM/SIGINT, shut down cleanly.
//!
//! Startup order: validate the config → create the state directory and take its lock → open
//! the store → load or generate the admin token → probe KVM and choose the domain type →
//! replace the firewall's nftables tables from the store (one transaction) → recover
//! interrupted operations from the journal → check libvirt → listen → join the fleet (with
//! `[fleet]`). Shutdown: revoke the fleet lease, stop
//! accepting, let in-flight requests finish (bounded by `api.shutdown_grace_secs`), record
//! `agent.stopped`, checkpoint the store.

pub mod listener;
mod tls;

pub use tls::server_config;

use crate::auth::{self, TokenSource};
use crate::compute::DomainType;
use crate::config::{Config, ConfigError};
use crate::image::{CacheLimits, ImageCache};
use crate::ops::{Services, ServicesParts};
use crate::plugin::{PluginEngine, PluginRegistry};
use crate::state::{Store, StoreError};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The settings are not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory cannot be created or locked.
    #[error("Cannot use state directory {path}: {reason}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The admin token cannot be loaded or written.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The configured domain type cannot be used.
    #[error(transparent)]
    Compute(#[from] crate::compute::ComputeError),
    /// The image cache cannot be opened.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// The plugin runtime cannot start.
    #[error("Plugin runtime failed: {0}")]
    Plugin(String),
    /// The node cannot join its fleet (a setting or file of `[fleet]`).
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// TLS files cannot be used.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The listen address cannot be bound.
    #[error("Cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Holds the exclusive lock on the state directory for the agent's lifetime.
struct StateLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn prepare_state_dir(config: &Config) -> Result<StateLock, DaemonError> {
    let dir = &config.state_dir;
    let fail = |reason: String| DaemonError::StateDir {
        path: dir.clone(),
        reason,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| fail(e.to_string()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("agent.lock"))
        .map_err(|e| fail(e.to_string()))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| {
            fail(format!(
                "another hyperlet is already running on it ({errno}); stop it or use another --state-dir"
            ))
        },
    )?;
    Ok(StateLock { _lock: lock })
}

/// This node's id: generated once, kept in the store.
async fn node_id(store: &Store) -> Result<String, StoreError> {
    if let Some(id) = store.get_setting::<String>("node.id").await? {
        return Ok(id);
    }
    let id = uuid::Uuid::new_v4().to_string();
    store.put_setting("node.id", &id).await?;
    Ok(id)
}

fn image_limits(config: &Config) -> CacheLimits {
    const GIB: u64 = 1024 * 1024 * 1024;
    CacheLimits {
        max_upload_bytes: config.images.max_upload_gb.saturating_mul(GIB),
        max_virtual_size: config.images.max_virtual_size_gb.saturating_mul(GIB),
        convert_timeout: std::time::Duration::from_secs(config.images.convert_timeout_secs),
        qemu_img: crate::tool::Limits {
            address_space_bytes: config.images.qemu_img_memory_mb.saturating_mul(1 << 20),
            cpu_secs: config.images.qemu_img_cpu_secs,
        },
    }
}

/// Runs the agent until a termination signal arrives.
///
/// # Errors
/// [`DaemonError`] when the agent cannot start; once serving, errors are logged instead.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    config.validate()?;
    let _lock = prepare_state_dir(&config)?;
    let store = Store::open(&config.store_path())?;
    let (token, source) = auth::load_or_create(&config)?;
    match &source {
        TokenSource::Generated(path) => {
            tracing::info!(path = %path.display(), "generated the admin token (mode 0600)");
        }
        TokenSource::File(path) => tracing::info!(path = %path.display(), "admin token loaded"),
        TokenSource::Config => tracing::info!("admin token taken from the config"),
    }
    let kvm = crate::host::probe_kvm();
    let domain_type = DomainType::choose(config.hypervisor.domain_type, &kvm)?;
    tracing::info!(
        domain_type = ?domain_type,
        accelerator = domain_type.accelerator(),
        kvm_usable = kvm.usable,
        reason = %kvm.reason,
        "hypervisor domain type chosen"
    );
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(server_config(
            cert,
            key,
            config.tls.client_ca.as_deref(),
        )?)),
        _ => None,
    };
    let images = ImageCache::open(&config.images_dir(), image_limits(&config))?;
    let node_id = node_id(&store).await?;
    let engine = PluginEngine::new().map_err(|e| DaemonError::Plugin(e.to_string()))?;
    let plugins = {
        let (engine, dir) = (engine.clone(), config.plugin_cache_dir());
        let (configs, lines) = (
            config.plugins.clone(),
            config.plugin_runtime.log_lines_per_minute,
        );
        Arc::new(PluginRegistry::load(engine, dir, &configs, lines).await)
    };
    let stop = CancellationToken::new();
    let services = Services::new(ServicesParts {
        config: config.clone(),
        store: store.clone(),
        token,
        kvm,
        domain_type,
        shutdown: stop.clone(),
        images,
        node_id,
        plugins: plugins.clone(),
    });
    crate::ops::servers::register_handlers(&services);
    crate::ops::volumes::register_handlers(&services);
    crate::ops::networks::register_handlers(&services);
    crate::ops::fleet::enable_claims(&services)?;
    crate::ops::migration::register_handlers(&services);
    crate::ops::migration::enable(&services)?;

    // The agent's nftables tables replaced whole (one transaction) before anything can start
    // a guest: running guests stay filtered across the restart.
    if let Err(e) = crate::ops::security_groups::apply::sync(&services).await {
        tracing::error!(error = %crate::api::error::chain(&e), "cannot program the firewall at start");
    }
    let report = services.journal().recover().await?;
    if !report.rolled_back.is_empty() || !report.resumed.is_empty() || !report.failed.is_empty() {
        tracing::warn!(?report, "recovered interrupted operations");
    }
    services.journal().prune_finished(7).await?;
    let reset = store.reset_interrupted_uploads().await?;
    if reset > 0 {
        tracing::warn!(
            count = reset,
            "image uploads were interrupted by a restart; they are queued again"
        );
    }
    let removed = services.images().gc(&store.referenced_blobs().await?);
    if removed > 0 {
        tracing::info!(count = removed, "removed unreferenced image cache files");
    }
    std::fs::create_dir_all(config.servers_dir()).map_err(|e| DaemonError::StateDir {
        path: config.servers_dir(),
        reason: e.to_string(),
    })?;
    // Bridges, DHCP namespaces and metadata first: servers being adopted plug into them.
    crate::ops::networks::runtime::restore(&services).await;
    if let Err(e) = crate::ops::servers::recover_interrupted(&services).await {
        tracing::warn!(error = %crate::api::error::chain(&e), "could not recover interrupted server actions");
    }
    if let Err(e) = crate::ops::volumes::recover::recover(&services).await {
        tracing::warn!(error = %crate::api::error::chain(&e), "could not recover interrupted volume work");
    }
    let adopted = match crate::ops::servers::adopt_and_reconcile(&services).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %crate::api::error::chain(&e), "first sync with libvirt failed; retrying in the background");
            false
        }
    };
    let sync = tokio::spawn(crate::ops::servers::run_sync(
        services.clone(),
        stop.clone(),
        adopted,
    ));
    let reload = config.plugin_runtime.reload_interval_ms;
    let watcher = (reload > 0).then(|| {
        tokio::spawn(
            plugins
                .clone()
                .watch(std::time::Duration::from_millis(reload), stop.clone()),
        )
    });
    let monitor = {
        let services = services.clone();
        let stop = stop.clone();
        tokio::spawn(async move { services.hypervisor().run(stop).await })
    };

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: config.listen,
        source,
    })?;
    // Registration runs beside the API; stopping revokes the lease (the node shows down at
    // once) while in-flight requests drain.
    let fleet = crate::ops::fleet::start(&services, local, stop.clone()).await?;
    services
        .events()
        .publish(
            "agent.started",
            "host",
            &crate::host::hostname().unwrap_or_default(),
            serde_json::json!({ "version": crate::VERSION, "listen": local.to_string() }),
        )
        .await?;
    let node_page = config.api.node_page.then(|| {
        let scheme = if tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{local}/ui/")
    });
    tracing::info!(
        listen = %local,
        tls = tls.is_some(),
        mutual_tls = config.tls.client_ca.is_some(),
        state_dir = %config.state_dir.display(),
        node_page = node_page.as_deref().unwrap_or("off"),
        "hyperlet is serving"
    );

    let signals = {
        let stop = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        })
    };
    let grace = std::time::Duration::from_secs(config.api.shutdown_grace_secs);
    listener::serve(
        listener,
        crate::api::router(services.clone()),
        services.clone(),
        tls,
        stop.clone(),
        grace,
    )
    .await;
    signals.abort();
    // Console sessions left the listener at their upgrade: tell each why it ends.
    services
        .consoles()
        .end_all(std::time::Duration::from_secs(2))
        .await;
    if let Some(fleet) = fleet {
        let _ = fleet.await;
    }
    let _ = monitor.await;
    let _ = sync.await;
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    engine.shutdown();
    // DHCP and metadata stop; namespaces and bridges stay so guests keep their L2 links, and
    // the next start rebuilds the servers from the store.
    services.net_runtime().stop_all().await;

    if let Err(e) = services
        .events()
        .publish(
            "agent.stopped",
            "host",
            &crate::host::hostname().unwrap_or_default(),
            serde_json::json!({ "version": crate::VERSION }),
        )
        .await
    {
        tracing::warn!(error = %e, "could not record agent.stopped");
    }
    let flush = Arc::new(store);
    flush.flush()?;
    tracing::info!("store flushed; bye");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}
