//! Tiered cache of upstream index files: moka in memory (bounded in bytes) over a disposable
//! sled database on disk. Keys are `{registry}\0{lowercase name}`.
//!
//! Disk entry format (version 1):
//!
//! | bytes | content |
//! |---|---|
//! | 1 | format version (`1`) |
//! | 4 | header length `H`, u32 little-endian |
//! | H | header JSON: `etag`, `upstream_etag`, `upstream_last_modified`, `fetched_at` (unix ms), `not_found` |
//! | rest | the index file, byte for byte as the upstream sent it |
//!
//! Entries of another version are ignored (treated as missing), so the format can change by
//! bumping the version; the whole cache directory may be deleted at any time.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::index::etag::strong_etag;
use crate::index::gzip::GzipCell;

const FORMAT_VERSION: u8 = 1;

/// A cached index file (or a cached 404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The file as the upstream sent it (empty for a 404).
    pub body: Bytes,
    /// Our strong ETag of `body`.
    pub etag: String,
    pub upstream_etag: Option<String>,
    pub upstream_last_modified: Option<String>,
    /// When the upstream last confirmed this content (unix ms).
    pub fetched_at: u64,
    /// The upstream said 404.
    pub not_found: bool,
    /// Memory only: after an upstream failure, serve stale without asking until then (unix ms).
    pub stale_until: u64,
    /// Memory only: the gzip of `body`, computed on first use.
    pub gzip: GzipCell,
}

#[derive(Serialize, Deserialize)]
struct Header {
    etag: String,
    upstream_etag: Option<String>,
    upstream_last_modified: Option<String>,
    fetched_at: u64,
    not_found: bool,
}

impl IndexEntry {
    /// An entry for a body the upstream sent.
    pub fn found(body: Bytes, upstream_etag: Option<String>, upstream_last_modified: Option<String>, now: u64) -> Self {
        let etag = strong_etag(&body);
        IndexEntry {
            body,
            etag,
            upstream_etag,
            upstream_last_modified,
            fetched_at: now,
            not_found: false,
            stale_until: 0,
            gzip: GzipCell::default(),
        }
    }

    /// An entry remembering an upstream 404.
    pub fn not_found(now: u64) -> Self {
        IndexEntry {
            body: Bytes::new(),
            etag: String::new(),
            upstream_etag: None,
            upstream_last_modified: None,
            fetched_at: now,
            not_found: true,
            stale_until: 0,
            gzip: GzipCell::default(),
        }
    }

    /// Serialises to the disk format.
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&Header {
            etag: self.etag.clone(),
            upstream_etag: self.upstream_etag.clone(),
            upstream_last_modified: self.upstream_last_modified.clone(),
            fetched_at: self.fetched_at,
            not_found: self.not_found,
        })
        .unwrap_or_default();
        let mut out = Vec::with_capacity(5 + header.len() + self.body.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        out
    }

    /// Parses the disk format; `None` for another version or damaged bytes.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.first() != Some(&FORMAT_VERSION) || bytes.len() < 5 {
            return None;
        }
        let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let header: Header = serde_json::from_slice(bytes.get(5..5 + len)?).ok()?;
        let body = Bytes::copy_from_slice(bytes.get(5 + len..)?);
        Some(IndexEntry {
            body,
            etag: header.etag,
            upstream_etag: header.upstream_etag,
            upstream_last_modified: header.upstream_last_modified,
            fetched_at: header.fetched_at,
            not_found: header.not_found,
            stale_until: 0,
            gzip: GzipCell::default(),
        })
    }
}

/// Cache failures (disk only; memory cannot fail).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cache storage failed: {0}")]
pub struct CacheError(pub String);

/// The two tiers.
#[derive(Clone)]
pub struct IndexCache {
    memory: super::MemCache<String, Arc<IndexEntry>>,
    tree: sled::Tree,
    /// Background disk writes not finished yet (flush waits for them).
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

use super::registry_key as key;

impl IndexCache {
    /// Opens the disk tier in `dir` with a memory tier of `memory_bytes`.
    pub fn open(dir: &Path, memory_bytes: u64) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(|e| CacheError(e.to_string()))?;
        let db = sled::Config::new()
            .path(dir.join("index-db"))
            .cache_capacity(64 << 20)
            .open()
            .map_err(|e| CacheError(format!("cannot open the index cache in {}: {e}", dir.display())))?;
        let tree = db.open_tree("index").map_err(|e| CacheError(e.to_string()))?;
        let memory = moka::sync::Cache::builder()
            .max_capacity(memory_bytes.max(1 << 20))
            .weigher(|k: &String, v: &Arc<IndexEntry>| u32::try_from(k.len() + v.body.len() + 256).unwrap_or(u32::MAX))
            .support_invalidation_closures()
            .build_with_hasher(super::FastHasher::default());
        Ok(IndexCache {
            memory,
            tree,
            pending: Arc::default(),
        })
    }

