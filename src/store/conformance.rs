//! The store conformance suite: what every [`Metadata`] and [`Blobs`] backend must do,
//! written against the traits only, so each backend runs the same checks (the embedded SQLite
//! and file blobs, the sled store of earlier releases, and shared backends next to them).
//! A failed check panics with what went wrong; call from a test.

use std::collections::HashSet;

use futures_util::future::join_all;
use tokio::io::AsyncReadExt;

use super::{Blobs, CrateChange, CrateRecord, Metadata, Snapshot, StoreError, TokenRecord, VersionRecord};
use crate::config::{RegistryKind, RegistrySpec};
use crate::index::{canonical_name, IndexLine};

/// A version record of `name@vers` published by `by`.
pub fn version(name: &str, vers: &str, by: &str) -> VersionRecord {
    VersionRecord {
        line: IndexLine {
            name: name.into(),
            vers: vers.into(),
            deps: Vec::new(),
            cksum: format!("{:064x}", u128::from(crc(vers)) + u128::from(crc(name)) * 7),
            features: Default::default(),
            yanked: false,
            links: None,
            v: 2,
            rust_version: None,
            pubtime: None,
        },
        published_by: by.into(),
    }
}

fn crc(s: &str) -> u64 {
    s.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    })
}

/// Publishes `name@vers` as a registry does: read, decide, change at the revision read, and
/// on a conflict read and decide again. `Ok(false)` if the release exists.
pub async fn publish(
    meta: &dyn Metadata,
    registry: &str,
    name: &str,
    vers: &str,
    by: &str,
) -> Result<bool, StoreError> {
    let canonical = canonical_name(name);
    for _ in 0..64 {
        let prior = meta.get_crate(registry, &canonical).await?;
        let release = vers.split('+').next().unwrap_or(vers);
        if prior.as_ref().is_some_and(|r| {
            r.versions
                .iter()
                .any(|v| v.line.vers.split('+').next() == Some(release))
        }) {
            return Ok(false);
        }
        let change = CrateChange::Publish {
            name: name.into(),
            version: version(name, vers, by),
            description: Some(format!("{name} crate")),
            keywords: vec!["kw".into()],
        };
        match meta
            .change_crate(registry, &canonical, prior.map(|r| r.revision), &change)
            .await
        {
            Ok(_) => return Ok(true),
            Err(StoreError::Conflict(_)) => tokio::task::yield_now().await,
            Err(e) => return Err(e),
        }
    }
    panic!("publish of {name}@{vers} kept conflicting");
}

/// Publishes one version (panics on failure).
pub async fn publish_one(meta: &dyn Metadata, registry: &str, name: &str, vers: &str) {
    assert!(publish(meta, registry, name, vers, "alice").await.unwrap());
}

async fn change_with_retry(meta: &dyn Metadata, registry: &str, canonical: &str, change: CrateChange) -> u64 {
    for _ in 0..64 {
        let rec = meta
            .get_crate(registry, canonical)
            .await
            .unwrap()
            .expect("crate exists");
        match meta
            .change_crate(registry, canonical, Some(rec.revision), &change)
            .await
        {
            Ok(rev) => return rev,
            Err(StoreError::Conflict(_)) => tokio::task::yield_now().await,
            Err(e) => panic!("change failed: {e}"),
        }
    }
    panic!("change kept conflicting");
}

fn token(id: &str, hash: &str, user: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: hash.into(),
        user: user.into(),
        name: format!("token {id}"),
        scopes: vec!["read".into(), "publish".into()],
        registries: Some(vec!["local".into()]),
        expires: Some(4_000_000_000),
        created: 1_700_000_000,
    }
}

/// Every check of a [`Metadata`] backend. `meta` must be empty.
pub async fn metadata(meta: &dyn Metadata) {
    registries(meta).await;
    crate_changes(meta).await;
    concurrent_publishes(meta).await;
    yank_races(meta).await;
    users_and_tokens(meta).await;
    references_and_counts(meta).await;
    import_round_trip(meta).await;
}

