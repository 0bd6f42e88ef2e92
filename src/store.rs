//! Durable state of hosted registries, behind two narrow traits:
//!
//! - [`Metadata`]: registry definitions, crates with their versions' index lines and owners,
//!   users and token hashes. Every change is one transaction; races are decided by the
//!   database (unique keys, and a per-crate revision compared on write), never by a lock in
//!   this process, so several processes may share one database.
//! - [`Blobs`]: `.crate` files by SHA-256, written from bytes or a stream, read as a stream.
//!
//! No file path crosses either trait. The embedded default ([`PrivateStore::open_embedded`])
//! is SQLite at `<data_dir>/store/registry.db` ([`sql::SqlMetadata`], through sqlx's `Any`
//! driver so PostgreSQL runs the same queries and migrations) and blob files under
//! `<data_dir>/store/blobs/` ([`blobs::FileBlobs`]). [`sled::SledMetadata`] is the store of
//! earlier releases: read once by [`migrate`] and kept as the baseline of the publish
//! benchmark; sled itself lives on as the disk tier of the upstream cache.
//!
//! Durability contract: when [`Blobs::put`] returns, the blob is durable under its name; when a
//! [`Metadata`] change returns, it is committed (SQLite: WAL, `synchronous = FULL`). The
//! registry writes the blob first and the version second, so after a crash a version is
//! either fully visible or absent, and at worst a blob is left that nothing names ([`gc`]).

pub mod advisories;
pub mod blobs;
pub mod conformance;
pub mod gc;
pub mod hooks;
pub mod migrate;
pub mod s3;
pub mod sled;
pub mod sql;
#[cfg(test)]
pub mod testing;

use std::collections::HashSet;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::config::env::EnvSource;
use crate::config::store::StoreConfig;
use crate::config::RegistrySpec;
use crate::index::IndexLine;

/// Storage failures. Carried as text so the error is `Clone` and crosses task boundaries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A concurrent change won: a unique key was taken, or the crate changed since it was
    /// read. The caller re-reads and decides again.
    #[error("a concurrent change won: {0}")]
    Conflict(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// Result alias for the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// One crate of a hosted registry, with every version's index line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrateRecord {
    /// Name as first published (exact spelling).
    pub name: String,
    /// Logins of the owners.
    pub owners: Vec<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Index lines in publish order; the blob of each is named by its `cksum`.
    pub versions: Vec<VersionRecord>,
    /// Bumped by every change of the crate; a change names the revision it was decided on.
    #[serde(default)]
    pub revision: u64,
}

/// One published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub line: IndexLine,
    /// Login of the publisher.
    pub published_by: String,
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: u32,
    pub login: String,
    pub name: Option<String>,
    /// Unix seconds.
    pub created: u64,
}

/// An API token; only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public identifier (used to list and revoke).
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub user: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// Registries the token is limited to; `None` = all.
    pub registries: Option<Vec<String>>,
    /// Unix seconds after which the token is refused.
    pub expires: Option<u64>,
    pub created: u64,
}

/// One change to one crate, applied atomically by [`Metadata::change_crate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one value per change, never kept in bulk
pub enum CrateChange {
    /// Adds a version. On a crate that does not exist yet (`expected = None`) it creates the
    /// crate, spelled `name` and owned by the publisher.
    Publish {
        name: String,
        version: VersionRecord,
        /// Replaces the description when `Some`.
        description: Option<String>,
        /// Replaces the keywords when not empty.
        keywords: Vec<String>,
    },
    /// Yanks or unyanks the version spelled exactly `vers`.
    SetYanked { vers: String, yanked: bool },
    /// Replaces the owners (in this order).
    SetOwners(Vec<String>),
}

/// Everything a store holds but the blobs, as one value: what [`Metadata::import`] takes in
/// one transaction (migration between backends, bundles).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub registries: Vec<RegistrySpec>,
    /// (registry, crate).
    pub crates: Vec<(String, CrateRecord)>,
    pub users: Vec<UserRecord>,
    pub tokens: Vec<TokenRecord>,
}

/// How much a store holds (what a migration checks on both sides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub registries: u64,
    pub crates: u64,
    pub versions: u64,
    pub owners: u64,
    pub users: u64,
    pub tokens: u64,
}

