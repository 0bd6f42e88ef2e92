//! Proxied `.crate` files on disk, content-addressed by SHA-256: `<root>/<aa>/<sha256>`.
//!
//! A miss is filled by exactly one writer ([`FillWriter`], driven by the caller's upstream
//! transfer) into `<root>/tmp/`; every request for the same file — the first included — reads
//! the growing temp file through a [`FillReader`], so the first byte reaches clients as soon as
//! it arrives from upstream, and N concurrent misses cost one upstream download.
//! At the end the writer compares the SHA-256 with the index `cksum`: equal -> fsync, rename
//! into place, account in the LRU; different (or the transfer broke) -> the temp file is
//! deleted and every reader's body fails. Readers hold back the last byte until the outcome is
//! known, so a client can never receive a complete body that was not verified.
//!
//! Disk use is kept under a byte budget by evicting the least recently used files. Fills in
//! progress count against the budget while they run: a fill reserves its announced
//! `Content-Length` before the first byte (or grows its reservation as bytes arrive when there is
//! none), evicting committed files to make room; a fill that cannot get room fails (too large
//! for the whole budget, or the budget is taken by other fills) and its temp file is deleted.
//! A fill can also be capped ([`FillWriter::set_limit`]). Access times live in memory; after a
//! restart the files' modification times seed the order.
//!
//! A file whose version the upstream index no longer lists can be moved out of the served
//! cache into `<root>/quarantine/` ([`CrateFiles::quarantine`], see `cache::quarantine`).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::quarantine::{self, Quarantine, QuarantineRecord, QuarantinedVersion};

/// Why a fill failed; decides the status the first client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillFailure {
    /// The upstream has no such file.
    NotFound(String),
    /// The upstream did not answer in time.
    Timeout(String),
    /// The upstream failed or the transfer broke.
    Upstream(String),
    /// The bytes did not match the index checksum.
    Checksum(String),
    /// Local I/O failed.
    Io(String),
    /// Too many upstream transfers are in progress (the proxy's `upstream_concurrency`), or the
    /// disk budget is taken by other fills in progress: 503 with `Retry-After`; retrying later
    /// may work.
    Busy(String),
}

impl std::fmt::Display for FillFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FillFailure::NotFound(m)
            | FillFailure::Timeout(m)
            | FillFailure::Upstream(m)
            | FillFailure::Checksum(m)
            | FillFailure::Io(m)
            | FillFailure::Busy(m) => f.write_str(m),
        }
    }
}

/// Progress of one fill, broadcast to readers.
#[derive(Debug, Clone)]
pub struct FillState {
    temp: PathBuf,
    /// `None` until the upstream answered; then its Content-Length, if any.
    headers: Option<Option<u64>>,
    written: u64,
    outcome: Option<Result<PathBuf, FillFailure>>,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<String, (u64, u64)>,
    /// Bytes of committed files.
    total: u64,
    /// Bytes reserved by fills in progress.
    reserved: u64,
    tick: u64,
}

/// How much a fill without a (trustworthy) length grows its reservation at a time.
const RESERVE_STEP: u64 = 1 << 20;

/// The crate file cache.
pub struct CrateFiles {
    root: PathBuf,
    budget: u64,
    lru: Mutex<Lru>,
    fills: Mutex<HashMap<String, watch::Receiver<FillState>>>,
    /// Bumped (under the `lru` lock) whenever the set of committed files changes (a file
    /// committed or evicted), so that views derived from it (pruned index files) know when to
    /// look again; read without the lock on their hot path.
    generation: AtomicU64,
    /// Files taken out of the cache (`<root>/quarantine/`), with their records.
    quarantine: Mutex<Quarantine>,
}

/// A lookup result.
pub enum CrateLookup {
    /// On disk: path and length.
    Hit { path: PathBuf, len: u64 },
    /// Being filled (maybe just started by this call).
    Fill(FillReader),
}

