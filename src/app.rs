//! Composition root: turns a validated [`Config`] into a running server (store, registry
//! service, HTTP state, listener). Used by `cargohold serve` and by in-process tests.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cache::crate_files::CrateFiles;
use crate::cache::index_cache::IndexCache;
use crate::config::env::ProcessEnv;
use crate::config::{Config, RegistryKind};
use crate::http::HttpState;
use crate::registry::admin::AdminToken;
use crate::registry::auth::hash_token;
use crate::registry::{client_registry_name, CacheHandles, RegistryService, ServiceSettings};
use crate::server::tls::ReloadableCert;
use crate::server::ServerSettings;
use crate::store::PrivateStore;

/// A started server.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The URL `config.json` advertises.
    pub public_url: String,
    /// Where the admin token comes from.
    pub admin_token: AdminToken,
    /// The registry service (tests poke at it directly).
    pub registry: Arc<RegistryService>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, waits for in-flight requests (up to the grace period), closes the store.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        self.registry.caches().index.flush().await;
        if let Err(e) = self.registry.store().meta.close().await {
            tracing::error!(error = %e, "closing the store failed");
        }
    }

    /// Waits until the server stops by itself (it does not, unless shut down).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// The lines a user pastes into `~/.cargo/config.toml`.
    pub fn cargo_config_snippet(&self) -> String {
        let regs = self.registry.registries();
        let mut out = String::new();
        let mut auth = false;
        for spec in regs.values() {
            out.push_str(&format!(
                "[registries.{}]\nindex = \"{}\"\n",
                client_registry_name(&spec.name),
                self.registry.index_url(&spec.name)
            ));
            auth |= spec.auth_required;
        }
        // Only a proxy of crates.io itself may stand in for crates.io.
        if let Some(proxy) = regs
            .values()
            .find(|s| s.kind == RegistryKind::Proxy && s.upstream.is_none())
        {
            out.push_str(&format!(
                "\n# to fetch crates.io crates through cargohold:\n[source.crates-io]\nreplace-with = \"{}\"\n",
                client_registry_name(&proxy.name)
            ));
        }
        if auth {
            out.push_str("\n[registry]\nglobal-credential-providers = [\"cargo:token\"]\n");
        }
        out
    }
}

/// Opens the private store of `config`: the `[store]` it names (embedded under
/// `<data_dir>/store` by default, migrating an earlier release's).
pub async fn open_store(config: &Config) -> anyhow::Result<PrivateStore> {
    open_configured(config, false).await
}

/// Opens the private store of `config` for maintenance beside a running daemon (`gc`).
pub async fn open_store_beside_daemon(config: &Config) -> anyhow::Result<PrivateStore> {
    open_configured(config, true).await
}

async fn open_configured(config: &Config, beside_daemon: bool) -> anyhow::Result<PrivateStore> {
    let store_dir = config.data_dir.join("store");
    PrivateStore::open(&config.store, &store_dir, &ProcessEnv, beside_daemon)
        .await
        .with_context(|| describe_store(config))
}

/// Where the store of `config` is, for messages (no password).
pub fn describe_store(config: &Config) -> String {
    let store_dir = config.data_dir.join("store");
    let database = match &config.store.database {
        Some(db) => db.redacted(),
        None => store_dir.join("registry.db").display().to_string(),
    };
    let blobs = match &config.store.s3 {
        Some(s3) => s3.url(),
        None => store_dir.join("blobs").display().to_string(),
    };
    if config.store.is_embedded() {
        format!("cannot open the store in {}", store_dir.display())
    } else {
        format!("cannot open the store (database {database}, blobs {blobs})")
    }
}

/// Opens the store, binds the listener and starts serving. `env_admin_token` is the value of
/// `CARGOHOLD_ADMIN_TOKEN`, if set.
pub async fn start(config: Config, env_admin_token: Option<String>) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let store = open_store(&config).await?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is the port in use? pick another with --listen)",
            config.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let tls = match &config.tls {
        Some(t) => Some(ReloadableCert::new(t.cert.clone(), t.key.clone()).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"))
        .trim_end_matches('/')
        .to_owned();
    let settings = ServiceSettings {
        public_url: public_url.clone(),
        limits: config.limits,
        memory_bytes: config.cache.memory_bytes,
        env_admin_hash: env_admin_token
            .filter(|t| !t.trim().is_empty())
            .map(|t| hash_token(t.trim())),
    };
    let cache_dir = config.data_dir.join("cache");
    let caches = CacheHandles {
        index: IndexCache::open(&cache_dir, config.cache.memory_bytes / 2, config.cache.index_disk_bytes)?,
        crates: CrateFiles::open(&cache_dir.join("crates"), config.cache.disk_bytes)
            .with_context(|| format!("cannot open the crate cache in {}", cache_dir.display()))?,
        crate_bytes: CacheHandles::crate_memory(config.cache.memory_bytes / 4),
    };
    let registry = Arc::new(RegistryService::new(store, caches, settings).await?);
    // Several nodes on one PostgreSQL: what another node commits drops this node's copies.
    registry.watch_store().await?;
    registry
        .apply_configured(config.registries.values().cloned(), &config.data_dir)
        .await?;
    registry.warn_about_shadow_version();
    // Off every request's path: deliveries never slow a publish.
    registry.start_webhooks(config.webhooks.clone())?;
    // Takedowns found by revalidations become `upstream.removed` events.
    registry.start_takedown_reports();
    let admin_token = registry.bootstrap_admin(&config.data_dir).await?;
    let state = HttpState::new(registry.clone());
    let acceptor = match &tls {
        Some(cert) => Some(cert.acceptor().map_err(anyhow::Error::msg)?),
        None => None,
    };
    // Always handled, and registered before the daemon announces itself: without TLS a SIGHUP (e.g. `systemctl
    // reload`) must not kill the daemon.
    #[cfg(unix)]
    {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install the SIGHUP handler")?;
        tokio::spawn(reload_on_sighup(hup, tls.clone()));
    }
    let settings = ServerSettings {
        grace: config.shutdown_grace,
        header_read_timeout: config.limits.header_read_timeout,
        request_timeout: config.limits.request_timeout,
        idle_timeout: config.limits.idle_timeout,
        max_connections: usize::try_from(config.limits.max_connections).unwrap_or(usize::MAX),
    };
    // Started before the daemon announces itself: failing to start them is a startup error.
    let edge = crate::server::edge::Edge::start(config.workers)
        .with_context(|| format!("cannot start {} edge worker threads", config.workers))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::server::run(
        listener,
        edge,
        acceptor,
        state,
        async move {
            let _ = stopped.await;
        },
        settings,
    ));
    Ok(Running {
        addr,
        public_url,
        admin_token,
        registry,
        stop: Some(stop),
        task,
    })
}

/// Reloads the TLS certificate whenever SIGHUP arrives (open connections are untouched);
/// without TLS, SIGHUP is logged and ignored.
#[cfg(unix)]
async fn reload_on_sighup(mut hup: tokio::signal::unix::Signal, cert: Option<Arc<ReloadableCert>>) {
    while hup.recv().await.is_some() {
        match cert.as_ref().map(|c| c.reload()) {
            Some(Ok(())) => tracing::info!("TLS certificate reloaded"),
            Some(Err(e)) => tracing::error!(error = %e, "TLS certificate reload failed; keeping the old one"),
            None => tracing::info!("SIGHUP received; nothing to reload (no [tls])"),
        }
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
