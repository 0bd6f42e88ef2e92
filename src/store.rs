//! Durable state of hosted registries: registry definitions, crates (with their index lines
//! and owners), users and token hashes, and `.crate` blobs.
//!
//! [`Store`] is the narrow trait the registry layer talks to; [`sled::SledStore`] is the
//! embedded implementation (sled for metadata, plain files for blobs). A shared multi-node
//! backend would implement the same trait. Blocking I/O stays inside the implementations
//! (`spawn_blocking`); nothing above sees a sync API.
//!
//! Durability contract: when `put_blob` returns, the blob file is fsynced and renamed into
//! place; when `put_crate` returns, the record is flushed to disk. The registry writes the blob
//! first and the record second, so after a crash a version is either fully visible or absent.

pub mod blobs;
pub mod sled;

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::RegistrySpec;
use crate::index::IndexLine;

/// Storage failures. Carried as text so the error is `Clone` and crosses task boundaries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
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

/// The storage interface of the registry layer.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// All stored registry definitions.
    async fn registries(&self) -> StoreResult<Vec<RegistrySpec>>;
    /// Creates or replaces a registry definition (durable on return).
    async fn put_registry(&self, spec: &RegistrySpec) -> StoreResult<()>;
    /// Deletes a registry definition and every crate record of it.
    async fn delete_registry(&self, name: &str) -> StoreResult<()>;

    /// The crate whose canonical name is `canonical`, if any.
    async fn get_crate(&self, registry: &str, canonical: &str) -> StoreResult<Option<CrateRecord>>;
    /// Creates or replaces a crate record (durable on return).
    async fn put_crate(&self, registry: &str, canonical: &str, record: &CrateRecord) -> StoreResult<()>;
    /// Every crate of a registry.
    async fn crates(&self, registry: &str) -> StoreResult<Vec<CrateRecord>>;

    /// Stores a blob under its SHA-256 (hex, returned); durable on return. Idempotent.
    async fn put_blob(&self, bytes: bytes::Bytes) -> StoreResult<String>;
    /// Where the blob named `sha256` lives, if it exists.
    async fn blob_path(&self, sha256: &str) -> StoreResult<Option<PathBuf>>;

    /// A user by login.
    async fn get_user(&self, login: &str) -> StoreResult<Option<UserRecord>>;
    /// Creates a user; `Ok(None)` if the login is taken.
    async fn create_user(&self, login: &str, name: Option<String>) -> StoreResult<Option<UserRecord>>;
    /// All users.
    async fn users(&self) -> StoreResult<Vec<UserRecord>>;

    /// A token by the hash of its secret.
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;
    /// Stores a token (durable on return).
    async fn put_token(&self, token: &TokenRecord) -> StoreResult<()>;
    /// All tokens.
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Deletes the token with public id `id`; `false` if there was none.
    async fn delete_token(&self, id: &str) -> StoreResult<bool>;

    /// Whether the store answers reads and writes (readiness).
    async fn check(&self) -> StoreResult<()>;
    /// Flushes pending writes (shutdown).
    async fn flush(&self) -> StoreResult<()>;
}

/// Current unix time in seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
