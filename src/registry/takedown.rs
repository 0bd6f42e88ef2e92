//! Upstream takedowns, the registry's side: every proxy reports the versions its upstream
//! removed (`upstream::cached::Removal`, found by a revalidation) to the sink made here. The
//! sink drops the version's bytes from the memory tier and logs and counts the removal at
//! once; a task ([`RegistryService::start_takedown_reports`]) records each as an
//! `upstream.removed` webhook event, at most once per `crate@version@cksum` across nodes and
//! restarts. A quarantined version the upstream lists again (`Finding::Relisted`) is counted
//! and becomes an `upstream.relisted` event the same way. The quarantine of the `.crate` (`cache::quarantine`) is listed, released and
//! purged here for the admin API.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::error::{RegistryError, RegistryResult};
use super::RegistryService;
use crate::cache::crate_files::CrateFiles;
use crate::cache::quarantine::QuarantineRecord;
use crate::cache::MemCache;
use crate::store::hooks::HookEvent;
use crate::upstream::cached::{Finding, RemovalSink};

/// The metric counting removals by registry and reason.
pub const REMOVED_METRIC: &str = "cargohold_upstream_removed_total";
/// The metric counting quarantined versions listed again by their upstream, by registry.
pub const RELISTED_METRIC: &str = "cargohold_upstream_relisted_total";

/// The findings waiting to be recorded as events (taken by the reporting task).
pub(super) type Pending = Mutex<Option<UnboundedReceiver<Finding>>>;

/// The sink every proxy reports to, and the receiving end for the reporting task.
pub(super) fn sink(crate_bytes: MemCache<String, Bytes>) -> (RemovalSink, Pending) {
    let (tx, rx) = unbounded_channel::<Finding>();
    let sink: RemovalSink = Arc::new(move |f: &Finding| {
        let r = match f {
            Finding::Removed(r) => r,
            Finding::Relisted(r) => {
                // Logged by the proxy that found it; counted and reported here.
                crate::telemetry::METRICS.add(RELISTED_METRIC, &[("registry", &r.registry)], 1);
                let _ = tx.send(f.clone());
                return;
            }
        };
        // The memory tier is keyed by checksum alone: without this a removed version could
        // still be served from memory by whatever still finds its checksum.
        crate_bytes.invalidate(&r.cksum);
        tracing::warn!(
            registry = %r.registry,
            krate.name = %r.name,
            krate.version = %r.version,
            sha256 = %r.cksum,
            reason = r.reason.as_str(),
            quarantined = r.quarantined.is_some(),
            "the upstream index no longer lists this version; it is no longer served"
        );
        crate::telemetry::METRICS.add(
            REMOVED_METRIC,
            &[("registry", &r.registry), ("reason", r.reason.as_str())],
            1,
        );
        let _ = tx.send(f.clone());
    });
    (sink, Mutex::new(Some(rx)))
}

/// One row per removal of a quarantined file (the API's and the CLI's shape).
pub fn quarantine_rows(records: &[QuarantineRecord]) -> Vec<Value> {
    let mut rows = Vec::new();
    for rec in records {
        for r in &rec.removals {
            rows.push(json!({
                "registry": r.registry,
                "crate": r.krate,
                "version": r.version,
                "cksum": rec.sha256,
                "reason": r.reason,
                "removed_at": r.removed_at,
                "quarantined_at": rec.quarantined_at,
                "size": rec.size,
            }));
        }
    }
    rows
}