async fn registries(meta: &dyn Metadata) {
    assert!(
        meta.registries().await.unwrap().is_empty(),
        "the store must start empty"
    );
    let mut spec = RegistrySpec::new("gone", RegistryKind::Hosted);
    meta.put_registry(&spec).await.unwrap();
    spec.auth_required = true;
    meta.put_registry(&spec).await.unwrap();
    let stored = meta.registries().await.unwrap();
    assert_eq!(stored, vec![spec.clone()], "put_registry replaces");
    publish_one(meta, "gone", "doomed", "1.0.0").await;
    publish_one(meta, "kept", "doomed", "1.0.0").await;
    meta.delete_registry("gone").await.unwrap();
    assert!(meta.registries().await.unwrap().is_empty());
    assert!(
        meta.get_crate("gone", "doomed").await.unwrap().is_none(),
        "crates go with their registry"
    );
    assert_eq!(meta.crate_count("gone").await.unwrap(), 0);
    assert!(
        meta.get_crate("kept", "doomed").await.unwrap().is_some(),
        "other registries keep theirs"
    );
}

async fn crate_changes(meta: &dyn Metadata) {
    let v1 = version("My_Crate", "1.0.0", "alice");
    let new = CrateChange::Publish {
        name: "My_Crate".into(),
        version: v1.clone(),
        description: Some("first".into()),
        keywords: vec!["a".into()],
    };
    let rev = meta.change_crate("local", "my_crate", None, &new).await.unwrap();
    let rec = meta.get_crate("local", "my_crate").await.unwrap().unwrap();
    assert_eq!(rec.revision, rev);
    assert_eq!(rec.name, "My_Crate");
    assert_eq!(rec.owners, vec!["alice".to_owned()], "the publisher owns a new crate");
    assert_eq!(rec.description.as_deref(), Some("first"));
    assert_eq!(rec.versions, vec![v1.clone()]);
    // The same name created twice: the second loses.
    assert!(matches!(
        meta.change_crate("local", "my_crate", None, &new).await,
        Err(StoreError::Conflict(_))
    ));
    // A change decided on an old revision loses.
    let v2 = CrateChange::Publish {
        name: "My_Crate".into(),
        version: version("My_Crate", "2.0.0+b1", "bob"),
        description: None,
        keywords: Vec::new(),
    };
    let rev2 = meta.change_crate("local", "my_crate", Some(rev), &v2).await.unwrap();
    assert!(rev2 > rev, "revisions grow");
    assert!(matches!(
        meta.change_crate("local", "my_crate", Some(rev), &v2).await,
        Err(StoreError::Conflict(_))
    ));
    // A release differing only in build metadata is taken, whatever the revision.
    let v2b = CrateChange::Publish {
        name: "My_Crate".into(),
        version: version("My_Crate", "2.0.0+b2", "bob"),
        description: None,
        keywords: Vec::new(),
    };
    assert!(matches!(
        meta.change_crate("local", "my_crate", Some(rev2), &v2b).await,
        Err(StoreError::Conflict(_))
    ));
    let rec = meta.get_crate("local", "my_crate").await.unwrap().unwrap();
    assert_eq!(rec.revision, rev2, "a refused change leaves no trace");
    assert_eq!(rec.versions.len(), 2);
    assert_eq!(rec.versions[1].line.vers, "2.0.0+b1", "versions keep publish order");
    assert_eq!(rec.versions[1].published_by, "bob");
    assert_eq!(
        rec.description.as_deref(),
        Some("first"),
        "no description keeps the old one"
    );
    assert_eq!(rec.keywords, vec!["a".to_owned()], "no keywords keep the old ones");
    // Yank by exact spelling; owners replaced in order.
    let rev3 = change_with_retry(
        meta,
        "local",
        "my_crate",
        CrateChange::SetYanked {
            vers: "2.0.0+b1".into(),
            yanked: true,
        },
    )
    .await;
    let rev4 = change_with_retry(
        meta,
        "local",
        "my_crate",
        CrateChange::SetOwners(vec!["carol".into(), "alice".into()]),
    )
    .await;
    assert!(rev4 > rev3 && rev3 > rev2);
    let rec = meta.get_crate("local", "my_crate").await.unwrap().unwrap();
    assert!(rec.versions[1].line.yanked && !rec.versions[0].line.yanked);
    assert_eq!(rec.owners, vec!["carol".to_owned(), "alice".to_owned()]);
    assert!(matches!(
        meta.change_crate(
            "local",
            "my_crate",
            Some(rev4),
            &CrateChange::SetYanked {
                vers: "9.9.9".into(),
                yanked: true
            }
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        meta.change_crate("local", "nope", None, &CrateChange::SetOwners(vec!["x".into()]))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(meta.get_crate("local", "nope").await.unwrap().is_none());
    assert!(
        meta.get_crate("other", "my_crate").await.unwrap().is_none(),
        "registries are separate"
    );
}

async fn concurrent_publishes(meta: &dyn Metadata) {
    // Different versions of one crate at once: every one lands, each once.
    let tasks = (0..24).map(|i| {
        let vers = format!("0.{i}.0");
        async move { publish(meta, "race", "racer", &vers, "alice").await.unwrap() }
    });
    assert!(join_all(tasks).await.into_iter().all(|ok| ok));
    let rec = meta.get_crate("race", "racer").await.unwrap().unwrap();
    assert_eq!(rec.versions.len(), 24);
    let distinct: HashSet<&str> = rec.versions.iter().map(|v| v.line.vers.as_str()).collect();
    assert_eq!(distinct.len(), 24);
    // The same release at once (with different build metadata): exactly one wins.
    let tasks = (0..12).map(|i| {
        let vers = format!("1.0.0+b{i}");
        async move { publish(meta, "race", "racer", &vers, "alice").await.unwrap() }
    });
    let won = join_all(tasks).await.into_iter().filter(|ok| *ok).count();
    assert_eq!(won, 1, "one publish of a release wins");
    // A brand-new name at once: one crate, every version in it.
    let tasks = (0..12).map(|i| {
        let vers = format!("{i}.0.0");
        async move { publish(meta, "race", "Fresh-Name", &vers, "alice").await.unwrap() }
    });
    assert!(join_all(tasks).await.into_iter().all(|ok| ok));
    let rec = meta.get_crate("race", "fresh_name").await.unwrap().unwrap();
    assert_eq!(rec.versions.len(), 12);
    assert_eq!(rec.owners, vec!["alice".to_owned()]);
    assert_eq!(meta.crate_count("race").await.unwrap(), 2);
}

async fn yank_races(meta: &dyn Metadata) {
    publish_one(meta, "race", "yanky", "1.0.0").await;
    let start = meta.get_crate("race", "yanky").await.unwrap().unwrap().revision;
    let tasks = (0..20).map(|i| {
        change_with_retry(
            meta,
            "race",
            "yanky",
            CrateChange::SetYanked {
                vers: "1.0.0".into(),
                yanked: i % 2 == 0,
            },
        )
    });
    let mut revs = join_all(tasks).await;
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), 20, "every change got its own revision");
    let rec = meta.get_crate("race", "yanky").await.unwrap().unwrap();
    assert!(rec.revision >= start + 20);
    assert_eq!(rec.versions.len(), 1);
}

async fn users_and_tokens(meta: &dyn Metadata) {
    let alice = meta.create_user("alice", Some("Alice".into())).await.unwrap().unwrap();
    assert_eq!(alice.name.as_deref(), Some("Alice"));
    assert!(
        meta.create_user("alice", None).await.unwrap().is_none(),
        "logins are unique"
    );
    let made =
        join_all((0..10).map(|i| async move { meta.create_user(&format!("user{i}"), None).await.unwrap() })).await;
    let mut ids: Vec<u32> = made.into_iter().map(|u| u.unwrap().id).collect();
    ids.push(alice.id);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 11, "user ids are unique");
    assert_eq!(meta.get_user("alice").await.unwrap(), Some(alice));
    assert!(meta.get_user("nobody").await.unwrap().is_none());
    assert_eq!(meta.users().await.unwrap().len(), 11);

    let t = token("t1", &"a".repeat(64), "alice");
    meta.put_token(&t).await.unwrap();
    meta.put_token(&token("t2", &"b".repeat(64), "user1")).await.unwrap();
    assert_eq!(meta.token_by_hash(&"a".repeat(64)).await.unwrap(), Some(t));
    assert!(meta.token_by_hash(&"c".repeat(64)).await.unwrap().is_none());
    let mut unlimited = token("t3", &"d".repeat(64), "alice");
    unlimited.registries = None;
    unlimited.expires = None;
    meta.put_token(&unlimited).await.unwrap();
    assert_eq!(meta.token_by_hash(&"d".repeat(64)).await.unwrap(), Some(unlimited));
    assert_eq!(meta.tokens().await.unwrap().len(), 3);
    assert!(meta.delete_token("t1").await.unwrap());
    assert!(!meta.delete_token("t1").await.unwrap(), "a revoked token is gone");
    assert!(meta.token_by_hash(&"a".repeat(64)).await.unwrap().is_none());
    assert_eq!(meta.tokens().await.unwrap().len(), 2);
}