impl Snapshot {
    /// What the snapshot holds.
    pub fn counts(&self) -> Counts {
        Counts {
            registries: self.registries.len() as u64,
            crates: self.crates.len() as u64,
            versions: self.crates.iter().map(|(_, c)| c.versions.len() as u64).sum(),
            owners: self.crates.iter().map(|(_, c)| c.owners.len() as u64).sum(),
            users: self.users.len() as u64,
            tokens: self.tokens.len() as u64,
        }
    }
}

/// Metadata of the hosted registries. Reads see committed data; every change is atomic.
#[async_trait]
pub trait Metadata: Send + Sync + 'static {
    /// All stored registry definitions.
    async fn registries(&self) -> StoreResult<Vec<RegistrySpec>>;
    /// Creates or replaces a registry definition.
    async fn put_registry(&self, spec: &RegistrySpec) -> StoreResult<()>;
    /// Deletes a registry definition and every crate, version and owner of it (one
    /// transaction). Blobs stay until [`gc`] finds them unreferenced.
    async fn delete_registry(&self, name: &str) -> StoreResult<()>;

    /// The crate whose canonical name is `canonical`, if any.
    async fn get_crate(&self, registry: &str, canonical: &str) -> StoreResult<Option<CrateRecord>>;
    /// Every crate of a registry.
    async fn crates(&self, registry: &str) -> StoreResult<Vec<CrateRecord>>;
    /// How many crates a registry has.
    async fn crate_count(&self, registry: &str) -> StoreResult<u64>;
    /// Applies `change` to the crate `canonical` if its revision is still `expected` (`None`:
    /// the crate must not exist yet). Returns the new revision. [`StoreError::Conflict`] when
    /// the revision moved, the crate appeared meanwhile, or the version's release (the version
    /// without build metadata) is already taken.
    async fn change_crate(
        &self,
        registry: &str,
        canonical: &str,
        expected: Option<u64>,
        change: &CrateChange,
    ) -> StoreResult<u64>;
    /// [`change_crate`](Self::change_crate) made by `actor`, recording its webhook event in the
    /// outbox in the same transaction. Stores without an outbox (the legacy sled store) only
    /// change.
    async fn change_crate_as(
        &self,
        registry: &str,
        canonical: &str,
        expected: Option<u64>,
        change: &CrateChange,
        actor: &str,
    ) -> StoreResult<u64> {
        let _ = actor;
        self.change_crate(registry, canonical, expected, change).await
    }
    /// [`put_registry`](Self::put_registry) recording `registry.changed` (by `actor`; `None`:
    /// the config file) in the same transaction, where there is an outbox.
    async fn put_registry_as(&self, spec: &RegistrySpec, actor: Option<&str>) -> StoreResult<()> {
        let _ = actor;
        self.put_registry(spec).await
    }
    /// [`delete_registry`](Self::delete_registry) recording `registry.changed` like
    /// [`put_registry_as`](Self::put_registry_as).
    async fn delete_registry_as(&self, name: &str, actor: Option<&str>) -> StoreResult<()> {
        let _ = actor;
        self.delete_registry(name).await
    }

    /// Records `event` in the outbox on its own (a finding, not a change of the store) under
    /// the id `id`, once: `false` when an event with that id is already there (see
    /// [`hooks::HookEvent::once_id`]). Stores without an outbox record nothing.
    async fn record_event_once(&self, id: &str, event: &hooks::HookEvent) -> StoreResult<bool> {
        let _ = (id, event);
        Ok(false)
    }
    /// Whether the outbox holds an event with the id `id` (one recorded by
    /// [`record_event_once`](Self::record_event_once), until pruned). Stores without an outbox
    /// hold none.
    async fn has_event(&self, id: &str) -> StoreResult<bool> {
        let _ = id;
        Ok(false)
    }
    /// Outbox events not yet turned into deliveries, oldest first (at most `limit`).
    async fn outbox_pending(&self, limit: u64) -> StoreResult<Vec<(String, hooks::HookEvent)>> {
        let _ = limit;
        Ok(Vec::new())
    }
    /// Turns the outbox event `id` into one delivery per hook that wants it, in one
    /// transaction that first marks it done: of several nodes, one does it. Returns how many
    /// deliveries were made (`None`: another node did it).
    async fn fan_out(&self, id: &str) -> StoreResult<Option<u64>> {
        let _ = id;
        Ok(None)
    }
    /// Stores a new hook.
    async fn put_hook(&self, hook: &hooks::HookRecord) -> StoreResult<()> {
        let _ = hook;
        Err(StoreError::Io("this store has no webhooks".into()))
    }
    /// All hooks.
    async fn hooks(&self) -> StoreResult<Vec<hooks::HookRecord>> {
        Ok(Vec::new())
    }
    /// Deletes a hook and its deliveries; `false` if there was none.
    async fn delete_hook(&self, id: &str) -> StoreResult<bool> {
        let _ = id;
        Ok(false)
    }
    /// The deliveries of a hook, newest first (at most `limit`), with their attempts.
    async fn deliveries(&self, hook: &str, limit: u64) -> StoreResult<Vec<hooks::DeliveryRecord>> {
        let _ = (hook, limit);
        Ok(Vec::new())
    }
    /// Claims up to `limit` pending deliveries due at `now` (unix ms) for `node` until
    /// `now + lease` ms: a delivery claimed by one node is not claimed by another until the
    /// claim ends or the attempt is recorded.
    async fn claim_deliveries(
        &self,
        node: &str,
        now: u64,
        lease: u64,
        limit: u64,
    ) -> StoreResult<Vec<hooks::DueDelivery>> {
        let _ = (node, now, lease, limit);
        Ok(Vec::new())
    }
    /// Records an attempt of a delivery and its new state (`pending` again at `next_attempt`,
    /// `delivered` or `failed`), ending the claim.
    async fn record_attempt(
        &self,
        delivery: &str,
        attempt: &hooks::AttemptRecord,
        state: &str,
        next_attempt: u64,
    ) -> StoreResult<()> {
        let _ = (delivery, attempt, state, next_attempt);
        Err(StoreError::Io("this store has no webhooks".into()))
    }
    /// Deletes what webhooks no longer need from before `before` (unix ms): deliveries that
    /// ended (delivered or failed) with their attempts, and events already fanned out (an
    /// event reported once, [`record_event_once`](Self::record_event_once), may then be
    /// reported again). Pending deliveries are never deleted. Returns (events, deliveries).
    async fn prune_webhooks(&self, before: u64) -> StoreResult<(u64, u64)> {
        let _ = before;
        Ok((0, 0))
    }
    /// When (unix ms) the next pending delivery may be claimed: its next attempt, or the end
    /// of the claim on it. `None` when nothing is pending.
    async fn next_delivery_due(&self) -> StoreResult<Option<u64>> {
        Ok(None)
    }
    /// Makes the delivery `id` pending again, due now; `false` if there is none.
    async fn redeliver(&self, id: &str) -> StoreResult<bool> {
        let _ = id;
        Ok(false)
    }

    /// Replaces the whole advisory database by `db` (its `imported` recorded too), in one
    /// transaction that announces [`StoreEvent::Advisories`]. Stores without advisories (the
    /// legacy sled store) refuse.
    async fn replace_advisories(&self, db: &advisories::AdvisoryDb) -> StoreResult<()> {
        let _ = db;
        Err(StoreError::Io(
            "this store keeps no security advisories (the sled store of earlier releases); start the daemon of this release once to migrate it".into(),
        ))
    }
    /// The advisory database (empty, never imported, where there is none).
    async fn advisories(&self) -> StoreResult<advisories::AdvisoryDb> {
        Ok(advisories::AdvisoryDb::default())
    }

    /// The SHA-256 of every blob some version names (for [`gc`]).
    async fn referenced_blobs(&self) -> StoreResult<HashSet<String>>;

    /// A user by login.
    async fn get_user(&self, login: &str) -> StoreResult<Option<UserRecord>>;
    /// Creates a user; `Ok(None)` if the login is taken.
    async fn create_user(&self, login: &str, name: Option<String>) -> StoreResult<Option<UserRecord>>;
    /// All users.
    async fn users(&self) -> StoreResult<Vec<UserRecord>>;

    /// A token by the hash of its secret.
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;
    /// Stores a new token.
    async fn put_token(&self, token: &TokenRecord) -> StoreResult<()>;
    /// All tokens.
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Deletes the token with public id `id`; `false` if there was none.
    async fn delete_token(&self, id: &str) -> StoreResult<bool>;

    /// Everything, as one consistent value.
    async fn snapshot(&self) -> StoreResult<Snapshot>;
    /// Writes a whole snapshot into an empty store, in one transaction, and records `marker`
    /// in the same transaction. Returns `false` (writing nothing) if `marker` is already
    /// recorded: an import that committed is never repeated. A store that holds any registry,
    /// crate, user or token is refused ([`StoreError::Conflict`]), writing nothing.
    async fn import(&self, snapshot: &Snapshot, marker: &str) -> StoreResult<bool>;
    /// What the store holds.
    async fn counts(&self) -> StoreResult<Counts>;

    /// Whether `marker` was recorded by [`import`](Self::import) or
    /// [`restore_crates`](Self::restore_crates).
    async fn has_marker(&self, marker: &str) -> StoreResult<bool> {
        let _ = marker;
        Err(StoreError::Io("this store does not record imports".into()))
    }
    /// Restores crates of `registry` from a bundle, in one transaction with `marker`: each
    /// crate of `crates` replaces the crate of the same canonical name (versions, owners,
    /// yanks; its revision moves forward), crates not named are untouched, and the `users`
    /// whose login is unknown are added (with fresh ids). Returns `false`, writing nothing, if
    /// `marker` is already recorded. The blobs the versions name must be stored first.
    async fn restore_crates(
        &self,
        registry: &str,
        crates: &[CrateRecord],
        users: &[UserRecord],
        marker: &str,
    ) -> StoreResult<bool> {
        let _ = (registry, crates, users, marker);
        Err(StoreError::Io("this store cannot restore crates from a bundle".into()))
    }

    /// Whether other processes may share this store (nodes of a cluster): PostgreSQL yes, the
    /// embedded SQLite store no (one daemon owns its data dir).
    fn shared(&self) -> bool {
        false
    }

    /// Changes made through *any* handle on the same database (other nodes included), for
    /// dropping cached copies: `None` when the store has no such feed (the embedded SQLite
    /// store, whose only writer is this process). The feed says [`StoreEvent::Lost`] when it
    /// may have missed changes (its connection dropped), then goes on.
    async fn watch(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<StoreEvent>>> {
        Ok(None)
    }

    /// Whether the store answers reads and writes (readiness).
    async fn check(&self) -> StoreResult<()>;
    /// Releases the store (shutdown): pending work is committed.
    async fn close(&self) -> StoreResult<()>;
}

