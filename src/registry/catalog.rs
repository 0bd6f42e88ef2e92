//! The catalog: which registries exist (definitions loaded from the store), the cached
//! upstream of each proxy, their metric labels, and the URLs they are reachable at. Every
//! other component looks registries up here; only [`reload`](Catalog::reload) changes it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;

use super::error::{RegistryError, RegistryResult};
use super::CacheHandles;
use crate::cache::FastMap;
use crate::config::MAX_DURATION_SECS;
use crate::config::{Limits, RegistryKind, RegistrySpec};
use crate::index::config_json::ConfigJson;
use crate::store::Metadata;
use crate::upstream::cached::{CachedUpstream, ProxySettings, RemovalSink};

/// Registry definitions by name.
pub type Registries = Arc<BTreeMap<String, Arc<RegistrySpec>>>;

/// The registries, their proxies and labels, swapped as a whole on every reload.
pub struct Catalog {
    meta: Arc<dyn Metadata>,
    /// Base URL the registries are reachable at (no trailing slash).
    public_url: String,
    limits: Limits,
    /// The caches a proxy is built on.
    caches: CacheHandles,
    registries: RwLock<Registries>,
    /// One cached upstream per proxy registry.
    proxies: RwLock<Arc<FastMap<String, Arc<CachedUpstream>>>>,
    /// Interned metric labels of the registries.
    labels: RwLock<Arc<FastMap<String, &'static str>>>,
    /// Where every proxy reports the versions its upstream took down.
    removals: RemovalSink,
    /// Held for a whole [`reload`](Self::reload): one that read the definitions before a
    /// change cannot finish after the reload of that change and put the old proxies back.
    reloading: tokio::sync::Mutex<()>,
}