async fn references_and_counts(meta: &dyn Metadata) {
    let refs = meta.referenced_blobs().await.unwrap();
    let rec = meta.get_crate("local", "my_crate").await.unwrap().unwrap();
    for v in &rec.versions {
        assert!(refs.contains(&v.line.cksum), "every version's blob is referenced");
    }
    let counts = meta.counts().await.unwrap();
    let snap = meta.snapshot().await.unwrap();
    assert_eq!(counts, snap.counts(), "counts agree with the snapshot");
    assert_eq!(counts.users, 11);
    assert_eq!(counts.tokens, 2);
    meta.check().await.unwrap();
}

async fn import_round_trip(meta: &dyn Metadata) {
    // The snapshot names every crate with its registry; importing it into a second store of
    // the same kind is covered by `import_into`; here, a marker already recorded stops an
    // import before it writes anything.
    let snap = meta.snapshot().await.unwrap();
    assert!(snap.crates.iter().any(|(r, c)| r == "race" && c.name == "racer"));
    let extra = Snapshot {
        registries: vec![RegistrySpec::new("imported", RegistryKind::Hosted)],
        ..Snapshot::default()
    };
    assert!(
        matches!(
            meta.import(&extra, "conformance-marker").await,
            Err(StoreError::Conflict(_))
        ),
        "an import needs an empty store"
    );
    assert!(
        !meta.registries().await.unwrap().iter().any(|r| r.name == "imported"),
        "a refused import writes nothing"
    );
    assert!(
        matches!(
            meta.import(&extra, "conformance-marker").await,
            Err(StoreError::Conflict(_))
        ),
        "nor its marker"
    );
}