fn valid_sha(sha: &str) -> bool {
    sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl CrateFiles {
    /// Opens (creating) the cache in `root`, clearing leftovers and indexing existing files.
    pub fn open(root: &Path, budget: u64) -> io::Result<Arc<Self>> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let mut found = Vec::new();
        for dir in std::fs::read_dir(root)? {
            let dir = dir?;
            if dir.file_name() == "tmp" || dir.file_name() == quarantine::DIR || !dir.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(dir.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                let meta = f.metadata()?;
                if valid_sha(&name) && meta.is_file() {
                    found.push((meta.modified().ok(), name, meta.len()));
                }
            }
        }
        found.sort();
        let mut lru = Lru::default();
        for (_, sha, len) in found {
            lru.tick += 1;
            lru.total += len;
            lru.entries.insert(sha, (len, lru.tick));
        }
        let files = Arc::new(CrateFiles {
            root: root.to_owned(),
            budget,
            lru: Mutex::new(lru),
            fills: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            quarantine: Mutex::new(Quarantine::open(&root.join(quarantine::DIR))?),
        });
        files.evict_over_budget(None);
        Ok(files)
    }

    fn path_of(&self, sha: &str) -> PathBuf {
        self.root.join(&sha[..2]).join(sha)
    }

    /// Bytes on disk now.
    pub fn disk_bytes(&self) -> u64 {
        self.lru.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Bytes reserved by fills in progress now.
    pub fn reserved_bytes(&self) -> u64 {
        self.lru.lock().unwrap_or_else(|e| e.into_inner()).reserved
    }

    /// Number of files on disk now.
    pub fn files(&self) -> usize {
        self.lru.lock().unwrap_or_else(|e| e.into_inner()).entries.len()
    }

    /// The generation of the set of committed files: it changes whenever a file is committed
    /// or evicted, so an answer derived from [`contains`](Self::contains) is current while
    /// this stays the same.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a committed file with this SHA-256 is present (does not mark it used).
    pub fn contains(&self, sha: &str) -> bool {
        self.lru
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .contains_key(sha)
    }

    /// Whether each of `shas` is present, with the generation this answer belongs to (one lock).
    pub fn contains_all<'a>(&self, shas: impl IntoIterator<Item = &'a str>) -> (Vec<bool>, u64) {
        let lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        let present = shas.into_iter().map(|s| lru.entries.contains_key(s)).collect();
        (present, self.generation.load(Ordering::Acquire))
    }

    /// The byte budget of the cache.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Where to stage files for [`adopt`](Self::adopt): on the cache's file system, emptied
    /// at every open.
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Moves a staged file whose SHA-256 the caller verified to be `sha` into the cache (bundle
    /// imports; blocking). Durable on return. The caller checks the budget first: a file that
    /// does not fit evicts the least recently used others.
    pub fn adopt(&self, sha: &str, staged: &Path) -> io::Result<()> {
        self.adopt_many(&[(sha.to_owned(), staged.to_owned())])
    }

    /// [`adopt`](Self::adopt) of many files: the files' and then the directories' fsyncs run
    /// [`ADOPT_THREADS`] at a time (a file system commits concurrent fsyncs together: one
    /// after another they cost a bundle import most of its time), each directory once.
    pub fn adopt_many(&self, files: &[(String, PathBuf)]) -> io::Result<()> {
        if let Some((sha, _)) = files.iter().find(|(sha, _)| !valid_sha(sha)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{sha}` is not a SHA-256"),
            ));
        }
        let staged: Vec<&Path> = files.iter().map(|(_, p)| p.as_path()).collect();
        let lens = in_parallel(&staged, |p| {
            let f = std::fs::File::open(p)?;
            f.sync_all()?;
            Ok(f.metadata()?.len())
        })?;
        let mut dirs = std::collections::BTreeSet::new();
        for (sha, path) in files {
            let dest = self.path_of(sha);
            let dir = dest.parent().unwrap_or(&self.root).to_owned();
            if dirs.insert(dir.clone()) {
                std::fs::create_dir_all(&dir)?;
            }
            std::fs::rename(path, &dest)?;
        }
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        in_parallel(&dirs, |d| std::fs::File::open(d)?.sync_all())?;
        for ((sha, _), len) in files.iter().zip(lens) {
            self.commit(sha, len, 0);
        }
        Ok(())
    }

    /// A committed file, if present (marks it recently used).
    pub fn lookup(&self, sha: &str) -> Option<(PathBuf, u64)> {
        if !valid_sha(sha) {
            return None;
        }
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        let (len, t) = lru.entries.get_mut(sha)?;
        *t = tick;
        let len = *len;
        drop(lru);
        Some((self.path_of(sha), len))
    }

    /// The committed file, or the fill in progress, or a new fill: then `start` is called with
    /// the writer, and must drive it (typically by spawning the upstream transfer).
    pub fn get_or_fill(self: &Arc<Self>, sha: &str, start: impl FnOnce(FillWriter)) -> io::Result<CrateLookup> {
        if !valid_sha(sha) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{sha}` is not a SHA-256"),
            ));
        }
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((path, len)) = self.lookup(sha) {
            return Ok(CrateLookup::Hit { path, len });
        }
        if let Some(rx) = fills.get(sha) {
            return Ok(CrateLookup::Fill(FillReader { rx: rx.clone() }));
        }
        let temp = self
            .root
            .join("tmp")
            .join(format!("{sha}.{:016x}", rand::random::<u64>()));
        let (tx, rx) = watch::channel(FillState {
            temp: temp.clone(),
            headers: None,
            written: 0,
            outcome: None,
        });
        fills.insert(sha.to_owned(), rx.clone());
        drop(fills);
        start(FillWriter {
            files: self.clone(),
            sha: sha.to_owned(),
            temp,
            file: None,
            hasher: Sha256::new(),
            tx,
            done: false,
            limit: u64::MAX,
            announced: None,
            written: 0,
            reserved: 0,
        });
        Ok(CrateLookup::Fill(FillReader { rx }))
    }

    fn end_fill(&self, sha: &str) {
        self.fills.lock().unwrap_or_else(|e| e.into_inner()).remove(sha);
    }

    /// Reserves `extra` bytes of the budget for a fill, evicting committed files as needed.
    fn reserve(&self, extra: u64) -> Result<(), FillFailure> {
        {
            let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
            if lru.reserved.saturating_add(extra) > self.budget {
                return Err(FillFailure::Busy(format!(
                    "the crate cache's disk budget ({} bytes, `[cache] disk`) is taken by downloads in \
                     progress; try again shortly",
                    self.budget
                )));
            }
            lru.reserved += extra;
        }
        self.evict_over_budget(None);
        Ok(())
    }

    fn release(&self, amount: u64) {
        if amount > 0 {
            let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
            lru.reserved = lru.reserved.saturating_sub(amount);
        }
    }

    fn commit(&self, sha: &str, len: u64, reserved: u64) {
        {
            let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
            lru.reserved = lru.reserved.saturating_sub(reserved);
            lru.tick += 1;
            self.generation.fetch_add(1, Ordering::AcqRel);
            let tick = lru.tick;
            if let Some((old, _)) = lru.entries.insert(sha.to_owned(), (len, tick)) {
                lru.total -= old;
            }
            lru.total += len;
        }
        self.evict_over_budget(Some(sha));
    }

    /// Moves the committed file `sha` out of the served cache into the quarantine and records
    /// `removal` there (blocking). `Ok(Some(size))` when the file is in quarantine afterwards
    /// (moved now, or by an earlier removal naming the same bytes), `Ok(None)` when it was not
    /// cached. A quarantined file is not served, not counted in the budget, not evicted.
    pub fn quarantine(&self, sha: &str, removal: QuarantinedVersion) -> io::Result<Option<u64>> {
        if !valid_sha(sha) {
            return Ok(None);
        }
        let mut q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        let taken = {
            let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
            let taken = lru.entries.remove(sha);
            if let Some((len, _)) = taken {
                lru.total -= len;
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            taken
        };
        let size = match taken {
            Some((len, _)) => match std::fs::rename(self.path_of(sha), q.crate_path(sha)) {
                Ok(()) => len,
                Err(e) if e.kind() == io::ErrorKind::NotFound => match q.get(sha) {
                    Some(rec) => rec.size,
                    None => return Ok(None),
                },
                Err(e) => {
                    // Still in place: it stays in the cache (and is retried at the next removal).
                    drop(q);
                    self.commit(sha, len, 0);
                    return Err(e);
                }
            },
            None => match q.get(sha) {
                Some(rec) => rec.size,
                None => return Ok(None),
            },
        };
        q.record(sha, size, removal)?;
        Ok(Some(size))
    }

    /// Every quarantined file's record, by SHA-256.
    pub fn quarantined(&self) -> Vec<QuarantineRecord> {
        let q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        q.records().cloned().collect()
    }

    /// The record of a quarantined file named by a removal of `registry`'s `name` `version`.
    pub fn quarantined_version(&self, registry: &str, name: &str, version: &str) -> Option<QuarantineRecord> {
        let q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        let found = q.records().find(|r| r.names(registry, name, version)).cloned();
        found
    }

    /// Whether the quarantined file `sha` was quarantined by a removal of `registry`'s `name`
    /// `version`.
    pub fn quarantine_names(&self, sha: &str, registry: &str, name: &str, version: &str) -> bool {
        let q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        q.get(sha).is_some_and(|r| r.names(registry, name, version))
    }

    /// Whether a removal of `registry` quarantined a file of the crate `name` (any case; one
    /// lock, no I/O).
    pub fn quarantines_crate(&self, registry: &str, name: &str) -> bool {
        let q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        let any = q.records().any(|r| {
            r.removals
                .iter()
                .any(|x| x.registry == registry && x.krate.eq_ignore_ascii_case(name))
        });
        any
    }

    /// Whether anything is quarantined.
    pub fn has_quarantine(&self) -> bool {
        let q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        let any = q.records().next().is_some();
        any
    }

    /// Whether `sha` is quarantined by removals of other registries only: `registry` can have
    /// it back (see `upstream::cached`, which copies it back at its next download).
    pub fn quarantined_elsewhere(&self, sha: &str, registry: &str) -> bool {
        let q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        q.get(sha)
            .is_some_and(|r| !r.removals.iter().any(|x| x.registry == registry))
    }

    /// The path and size of the quarantined file `sha`, if it is there (blocking: one stat).
    pub fn quarantined_file(&self, sha: &str) -> Option<(PathBuf, u64)> {
        let q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        let size = q.get(sha)?.size;
        let path = q.crate_path(sha);
        path.is_file().then_some((path, size))
    }

    /// Deletes a quarantined file and its record (blocking); `false` if there is none.
    pub fn purge_quarantined(&self, sha: &str) -> io::Result<bool> {
        if !valid_sha(sha) {
            return Ok(false);
        }
        let mut q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        q.forget(sha)
    }

    /// Puts a quarantined file back into the served cache (blocking; an operator's decision
    /// that the bytes are fine): it is served again to any proxy whose index lists its
    /// checksum. `false` if there is none.
    pub fn release_quarantined(&self, sha: &str) -> io::Result<bool> {
        if !valid_sha(sha) {
            return Ok(false);
        }
        let q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        if q.get(sha).is_none() {
            return Ok(false);
        }
        self.put_back(q, sha)?;
        Ok(true)
    }

    /// The upstream of `registry` lists `name` `version` with the checksum `sha` again: the
    /// removal it recorded was not a takedown after all (a wrong 404, a line that came back
    /// with the same bytes). That removal is dropped; a file no removal names any more goes
    /// back into the served cache (blocking). `Ok(None)` if no removal of that version named
    /// `sha`; `Ok(Some(true))` when the file is back in the cache, `Ok(Some(false))` when
    /// removals of other registries keep it quarantined.
    pub fn relisted(&self, sha: &str, registry: &str, name: &str, version: &str) -> io::Result<Option<bool>> {
        if !valid_sha(sha) {
            return Ok(None);
        }
        let mut q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        match q.drop_removal(sha, registry, name, version)? {
            None => Ok(None),
            Some(0) => {
                self.put_back(q, sha)?;
                Ok(Some(true))
            }
            Some(_) => Ok(Some(false)),
        }
    }

    /// Moves the quarantined file `sha` back into the cache, forgets its record, and counts
    /// it in the budget, all with the quarantine lock `q` held: a takedown waiting for it
    /// then finds the file in the cache (lock order: quarantine, then the cache's books).
    fn put_back(&self, mut q: std::sync::MutexGuard<'_, Quarantine>, sha: &str) -> io::Result<()> {
        let Some(size) = q.get(sha).map(|r| r.size) else {
            return Ok(());
        };
        let dest = self.path_of(sha);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::rename(q.crate_path(sha), &dest)?;
        q.forget(sha)?;
        self.commit(sha, size, 0);
        drop(q);
        Ok(())
    }

    /// Of `lines` (`(name, version, sha256)` of an index file), those whose file a removal of
    /// `registry` quarantined (one lock, no I/O).
    pub fn quarantined_lines<'a>(
        &self,
        registry: &str,
        lines: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Vec<(String, String, String)> {
        let q = self.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .into_iter()
            .filter(|(name, version, sha)| q.get(sha).is_some_and(|r| r.names(registry, name, version)))
            .map(|(n, v, s)| (n.to_owned(), v.to_owned(), s.to_owned()))
            .collect()
    }

    /// Removes least recently used files until the total is within budget (`keep` last).
    fn evict_over_budget(&self, keep: Option<&str>) {
        let victims: Vec<String> = {
            let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
            let mut order: Vec<(u64, String, u64)> = lru
                .entries
                .iter()
                .map(|(k, (len, tick))| (if Some(k.as_str()) == keep { u64::MAX } else { *tick }, k.clone(), *len))
                .collect();
            order.sort();
            let mut victims = Vec::new();
            for (_, sha, len) in order {
                if lru.total + lru.reserved <= self.budget {
                    break;
                }
                lru.entries.remove(&sha);
                lru.total -= len;
                self.generation.fetch_add(1, Ordering::AcqRel);
                victims.push(sha);
            }
            victims
        };
        for sha in victims {
            let _ = std::fs::remove_file(self.path_of(&sha));
            tracing::debug!(sha256 = %sha, "evicted crate file from the disk cache");
        }
    }
}