impl Catalog {
    /// An empty catalog; [`reload`](Self::reload) fills it from the store. Every proxy it
    /// builds reports takedowns to `removals`.
    pub fn new(
        meta: Arc<dyn Metadata>,
        public_url: String,
        limits: Limits,
        caches: CacheHandles,
        removals: RemovalSink,
    ) -> Self {
        Catalog {
            removals,
            meta,
            public_url,
            limits,
            caches,
            registries: RwLock::new(Arc::new(BTreeMap::new())),
            proxies: RwLock::new(Arc::new(FastMap::default())),
            labels: RwLock::new(Arc::new(FastMap::default())),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The public base URL.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The configured size limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Base URL of one registry (`{public_url}/{name}`): the `api` in its config.json.
    pub fn registry_root(&self, name: &str) -> String {
        format!("{}/{name}", self.public_url)
    }

    /// The sparse index URL of one registry, as users configure it.
    pub fn index_url(&self, name: &str) -> String {
        format!("sparse+{}/{name}/index/", self.public_url)
    }

    /// The registry's `config.json` bytes.
    pub fn config_json(&self, reg: &RegistrySpec) -> Bytes {
        Bytes::from(ConfigJson::for_root(&self.registry_root(&reg.name), reg.auth_required).to_bytes())
    }

    /// Loads the registry definitions from the store and rebuilds the proxies: a proxy whose
    /// settings did not change is kept (with its caches and single-flight state); one whose
    /// cached index files came from another upstream URL (changed now, or while this process
    /// was not running) starts from an empty index cache, unless it is offline.
    pub async fn reload(&self) -> RegistryResult<()> {
        // One at a time, each reading the definitions once it runs.
        let _one = self.reloading.lock().await;
        let specs = self.meta.registries().await?;
        let old = self.proxies();
        // Every new proxy is built first: one that cannot be built (a `ca_file` gone) fails
        // the reload before anything changed.
        let mut proxies = FastMap::default();
        let mut rebound = Vec::new();
        for spec in specs.iter().filter(|s| s.kind == RegistryKind::Proxy) {
            let settings = self.proxy_settings(spec);
            let proxy = match old.get(&spec.name) {
                Some(p) if *p.settings() == settings => p.clone(),
                _ => {
                    // An offline proxy never revalidates, so files from another upstream
                    // cannot be misread as takedowns there, and what it holds (imported
                    // bundles, an air-gapped copy) cannot be fetched again: kept, and left
                    // bound to the upstream they came from, which decides once it goes online.
                    if !settings.offline {
                        rebound.push((spec.name.clone(), settings.upstream_url.clone()));
                    }
                    self.build_proxy(settings)?
                }
            };
            proxies.insert(spec.name.clone(), proxy);
        }
        // The proxies replaced (or of registries gone) are retired before files may be
        // dropped below, so a request still holding one cannot cache what its old upstream
        // sends after the drop.
        for (name, p) in old.iter() {
            if !proxies.get(name).is_some_and(|n| Arc::ptr_eq(n, p)) {
                p.retire();
            }
        }
        // Files this node fetched from another upstream (changed now, or while it was not
        // running) are dropped before the new proxy serves.
        for (name, upstream) in rebound {
            match self.caches.index.bind_upstream(&name, &upstream).await {
                Ok(true) => {
                    tracing::info!(registry = %name, upstream = %upstream, "the upstream changed: its cached index files were dropped")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(registry = %name, error = %e, "cannot record the upstream of the index cache; dropping it");
                    self.caches.index.clear(&name).await;
                }
            }
        }
        let labels = specs
            .iter()
            .map(|s| (s.name.clone(), crate::telemetry::intern(&s.name)))
            .collect();
        *self.labels.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(labels);
        let map = specs.into_iter().map(|s| (s.name.clone(), Arc::new(s))).collect();
        *self.registries.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        *self.proxies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(proxies);
        Ok(())
    }

    fn build_proxy(&self, settings: ProxySettings) -> RegistryResult<Arc<CachedUpstream>> {
        let proxy = CachedUpstream::new(settings, self.caches.index.clone(), self.caches.crates.clone())?;
        proxy.set_removal_sink(self.removals.clone());
        Ok(proxy)
    }

    /// The quarantine record naming `registry`'s `name` `version`, if its `.crate` was
    /// quarantined after the upstream removed it (not on any hot path: downloads ask only
    /// once the version was not found).
    pub fn quarantined(
        &self,
        registry: &str,
        name: &str,
        version: &str,
    ) -> Option<crate::cache::quarantine::QuarantineRecord> {
        self.caches.crates.quarantined_version(registry, name, version)
    }

    fn proxy_settings(&self, spec: &RegistrySpec) -> ProxySettings {
        ProxySettings {
            registry: spec.name.clone(),
            upstream_url: spec
                .upstream
                .clone()
                .unwrap_or_else(|| tame_index::CRATES_IO_HTTP_INDEX.to_owned()),
            // Clamped as the definition checks do (a store written by an older release may
            // hold more): a longer time-to-live would make the caches refuse to build.
            index_ttl: Duration::from_secs(spec.index_ttl_secs.min(MAX_DURATION_SECS)),
            negative_ttl: Duration::from_secs(spec.negative_ttl_secs.min(MAX_DURATION_SECS)),
            timeout: Duration::from_secs(spec.upstream_timeout_secs.clamp(1, MAX_DURATION_SECS)),
            deadline: Duration::from_secs(spec.upstream_deadline_secs.clamp(1, MAX_DURATION_SECS)),
            max_index_bytes: self.limits.max_upstream_index_bytes,
            // One cap for every .crate that passes through: what may be published here, or
            // the (usually larger) upstream limit, whichever is larger.
            max_crate_bytes: self.limits.max_upstream_crate_bytes.max(self.limits.max_crate_bytes),
            ca_file: spec.ca_file.clone(),
            offline: spec.offline,
            prune_index: spec.prune_index,
            upstream_concurrency: usize::try_from(spec.upstream_concurrency).unwrap_or(usize::MAX),
        }
    }

    /// The metric label of a registry: its name if it exists, else `-` (bounded label set).
    pub fn registry_label(&self, name: &str) -> &'static str {
        self.labels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or("-")
    }

    fn proxies(&self) -> Arc<FastMap<String, Arc<CachedUpstream>>> {
        self.proxies.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cached upstream of a proxy registry.
    pub fn proxy(&self, name: &str) -> RegistryResult<Arc<CachedUpstream>> {
        self.proxies()
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(format!("no proxy registry named `{name}`")))
    }

    /// All registry definitions.
    pub fn registries(&self) -> Registries {
        self.registries.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One registry, or 404.
    pub fn registry(&self, name: &str) -> RegistryResult<Arc<RegistrySpec>> {
        self.registries()
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(format!("no registry named `{name}`")))
    }

    /// One hosted registry: 404 if there is none, 405 for a proxy (`what` names the operation).
    pub fn hosted(&self, name: &str, what: &str) -> RegistryResult<Arc<RegistrySpec>> {
        let reg = self.registry(name)?;
        if reg.kind != RegistryKind::Hosted {
            return Err(RegistryError::MethodNotAllowed(format!(
                "registry `{name}` is a read-only proxy; {what} is only possible on a hosted registry (use `--registry <hosted registry>`)"
            )));
        }
        Ok(reg)
    }

    /// The `auth_required` proxies a hosted registry merges (empty for almost every registry,
    /// without a lookup when it lists no upstreams).
    pub fn guarded_upstreams(&self, reg: &RegistrySpec) -> Vec<String> {
        if reg.upstreams.is_empty() {
            return Vec::new();
        }
        let regs = self.registries();
        reg.upstreams
            .iter()
            .filter(|u| regs.get(*u).is_some_and(|s| s.auth_required))
            .cloned()
            .collect()
    }
}

/// What the web interface shows of a proxy's cache and upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyStatus {
    /// Index files of this proxy in the index cache (memory or disk).
    pub index_files: usize,
    /// `.crate` files on disk, and their bytes: one cache shared by every proxy.
    pub crate_files: usize,
    pub crate_bytes: u64,
    /// Cache lookups of this registry since start that were hits, and all lookups (hits,
    /// misses, revalidations and stale answers; `BYPASS` is not a cache lookup).
    pub hits: u64,
    pub lookups: u64,
    /// Whether the upstream answers now (`Err`: why not).
    pub reachable: Result<(), String>,
    /// The upstream's index URL.
    pub upstream_url: String,
}

