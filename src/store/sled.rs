//! The store of earlier releases: one sled database (`<data_dir>/store/db`) of JSON records.
//! The daemon no longer writes it: [`super::migrate`] reads it once into the SQL store, and
//! the publish benchmark measures it as the baseline. It implements [`Metadata`] whole, and
//! passes the same conformance suite, which keeps the suite honest about backends.
//!
//! | tree         | key                       | value (JSON)     |
//! |--------------|---------------------------|------------------|
//! | `registries` | registry name             | `RegistrySpec`   |
//! | `crates`     | `{registry}\0{canonical}` | `CrateRecord`    |
//! | `users`      | login                     | `UserRecord`     |
//! | `tokens`     | hex SHA-256 of the secret | `TokenRecord`    |
//! | `meta`       | marker                    | unix seconds     |
//!
//! Every write is followed by `flush` (fsync) before the call returns; a crate change is a
//! compare-and-swap of its record.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    now_secs, Counts, CrateChange, CrateRecord, Metadata, Snapshot, StoreError, StoreResult, TokenRecord, UserRecord,
};
use crate::config::RegistrySpec;

/// Metadata in sled.
#[derive(Clone)]
pub struct SledMetadata {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    registries: sled::Tree,
    crates: sled::Tree,
    users: sled::Tree,
    tokens: sled::Tree,
    meta: sled::Tree,
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

impl SledMetadata {
    /// Opens (creating) the sled database at `<dir>/db`.
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
            meta: db.open_tree("meta")?,
            db,
        };
        Ok(SledMetadata { inner: Arc::new(inner) })
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

/// The release (version without build metadata) of an index version string.
fn release(vers: &str) -> &str {
    vers.split('+').next().unwrap_or(vers)
}

/// `rec` with `change` applied (the revision bumped by the caller).
fn applied(prior: Option<CrateRecord>, change: &CrateChange) -> StoreResult<CrateRecord> {
    let mut rec = match (prior, change) {
        (Some(rec), _) => rec,
        (None, CrateChange::Publish { name, version, .. }) => CrateRecord {
            name: name.clone(),
            owners: vec![version.published_by.clone()],
            description: None,
            keywords: Vec::new(),
            versions: Vec::new(),
            revision: 0,
        },
        (None, _) => return Err(StoreError::Conflict("the crate does not exist".into())),
    };
    match change {
        CrateChange::Publish {
            version,
            description,
            keywords,
            ..
        } => {
            let new = release(&version.line.vers);
            if rec.versions.iter().any(|v| release(&v.line.vers) == new) {
                return Err(StoreError::Conflict(format!("release {new} exists")));
            }
            if description.is_some() {
                rec.description = description.clone();
            }
            if !keywords.is_empty() {
                rec.keywords = keywords.clone();
            }
            rec.versions.push(version.clone());
        }
        CrateChange::SetYanked { vers, yanked } => {
            let v = rec
                .versions
                .iter_mut()
                .find(|v| v.line.vers == *vers)
                .ok_or_else(|| StoreError::Conflict(format!("no version {vers}")))?;
            v.line.yanked = *yanked;
        }
        CrateChange::SetOwners(owners) => rec.owners = owners.clone(),
    }
    rec.revision += 1;
    Ok(rec)
}

#[async_trait]
impl Metadata for SledMetadata {
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

    async fn crates(&self, registry: &str) -> StoreResult<Vec<CrateRecord>> {
        let prefix = registry_prefix(registry);
        self.run(move |s| all(s.crates.scan_prefix(prefix))).await
    }

    async fn crate_count(&self, registry: &str) -> StoreResult<u64> {
        let prefix = registry_prefix(registry);
        self.run(move |s| Ok(s.crates.scan_prefix(prefix).count() as u64)).await
    }