    /// Memory tier only (the hot path).
    pub fn memory_get(&self, registry: &str, name: &str) -> Option<Arc<IndexEntry>> {
        self.memory.get(&key(registry, name))
    }

    /// Disk tier; a hit is copied into memory.
    pub async fn disk_get(&self, registry: &str, name: &str) -> Option<Arc<IndexEntry>> {
        let k = key(registry, name);
        let tree = self.tree.clone();
        let k2 = k.clone();
        let bytes = tokio::task::spawn_blocking(move || tree.get(k2.as_bytes()).ok().flatten())
            .await
            .ok()
            .flatten()?;
        let entry = Arc::new(IndexEntry::decode(&bytes)?);
        self.memory.insert(k, entry.clone());
        Some(entry)
    }

    /// Memory, then disk.
    pub async fn get(&self, registry: &str, name: &str) -> Option<Arc<IndexEntry>> {
        match self.memory_get(registry, name) {
            Some(e) => Some(e),
            None => self.disk_get(registry, name).await,
        }
    }

    /// Stores in both tiers. The memory tier is updated at once; the disk write happens in
    /// the background, off the response path (the disk tier is a cache: losing a write costs a
    /// refetch, nothing more).
    pub async fn put(&self, registry: &str, name: &str, entry: Arc<IndexEntry>) {
        let k = key(registry, name);
        self.memory.insert(k.clone(), entry.clone());
        let tree = self.tree.clone();
        let (registry, name) = (registry.to_owned(), name.to_owned());
        let pending = self.pending.clone();
        pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::task::spawn_blocking(move || {
            if tree.insert(k.as_bytes(), entry.encode()).is_err() {
                tracing::warn!(registry, name, "could not write an index entry to the disk cache");
            }
            pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }

    /// Stores in memory only (stale back-off marks).
    pub fn put_memory(&self, registry: &str, name: &str, entry: Arc<IndexEntry>) {
        self.memory.insert(key(registry, name), entry);
    }

    /// Names cached for a registry (found ones only), for search.
    pub async fn names(&self, registry: &str) -> Vec<String> {
        let prefix = key(registry, "");
        let tree = self.tree.clone();
        tokio::task::spawn_blocking(move || {
            tree.scan_prefix(prefix.as_bytes())
                .filter_map(Result::ok)
                .filter(|(_, v)| IndexEntry::decode(v).is_some_and(|e| !e.not_found))
                .filter_map(|(k, _)| String::from_utf8(k[prefix.len()..].to_vec()).ok())
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Drops every entry of a registry (it was deleted or its upstream changed).
    pub async fn clear(&self, registry: &str) {
        let prefix = key(registry, "");
        let p2 = prefix.clone();
        let _ = self.memory.invalidate_entries_if(move |k, _| k.starts_with(&p2));
        let tree = self.tree.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for k in tree.scan_prefix(prefix.as_bytes()).keys().filter_map(Result::ok) {
                let _ = tree.remove(k);
            }
        })
        .await;
    }

    /// Waits (briefly) for background writes, then flushes the disk tier (shutdown).
    pub async fn flush(&self) {
        for _ in 0..1000 {
            if self.pending.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let tree = self.tree.clone();
        let _ = tokio::task::spawn_blocking(move || tree.flush()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_format_round_trips() {
        let e = IndexEntry::found(Bytes::from_static(b"{\"a\":1}\n"), Some("\"u\"".into()), None, 42);
        assert_eq!(IndexEntry::decode(&e.encode()), Some(e));
        let n = IndexEntry::not_found(7);
        assert_eq!(IndexEntry::decode(&n.encode()), Some(n));
        assert_eq!(IndexEntry::decode(b"\x02junk"), None);
        assert_eq!(IndexEntry::decode(b""), None);
        assert_eq!(IndexEntry::decode(b"\x01\xff\xff\xff\xff"), None);
    }

    #[tokio::test]
    async fn tiers_backfill_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = IndexCache::open(dir.path(), 1 << 20).unwrap();
            c.put(
                "p",
                "serde",
                Arc::new(IndexEntry::found(Bytes::from_static(b"x\n"), None, None, 1)),
            )
            .await;
            c.put("p", "gone", Arc::new(IndexEntry::not_found(1))).await;
            c.put(
                "q",
                "other",
                Arc::new(IndexEntry::found(Bytes::from_static(b"y\n"), None, None, 1)),
            )
            .await;
            assert!(c.memory_get("p", "serde").is_some());
            c.flush().await;
        }
        let c = IndexCache::open(dir.path(), 1 << 20).unwrap();
        assert!(c.memory_get("p", "serde").is_none());
        assert_eq!(c.get("p", "serde").await.unwrap().body, Bytes::from_static(b"x\n"));
        assert!(c.memory_get("p", "serde").is_some());
        assert_eq!(c.names("p").await, vec!["serde".to_owned()]);
        c.clear("p").await;
        assert!(c.get("p", "serde").await.is_none());
        assert!(c.get("q", "other").await.is_some());
    }
}
