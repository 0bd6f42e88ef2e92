//! The registry layer: everything cargohold decides about registries, crates, users and
//! tokens, without knowing HTTP. [`RegistryService`] is the one API the HTTP layer calls: a
//! thin facade over components that each own their state:
//!
//! - [`Catalog`]: the registry definitions, the cached upstream of each
//!   proxy, metric labels, URLs; reloaded from the store after every admin change.
//! - [`Auth`]: tokens to principals, and every check that needs no request body.
//! - [`Reads`]: index files (rendered, merged, upstream), downloads, search,
//!   with the read caches.
//! - [`Changes`]: publish, yank/unyank, owners; decided on the crate as
//!   read, committed at its revision, retried on conflict, then invalidated in `Reads`.
//! - [`Admin`]: registries, users, tokens, the bootstrap admin token.
//!
//! The facade composes them: it checks access with `Auth` and hands the request to the
//! component that does it.

pub mod admin;
pub mod advisories;
pub mod auth;
pub mod bundle;
pub mod catalog;
pub mod changes;
#[cfg(test)]
mod cluster_tests;
pub mod error;
pub mod merge;
pub mod publish;
pub mod readme;
pub mod reads;
pub mod sessions;
pub mod takedown;
pub mod tarball;
#[cfg(test)]
pub(crate) mod testing;
pub mod webhooks;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::cache::crate_files::CrateFiles;
use crate::cache::index_cache::IndexCache;
use crate::cache::{FastHasher, MemCache};
use crate::config::{Limits, RegistrySpec};
use crate::index::name::{validate_lookup_name, validate_version};
use crate::store::PrivateStore;

use admin::{Admin, AdminToken, NewToken, RegistryPatch};
use auth::Auth;
use catalog::Catalog;
pub use catalog::ProxyStatus;
use changes::Changes;
use reads::Reads;
pub use sessions::Session;

pub use auth::{Principal, Scope};
pub use error::{RegistryError, RegistryResult};
pub use reads::{CrateView, VersionView};
pub use reads::{Download, IndexAnswer, IndexBody, IndexFile, UpstreamPresence};

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

