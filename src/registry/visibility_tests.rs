//! A read racing a write must never put an old index file back after the write's
//! invalidation (issue: a version missing from the index after its publish returned 200).
//! Deterministic: the store holds the racing reader between its read and its cache insert.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};

use super::*;
use crate::config::RegistryKind;
use crate::index::line::IndexLine;
use crate::store::sled::SledStore;
use crate::store::{StoreResult, TokenRecord, UserRecord, VersionRecord};

/// A store whose `get_crate` can be held after it has read, until released.
struct GatedStore {
    inner: SledStore,
    hold: std::sync::atomic::AtomicBool,
    read_done: Notify,
    release: Semaphore,
}

#[async_trait]
impl Store for GatedStore {
    async fn registries(&self) -> StoreResult<Vec<RegistrySpec>> {
        self.inner.registries().await
    }
    async fn put_registry(&self, spec: &RegistrySpec) -> StoreResult<()> {
        self.inner.put_registry(spec).await
    }
    async fn delete_registry(&self, name: &str) -> StoreResult<()> {
        self.inner.delete_registry(name).await
    }
    async fn get_crate(&self, registry: &str, canonical: &str) -> StoreResult<Option<CrateRecord>> {
        let rec = self.inner.get_crate(registry, canonical).await;
        if self.hold.swap(false, Ordering::SeqCst) {
            self.read_done.notify_one();
            let _permit = self.release.acquire().await;
        }
        rec
    }
    async fn put_crate(&self, registry: &str, canonical: &str, record: &CrateRecord) -> StoreResult<()> {
        self.inner.put_crate(registry, canonical, record).await
    }
    async fn crates(&self, registry: &str) -> StoreResult<Vec<CrateRecord>> {
        self.inner.crates(registry).await
    }
    async fn put_blob(&self, bytes: Bytes) -> StoreResult<String> {
        self.inner.put_blob(bytes).await
    }
    async fn blob_path(&self, sha256: &str) -> StoreResult<Option<PathBuf>> {
        self.inner.blob_path(sha256).await
    }
    async fn get_user(&self, login: &str) -> StoreResult<Option<UserRecord>> {
        self.inner.get_user(login).await
    }
    async fn create_user(&self, login: &str, name: Option<String>) -> StoreResult<Option<UserRecord>> {
        self.inner.create_user(login, name).await
    }
    async fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.inner.users().await
    }
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.inner.token_by_hash(hash).await
    }
    async fn put_token(&self, token: &TokenRecord) -> StoreResult<()> {
        self.inner.put_token(token).await
    }
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.inner.tokens().await
    }
    async fn delete_token(&self, id: &str) -> StoreResult<bool> {
        self.inner.delete_token(id).await
    }
    async fn check(&self) -> StoreResult<()> {
        self.inner.check().await
    }
    async fn flush(&self) -> StoreResult<()> {
        self.inner.flush().await
    }
}

fn line(vers: &str) -> VersionRecord {
    VersionRecord {
        line: IndexLine {
            name: "foo".into(),
            vers: vers.into(),
            deps: Vec::new(),
            cksum: "0".repeat(64),
            features: Default::default(),
            yanked: false,
            links: None,
            v: 2,
            rust_version: None,
            pubtime: None,
        },
        published_by: "alice".into(),
    }
}

fn record(versions: &[&str]) -> CrateRecord {
    CrateRecord {
        name: "foo".into(),
        owners: vec!["alice".into()],
        description: None,
        keywords: Vec::new(),
        versions: versions.iter().map(|v| line(v)).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_write_cannot_put_back_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(GatedStore {
        inner: SledStore::open(&dir.path().join("store")).unwrap(),
        hold: false.into(),
        read_done: Notify::new(),
        release: Semaphore::new(0),
    });
    store
        .put_registry(&RegistrySpec::new("local", RegistryKind::Hosted))
        .await
        .unwrap();
    store.put_crate("local", "foo", &record(&["1.0.0"])).await.unwrap();
    let cache_dir = dir.path().join("cache");
    let caches = CacheHandles {
        index: IndexCache::open(&cache_dir, 1 << 20, 1 << 30).unwrap(),
        crates: CrateFiles::open(&cache_dir.join("crates"), 1 << 20).unwrap(),
        crate_bytes: CacheHandles::crate_memory(1 << 20),
    };
    let settings = ServiceSettings {
        public_url: "http://127.0.0.1:1".into(),
        limits: Limits::default(),
        memory_bytes: 8 << 20,
        env_admin_hash: None,
    };
    let svc = Arc::new(
        RegistryService::new(store.clone() as Arc<dyn Store>, caches, settings)
            .await
            .unwrap(),
    );
    let reg = svc.registry("local").unwrap();

    // A reader reads 1.0.0 from the store and is held before it caches what it rendered.
    store.hold.store(true, Ordering::SeqCst);
    let reader = {
        let (svc, reg) = (svc.clone(), reg.clone());
        tokio::spawn(async move { svc.local_index_file(&reg, "foo").await })
    };
    store.read_done.notified().await;

    // Meanwhile a publish commits 1.1.0 and invalidates, as `publish` does before its 200.
    store
        .put_crate("local", "foo", &record(&["1.0.0", "1.1.0"]))
        .await
        .unwrap();
    svc.invalidate("local", "foo");

    // The held reader finishes (its own answer may be the old file: it started before the 200).
    store.release.add_permits(1);
    reader.await.unwrap().unwrap();

    // Every read after the write's return shows it.
    let after = svc.local_index_file(&reg, "foo").await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&after.body);
    assert!(
        text.contains("\"1.1.0\""),
        "the index lost the published version: {text}"
    );
}