/// A change another handle (or node) made, as announced by [`Metadata::watch`]. Sent in the
/// transaction of the change (PostgreSQL `NOTIFY`), so it is delivered when, and only when, the
/// change commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreEvent {
    /// A crate changed (publish, yank, unyank, owners, restore).
    Crate { registry: String, name: String },
    /// Registry definitions changed.
    Registries,
    /// Users changed.
    Users,
    /// Tokens changed (one made or revoked).
    Tokens,
    /// The security advisory database was replaced.
    Advisories,
    /// Anything may have changed (an import), or the feed may have missed changes (its
    /// connection dropped): drop every cached copy.
    Lost,
}

/// The PostgreSQL channel of [`StoreEvent`]s.
pub const CHANGES_CHANNEL: &str = "cargohold_changes";

/// A blob being read: its length and its bytes.
pub struct BlobReader {
    pub len: u64,
    pub reader: Pin<Box<dyn AsyncRead + Send + Sync>>,
}

/// One stored blob, as listed for [`gc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub sha256: String,
    pub len: u64,
    /// When it was last written (a `put` of an existing blob renews it).
    pub modified: SystemTime,
}

/// `.crate` files by SHA-256 (64 lowercase hex characters; anything else is never stored and
/// never found).
#[async_trait]
pub trait Blobs: Send + Sync + 'static {
    /// Stores `bytes` under their SHA-256 (returned); durable on return. Idempotent: storing
    /// an existing blob renews its modification time (so [`gc`]'s grace period covers the
    /// publish that just wrote it).
    async fn put(&self, bytes: bytes::Bytes) -> StoreResult<String>;
    /// Stores what `reader` yields; returns its SHA-256 and length.
    async fn put_stream(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> StoreResult<(String, u64)>;
    /// The blob named `sha256`, as a stream; `None` if absent.
    async fn get(&self, sha256: &str) -> StoreResult<Option<BlobReader>>;
    /// Whether the blob exists.
    async fn exists(&self, sha256: &str) -> StoreResult<bool>;
    /// The blob's size and modification time; `None` if absent.
    async fn info(&self, sha256: &str) -> StoreResult<Option<BlobInfo>>;
    /// Deletes the blob; `false` if there was none.
    async fn delete(&self, sha256: &str) -> StoreResult<bool>;
    /// Moves the blob out of sight ([`get`](Self::get) and [`exists`](Self::exists) no longer
    /// find it) until [`restore`](Self::restore) or [`purge`](Self::purge); `false` if there
    /// was none. [`gc`] deletes in two steps so that a publish racing it always finds its
    /// blob gone (and writes it again) or restored, never deleted after its check.
    async fn quarantine(&self, sha256: &str) -> StoreResult<bool>;
    /// Puts a quarantined blob back; if the blob was written again meanwhile, that one stays.
    async fn restore(&self, sha256: &str) -> StoreResult<()>;
    /// Deletes a quarantined blob for good.
    async fn purge(&self, sha256: &str) -> StoreResult<()>;
    /// Every blob.
    async fn list(&self) -> StoreResult<Vec<BlobInfo>>;
}

