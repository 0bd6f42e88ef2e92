//! The admin CLI against a running daemon: registry create/list/show/update/delete, users,
//! tokens (scopes, registry restriction, expiry, list, revoke), and its exit codes and messages.

use std::time::Duration;

use reqwest::Method;

use crate::support::daemon::Daemon;
use crate::support::http;
use crate::support::package::simple_publish;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn registry_lifecycle_through_the_cli() {
    let d = Daemon::start();
    let created = d.admin_ok(&[
        "registry",
        "create",
        "team",
        "--kind",
        "hosted",
        "--description",
        "Team crates",
        "--label",
        "team=platform",
        "--label",
        "tier",
    ]);
    assert!(created.contains(&d.index_url("team")), "{created}");
    let list = d.admin_ok(&["registry", "list"]);
    for name in ["local", "crates-io", "team"] {
        assert!(
            list.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{list}"
        );
    }
    assert!(
        list.contains("team=platform,tier") && list.contains("Team crates"),
        "{list}"
    );

    let shown: serde_json::Value = serde_json::from_str(&d.admin_ok(&["registry", "show", "team"])).unwrap();
    assert_eq!(shown["kind"], "hosted");
    assert_eq!(shown["auth_required"], false);

    d.admin_ok(&[
        "registry",
        "update",
        "team",
        "--auth-required",
        "true",
        "--description",
        "Private team crates",
    ]);
    let config = http::get(&d.url("/team/index/config.json"), None);
    assert_eq!(config.status, 401, "auth is now required");
    assert!(config.header("www-authenticate").unwrap().contains("login_url"));

    // Bad names and kinds: usage errors (64) that say what the rule is.
    let bad = d.admin(&["registry", "create", "Team!", "--kind", "hosted"]);
    assert_eq!(bad.status.code(), Some(64), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("^[a-z][a-z0-9_.-]*$"), "{}", stderr(&bad));
    let kind = d.admin(&["registry", "create", "x", "--kind", "warehouse"]);
    assert_eq!(kind.status.code(), Some(64));
    assert!(stderr(&kind).contains("hosted") && stderr(&kind).contains("proxy"));
    let dup = d.admin(&["registry", "create", "team", "--kind", "hosted"]);
    assert_ne!(dup.status.code(), Some(0));
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    let proxy_with_upstreams = d.admin(&[
        "registry",
        "create",
        "p2",
        "--kind",
        "proxy",
        "--upstreams",
        "crates-io",
    ]);
    assert_eq!(
        proxy_with_upstreams.status.code(),
        Some(64),
        "{}",
        stderr(&proxy_with_upstreams)
    );

    // A hosted registry holding crates is only deleted with --force; a proxy in use not at all.
    let token = d.user_token("alice", &["read", "publish"]);
    let (body, _) = simple_publish("teamcrate", "0.1.0");
    assert_eq!(http::publish_raw(&d.api_url("team"), Some(&token), body).status, 200);
    let refused = d.admin(&["registry", "delete", "team"]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(
        http::get(&d.url("/team/index/te/am/teamcrate"), Some(&token)).status,
        200,
        "nothing was deleted"
    );
    let in_use = d.admin(&["registry", "delete", "crates-io"]);
    assert!(stderr(&in_use).contains("upstream of `local`"), "{}", stderr(&in_use));
    d.admin_ok(&["registry", "delete", "team", "--force"]);
    assert_eq!(http::get(&d.url("/team/index/config.json"), None).status, 404);
    let missing = d.admin(&["registry", "show", "team"]);
    assert_eq!(missing.status.code(), Some(64));
    assert!(stderr(&missing).contains("no registry named `team`"));
}

#[test]
fn tokens_scopes_restrictions_expiry_list_and_revoke() {
    let d = Daemon::start();
    d.admin_ok(&["user", "add", "carol", "--name", "Carol"]);
    let again = d.admin(&["user", "add", "carol"]);
    assert!(stderr(&again).contains("already exists"));
    let users = d.admin_ok(&["user", "list"]);
    assert!(users.contains("carol") && users.contains("Carol"));
    assert_eq!(d.admin(&["user", "add", "bad login"]).status.code(), Some(64));

    let no_user = d.admin(&["token", "create", "--user", "nobody"]);
    assert!(stderr(&no_user).contains("user add nobody"), "{}", stderr(&no_user));
    let bad_scope = d.admin(&["token", "create", "--user", "carol", "--scope", "everything"]);
    assert!(
        stderr(&bad_scope).contains("read, publish, yank, owners and admin"),
        "{}",
        stderr(&bad_scope)
    );

    let full = d.admin(&["token", "create", "--user", "carol", "--name", "laptop"]);
    let secret = stdout(&full).trim().to_owned();
    assert!(
        secret.starts_with("chd_"),
        "the token is the only stdout line: {:?}",
        stdout(&full)
    );
    let (body, _) = simple_publish("carols", "0.1.0");
    assert_eq!(
        http::publish_raw(&d.api_url("local"), Some(&format!("Bearer {secret}")), body).status,
        200
    );

    // The listing shows ids and scopes, never secrets or their hashes.
    let listing = d.admin_ok(&["token", "list", "--user", "carol"]);
    assert!(listing.contains("laptop") && listing.contains("publish"));
    assert!(!listing.contains(&secret));
    let id = listing.split_whitespace().next().unwrap().to_owned();

    // Expiry.
    let made = std::time::Instant::now();
    let short = d.admin(&[
        "token",
        "create",
        "--user",
        "carol",
        "--scope",
        "owners",
        "--expires",
        // Long enough to be used once on a loaded machine (expiry counts whole seconds).
        "5s",
    ]);
    let short = stdout(&short).trim().to_owned();
    let owners = |t: &str| http::get(&d.url("/local/api/v1/crates/carols/owners"), Some(t)).status;
    // Expiry counts whole seconds (the token lives 4 to 5 s): only a machine that stalled
    // that long between the creation and this request may see it expired already.
    let first = owners(&short);
    assert!(
        first == 200 || made.elapsed() >= Duration::from_secs(4),
        "a fresh token is accepted: {first}"
    );
    std::thread::sleep(Duration::from_millis(6100));
    assert_eq!(owners(&short), 401, "an expired token is refused");
    let bad_expiry = d.admin(&["token", "create", "--user", "carol", "--expires", "someday"]);
    assert_eq!(bad_expiry.status.code(), Some(64));

    // Revocation.
    d.admin_ok(&["token", "revoke", &id]);
    assert_eq!(owners(&secret), 401, "a revoked token is refused at once");
    assert!(stderr(&d.admin(&["token", "revoke", &id])).contains("no token"));

    // The admin API itself needs the admin scope.
    let user_token = d.user_token("dave", &["read", "publish", "yank", "owners"]);
    let forbidden = http::send(
        Method::GET,
        &d.url("/-/api/v1/registries"),
        Some(&user_token),
        None,
        &[],
    );
    assert_eq!(forbidden.status, 403);
    let anonymous = http::send(Method::GET, &d.url("/-/api/v1/users"), None, None, &[]);
    assert_eq!(anonymous.status, 401);
}

#[test]
fn cli_errors_when_the_daemon_is_unreachable_or_the_token_missing() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cargohold"))
        .args(["--server", "http://127.0.0.1:9", "registry", "list"])
        .env("CARGOHOLD_ADMIN_TOKEN", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is `cargohold serve` running"),
        "{}",
        stderr(&out)
    );
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cargohold"))
        .args(["--server", "http://127.0.0.1:9", "user", "list"])
        .env_remove("CARGOHOLD_ADMIN_TOKEN")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("CARGOHOLD_ADMIN_TOKEN"), "{}", stderr(&out));
    let usage = std::process::Command::new(env!("CARGO_BIN_EXE_cargohold"))
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(64));
}
