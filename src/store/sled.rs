//! The embedded store: one sled database (`<data_dir>/store/db`) for metadata, blob files
//! beside it (`<data_dir>/store/blobs`).
//!
//! | tree         | key                       | value (JSON)     |
//! |--------------|---------------------------|------------------|
//! | `registries` | registry name             | `RegistrySpec`   |
//! | `crates`     | `{registry}\0{canonical}` | `CrateRecord`    |
//! | `users`      | login                     | `UserRecord`     |
//! | `tokens`     | hex SHA-256 of the secret | `TokenRecord`    |
//!
//! Every write is followed by `flush` (fsync) before the call returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::blobs::BlobDir;
use super::{now_secs, CrateRecord, Store, StoreError, StoreResult, TokenRecord, UserRecord};
use crate::config::RegistrySpec;

/// sled + blob files.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    registries: sled::Tree,
    crates: sled::Tree,
    users: sled::Tree,
    tokens: sled::Tree,
    blobs: BlobDir,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn crate_key(registry: &str, canonical: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(registry.len() + 1 + canonical.len());
    k.extend_from_slice(registry.as_bytes());
    k.push(0);
    k.extend_from_slice(canonical.as_bytes());
    k
}

fn registry_prefix(registry: &str) -> Vec<u8> {
    crate_key(registry, "")
}

impl SledStore {
    /// Opens (creating) the store under `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(32 << 20)
            .open()?;
        let inner = Inner {
            registries: db.open_tree("registries")?,
            crates: db.open_tree("crates")?,
            users: db.open_tree("users")?,
            tokens: db.open_tree("tokens")?,
            blobs: BlobDir::open(dir.join("blobs"))?,
            db,
        };
        Ok(SledStore { inner: Arc::new(inner) })
    }

    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Io(format!("storage task failed: {e}")))?
    }
}

fn all<T: DeserializeOwned>(iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>) -> StoreResult<Vec<T>> {
    iter.map(|kv| {
        let (_, v) = kv?;
        decode(&v)
    })
    .collect()
}

#[async_trait]
impl Store for SledStore {
    async fn registries(&self) -> StoreResult<Vec<RegistrySpec>> {
        self.run(|s| all(s.registries.iter())).await
    }

    async fn put_registry(&self, spec: &RegistrySpec) -> StoreResult<()> {
        let (name, value) = (spec.name.clone(), encode(spec)?);
        self.run(move |s| {
            s.registries.insert(name.as_bytes(), value)?;
            s.db.flush()?;
            Ok(())
        })
        .await
    }

    async fn delete_registry(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.run(move |s| {
            for kv in s.crates.scan_prefix(registry_prefix(&name)) {
                let (k, _) = kv?;
                s.crates.remove(k)?;
            }
            s.registries.remove(name.as_bytes())?;
            s.db.flush()?;
            Ok(())
        })
        .await
    }

    async fn get_crate(&self, registry: &str, canonical: &str) -> StoreResult<Option<CrateRecord>> {
        let key = crate_key(registry, canonical);
        self.run(move |s| s.crates.get(key)?.map(|v| decode(&v)).transpose())
            .await
    }

    async fn put_crate(&self, registry: &str, canonical: &str, record: &CrateRecord) -> StoreResult<()> {
        let (key, value) = (crate_key(registry, canonical), encode(record)?);
        self.run(move |s| {
            s.crates.insert(key, value)?;
            s.db.flush()?;
            Ok(())
        })
        .await
    }

    async fn crates(&self, registry: &str) -> StoreResult<Vec<CrateRecord>> {
        let prefix = registry_prefix(registry);
        self.run(move |s| all(s.crates.scan_prefix(prefix))).await
    }

    async fn put_blob(&self, bytes: bytes::Bytes) -> StoreResult<String> {
        self.run(move |s| Ok(s.blobs.put(&bytes)?)).await
    }

    async fn blob_path(&self, sha256: &str) -> StoreResult<Option<PathBuf>> {
        let path = self.inner.blobs.path_of(sha256);
        Ok(match path {
            Some(p) if tokio::fs::try_exists(&p).await? => Some(p),
            _ => None,
        })
    }

