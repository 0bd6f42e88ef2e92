//! Caches of upstream content. Index files: memory (moka, bounded in bytes) over disk (a
//! disposable sled database). Crate files: content-addressed files on disk, filled by one
//! streamed download at a time per file, committed only when the SHA-256 matches, evicted
//! least-recently-used beyond a byte budget. Every lookup says what happened ([`CacheStatus`]).
//! Imports nothing but `index` (leaf) — upstream fetching is the caller's business.

pub mod crate_files;
pub mod freshness;
pub mod index_cache;
pub mod quarantine;
pub mod single_flight;

/// The hasher of the memory caches and per-request maps: seeded per process (so crate names
/// from requests cannot be chosen to collide) and several times cheaper than SipHash on the short
/// keys looked up on every request.
pub type FastHasher = foldhash::fast::RandomState;

/// A bounded in-memory cache (moka) with [`FastHasher`].
pub type MemCache<K, V> = moka::sync::Cache<K, V, FastHasher>;

/// A hash map looked up on every request, with [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastHasher>;

/// The key of a registry's entry for `name` in the memory caches: `{registry}\0{name}`.
pub fn registry_key(registry: &str, name: &str) -> String {
    let mut k = String::with_capacity(registry.len() + 1 + name.len());
    k.push_str(registry);
    k.push('\0');
    k.push_str(name);
    k
}

/// What a cache lookup did; sent as `x-cache` and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from cache, fresh.
    Hit,
    /// Fetched from upstream.
    Miss,
    /// Expired, checked with the upstream, unchanged.
    Revalidated,
    /// Expired and the upstream failed: served the old copy.
    Stale,
    /// Not cached content (hosted crates).
    Bypass,
}

impl CacheStatus {
    /// The `x-cache` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// Current unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
