//! Several nodes on one PostgreSQL: a change committed through one node's store handle drops
//! the other node's cached copies (the change feed of `Metadata::watch`), and a cut feed flushes
//! everything and reconnects. Two services in one process stand for two nodes: each has its own
//! pools, caches and listener, as separate daemons have.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{RegistryKind, RegistrySpec};
use crate::registry::RegistryService;
use crate::store::conformance::publish_one;
use crate::store::sql::tests::fresh_postgres;
use crate::store::sql::SqlMetadata;
use crate::store::CrateChange;

async fn node(url: &str, dir: &std::path::Path, name: &str) -> Arc<RegistryService> {
    let meta = Arc::new(SqlMetadata::open_postgres(url).await.unwrap());
    let svc = node_on(meta, dir, name, None).await;
    svc.watch_store().await.unwrap();
    svc
}

/// A node over its own handle `meta` on a shared database, with its own data directory
/// `dir/name` and, maybe, `CARGOHOLD_ADMIN_TOKEN`'s hash.
async fn node_on(
    meta: Arc<dyn crate::store::Metadata>,
    dir: &std::path::Path,
    name: &str,
    env_admin_hash: Option<String>,
) -> Arc<RegistryService> {
    crate::registry::testing::service(meta, &dir.join(name), env_admin_hash).await
}

/// A handle of its own on the SQLite database in `dir` (several handles stand for several
/// processes; the rules below need no change feed).
async fn sqlite_handle(dir: &std::path::Path) -> Arc<dyn crate::store::Metadata> {
    Arc::new(
        SqlMetadata::open_sqlite(&dir.join("shared.db"))
            .await
            .unwrap()
            .shared_for_tests(),
    )
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
    a.create_registry(hosted("team"), "admin").await.unwrap();
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
    a.create_registry(hosted("team"), "admin").await.unwrap();
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

/// The rule for registries of config files on nodes sharing a store: a node stores its file's
/// definition only where the store holds nothing, or holds what this very node applied before
/// (its file changed since, nobody else changed the registry). Otherwise the stored definition
/// stays: no node overwrites another's, nor a change made through the admin API.
#[tokio::test]
async fn config_files_never_overwrite_each_others_registries() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        node_on(sqlite_handle(dir.path()).await, dir.path(), "a", None).await,
        node_on(sqlite_handle(dir.path()).await, dir.path(), "b", None).await,
    );
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let proxy = |offline: bool, description: &str| {
        let mut s = RegistrySpec::new("mirror", RegistryKind::Proxy);
        s.offline = offline;
        s.description = description.into();
        s
    };
    let stored = |svc: Arc<RegistryService>| async move {
        svc.store()
            .meta
            .registries()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.name == "mirror")
    };

    a.apply_configured([proxy(false, "from a")], &dir_a).await.unwrap();
    assert_eq!(stored(a.clone()).await, Some(proxy(false, "from a")));
    // B's file says otherwise: B serves the stored definition and writes nothing.
    b.apply_configured([proxy(true, "from b")], &dir_b).await.unwrap();
    assert_eq!(stored(b.clone()).await, Some(proxy(false, "from a")));
    assert_eq!(b.registry("mirror").unwrap().description, "from a");
    // A's file changes: A applied the stored definition itself, so its new one is stored.
    a.apply_configured([proxy(true, "from a, edited")], &dir_a)
        .await
        .unwrap();
    assert_eq!(stored(a.clone()).await, Some(proxy(true, "from a, edited")));
    // B restarts with its old file: still not B's to change.
    b.apply_configured([proxy(true, "from b")], &dir_b).await.unwrap();
    assert_eq!(stored(b.clone()).await, Some(proxy(true, "from a, edited")));
    // The admin API changes it; A restarts with its unchanged file: the change stays.
    a.update_registry(
        "mirror",
        serde_json::from_value(serde_json::json!({"description": "from the API"})).unwrap(),
        "admin",
    )
    .await
    .unwrap();
    a.apply_configured([proxy(true, "from a, edited")], &dir_a)
        .await
        .unwrap();
    assert_eq!(stored(a.clone()).await.unwrap().description, "from the API");
    // A registry made at run time is never replaced by a file that names it too.
    a.create_registry(RegistrySpec::new("team", RegistryKind::Hosted), "admin")
        .await
        .unwrap();
    let mut other = RegistrySpec::new("team", RegistryKind::Hosted);
    other.auth_required = true;
    b.apply_configured([other], &dir_b).await.unwrap();
    assert!(!a.registry("team").unwrap().auth_required);
}

