//! Reads: index files (local files rendered from the store and cached in memory, merged
//! views, upstream files), downloads (`reads/download.rs`) and search (`reads/search.rs`).
//! [`Reads`] owns the read caches; the change side calls [`Reads::invalidate`] after each
//! commit, so a read after a write's 200 always shows the write.

mod browse;
mod download;
mod search;
#[cfg(test)]
mod visibility_tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

pub use browse::{CrateView, VersionView};
pub use download::Download;
pub use search::MAX_QUERY_LEN;

use super::catalog::Catalog;
use super::error::{RegistryError, RegistryResult};
use super::merge;
use crate::cache::index_cache::IndexEntry;
use crate::cache::{registry_key as cache_key, CacheStatus, FastHasher, MemCache};
use crate::config::{RegistryKind, RegistrySpec, Shadow};
use crate::index::etag::strong_etag;
use crate::index::gzip::{GzipCell, GZIP_OFFLOAD_BYTES};
use crate::index::line::render_file;
use crate::index::name::is_lookup_name;
use crate::index::{canonical_name, IndexLine};
use crate::store::{Blobs, CrateRecord, Metadata};
use crate::upstream::UpstreamError;

/// What the upstreams of a hosted registry say about a crate name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamPresence {
    /// This upstream has it.
    Found(String),
    /// No upstream has it (as far as each said, or its cache remembers).
    Absent,
    /// No upstream has it among those that answered; these could not be asked and have
    /// nothing cached for the name (upstream name, error).
    Unknown(Vec<(String, String)>),
}

/// Whether an upstream failure is an outage (the upstream could not be reached or did not
/// answer in time), as opposed to an answer: busy (503), refused, invalid, untrusted.
fn upstream_unreachable(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::Upstream(UpstreamError::Connect { .. } | UpstreamError::Timeout { .. })
    )
}

/// A rendered index file with its strong ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub body: Bytes,
    pub etag: String,
    /// The gzip of `body`, computed on first use.
    pub gzip: GzipCell,
}

impl IndexFile {
    /// Renders `lines` and computes the ETag.
    pub fn render<'a>(lines: impl IntoIterator<Item = &'a IndexLine>) -> Self {
        let body = Bytes::from(render_file(lines));
        let etag = strong_etag(&body);
        IndexFile {
            body,
            etag,
            gzip: GzipCell::default(),
        }
    }
}

/// The bytes of an index answer: a local (rendered or merged) file or an upstream entry.
#[derive(Debug, Clone)]
pub enum IndexBody {
    Local(Arc<IndexFile>),
    Upstream(Arc<IndexEntry>),
}

impl IndexBody {
    /// The file.
    pub fn body(&self) -> &Bytes {
        match self {
            IndexBody::Local(f) => &f.body,
            IndexBody::Upstream(e) => &e.body,
        }
    }

    /// Its strong ETag.
    pub fn etag(&self) -> &str {
        match self {
            IndexBody::Local(f) => &f.etag,
            IndexBody::Upstream(e) => &e.etag,
        }
    }

    /// The gzip of the file, computed once per cached file.
    pub fn gzip(&self) -> &Bytes {
        match self {
            IndexBody::Local(f) => f.gzip.get(&f.body),
            IndexBody::Upstream(e) => e.gzip.get(&e.body),
        }
    }

    /// Computes the gzip of a large file on the blocking pool (once), so that
    /// [`gzip`](Self::gzip) then costs nothing on the edge worker.
    pub async fn prepare_gzip(&self) {
        let ready = match self {
            IndexBody::Local(f) => f.gzip.is_ready(),
            IndexBody::Upstream(e) => e.gzip.is_ready(),
        };
        if ready || self.body().len() < GZIP_OFFLOAD_BYTES {
            return;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            this.gzip();
        })
        .await;
    }
}

/// An index answer: the file (`None` = 404) and what the cache did.
#[derive(Debug, Clone)]
pub struct IndexAnswer {
    pub file: Option<IndexBody>,
    pub status: CacheStatus,
}

/// A merged (`shadow = "version"`) file and the two ETags it was built from.
struct MergedFile {
    local_etag: String,
    upstream_etag: String,
    file: Arc<IndexFile>,
}

/// The read side of the registries, with its caches.
pub struct Reads {
    catalog: Arc<Catalog>,
    meta: Arc<dyn Metadata>,
    blobs: Arc<dyn Blobs>,
    /// Crate files in memory by SHA-256 (hosted blobs and proxied files alike).
    crate_bytes: MemCache<String, Bytes>,
    /// Rendered local index files by `{registry}\0{lowercase name}`; `None` caches a 404.
    index_cache: MemCache<String, Option<Arc<IndexFile>>>,
    /// Bumped by every invalidation of `index_cache`, after the store was changed. A reader
    /// that rendered a file from the store drops its own insert when a change raced it, so a
    /// copy read before a publish can never be put back after the publish's invalidation.
    index_writes: AtomicU64,
    /// Results of `shadow = "version"` merges.
    merged: MemCache<String, Arc<MergedFile>>,
    /// `{registry}\0{lowercase name}\0{version}` -> cksum of hosted versions (immutable once
    /// published; cleared when registries change).
    hosted_cksums: MemCache<String, String>,
    /// Local crates as their web page shows them, by `{registry}\0{canonical name}`: a page
    /// view costs no store read. Invalidated with the rendered index files (same counter).
    views: MemCache<String, Arc<browse::CrateView>>,
}

