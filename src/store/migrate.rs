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
use super::{Counts, Metadata, Snapshot, StoreError, StoreResult};

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

/// The marker [`copy_store`] records with its import into the target.
pub const COPY_MARKER: &str = "copied-from-embedded-store";

/// What [`copy_store`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    /// What both stores hold now (equal by the check).
    pub counts: Counts,
    /// Blobs some version names.
    pub blobs: u64,
    /// Of those, sent to the target by this run (the others were there).
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Versions whose blob is missing from the source (carried over as they were).
    pub missing_blobs: u64,
    /// Whether the metadata was imported by this run (`false`: an earlier run did).
    pub imported: bool,
}

/// `snapshot` in a canonical order, without revisions (which an import restarts), for
/// comparing two stores.
fn normalized(mut s: Snapshot) -> Snapshot {
    s.registries.sort_by(|a, b| a.name.cmp(&b.name));
    s.crates
        .sort_by_key(|(r, c)| (r.clone(), crate::index::canonical_name(&c.name)));
    for (_, c) in &mut s.crates {
        c.revision = 0;
    }
    s.users.sort_by(|a, b| a.login.cmp(&b.login));
    s.tokens.sort_by(|a, b| a.id.cmp(&b.id));
    s
}

/// Copies the whole of `from` (the embedded store of a data dir) into `to` (a shared one):
/// first every blob a version names, each checked against its name as it is written and
/// skipped when the target has it already; then the metadata in one transaction with
/// [`COPY_MARKER`]; then the check: equal counts, equal contents, and every blob read back
/// from the target hashes to its name. Idempotent: a second run finds the marker and the
/// blobs and changes nothing; a run cut short resumes (the blobs sent stay, the metadata was
/// all or nothing). A target that holds other data is refused before anything is written to
/// its metadata. `progress` is told of each blob sent (its length).
pub async fn copy_store(
    from: &super::PrivateStore,
    to: &super::PrivateStore,
    progress: &mut (dyn FnMut(u64) + Send),
) -> StoreResult<Copied> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;

    let snapshot = from.meta.snapshot().await?;
    let expected = snapshot.counts();
    let have = to.meta.counts().await?;
    let marked = to.meta.has_marker(COPY_MARKER).await?;
    let want = normalized(snapshot.clone());
    if marked {
        if normalized(to.meta.snapshot().await?) != want {
            return Err(StoreError::Conflict(
                "the target was filled by an earlier migration but holds other data now (the source changed since, or the target took writes); nothing was copied".into(),
            ));
        }
    } else if have != Counts::default() {
        return Err(StoreError::Conflict(format!(
            "the target already holds data that did not come from this migration ({} registries, {} crates, {} users, {} tokens); nothing was copied",
            have.registries, have.crates, have.users, have.tokens
        )));
    }

    let mut names: Vec<String> = snapshot
        .crates
        .iter()
        .flat_map(|(_, c)| c.versions.iter().map(|v| v.line.cksum.clone()))
        .collect();
    names.sort();
    names.dedup();
    let mut out = Copied {
        blobs: names.len() as u64,
        ..Copied::default()
    };
    let mut present = Vec::new();
    for sha in &names {
        let Some(src) = from.blobs.info(sha).await? else {
            out.missing_blobs += 1;
            continue;
        };
        present.push(sha.clone());
        if to.blobs.info(sha).await?.is_some_and(|t| t.len == src.len) {
            continue;
        }
        let Some(mut blob) = from.blobs.get(sha).await? else {
            return Err(StoreError::Io(format!(
                "blob {sha} vanished from the source while copying"
            )));
        };
        let (got, len) = to.blobs.put_stream(&mut blob.reader).await?;
        if got != *sha {
            // The bytes under that name in the source do not hash to it; what was written is
            // named by its own hash and nothing names it.
            return Err(StoreError::Corrupt(format!(
                "the source blob {sha} holds bytes hashing to {got}; nothing refers to the copy, and the metadata was not copied"
            )));
        }
        out.blobs_copied += 1;
        out.bytes_copied += len;
        progress(len);
    }
    if out.missing_blobs > 0 {
        tracing::warn!(
            missing = out.missing_blobs,
            "some versions have no blob in the source; they are carried over as they were, and their downloads stay 404s"
        );
    }

    if !marked {
        out.imported = to.meta.import(&snapshot, COPY_MARKER).await?;
        if !out.imported || normalized(to.meta.snapshot().await?) != want {
            return Err(StoreError::Conflict(
                "another migration into the same target ran at the same time, with other data".into(),
            ));
        }
    }
    let counts = to.meta.counts().await?;
    if counts != expected {
        return Err(StoreError::Corrupt(format!(
            "the target reads back {counts:?} where the source has {expected:?}"
        )));
    }
    // Every blob, read back from the target, hashes to its name.
    let mut buf = vec![0u8; 64 << 10];
    for sha in &present {
        let Some(mut blob) = to.blobs.get(sha).await? else {
            return Err(StoreError::Corrupt(format!(
                "blob {sha} is missing from the target after the copy"
            )));
        };
        let mut hasher = sha2::Sha256::new();
        loop {
            let n = blob.reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hex::encode(hasher.finalize()) != *sha {
            return Err(StoreError::Corrupt(format!(
                "blob {sha} in the target does not hash to its name"
            )));
        }
    }
    out.counts = counts;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;
    use crate::store::sql::SqlMetadata;

    use std::sync::Arc;

    use crate::store::blobs::FileBlobs;
    use crate::store::{CrateChange, PrivateStore};

    async fn embedded(dir: &Path) -> PrivateStore {
        PrivateStore {
            meta: Arc::new(SqlMetadata::open_sqlite(&dir.join("registry.db")).await.unwrap()),
            blobs: Arc::new(FileBlobs::open(dir.join("blobs")).unwrap()),
        }
    }

    /// Publishes `name@vers` with a real blob of `bytes`.
    async fn publish_blob(store: &PrivateStore, registry: &str, name: &str, vers: &str, bytes: &'static [u8]) {
        let sha = store.blobs.put(bytes::Bytes::from_static(bytes)).await.unwrap();
        let mut v = conformance::version(name, vers, "alice");
        v.line.cksum = sha;
        let canonical = crate::index::canonical_name(name);
        let prior = store.meta.get_crate(registry, &canonical).await.unwrap();
        let change = CrateChange::Publish {
            name: name.into(),
            version: v,
            description: None,
            keywords: Vec::new(),
        };
        store
            .meta
            .change_crate(registry, &canonical, prior.map(|p| p.revision), &change)
            .await
            .unwrap();
    }

    async fn filled_source(dir: &Path) -> PrivateStore {
        let src = embedded(dir).await;
        publish_blob(&src, "local", "Foo", "1.0.0", b"foo one").await;
        publish_blob(&src, "local", "Foo", "1.1.0", b"foo two").await;
        publish_blob(&src, "team", "bar", "0.1.0", b"bar").await;
        // The same bytes under two versions: one blob.
        publish_blob(&src, "team", "bar", "0.2.0", b"bar").await;
        src.meta.create_user("alice", Some("Alice".into())).await.unwrap();
        src
    }

    /// Copies, resumes, repeats and refuses on `target` (empty), as the CLI does.
    pub(crate) async fn copy_checks(target: &PrivateStore) {
        let dir = tempfile::tempdir().unwrap();
        let src = filled_source(dir.path()).await;
        // A copy cut short after one blob: that blob is there, the metadata is not.
        let one = src
            .blobs
            .get(&src.blobs.list().await.unwrap()[0].sha256)
            .await
            .unwrap()
            .unwrap();
        let mut reader = one.reader;
        target.blobs.put_stream(&mut reader).await.unwrap();
        let mut sent = 0u64;
        let done = copy_store(&src, target, &mut |n| sent += n).await.unwrap();
        assert!(done.imported);
        assert_eq!(
            (done.blobs, done.blobs_copied, done.missing_blobs),
            (3, 2, 0),
            "{done:?}"
        );
        assert_eq!(sent, done.bytes_copied);
        assert_eq!(done.counts, src.meta.counts().await.unwrap());
        assert_eq!(done.counts.versions, 4);
        // Again: nothing changes.
        let again = copy_store(&src, target, &mut |_| {}).await.unwrap();
        assert!(!again.imported);
        assert_eq!((again.blobs_copied, again.counts), (0, done.counts));
        // A lost blob in the target is sent again by the next run.
        let lost = src.blobs.list().await.unwrap()[1].sha256.clone();
        assert!(target.blobs.delete(&lost).await.unwrap());
        assert_eq!(copy_store(&src, target, &mut |_| {}).await.unwrap().blobs_copied, 1);
        // The source moved on: the target now holds other data, and is refused.
        publish_blob(&src, "local", "Foo", "2.0.0", b"foo three").await;
        let e = copy_store(&src, target, &mut |_| {}).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        // A target filled by something else is refused before its metadata is written.
        let other_dir = tempfile::tempdir().unwrap();
        let other = embedded(other_dir.path()).await;
        other.meta.create_user("mallory", None).await.unwrap();
        let e = copy_store(&src, &other, &mut |_| {}).await.unwrap_err().to_string();
        assert!(e.contains("did not come from this migration"), "{e}");
        assert_eq!(other.meta.counts().await.unwrap().crates, 0);
    }

    #[tokio::test]
    async fn an_embedded_store_copies_once_resumes_and_refuses_other_data() {
        let dir = tempfile::tempdir().unwrap();
        copy_checks(&embedded(dir.path()).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_embedded_store_copies_into_postgres_and_s3() {
        let Some(url) = crate::store::sql::tests::fresh_postgres("the copy into PostgreSQL + S3").await else {
            return;
        };
        let Some((config, creds)) = crate::store::s3::tests::test_bucket("the copy into PostgreSQL + S3") else {
            return;
        };
        let spool = tempfile::tempdir().unwrap();
        let target = PrivateStore {
            meta: Arc::new(SqlMetadata::open_postgres(&url).await.unwrap()),
            blobs: Arc::new(
                crate::store::s3::S3Blobs::open(&config, &creds, spool.path().to_owned())
                    .await
                    .unwrap(),
            ),
        };
        copy_checks(&target).await;
    }

    #[tokio::test]
    async fn a_source_blob_that_does_not_match_its_name_stops_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let src = filled_source(dir.path()).await;
        // Flip the bytes of one blob file on disk.
        let sha = src.blobs.list().await.unwrap()[0].sha256.clone();
        let path = dir.path().join("blobs").join(&sha[..2]).join(&sha[2..4]).join(&sha);
        std::fs::write(&path, b"tampered").unwrap();
        let target_dir = tempfile::tempdir().unwrap();
        let target = embedded(target_dir.path()).await;
        let e = copy_store(&src, &target, &mut |_| {}).await.unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
        assert_eq!(
            target.meta.counts().await.unwrap(),
            Counts::default(),
            "no metadata copied"
        );
    }

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
