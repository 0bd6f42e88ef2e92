//! `CachedUpstream`: one proxy registry's view of its upstream through the caches.
//!
//! Index files: memory -> disk -> (single-flight) conditional fetch. Fresh for `index_ttl`
//! (404s for `negative_ttl`), then revalidated with the upstream's validators (or refetched and
//! compared by hash when it sent none). When the upstream fails, the stale copy is served and
//! the upstream is left alone for [`STALE_BACKOFF_MS`] (for that file; for every expired file
//! when it could not be reached at all or timed out). `offline` never contacts the upstream.
//!
//! Takedowns: when a revalidation finds the crate gone upstream (404) or some of its version
//! lines removed, those versions are [`Removal`]s: their checksum memo entries are dropped,
//! their cached `.crate` files quarantined (`cache::quarantine`), and each is handed to the
//! registry layer's [`RemovalSink`] (log, metric, webhook event). Only a definite answer
//! counts: an error, a timeout, a 5xx, a 304, a body with an unusable line, or a 200 with no
//! usable line at all (served stale, as for an upstream error) never removes anything. The
//! memo lives at most `index_ttl`, so a download after that goes through the revalidated file.
//! A revalidation whose file (new, or confirmed by a 304) lists a quarantined version with the
//! same checksum undoes its removal (`relist`): the file goes back into the cache once no
//! registry's removal names it.
//!
//! Crate files: looked up by the index `cksum`; a miss starts one streamed, verified fill
//! (see `cache::crate_files`) driven by a spawned task, so it completes and is cached even if
//! the client that caused it goes away.
//!
//! Upstream traffic is capped per proxy: at most `upstream_concurrency` index fetches and
//! crate transfers at once ([`UpstreamGate`]). Up to [`QUEUE_PER_SLOT`] times as many wait, each
//! at most [`QUEUE_WAIT`]; beyond that the request fails with [`UpstreamError::Busy`] (503 with
//! `Retry-After`), or an expired cached copy is served stale. Coalesced requests (one flight
//! per index file, one fill per crate file) take one slot between them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use semver::Version;

use super::classify::{redact, Fault, Fetched, UpstreamError};
use super::client::{UpstreamClient, UpstreamSettings};
use super::expand_dl;
use crate::cache::crate_files::{CrateFiles, CrateLookup, FillFailure, FillReader, FillWriter};
use crate::cache::freshness::{freshness, Freshness};
use crate::cache::index_cache::{IndexCache, IndexEntry};
use crate::cache::quarantine::{now_secs, QuarantinedVersion};
use crate::cache::single_flight::{FlightError, SingleFlight};
use crate::cache::{now_ms, CacheStatus, FastHasher, MemCache};
use crate::index::index_path;
use crate::index::line::{line_key, lines};
use crate::index::name::{is_lookup_name, validate_version};

/// How long the upstream is left alone after it failed for a file (stale copies are served).
pub const STALE_BACKOFF_MS: u64 = 10_000;

/// Default of `upstream_concurrency`: upstream requests of one proxy in flight at once.
pub const DEFAULT_UPSTREAM_CONCURRENCY: u32 = 32;
/// Requests that may wait for an upstream slot, per slot.
pub const QUEUE_PER_SLOT: usize = 4;
/// Longest wait for an upstream slot before answering 503.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// The `Retry-After` of a 503 for a full upstream queue.
pub const BUSY_RETRY_AFTER_SECS: u32 = 5;

/// The cap on one proxy's concurrent upstream requests, with a bounded, time-limited queue.
pub struct UpstreamGate {
    registry: String,
    slots: Arc<tokio::sync::Semaphore>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    queue: usize,
    wait: Duration,
}

/// Gives back a queue place when dropped (also when the waiter is cancelled).
struct Waiting(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl UpstreamGate {
    /// `slots` requests at once (at least 1), `queue` waiting at most `wait` each.
    pub fn new(registry: &str, slots: usize, queue: usize, wait: Duration) -> Self {
        UpstreamGate {
            registry: registry.to_owned(),
            slots: Arc::new(tokio::sync::Semaphore::new(slots.max(1))),
            waiting: Arc::default(),
            queue,
            wait,
        }
    }

    fn busy(&self) -> UpstreamError {
        UpstreamError::Busy {
            registry: self.registry.clone(),
            retry_after_secs: BUSY_RETRY_AFTER_SECS,
        }
    }

    /// A slot, after waiting in the queue if need be; `Busy` when the queue is full or the wait
    /// runs out.
    pub async fn enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, UpstreamError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(self.busy());
        }
        let _place = Waiting(self.waiting.clone());
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(self.busy()),
        }
    }

    /// Requests waiting now (for tests).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Settings of one proxy registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    pub registry: String,
    pub upstream_url: String,
    pub index_ttl: Duration,
    pub negative_ttl: Duration,
    /// Connect and read timeout towards the upstream.
    pub timeout: Duration,
    /// Longest time one upstream transfer (index file, `config.json` or `.crate`; all tries,
    /// headers and body) may take.
    pub deadline: Duration,
    /// Largest index file accepted from the upstream.
    pub max_index_bytes: u64,
    /// Largest `.crate` accepted from the upstream.
    pub max_crate_bytes: u64,
    /// Extra root certificates (PEM) trusted for the upstream.
    pub ca_file: Option<std::path::PathBuf>,
    pub offline: bool,
    /// Serve index files cut down to the versions whose `.crate` is cached (see
    /// [`CachedUpstream::served_index_file`]).
    pub prune_index: bool,
    /// Upstream requests in flight at once (index fetches and crate transfers).
    pub upstream_concurrency: usize,
}

/// An index lookup: the entry (maybe a cached 404) and what the cache did.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub entry: Arc<IndexEntry>,
    pub status: CacheStatus,
}

/// Where a proxied download comes from.
pub enum ProxyDownload {
    /// Cached on disk.
    File { path: std::path::PathBuf, len: u64 },
    /// Being fetched; the reader streams it.
    Stream(FillReader),
}

/// Why a version left the upstream index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// The crate's index file is now a 404.
    CrateRemoved,
    /// The file is there but no longer has the version's line.
    VersionRemoved,
}