/// The first wait before recording a removal again after the store failed; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Records the finding `f` as an `upstream.removed` (or `upstream.relisted`) event, trying
/// again (waits from `first`, doubling) while the store fails: the revalidation that found it
/// does not find it again, so an event not recorded now would never be sent. `false` when the
/// service is gone.
async fn report_removal(svc: &Weak<RegistryService>, f: &Finding, first: Duration) -> bool {
    let mut wait = first;
    loop {
        let Some(svc) = svc.upgrade() else { return false };
        if svc.record_finding(f).await {
            return true;
        }
        drop(svc);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// How many episodes of one version's removals and relistings are counted at most (a bound
/// on the outbox lookups; an upstream flapping more often within the webhook retention is
/// reported up to here).
const MAX_EPISODES: u64 = 64;

fn check_sha(sha: &str) -> RegistryResult<()> {
    if sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(RegistryError::BadRequest(format!(
            "`{sha}` is not a SHA-256 (64 lowercase hex digits)"
        )))
    }
}

impl RegistryService {
    /// Starts the task that records each reported removal as an `upstream.removed` event
    /// (once per `crate@version@cksum`). Removals found before it runs wait for it.
    pub fn start_takedown_reports(self: &Arc<Self>) {
        let Some(mut rx) = self.takedowns.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                if !report_removal(&weak, &r, RETRY_FIRST).await {
                    return;
                }
            }
        });
    }

    /// Records the finding `f` once across nodes and restarts. A version's removals and
    /// relistings alternate, and each is one episode: the key is `crate@version@cksum#k`, where
    /// the k-th removal follows k recorded relistings and the k-th relisting follows the
    /// (k+1)-th removal. Every node counts the same recorded events, so each episode is
    /// reported once, and an upstream that takes a version down again after listing it again
    /// is reported again (a receiver's last event is the version's state). `false` when the
    /// store failed.
    async fn record_finding(&self, f: &Finding) -> bool {
        let (registry, name, version, cksum) = match f {
            Finding::Removed(r) => (&r.registry, &r.name, &r.version, &r.cksum),
            Finding::Relisted(r) => (&r.registry, &r.name, &r.version, &r.cksum),
        };
        let triple = format!("{}@{version}@{cksum}", name.to_ascii_lowercase());
        let (this, other) = match f {
            Finding::Removed(_) => ("upstream.removed", "upstream.relisted"),
            Finding::Relisted(_) => ("upstream.relisted", "upstream.removed"),
        };
        // The other kind's events recorded so far.
        let mut seen = 0;
        while seen < MAX_EPISODES {
            let id = crate::store::hooks::once_id(other, registry, &format!("{triple}#{seen}"));
            match self.store.meta.has_event(&id).await {
                Ok(true) => seen += 1,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(event = this, registry = %registry, error = %e, "cannot read the webhook outbox");
                    return false;
                }
            }
        }
        // Deliveries are not ordered: the episode in the payload lets a receiver order a
        // version's findings.
        let (k, event) = match f {
            Finding::Removed(r) => (
                seen,
                HookEvent::upstream_removed(
                    registry,
                    name,
                    version,
                    cksum,
                    r.reason.as_str(),
                    r.quarantined.is_some(),
                    seen,
                ),
            ),
            Finding::Relisted(r) => {
                let k = seen.saturating_sub(1);
                (
                    k,
                    HookEvent::upstream_relisted(registry, name, version, cksum, r.released, k),
                )
            }
        };
        self.report_once(&format!("{triple}#{k}"), event).await
    }

    /// The quarantined `.crate` files of this node, one row per removal that named each.
    pub fn quarantine_list(&self) -> Value {
        json!({ "quarantine": quarantine_rows(&self.caches.crates.quarantined()) })
    }

    /// Deletes a quarantined file and its record.
    pub async fn purge_quarantined(&self, sha: &str) -> RegistryResult<()> {
        self.on_quarantined(sha, |crates, sha| crates.purge_quarantined(sha))
            .await?;
        tracing::warn!(sha256 = sha, "quarantined crate file purged");
        Ok(())
    }

    /// Puts a quarantined file back into the crate cache: served again wherever an index
    /// lists its checksum.
    pub async fn release_quarantined(&self, sha: &str) -> RegistryResult<()> {
        self.on_quarantined(sha, |crates, sha| crates.release_quarantined(sha))
            .await?;
        tracing::warn!(sha256 = sha, "quarantined crate file released into the cache");
        Ok(())
    }

    /// Runs `op` on the quarantined file `sha` on the blocking pool; 404 when there is none.
    async fn on_quarantined(
        &self,
        sha: &str,
        op: impl FnOnce(&CrateFiles, &str) -> std::io::Result<bool> + Send + 'static,
    ) -> RegistryResult<()> {
        check_sha(sha)?;
        let crates = self.caches.crates.clone();
        let owned = sha.to_owned();
        let io = |e: String| RegistryError::Store(crate::store::StoreError::Io(e));
        let found = tokio::task::spawn_blocking(move || op(&crates, &owned))
            .await
            .map_err(|e| io(e.to_string()))?
            .map_err(|e| io(e.to_string()))?;
        if !found {
            return Err(RegistryError::NotFound(format!("no quarantined file {sha}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::testing::TestMeta;
    use crate::store::Metadata;
    use crate::upstream::cached::{Removal, RemovalReason};

    /// A removal found while the store is down is recorded once the store is back (the
    /// revalidation that found it will not find it again), and only once.
    #[tokio::test]
    async fn a_removal_found_while_the_store_fails_is_recorded_when_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(TestMeta::sqlite(&dir.path().join("registry.db")).await);
        meta.record_failures.store(3, Ordering::SeqCst);
        let svc = crate::registry::testing::service(meta.clone(), dir.path(), None).await;
        let removal = Finding::Removed(Removal {
            registry: "crates-io".into(),
            name: "Evil_Crate".into(),
            version: "1.0.0".into(),
            cksum: "ab".repeat(32),
            reason: RemovalReason::CrateRemoved,
            quarantined: Some(10),
        });
        assert!(report_removal(&Arc::downgrade(&svc), &removal, Duration::from_millis(1)).await);
        assert_eq!(
            meta.record_failures.load(Ordering::SeqCst),
            0,
            "each failure was tried again"
        );
        let pending = meta.outbox_pending(10).await.unwrap();
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].1.event, "upstream.removed");
        // Reported again (another node, a restart): still one event.
        assert!(report_removal(&Arc::downgrade(&svc), &removal, Duration::from_millis(1)).await);
        assert_eq!(meta.outbox_pending(10).await.unwrap().len(), 1);
    }

    /// An upstream that flaps (a wrong 404, the file back, the 404 again, back again): each
    /// removal and relisting is reported once, in turn, however many nodes report it, so a
    /// receiver's last event is the version's state.
    #[tokio::test]
    async fn each_removal_and_relisting_of_a_flapping_version_is_reported_once() {
        use crate::upstream::cached::Relisting;
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(TestMeta::sqlite(&dir.path().join("registry.db")).await);
        let svc = crate::registry::testing::service(meta.clone(), dir.path(), None).await;
        let weak = Arc::downgrade(&svc);
        let removed = Finding::Removed(Removal {
            registry: "crates-io".into(),
            name: "Flaky".into(),
            version: "1.0.0".into(),
            cksum: "ef".repeat(32),
            reason: RemovalReason::CrateRemoved,
            quarantined: Some(10),
        });
        let relisted = Finding::Relisted(Relisting {
            registry: "crates-io".into(),
            name: "flaky".into(),
            version: "1.0.0".into(),
            cksum: "ef".repeat(32),
            released: true,
        });
        for f in [&removed, &removed, &relisted, &relisted, &removed, &relisted, &relisted] {
            // Each twice: another node finding the same thing.
            assert!(report_removal(&weak, f, Duration::from_millis(1)).await);
        }
        // Two episodes of each, under their own ids (the outbox orders events by the
        // millisecond, which these share, so the ids say which is which).
        assert_eq!(meta.outbox_pending(100).await.unwrap().len(), 4);
        let triple = format!("flaky@1.0.0@{}", "ef".repeat(32));
        for event in ["upstream.removed", "upstream.relisted"] {
            for k in 0..2 {
                let id = crate::store::hooks::once_id(event, "crates-io", &format!("{triple}#{k}"));
                assert!(meta.has_event(&id).await.unwrap(), "{event} #{k}");
            }
        }
    }

    /// With the service gone (shutdown), a failing store does not keep the task alive.
    #[tokio::test]
    async fn the_retry_ends_with_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(TestMeta::sqlite(&dir.path().join("registry.db")).await);
        meta.record_failures.store(u32::MAX, Ordering::SeqCst);
        let svc = crate::registry::testing::service(meta.clone(), dir.path(), None).await;
        let weak = Arc::downgrade(&svc);
        let removal = Finding::Removed(Removal {
            registry: "crates-io".into(),
            name: "foo".into(),
            version: "1.0.0".into(),
            cksum: "cd".repeat(32),
            reason: RemovalReason::VersionRemoved,
            quarantined: None,
        });
        let task = tokio::spawn(async move { report_removal(&weak, &removal, Duration::from_millis(1)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(svc);
        assert!(!task.await.unwrap(), "the retry stops once the service is gone");
    }
}