/// `snapshot` of `from` imported into the empty `into` reads back the same, counts included.
pub async fn import_into(from: &dyn Metadata, into: &dyn Metadata) {
    let snap = from.snapshot().await.unwrap();
    assert!(into.import(&snap, "round-trip").await.unwrap());
    assert!(!into.import(&snap, "round-trip").await.unwrap(), "an import runs once");
    let back = into.snapshot().await.unwrap();
    assert_eq!(from.counts().await.unwrap(), into.counts().await.unwrap());
    let key = |c: &(String, CrateRecord)| (c.0.clone(), canonical_name(&c.1.name));
    let strip = |mut v: Vec<(String, CrateRecord)>| {
        v.sort_by_key(key);
        v.into_iter()
            .map(|(r, mut c)| {
                c.revision = 0;
                (r, c)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(snap.crates.clone()),
        strip(back.crates.clone()),
        "crates survive an import"
    );
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(snap.users.iter().map(|u| format!("{u:?}")).collect()),
        sorted(back.users.iter().map(|u| format!("{u:?}")).collect())
    );
    assert_eq!(
        sorted(snap.tokens.iter().map(|t| format!("{t:?}")).collect()),
        sorted(back.tokens.iter().map(|t| format!("{t:?}")).collect())
    );
}

/// Every check of a [`Blobs`] backend. `blobs` must be empty.
pub async fn blobs(blobs: &dyn Blobs) {
    assert!(
        blobs.list().await.unwrap().is_empty(),
        "the blob store must start empty"
    );
    let data = bytes::Bytes::from(vec![7u8; 300_000]);
    let sha = blobs.put(data.clone()).await.unwrap();
    assert_eq!(sha, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)));
    assert!(blobs.exists(&sha).await.unwrap());
    let mut got = blobs.get(&sha).await.unwrap().expect("stored blob");
    assert_eq!(got.len, data.len() as u64);
    let mut read = Vec::new();
    got.reader.read_to_end(&mut read).await.unwrap();
    assert_eq!(read, data);
    let before = blobs.list().await.unwrap()[0].modified;
    assert_eq!(blobs.put(data.clone()).await.unwrap(), sha, "put is idempotent");
    let listed = blobs.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].modified >= before, "a repeated put renews the blob");
    assert_eq!(listed[0].len, data.len() as u64);
    assert_eq!(blobs.info(&sha).await.unwrap().as_ref(), Some(&listed[0]));

    let mut stream: &[u8] = b"streamed crate bytes";
    let (sha2, len) = blobs.put_stream(&mut stream).await.unwrap();
    assert_eq!(len, 20);
    assert_eq!(
        sha2,
        blobs
            .put(bytes::Bytes::from_static(b"streamed crate bytes"))
            .await
            .unwrap()
    );
    assert_eq!(blobs.list().await.unwrap().len(), 2);

    for bad in [
        "",
        "../../etc/passwd",
        &"A".repeat(64),
        &"0".repeat(63),
        &format!("{}/x", "0".repeat(62)),
    ] {
        assert!(blobs.get(bad).await.unwrap().is_none(), "{bad:?} names no blob");
        assert!(!blobs.exists(bad).await.unwrap());
        assert!(blobs.info(bad).await.unwrap().is_none());
        assert!(!blobs.delete(bad).await.unwrap());
    }
    // Quarantine: out of sight until restored or purged; a new put of the bytes wins.
    assert!(blobs.quarantine(&sha).await.unwrap());
    assert!(!blobs.exists(&sha).await.unwrap() && blobs.get(&sha).await.unwrap().is_none());
    assert!(!blobs.quarantine(&sha).await.unwrap(), "nothing left to quarantine");
    blobs.restore(&sha).await.unwrap();
    assert!(blobs.exists(&sha).await.unwrap(), "restored");
    assert!(blobs.quarantine(&sha).await.unwrap());
    assert_eq!(blobs.put(data.clone()).await.unwrap(), sha);
    blobs.restore(&sha).await.unwrap();
    assert!(blobs.exists(&sha).await.unwrap(), "the new copy stays");
    assert!(blobs.quarantine(&sha).await.unwrap());
    blobs.purge(&sha).await.unwrap();
    blobs.restore(&sha).await.unwrap();
    assert!(!blobs.exists(&sha).await.unwrap(), "purged for good");
    assert_eq!(blobs.put(data.clone()).await.unwrap(), sha);
    assert!(blobs.delete(&sha).await.unwrap());
    assert!(!blobs.delete(&sha).await.unwrap());
    assert!(blobs.get(&sha).await.unwrap().is_none());
    assert!(!blobs.exists(&sha).await.unwrap());
    assert_eq!(blobs.list().await.unwrap().len(), 1);
}