impl RemovalReason {
    /// `crate_removed` / `version_removed` (metric label, event field, record).
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalReason::CrateRemoved => "crate_removed",
            RemovalReason::VersionRemoved => "version_removed",
        }
    }
}

/// A version a revalidation found removed from the upstream index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub registry: String,
    /// The name as the removed line spelled it.
    pub name: String,
    pub version: String,
    pub cksum: String,
    pub reason: RemovalReason,
    /// The size of its `.crate` if that is now in quarantine (`None`: it was not cached).
    pub quarantined: Option<u64>,
}

/// A quarantined version its upstream lists again with the same checksum: its removal was
/// dropped (see `relist`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relisting {
    pub registry: String,
    pub name: String,
    pub version: String,
    pub cksum: String,
    /// Whether the file is back in the cache (`false`: another registry's removal keeps it
    /// quarantined; this registry gets a copy at its next download).
    pub released: bool,
}

/// What a revalidation found about versions the upstream took down or listed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Removed(Removal),
    Relisted(Relisting),
}

/// Where a proxy reports its [`Finding`]s: set by the registry layer at construction. Called
/// once per removal (or relisting), in the revalidation that found it, after the cache stopped
/// (or started again) serving it.
pub type RemovalSink = Arc<dyn Fn(&Finding) + Send + Sync>;

/// Fills the cache with the quarantined copy at `path` (`len` bytes), through `writer`: the
/// same limits and SHA-256 check as a download from the upstream.
async fn copy_back(mut writer: FillWriter, path: std::path::PathBuf, len: u64) {
    use tokio::io::AsyncReadExt;
    let copied = async {
        let io = |e: std::io::Error| FillFailure::Io(format!("cannot read the quarantined copy: {e}"));
        let mut file = tokio::fs::File::open(&path).await.map_err(io)?;
        writer.headers(Some(len)).await?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                return Ok(());
            }
            writer.write(&buf[..n]).await?;
        }
    }
    .await;
    match copied {
        Ok(()) => {
            if let Err(f) = writer.finish().await {
                tracing::warn!(file = %path.display(), error = %f, "cannot copy a quarantined file back into the cache");
            }
        }
        Err(f) => writer.fail(f),
    }
}

/// `(name, vers, cksum)` of the usable lines of `prior` that `now` no longer lists, compared
/// by version string; `now = None` means the upstream answered 404 (every usable line is
/// removed). `None` when `now` cannot be trusted for that: it has a line this daemon cannot
/// read (a version hidden in garbage is not a removal), or no usable line at all while
/// `prior` had some (a broken upstream sending an empty file must not quarantine everything).
pub fn removed_lines(prior: &[u8], now: Option<&[u8]>) -> Option<Vec<(String, String, String)>> {
    let mut kept = std::collections::HashSet::new();
    if let Some(now) = now {
        for line in lines(now) {
            kept.insert(line_key(line)?.vers.into_owned());
        }
    }
    let mut removed = Vec::new();
    let mut usable = 0;
    for k in lines(prior).filter_map(line_key) {
        usable += 1;
        if !kept.contains(k.vers.as_ref()) {
            removed.push((k.name.into_owned(), k.vers.into_owned(), k.cksum.into_owned()));
        }
    }
    if now.is_some() && kept.is_empty() && usable > 0 {
        return None;
    }
    Some(removed)
}

/// Why a proxied download cannot be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// Finds `(name as published, cksum)` of `version` in an index file: the line whose version
/// string is `version`, else the first whose version is the same semver. Unusable lines (see
/// [`line_key`]) are skipped, so the name returned is always a valid crate name.
pub fn find_cksum(body: &[u8], version: &str) -> Option<(String, String)> {
    find_cksum_counting(body, version).0
}

/// [`find_cksum`], also counting the unusable lines it skipped on the way.
pub fn find_cksum_counting(body: &[u8], version: &str) -> (Option<(String, String)>, usize) {
    let want = Version::parse(version).ok();
    let mut semver_match = None;
    let mut skipped = 0;
    for line in lines(body) {
        let Some(k) = line_key(line) else {
            skipped += 1;
            continue;
        };
        if k.vers == version {
            return (Some((k.name.into_owned(), k.cksum.into_owned())), skipped);
        }
        if semver_match.is_none() && want.as_ref() == Some(&k.version) {
            semver_match = Some((k.name.into_owned(), k.cksum.into_owned()));
        }
    }
    (semver_match, skipped)
}

/// The key of `name@version` in the checksum cache: lowercase name, NUL, version as given.
fn cksum_key(name: &str, version: &str) -> String {
    let mut key = String::with_capacity(name.len() + 1 + version.len());
    key.push_str(name);
    key.make_ascii_lowercase();
    key.push('\0');
    key.push_str(version);
    key
}

/// The error a client sees when a shared fetch failed without an upstream error: generic on
/// purpose (a panic's text goes to the log once, never to clients).
fn flight_failed(e: FlightError) -> UpstreamError {
    UpstreamError::Internal(format!(
        "{e} (internal error; the server log has the details); try again"
    ))
}

/// `body` cut down to those of its usable lines (the ones [`usable_cksums`] lists, in the same
/// order) whose flag in `present` is set: verbatim, each ending in `\n`. Unusable lines are
/// left out (no `.crate` can be found for them).
pub fn prune_file(body: &[u8], present: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    for line in lines(body) {
        if line_key(line).is_none() {
            continue;
        }
        if present.get(i).copied().unwrap_or(false) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        i += 1;
    }
    out
}

/// The checksums of the usable lines of an index file, in order, and how many lines were
/// unusable (left out of a pruned file).
pub fn usable_cksums(body: &[u8]) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    for line in lines(body) {
        match line_key(line) {
            Some(k) => out.push(k.cksum.into_owned()),
            None => skipped += 1,
        }
    }
    (out, skipped)
}

/// A pruned index file and what it was derived from.
struct Pruned {
    /// Our ETag of the verbatim file it was cut from.
    from: String,
    /// The crate cache's generation when `present` was read.
    generation: u64,
    /// Which usable lines of the verbatim file have their `.crate` cached.
    present: Vec<bool>,
    /// The pruned file (`not_found` when no version is cached).
    entry: Arc<IndexEntry>,
}