/// How many fsyncs [`CrateFiles::adopt_many`] runs at once.
pub const ADOPT_THREADS: usize = 16;

/// `f` of every item, on up to [`ADOPT_THREADS`] threads; the results in order, or the first
/// error.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> io::Result<R> + Sync) -> io::Result<Vec<R>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let chunk = items.len().div_ceil(ADOPT_THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<io::Result<Vec<R>>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            out.extend(h.join().map_err(|_| io::Error::other("an fsync thread panicked"))??);
        }
        Ok(out)
    })
}

/// The single writer of a fill. Dropping it without [`finish`](Self::finish) fails the fill.
pub struct FillWriter {
    files: Arc<CrateFiles>,
    sha: String,
    temp: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    tx: watch::Sender<FillState>,
    done: bool,
    /// Most bytes this fill may have.
    limit: u64,
    /// The upstream's Content-Length.
    announced: Option<u64>,
    written: u64,
    /// Bytes of the disk budget held by this fill.
    reserved: u64,
}

impl FillWriter {
    /// The expected SHA-256 (the file's name).
    pub fn sha256(&self) -> &str {
        &self.sha
    }

    /// Caps the file at `max` bytes: a larger Content-Length is refused before any byte is
    /// written, a longer body as soon as it passes the cap.
    pub fn set_limit(&mut self, max: u64) {
        self.limit = max;
    }

