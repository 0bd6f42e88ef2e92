//! Moving a data dir written by an earlier release (sled at `<data_dir>/store/db`) into the
//! SQL store, on the first start of this release.
//!
//! One transaction imports every registry, crate, version, owner, user and token, together
//! with a marker. Blobs stay where they are (the same `blobs/` layout). The counts of both
//! sides are compared; only then is the sled directory moved aside to
//! `db.migrated-<unix seconds>`. A crash before the commit leaves the SQL store empty and the
//! sled store as it was: the next start does it again. A crash after the commit but before
//! the move finds the marker: nothing is imported twice, the counts are checked again and the
//! move is done.

use std::path::Path;

use super::sled::SledMetadata;
use super::{Counts, Metadata, StoreError, StoreResult};

/// The marker recorded with the import.
pub const SLED_MARKER: &str = "migrated-from-sled";

/// Whether `<dir>/db` holds a sled store (of an earlier release).
pub fn sled_store_present(dir: &Path) -> bool {
    let sled_dir = dir.join("db");
    sled_dir.join("conf").exists() || sled_dir.join("db").exists()
}

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub counts: Counts,
    /// Where the sled store was moved.
    pub moved_to: std::path::PathBuf,
    /// Versions whose blob is missing (carried over as they were).
    pub missing_blobs: usize,
}

/// Migrates `<dir>/db` (sled) into `meta` if it is there; `Ok(None)` if there is nothing to
/// migrate.
pub async fn from_sled_if_present(dir: &Path, meta: &dyn Metadata) -> StoreResult<Option<Migrated>> {
    let sled_dir = dir.join("db");
    if !sled_store_present(dir) {
        return Ok(None);
    }
    tracing::info!(from = %sled_dir.display(), "found the store of an earlier release (sled); migrating it into the SQL store");
    let sled = SledMetadata::open(dir).map_err(|e| {
        StoreError::Io(format!(
            "cannot open the earlier store at {} to migrate it (is an older cargohold still running on this data directory?): {e}",
            sled_dir.display()
        ))
    })?;
    let snapshot = sled.snapshot().await?;
    let expected = snapshot.counts();
    let blob_dir = dir.join("blobs");
    let missing_blobs = snapshot
        .crates
        .iter()
        .flat_map(|(_, c)| c.versions.iter())
        .filter(|v| {
            let c = &v.line.cksum;
            !(super::is_blob_name(c) && blob_dir.join(&c[..2]).join(&c[2..4]).join(c).exists())
        })
        .count();
    if missing_blobs > 0 {
        tracing::warn!(missing_blobs, "some versions in the earlier store have no blob; they are carried over as they were, and their downloads stay 404s");
    }
    let imported = meta.import(&snapshot, SLED_MARKER).await.map_err(|e| {
        StoreError::Io(format!(
            "migrating the earlier store failed ({e}); nothing was imported and the earlier store at {} is untouched: the migration is retried at the next start. If {} holds data that did not come from this migration, move it away first",
            sled_dir.display(),
            dir.join("registry.db").display()
        ))
    })?;
    let have = meta.counts().await?;
    if have != expected {
        let advice = if imported {
            format!(
                "the import was just committed yet reads back differently, which should not happen; keep both {} and {} for a report, and restore the data dir from its backup to go on",
                sled_dir.display(),
                dir.join("registry.db").display()
            )
        } else {
            format!(
                "the SQL store already holds an import of an earlier store, and {} no longer matches it (was an earlier release started on this data dir again after the upgrade?). The SQL store is the one this release uses: if it holds what you want, move {} aside and start again; do not delete registry.db",
                sled_dir.display(),
                sled_dir.display()
            )
        };
        return Err(StoreError::Corrupt(format!(
            "migration check failed: the earlier store holds {expected:?} but the SQL store holds {have:?}; {advice}"
        )));
    }
    sled.close().await?;
    drop(sled);
    let moved_to = dir.join(format!("db.migrated-{}", super::now_secs()));
    std::fs::rename(&sled_dir, &moved_to)?;
    std::fs::File::open(dir)?.sync_all()?;
    tracing::info!(
        registries = expected.registries,
        crates = expected.crates,
        versions = expected.versions,
        owners = expected.owners,
        users = expected.users,
        tokens = expected.tokens,
        imported_now = imported,
        moved_to = %moved_to.display(),
        "migrated the earlier store into the SQL store; the old files are kept aside and can be deleted once you are satisfied"
    );
    Ok(Some(Migrated {
        counts: expected,
        moved_to,
        missing_blobs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;
    use crate::store::sql::SqlMetadata;

    #[tokio::test]
    async fn a_sled_store_moves_into_sql_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sled = SledMetadata::open(dir.path()).unwrap();
            conformance::publish_one(&sled, "local", "Foo", "1.0.0").await;
            conformance::publish_one(&sled, "local", "Foo", "1.1.0").await;
            conformance::publish_one(&sled, "team", "bar", "0.1.0").await;
            sled.create_user("alice", None).await.unwrap();
            sled.close().await.unwrap();
        }
        let sql = SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap();
        let done = from_sled_if_present(dir.path(), &sql).await.unwrap().expect("migrated");
        assert_eq!(done.counts.crates, 2);
        assert_eq!(done.counts.versions, 3);
        assert_eq!(done.missing_blobs, 3);
        assert!(!dir.path().join("db").exists(), "the old store is moved aside");
        assert!(done.moved_to.exists());
        assert_eq!(sql.get_crate("local", "foo").await.unwrap().unwrap().versions.len(), 2);
        // Nothing left to migrate on the next start.
        assert!(from_sled_if_present(dir.path(), &sql).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_committed_import_is_not_repeated_when_the_move_did_not_happen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sled = SledMetadata::open(dir.path()).unwrap();
            conformance::publish_one(&sled, "local", "foo", "1.0.0").await;
            sled.close().await.unwrap();
        }
        let sql = SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap();
        // As if a first start committed the import and crashed before moving the old store.
        let snap = SledMetadata::open(dir.path()).unwrap().snapshot().await.unwrap();
        assert!(sql.import(&snap, SLED_MARKER).await.unwrap());
        let done = from_sled_if_present(dir.path(), &sql).await.unwrap().expect("finished");
        assert_eq!(done.counts.versions, 1);
        assert_eq!(sql.counts().await.unwrap().versions, 1, "imported once");
    }

    #[tokio::test]
    async fn sled_and_sql_snapshots_import_into_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledMetadata::open(&dir.path().join("a")).unwrap();
        conformance::publish_one(&sled, "local", "Foo_Bar", "1.0.0").await;
        conformance::publish_one(&sled, "local", "Foo_Bar", "2.0.0+b").await;
        sled.create_user("alice", Some("A".into())).await.unwrap();
        let sql = SqlMetadata::open_sqlite(&dir.path().join("b.db")).await.unwrap();
        conformance::import_into(&sled, &sql).await;
        let back = SledMetadata::open(&dir.path().join("c")).unwrap();
        conformance::import_into(&sql, &back).await;
    }
}