/// Checks a crate name (and version) taken from a request path before it reaches a cache key,
/// the store or an upstream URL: a 400 saying why.
pub(crate) fn check_name_and_version(name: &str, version: Option<&str>) -> RegistryResult<()> {
    validate_lookup_name(name).map_err(|e| RegistryError::BadRequest(format!("invalid crate name: {e}")))?;
    if let Some(v) = version {
        validate_version(v).map_err(|e| RegistryError::BadRequest(format!("invalid version: {e}")))?;
    }
    Ok(())
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

/// The registry layer, as the HTTP layer and the composition root see it.
pub struct RegistryService {
    store: PrivateStore,
    caches: CacheHandles,
    catalog: Arc<Catalog>,
    auth: Auth,
    reads: Arc<Reads>,
    changes: Changes,
    admin: Admin,
    /// One bundle import at a time (each checks, then commits, what the one before wrote).
    imports: tokio::sync::Mutex<()>,
    /// This node's webhook delivery worker, once started ([`Self::start_webhooks`]).
    webhooks: webhooks::WorkerSlot,
    /// Wakes that worker: something was written to the outbox.
    outbox: Arc<tokio::sync::Notify>,
    /// Takedowns reported by the proxies, until [`Self::start_takedown_reports`] takes them.
    takedowns: takedown::Pending,
    /// The security advisory database, indexed by crate.
    advisories: advisories::Advisories,
}

impl RegistryService {
    /// Builds the components and loads the stored registry definitions.
    pub async fn new(store: PrivateStore, caches: CacheHandles, settings: ServiceSettings) -> RegistryResult<Self> {
        let (removals, takedowns) = takedown::sink(caches.crate_bytes.clone());
        let catalog = Arc::new(Catalog::new(
            store.meta.clone(),
            settings.public_url,
            settings.limits,
            caches.clone(),
            removals,
        ));
        catalog.reload().await?;
        let reads = Arc::new(Reads::new(
            catalog.clone(),
            store.meta.clone(),
            store.blobs.clone(),
            caches.crate_bytes.clone(),
            settings.memory_bytes,
        ));
        let env_admin_hash = settings.env_admin_hash.clone();
        let outbox = Arc::new(tokio::sync::Notify::new());
        let advisories = advisories::Advisories::new(store.meta.clone());
        advisories.reload().await?;
        Ok(RegistryService {
            advisories,
            auth: Auth::new(store.meta.clone(), catalog.clone(), settings.env_admin_hash),
            changes: Changes {
                meta: store.meta.clone(),
                blobs: store.blobs.clone(),
                catalog: catalog.clone(),
                reads: reads.clone(),
                outbox: outbox.clone(),
            },
            admin: Admin {
                meta: store.meta.clone(),
                catalog: catalog.clone(),
                reads: reads.clone(),
                index: caches.index.clone(),
                env_admin_hash,
            },
            store,
            caches,
            catalog,
            reads,
            imports: tokio::sync::Mutex::new(()),
            webhooks: Default::default(),
            outbox,
            takedowns,
        })
    }

    /// Follows the store's change feed ([`Metadata::watch`](crate::store::Metadata::watch)), if
    /// it has one (PostgreSQL): a change any node commits drops this node's cached copies — a
    /// crate's rendered index file, the registry definitions (reloaded), the cached tokens —
    /// and a cut feed drops them all. The task ends with the service.
    pub async fn watch_store(self: &Arc<Self>) -> RegistryResult<()> {
        let Some(mut events) = self.store.meta.watch().await? else {
            return Ok(());
        };
        // What changed between loading the definitions and listening is not announced to this
        // node: read them again now that it listens.
        self.catalog.reload().await?;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(svc) = weak.upgrade() else { return };
                svc.apply_store_event(event).await;
            }
        });
        Ok(())
    }

    /// Drops what `event` made stale.
    pub async fn apply_store_event(&self, event: crate::store::StoreEvent) {
        use crate::store::StoreEvent;
        tracing::debug!(?event, "store change");
        match event {
            StoreEvent::Crate { registry, name } => self.reads.invalidate(&registry, &name),
            StoreEvent::Tokens => self.auth.forget_tokens(),
            StoreEvent::Users => {}
            StoreEvent::Advisories => self.reload_advisories().await,
            StoreEvent::Registries | StoreEvent::Lost => {
                let before = self.catalog.registries();
                if let Err(e) = self.catalog.reload().await {
                    tracing::warn!(error = %e, "cannot reload the registry definitions after a change");
                }
                // A proxy deleted or made on another node: what this node cached under that
                // name belongs to a registry that is gone (the node that made the change
                // cleared its own cache already).
                let after = self.catalog.registries();
                let proxy = |s: &RegistrySpec| s.kind == crate::config::RegistryKind::Proxy;
                let gone = before.values().filter(|s| proxy(s) && !after.contains_key(&s.name));
                let new = after.values().filter(|s| proxy(s) && !before.contains_key(&s.name));
                for spec in gone.chain(new) {
                    self.caches.index.clear(&spec.name).await;
                }
                self.reads.invalidate_registry("");
                self.auth.forget_tokens();
                if matches!(event, StoreEvent::Lost) {
                    self.reload_advisories().await;
                }
            }
        }
    }

    async fn reload_advisories(&self) {
        if let Err(e) = self.advisories.reload().await {
            tracing::warn!(error = %e, "cannot reload the security advisories after a change");
        }
    }

    /// The store (for readiness checks and shutdown).
    pub fn store(&self) -> &PrivateStore {
        &self.store
    }

    /// The caches (for shutdown flushes and metrics).
    pub fn caches(&self) -> &CacheHandles {
        &self.caches
    }

    // --- catalog ---

    /// The public base URL.
    pub fn public_url(&self) -> &str {
        self.catalog.public_url()
    }

    /// Base URL of one registry (`{public_url}/{name}`): the `api` in its config.json.
    pub fn registry_root(&self, name: &str) -> String {
        self.catalog.registry_root(name)
    }

    /// The sparse index URL of one registry, as users configure it.
    pub fn index_url(&self, name: &str) -> String {
        self.catalog.index_url(name)
    }

    /// The configured size limits.
    pub fn limits(&self) -> Limits {
        self.catalog.limits()
    }

    /// The metric label of a registry: its name if it exists, else `-` (bounded label set).
    pub fn registry_label(&self, name: &str) -> &'static str {
        self.catalog.registry_label(name)
    }

    /// All registry definitions.
    pub fn registries(&self) -> Arc<BTreeMap<String, Arc<RegistrySpec>>> {
        self.catalog.registries()
    }

    /// One registry, or 404.
    pub fn registry(&self, name: &str) -> RegistryResult<Arc<RegistrySpec>> {
        self.catalog.registry(name)
    }

    /// The registry's `config.json` bytes.
    pub fn config_json(&self, reg: &RegistrySpec) -> Bytes {
        self.catalog.config_json(reg)
    }

    // --- auth ---

    /// Resolves an `Authorization` header to a principal. `Ok(None)` when there is no header.
    /// An unknown, revoked or expired token is a 401.
    pub async fn authenticate(
        &self,
        registry: Option<&str>,
        header: Option<&str>,
    ) -> RegistryResult<Option<Principal>> {
        self.auth.authenticate(registry, header).await
    }

    /// Like [`authenticate`](Self::authenticate) but a missing header is a 401 too.
    pub async fn require_principal(&self, registry: &str, header: Option<&str>) -> RegistryResult<Principal> {
        self.auth.require_principal(registry, header).await
    }

    /// Enforces read access (see [`Auth::authorize_read`]).
    pub async fn authorize_read(&self, reg: &RegistrySpec, header: Option<&str>) -> RegistryResult<()> {
        self.auth.authorize_read(reg, header).await
    }

    /// Decides whether the `Authorization` header may publish to `registry`, before any of the
    /// body is read (an anonymous client must not make the server buffer a crate).
    pub async fn authorize_publish(&self, registry: &str, header: Option<&str>) -> RegistryResult<Principal> {
        self.auth
            .authorize_write(registry, header, Scope::Publish, "publishing")
            .await
    }

    /// Decides whether the `Authorization` header may change owners in `registry`, before the
    /// request body is read.
    pub async fn authorize_owners(&self, registry: &str, header: Option<&str>) -> RegistryResult<Principal> {
        self.auth
            .authorize_write(registry, header, Scope::Owners, "changing owners")
            .await
    }

    /// Resolves the header and requires the admin scope.
    pub async fn require_admin(&self, header: Option<&str>) -> RegistryResult<Principal> {
        self.auth.require_admin(header).await
    }

    // --- reads ---

    /// The index answer for `lower` (a lowercase name) in any kind of registry.
    pub async fn index_file(&self, reg: &RegistrySpec, lower: &str) -> RegistryResult<IndexAnswer> {
        self.reads.index_file(reg, lower, false).await
    }

    /// The index file of a name as the upstream has it, even from a `prune_index` proxy (or a
    /// merged view over one).
    pub async fn index_file_unpruned(&self, reg: &RegistrySpec, lower: &str) -> RegistryResult<IndexAnswer> {
        self.reads.index_file(reg, lower, true).await
    }

    /// Where the `.crate` of `name@version` is, and the ids of the security advisories that
    /// flag it (a denied version is a 403 here; see [`advisories`]).
    pub async fn download(
        &self,
        reg: &Arc<RegistrySpec>,
        name: &str,
        version: &str,
    ) -> RegistryResult<(Download, Option<String>)> {
        // One shared read and a hash lookup when the crate has no advisory (the hot path).
        let flagged = if self.advisories.any_for(name) {
            self.check_advisories(reg, name, version).await?
        } else {
            None
        };
        Ok((self.reads.download(reg, name, version).await?, flagged))
    }

    /// `GET /api/v1/crates?q=&per_page=&page=` (see [`Reads::search`]).
    pub async fn search(
        &self,
        registry: &str,
        header: Option<&str>,
        q: &str,
        per_page: usize,
        page: usize,
    ) -> RegistryResult<Value> {
        let reg = self.catalog.registry(registry)?;
        self.auth.authorize_read(&reg, header).await?;
        let mut answer = self.reads.search(&reg, q, per_page, page).await?;
        self.annotate_search(&reg, &mut answer).await?;
        Ok(answer)
    }

    /// [`search`](Self::search) for a visitor of the web interface (`None`: anonymous): a
    /// registry the visitor may not read answers 404, as one that does not exist.
    pub async fn search_as(
        &self,
        registry: &str,
        who: Option<&Principal>,
        q: &str,
        per_page: usize,
        page: usize,
    ) -> RegistryResult<Value> {
        let reg = self.readable(registry, who)?;
        let mut answer = self.reads.search(&reg, q, per_page, page).await?;
        self.annotate_search(&reg, &mut answer).await?;
        Ok(answer)
    }

    /// A registry the visitor may read, or the same 404 as for one that does not exist (a page
    /// must not tell an anonymous visitor that a private registry is there).
    pub fn readable(&self, registry: &str, who: Option<&Principal>) -> RegistryResult<Arc<RegistrySpec>> {
        match self.catalog.registry(registry) {
            Ok(reg) if self.auth.may_read(&reg, who) => Ok(reg),
            _ => Err(RegistryError::NotFound(format!(
                "no registry named `{registry}` that you may read (sign in with a token that may)"
            ))),
        }
    }

    /// Whether a visitor may read a registry (see [`Auth::may_read`]).
    pub fn may_read(&self, reg: &RegistrySpec, who: Option<&Principal>) -> bool {
        self.auth.may_read(reg, who)
    }

    /// A crate as the web interface shows it (see [`Reads::crate_view`]); 404 unless the
    /// visitor may read the registry.
    pub async fn crate_view(
        &self,
        registry: &str,
        who: Option<&Principal>,
        name: &str,
    ) -> RegistryResult<Option<Arc<CrateView>>> {
        let reg = self.readable(registry, who)?;
        self.reads.crate_view(&reg, name).await
    }

    /// The README of a version (see [`Reads::readme`]: a proxied one only once its `.crate`
    /// is cached); the caller got `view` from [`crate_view`](Self::crate_view), which checked
    /// access.
    pub async fn readme(&self, view: &CrateView, version: &VersionView) -> RegistryResult<Option<String>> {
        self.reads
            .readme(&view.name, &version.line.vers, &version.line.cksum, view.local)
            .await
    }

    /// A proxy's cache figures and upstream reachability; 404 unless the visitor may read it.
    pub async fn proxy_status(&self, registry: &str, who: Option<&Principal>) -> RegistryResult<ProxyStatus> {
        self.readable(registry, who)?;
        self.catalog.proxy_status(registry).await
    }

    // --- sessions (web interface) ---

    /// Signs a browser in with a token (see [`Auth::sign_in`]): the session id and the session.
    pub async fn sign_in(&self, secret: &str) -> RegistryResult<(String, Arc<Session>, Principal)> {
        self.auth.sign_in(secret).await
    }

    /// The live session of a cookie value, with its principal.
    pub async fn session(&self, id: &str) -> RegistryResult<Option<(Arc<Session>, Principal)>> {
        self.auth.session(id).await
    }

    /// Ends a session.
    pub fn sign_out(&self, id: &str) {
        self.auth.sign_out(id)
    }

    // --- changes ---

    /// Handles a publish body for `registry` on behalf of `who` (from
    /// [`authorize_publish`](Self::authorize_publish)). Returns cargo's success body.
    pub async fn publish(&self, registry: &str, who: &Principal, body: Bytes) -> RegistryResult<Value> {
        self.changes.publish(registry, who, body).await
    }

    /// Yanks (`yanked = true`) or unyanks a version. Returns `{"ok":true}`.
    pub async fn set_yanked(
        &self,
        registry: &str,
        header: Option<&str>,
        name: &str,
        version: &str,
        yanked: bool,
    ) -> RegistryResult<Value> {
        let who = self
            .auth
            .authorize_write(registry, header, Scope::Yank, "yanking")
            .await?;
        self.changes.set_yanked(registry, &who, name, version, yanked).await
    }

    /// `GET .../owners`: `{"users":[{"id","login","name"}]}`. Needs a token (and `read` on an
    /// `auth_required` registry).
    pub async fn owners(&self, registry: &str, header: Option<&str>, name: &str) -> RegistryResult<Value> {
        let reg = self.catalog.hosted(registry, "listing owners")?;
        let who = self.auth.require_principal(registry, header).await?;
        if reg.auth_required {
            who.require(Scope::Read, Some(registry))?;
        }
        self.changes.owners(registry, name).await
    }

    /// `PUT`/`DELETE .../owners` with `{"users":[logins]}` on behalf of `who` (from
    /// [`authorize_owners`](Self::authorize_owners)). Returns `{"ok":true,"msg":...}`.
    pub async fn change_owners(
        &self,
        registry: &str,
        who: &Principal,
        name: &str,
        logins: Vec<String>,
        add: bool,
    ) -> RegistryResult<Value> {
        self.changes.change_owners(registry, who, name, logins, add).await
    }

    // --- admin ---

    /// Plans a bundle of registry `name` (`export` through the admin API): its entries,
    /// limited to `wants`, less what the `since` bundle's chain holds. Write it with
    /// [`bundle::write_blocking`] and the blob source returned.
    pub async fn plan_export(
        &self,
        name: &str,
        wants: Option<Vec<crate::index::wants::Want>>,
        since: Option<bundle::Manifest>,
    ) -> RegistryResult<(bundle::Plan, Option<bundle::StoreBlobs>)> {
        let spec = self.registry(name)?;
        if let Some(m) = &since {
            bundle::check_manifest(m)?;
        }
        let (entries, blobs) = match spec.kind {
            crate::config::RegistryKind::Hosted => (
                bundle::hosted_plan(&self.store, &spec, wants.as_deref()).await?,
                Some(self.store.blobs.clone()),
            ),
            crate::config::RegistryKind::Proxy => (
                bundle::proxy_plan(&self.caches.index, &self.caches.crates, &spec, wants.as_deref()).await?,
                None,
            ),
        };
        Ok((bundle::plan(&spec, entries, since)?, blobs))
    }

    /// The largest bundle upload taken: what the caches could hold, and 1 GiB for a hosted
    /// registry's crates.
    pub fn bundle_upload_limit(&self) -> u64 {
        self.caches
            .crates
            .budget()
            .saturating_add(self.caches.index.disk_budget())
            .saturating_add(1 << 30)
    }

    /// Imports an uploaded bundle into registry `registry` (default: the bundle's source
    /// registry name) of the running daemon, reading it once as it arrives: its manifest is
    /// checked first, then every entry is verified and staged, all or nothing; then the cached
    /// copies of what it changed are dropped so that every read after the answer sees it.
    /// Imports run one at a time. An upload refused or found imported before is drained unread.
    pub async fn import_bundle(
        &self,
        mut upload: bundle::Upload,
        registry: Option<&str>,
    ) -> RegistryResult<bundle::ImportSummary> {
        let result = self.import_upload(&mut upload, registry).await;
        upload.finish().await;
        result
    }

    async fn import_upload(
        &self,
        upload: &mut bundle::Upload,
        registry: Option<&str>,
    ) -> RegistryResult<bundle::ImportSummary> {
        let label = "the bundle";
        let manifest = upload.manifest().clone();
        let name = registry.unwrap_or(&manifest.registry.name);
        let spec = self.registry(name)?;
        bundle::check_target(&manifest, &spec, registry.is_some(), label)?;
        let _one = self.imports.lock().await;
        let quiet = bundle::silent();
        let input = bundle::Input::Stream(upload);
        let summary = match spec.kind {
            crate::config::RegistryKind::Hosted => {
                let staging = self.caches.crates.staging_dir();
                let max = self.limits().max_crate_bytes;
                let s =
                    bundle::import_hosted(&self.store, &staging, max, input, label, &manifest, name, &quiet).await?;
                for c in &s.crates {
                    self.reads.invalidate(name, c);
                }
                s
            }
            crate::config::RegistryKind::Proxy => {
                bundle::import_proxy(
                    &self.caches.index,
                    &self.caches.crates,
                    self.limits().max_upstream_index_bytes,
                    input,
                    label,
                    &manifest,
                    name,
                    &quiet,
                )
                .await?
            }
        };
        tracing::info!(
            registry = name,
            bundle = %summary.id,
            already = summary.already,
            index_files = summary.index_files,
            crate_files = summary.crate_files,
            bytes = summary.bytes,
            "bundle imported"
        );
        Ok(summary)
    }

    /// See [`Admin::bootstrap_admin`].
    pub async fn bootstrap_admin(&self, data_dir: &Path) -> RegistryResult<AdminToken> {
        self.admin.bootstrap_admin(data_dir).await
    }

    /// Says plainly, in the log, what `shadow = "version"` means for a registry that has it.
    pub fn warn_about_shadow_version(&self) {
        self.admin.warn_about_shadow_version()
    }

    /// See [`Admin::apply_configured`].
    pub async fn apply_configured(
        &self,
        specs: impl IntoIterator<Item = RegistrySpec>,
        data_dir: &Path,
    ) -> RegistryResult<()> {
        self.admin.apply_configured(specs, data_dir).await
    }

    /// Creates a registry, as `actor` (the login recorded in `registry.changed`).
    pub async fn create_registry(&self, spec: RegistrySpec, actor: &str) -> RegistryResult<Arc<RegistrySpec>> {
        let created = self.admin.create_registry(spec, actor).await?;
        self.outbox.notify_one();
        Ok(created)
    }

    /// Updates some fields of a registry, as `actor`.
    pub async fn update_registry(
        &self,
        name: &str,
        patch: RegistryPatch,
        actor: &str,
    ) -> RegistryResult<Arc<RegistrySpec>> {
        let updated = self.admin.update_registry(name, patch, actor).await?;
        self.outbox.notify_one();
        Ok(updated)
    }

    /// Deletes a registry (see [`Admin::delete_registry`]), as `actor`.
    pub async fn delete_registry(&self, name: &str, force: bool, actor: &str) -> RegistryResult<()> {
        self.admin.delete_registry(name, force, actor).await?;
        self.outbox.notify_one();
        Ok(())
    }

    /// Number of crates in a registry (for listings).
    pub async fn crate_count(&self, name: &str) -> RegistryResult<usize> {
        self.admin.crate_count(name).await
    }

    /// Creates a user.
    pub async fn create_user(&self, login: &str, name: Option<String>) -> RegistryResult<Value> {
        self.admin.create_user(login, name).await
    }

    /// All users.
    pub async fn list_users(&self) -> RegistryResult<Value> {
        self.admin.list_users().await
    }

    /// Creates a token; the secret is in the answer and nowhere else.
    pub async fn create_token(&self, req: NewToken) -> RegistryResult<Value> {
        self.admin.create_token(req).await
    }

    /// All tokens (never their secrets), optionally of one user.
    pub async fn list_tokens(&self, user: Option<&str>) -> RegistryResult<Value> {
        self.admin.list_tokens(user).await
    }

    /// Revokes a token by id.
    pub async fn revoke_token(&self, id: &str) -> RegistryResult<()> {
        self.admin.revoke_token(id).await?;
        self.auth.forget_tokens();
        Ok(())
    }
}
