//! `RegistryService`: the one API the HTTP layer calls. It owns policy (who may do what, name
//! and version rules), keeps the registry definitions in memory, renders and caches index files,
//! and orchestrates the store. It knows nothing of HTTP.

pub mod admin;
pub mod auth;
pub mod error;
pub mod krate;
pub mod merge;
pub mod publish;
pub mod tarball;
#[cfg(test)]
mod visibility_tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;

use crate::cache::crate_files::{CrateFiles, FillReader};
use crate::cache::index_cache::{IndexCache, IndexEntry};
use crate::cache::{registry_key as cache_key, CacheStatus, FastHasher, FastMap, MemCache};
use crate::config::{Limits, RegistryKind, RegistrySpec, Shadow};
use crate::index::config_json::ConfigJson;
use crate::index::etag::strong_etag;
use crate::index::gzip::{GzipCell, GZIP_OFFLOAD_BYTES};
use crate::index::line::render_file;
use crate::index::name::{is_lookup_name, validate_lookup_name, validate_version};
use crate::index::{canonical_name, IndexLine};
use crate::store::{BlobReader, CrateRecord, PrivateStore};
use crate::upstream::cached::{CachedUpstream, DownloadError, ProxyDownload, ProxySettings};
use crate::upstream::UpstreamError;

pub use auth::{Principal, Scope};
pub use error::{RegistryError, RegistryResult};

/// The name users give a registry in `~/.cargo/config.toml`: its own name, except that cargo
/// reserves `crates-io` for crates.io itself (`[registries.crates-io]` cannot set an index).
///
/// ```
/// use cargohold::registry::client_registry_name;
/// assert_eq!(client_registry_name("local"), "local");
/// assert_eq!(client_registry_name("crates-io"), "cargohold-crates-io");
/// ```
pub fn client_registry_name(name: &str) -> String {
    if name == "crates-io" {
        format!("cargohold-{name}")
    } else {
        name.to_owned()
    }
}

/// What the upstreams of a hosted registry say about a crate name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamPresence {
    /// This upstream has it.
    Found(String),
    /// No upstream has it (as far as each said, or its cache remembers).
    Absent,
    /// No upstream has it among those that answered; these could not be asked and have
    /// nothing cached for the name (upstream name, error).
    Unknown(Vec<(String, String)>),
}

/// Checks a crate name (and version) taken from a request path before it reaches a cache key,
/// the store or an upstream URL: a 400 saying why.
pub(crate) fn check_name_and_version(name: &str, version: Option<&str>) -> RegistryResult<()> {
    validate_lookup_name(name).map_err(|e| RegistryError::BadRequest(format!("invalid crate name: {e}")))?;
    if let Some(v) = version {
        validate_version(v).map_err(|e| RegistryError::BadRequest(format!("invalid version: {e}")))?;
    }
    Ok(())
}

/// Whether an upstream failure is an outage (the upstream could not be reached or did not
/// answer in time), as opposed to an answer: busy (503), refused, invalid, untrusted.
fn upstream_unreachable(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::Upstream(UpstreamError::Connect { .. } | UpstreamError::Timeout { .. })
    )
}

/// A rendered index file with its strong ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub body: Bytes,
    pub etag: String,
    /// The gzip of `body`, computed on first use.
    pub gzip: GzipCell,
}

impl IndexFile {
    /// Renders `lines` and computes the ETag.
    pub fn render<'a>(lines: impl IntoIterator<Item = &'a IndexLine>) -> Self {
        let body = Bytes::from(render_file(lines));
        let etag = strong_etag(&body);
        IndexFile {
            body,
            etag,
            gzip: GzipCell::default(),
        }
    }
}

/// The bytes of an index answer: a local (rendered or merged) file or an upstream entry.
#[derive(Debug, Clone)]
pub enum IndexBody {
    Local(Arc<IndexFile>),
    Upstream(Arc<IndexEntry>),
}

impl IndexBody {
    /// The file.
    pub fn body(&self) -> &Bytes {
        match self {
            IndexBody::Local(f) => &f.body,
            IndexBody::Upstream(e) => &e.body,
        }
    }

    /// Its strong ETag.
    pub fn etag(&self) -> &str {
        match self {
            IndexBody::Local(f) => &f.etag,
            IndexBody::Upstream(e) => &e.etag,
        }
    }

