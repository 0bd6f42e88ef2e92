//! Quarantined `.crate` files: proxied files whose version the upstream index no longer lists
//! (a takedown found by a revalidation, see `upstream::cached`). They are moved out of the
//! served crate cache into `<crate cache>/quarantine/`: kept on disk for inspection, never
//! served, not counted against `[cache] disk`, never evicted, never exported in a bundle.
//!
//! Each file `<sha256>.crate` has a record `<sha256>.json` beside it (written to a temp file,
//! fsynced, renamed), listing every removal that named it: registry, crate, version, reason
//! and when. The crate cache is content-addressed and shared by every proxy of the daemon, so
//! one file may be named by several removals (two proxies of one upstream, or two versions
//! with the same bytes); the record collects them all.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The directory name under the crate cache's root.
pub const DIR: &str = "quarantine";

/// One removal that named a quarantined file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedVersion {
    pub registry: String,
    /// The crate's name as the index line spelled it.
    #[serde(rename = "crate")]
    pub krate: String,
    pub version: String,
    /// `crate_removed` (the index file is gone upstream) or `version_removed` (its line is).
    pub reason: String,
    /// When the removal was found (unix seconds).
    pub removed_at: u64,
}

/// A quarantined file and the removals that named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    pub sha256: String,
    /// Bytes of the `.crate`.
    pub size: u64,
    /// When it was moved out of the cache (unix seconds).
    pub quarantined_at: u64,
    pub removals: Vec<QuarantinedVersion>,
}

impl QuarantineRecord {
    /// Whether a removal of `registry`'s `name` (any case) `version` named this file.
    pub fn names(&self, registry: &str, name: &str, version: &str) -> bool {
        self.removals
            .iter()
            .any(|r| r.registry == registry && r.version == version && r.krate.eq_ignore_ascii_case(name))
    }
}

/// The quarantine directory's records, loaded at open and kept in step with the files.
pub(crate) struct Quarantine {
    dir: PathBuf,
    records: BTreeMap<String, QuarantineRecord>,
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn valid_sha(sha: &str) -> bool {
    sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The records in `dir` (a crate cache's `quarantine/`), without opening the cache: for
/// `cargohold quarantine list --data-dir`, which may run beside the daemon. A record whose
/// `.crate` is gone, or that cannot be read, is left out. Sorted by SHA-256.
pub fn read_records(dir: &Path) -> io::Result<Vec<QuarantineRecord>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(sha) = name.strip_suffix(".json").filter(|s| valid_sha(s)) else {
            continue;
        };
        if !dir.join(format!("{sha}.crate")).is_file() {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        match serde_json::from_slice::<QuarantineRecord>(&bytes) {
            Ok(r) if r.sha256 == sha => out.push(r),
            _ => tracing::warn!(file = %entry.path().display(), "unreadable quarantine record left alone"),
        }
    }
    out.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    Ok(out)
}

impl Quarantine {
    /// Opens (creating) `dir` and reads its records; leftover temp files are removed.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let records = read_records(dir)?.into_iter().map(|r| (r.sha256.clone(), r)).collect();
        Ok(Quarantine {
            dir: dir.to_owned(),
            records,
        })
    }

    pub(crate) fn crate_path(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.crate"))
    }

    pub(crate) fn get(&self, sha: &str) -> Option<&QuarantineRecord> {
        self.records.get(sha)
    }

    pub(crate) fn records(&self) -> impl Iterator<Item = &QuarantineRecord> {
        self.records.values()
    }

    /// Adds `removal` to the record of `sha` (made with `size` if new) and writes it durably.
    /// A removal already listed (same registry, crate, version) is not added twice.
    pub(crate) fn record(&mut self, sha: &str, size: u64, removal: QuarantinedVersion) -> io::Result<QuarantineRecord> {
        let mut rec = self.records.get(sha).cloned().unwrap_or_else(|| QuarantineRecord {
            sha256: sha.to_owned(),
            size,
            quarantined_at: removal.removed_at,
            removals: Vec::new(),
        });
        if !rec.names(&removal.registry, &removal.krate, &removal.version) {
            rec.removals.push(removal);
        }
        self.write(rec.clone())?;
        Ok(rec)
    }

    /// Drops the removals of `registry`'s `name` (any case) `version` from `sha`'s record.
    /// `Ok(None)`: no removal named it (nothing changed); `Ok(Some(left))`: how many removals
    /// still name the file (its record rewritten durably when some are left; at none, the
    /// caller puts the file back or forgets it).
    pub(crate) fn drop_removal(
        &mut self,
        sha: &str,
        registry: &str,
        name: &str,
        version: &str,
    ) -> io::Result<Option<usize>> {
        let Some(rec) = self.records.get(sha).filter(|r| r.names(registry, name, version)) else {
            return Ok(None);
        };
        let mut rec = rec.clone();
        rec.removals
            .retain(|r| !(r.registry == registry && r.version == version && r.krate.eq_ignore_ascii_case(name)));
        let left = rec.removals.len();
        if left > 0 {
            self.write(rec)?;
        }
        Ok(Some(left))
    }

    /// Writes `rec` durably (temp file, fsync, rename, fsync of the directory) and keeps it.
    fn write(&mut self, rec: QuarantineRecord) -> io::Result<()> {
        let sha = rec.sha256.clone();
        let tmp = self.dir.join(format!("{sha}.json.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(&rec).map_err(io::Error::other)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(format!("{sha}.json")))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.records.insert(sha, rec);
        Ok(())
    }

    /// Deletes `sha`'s record and `.crate` (either may be gone already); `false` if there was
    /// no record.
    pub(crate) fn forget(&mut self, sha: &str) -> io::Result<bool> {
        if self.records.remove(sha).is_none() {
            return Ok(false);
        }
        for path in [self.dir.join(format!("{sha}.json")), self.crate_path(sha)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}