/// Whether `s` can name a blob: 64 lowercase hex characters.
pub fn is_blob_name(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The private store: metadata and blobs.
#[derive(Clone)]
pub struct PrivateStore {
    pub meta: Arc<dyn Metadata>,
    pub blobs: Arc<dyn Blobs>,
}

impl PrivateStore {
    /// The embedded default under `dir` (`<data_dir>/store`): SQLite at `registry.db`, blob
    /// files under `blobs/`. A sled store of an earlier release found there is migrated first
    /// (see [`migrate`]).
    pub async fn open_embedded(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)?;
        let blobs = Arc::new(blobs::FileBlobs::open(dir.join("blobs"))?);
        let meta = Arc::new(sql::SqlMetadata::open_sqlite(&dir.join("registry.db")).await?);
        migrate::from_sled_if_present(dir, meta.as_ref()).await?;
        Ok(PrivateStore { meta, blobs })
    }

    /// The store `config` names (`[store]`), with `dir` (`<data_dir>/store`) for what stays
    /// local: SQLite and blob files when those halves are embedded, and the spool of S3
    /// uploads. S3 credentials come from `env`. With `beside_daemon` (`gc`), nothing local is
    /// cleaned up or migrated, as in
    /// [`open_embedded_beside_daemon`](Self::open_embedded_beside_daemon).
    pub async fn open(config: &StoreConfig, dir: &Path, env: &dyn EnvSource, beside_daemon: bool) -> StoreResult<Self> {
        if config.is_embedded() {
            return if beside_daemon {
                Self::open_embedded_beside_daemon(dir).await
            } else {
                Self::open_embedded(dir).await
            };
        }
        std::fs::create_dir_all(dir)?;
        let blobs: Arc<dyn Blobs> = match &config.s3 {
            Some(s3) => {
                let spool = dir.join("spool");
                if !beside_daemon && spool.exists() {
                    // Uploads a crash cut short; nothing names them.
                    std::fs::remove_dir_all(&spool)?;
                }
                let creds = s3::S3Credentials::from_env(env)?;
                Arc::new(s3::S3Blobs::open(s3, &creds, spool).await?)
            }
            None if beside_daemon => Arc::new(blobs::FileBlobs::attach(dir.join("blobs"))),
            None => Arc::new(blobs::FileBlobs::open(dir.join("blobs"))?),
        };
        let meta: Arc<dyn Metadata> = match &config.database {
            Some(url) => Arc::new(sql::SqlMetadata::open_postgres(url.expose()).await?),
            None => {
                let meta = sql::SqlMetadata::open_sqlite(&dir.join("registry.db")).await?;
                if !beside_daemon {
                    migrate::from_sled_if_present(dir, &meta).await?;
                }
                Arc::new(meta)
            }
        };
        Ok(PrivateStore { meta, blobs })
    }

    /// The embedded store under `dir` for maintenance beside a running daemon (`gc`): it
    /// must exist and be migrated; nothing is cleaned up or migrated on opening, so the
    /// daemon's writes in flight are untouched.
    pub async fn open_embedded_beside_daemon(dir: &Path) -> StoreResult<Self> {
        if migrate::sled_store_present(dir) {
            return Err(StoreError::Io(format!(
                "{} holds a store of an earlier release that is not migrated yet; start the daemon of this release once (it migrates on start), then run this again",
                dir.display()
            )));
        }
        if !dir.join("registry.db").is_file() {
            return Err(StoreError::Io(format!("there is no store in {}", dir.display())));
        }
        let blobs = Arc::new(blobs::FileBlobs::attach(dir.join("blobs")));
        let meta = Arc::new(sql::SqlMetadata::open_sqlite(&dir.join("registry.db")).await?);
        Ok(PrivateStore { meta, blobs })
    }
}

pub use crate::config::store::redact_url;

/// Current unix time in seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
