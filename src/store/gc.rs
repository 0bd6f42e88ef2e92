//! Garbage: blobs no version names. They come from a crash between a publish's blob write and
//! its commit, a publish refused after its blob was written (a lost race), or a deleted
//! registry. `cargohold gc` lists them and, with `--apply`, deletes them.
//!
//! It never races a publish: a publish writes (or, for bytes already stored, renews) its
//! blob before it commits, and a blob younger than the grace period is never collected.
//! Deleting takes two steps: the blob is quarantined (out of sight), then the references are
//! read again and it is put back if a version names it by now. A publish checks its blob
//! after committing and writes it again if it is gone, so whatever the interleaving, no
//! version ends up naming bytes that were collected.

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
    // Two steps. First each candidate, if still old, is quarantined (out of sight: a publish
    // of the same bytes from now on writes it anew, or finds it gone after its commit and
    // writes it again). Then the references are read once more: what a version names by now
    // is put back, the rest is deleted for good.
    let mut held = Vec::new();
    for g in &report.garbage {
        match store.blobs.info(&g.sha256).await? {
            Some(now) if now.modified < cutoff => {}
            _ => continue,
        }
        if store.blobs.quarantine(&g.sha256).await? {
            held.push(g);
        }
    }
    let referenced = store.meta.referenced_blobs().await?;
    for g in held {
        if referenced.contains(&g.sha256) {
            store.blobs.restore(&g.sha256).await?;
        } else {
            store.blobs.purge(&g.sha256).await?;
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

    #[tokio::test]
    async fn gc_beside_the_daemon_leaves_its_writes_in_flight_alone() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let daemon = FileBlobs::open(root.clone()).unwrap();
        let (mut w, mut r) = tokio::io::duplex(64);
        let d2 = daemon.clone();
        let h = tokio::spawn(async move { crate::store::Blobs::put_stream(&d2, &mut r).await });
        w.write_all(b"hello").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // `cargohold gc` opens the same store while the daemon runs.
        let _gc = FileBlobs::attach(root.clone());
        drop(w);
        let res = h.await.unwrap();
        assert!(
            res.is_ok(),
            "the daemon's put failed because gc opened the store: {res:?}"
        );
    }

    struct HookBlobs {
        inner: FileBlobs,
        meta: Arc<SqlMetadata>,
        fire: std::sync::atomic::AtomicBool,
        bytes: bytes::Bytes,
    }

    #[async_trait::async_trait]
    impl crate::store::Blobs for HookBlobs {
        async fn put(&self, b: bytes::Bytes) -> StoreResult<String> {
            self.inner.put(b).await
        }
        async fn put_stream(&self, r: &mut (dyn tokio::io::AsyncRead + Send + Unpin)) -> StoreResult<(String, u64)> {
            self.inner.put_stream(r).await
        }
        async fn get(&self, s: &str) -> StoreResult<Option<crate::store::BlobReader>> {
            self.inner.get(s).await
        }
        async fn exists(&self, s: &str) -> StoreResult<bool> {
            self.inner.exists(s).await
        }
        async fn info(&self, s: &str) -> StoreResult<Option<BlobInfo>> {
            self.inner.info(s).await
        }
        async fn list(&self) -> StoreResult<Vec<BlobInfo>> {
            self.inner.list().await
        }
        async fn delete(&self, s: &str) -> StoreResult<bool> {
            self.inner.delete(s).await
        }
        async fn quarantine(&self, s: &str) -> StoreResult<bool> {
            use crate::store::{CrateChange, Metadata};
            let held = self.inner.quarantine(s).await;
            if self.fire.swap(false, std::sync::atomic::Ordering::SeqCst) {
                // A publish of the same bytes runs entirely between gc's age check and its
                // final decision: put, commit, post-commit check (which writes it again).
                let sha = self.inner.put(self.bytes.clone()).await.unwrap();
                let mut v = conformance::version("raced", "1.0.0", "alice");
                v.line.cksum = sha.clone();
                let change = CrateChange::Publish {
                    name: "raced".into(),
                    version: v,
                    description: None,
                    keywords: vec![],
                };
                self.meta.change_crate("local", "raced", None, &change).await.unwrap();
                assert!(self.inner.exists(&sha).await.unwrap());
            }
            held
        }
        async fn restore(&self, s: &str) -> StoreResult<()> {
            self.inner.restore(s).await
        }
        async fn purge(&self, s: &str) -> StoreResult<()> {
            self.inner.purge(s).await
        }
    }

    #[tokio::test]
    async fn a_publish_racing_gc_keeps_its_blob() {
        use crate::store::{Blobs, Metadata};
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap());
        let inner = FileBlobs::open(dir.path().join("blobs")).unwrap();
        let bytes = bytes::Bytes::from_static(b"same bytes as an old orphan");
        let sha = inner.put(bytes.clone()).await.unwrap();
        let p = dir.path().join("blobs").join(&sha[..2]).join(&sha[2..4]).join(&sha);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        let hb = Arc::new(HookBlobs {
            inner,
            meta: meta.clone(),
            fire: true.into(),
            bytes,
        });
        let store = PrivateStore {
            meta: meta.clone(),
            blobs: hb.clone(),
        };
        let r = collect(&store, Duration::from_secs(3600), true).await.unwrap();
        let referenced = meta.referenced_blobs().await.unwrap();
        assert!(referenced.contains(&sha), "the racing publish committed");
        assert!(
            hb.exists(&sha).await.unwrap(),
            "a committed version names a deleted blob (deleted={})",
            r.deleted
        );
        assert_eq!(r.deleted, 0);
    }
}