    /// The gzip of the file, computed once per cached file.
    pub fn gzip(&self) -> &Bytes {
        match self {
            IndexBody::Local(f) => f.gzip.get(&f.body),
            IndexBody::Upstream(e) => e.gzip.get(&e.body),
        }
    }

    /// Computes the gzip of a large file on the blocking pool (once), so that [`gzip`]
    /// (Self::gzip) then costs nothing on the edge worker.
    pub async fn prepare_gzip(&self) {
        let ready = match self {
            IndexBody::Local(f) => f.gzip.is_ready(),
            IndexBody::Upstream(e) => e.gzip.is_ready(),
        };
        if ready || self.body().len() < GZIP_OFFLOAD_BYTES {
            return;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            this.gzip();
        })
        .await;
    }
}

/// An index answer: the file (`None` = 404) and what the cache did.
#[derive(Debug, Clone)]
pub struct IndexAnswer {
    pub file: Option<IndexBody>,
    pub status: CacheStatus,
}

/// Where a download's bytes are.
pub enum Download {
    /// In memory (the crate-bytes tier).
    Bytes { bytes: Bytes, status: CacheStatus },
    /// A cached upstream crate on disk too large for the memory tier.
    File { path: PathBuf, status: CacheStatus },
    /// A hosted blob too large for the memory tier, streamed from the private store.
    Blob { blob: BlobReader, status: CacheStatus },
    /// A streamed fill from upstream.
    Stream(FillReader),
}

/// Caches shared by every proxy registry.
#[derive(Clone)]
pub struct CacheHandles {
    pub index: IndexCache,
    pub crates: Arc<CrateFiles>,
    /// Crate files in memory by SHA-256 (hosted blobs and proxied files alike).
    pub crate_bytes: MemCache<String, Bytes>,
}

/// How often a crate change (publish, yank, owners) is decided again after a concurrent
/// change won, before the client is told to retry.
pub(crate) const MAX_CHANGE_ATTEMPTS: u32 = 16;

/// Crate files up to this size are served from memory (read once, then cached by SHA-256).
pub const MEMORY_CRATE_MAX: u64 = 32 << 20;

impl CacheHandles {
    /// A bytes-bounded memory tier for crate files.
    pub fn crate_memory(bytes: u64) -> MemCache<String, Bytes> {
        moka::sync::Cache::builder()
            .max_capacity(bytes.max(1 << 20))
            .weigher(|k: &String, v: &Bytes| u32::try_from(k.len() + v.len() + 64).unwrap_or(u32::MAX))
            .build_with_hasher(FastHasher::default())
    }
}

/// A merged (`shadow = "version"`) file and the two ETags it was built from.
struct MergedFile {
    local_etag: String,
    upstream_etag: String,
    file: Arc<IndexFile>,
}

/// Registry-wide settings fixed at start.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Base URL the registries are reachable at (no trailing slash).
    pub public_url: String,
    pub limits: Limits,
    /// Bytes of rendered index files kept in memory.
    pub memory_bytes: u64,
    /// Hash of the admin token given by the environment, if any.
    pub env_admin_hash: Option<String>,
}

/// The registry layer.
pub struct RegistryService {
    store: PrivateStore,
    settings: ServiceSettings,
    registries: RwLock<Arc<BTreeMap<String, Arc<RegistrySpec>>>>,
    /// Rendered local index files by `{registry}\0{lowercase name}`; `None` caches a 404.
    index_cache: MemCache<String, Option<Arc<IndexFile>>>,
    /// Bumped by every invalidation of `index_cache`, after the store was changed. A reader
    /// that rendered a file from the store drops its own insert when a change raced it, so a
    /// copy read before a publish can never be put back after the publish's invalidation.
    index_writes: AtomicU64,
    caches: CacheHandles,
    /// One cached upstream per proxy registry.
    proxies: RwLock<Arc<FastMap<String, Arc<CachedUpstream>>>>,
    /// Results of `shadow = "version"` merges.
    merged: MemCache<String, Arc<MergedFile>>,
    /// Interned metric labels of the registries.
    labels: RwLock<Arc<FastMap<String, &'static str>>>,
    /// `{registry}\0{lowercase name}\0{version}` -> cksum of hosted versions (immutable once
    /// published; cleared when registries change).
    hosted_cksums: MemCache<String, String>,
}

