//! Several nodes on one PostgreSQL: a change committed through one node's store handle drops
//! the other node's cached copies (the change feed of `Metadata::watch`), and a cut feed flushes
//! everything and reconnects. Two services in one process stand for two nodes: each has its own
//! pools, caches and listener, as separate daemons have.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::crate_files::CrateFiles;
use crate::cache::index_cache::IndexCache;
use crate::config::{Limits, RegistryKind, RegistrySpec};
use crate::registry::{CacheHandles, RegistryService, ServiceSettings};
use crate::store::conformance::publish_one;
use crate::store::sql::tests::fresh_postgres;
use crate::store::sql::SqlMetadata;
use crate::store::{blobs::FileBlobs, CrateChange, PrivateStore};

async fn node(url: &str, dir: &std::path::Path, name: &str) -> Arc<RegistryService> {
    let dir = dir.join(name);
    let cache_dir = dir.join("cache");
    let caches = CacheHandles {
        index: IndexCache::open(&cache_dir, 1 << 20, 1 << 30).unwrap(),
        crates: CrateFiles::open(&cache_dir.join("crates"), 1 << 20).unwrap(),
        crate_bytes: CacheHandles::crate_memory(1 << 20),
    };
    let settings = ServiceSettings {
        public_url: "http://127.0.0.1:1".into(),
        limits: Limits::default(),
        memory_bytes: 8 << 20,
        env_admin_hash: None,
    };
    let svc = Arc::new(
        RegistryService::new(
            PrivateStore {
                meta: Arc::new(SqlMetadata::open_postgres(url).await.unwrap()),
                blobs: Arc::new(FileBlobs::open(dir.join("blobs")).unwrap()),
            },
            caches,
            settings,
        )
        .await
        .unwrap(),
    );
    svc.watch_store().await.unwrap();
    svc
}

/// The versions node `svc` serves for `name` in `reg` (empty for a 404).
async fn served(svc: &RegistryService, reg: &str, name: &str) -> Vec<String> {
    let spec = svc.registry(reg).unwrap();
    let answer = svc.index_file(&spec, name).await.unwrap();
    answer
        .file
        .map(|f| {
            String::from_utf8_lossy(f.body())
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    format!(
                        "{}{}",
                        v["vers"].as_str().unwrap(),
                        if v["yanked"] == true { " (yanked)" } else { "" }
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (up to 10 s: a generous bound for a loaded CI machine, not a speed claim) until
/// `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(10), "never seen: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hosted(name: &str) -> RegistrySpec {
    RegistrySpec::new(name, RegistryKind::Hosted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_commits_the_other_serves() {
    let Some(url) = fresh_postgres("the change feed between two nodes").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = node(&url, dir.path(), "a").await;
    let b = node(&url, dir.path(), "b").await;

    // A registry made on A is served by B.
    a.create_registry(hosted("team")).await.unwrap();
    eventually("B knows registry `team`", || async { b.registry("team").is_ok() }).await;

    // B has answered 404 (and cached it) before A's publish; then serves the version.
    assert!(served(&b, "team", "foo").await.is_empty());
    publish_one(a.store().meta.as_ref(), "team", "foo", "1.0.0").await;
    eventually("B serves foo 1.0.0", || async {
        served(&b, "team", "foo").await == ["1.0.0"]
    })
    .await;

    // A yank committed through B is seen by A, which had the file cached.
    assert_eq!(served(&a, "team", "foo").await, ["1.0.0"]);
    let rec = b.store().meta.get_crate("team", "foo").await.unwrap().unwrap();
    b.store()
        .meta
        .change_crate(
            "team",
            "foo",
            Some(rec.revision),
            &CrateChange::SetYanked {
                vers: "1.0.0".into(),
                yanked: true,
            },
        )
        .await
        .unwrap();
    eventually("A serves foo 1.0.0 as yanked", || async {
        served(&a, "team", "foo").await == ["1.0.0 (yanked)"]
    })
    .await;

    // A token revoked on A stops working on B, which had it cached.
    a.create_user("carol", None).await.unwrap();
    let made = a
        .create_token(serde_json::from_value(serde_json::json!({"user": "carol"})).unwrap())
        .await
        .unwrap();
    let (secret, id) = (made["token"].as_str().unwrap(), made["id"].as_str().unwrap());
    let header = format!("Bearer {secret}");
    assert!(b.authenticate(Some("team"), Some(&header)).await.unwrap().is_some());
    a.revoke_token(id).await.unwrap();
    eventually("B refuses the revoked token", || async {
        b.authenticate(Some("team"), Some(&header)).await.is_err()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_feed_flushes_the_caches_and_reconnects() {
    let Some(url) = fresh_postgres("a cut change feed").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = node(&url, dir.path(), "a").await;
    let b = node(&url, dir.path(), "b").await;
    a.create_registry(hosted("team")).await.unwrap();
    eventually("B knows registry `team`", || async { b.registry("team").is_ok() }).await;
    assert!(served(&b, "team", "foo").await.is_empty());

    // Cut every listening connection, then change the store while nobody listens: the
    // notification is lost, but the feed's cut drops B's copies.
    let admin = SqlMetadata::open_postgres(&url).await.unwrap();
    admin
        .execute_for_tests(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        )
        .await;
    publish_one(&admin, "team", "foo", "1.0.0").await;
    eventually("B serves foo 1.0.0 after the cut", || async {
        served(&b, "team", "foo").await == ["1.0.0"]
    })
    .await;
    // Listening again: the next change arrives as usual.
    publish_one(&admin, "team", "foo", "1.1.0").await;
    eventually("B serves foo 1.1.0 after reconnecting", || async {
        served(&b, "team", "foo").await == ["1.0.0", "1.1.0"]
    })
    .await;
}