    /// Holds `want` bytes of the disk budget (no-op when already held).
    fn reserve_to(&mut self, want: u64) -> Result<(), FillFailure> {
        if want <= self.reserved {
            return Ok(());
        }
        if want > self.files.budget {
            return Err(FillFailure::Upstream(format!(
                "the .crate is larger than the whole crate cache ({} bytes, `[cache] disk`); it was refused",
                self.files.budget
            )));
        }
        self.files.reserve(want - self.reserved)?;
        self.reserved = want;
        Ok(())
    }

    fn release_reservation(&mut self) {
        self.files.release(std::mem::take(&mut self.reserved));
    }

    /// The upstream answered; `len` is its Content-Length. A length above the limit or the
    /// disk budget fails here, before any byte is read.
    pub async fn headers(&mut self, len: Option<u64>) -> Result<(), FillFailure> {
        if let Some(len) = len {
            if len > self.limit {
                return Err(FillFailure::Upstream(format!(
                    "the upstream announced a .crate of {len} bytes, more than the limit of {} bytes \
                     (`limits.max_upstream_crate_size`); it was refused",
                    self.limit
                )));
            }
            self.reserve_to(len)?;
        }
        self.announced = len;
        let file = tokio::fs::File::create(&self.temp)
            .await
            .map_err(|e| FillFailure::Io(format!("cannot create a temp file: {e}")))?;
        self.file = Some(file);
        self.tx.send_modify(|s| s.headers = Some(len));
        Ok(())
    }

