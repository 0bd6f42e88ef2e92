//! A data dir written by the sled-era store (`tests/fixtures/sled-store-v1`, made by that
//! release) is migrated into the SQL store on the first start: every registry, crate, version,
//! owner, user and token arrives, blobs are served, the old files are moved aside, and a
//! failed migration leaves the old store as it was for the next start to retry.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::Value;

use crate::support::daemon::{scrub_env, Daemon, BIN};
use crate::support::{http, index_path, parse_index_lines, sha256_hex};

const CONFIG: &str = "shutdown_grace = \"5s\"\n";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sled-store-v1")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixture().join("MANIFEST.json")).expect("fixture manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

fn seed(data: &Path) {
    copy_dir(&fixture().join("store"), &data.join("store"));
}

fn token_secret(m: &Value, name: &str) -> String {
    m["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .and_then(|t| t["secret"].as_str())
        .unwrap_or_else(|| panic!("no token {name} in the manifest"))
        .to_owned()
}

/// Everything the manifest lists is there after the migration, read through the daemon.
fn assert_fixture_served(d: &Daemon, m: &Value) {
    let admin = token_secret(m, "dave-admin");
    // Registries, with their settings.
    let regs = http::get(&d.url("/-/api/v1/registries"), Some(&admin)).json();
    let mut names: Vec<String> = regs["registries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["local", "mirror", "team"]);
    for r in m["registries"].as_array().unwrap() {
        let name = r["spec"]["name"].as_str().unwrap();
        let got = http::get(&d.url(&format!("/-/api/v1/registries/{name}")), Some(&admin)).json();
        for field in [
            "kind",
            "description",
            "auth_required",
            "upstream",
            "upstreams",
            "offline",
            "shadow",
        ] {
            assert_eq!(got[field], r["spec"][field], "registry {name}: {field}");
        }
        assert_eq!(got["crates"], r["crate_count"], "registry {name}: crate count");
    }
    // Users with their ids and names.
    let users = http::get(&d.url("/-/api/v1/users"), Some(&admin)).json();
    for u in m["users"].as_array().unwrap() {
        let got = users["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["login"] == u["login"])
            .unwrap_or_else(|| panic!("user {} is missing", u["login"]));
        assert_eq!((&got["id"], &got["name"]), (&u["id"], &u["name"]));
    }
    // Tokens: every live one is listed as it was and authenticates; the revoked one does not.
    let listed = http::get(&d.url("/-/api/v1/tokens"), Some(&admin)).json();
    let listed = listed["tokens"].as_array().unwrap();
    for t in m["tokens"].as_array().unwrap() {
        let got = listed.iter().find(|x| x["id"] == t["id"]);
        let secret = t["secret"].as_str().unwrap();
        // The owners listing authenticates every token, on any registry.
        let me = http::get(&d.url("/local/api/v1/crates/alpha/owners"), Some(secret));
        if t["revoked"] == true {
            assert!(got.is_none(), "revoked token {} came back", t["name"]);
            assert_eq!(me.status, 401, "revoked token {} is refused", t["name"]);
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("token {} is missing", t["name"]));
        for field in ["user", "name", "scopes", "registries", "expires", "created"] {
            assert_eq!(got[field], t[field], "token {}: {field}", t["name"]);
        }
        assert_ne!(me.status, 401, "token {} authenticates", t["name"]);
    }
    // Crates: index lines as they were, owners in order, every blob downloads intact.
    let reader = token_secret(m, "carol-read");
    for (reg, crates) in m["crates"].as_object().unwrap() {
        for c in crates.as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            let resp = http::get(&d.url(&format!("/{reg}/index/{}", index_path(name))), Some(&reader));
            assert_eq!(resp.status, 200, "{reg}/{name} index");
            let lines = parse_index_lines(&resp.text());
            let want: Vec<&Value> = c["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| &v["index_line"])
                .collect();
            assert_eq!(lines.len(), want.len(), "{reg}/{name} versions");
            for (got, want) in lines.iter().zip(want) {
                assert_eq!(got, want, "{reg}/{name} index line");
            }
            let owners = http::get(&d.url(&format!("/{reg}/api/v1/crates/{name}/owners")), Some(&reader)).json();
            let got: Vec<&Value> = owners["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| &u["login"])
                .collect();
            let want: Vec<&Value> = c["owners"].as_array().unwrap().iter().map(|o| &o["login"]).collect();
            assert_eq!(got, want, "{reg}/{name} owners");
            for v in c["versions"].as_array().unwrap() {
                let vers = v["vers"].as_str().unwrap();
                let dl = http::get(
                    &d.url(&format!("/{reg}/api/v1/crates/{name}/{vers}/download")),
                    Some(&reader),
                );
                assert_eq!(dl.status, 200, "{reg}/{name}@{vers} download");
                assert_eq!(
                    sha256_hex(&dl.body),
                    v["cksum"].as_str().unwrap(),
                    "{reg}/{name}@{vers} bytes"
                );
            }
        }
    }
}

#[test]
fn a_sled_era_data_dir_is_migrated_on_first_start() {
    let m = manifest();
    let mut d = Daemon::start_seeded(CONFIG, seed);
    let store = d.data_dir().join("store");
    assert!(store.join("registry.db").is_file(), "the SQL store exists");
    assert!(!store.join("db").exists(), "the sled store is moved aside");
    let aside: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("db.migrated-"))
        .collect();
    assert_eq!(aside.len(), 1, "the old files are kept aside, once");
    let log = d.stderr_log();
    assert!(
        log.contains("migrated the earlier store"),
        "the migration is logged:\n{log}"
    );
    assert!(
        log.contains("versions=10") && log.contains("tokens=6"),
        "with its counts:\n{log}"
    );
    assert_fixture_served(&d, &m);

    // Writes work on migrated crates: alice yanks and unyanks, bob's CI token reads `team`.
    let alice = token_secret(&m, "alice-laptop");
    let yank = http::send(
        Method::DELETE,
        &d.url("/local/api/v1/crates/beta/0.2.0/yank"),
        Some(&alice),
        None,
        &[],
    );
    assert_eq!(yank.status, 200, "{}", yank.text());
    let unyank = http::send(
        Method::PUT,
        &d.url("/local/api/v1/crates/beta/0.2.0/unyank"),
        Some(&alice),
        None,
        &[],
    );
    assert_eq!(unyank.status, 200, "{}", unyank.text());
    let ci = token_secret(&m, "bob-team-ci");
    assert_eq!(
        http::get(&d.url(&format!("/team/index/{}", index_path("team-tool"))), Some(&ci)).status,
        200
    );
    assert_eq!(
        http::get(&d.url(&format!("/team/index/{}", index_path("team-tool"))), None).status,
        401
    );

    // The next start has nothing to migrate and serves the same.
    d.restart();
    let log = d.stderr_log();
    assert_eq!(
        log.matches("migrated the earlier store").count(),
        1,
        "migrated once:\n{log}"
    );
    assert_fixture_served(&d, &m);
}

#[test]
fn a_failed_migration_leaves_the_old_store_for_the_next_start() {
    let data = tempfile::tempdir().unwrap();
    seed(data.path());
    // A SQL store that already holds a user of the fixture: the import's transaction fails on
    // its unique key, as a crash before the commit would leave nothing behind.
    let mut first = Daemon::start_with_config(CONFIG);
    first.add_user("alice");
    first.kill9();
    // The database with its write-ahead log (a killed process leaves its commits there).
    for file in ["registry.db", "registry.db-wal"] {
        let from = first.data_dir().join("store").join(file);
        if from.exists() {
            std::fs::copy(&from, data.path().join("store").join(file)).unwrap();
        }
    }
    let mut cmd = std::process::Command::new(BIN);
    scrub_env(&mut cmd);
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("CARGOHOLD_ADMIN_TOKEN", "chd_test_admin_token_for_the_failed_migration")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon started on a store whose migration must fail");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success(), "the start fails");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("untouched") && err.contains("retried"),
        "the error says what happened:\n{err}"
    );
    assert!(data.path().join("store/db").is_dir(), "the old store is where it was");

    // With the blocking database moved away, the next start migrates.
    std::fs::remove_file(data.path().join("store/registry.db")).unwrap();
    for extra in ["registry.db-wal", "registry.db-shm"] {
        let _ = std::fs::remove_file(data.path().join("store").join(extra));
    }
    let m = manifest();
    let source = data.path().to_owned();
    let d = Daemon::start_seeded(CONFIG, move |dir| copy_dir(&source.join("store"), &dir.join("store")));
    assert!(!d.data_dir().join("store/db").exists());
    assert_fixture_served(&d, &m);
}