/// Memory for pruned index files of one proxy (bodies weigh in full).
const PRUNED_CACHE_BYTES: u64 = 64 << 20;

/// A proxy registry's cached upstream.
pub struct CachedUpstream {
    settings: ProxySettings,
    client: UpstreamClient,
    index: IndexCache,
    crates: Arc<CrateFiles>,
    flights: SingleFlight<String, Result<Lookup, UpstreamError>>,
    gate: UpstreamGate,
    cksums: MemCache<String, (String, String)>,
    dl: tokio::sync::RwLock<Option<String>>,
    /// Until when (unix ms) the upstream counts as unreachable after a connection failure or
    /// a timeout: expired index entries are then served stale at once instead of each waiting
    /// out its own retries (a build resolving hundreds of files during an outage).
    unreachable_until: AtomicU64,
    /// `prune_index`: the pruned files by lowercase name (`None` otherwise, so a verbatim
    /// proxy pays nothing for the feature).
    pruned: Option<MemCache<String, Arc<Pruned>>>,
    /// The last [`probe`](Self::probe): when, and what it found.
    probed: std::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
    /// Where removals found by a revalidation are reported (set once by the registry layer).
    removals: std::sync::OnceLock<RemovalSink>,
    /// Replaced by the catalog (see [`retire`](Self::retire)).
    retired: std::sync::atomic::AtomicBool,
}

/// How long a [`CachedUpstream::probe`] result is reused.
pub const PROBE_TTL: Duration = Duration::from_secs(15);
/// How long a probe waits for the upstream.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