impl Reads {
    /// The read side over `catalog` and the private store; rendered and merged files take up
    /// to an eighth of `memory_bytes` each.
    pub fn new(
        catalog: Arc<Catalog>,
        meta: Arc<dyn Metadata>,
        blobs: Arc<dyn Blobs>,
        crate_bytes: MemCache<String, Bytes>,
        memory_bytes: u64,
    ) -> Self {
        Reads {
            catalog,
            meta,
            blobs,
            crate_bytes,
            index_cache: moka::sync::Cache::builder()
                .max_capacity((memory_bytes / 8).max(1 << 20))
                .weigher(|k: &String, v: &Option<Arc<IndexFile>>| {
                    let n = k.len() + v.as_ref().map_or(0, |f| f.body.len() + f.etag.len()) + 64;
                    u32::try_from(n).unwrap_or(u32::MAX)
                })
                .build_with_hasher(FastHasher::default()),
            index_writes: AtomicU64::new(0),
            hosted_cksums: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .build_with_hasher(FastHasher::default()),
            views: moka::sync::Cache::builder()
                .max_capacity((memory_bytes / 16).max(1 << 20))
                .weigher(|k: &String, v: &Arc<browse::CrateView>| {
                    u32::try_from(k.len() + v.weight()).unwrap_or(u32::MAX)
                })
                .build_with_hasher(FastHasher::default()),
            merged: moka::sync::Cache::builder()
                .max_capacity((memory_bytes / 8).max(1 << 20))
                .weigher(|k: &String, v: &Arc<MergedFile>| {
                    u32::try_from(k.len() + v.file.body.len() + 256).unwrap_or(u32::MAX)
                })
                .build_with_hasher(FastHasher::default()),
        }
    }

    /// The index answer for `lower` (a lowercase name) in any kind of registry. A name that is
    /// not a crate name (see [`is_lookup_name`]) is a 404 without any lookup. Proxies with
    /// `prune_index` answer with their pruned file unless `unpruned`.
    pub async fn index_file(&self, reg: &RegistrySpec, lower: &str, unpruned: bool) -> RegistryResult<IndexAnswer> {
        if !is_lookup_name(lower) {
            return Ok(IndexAnswer {
                file: None,
                status: CacheStatus::Bypass,
            });
        }
        if reg.kind == RegistryKind::Proxy {
            let proxy = self.catalog.proxy(&reg.name)?;
            let lookup = if unpruned {
                proxy.index_file(lower).await?
            } else {
                proxy.served_index_file(lower).await?
            };
            let file = (!lookup.entry.not_found).then(|| IndexBody::Upstream(lookup.entry));
            return Ok(IndexAnswer {
                file,
                status: lookup.status,
            });
        }
        let local = self.local_index_file(reg, lower).await?;
        if reg.upstreams.is_empty() || (local.is_some() && reg.shadow == Shadow::Crate) {
            return Ok(IndexAnswer {
                file: local.map(IndexBody::Local),
                status: CacheStatus::Bypass,
            });
        }
        let found = match self.first_upstream_with(reg, lower, unpruned).await {
            Ok(found) => found,
            // The upstreams cannot be reached and have nothing cached: the local crate is
            // served on its own, and a name that is not local is not found here (so `cargo
            // publish` of a new private crate, which first asks for its index file, works
            // during an upstream outage). See docs/OPERATIONS.md. Any other failure (busy,
            // refused, invalid) is answered as such: a 404 would be cached by cargo as a true
            // answer.
            Err(e) if upstream_unreachable(&e) => {
                tracing::warn!(registry = %reg.name, krate.name = lower, error = ?e.to_string(), "upstreams failed; answering from the local crates only");
                return Ok(IndexAnswer {
                    file: local.map(IndexBody::Local),
                    status: CacheStatus::Stale,
                });
            }
            Err(e) => return Err(e),
        };
        let Some((up, status)) = found else {
            return Ok(IndexAnswer {
                file: local.map(IndexBody::Local),
                status: CacheStatus::Bypass,
            });
        };
        let Some(local) = local else {
            return Ok(IndexAnswer {
                file: Some(IndexBody::Upstream(up)),
                status,
            });
        };
        let file = self.merged_file(reg, lower, &local, &up);
        Ok(IndexAnswer {
            file: Some(IndexBody::Local(file)),
            status,
        })
    }