impl RegistryService {
    /// Builds the service and loads the stored registry definitions.
    pub async fn new(store: PrivateStore, caches: CacheHandles, settings: ServiceSettings) -> RegistryResult<Self> {
        let index_cache = moka::sync::Cache::builder()
            .max_capacity((settings.memory_bytes / 8).max(1 << 20))
            .weigher(|k: &String, v: &Option<Arc<IndexFile>>| {
                let n = k.len() + v.as_ref().map_or(0, |f| f.body.len() + f.etag.len()) + 64;
                u32::try_from(n).unwrap_or(u32::MAX)
            })
            .build_with_hasher(FastHasher::default());
        let settings_memory = settings.memory_bytes;
        let svc = RegistryService {
            store,
            settings,
            registries: RwLock::new(Arc::new(BTreeMap::new())),
            index_cache,
            index_writes: AtomicU64::new(0),
            caches,
            proxies: RwLock::new(Arc::new(FastMap::default())),
            labels: RwLock::new(Arc::new(FastMap::default())),
            hosted_cksums: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .build_with_hasher(FastHasher::default()),
            merged: moka::sync::Cache::builder()
                .max_capacity((settings_memory / 8).max(1 << 20))
                .weigher(|k: &String, v: &Arc<MergedFile>| {
                    u32::try_from(k.len() + v.file.body.len() + 256).unwrap_or(u32::MAX)
                })
                .build_with_hasher(FastHasher::default()),
        };
        svc.reload_registries().await?;
        Ok(svc)
    }

    /// The store (for readiness checks and shutdown).
    pub fn store(&self) -> &PrivateStore {
        &self.store
    }

    /// The public base URL.
    pub fn public_url(&self) -> &str {
        &self.settings.public_url
    }

    /// Base URL of one registry (`{public_url}/{name}`): the `api` in its config.json.
    pub fn registry_root(&self, name: &str) -> String {
        format!("{}/{name}", self.settings.public_url)
    }

    /// The sparse index URL of one registry, as users configure it.
    pub fn index_url(&self, name: &str) -> String {
        format!("sparse+{}/{name}/index/", self.settings.public_url)
    }