/// Garbage collection over a whole store (both empty): only blobs that no version names and
/// that are older than the grace period go, and only with `apply`.
pub async fn gc(store: &super::PrivateStore) {
    use std::time::Duration;
    let kept = bytes::Bytes::from_static(b"referenced crate");
    let sha_kept = store.blobs.put(kept).await.unwrap();
    let mut v = version("gc-crate", "1.0.0", "alice");
    v.line.cksum = sha_kept.clone();
    let change = CrateChange::Publish {
        name: "gc-crate".into(),
        version: v,
        description: None,
        keywords: Vec::new(),
    };
    store
        .meta
        .change_crate("gcreg", "gc-crate", None, &change)
        .await
        .unwrap();
    let sha_orphan = store
        .blobs
        .put(bytes::Bytes::from_static(b"orphan crate"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let young = super::gc::collect(store, Duration::from_secs(3600), true)
        .await
        .unwrap();
    assert_eq!((young.blobs, young.referenced, young.young), (2, 1, 1));
    assert!(
        young.garbage.is_empty() && young.deleted == 0,
        "young blobs are never collected"
    );

    let dry = super::gc::collect(store, Duration::ZERO, false).await.unwrap();
    assert_eq!(dry.garbage.len(), 1);
    assert_eq!(dry.garbage[0].sha256, sha_orphan);
    assert_eq!(dry.garbage_bytes, 12);
    assert_eq!(dry.deleted, 0, "without apply nothing is deleted");
    assert!(store.blobs.exists(&sha_orphan).await.unwrap());

    let applied = super::gc::collect(store, Duration::ZERO, true).await.unwrap();
    assert_eq!((applied.deleted, applied.deleted_bytes), (1, 12));
    assert!(!store.blobs.exists(&sha_orphan).await.unwrap());
    assert!(store.blobs.exists(&sha_kept).await.unwrap(), "referenced blobs stay");

    // A deleted registry leaves its blobs unreferenced.
    store.meta.delete_registry("gcreg").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after = super::gc::collect(store, Duration::ZERO, true).await.unwrap();
    assert_eq!(after.deleted, 1);
    assert!(store.blobs.list().await.unwrap().is_empty());
}

/// Two handles on one database (as two processes or nodes have): publishes and yanks of one
/// crate through both at once are decided by the database alone. `a` and `b` must be empty
/// views of the same store.
pub async fn shared(a: &dyn Metadata, b: &dyn Metadata) {
    // Different versions of one crate through both handles: each lands once.
    let tasks = (0..24).map(|i| {
        let via = if i % 2 == 0 { a } else { b };
        let vers = format!("0.{i}.0");
        async move { publish(via, "shared", "both-ways", &vers, "alice").await.unwrap() }
    });
    assert!(join_all(tasks).await.into_iter().all(|ok| ok));
    let canonical = canonical_name("both-ways");
    let rec = a.get_crate("shared", &canonical).await.unwrap().unwrap();
    assert_eq!(rec.versions.len(), 24);
    assert_eq!(
        b.get_crate("shared", &canonical).await.unwrap().unwrap(),
        rec,
        "both see the same"
    );
    // One release through both at once: exactly one wins.
    let tasks = (0..12).map(|i| {
        let via = if i % 2 == 0 { a } else { b };
        let vers = format!("9.0.0+b{i}");
        async move { publish(via, "shared", "both-ways", &vers, "alice").await.unwrap() }
    });
    assert_eq!(join_all(tasks).await.into_iter().filter(|ok| *ok).count(), 1);
    // Yanks through both: every change gets its own revision.
    let tasks = (0..16).map(|i| {
        let via = if i % 2 == 0 { a } else { b };
        change_with_retry(
            via,
            "shared",
            &canonical,
            CrateChange::SetYanked {
                vers: "0.1.0".into(),
                yanked: i % 3 == 0,
            },
        )
    });
    let mut revs = join_all(tasks).await;
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), 16);
    // Users created through both get distinct ids.
    let made = join_all((0..10).map(|i| async move {
        let via = if i % 2 == 0 { a } else { b };
        via.create_user(&format!("shared{i}"), None).await.unwrap().unwrap().id
    }))
    .await;
    let distinct: HashSet<u32> = made.into_iter().collect();
    assert_eq!(distinct.len(), 10);
}