impl CachedUpstream {
    /// Builds the proxy over shared cache handles.
    pub fn new(
        settings: ProxySettings,
        index: IndexCache,
        crates: Arc<CrateFiles>,
    ) -> Result<Arc<Self>, UpstreamError> {
        let client = UpstreamClient::new(
            &settings.upstream_url,
            UpstreamSettings {
                connect_timeout: settings.timeout.min(Duration::from_secs(10)),
                read_timeout: settings.timeout,
                deadline: settings.deadline,
                max_index_bytes: settings.max_index_bytes,
                ca_file: settings.ca_file.clone(),
                ..UpstreamSettings::default()
            },
            &settings.registry,
        )?;
        index.keep_negatives_for(settings.negative_ttl);
        let slots = settings.upstream_concurrency.max(1);
        let gate = UpstreamGate::new(&settings.registry, slots, slots * QUEUE_PER_SLOT, QUEUE_WAIT);
        let settings_prune = settings.prune_index;
        // The memo answers downloads without looking at the index file again: it may not
        // outlive the file's freshness, or a version taken down upstream would stay
        // downloadable (an offline proxy never revalidates, so its memo need not expire).
        let mut memo = moka::sync::Cache::builder().max_capacity(100_000);
        if !settings.offline {
            memo = memo.time_to_live(settings.index_ttl);
        }
        Ok(Arc::new(CachedUpstream {
            gate,
            settings,
            client,
            index,
            crates,
            flights: SingleFlight::default(),
            cksums: memo.build_with_hasher(FastHasher::default()),
            dl: tokio::sync::RwLock::new(None),
            unreachable_until: AtomicU64::new(0),
            probed: std::sync::Mutex::new(None),
            removals: std::sync::OnceLock::new(),
            retired: std::sync::atomic::AtomicBool::new(false),
            pruned: settings_prune.then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(PRUNED_CACHE_BYTES)
                    .weigher(|k: &String, v: &Arc<Pruned>| {
                        let n = k.len() + v.entry.body.len() + v.present.len() + 256;
                        u32::try_from(n).unwrap_or(u32::MAX)
                    })
                    .build_with_hasher(FastHasher::default())
            }),
        }))
    }

    /// Sets where removals are reported (the first call wins).
    pub fn set_removal_sink(&self, sink: RemovalSink) {
        let _ = self.removals.set(sink);
    }

    /// Marks this proxy as replaced (its settings changed; the catalog calls this before it
    /// drops the registry's files, see `IndexCache::bind_upstream`). Requests that still hold
    /// it are answered, but what it fetches from then on is not cached, and takes nothing down
    /// and puts nothing back: those files may come from an upstream the registry no longer
    /// proxies, and the new proxy would revalidate them against its own. A fetch that started
    /// before the drop is discarded by the index cache's epoch; one that starts after it sees
    /// this mark.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// The index file of `lower` (a lowercase name). A cached or fresh 404 comes back as an
    /// entry with `not_found`. Errors only when the upstream failed and nothing is cached.
    pub async fn index_file(self: &Arc<Self>, lower: &str) -> Result<Lookup, UpstreamError> {
        let reg = &self.settings.registry;
        let now = now_ms();
        let current = match self.index.memory_get(reg, lower) {
            Some(e) => Some(e),
            None => self.index.disk_get(reg, lower).await,
        };
        if let Some(e) = &current {
            if self.settings.offline {
                return Ok(Lookup {
                    entry: e.clone(),
                    status: CacheStatus::Hit,
                });
            }
            let ttl = if e.not_found {
                self.settings.negative_ttl
            } else {
                self.settings.index_ttl
            };
            match freshness(
                e.fetched_at,
                e.stale_until,
                now,
                u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            ) {
                Freshness::Fresh => {
                    return Ok(Lookup {
                        entry: e.clone(),
                        status: CacheStatus::Hit,
                    })
                }
                Freshness::StaleBackoff => {
                    return Ok(Lookup {
                        entry: e.clone(),
                        status: CacheStatus::Stale,
                    })
                }
                Freshness::Expired if now < self.unreachable_until.load(Ordering::Relaxed) => {
                    return Ok(Lookup {
                        entry: e.clone(),
                        status: CacheStatus::Stale,
                    })
                }
                Freshness::Expired => {}
            }
        } else if self.settings.offline {
            return Ok(Lookup {
                entry: Arc::new(IndexEntry::not_found(now)),
                status: CacheStatus::Bypass,
            });
        }
        let work = || {
            let (this, name, current) = (self.clone(), lower.to_owned(), current.clone());
            move || async move { this.refresh(&name, current).await }
        };
        match self.flights.run(lower.to_owned(), work()).await {
            Ok(result) => result,
            // The leader's task was dropped (its edge worker stopping): one more try, led by us.
            Err(FlightError::Aborted) => self
                .flights
                .run(lower.to_owned(), work())
                .await
                .map_err(flight_failed)?,
            Err(e) => Err(flight_failed(e)),
        }
    }

    /// The index file of `lower` as this proxy serves it: verbatim ([`index_file`](Self::index_file)),
    /// or with `prune_index` cut down to the lines whose `.crate` is in the crate cache, with its
    /// own strong ETag (of the pruned bytes). A file none of whose versions is cached is a 404.
    ///
    /// Pruned files are cached by the verbatim file's ETag and the crate cache's generation
    /// (which moves whenever a `.crate` is committed or evicted). When only the generation moved,
    /// the presence of this file's versions is read again (one lock, no I/O) and, if it is
    /// unchanged, the cached file and its ETag are kept, so clients keep their 304s while
    /// unrelated crates arrive.
    pub async fn served_index_file(self: &Arc<Self>, lower: &str) -> Result<Lookup, UpstreamError> {
        let lookup = self.index_file(lower).await?;
        let Some(pruned) = &self.pruned else {
            return Ok(lookup);
        };
        if lookup.entry.not_found {
            return Ok(lookup);
        }
        let generation = self.crates.generation();
        let cached = pruned.get(lower).filter(|p| p.from == lookup.entry.etag);
        if let Some(p) = cached.as_ref().filter(|p| p.generation == generation) {
            return Ok(Lookup {
                entry: p.entry.clone(),
                status: lookup.status,
            });
        }
        let (cksums, skipped) = usable_cksums(&lookup.entry.body);
        super::garbage::report(
            &self.settings.registry,
            lower,
            &lookup.entry.etag,
            skipped,
            "index pruning",
        );
        let (mut present, generation) = self.crates.contains_all(cksums.iter().map(String::as_str));
        // A file another proxy quarantined is still this one's to serve (copied back at the
        // download): listed, or an offline proxy would lose it from its index.
        if present.contains(&false) && self.crates.has_quarantine() {
            for (p, c) in present.iter_mut().zip(&cksums) {
                *p = *p || self.crates.quarantined_elsewhere(c, &self.settings.registry);
            }
        }
        let entry = match cached.filter(|p| p.present == present) {
            Some(p) => p.entry.clone(),
            None if !present.contains(&true) => Arc::new(IndexEntry::not_found(lookup.entry.fetched_at)),
            None => {
                let body = bytes::Bytes::from(prune_file(&lookup.entry.body, &present));
                let e = &lookup.entry;
                Arc::new(IndexEntry::found(
                    body,
                    e.upstream_etag.clone(),
                    e.upstream_last_modified.clone(),
                    e.fetched_at,
                ))
            }
        };
        pruned.insert(
            lower.to_owned(),
            Arc::new(Pruned {
                from: lookup.entry.etag.clone(),
                generation,
                present,
                entry: entry.clone(),
            }),
        );
        Ok(Lookup {
            entry,
            status: lookup.status,
        })
    }

    async fn refresh(&self, lower: &str, current: Option<Arc<IndexEntry>>) -> Result<Lookup, UpstreamError> {
        let reg = &self.settings.registry;
        // What this fetch brings is not kept if the cache is cleared meanwhile (the registry
        // was deleted or its upstream changed).
        let epoch = self.index.epoch();
        let prior = current.as_ref().filter(|e| !e.not_found);
        let fetched = match self.gate.enter().await {
            Ok(slot) => {
                let fetched = self
                    .client
                    .index_file(
                        &index_path(lower),
                        prior.and_then(|p| p.upstream_etag.as_deref()),
                        prior.and_then(|p| p.upstream_last_modified.as_deref()),
                    )
                    .await;
                drop(slot);
                fetched
            }
            Err(busy) => Err(busy),
        };
        let now = now_ms();
        let mut removed = (Vec::new(), RemovalReason::VersionRemoved);
        let (entry, status) = match fetched {
            Ok(Fetched::Fresh {
                body,
                etag,
                last_modified,
            }) => {
                let e = IndexEntry::found(body, etag, last_modified, now);
                let status = if prior.is_some_and(|p| p.etag == e.etag) {
                    CacheStatus::Revalidated
                } else {
                    CacheStatus::Miss
                };
                if let (Some(p), CacheStatus::Miss) = (prior, status) {
                    match removed_lines(&p.body, Some(&e.body)) {
                        Some(r) => removed = (r, RemovalReason::VersionRemoved),
                        None if lines(&e.body).filter_map(line_key).next().is_none() => {
                            // A file with no usable line replacing one with some: a broken
                            // upstream, not a takedown (that is a 404). Served stale.
                            tracing::warn!(
                                registry = %reg,
                                krate.name = lower,
                                "the upstream sent an index file without a usable line; serving the stale copy"
                            );
                            return Ok(self.serve_stale(lower, p.clone(), epoch, now));
                        }
                        None => tracing::warn!(
                            registry = %reg,
                            krate.name = lower,
                            "the upstream's new index file has unusable lines; versions missing from it are not taken as removed"
                        ),
                    }
                }
                (Arc::new(e), status)
            }
            Ok(Fetched::NotModified) => match prior {
                Some(p) => (
                    Arc::new(IndexEntry {
                        fetched_at: now,
                        stale_until: 0,
                        ..(**p).clone()
                    }),
                    CacheStatus::Revalidated,
                ),
                None => {
                    return Err(UpstreamError::Invalid {
                        url: format!("{}{}", self.client.base(), index_path(lower)),
                        detail: "304 Not Modified to an unconditional request".into(),
                    })
                }
            },
            Ok(Fetched::NotFound) => {
                if let Some(p) = prior {
                    removed = (
                        removed_lines(&p.body, None).unwrap_or_default(),
                        RemovalReason::CrateRemoved,
                    );
                }
                (Arc::new(IndexEntry::not_found(now)), CacheStatus::Miss)
            }
            Err(err) => {
                if matches!(
                    err,
                    UpstreamError::Connect { .. } | UpstreamError::Timeout { .. } | UpstreamError::Untrusted { .. }
                ) {
                    self.unreachable_until
                        .fetch_max(now + STALE_BACKOFF_MS, Ordering::Relaxed);
                }
                let Some(c) = current else { return Err(err) };
                tracing::warn!(registry = %reg, krate.name = lower, error = ?err.to_string(), "upstream failed; serving the stale copy");
                return Ok(self.serve_stale(lower, c, epoch, now));
            }
        };
        if self.is_retired() {
            return Ok(Lookup { entry, status });
        }
        self.index.put_at(reg, lower, entry.clone(), epoch);
        let (removed, reason) = removed;
        if !removed.is_empty() {
            self.take_down(removed, reason).await;
        }
        // The upstream lists (or confirms, with a 304 or the same bytes: the copy this
        // revalidation started from may predate a concurrent one's takedown) what a removal of
        // this registry quarantined. Only files of a crate some removal names are read again.
        if !entry.not_found && self.crates.quarantines_crate(reg, lower) {
            let keys: Vec<_> = lines(&entry.body).filter_map(line_key).collect();
            let back = self.crates.quarantined_lines(
                reg,
                keys.iter()
                    .map(|k| (k.name.as_ref(), k.vers.as_ref(), k.cksum.as_ref())),
            );
            if !back.is_empty() {
                self.relist(back).await;
            }
        }
        Ok(Lookup { entry, status })
    }

    /// The upstream lists again, with the same checksum, versions whose removal quarantined
    /// their file: not a takedown after all (a wrong 404, a line that came back). Each removal
    /// is dropped, and a file no other registry's removal names goes back into the cache.
    async fn relist(&self, back: Vec<(String, String, String)>) {
        let crates = self.crates.clone();
        let reg = self.settings.registry.clone();
        let relisted = tokio::task::spawn_blocking(move || {
            let mut relisted = Vec::new();
            for (name, version, cksum) in back {
                match crates.relisted(&cksum, &reg, &name, &version) {
                    Ok(None) => {}
                    Ok(Some(released)) => {
                        tracing::warn!(
                            registry = %reg,
                            krate.name = %name,
                            krate.version = %version,
                            sha256 = %cksum,
                            released,
                            "the upstream index lists this version again with the same checksum; its removal is dropped and it is served again"
                        );
                        relisted.push(Relisting {
                            registry: reg.clone(),
                            name,
                            version,
                            cksum,
                            released,
                        });
                    }
                    Err(e) => tracing::error!(registry = %reg, krate.name = %name, krate.version = %version, sha256 = %cksum, error = %e, "cannot release a quarantined file the upstream lists again"),
                }
            }
            relisted
        })
        .await
        .unwrap_or_default();
        if let Some(sink) = self.removals.get() {
            for r in relisted {
                sink(&Finding::Relisted(r));
            }
        }
    }

    /// The current copy `c`, marked to be served without asking the upstream for
    /// [`STALE_BACKOFF_MS`].
    fn serve_stale(&self, lower: &str, c: Arc<IndexEntry>, epoch: u64, now: u64) -> Lookup {
        let reg = &self.settings.registry;
        let marked = Arc::new(IndexEntry {
            stale_until: now + STALE_BACKOFF_MS,
            ..(*c).clone()
        });
        if !self.is_retired() {
            self.index.put_memory_at(reg, lower, marked.clone(), epoch);
        }
        Lookup {
            entry: marked,
            status: CacheStatus::Stale,
        }
    }

    /// Stops serving versions the upstream removed (the new index file is in place already):
    /// drops their checksum memo entries, quarantines their cached `.crate` files, and reports
    /// each to the sink.
    async fn take_down(&self, removed: Vec<(String, String, String)>, reason: RemovalReason) {
        let registry = self.settings.registry.clone();
        for (name, version, _) in &removed {
            self.cksums.invalidate(&cksum_key(name, version));
        }
        let crates = self.crates.clone();
        let reg = registry.clone();
        let quarantined = tokio::task::spawn_blocking(move || {
            let at = now_secs();
            removed
                .into_iter()
                .map(|(name, version, cksum)| {
                    let record = QuarantinedVersion {
                        registry: reg.clone(),
                        krate: name.clone(),
                        version: version.clone(),
                        reason: reason.as_str().to_owned(),
                        removed_at: at,
                    };
                    let size = crates.quarantine(&cksum, record).unwrap_or_else(|e| {
                        tracing::error!(registry = %reg, krate.name = %name, krate.version = %version, sha256 = %cksum, error = %e, "cannot quarantine a removed crate file");
                        None
                    });
                    (name, version, cksum, size)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (name, version, cksum, size) in quarantined {
            let removal = Removal {
                registry: registry.clone(),
                name,
                version,
                cksum,
                reason,
                quarantined: size,
            };
            match self.removals.get() {
                Some(sink) => sink(&Finding::Removed(removal)),
                None => {
                    tracing::warn!(registry = %registry, krate.name = %removal.name, krate.version = %removal.version, reason = reason.as_str(), "the upstream index no longer lists this version")
                }
            }
        }
    }

    /// The cached index entry without any upstream traffic (search, merged listings).
    pub async fn cached(&self, lower: &str) -> Option<Arc<IndexEntry>> {
        self.index.get(&self.settings.registry, lower).await
    }

    /// Whether the upstream answers now: its `config.json` fetched within a few seconds
    /// (`Err` says why not). Remembered for [`PROBE_TTL`], so a page view costs at most one
    /// request per proxy that often. An `offline` proxy is never asked.
    pub async fn probe(&self) -> Result<(), String> {
        if self.settings.offline {
            return Err("offline: this proxy never contacts its upstream".into());
        }
        let now = std::time::Instant::now();
        if let Some((at, r)) = self.probed.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            if now.duration_since(at) < PROBE_TTL {
                return r;
            }
        }
        let r = match tokio::time::timeout(PROBE_TIMEOUT, self.client.dl_template()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        };
        *self.probed.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, r.clone()));
        r
    }

    /// Names this proxy has cached.
    pub async fn cached_names(&self) -> Vec<String> {
        self.index.names(&self.settings.registry).await
    }

    /// The checksum of `name@version` if a lookup already found it (memory only; a hit is a
    /// version that passed every check on its way in).
    pub fn cached_cksum(&self, name: &str, version: &str) -> Option<(String, String)> {
        self.cksums.get(&cksum_key(name, version))
    }

    /// Finds the checksum of `name@version` (through the index cache).
    pub async fn locate(self: &Arc<Self>, name: &str, version: &str) -> Result<(String, String), DownloadError> {
        let key = cksum_key(name, version);
        if let Some(hit) = self.cksums.get(&key) {
            return Ok(hit);
        }
        let not_found = || {
            DownloadError::NotFound(format!(
                "crate `{name}` version `{version}` is not in the upstream index"
            ))
        };
        // Checked before anything is cached or asked upstream (the registry layer checks too,
        // with the reason; this keeps the upstream's URLs safe whoever calls).
        if !is_lookup_name(name) || validate_version(version).is_err() {
            return Err(not_found());
        }
        let lower = &key[..name.len()];
        let lookup = self.index_file(lower).await?;
        if lookup.entry.not_found {
            return Err(not_found());
        }
        let (found, skipped) = find_cksum_counting(&lookup.entry.body, version);
        super::garbage::report(
            &self.settings.registry,
            lower,
            &lookup.entry.etag,
            skipped,
            "checksum lookup",
        );
        let found = found.ok_or_else(not_found)?;
        self.cksums.insert(key, found.clone());
        Ok(found)
    }

    /// A download: the cached file, or a streamed fill from upstream.
    pub async fn download(
        self: &Arc<Self>,
        name: &str,
        version: &str,
    ) -> Result<(ProxyDownload, CacheStatus), DownloadError> {
        let (orig, cksum) = self.locate(name, version).await?;
        let offline = self.settings.offline;
        let this = self.clone();
        let version_owned = version.to_owned();
        let lookup = self
            .crates
            .get_or_fill(&cksum, move |writer| {
                // Only when a fill would start (never on a hit): a version this registry's
                // upstream took down is not fetched again by a download that raced the
                // takedown. It comes back when the upstream lists it again with the same
                // checksum (the revalidation that sees it drops the removal, see `relist`) or
                // when an operator releases the quarantined copy. Only those bytes: the same
                // version number listed again with other bytes (a deleted crate's name
                // published anew) was never taken down.
                let reg = &this.settings.registry;
                if this
                    .crates
                    .quarantine_names(writer.sha256(), reg, &orig, &version_owned)
                {
                    let sha = writer.sha256().to_owned();
                    return writer.fail(FillFailure::NotFound(format!(
                        "crate `{orig}` version `{version_owned}` was removed from the upstream index of \
                         registry `{reg}` and its cached copy is quarantined; it is served again when the \
                         upstream lists it again or an administrator runs `cargohold quarantine release {sha}`"
                    )));
                }
                // Bytes another registry's upstream took down, which this one still lists (or,
                // offline, keeps serving): copied back from the quarantine and verified like
                // any fill. An offline proxy keeps what it has even when it shared the file.
                if let Some((held, len)) = this.crates.quarantined_file(writer.sha256()) {
                    tracing::info!(registry = %reg, krate.name = %orig, krate.version = %version_owned, sha256 = writer.sha256(), "copying a file another registry quarantined back into the cache: this registry still lists it");
                    tokio::spawn(copy_back(writer, held, len));
                    return;
                }
                if offline {
                    writer.fail(FillFailure::NotFound("not cached, and the registry is offline".into()));
                } else {
                    tokio::spawn(async move {
                        match this.gate.enter().await {
                            Ok(slot) => {
                                this.transfer(writer, &orig, &version_owned).await;
                                drop(slot);
                            }
                            Err(busy) => writer.fail(FillFailure::Busy(busy.to_string())),
                        }
                    });
                }
            })
            .map_err(|e| DownloadError::NotFound(format!("invalid checksum in the upstream index: {e}")))?;
        Ok(match lookup {
            CrateLookup::Hit { path, len } => (ProxyDownload::File { path, len }, CacheStatus::Hit),
            CrateLookup::Fill(reader) => (ProxyDownload::Stream(reader), CacheStatus::Miss),
        })
    }

    async fn dl_template(&self) -> Result<String, UpstreamError> {
        if let Some(dl) = self.dl.read().await.clone() {
            return Ok(dl);
        }
        let dl = self.client.dl_template().await?;
        *self.dl.write().await = Some(dl.clone());
        Ok(dl)
    }

    /// Drives one fill: the whole transfer (`config.json`, headers, body) runs under the
    /// total deadline; any failure fails the fill, so nothing partial is kept or served whole.
    async fn transfer(&self, mut writer: FillWriter, name: &str, version: &str) {
        writer.set_limit(self.settings.max_crate_bytes);
        let deadline = self.settings.deadline;
        let result = match tokio::time::timeout(deadline, self.fetch_into(&mut writer, name, version)).await {
            Ok(r) => r,
            Err(_) => Err(FillFailure::Timeout(format!(
                "the upstream did not deliver `{name}` {version} within the total deadline of {}s \
                 (`upstream_deadline`); it was not cached",
                deadline.as_secs_f64()
            ))),
        };
        let registry = &self.settings.registry;
        if let Err(f) = result {
            tracing::warn!(registry = %registry, krate.name = name, krate.version = version, error = ?f.to_string(), "crate download failed");
            return writer.fail(f);
        }
        match writer.finish().await {
            Ok(_) => {
                tracing::info!(registry = %registry, krate.name = name, krate.version = version, "crate cached")
            }
            Err(f) => {
                tracing::warn!(registry = %registry, krate.name = name, krate.version = version, error = ?f.to_string(), "crate not cached")
            }
        }
    }

    async fn fetch_into(&self, writer: &mut FillWriter, name: &str, version: &str) -> Result<(), FillFailure> {
        let failure = |e: UpstreamError| match e.fault() {
            Fault::Timeout => FillFailure::Timeout(e.to_string()),
            _ => FillFailure::Upstream(e.to_string()),
        };
        let dl = self.dl_template().await.map_err(failure)?;
        let url = expand_dl(&dl, name, version, writer.sha256()).map_err(|e| FillFailure::Upstream(e.to_string()))?;
        let resp = match self.client.download(&url).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(FillFailure::NotFound(format!(
                    "the upstream has no file at {}",
                    redact(&url)
                )))
            }
            Err(e) => return Err(failure(e)),
        };
        writer.headers(resp.content_length).await?;
        let mut body = resp.response.bytes_stream();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => writer.write(&c).await?,
                Err(e) => {
                    return Err(failure(super::client::map_err(&url, e)));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn cksum_lookup() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let body = format!(
            "{{\"name\":\"Foo\",\"vers\":\"1.0.0\",\"cksum\":\"{a}\",\"deps\":[]}}\n{{\"name\":\"Foo\",\"vers\":\"1.1.0+b\",\"cksum\":\"{b}\"}}\nnot json\n"
        );
        let body = body.as_bytes();
        assert_eq!(find_cksum(body, "1.0.0"), Some(("Foo".into(), a.clone())));
        assert_eq!(find_cksum(body, "1.1.0+b"), Some(("Foo".into(), b)));
        assert_eq!(find_cksum(body, "2.0.0"), None);
        assert_eq!(find_cksum_counting(body, "2.0.0"), (None, 1));
    }

    /// Garbage lines never break the lookup, and never yield a name unfit for a URL.
    #[test]
    fn cksum_lookup_skips_garbage() {
        let c = "c".repeat(64);
        let body = format!(
            "not json\n{{\"name\":\"foo\"}}\n{{\"name\":\"日本語\",\"vers\":\"2.0.0\",\"cksum\":\"{c}\"}}\n\
             {{\"name\":\"../x\",\"vers\":\"3.0.0\",\"cksum\":\"{c}\"}}\n{{\"name\":\"foo\",\"vers\":\"bad\",\"cksum\":\"{c}\"}}\n\
             {{\"name\":\"foo\",\"vers\":\"1.0.0\",\"cksum\":\"{c}\"}}\n"
        );
        assert_eq!(
            find_cksum_counting(body.as_bytes(), "1.0.0"),
            (Some(("foo".into(), c)), 5)
        );
        for v in ["2.0.0", "3.0.0", "bad"] {
            assert_eq!(find_cksum(body.as_bytes(), v), None, "{v}");
        }
    }

    #[test]
    fn pruning_keeps_present_lines_verbatim() {
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let body = format!(
            "{{\"name\":\"foo\",\"vers\":\"1.0.0\",\"cksum\":\"{a}\",\"deps\":[]}}\nnot json\n\
             {{\"name\":\"foo\",\"vers\":\"1.1.0\",\"cksum\":\"{b}\",\"yanked\":true}}\r\n\
             {{\"name\":\"foo\",\"vers\":\"1.2.0\",\"cksum\":\"{c}\"}}"
        );
        let (cksums, skipped) = usable_cksums(body.as_bytes());
        assert_eq!((cksums, skipped), (vec![a.clone(), b.clone(), c.clone()], 1));
        let kept = String::from_utf8(prune_file(body.as_bytes(), &[true, true, false])).unwrap();
        assert_eq!(
            kept,
            format!(
                "{{\"name\":\"foo\",\"vers\":\"1.0.0\",\"cksum\":\"{a}\",\"deps\":[]}}\n\
                 {{\"name\":\"foo\",\"vers\":\"1.1.0\",\"cksum\":\"{b}\",\"yanked\":true}}\n"
            )
        );
        assert!(prune_file(body.as_bytes(), &[]).is_empty());
        assert!(prune_file(body.as_bytes(), &[false, false, false]).is_empty());
    }

    fn line(name: &str, vers: &str, c: char) -> String {
        format!(
            "{{\"name\":\"{name}\",\"vers\":\"{vers}\",\"cksum\":\"{}\",\"deps\":[]}}\n",
            c.to_string().repeat(64)
        )
    }

    fn triple(name: &str, vers: &str, c: char) -> (String, String, String) {
        (name.into(), vers.into(), c.to_string().repeat(64))
    }

    #[test]
    fn removals_are_the_prior_lines_the_new_file_lacks() {
        let prior = format!(
            "{}{}{}",
            line("Foo", "1.0.0", 'a'),
            line("Foo", "1.1.0", 'b'),
            line("Foo", "2.0.0", 'c')
        );
        // The crate is gone (404): every usable line of the prior file.
        assert_eq!(
            removed_lines(prior.as_bytes(), None),
            Some(vec![
                triple("Foo", "1.0.0", 'a'),
                triple("Foo", "1.1.0", 'b'),
                triple("Foo", "2.0.0", 'c')
            ])
        );
        // One line gone, one yanked (still listed), one added: only the gone one.
        let yanked = line("Foo", "1.1.0", 'b').replace("\"deps\":[]", "\"deps\":[],\"yanked\":true");
        let now = format!("{}{}{}", line("Foo", "1.0.0", 'a'), yanked, line("Foo", "3.0.0", 'd'));
        assert_eq!(
            removed_lines(prior.as_bytes(), Some(now.as_bytes())),
            Some(vec![triple("Foo", "2.0.0", 'c')])
        );
        // Nothing gone.
        assert_eq!(removed_lines(prior.as_bytes(), Some(prior.as_bytes())), Some(vec![]));
        // Garbage lines of the prior file are no versions.
        let with_garbage = format!("not json\n{prior}");
        assert_eq!(
            removed_lines(with_garbage.as_bytes(), Some(prior.as_bytes())),
            Some(vec![])
        );
    }

    #[test]
    fn a_doubtful_new_file_removes_nothing() {
        let prior = format!("{}{}", line("foo", "1.0.0", 'a'), line("foo", "1.1.0", 'b'));
        // Empty, or only garbage: a broken upstream, not a takedown.
        for now in ["", "\n\n", "<html>oops</html>\n"] {
            assert_eq!(removed_lines(prior.as_bytes(), Some(now.as_bytes())), None, "{now:?}");
        }
        // A usable line and an unusable one: the version hidden in garbage is not removed.
        let now = format!("{}{{\"name\":\"foo\",\"vers\":\"1.1.0\"\n", line("foo", "1.0.0", 'a'));
        assert_eq!(removed_lines(prior.as_bytes(), Some(now.as_bytes())), None);
        // A prior file without usable lines loses nothing to an empty one.
        assert_eq!(removed_lines(b"junk\n", Some(b"")), Some(vec![]));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn removals_never_panic_and_come_from_the_prior_file(
            prior in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            now in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
        ) {
            if let Some(removed) = removed_lines(&prior, now.as_deref()) {
                let (cksums, _) = usable_cksums(&prior);
                for (name, _, cksum) in removed {
                    proptest::prop_assert!(is_lookup_name(&name) && cksums.contains(&cksum));
                }
            }
        }

        #[test]
        fn pruning_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            present in proptest::collection::vec(proptest::prelude::any::<bool>(), 0..8),
        ) {
            let (cksums, _) = usable_cksums(&body);
            let out = prune_file(&body, &present);
            proptest::prop_assert!(out.len() <= body.len() + cksums.len());
        }

        #[test]
        fn cksum_lookup_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            version in proptest::prelude::any::<String>(),
        ) {
            for v in [version.as_str(), "1.0.0"] {
                if let Some((name, cksum)) = find_cksum(&body, v) {
                    proptest::prop_assert!(is_lookup_name(&name) && cksum.len() == 64);
                }
            }
        }
    }

    /// A loopback upstream answering every request with `body` (HTTP/1.1, one per connection).
    async fn serve_always(body: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}/index/")
    }

    /// Settings of a proxy `p` of `url` with `index_ttl`.
    fn settings(url: String, index_ttl: Duration) -> ProxySettings {
        ProxySettings {
            registry: "p".into(),
            upstream_url: url,
            index_ttl,
            negative_ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
            max_index_bytes: 1 << 20,
            max_crate_bytes: 1 << 20,
            ca_file: None,
            offline: false,
            prune_index: false,
            upstream_concurrency: 4,
        }
    }

    /// The cached index file may list a quarantined version while its removal stands: a
    /// revalidation that read the file from before the takedown (its copy was taken before a
    /// concurrent one's takedown, and it wrote that file back after a 304 or the same bytes),
    /// or a takedown whose new file was lost in a crash. The upstream then confirms the line
    /// without a new file (same ETag, same bytes): that puts the version back too, or it stays
    /// listed and refused for as long as the upstream's file does not change.
    #[tokio::test]
    async fn a_line_confirmed_without_a_new_file_is_put_back_too() {
        let dir = tempfile::tempdir().unwrap();
        let index = IndexCache::open(&dir.path().join("index"), 1 << 20, 1 << 30).unwrap();
        let crates = CrateFiles::open(&dir.path().join("crates"), 1 << 20).unwrap();
        let bytes = b"a crate that was never taken down";
        let sha = hex::encode(Sha256::digest(bytes));
        let staged = crates.staging_dir().join("staged");
        std::fs::write(&staged, bytes).unwrap();
        crates.adopt(&sha, &staged).unwrap();
        let body = format!("{{\"name\":\"flap\",\"vers\":\"1.0.0\",\"cksum\":\"{sha}\",\"deps\":[]}}\n");
        let url = serve_always(body).await;
        // Revalidated at every lookup.
        let p = CachedUpstream::new(settings(url, Duration::ZERO), index.clone(), crates.clone()).unwrap();
        assert_eq!(p.index_file("flap").await.unwrap().status, CacheStatus::Miss);
        // The file lists 1.0.0, yet its removal quarantined the bytes.
        let removal = QuarantinedVersion {
            registry: "p".into(),
            krate: "flap".into(),
            version: "1.0.0".into(),
            reason: "crate_removed".into(),
            removed_at: 1,
        };
        assert!(crates.quarantine(&sha, removal).unwrap().is_some());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(p.index_file("flap").await.unwrap().status, CacheStatus::Revalidated);
        assert!(crates.quarantined().is_empty(), "the removal is dropped");
        assert!(crates.lookup(&sha).is_some(), "the file is back in the cache");
    }

    /// A proxy the catalog replaced (its upstream changed) may still be serving requests that
    /// began before the swap: what it fetches from its old upstream answers them, but is not
    /// cached under the registry the new proxy serves from, or the new proxy would revalidate
    /// the old upstream's files against its own and read what it lacks as taken down.
    #[tokio::test]
    async fn a_retired_proxy_answers_but_caches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let index = IndexCache::open(&dir.path().join("index"), 1 << 20, 1 << 30).unwrap();
        let crates = CrateFiles::open(&dir.path().join("crates"), 1 << 20).unwrap();
        let url = serve_always(line("old", "1.0.0", 'a')).await;
        let old = CachedUpstream::new(settings(url, Duration::from_secs(60)), index.clone(), crates).unwrap();
        // The catalog retires it, then drops the registry's files (`bind_upstream`).
        old.retire();
        index.clear("p").await;
        let l = old.index_file("old").await.unwrap();
        assert!(std::str::from_utf8(&l.entry.body).unwrap().contains("\"1.0.0\""));
        index.flush().await;
        assert!(
            index.get("p", "old").await.is_none(),
            "nothing of the old upstream is cached"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_queues_a_bounded_number_for_a_bounded_time() {
        let g = Arc::new(UpstreamGate::new("p", 1, 2, Duration::from_secs(5)));
        let slot = g.enter().await.unwrap();
        let wait = |g: &Arc<UpstreamGate>| {
            let g = g.clone();
            tokio::spawn(async move { g.enter().await.map(drop) })
        };
        let (w1, w2) = (wait(&g), wait(&g));
        while g.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        // The queue is full: refused at once, with the retry hint.
        match g.enter().await {
            Err(UpstreamError::Busy { retry_after_secs, .. }) => assert_eq!(retry_after_secs, BUSY_RETRY_AFTER_SECS),
            other => panic!("{other:?}"),
        }
        // A freed slot goes to the waiters in turn.
        drop(slot);
        let (r1, r2) = (w1.await.unwrap(), w2.await.unwrap());
        assert!(r1.is_ok() && r2.is_ok(), "{r1:?} {r2:?}");
        assert_eq!(g.waiting(), 0);
        // A waiter that gives up frees its place.
        let slot = g.enter().await.unwrap();
        let w = wait(&g);
        while g.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        w.abort();
        let _ = w.await;
        assert_eq!(g.waiting(), 0);
        // A wait that runs out is refused.
        assert!(
            matches!(g.enter().await, Err(UpstreamError::Busy { .. })),
            "the slot is still taken"
        );
        drop(slot);
        assert!(g.enter().await.is_ok());
    }
}