impl Catalog {
    /// A proxied `.crate` in the shared crate cache, by SHA-256 (checked), if present.
    pub fn cached_crate_file(&self, sha: &str) -> Option<(std::path::PathBuf, u64)> {
        self.caches.crates.lookup(sha)
    }

    /// The cache figures and upstream reachability of a proxy registry.
    pub async fn proxy_status(&self, name: &str) -> RegistryResult<ProxyStatus> {
        let proxy = self.proxy(name)?;
        let counts = crate::telemetry::METRICS.cache_lookups(name);
        let count = |s: &str| counts.iter().filter(|(k, _)| *k == s).map(|(_, n)| *n).sum::<u64>();
        let hits = count("HIT");
        Ok(ProxyStatus {
            index_files: proxy.cached_names().await.len(),
            crate_files: self.caches.crates.files(),
            crate_bytes: self.caches.crates.disk_bytes(),
            hits,
            lookups: hits + count("MISS") + count("REVALIDATED") + count("STALE"),
            reachable: proxy.probe().await,
            upstream_url: crate::upstream::classify::redact(&proxy.settings().upstream_url).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use bytes::Bytes;

    use crate::cache::index_cache::IndexEntry;
    use crate::config::{RegistryKind, RegistrySpec};
    use crate::store::testing::TestMeta;
    use crate::store::Metadata;

    /// A service over a test store holding the proxy `mirror` (its upstream a loopback
    /// address nothing answers on), and the stored definition.
    async fn mirror(dir: &std::path::Path) -> (Arc<TestMeta>, RegistrySpec, Arc<crate::registry::RegistryService>) {
        let meta = Arc::new(TestMeta::sqlite(&dir.join("registry.db")).await);
        let mut spec = RegistrySpec::new("mirror", RegistryKind::Proxy);
        spec.upstream = Some("http://127.0.0.1:9/a/index/".into());
        meta.put_registry(&spec).await.unwrap();
        let svc = crate::registry::testing::service(meta.clone(), dir, None).await;
        (meta, spec, svc)
    }

    /// A reload that fails (a proxy cannot be built: its `ca_file` went missing) changes
    /// nothing: the proxy in place keeps serving and caching, and its files stay.
    #[tokio::test]
    async fn a_reload_that_fails_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, mut spec, svc) = mirror(dir.path()).await;
        let catalog = &svc.catalog;
        let before = catalog.proxy("mirror").unwrap();
        let file = Arc::new(IndexEntry::found(Bytes::from_static(b"x\n"), None, None, 1));
        catalog.caches.index.put("mirror", "kept", file).await;

        spec.upstream = Some("http://127.0.0.1:9/b/index/".into());
        spec.ca_file = Some(dir.path().join("gone.pem"));
        meta.put_registry(&spec).await.unwrap();
        assert!(catalog.reload().await.is_err());
        let now = catalog.proxy("mirror").unwrap();
        assert!(Arc::ptr_eq(&before, &now), "the proxy in place stays");
        assert!(!now.is_retired(), "and keeps caching");
        assert!(
            catalog.caches.index.get("mirror", "kept").await.is_some(),
            "its files stay"
        );
    }

    /// Two reloads at once (an administrator's change and a cluster notification): the one
    /// that read the definitions before the change may not finish last and put the old proxy
    /// back (serving the old upstream, and, retired, caching nothing).
    #[tokio::test]
    async fn a_reload_that_read_before_a_change_never_undoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, mut spec, svc) = mirror(dir.path()).await;

        // The first reload reads the definitions, then is held.
        meta.hold_registries_read.store(true, Ordering::SeqCst);
        let first = tokio::spawn({
            let svc = svc.clone();
            async move { svc.catalog.reload().await }
        });
        meta.read_done.notified().await;
        spec.upstream = Some("http://127.0.0.1:9/b/index/".into());
        meta.put_registry(&spec).await.unwrap();
        let second = tokio::spawn({
            let svc = svc.clone();
            async move { svc.catalog.reload().await }
        });
        // Room for the second to finish first if nothing orders them (not needed to pass).
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        meta.release.add_permits(1);
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        let proxy = svc.catalog.proxy("mirror").unwrap();
        assert_eq!(proxy.settings().upstream_url, "http://127.0.0.1:9/b/index/");
        assert!(!proxy.is_retired());
    }
}
