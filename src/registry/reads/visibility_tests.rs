//! A read racing a write must never put an old index file back after the write's
//! invalidation (issue: a version missing from the index after its publish returned 200).
//! Deterministic: the store holds the racing reader between its read and its cache insert.

use std::sync::Arc;

use super::*;
use crate::config::RegistryKind;
use crate::registry::RegistryService;
use crate::store::conformance::publish_one;
use crate::store::testing::TestMeta;
use crate::store::{Metadata, TokenRecord};

/// A gated store in `dir` with a hosted registry `local`, nothing held.
async fn gated_store(dir: &std::path::Path) -> Arc<TestMeta> {
    let store = Arc::new(TestMeta::sqlite(&dir.join("registry.db")).await);
    store
        .put_registry(&RegistrySpec::new("local", RegistryKind::Hosted))
        .await
        .unwrap();
    store
}

/// A registry service over `store`, with its caches and blobs under `dir`.
async fn service(store: &Arc<TestMeta>, dir: &std::path::Path) -> Arc<RegistryService> {
    crate::registry::testing::service(store.clone(), dir, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_write_cannot_put_back_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = gated_store(dir.path()).await;
    publish_one(store.as_ref(), "local", "foo", "1.0.0").await;
    let svc = service(&store, dir.path()).await;
    let reg = svc.registry("local").unwrap();

    // A reader reads 1.0.0 from the store and is held before it caches what it rendered.
    store.hold_crate_read.store(true, Ordering::SeqCst);
    let reader = {
        let (svc, reg) = (svc.clone(), reg.clone());
        tokio::spawn(async move { svc.reads.local_index_file(&reg, "foo").await })
    };
    store.read_done.notified().await;

    // Meanwhile a publish commits 1.1.0 and invalidates, as `publish` does before its 200.
    publish_one(store.as_ref(), "local", "foo", "1.1.0").await;
    svc.reads.invalidate("local", "foo");

    // The held reader finishes (its own answer may be the old file: it started before the 200).
    store.release.add_permits(1);
    reader.await.unwrap().unwrap();

    // Every read after the write's return shows it.
    let after = svc.reads.local_index_file(&reg, "foo").await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&after.body);
    assert!(
        text.contains("\"1.1.0\""),
        "the index lost the published version: {text}"
    );
}

/// The same race for the web interface's cached crate views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_read_racing_a_write_cannot_put_back_the_old_view() {
    let dir = tempfile::tempdir().unwrap();
    let store = gated_store(dir.path()).await;
    publish_one(store.as_ref(), "local", "foo", "1.0.0").await;
    let svc = service(&store, dir.path()).await;
    let reg = svc.registry("local").unwrap();

    store.hold_crate_read.store(true, Ordering::SeqCst);
    let reader = {
        let (svc, reg) = (svc.clone(), reg.clone());
        tokio::spawn(async move { svc.reads.crate_view(&reg, "foo").await })
    };
    store.read_done.notified().await;
    publish_one(store.as_ref(), "local", "foo", "1.1.0").await;
    svc.reads.invalidate("local", "foo");
    store.release.add_permits(1);
    reader.await.unwrap().unwrap();

    let after = svc.reads.crate_view(&reg, "foo").await.unwrap().unwrap();
    let versions: Vec<&str> = after.versions.iter().map(|v| v.line.vers.as_str()).collect();
    assert_eq!(versions, ["1.1.0", "1.0.0"], "the page lost the published version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_once_the_revoke_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = gated_store(dir.path()).await;
    let secret = "chd_revokedrevokedrevokedrevokedrevoked12";
    store
        .put_token(&TokenRecord {
            id: "tok1".into(),
            hash: crate::registry::auth::hash_token(secret),
            user: "alice".into(),
            name: "t".into(),
            scopes: vec!["read".into(), "publish".into()],
            registries: None,
            expires: None,
            created: 0,
        })
        .await
        .unwrap();
    let svc = service(&store, dir.path()).await;
    // A request authenticates: it has read the token from the store, not yet cached it.
    store.hold_token_read.store(true, Ordering::SeqCst);
    let req = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.authenticate(Some("local"), Some(secret)).await })
    };
    store.read_done.notified().await;
    // The admin revokes the token; the revoke returns.
    svc.revoke_token("tok1").await.unwrap();
    store.release.add_permits(1);
    let _ = req.await.unwrap();
    // Any request after the revoke's 200 must be refused.
    let after = svc.authenticate(Some("local"), Some(secret)).await;
    assert!(
        after.is_err(),
        "revoked token accepted after revoke returned: {after:?}"
    );
}
