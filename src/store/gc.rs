//! Garbage: blobs no version names. They come from a crash between a publish's blob write and
//! its commit, a publish refused after its blob was written (a lost race), or a deleted
//! registry. `cargohold gc` lists them and, with `--apply`, deletes them.
//!
//! It never races a publish: a publish writes (or, for bytes already stored, renews) its
//! blob before it commits, and a blob younger than the grace period is never collected. Just
//! before each delete the blob's time and the references are checked again, and a publish
//! checks its blob after committing and writes it again if it is gone, so even a publish
//! that outlasts the grace period cannot end with a version whose bytes were collected.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{BlobInfo, PrivateStore, StoreResult};

/// What a collection found (and did).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Blobs in the store.
    pub blobs: u64,
    /// Blobs some version names.
    pub referenced: u64,
    /// Unreferenced blobs younger than the grace period (left alone).
    pub young: u64,
    /// Unreferenced blobs old enough to collect.
    pub garbage: Vec<Garbage>,
    /// Their bytes.
    pub garbage_bytes: u64,
    /// How many were deleted (`--apply`).
    pub deleted: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
}

/// One collectable blob.
#[derive(Debug, Clone, Serialize)]
pub struct Garbage {
    pub sha256: String,
    pub len: u64,
    /// Unix seconds.
    pub modified: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Finds blobs no version names and older than `grace`; deletes them if `apply`.
pub async fn collect(store: &PrivateStore, grace: Duration, apply: bool) -> StoreResult<GcReport> {
    // Blobs first, references second: a version committed in between names a blob that
    // was written (or renewed) before the listing's cutoff check could call it old.
    let listed: Vec<BlobInfo> = store.blobs.list().await?;
    let referenced = store.meta.referenced_blobs().await?;
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = GcReport {
        blobs: listed.len() as u64,
        ..GcReport::default()
    };
    for b in listed {
        if referenced.contains(&b.sha256) {
            report.referenced += 1;
        } else if b.modified >= cutoff {
            report.young += 1;
        } else {
            report.garbage_bytes += b.len;
            report.garbage.push(Garbage {
                sha256: b.sha256,
                len: b.len,
                modified: unix(b.modified),
            });
        }
    }
    report.garbage.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    if !apply || report.garbage.is_empty() {
        return Ok(report);
    }
    let referenced = store.meta.referenced_blobs().await?;
    for g in &report.garbage {
        if referenced.contains(&g.sha256) {
            continue;
        }
        match store.blobs.info(&g.sha256).await? {
            Some(now) if now.modified < cutoff => {}
            _ => continue,
        }
        if store.blobs.delete(&g.sha256).await? {
            report.deleted += 1;
            report.deleted_bytes += g.len;
        }
    }
    tracing::info!(
        deleted = report.deleted,
        bytes = report.deleted_bytes,
        "garbage blobs deleted"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{blobs::FileBlobs, conformance, sql::SqlMetadata};
    use std::sync::Arc;

    #[tokio::test]
    async fn gc_passes_the_conformance_suite_on_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = PrivateStore {
            meta: Arc::new(SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap()),
            blobs: Arc::new(FileBlobs::open(dir.path().join("blobs")).unwrap()),
        };
        conformance::gc(&store).await;
    }
}