    /// The `shadow = "version"` union of a local and an upstream file, cached by the pair of
    /// ETags it was built from.
    fn merged_file(&self, reg: &RegistrySpec, lower: &str, local: &IndexFile, up: &IndexEntry) -> Arc<IndexFile> {
        let key = cache_key(&reg.name, lower);
        if let Some(m) = self.merged.get(&key) {
            if m.local_etag == local.etag && m.upstream_etag == up.etag {
                return m.file.clone();
            }
        }
        let merged = merge::merge_versions(&local.body, &up.body);
        crate::upstream::garbage::report(&reg.name, lower, &up.etag, merged.skipped, "merge");
        let body = Bytes::from(merged.file);
        let etag = strong_etag(&body);
        let file = Arc::new(IndexFile {
            body,
            etag,
            gzip: GzipCell::default(),
        });
        self.merged.insert(
            key,
            Arc::new(MergedFile {
                local_etag: local.etag.clone(),
                upstream_etag: up.etag.clone(),
                file: file.clone(),
            }),
        );
        file
    }

    /// The first upstream of a hosted registry that has `lower`, with its cache status.
    /// An upstream failure is an error only if no later upstream has the crate.
    async fn first_upstream_with(
        &self,
        reg: &RegistrySpec,
        lower: &str,
        unpruned: bool,
    ) -> RegistryResult<Option<(Arc<IndexEntry>, CacheStatus)>> {
        let mut failure = None;
        for up in &reg.upstreams {
            let Ok(proxy) = self.catalog.proxy(up) else { continue };
            // As the proxy serves it (pruned with `prune_index`), so the merged view offers
            // only what the proxy can deliver too.
            let lookup = if unpruned {
                proxy.index_file(lower).await
            } else {
                proxy.served_index_file(lower).await
            };
            match lookup {
                Ok(l) if !l.entry.not_found => return Ok(Some((l.entry, l.status))),
                Ok(_) => {}
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(None),
        }
    }

    /// Whether an upstream of a hosted registry has a crate named `name`: asked upstream, or
    /// answered from the cache (stale copies and remembered 404s included) when the upstream
    /// cannot be reached. A name no crate can have is absent everywhere. An upstream that
    /// answers with a failure (busy, refused, invalid) is an error, not an unknown.
    pub async fn upstream_presence(&self, reg: &RegistrySpec, name: &str) -> RegistryResult<UpstreamPresence> {
        if !is_lookup_name(name) {
            return Ok(UpstreamPresence::Absent);
        }
        let lower = name.to_ascii_lowercase();
        let mut unknown = Vec::new();
        for up in &reg.upstreams {
            let Ok(proxy) = self.catalog.proxy(up) else { continue };
            match proxy.index_file(&lower).await {
                Ok(l) if !l.entry.not_found => return Ok(UpstreamPresence::Found(up.clone())),
                Ok(_) => {}
                Err(e) => {
                    let e = RegistryError::from(e);
                    if !upstream_unreachable(&e) {
                        return Err(e);
                    }
                    unknown.push((up.clone(), e.to_string()));
                }
            }
        }
        Ok(if unknown.is_empty() {
            UpstreamPresence::Absent
        } else {
            UpstreamPresence::Unknown(unknown)
        })
    }

    /// The local index file of `lower` (a lowercase name) in a hosted registry, or `None`.
    async fn local_index_file(&self, reg: &RegistrySpec, lower: &str) -> RegistryResult<Option<Arc<IndexFile>>> {
        let key = cache_key(&reg.name, lower);
        if let Some(hit) = self.index_cache.get(&key) {
            return Ok(hit);
        }
        let seen = self.index_writes.load(Ordering::SeqCst);
        let file = self
            .meta
            .get_crate(&reg.name, &canonical_name(lower))
            .await?
            .filter(|rec| rec.name.to_ascii_lowercase() == lower && !rec.versions.is_empty())
            .map(|rec| Arc::new(IndexFile::render(rec.versions.iter().map(|v| &v.line))));
        self.index_cache.insert(key.clone(), file.clone());
        // A write that committed after our read bumped the counter before invalidating: if it
        // did so before this check we drop our (possibly old) copy; if after, its own
        // invalidation comes after our insert. Either way no old copy survives the write.
        if self.index_writes.load(Ordering::SeqCst) != seen {
            self.index_cache.invalidate(&key);
        }
        Ok(file)
    }

    /// Forgets the rendered index file of `name` in `registry`. Called after the store change.
    pub fn invalidate(&self, registry: &str, name: &str) {
        self.index_writes.fetch_add(1, Ordering::SeqCst);
        self.index_cache
            .invalidate(&cache_key(registry, &name.to_ascii_lowercase()));
        self.views.invalidate(&cache_key(registry, &canonical_name(name)));
    }

    /// Drops every cached file of a registry (settings changed or registry deleted).
    pub fn invalidate_registry(&self, registry: &str) {
        // Rare (admin changes): dropping everything is simpler than a prefix sweep.
        let _ = registry;
        self.index_writes.fetch_add(1, Ordering::SeqCst);
        self.index_cache.invalidate_all();
        self.hosted_cksums.invalidate_all();
        self.views.invalidate_all();
    }

    /// Loads a crate record by any spelling of its name.
    pub async fn load_crate(&self, registry: &str, name: &str) -> RegistryResult<Option<CrateRecord>> {
        Ok(self.meta.get_crate(registry, &canonical_name(name)).await?)
    }
}
