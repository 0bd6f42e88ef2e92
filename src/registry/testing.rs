//! A [`RegistryService`] for unit tests, over any store, with small caches and blobs in a
//! directory of its own (one per node when a test stands several nodes on one store).

use std::path::Path;
use std::sync::Arc;

use super::{CacheHandles, RegistryService, ServiceSettings};
use crate::cache::crate_files::CrateFiles;
use crate::cache::index_cache::IndexCache;
use crate::config::Limits;
use crate::store::{blobs::FileBlobs, Metadata, PrivateStore};

/// A service over `meta` with its caches and blobs under `dir`, and maybe
/// `CARGOHOLD_ADMIN_TOKEN`'s hash.
pub async fn service(meta: Arc<dyn Metadata>, dir: &Path, env_admin_hash: Option<String>) -> Arc<RegistryService> {
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
        env_admin_hash,
    };
    let store = PrivateStore {
        meta,
        blobs: Arc::new(FileBlobs::open(dir.join("blobs")).unwrap()),
    };
    Arc::new(RegistryService::new(store, caches, settings).await.unwrap())
}