    async fn change_crate(
        &self,
        registry: &str,
        canonical: &str,
        expected: Option<u64>,
        change: &CrateChange,
    ) -> StoreResult<u64> {
        let key = crate_key(registry, canonical);
        let change = change.clone();
        self.run(move |s| {
            let old = s.crates.get(&key)?;
            let prior: Option<CrateRecord> = old.as_ref().map(|v| decode(v)).transpose()?;
            if prior.as_ref().map(|r| r.revision) != expected {
                return Err(StoreError::Conflict("the crate changed".into()));
            }
            let rec = applied(prior, &change)?;
            let swapped = s.crates.compare_and_swap(&key, old, Some(encode(&rec)?))?;
            if swapped.is_err() {
                return Err(StoreError::Conflict("the crate changed".into()));
            }
            s.db.flush()?;
            Ok(rec.revision)
        })
        .await
    }

    async fn referenced_blobs(&self) -> StoreResult<HashSet<String>> {
        self.run(|s| {
            let crates: Vec<CrateRecord> = all(s.crates.iter())?;
            Ok(crates
                .into_iter()
                .flat_map(|c| c.versions.into_iter().map(|v| v.line.cksum))
                .collect())
        })
        .await
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
            let swapped = s
                .tokens
                .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(value))?;
            if swapped.is_err() {
                return Err(StoreError::Conflict("a token with this secret exists".into()));
            }
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

    async fn snapshot(&self) -> StoreResult<Snapshot> {
        self.run(|s| {
            let mut crates = Vec::new();
            for kv in s.crates.iter() {
                let (k, v) = kv?;
                let registry = k
                    .split(|b| *b == 0)
                    .next()
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .unwrap_or_default();
                crates.push((registry, decode::<CrateRecord>(&v)?));
            }
            Ok(Snapshot {
                registries: all(s.registries.iter())?,
                crates,
                users: all(s.users.iter())?,
                tokens: all(s.tokens.iter())?,
            })
        })
        .await
    }

    async fn import(&self, snapshot: &Snapshot, marker: &str) -> StoreResult<bool> {
        let snapshot = snapshot.clone();
        let marker = marker.to_owned();
        self.run(move |s| {
            if s.meta.contains_key(marker.as_bytes())? {
                return Ok(false);
            }
            for (what, tree) in [
                ("registries", &s.registries),
                ("crates", &s.crates),
                ("users", &s.users),
                ("tokens", &s.tokens),
            ] {
                if !tree.is_empty() {
                    return Err(StoreError::Conflict(format!(
                        "an import needs an empty store, and this one has {what}"
                    )));
                }
            }
            for spec in &snapshot.registries {
                s.registries.insert(spec.name.as_bytes(), encode(spec)?)?;
            }
            for u in &snapshot.users {
                s.users.insert(u.login.as_bytes(), encode(u)?)?;
            }
            for t in &snapshot.tokens {
                s.tokens.insert(t.hash.as_bytes(), encode(t)?)?;
            }
            for (registry, rec) in &snapshot.crates {
                let canonical = crate::index::canonical_name(&rec.name);
                s.crates.insert(crate_key(registry, &canonical), encode(rec)?)?;
            }
            s.meta.insert(marker.as_bytes(), now_secs().to_be_bytes().to_vec())?;
            s.db.flush()?;
            Ok(true)
        })
        .await
    }

    async fn counts(&self) -> StoreResult<Counts> {
        Ok(self.snapshot().await?.counts())
    }

    async fn check(&self) -> StoreResult<()> {
        self.run(|s| {
            s.db.insert(b"readyz", now_secs().to_be_bytes().to_vec())?;
            Ok(())
        })
        .await
    }

    async fn close(&self) -> StoreResult<()> {
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

    #[tokio::test]
    async fn sled_metadata_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SledMetadata::open(dir.path()).unwrap();
        crate::store::conformance::metadata(&meta).await;
    }

    #[tokio::test]
    async fn the_legacy_store_refuses_advisories_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SledMetadata::open(dir.path()).unwrap();
        assert_eq!(meta.advisories().await.unwrap(), Default::default());
        let e = meta.replace_advisories(&Default::default()).await.unwrap_err();
        assert!(e.to_string().contains("keeps no security advisories"), "{e}");
    }

    #[tokio::test]
    async fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledMetadata::open(dir.path()).unwrap();
            crate::store::conformance::publish_one(&s, "local", "Foo", "1.0.0").await;
        }
        let s = SledMetadata::open(dir.path()).unwrap();
        assert_eq!(s.get_crate("local", "foo").await.unwrap().unwrap().name, "Foo");
    }
}