    /// Appends a chunk (within the limit, the announced length and the disk budget).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), FillFailure> {
        let after = self.written + chunk.len() as u64;
        if after > self.limit {
            return Err(FillFailure::Upstream(format!(
                "the upstream sent more than the limit of {} bytes (`limits.max_upstream_crate_size`) \
                 for a .crate; it was refused",
                self.limit
            )));
        }
        if let Some(len) = self.announced.filter(|l| after > *l) {
            return Err(FillFailure::Upstream(format!(
                "the upstream sent more than the {len} bytes its Content-Length announced"
            )));
        }
        if after > self.reserved {
            let want = after.max(self.reserved.saturating_add(RESERVE_STEP)).min(self.limit);
            self.reserve_to(want.min(self.files.budget).max(after))?;
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| FillFailure::Io("write before headers".into()))?;
        file.write_all(chunk)
            .await
            .map_err(|e| FillFailure::Io(format!("cannot write the temp file: {e}")))?;
        file.flush().await.map_err(|e| FillFailure::Io(e.to_string()))?;
        self.hasher.update(chunk);
        self.written = after;
        self.tx.send_modify(|s| s.written = after);
        Ok(())
    }

    /// Verifies and commits. On a checksum mismatch nothing is kept and readers fail.
    pub async fn finish(mut self) -> Result<PathBuf, FillFailure> {
        let result = self.commit().await;
        self.done = true;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.temp).await;
            self.release_reservation();
        }
        let outcome = result.clone();
        self.tx.send_modify(|s| s.outcome = Some(outcome));
        self.files.end_fill(&self.sha);
        result
    }

    async fn commit(&mut self) -> Result<PathBuf, FillFailure> {
        let file = self
            .file
            .take()
            .ok_or_else(|| FillFailure::Io("finish before headers".into()))?;
        if let Some(len) = self.announced.filter(|l| *l != self.written) {
            return Err(FillFailure::Upstream(format!(
                "the upstream sent {} bytes but its Content-Length announced {len}; it was not cached",
                self.written
            )));
        }
        let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if got != self.sha {
            return Err(FillFailure::Checksum(format!(
                "the upstream sent a file whose SHA-256 is {got}, but the index says {}; it was not cached",
                self.sha
            )));
        }
        let io = |e: io::Error| FillFailure::Io(e.to_string());
        file.sync_all().await.map_err(io)?;
        drop(file);
        let dest = self.files.path_of(&self.sha);
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        tokio::fs::rename(&self.temp, &dest).await.map_err(io)?;
        let len = self.written;
        self.files.commit(&self.sha, len, std::mem::take(&mut self.reserved));
        Ok(dest)
    }

    /// Fails the fill with `why`.
    pub fn fail(mut self, why: FillFailure) {
        self.abort(why);
    }

    fn abort(&mut self, why: FillFailure) {
        if self.done {
            return;
        }
        self.done = true;
        let _ = std::fs::remove_file(&self.temp);
        self.release_reservation();
        self.tx.send_modify(|s| s.outcome = Some(Err(why)));
        self.files.end_fill(&self.sha);
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        self.abort(FillFailure::Upstream("the upstream transfer was interrupted".into()));
    }
}

/// A reader of a fill in progress.
pub struct FillReader {
    rx: watch::Receiver<FillState>,
}

impl FillReader {
    /// Waits for the upstream's answer: its Content-Length, or the failure.
    pub async fn headers(&mut self) -> Result<Option<u64>, FillFailure> {
        loop {
            {
                let s = self.rx.borrow_and_update();
                if let Some(Err(f)) = &s.outcome {
                    return Err(f.clone());
                }
                if let Some(len) = s.headers {
                    return Ok(len);
                }
            }
            if self.rx.changed().await.is_err() {
                return Err(FillFailure::Upstream("the fill ended without an answer".into()));
            }
        }
    }