/// One admin token per cluster: `CARGOHOLD_ADMIN_TOKEN`'s hash is stored by the first node;
/// a node with another value refuses to start; a node without the variable makes no
/// competing token when the store has one; without any, exactly one bootstrap token is made.
#[tokio::test]
async fn a_cluster_has_one_admin_token() {
    use crate::registry::admin::{AdminToken, BOOTSTRAP_TOKEN_ID, CLUSTER_ADMIN_TOKEN_ID};
    use crate::registry::auth::hash_token;
    let dir = tempfile::tempdir().unwrap();
    let env = |t: &str| Some(hash_token(t));
    let a = node_on(sqlite_handle(dir.path()).await, dir.path(), "a", env("one")).await;
    assert!(matches!(
        a.bootstrap_admin(&dir.path().join("a")).await.unwrap(),
        AdminToken::Env
    ));
    let b = node_on(sqlite_handle(dir.path()).await, dir.path(), "b", env("one")).await;
    assert!(matches!(
        b.bootstrap_admin(&dir.path().join("b")).await.unwrap(),
        AdminToken::Env
    ));
    let tokens = a.store().meta.tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        (tokens[0].id.as_str(), tokens[0].hash.clone()),
        (CLUSTER_ADMIN_TOKEN_ID, hash_token("one"))
    );
    // Another value: refused, saying what to do.
    let c = node_on(sqlite_handle(dir.path()).await, dir.path(), "c", env("two")).await;
    let err = c.bootstrap_admin(&dir.path().join("c")).await.unwrap_err().to_string();
    assert!(err.contains("not this cluster's admin token"), "{err}");
    // No variable: no token of its own, no file.
    let d = node_on(sqlite_handle(dir.path()).await, dir.path(), "d", None).await;
    assert!(matches!(
        d.bootstrap_admin(&dir.path().join("d")).await.unwrap(),
        AdminToken::InStore
    ));
    assert!(!dir
        .path()
        .join("d")
        .join(crate::registry::admin::ADMIN_TOKEN_FILE)
        .exists());
    assert_eq!(a.store().meta.tokens().await.unwrap().len(), 1);

    // A store without any admin token, two nodes without the variable starting at once:
    // exactly one bootstrap token, written by the node that made it.
    let other = tempfile::tempdir().unwrap();
    let e = node_on(sqlite_handle(other.path()).await, other.path(), "e", None).await;
    let f = node_on(sqlite_handle(other.path()).await, other.path(), "f", None).await;
    let (de, df) = (other.path().join("e"), other.path().join("f"));
    let (re, rf) = tokio::join!(e.bootstrap_admin(&de), f.bootstrap_admin(&df));
    let outcomes = [re.unwrap(), rf.unwrap()];
    assert_eq!(
        outcomes.iter().filter(|o| matches!(o, AdminToken::File(_))).count(),
        1,
        "{outcomes:?}"
    );
    let tokens = e.store().meta.tokens().await.unwrap();
    assert_eq!(
        tokens.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [BOOTSTRAP_TOKEN_ID]
    );
}

/// The merge access rule is checked on what a start will serve: the stored definitions with the
/// file's applied ones, not the file's view (review finding: a file that still made `local`
/// need a token let a start serve an anonymous `local`, changed through the admin API, merging a
/// proxy the edited file made `auth_required`).
#[tokio::test]
async fn a_start_checks_the_merge_rule_on_what_it_will_serve() {
    let dir = tempfile::tempdir().unwrap();
    let a = node_on(sqlite_handle(dir.path()).await, dir.path(), "a", None).await;
    let dir_a = dir.path().join("a");
    let mut local = RegistrySpec::new("local", RegistryKind::Hosted);
    local.auth_required = true;
    local.upstreams = vec!["private".into()];
    let mut private = RegistrySpec::new("private", RegistryKind::Proxy);
    private.offline = true;
    a.apply_configured([private.clone(), local.clone()], &dir_a)
        .await
        .unwrap();
    a.update_registry(
        "local",
        serde_json::from_value(serde_json::json!({"auth_required": false})).unwrap(),
        "admin",
    )
    .await
    .unwrap();
    private.auth_required = true;
    let err = a
        .apply_configured([private, local], &dir_a)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("private"), "{err}");
    // Nothing was written: the proxy is still readable without a token.
    assert!(!a
        .store()
        .meta
        .registries()
        .await
        .unwrap()
        .iter()
        .any(|s| s.name == "private" && s.auth_required));
}