/// The webhook outbox and deliveries of a store that has them (the SQL store): events are
/// written only by the `_as` changes, fanned out once to the hooks that want them, claimed by
/// one node at a time, and every attempt is kept.
pub async fn webhooks(meta: &dyn Metadata) {
    use super::hooks::{now_millis, AttemptRecord, HookRecord};
    let spec = RegistrySpec::new("hooked", RegistryKind::Hosted);
    meta.put_registry(&spec).await.unwrap();
    assert!(
        meta.outbox_pending(10).await.unwrap().is_empty(),
        "plain changes record no event"
    );
    meta.put_registry_as(&spec, Some("root")).await.unwrap();
    let hook = |id: &str, registry: Option<&str>, events: &[&str]| HookRecord {
        id: id.into(),
        url: format!("http://127.0.0.1:9/{id}"),
        secret: "s3cret".into(),
        registry: registry.map(str::to_owned),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        created: now_millis(),
        created_by: "root".into(),
    };
    meta.put_hook(&hook("all", None, &[])).await.unwrap();
    meta.put_hook(&hook("pub", Some("hooked"), &["crate.published"]))
        .await
        .unwrap();
    meta.put_hook(&hook("other", Some("elsewhere"), &[])).await.unwrap();
    let listed = meta.hooks().await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(
        !serde_json::to_string(&listed).unwrap().contains("s3cret"),
        "a hook's secret is never serialized"
    );

    let change = CrateChange::Publish {
        name: "Hooked-Crate".into(),
        version: version("Hooked-Crate", "1.0.0", "alice"),
        description: None,
        keywords: Vec::new(),
    };
    meta.change_crate_as("hooked", "hooked_crate", None, &change, "alice")
        .await
        .unwrap();
    let pending = meta.outbox_pending(10).await.unwrap();
    let events: Vec<_> = pending.iter().map(|(_, e)| e.event.as_str()).collect();
    assert_eq!(events, ["registry.changed", "crate.published"]);
    let body: serde_json::Value = serde_json::from_str(&pending[1].1.payload).unwrap();
    assert_eq!(body["schema"], 1);
    assert_eq!(body["registry"], "hooked");
    assert_eq!(body["crate"], "Hooked-Crate");
    assert_eq!(body["version"], "1.0.0");
    assert_eq!(body["actor"], "alice");
    assert!(humantime::parse_rfc3339(body["time"].as_str().unwrap()).is_ok());

    // Fan-out: once, to the hooks that want the event.
    assert_eq!(
        meta.fan_out(&pending[0].0).await.unwrap(),
        Some(1),
        "registry.changed: `all`"
    );
    assert_eq!(
        meta.fan_out(&pending[1].0).await.unwrap(),
        Some(2),
        "published: `all` and `pub`"
    );
    assert_eq!(
        meta.fan_out(&pending[1].0).await.unwrap(),
        None,
        "a second fan-out does nothing"
    );
    assert!(meta.outbox_pending(10).await.unwrap().is_empty());

    // Claims are exclusive until the attempt is recorded or the lease ends.
    let now = now_millis();
    let due = meta
        .next_delivery_due()
        .await
        .unwrap()
        .expect("three deliveries pending");
    assert!(due <= now_millis(), "new deliveries are due at once");
    let a = meta.claim_deliveries("node-a", now, 60_000, 10).await.unwrap();
    assert_eq!(a.len(), 3);
    assert!(
        meta.next_delivery_due().await.unwrap().unwrap() >= now + 60_000,
        "claimed deliveries fall due when the claim ends"
    );
    assert!(meta
        .claim_deliveries("node-b", now, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let d = a.iter().find(|d| d.delivery.hook == "pub").unwrap();
    assert_eq!(d.secret, "s3cret");
    let attempt = |n, status| AttemptRecord {
        n,
        at: now_millis(),
        status: Some(status),
        error: None,
        millis: 3,
    };
    meta.record_attempt(&d.delivery.id, &attempt(1, 500), "pending", now)
        .await
        .unwrap();
    let again = meta.claim_deliveries("node-b", now_millis(), 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1, "recorded as pending and due: claimable again");
    meta.record_attempt(&d.delivery.id, &attempt(2, 200), "delivered", 0)
        .await
        .unwrap();
    let log = meta.deliveries("pub", 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].state, "delivered");
    assert_eq!(log[0].attempts, 2);
    assert_eq!(log[0].last_status, Some(200));
    let statuses: Vec<_> = log[0].attempt_log.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(200)]);
    // Pruning takes ended deliveries (with their attempts) and fanned-out events from before
    // the cutoff, never a pending delivery.
    assert_eq!(meta.prune_webhooks(0).await.unwrap(), (0, 0), "nothing is that old");
    let later = now_millis() + 1;
    while now_millis() <= later {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (events, deliveries) = meta.prune_webhooks(later).await.unwrap();
    assert_eq!((events, deliveries), (2, 1), "both events; the one delivered delivery");
    assert!(meta.deliveries("pub", 10).await.unwrap().is_empty());
    assert_eq!(
        meta.deliveries("all", 10).await.unwrap().len(),
        2,
        "pending deliveries stay"
    );
    // Redelivery makes it pending and due again.
    let d = a.iter().find(|d| d.delivery.hook == "all").unwrap();
    meta.record_attempt(&d.delivery.id, &attempt(1, 200), "delivered", 0)
        .await
        .unwrap();
    assert!(meta.redeliver(&d.delivery.id).await.unwrap());
    assert!(!meta.redeliver("nope").await.unwrap());
    assert!(meta
        .deliveries("all", 10)
        .await
        .unwrap()
        .iter()
        .all(|d| d.state == "pending"));

    // Deleting a hook deletes its deliveries.
    assert!(meta.delete_hook("all").await.unwrap());
    assert!(!meta.delete_hook("all").await.unwrap());
    assert!(meta.deliveries("all", 10).await.unwrap().is_empty());
    meta.delete_registry_as("hooked", None).await.unwrap();
    let last = meta.outbox_pending(10).await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&last[0].1.payload).unwrap();
    assert_eq!(
        (body["event"].as_str(), body["actor"].is_null()),
        (Some("registry.changed"), true)
    );
    meta.fan_out(&last[0].0).await.unwrap();

    // Findings are recorded on their own, once per id, with their extra fields.
    let found = super::hooks::HookEvent::upstream_removed(
        "mirror",
        "evil",
        "1.0.0",
        &"a".repeat(64),
        "version_removed",
        true,
        0,
    );
    let id = found.once_id("evil@1.0.0");
    assert_eq!(id.len(), 32);
    assert_ne!(
        id,
        super::hooks::HookEvent::upstream_removed("other", "evil", "1.0.0", "", "", false, 0).once_id("evil@1.0.0"),
        "the registry is part of the id"
    );
    assert!(!meta.has_event(&id).await.unwrap());
    assert!(meta.record_event_once(&id, &found).await.unwrap());
    assert!(
        !meta.record_event_once(&id, &found).await.unwrap(),
        "the same finding again records nothing"
    );
    assert!(meta.has_event(&id).await.unwrap());
    assert!(!meta.has_event(&found.once_id("other@1.0.0")).await.unwrap());
    let pending = meta.outbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&pending[0].1.payload).unwrap();
    assert_eq!(
        (
            &body["event"],
            &body["crate"],
            &body["reason"],
            &body["quarantined"],
            &body["schema"]
        ),
        (
            &"upstream.removed".into(),
            &"evil".into(),
            &"version_removed".into(),
            &true.into(),
            &1.into()
        )
    );
    assert!(body["actor"].is_null());
}