    async fn get_user(&self, login: &str) -> StoreResult<Option<UserRecord>> {
        let login = login.to_owned();
        self.run(move |s| s.users.get(login.as_bytes())?.map(|v| decode(&v)).transpose())
            .await
    }

    async fn create_user(&self, login: &str, name: Option<String>) -> StoreResult<Option<UserRecord>> {
        let login = login.to_owned();
        self.run(move |s| {
            let id = u32::try_from(s.db.generate_id()? % u64::from(u32::MAX)).unwrap_or(0) + 1;
            let user = UserRecord {
                id,
                login: login.clone(),
                name,
                created: now_secs(),
            };
            let swapped = s
                .users
                .compare_and_swap(login.as_bytes(), None as Option<&[u8]>, Some(encode(&user)?))?;
            if swapped.is_err() {
                return Ok(None);
            }
            s.db.flush()?;
            Ok(Some(user))
        })
        .await
    }

    async fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.run(|s| all(s.users.iter())).await
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let hash = hash.to_owned();
        self.run(move |s| s.tokens.get(hash.as_bytes())?.map(|v| decode(&v)).transpose())
            .await
    }

    async fn put_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let (key, value) = (token.hash.clone(), encode(token)?);
        self.run(move |s| {
            s.tokens.insert(key.as_bytes(), value)?;
            s.db.flush()?;
            Ok(())
        })
        .await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.run(|s| all(s.tokens.iter())).await
    }

    async fn delete_token(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.run(move |s| {
            let tokens: Vec<TokenRecord> = all(s.tokens.iter())?;
            let Some(t) = tokens.into_iter().find(|t| t.id == id) else {
                return Ok(false);
            };
            s.tokens.remove(t.hash.as_bytes())?;
            s.db.flush()?;
            Ok(true)
        })
        .await
    }

    async fn check(&self) -> StoreResult<()> {
        self.run(|s| {
            s.db.insert(b"readyz", now_secs().to_be_bytes().to_vec())?;
            Ok(())
        })
        .await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.run(|s| {
            s.db.flush()?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistryKind;
    use crate::index::IndexLine;

    fn line(v: &str) -> IndexLine {
        IndexLine {
            name: "foo".into(),
            vers: v.into(),
            deps: vec![],
            cksum: "0".repeat(64),
            features: Default::default(),
            yanked: false,
            links: None,
            v: 1,
            rust_version: None,
            pubtime: None,
        }
    }

    #[tokio::test]
    async fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.put_registry(&RegistrySpec::new("local", RegistryKind::Hosted))
                .await
                .unwrap();
            let rec = CrateRecord {
                name: "Foo".into(),
                owners: vec!["alice".into()],
                description: None,
                keywords: vec![],
                versions: vec![super::super::VersionRecord {
                    line: line("1.0.0"),
                    published_by: "alice".into(),
                }],
            };
            s.put_crate("local", "foo", &rec).await.unwrap();
            s.put_crate("other", "foo", &rec).await.unwrap();
            assert!(s.create_user("alice", None).await.unwrap().is_some());
            assert!(s.create_user("alice", None).await.unwrap().is_none());
            let sha = s.put_blob(bytes::Bytes::from_static(b"data")).await.unwrap();
            assert!(s.blob_path(&sha).await.unwrap().is_some());
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.registries().await.unwrap().len(), 1);
        assert_eq!(s.get_crate("local", "foo").await.unwrap().unwrap().name, "Foo");
        assert_eq!(s.crates("local").await.unwrap().len(), 1);
        s.delete_registry("local").await.unwrap();
        assert!(s.get_crate("local", "foo").await.unwrap().is_none());
        assert!(s.get_crate("other", "foo").await.unwrap().is_some());
        assert_eq!(s.users().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn tokens_by_hash_and_revoke_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let t = TokenRecord {
            id: "t1".into(),
            hash: "h1".into(),
            user: "alice".into(),
            name: "ci".into(),
            scopes: vec!["read".into()],
            registries: None,
            expires: None,
            created: 0,
        };
        s.put_token(&t).await.unwrap();
        assert_eq!(s.token_by_hash("h1").await.unwrap(), Some(t));
        assert!(s.delete_token("t1").await.unwrap());
        assert!(!s.delete_token("t1").await.unwrap());
        assert!(s.token_by_hash("h1").await.unwrap().is_none());
    }
}