/// A single node on its embedded store rotates its admin token by changing the variable: the
/// stored hash is replaced, not refused.
#[tokio::test]
async fn a_single_node_rotates_its_admin_token_by_its_variable() {
    use crate::registry::admin::{AdminToken, CLUSTER_ADMIN_TOKEN_ID};
    use crate::registry::auth::hash_token;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("own.db");
    for value in ["first", "second"] {
        let meta: Arc<dyn crate::store::Metadata> = Arc::new(SqlMetadata::open_sqlite(&db).await.unwrap());
        let node = node_on(meta, dir.path(), "n", Some(hash_token(value))).await;
        assert!(matches!(
            node.bootstrap_admin(&dir.path().join("n")).await.unwrap(),
            AdminToken::Env
        ));
        let tokens = node.store().meta.tokens().await.unwrap();
        let stored: Vec<_> = tokens.iter().filter(|t| t.id == CLUSTER_ADMIN_TOKEN_ID).collect();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].hash, hash_token(value));
        node.store().meta.close().await.unwrap();
    }
}

/// The token a first start generated, exported for the CLI as the README shows, in the shell
/// that then starts the daemon again: the variable names a token the store already holds. It
/// is that admin token (the start used to fail: storing its hash again conflicted four times);
/// the secret of a token that is not an admin token is refused, naming it.
#[tokio::test]
async fn the_variable_may_hold_the_generated_admin_token() {
    use crate::registry::admin::{AdminToken, ADMIN_TOKEN_FILE};
    use crate::registry::auth::hash_token;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("own.db");
    let open = || async { Arc::new(SqlMetadata::open_sqlite(&db).await.unwrap()) as Arc<dyn crate::store::Metadata> };
    let first = node_on(open().await, dir.path(), "n", None).await;
    assert!(matches!(
        first.bootstrap_admin(&dir.path().join("n")).await.unwrap(),
        AdminToken::File(_)
    ));
    let generated = std::fs::read_to_string(dir.path().join("n").join(ADMIN_TOKEN_FILE)).unwrap();
    first
        .store()
        .meta
        .put_token(&crate::store::TokenRecord {
            id: "alice-ci".into(),
            hash: hash_token("alice-secret"),
            user: "admin".into(),
            name: "ci".into(),
            scopes: vec!["publish".into()],
            registries: None,
            expires: None,
            created: 1,
        })
        .await
        .unwrap();
    first.store().meta.close().await.unwrap();
    drop(first);

    let again = node_on(open().await, dir.path(), "n", Some(hash_token(generated.trim()))).await;
    assert!(matches!(
        again.bootstrap_admin(&dir.path().join("n")).await.unwrap(),
        AdminToken::Env
    ));
    let tokens = again.store().meta.tokens().await.unwrap();
    assert_eq!(
        tokens.iter().filter(|t| t.hash == hash_token(generated.trim())).count(),
        1,
        "stored once"
    );
    again.store().meta.close().await.unwrap();
    drop(again);

    let wrong = node_on(open().await, dir.path(), "n", Some(hash_token("alice-secret"))).await;
    let err = wrong
        .bootstrap_admin(&dir.path().join("n"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("alice-ci") && err.contains("not an unexpired admin token"),
        "{err}"
    );
    wrong.store().meta.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_import_on_one_node_reaches_the_other() {
    let Some(url) = fresh_postgres("advisories between two nodes").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = node(&url, dir.path(), "a").await;
    let b = node(&url, dir.path(), "b").await;
    assert_eq!(b.advisories_status()["advisories"], 0);
    let upload: crate::registry::advisories::AdvisoryUpload = serde_json::from_value(serde_json::json!({
        "advisories": [{"id": "RUSTSEC-2024-0001", "crate": "foo", "title": "t", "date": "2024-01-01",
                        "patched": [">=2"], "unaffected": []}]
    }))
    .unwrap();
    a.import_advisories(upload).await.unwrap();
    eventually("B loaded the imported database", || async {
        b.advisories_status()["advisories"] == 1
    })
    .await;
}