/// The advisory database of a store that keeps one (the SQL store): empty and never imported
/// at first; an import replaces every advisory at once (ids, crates, requirements and kinds
/// kept as given) with its time; a store with a change feed announces it.
pub async fn advisories(meta: &dyn Metadata) {
    use super::advisories::{AdvisoryDb, AdvisoryRecord};
    assert_eq!(meta.advisories().await.unwrap(), AdvisoryDb::default());
    let mut feed = meta.watch().await.unwrap();
    let record = |id: &str, krate: &str, informational: Option<&str>| AdvisoryRecord {
        id: id.into(),
        krate: krate.into(),
        title: format!("title of {id} ünïcode"),
        date: "2024-01-02".into(),
        informational: informational.map(str::to_owned),
        patched: vec![">=1.2.3".into(), "^0.9.9".into()],
        unaffected: vec!["<0.5".into()],
        url: Some("https://example.invalid/a".into()),
    };
    let first = AdvisoryDb {
        advisories: vec![
            record("RUSTSEC-2024-0001", "Foo_Bar", None),
            record("RUSTSEC-2024-0002", "foo_bar", Some("unmaintained")),
        ],
        imported: Some(1_700_000_000),
    };
    meta.replace_advisories(&first).await.unwrap();
    let got = meta.advisories().await.unwrap();
    assert_eq!(got, first, "stored as given, ordered by id");
    let second = AdvisoryDb {
        advisories: vec![record("RUSTSEC-2025-0100", "other", Some("notice"))],
        imported: Some(1_700_000_100),
    };
    meta.replace_advisories(&second).await.unwrap();
    assert_eq!(
        meta.advisories().await.unwrap(),
        second,
        "an import replaces the whole database"
    );
    // A failed import (a duplicate id) changes nothing.
    let dup = AdvisoryDb {
        advisories: vec![
            record("RUSTSEC-2026-0001", "a", None),
            record("RUSTSEC-2026-0001", "b", None),
        ],
        imported: Some(1_700_000_200),
    };
    assert!(meta.replace_advisories(&dup).await.is_err());
    assert_eq!(meta.advisories().await.unwrap(), second, "all or nothing");
    if let Some(feed) = feed.as_mut() {
        let mut seen = false;
        while let Ok(Some(e)) = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv()).await {
            if e == super::StoreEvent::Advisories {
                seen = true;
                break;
            }
        }
        assert!(seen, "an import is announced on the change feed");
    }
    meta.replace_advisories(&AdvisoryDb::default()).await.unwrap();
    assert_eq!(meta.advisories().await.unwrap(), AdvisoryDb::default());
}