    /// The body: bytes as they arrive; an error if the fill fails.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        struct St {
            rx: watch::Receiver<FillState>,
            file: Option<tokio::fs::File>,
            offset: u64,
            finished: bool,
        }
        let st = St {
            rx: self.rx,
            file: None,
            offset: 0,
            finished: false,
        };
        futures_util::stream::unfold(st, |mut st| async move {
            if st.finished {
                return None;
            }
            loop {
                let s = st.rx.borrow_and_update().clone();
                let failed = matches!(s.outcome, Some(Err(_)));
                // Hold back the last byte until the checksum verdict is in.
                let readable = match &s.outcome {
                    Some(Ok(_)) => s.written,
                    _ => s.written.saturating_sub(1),
                };
                if !failed && st.offset < readable {
                    if st.file.is_none() {
                        let path = match &s.outcome {
                            Some(Ok(p)) => p.clone(),
                            _ => s.temp.clone(),
                        };
                        let opened = match tokio::fs::File::open(&path).await {
                            Ok(f) => Ok(f),
                            // Renamed between our look and the open: the outcome says where.
                            Err(_) => {
                                let outcome = st.rx.borrow().outcome.clone();
                                match outcome {
                                    Some(Ok(p)) => tokio::fs::File::open(p).await,
                                    // Failed meanwhile: the loop reports it.
                                    Some(Err(_)) => continue,
                                    // The writer renames the finished file before it publishes
                                    // the outcome (and records it in the cache between the
                                    // two, which can take a while on a busy disk): wait for
                                    // the outcome rather than call the download abandoned.
                                    None => {
                                        if st.rx.changed().await.is_err() {
                                            Err(io::Error::other("the download was abandoned"))
                                        } else {
                                            continue;
                                        }
                                    }
                                }
                            }
                        };
                        match opened {
                            Ok(f) => st.file = Some(f),
                            Err(e) => {
                                st.finished = true;
                                return Some((Err(e), st));
                            }
                        }
                    }
                    let want = usize::try_from((readable - st.offset).min(256 * 1024)).unwrap_or(256 * 1024);
                    let mut buf = BytesMut::zeroed(want);
                    let file = st.file.as_mut()?;
                    match file.read(&mut buf).await {
                        Ok(0) => {
                            tokio::task::yield_now().await;
                            continue;
                        }
                        Ok(n) => {
                            buf.truncate(n);
                            st.offset += n as u64;
                            return Some((Ok(buf.freeze()), st));
                        }
                        Err(e) => {
                            st.finished = true;
                            return Some((Err(e), st));
                        }
                    }
                }
                match s.outcome {
                    Some(Ok(_)) => return None,
                    Some(Err(f)) => {
                        st.finished = true;
                        return Some((Err(io::Error::other(f.to_string())), st));
                    }
                    None => {
                        if st.rx.changed().await.is_err() {
                            st.finished = true;
                            return Some((Err(io::Error::other("the download was abandoned")), st));
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    async fn collect(r: FillReader) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = Box::pin(r.into_stream());
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn fill_streams_to_many_readers_then_hits() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        let data = vec![7u8; 100_000];
        let s = sha(&data);
        let mut writer = None;
        let CrateLookup::Fill(r1) = files.get_or_fill(&s, |w| writer = Some(w)).unwrap() else {
            panic!()
        };
        let CrateLookup::Fill(r2) = files.get_or_fill(&s, |_| panic!("second writer")).unwrap() else {
            panic!()
        };
        let mut w = writer.unwrap();
        let d2 = data.clone();
        let feeder = tokio::spawn(async move {
            w.headers(Some(d2.len() as u64)).await.unwrap();
            for c in d2.chunks(10_000) {
                w.write(c).await.unwrap();
                tokio::task::yield_now().await;
            }
            w.finish().await.unwrap();
        });
        let (a, b) = tokio::join!(collect(r1), collect(r2));
        feeder.await.unwrap();
        assert_eq!(a.unwrap(), data);
        assert_eq!(b.unwrap(), data);
        assert!(matches!(
            files.get_or_fill(&s, |_| panic!()).unwrap(),
            CrateLookup::Hit { len: 100_000, .. }
        ));
    }

    /// A reader that arrives after the writer renamed the finished file but before it
    /// published the outcome waits for the outcome instead of failing (this failed as "the
    /// download was abandoned" before, seen as a broken transfer when the disk was busy).
    #[tokio::test]
    async fn a_reader_between_the_rename_and_the_outcome_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        let data = b"a small crate file".to_vec();
        let s = sha(&data);
        let mut writer = None;
        let CrateLookup::Fill(r) = files.get_or_fill(&s, |w| writer = Some(w)).unwrap() else {
            panic!()
        };
        let mut w = writer.unwrap();
        w.headers(Some(data.len() as u64)).await.unwrap();
        w.write(&data).await.unwrap();
        // What `commit` does before the outcome is sent: the temp file is renamed away.
        let dest = files.path_of(&s);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if let Some(f) = w.file.take() {
            f.sync_all().await.unwrap();
        }
        std::fs::rename(&w.temp, &dest).unwrap();
        let reader = tokio::spawn(collect(r));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!reader.is_finished(), "the reader waits for the outcome");
        w.done = true;
        w.tx.send_modify(|st| st.outcome = Some(Ok(dest.clone())));
        assert_eq!(reader.await.unwrap().unwrap(), data);
    }

    #[tokio::test]
    async fn checksum_mismatch_fails_readers_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        let s = sha(b"expected");
        let mut writer = None;
        let CrateLookup::Fill(r) = files.get_or_fill(&s, |w| writer = Some(w)).unwrap() else {
            panic!()
        };
        let mut w = writer.unwrap();
        w.headers(Some(8)).await.unwrap();
        w.write(b"tampered").await.unwrap();
        assert!(matches!(w.finish().await, Err(FillFailure::Checksum(_))));
        let got = collect(r).await;
        assert!(got.is_err());
        assert!(files.lookup(&s).is_none());
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn dropped_writer_fails_the_fill_and_allows_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        let s = sha(b"x");
        let mut writer = None;
        let CrateLookup::Fill(r) = files.get_or_fill(&s, |w| writer = Some(w)).unwrap() else {
            panic!()
        };
        let mut w = writer.unwrap();
        w.headers(None).await.unwrap();
        drop(w);
        assert!(collect(r).await.is_err());
        let mut started = false;
        let _ = files.get_or_fill(&s, |_| started = true).unwrap();
        assert!(started);
    }

    #[tokio::test]
    async fn eviction_keeps_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 2_500).unwrap();
        let mut shas = Vec::new();
        for i in 0..5u8 {
            let data = vec![i; 1000];
            let s = sha(&data);
            let mut writer = None;
            let _ = files.get_or_fill(&s, |w| writer = Some(w)).unwrap();
            let mut w = writer.unwrap();
            w.headers(Some(1000)).await.unwrap();
            w.write(&data).await.unwrap();
            w.finish().await.unwrap();
            shas.push(s);
            // Touch the first file so it is the most recently used.
            files.lookup(&shas[0]);
            assert!(files.disk_bytes() <= 2_500);
        }
        assert!(files.lookup(&shas[0]).is_some(), "recently used file kept");
        assert!(files.lookup(&shas[1]).is_none(), "least recently used file evicted");
        assert_eq!(files.files(), 2);
        drop(files);
        let reopened = CrateFiles::open(dir.path(), 1_500).unwrap();
        assert!(reopened.disk_bytes() <= 1_500);
    }
    #[tokio::test]
    async fn a_writer_dropped_before_headers_or_with_its_aborted_task_releases_the_fill() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        let s = sha(b"never sent");
        // Dropped before the upstream answered: a reader waiting for the headers fails.
        let mut writer = None;
        let CrateLookup::Fill(mut r) = files.get_or_fill(&s, |w| writer = Some(w)).unwrap() else {
            panic!()
        };
        drop(writer);
        assert!(r.headers().await.is_err());
        // The transfer task holding the writer is aborted mid-body (runtime shutdown, abort).
        let CrateLookup::Fill(r) = files
            .get_or_fill(&s, |mut w| {
                let (wrote, wrote_rx) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(async move {
                    w.headers(Some(10)).await.unwrap();
                    w.write(b"12345").await.unwrap();
                    let _ = wrote.send(());
                    std::future::pending::<()>().await;
                });
                tokio::spawn(async move {
                    let _ = wrote_rx.await;
                    task.abort();
                });
            })
            .unwrap()
        else {
            panic!()
        };
        assert!(collect(r).await.is_err(), "a reader of an aborted fill fails");
        assert!(files.fills.lock().unwrap().is_empty(), "no fill entry left");
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let mut started = false;
        let _ = files.get_or_fill(&s, |_| started = true).unwrap();
        assert!(started, "a new fill can start");
    }

    fn start(files: &Arc<CrateFiles>, data: &[u8]) -> (FillWriter, FillReader) {
        let mut writer = None;
        let CrateLookup::Fill(r) = files.get_or_fill(&sha(data), |w| writer = Some(w)).unwrap() else {
            panic!("expected a fill")
        };
        (writer.unwrap(), r)
    }

    #[tokio::test]
    async fn running_fills_count_against_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 2_500).unwrap();
        for i in 0..2u8 {
            let data = vec![i; 1000];
            let (mut w, _r) = start(&files, &data);
            w.headers(Some(1000)).await.unwrap();
            w.write(&data).await.unwrap();
            w.finish().await.unwrap();
        }
        assert_eq!(files.disk_bytes(), 2_000);
        // A fill announcing 1000 bytes makes room before its first byte.
        let data = vec![9u8; 1000];
        let (mut w, _r) = start(&files, &data);
        w.headers(Some(1000)).await.unwrap();
        assert_eq!(files.reserved_bytes(), 1000);
        assert!(files.disk_bytes() + files.reserved_bytes() <= 2_500);
        // A second fill cannot take more than what is left beside the first.
        let other = vec![8u8; 2000];
        let (mut w2, r2) = start(&files, &other);
        assert!(matches!(w2.headers(Some(2000)).await, Err(FillFailure::Busy(_))));
        w2.fail(FillFailure::Busy("test".into()));
        assert!(collect(r2).await.is_err());
        w.write(&data).await.unwrap();
        w.finish().await.unwrap();
        assert_eq!(files.reserved_bytes(), 0);
        assert!(files.disk_bytes() <= 2_500);
    }

    #[tokio::test]
    async fn a_body_without_length_stops_at_the_budget_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 2_500).unwrap();
        let data = vec![1u8; 3000];
        let (mut w, r) = start(&files, &data);
        w.headers(None).await.unwrap();
        let mut failed = None;
        for c in data.chunks(500) {
            if let Err(f) = w.write(c).await {
                failed = Some(f);
                break;
            }
            assert!(files.reserved_bytes() <= 2_500);
        }
        let f = failed.expect("the budget stops the fill");
        assert!(f.to_string().contains("larger than the whole crate cache"), "{f}");
        w.fail(f);
        assert!(collect(r).await.is_err());
        assert_eq!(files.reserved_bytes(), 0);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        let (mut w, _r) = start(&files, b"0123456789ab");
        w.set_limit(10);
        assert!(w.headers(Some(11)).await.is_err(), "a Content-Length above the limit");
        let (mut w, _r) = start(&files, b"0123456789abc");
        w.set_limit(10);
        w.headers(None).await.unwrap();
        assert!(w.write(b"0123456789ab").await.is_err(), "a body above the limit");
    }

    async fn cached(files: &Arc<CrateFiles>, data: &[u8]) -> String {
        let (mut w, _r) = start(files, data);
        w.headers(Some(data.len() as u64)).await.unwrap();
        w.write(data).await.unwrap();
        w.finish().await.unwrap();
        sha(data)
    }

    fn removal(registry: &str, krate: &str, version: &str) -> QuarantinedVersion {
        QuarantinedVersion {
            registry: registry.into(),
            krate: krate.into(),
            version: version.into(),
            reason: "version_removed".into(),
            removed_at: 1,
        }
    }

    /// A quarantined file leaves the served cache (lookups, counts, budget, pruning
    /// generation), stays on disk with its record across a reopen, collects the removals of
    /// every proxy that names the same bytes, and can be released or purged.
    #[tokio::test]
    async fn quarantine_takes_a_file_out_of_the_cache_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        let s = cached(&files, b"malicious bytes").await;
        let other = cached(&files, b"fine bytes").await;
        let generation = files.generation();
        assert_eq!(files.quarantine(&s, removal("p", "Evil", "1.0.0")).unwrap(), Some(15));
        assert!(files.lookup(&s).is_none(), "not served");
        assert!(files.generation() > generation, "pruned views look again");
        assert_eq!((files.files(), files.disk_bytes()), (1, 10), "not counted as cache");
        let kept = dir.path().join("quarantine").join(format!("{s}.crate"));
        assert_eq!(std::fs::read(&kept).unwrap(), b"malicious bytes");
        // Another proxy's removal of the same bytes joins the record; not cached: None.
        assert_eq!(files.quarantine(&s, removal("q", "evil", "1.0.0")).unwrap(), Some(15));
        assert_eq!(files.quarantine(&s, removal("q", "evil", "1.0.0")).unwrap(), Some(15));
        assert_eq!(
            files
                .quarantine(&sha(b"never cached"), removal("p", "x", "1.0.0"))
                .unwrap(),
            None
        );
        assert_eq!(files.quarantine("../../etc", removal("p", "x", "1.0.0")).unwrap(), None);
        drop(files);
        // Reopened: still out of the cache, the record intact, and never evicted.
        let files = CrateFiles::open(dir.path(), 5).unwrap();
        assert!(files.lookup(&s).is_none());
        let recs = files.quarantined();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].removals.len(), 2);
        assert!(files.quarantined_version("q", "EVIL", "1.0.0").is_some());
        assert!(files.quarantined_version("q", "evil", "1.0.1").is_none());
        assert!(kept.exists(), "a tiny budget does not evict quarantined files");
        assert_eq!(
            crate::cache::quarantine::read_records(&dir.path().join("quarantine")).unwrap(),
            recs
        );
        // Released: served again. Purged: gone.
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        assert!(files.release_quarantined(&s).unwrap());
        assert!(files.lookup(&s).is_some());
        assert!(files.quarantined().is_empty());
        // (The reopen with a 5-byte budget evicted it.)
        assert_eq!(cached(&files, b"fine bytes").await, other);
        assert_eq!(files.quarantine(&other, removal("p", "ok", "1.0.0")).unwrap(), Some(10));
        assert!(files.purge_quarantined(&other).unwrap());
        assert!(!files.purge_quarantined(&other).unwrap());
        assert!(files.lookup(&other).is_none());
        assert_eq!(std::fs::read_dir(dir.path().join("quarantine")).unwrap().count(), 0);
    }

    /// A version its upstream lists again with the same bytes: that registry's removal is
    /// dropped (durably); the file goes back into the cache once no removal names it.
    #[tokio::test]
    async fn a_relisted_version_drops_its_removal_and_the_last_puts_the_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        let s = cached(&files, b"wrongly removed").await;
        files.quarantine(&s, removal("p", "Flaky", "1.0.0")).unwrap();
        files.quarantine(&s, removal("q", "flaky", "1.0.0")).unwrap();
        let lines = [("flaky", "1.0.0", s.as_str()), ("flaky", "1.0.1", s.as_str())];
        assert_eq!(
            files.quarantined_lines("p", lines),
            vec![("flaky".to_owned(), "1.0.0".to_owned(), s.clone())]
        );
        assert!(files.quarantined_lines("r", lines).is_empty(), "no removal of `r`");
        // Another version, another registry, other bytes: nothing to drop.
        assert_eq!(files.relisted(&s, "p", "flaky", "1.0.1").unwrap(), None);
        assert_eq!(files.relisted(&s, "r", "flaky", "1.0.0").unwrap(), None);
        assert_eq!(files.relisted(&sha(b"other"), "p", "flaky", "1.0.0").unwrap(), None);
        // `p` lists it again: `q`'s removal keeps it out of the cache, across a reopen.
        assert_eq!(files.relisted(&s, "p", "FLAKY", "1.0.0").unwrap(), Some(false));
        drop(files);
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        assert!(files.lookup(&s).is_none());
        let recs = files.quarantined();
        assert_eq!(recs[0].removals.len(), 1);
        assert_eq!(recs[0].removals[0].registry, "q");
        // `q` too: back in the cache, counted, the record gone.
        assert_eq!(files.relisted(&s, "q", "flaky", "1.0.0").unwrap(), Some(true));
        assert!(files.lookup(&s).is_some());
        assert_eq!(files.disk_bytes(), 15);
        assert!(files.quarantined().is_empty());
        assert_eq!(std::fs::read_dir(dir.path().join("quarantine")).unwrap().count(), 0);
        assert_eq!(files.relisted(&s, "q", "flaky", "1.0.0").unwrap(), None);
    }

    /// A file put back (released, or its version listed again) is in the cache before the
    /// quarantine lets anyone else look: a takedown by another registry that comes in between
    /// must find it there, or it finds the file nowhere, quarantines nothing, and that
    /// registry serves the bytes it took down. The test holds the cache's bookkeeping so the
    /// put back waits at the step that counts the file in, and looks at the quarantine then.
    #[tokio::test]
    async fn a_file_put_back_is_counted_before_the_quarantine_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        let s = cached(&files, b"put back").await;
        files.quarantine(&s, removal("p", "back", "1.0.0")).unwrap();
        let record = dir.path().join("quarantine").join(format!("{s}.json"));
        let lru = files.lru.lock().unwrap();
        let relist = std::thread::spawn({
            let (files, s) = (files.clone(), s.clone());
            move || files.relisted(&s, "p", "back", "1.0.0").unwrap()
        });
        // The record is gone: the put back is at the bookkeeping, which this test holds.
        while record.exists() {
            std::thread::yield_now();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            files.quarantine.try_lock().is_err(),
            "the quarantine is free while the file is neither quarantined nor in the cache"
        );
        drop(lru);
        assert_eq!(relist.join().unwrap(), Some(true));
        // Now another registry's takedown finds it in the cache.
        assert_eq!(files.quarantine(&s, removal("q", "back", "1.0.0")).unwrap(), Some(8));
        assert!(files.lookup(&s).is_none());
    }

    #[tokio::test]
    async fn a_body_shorter_than_announced_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let files = CrateFiles::open(dir.path(), 1 << 20).unwrap();
        let data = b"hello".to_vec();
        let (mut w, r) = start(&files, &data);
        w.headers(Some(10)).await.unwrap();
        w.write(&data).await.unwrap();
        assert!(matches!(w.finish().await, Err(FillFailure::Upstream(_))));
        assert!(collect(r).await.is_err());
        assert!(files.lookup(&sha(&data)).is_none());
        assert_eq!(files.reserved_bytes(), 0);
    }
}