    async fn reload_registries(&self) -> RegistryResult<()> {
        let specs = self.store.meta.registries().await?;
        let old = self.proxies();
        let mut proxies = FastMap::default();
        for spec in specs.iter().filter(|s| s.kind == RegistryKind::Proxy) {
            let settings = ProxySettings {
                registry: spec.name.clone(),
                upstream_url: spec
                    .upstream
                    .clone()
                    .unwrap_or_else(|| tame_index::CRATES_IO_HTTP_INDEX.to_owned()),
                index_ttl: Duration::from_secs(spec.index_ttl_secs),
                negative_ttl: Duration::from_secs(spec.negative_ttl_secs),
                timeout: Duration::from_secs(spec.upstream_timeout_secs.max(1)),
                deadline: Duration::from_secs(spec.upstream_deadline_secs.max(1)),
                max_index_bytes: self.settings.limits.max_upstream_index_bytes,
                // One cap for every .crate that passes through: what may be published here, or
                // the (usually larger) upstream limit, whichever is larger.
                max_crate_bytes: self
                    .settings
                    .limits
                    .max_upstream_crate_bytes
                    .max(self.settings.limits.max_crate_bytes),
                ca_file: spec.ca_file.clone(),
                offline: spec.offline,
                upstream_concurrency: usize::try_from(spec.upstream_concurrency).unwrap_or(usize::MAX),
            };
            let proxy = match old.get(&spec.name) {
                Some(p) if *p.settings() == settings => p.clone(),
                Some(p) => {
                    if p.settings().upstream_url != settings.upstream_url {
                        p.clear().await;
                    }
                    CachedUpstream::new(settings, self.caches.index.clone(), self.caches.crates.clone())?
                }
                None => CachedUpstream::new(settings, self.caches.index.clone(), self.caches.crates.clone())?,
            };
            proxies.insert(spec.name.clone(), proxy);
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
    pub(crate) fn proxy(&self, name: &str) -> RegistryResult<Arc<CachedUpstream>> {
        self.proxies()
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(format!("no proxy registry named `{name}`")))
    }

    /// The caches (for shutdown flushes and metrics).
    pub fn caches(&self) -> &CacheHandles {
        &self.caches
    }

    /// All registry definitions.
    pub fn registries(&self) -> Arc<BTreeMap<String, Arc<RegistrySpec>>> {
        self.registries.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One registry, or 404.
    pub fn registry(&self, name: &str) -> RegistryResult<Arc<RegistrySpec>> {
        self.registries()
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(format!("no registry named `{name}`")))
    }

    fn hosted(&self, name: &str, what: &str) -> RegistryResult<Arc<RegistrySpec>> {
        let reg = self.registry(name)?;
        if reg.kind != RegistryKind::Hosted {
            return Err(RegistryError::MethodNotAllowed(format!(
                "registry `{name}` is a read-only proxy; {what} is only possible on a hosted registry (use `--registry <hosted registry>`)"
            )));
        }
        Ok(reg)
    }

    /// Resolves an `Authorization` header to a principal. `Ok(None)` when there is no header.
    /// An unknown, revoked or expired token is a 401.
    pub async fn authenticate(
        &self,
        registry: Option<&str>,
        header: Option<&str>,
    ) -> RegistryResult<Option<Principal>> {
        let Some(header) = header else { return Ok(None) };
        let secret = auth::secret_from_header(header);
        let hash = auth::hash_token(secret);
        if self.settings.env_admin_hash.as_deref() == Some(hash.as_str()) {
            return Ok(Some(Principal {
                user: admin::ADMIN_USER.into(),
                scopes: vec!["admin".into()],
                registries: None,
            }));
        }
        match self.store.meta.token_by_hash(&hash).await?.and_then(auth::principal_of) {
            Some(p) => Ok(Some(p)),
            None => Err(RegistryError::Unauthorized {
                message: "the token is not valid: it is unknown, revoked or expired; get a new one (see the registry's /me page)".into(),
                login_url: registry.map(|r| format!("{}/me", self.registry_root(r))),
            }),
        }
    }

    /// Like [`authenticate`](Self::authenticate) but a missing header is a 401 too.
    pub async fn require_principal(&self, registry: &str, header: Option<&str>) -> RegistryResult<Principal> {
        self.authenticate(Some(registry), header)
            .await?
            .ok_or_else(|| RegistryError::Unauthorized {
                message: format!(
                    "this request needs a token; run `cargo login --registry {registry}` (see {}/me)",
                    self.registry_root(registry)
                ),
                login_url: Some(format!("{}/me", self.registry_root(registry))),
            })
    }

    /// The checks of a write (`scope` on a hosted `registry`) that need no request body: the
    /// registry exists and is hosted, the token is valid and holds `scope` for it.
    pub(crate) async fn authorize_write(
        &self,
        registry: &str,
        header: Option<&str>,
        scope: Scope,
        what: &str,
    ) -> RegistryResult<Principal> {
        self.hosted(registry, what)?;
        let who = self.require_principal(registry, header).await?;
        who.require(scope, Some(registry))?;
        Ok(who)
    }

    /// Enforces read access: free unless the registry is `auth_required`, then a token with
    /// `read` scope for this registry. A hosted registry that merges `auth_required` proxies
    /// also needs `read` on each of them: a merged view never shows a client what the client
    /// could not read from the proxy itself (a token limited to some registries does not
    /// reach others through it, and anonymous clients never see a private proxy).
    pub async fn authorize_read(&self, reg: &RegistrySpec, header: Option<&str>) -> RegistryResult<()> {
        let guarded = self.guarded_upstreams(reg);
        if !reg.auth_required && guarded.is_empty() {
            return Ok(());
        }
        let who = self.require_principal(&reg.name, header).await?;
        if reg.auth_required {
            who.require(Scope::Read, Some(&reg.name))?;
        }
        for up in &guarded {
            who.require(Scope::Read, Some(up)).map_err(|e| {
                RegistryError::Forbidden(format!(
                    "registry `{}` merges `{up}`, which needs a token with `read` on `{up}`: {e}",
                    reg.name
                ))
            })?;
        }
        Ok(())
    }

    /// The `auth_required` proxies a hosted registry merges (empty for almost every registry,
    /// without a lookup when it lists no upstreams).
    fn guarded_upstreams(&self, reg: &RegistrySpec) -> Vec<String> {
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

    /// The registry's `config.json` bytes.
    pub fn config_json(&self, reg: &RegistrySpec) -> Bytes {
        Bytes::from(ConfigJson::for_root(&self.registry_root(&reg.name), reg.auth_required).to_bytes())
    }

    /// The index answer for `lower` (a lowercase name) in any kind of registry. A name that is
    /// not a crate name (see [`is_lookup_name`]) is a 404 without any lookup.
    pub async fn index_file(&self, reg: &RegistrySpec, lower: &str) -> RegistryResult<IndexAnswer> {
        if !is_lookup_name(lower) {
            return Ok(IndexAnswer {
                file: None,
                status: CacheStatus::Bypass,
            });
        }
        match reg.kind {
            RegistryKind::Proxy => {
                let lookup = self.proxy(&reg.name)?.index_file(lower).await?;
                let file = (!lookup.entry.not_found).then(|| IndexBody::Upstream(lookup.entry));
                Ok(IndexAnswer {
                    file,
                    status: lookup.status,
                })
            }
            RegistryKind::Hosted => {
                let local = self.local_index_file(reg, lower).await?;
                if reg.upstreams.is_empty() || (local.is_some() && reg.shadow == Shadow::Crate) {
                    return Ok(IndexAnswer {
                        file: local.map(IndexBody::Local),
                        status: CacheStatus::Bypass,
                    });
                }
                let found = match self.first_upstream_with(reg, lower).await {
                    Ok(found) => found,
                    // The upstreams cannot be reached and have nothing cached: the local crate
                    // is served on its own, and a name that is not local is not found here (so
                    // `cargo publish` of a new private crate, which first asks for its index
                    // file, works during an upstream outage). See docs/OPERATIONS.md. Any other
                    // failure (busy, refused, invalid) is answered as such: a 404 would be
                    // cached by cargo as a true answer.
                    Err(e) if upstream_unreachable(&e) => {
                        tracing::warn!(registry = %reg.name, krate.name = lower, error = ?e.to_string(), "upstreams failed; answering from the local crates only");
                        return Ok(IndexAnswer {
                            file: local.map(IndexBody::Local),
                            status: CacheStatus::Stale,
                        });
                    }
                    Err(e) => return Err(e),
                };
                let Some((up, status)) = found else {
                    return Ok(IndexAnswer {
                        file: local.map(IndexBody::Local),
                        status: CacheStatus::Bypass,
                    });
                };
                let Some(local) = local else {
                    return Ok(IndexAnswer {
                        file: Some(IndexBody::Upstream(up)),
                        status,
                    });
                };
                let key = cache_key(&reg.name, lower);
                if let Some(m) = self.merged.get(&key) {
                    if m.local_etag == local.etag && m.upstream_etag == up.etag {
                        return Ok(IndexAnswer {
                            file: Some(IndexBody::Local(m.file.clone())),
                            status,
                        });
                    }
                }
                let merged = merge::merge_versions(&local.body, &up.body);
                crate::upstream::garbage::report(&reg.name, lower, &up.etag, merged.skipped, "merge");
                let body = Bytes::from(merged.file);
                let etag = strong_etag(&body);
                let file = Arc::new(IndexFile {
                    body,
                    etag,
                    gzip: GzipCell::default(),
                });
                self.merged.insert(
                    key,
                    Arc::new(MergedFile {
                        local_etag: local.etag.clone(),
                        upstream_etag: up.etag.clone(),
                        file: file.clone(),
                    }),
                );
                Ok(IndexAnswer {
                    file: Some(IndexBody::Local(file)),
                    status,
                })
            }
        }
    }

    /// The first upstream of a hosted registry that has `lower`, with its cache status.
    /// An upstream failure is an error only if no later upstream has the crate.
    async fn first_upstream_with(
        &self,
        reg: &RegistrySpec,
        lower: &str,
    ) -> RegistryResult<Option<(Arc<IndexEntry>, CacheStatus)>> {
        let mut failure = None;
        for up in &reg.upstreams {
            let Ok(proxy) = self.proxy(up) else { continue };
            match proxy.index_file(lower).await {
                Ok(l) if !l.entry.not_found => return Ok(Some((l.entry, l.status))),
                Ok(_) => {}
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(None),
        }
    }

    /// Whether an upstream of a hosted registry has a crate named `name`: asked upstream, or
    /// answered from the cache (stale copies and remembered 404s included) when the upstream
    /// cannot be reached. A name no crate can have is absent everywhere. An upstream that
    /// answers with a failure (busy, refused, invalid) is an error, not an unknown.
    pub(crate) async fn upstream_presence(&self, reg: &RegistrySpec, name: &str) -> RegistryResult<UpstreamPresence> {
        if !is_lookup_name(name) {
            return Ok(UpstreamPresence::Absent);
        }
        let lower = name.to_ascii_lowercase();
        let mut unknown = Vec::new();
        for up in &reg.upstreams {
            let Ok(proxy) = self.proxy(up) else { continue };
            match proxy.index_file(&lower).await {
                Ok(l) if !l.entry.not_found => return Ok(UpstreamPresence::Found(up.clone())),
                Ok(_) => {}
                Err(e) => {
                    let e = RegistryError::from(e);
                    if !upstream_unreachable(&e) {
                        return Err(e);
                    }
                    unknown.push((up.clone(), e.to_string()));
                }
            }
        }
        Ok(if unknown.is_empty() {
            UpstreamPresence::Absent
        } else {
            UpstreamPresence::Unknown(unknown)
        })
    }

    /// The local index file of `lower` (a lowercase name) in a hosted registry, or `None`.
    async fn local_index_file(&self, reg: &RegistrySpec, lower: &str) -> RegistryResult<Option<Arc<IndexFile>>> {
        let key = cache_key(&reg.name, lower);
        if let Some(hit) = self.index_cache.get(&key) {
            return Ok(hit);
        }
        let seen = self.index_writes.load(Ordering::SeqCst);
        let file = self
            .store
            .meta
            .get_crate(&reg.name, &canonical_name(lower))
            .await?
            .filter(|rec| rec.name.to_ascii_lowercase() == lower && !rec.versions.is_empty())
            .map(|rec| Arc::new(IndexFile::render(rec.versions.iter().map(|v| &v.line))));
        self.index_cache.insert(key.clone(), file.clone());
        // A write that committed after our read bumped the counter before invalidating: if it
        // did so before this check we drop our (possibly old) copy; if after, its own
        // invalidation comes after our insert. Either way no old copy survives the write.
        if self.index_writes.load(Ordering::SeqCst) != seen {
            self.index_cache.invalidate(&key);
        }
        Ok(file)
    }

    /// Forgets the rendered index file of `name` in `registry`. Called after the store change.
    fn invalidate(&self, registry: &str, name: &str) {
        self.index_writes.fetch_add(1, Ordering::SeqCst);
        self.index_cache
            .invalidate(&cache_key(registry, &name.to_ascii_lowercase()));
    }

    /// Drops every cached file of a registry (settings changed or registry deleted).
    fn invalidate_registry(&self, registry: &str) {
        // Rare (admin changes): dropping everything is simpler than a prefix sweep.
        let _ = registry;
        self.index_writes.fetch_add(1, Ordering::SeqCst);
        self.index_cache.invalidate_all();
        self.hosted_cksums.invalidate_all();
    }

    /// Loads a crate record by any spelling of its name.
    pub(crate) async fn load_crate(&self, registry: &str, name: &str) -> RegistryResult<Option<CrateRecord>> {
        Ok(self.store.meta.get_crate(registry, &canonical_name(name)).await?)
    }

    /// Where the `.crate` of `name@version` is: a hosted blob, or (proxy and merged
    /// registries) the upstream's file, cached or streaming in.
    pub async fn download(&self, reg: &RegistrySpec, name: &str, version: &str) -> RegistryResult<Download> {
        check_name_and_version(name, None)?;
        let not_found = || {
            RegistryError::NotFound(format!(
                "crate `{name}` version `{version}` does not exist in registry `{}`",
                reg.name
            ))
        };
        // Memory hits first: these caches only ever receive versions that passed the full
        // check below, so a hit needs no semver parse (this is the download hot path).
        let hosted_key = (reg.kind == RegistryKind::Hosted)
            .then(|| format!("{}\0{}\0{version}", reg.name, name.to_ascii_lowercase()));
        if let Some(key) = &hosted_key {
            if let Some(cksum) = self.hosted_cksums.get(key) {
                return self
                    .hosted_blob(&cksum, CacheStatus::Bypass)
                    .await?
                    .ok_or_else(not_found);
            }
        } else if let Some(bytes) = self
            .proxy(&reg.name)?
            .cached_cksum(name, version)
            .and_then(|(_, cksum)| self.caches.crate_bytes.get(&cksum))
        {
            return Ok(Download::Bytes {
                bytes,
                status: CacheStatus::Hit,
            });
        }
        check_name_and_version(name, Some(version))?;
        let upstreams: &[String] = match (reg.kind, hosted_key) {
            (RegistryKind::Hosted, Some(key)) => {
                let rec = self
                    .load_crate(&reg.name, name)
                    .await?
                    .filter(|r| r.name.eq_ignore_ascii_case(name));
                if let Some(rec) = &rec {
                    if let Some(v) = krate::find_version(rec, version) {
                        let cksum = rec.versions[v].line.cksum.clone();
                        let found = self
                            .hosted_blob(&cksum, CacheStatus::Bypass)
                            .await?
                            .ok_or_else(not_found)?;
                        self.hosted_cksums.insert(key, cksum);
                        return Ok(found);
                    }
                    if reg.shadow == Shadow::Crate {
                        return Err(not_found());
                    }
                }
                &reg.upstreams
            }
            _ => std::slice::from_ref(&reg.name),
        };
        let mut last = None;
        for up in upstreams {
            let proxy = self.proxy(up)?;
            // A failed lookup is final for this upstream: `download` would only repeat it (and
            // its upstream requests, retries and deadline) to fail the same way.
            match proxy.locate(name, version).await {
                Ok((_, cksum)) => {
                    if let Some(bytes) = self.caches.crate_bytes.get(&cksum) {
                        return Ok(Download::Bytes {
                            bytes,
                            status: CacheStatus::Hit,
                        });
                    }
                }
                Err(DownloadError::NotFound(m)) => {
                    last = Some(RegistryError::NotFound(m));
                    continue;
                }
                Err(DownloadError::Upstream(e)) => {
                    last = Some(e.into());
                    continue;
                }
            }
            match proxy.download(name, version).await {
                Ok((ProxyDownload::File { path, len }, status)) => {
                    let cksum = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                    return self.file_download(&cksum, path, Some(len), status).await;
                }
                Ok((ProxyDownload::Stream(reader), _)) => return Ok(Download::Stream(reader)),
                Err(DownloadError::NotFound(m)) => last = Some(RegistryError::NotFound(m)),
                Err(DownloadError::Upstream(e)) => last = Some(e.into()),
            }
        }
        Err(last.unwrap_or_else(not_found))
    }

    /// A hosted blob, from memory or the private store; `None` if the blob is missing.
    /// Blobs that fit the memory tier are read once and cached by SHA-256; larger ones stream.
    async fn hosted_blob(&self, cksum: &str, status: CacheStatus) -> RegistryResult<Option<Download>> {
        if let Some(bytes) = self.caches.crate_bytes.get(cksum) {
            return Ok(Some(Download::Bytes { bytes, status }));
        }
        let Some(mut blob) = self.store.blobs.get(cksum).await? else {
            return Ok(None);
        };
        if blob.len > MEMORY_CRATE_MAX {
            return Ok(Some(Download::Blob { blob, status }));
        }
        let mut data = Vec::with_capacity(usize::try_from(blob.len).unwrap_or(0));
        tokio::io::AsyncReadExt::read_to_end(&mut blob.reader, &mut data)
            .await
            .map_err(|e| RegistryError::Store(e.into()))?;
        let bytes = Bytes::from(data);
        self.caches.crate_bytes.insert(cksum.to_owned(), bytes.clone());
        Ok(Some(Download::Bytes { bytes, status }))
    }

    /// Serves a crate file: files that fit the memory tier are read once (one blocking call)
    /// and cached by SHA-256; larger ones are streamed. `len` is the size if known (`Some(0)`
    /// means "known to be small enough").
    async fn file_download(
        &self,
        cksum: &str,
        path: PathBuf,
        len: Option<u64>,
        status: CacheStatus,
    ) -> RegistryResult<Download> {
        if len.is_some_and(|l| l <= MEMORY_CRATE_MAX) {
            match tokio::fs::read(&path).await {
                Ok(data) => {
                    let bytes = Bytes::from(data);
                    if !cksum.is_empty() {
                        self.caches.crate_bytes.insert(cksum.to_owned(), bytes.clone());
                    }
                    return Ok(Download::Bytes { bytes, status });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(RegistryError::NotFound(format!(
                        "crate file {cksum} is gone from the cache; try again"
                    )))
                }
                Err(e) => return Err(RegistryError::Store(crate::store::StoreError::Io(e.to_string()))),
            }
        }
        Ok(Download::File { path, status })
    }
}

impl RegistryService {
    /// The configured size limits.
    pub fn limits(&self) -> Limits {
        self.settings.limits
    }
}
