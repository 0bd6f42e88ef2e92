//! A read racing a write must never put an old index file back after the write's
//! invalidation (issue: a version missing from the index after its publish returned 200).
//! Deterministic: the store holds the racing reader between its read and its cache insert.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};

use super::*;
use crate::cache::crate_files::CrateFiles;
use crate::cache::index_cache::IndexCache;
use crate::config::{Limits, RegistryKind};
use crate::registry::{CacheHandles, RegistryService, ServiceSettings};
use crate::store::conformance::publish_one;
use crate::store::sql::SqlMetadata;
use crate::store::{
    blobs::FileBlobs, Counts, CrateChange, Metadata, PrivateStore, Snapshot, StoreResult, TokenRecord, UserRecord,
};

/// Metadata whose `get_crate` can be held after it has read, until released.
struct GatedStore {
    inner: SqlMetadata,
    hold: std::sync::atomic::AtomicBool,
    hold_token: std::sync::atomic::AtomicBool,
    read_done: Notify,
    release: Semaphore,
}

#[async_trait]
impl Metadata for GatedStore {
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
    async fn crates(&self, registry: &str) -> StoreResult<Vec<CrateRecord>> {
        self.inner.crates(registry).await
    }
    async fn crate_count(&self, registry: &str) -> StoreResult<u64> {
        self.inner.crate_count(registry).await
    }
    async fn change_crate(
        &self,
        registry: &str,
        canonical: &str,
        expected: Option<u64>,
        change: &CrateChange,
    ) -> StoreResult<u64> {
        self.inner.change_crate(registry, canonical, expected, change).await
    }
    async fn referenced_blobs(&self) -> StoreResult<HashSet<String>> {
        self.inner.referenced_blobs().await
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
        let t = self.inner.token_by_hash(hash).await;
        if self.hold_token.swap(false, Ordering::SeqCst) {
            self.read_done.notify_one();
            let _permit = self.release.acquire().await;
        }
        t
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
    async fn snapshot(&self) -> StoreResult<Snapshot> {
        self.inner.snapshot().await
    }
    async fn import(&self, snapshot: &Snapshot, marker: &str) -> StoreResult<bool> {
        self.inner.import(snapshot, marker).await
    }
    async fn counts(&self) -> StoreResult<Counts> {
        self.inner.counts().await
    }
    async fn check(&self) -> StoreResult<()> {
        self.inner.check().await
    }
    async fn close(&self) -> StoreResult<()> {
        self.inner.close().await
    }
}

/// A gated store in `dir` with a hosted registry `local`, nothing held.
async fn gated_store(dir: &std::path::Path) -> Arc<GatedStore> {
    let store = Arc::new(GatedStore {
        inner: SqlMetadata::open_sqlite(&dir.join("registry.db")).await.unwrap(),
        hold: false.into(),
        hold_token: false.into(),
        read_done: Notify::new(),
        release: Semaphore::new(0),
    });
    store
        .put_registry(&RegistrySpec::new("local", RegistryKind::Hosted))
        .await
        .unwrap();
    store
}

/// A registry service over `store`, with its caches and blobs under `dir`.
async fn service(store: &Arc<GatedStore>, dir: &std::path::Path) -> Arc<RegistryService> {
    let cache_dir = dir.join("cache");
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
        RegistryService::new(
            PrivateStore {
                meta: store.clone(),
                blobs: Arc::new(FileBlobs::open(dir.join("blobs")).unwrap()),
            },
            caches,
            settings,
        )
        .await
        .unwrap(),
    );
    svc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_write_cannot_put_back_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = gated_store(dir.path()).await;
    publish_one(store.as_ref(), "local", "foo", "1.0.0").await;
    let svc = service(&store, dir.path()).await;
    let reg = svc.registry("local").unwrap();

    // A reader reads 1.0.0 from the store and is held before it caches what it rendered.
    store.hold.store(true, Ordering::SeqCst);
    let reader = {
        let (svc, reg) = (svc.clone(), reg.clone());
        tokio::spawn(async move { svc.reads.local_index_file(&reg, "foo").await })
    };
    store.read_done.notified().await;

    // Meanwhile a publish commits 1.1.0 and invalidates, as `publish` does before its 200.
    publish_one(store.as_ref(), "local", "foo", "1.1.0").await;
    svc.reads.invalidate("local", "foo");

    // The held reader finishes (its own answer may be the old file: it started before the 200).
    store.release.add_permits(1);
    reader.await.unwrap().unwrap();

    // Every read after the write's return shows it.
    let after = svc.reads.local_index_file(&reg, "foo").await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&after.body);
    assert!(
        text.contains("\"1.1.0\""),
        "the index lost the published version: {text}"
    );
}

/// The same race for the web interface's cached crate views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_read_racing_a_write_cannot_put_back_the_old_view() {
    let dir = tempfile::tempdir().unwrap();
    let store = gated_store(dir.path()).await;
    publish_one(store.as_ref(), "local", "foo", "1.0.0").await;
    let svc = service(&store, dir.path()).await;
    let reg = svc.registry("local").unwrap();

    store.hold.store(true, Ordering::SeqCst);
    let reader = {
        let (svc, reg) = (svc.clone(), reg.clone());
        tokio::spawn(async move { svc.reads.crate_view(&reg, "foo").await })
    };
    store.read_done.notified().await;
    publish_one(store.as_ref(), "local", "foo", "1.1.0").await;
    svc.reads.invalidate("local", "foo");
    store.release.add_permits(1);
    reader.await.unwrap().unwrap();

    let after = svc.reads.crate_view(&reg, "foo").await.unwrap().unwrap();
    let versions: Vec<&str> = after.versions.iter().map(|v| v.line.vers.as_str()).collect();
    assert_eq!(versions, ["1.1.0", "1.0.0"], "the page lost the published version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_once_the_revoke_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = gated_store(dir.path()).await;
    let secret = "chd_revokedrevokedrevokedrevokedrevoked12";
    store
        .put_token(&TokenRecord {
            id: "tok1".into(),
            hash: crate::registry::auth::hash_token(secret),
            user: "alice".into(),
            name: "t".into(),
            scopes: vec!["read".into(), "publish".into()],
            registries: None,
            expires: None,
            created: 0,
        })
        .await
        .unwrap();
    let svc = service(&store, dir.path()).await;
    // A request authenticates: it has read the token from the store, not yet cached it.
    store.hold_token.store(true, Ordering::SeqCst);
    let req = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.authenticate(Some("local"), Some(secret)).await })
    };
    store.read_done.notified().await;
    // The admin revokes the token; the revoke returns.
    svc.revoke_token("tok1").await.unwrap();
    store.release.add_permits(1);
    let _ = req.await.unwrap();
    // Any request after the revoke's 200 must be refused.
    let after = svc.authenticate(Some("local"), Some(secret)).await;
    assert!(
        after.is_err(),
        "revoked token accepted after revoke returned: {after:?}"
    );
}
