//! `cargohold gc`: blobs no version names (a crash between a publish's blob write and its
//! commit, a deleted registry) are listed, and deleted only with `--apply` and only when older
//! than the grace period; what versions name is never touched. Runs beside the live daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::daemon::{scrub_env, Daemon, BIN};
use crate::support::{http, package, sha256_hex};

fn gc(data: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    scrub_env(&mut cmd);
    cmd.arg("gc")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cargohold gc")
}

fn gc_json(data: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = gc(data, &all);
    assert!(
        out.status.success(),
        "gc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("gc --json prints JSON")
}

fn blob_path(data: &Path, sha: &str) -> PathBuf {
    data.join("store/blobs").join(&sha[..2]).join(&sha[2..4]).join(sha)
}

/// Writes a blob as a publish that crashed before its commit would leave it, `age` ago.
fn orphan(data: &Path, bytes: &[u8], age: Duration) -> String {
    let sha = sha256_hex(bytes);
    let path = blob_path(data, &sha);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    age_file(&path, age);
    sha
}

fn age_file(path: &Path, age: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn gc_collects_only_old_unreferenced_blobs() {
    let d = Daemon::start();
    let token = d.user_token("gc-user", &[]);
    let (body, krate) = package::simple_publish("gc-kept", "1.0.0");
    let r = http::publish_raw(&d.api_url("local"), Some(&token), body);
    assert_eq!(r.status, 200, "{}", r.text());
    let kept = sha256_hex(&krate);
    // Even an old blob is kept while a version names it.
    age_file(&blob_path(d.data_dir(), &kept), Duration::from_secs(7200));
    let old = orphan(d.data_dir(), b"crashed before its commit", Duration::from_secs(7200));
    let young = orphan(d.data_dir(), b"a publish in flight", Duration::from_secs(10));

    let dry = gc_json(d.data_dir(), &[]);
    assert_eq!(dry["blobs"], 3);
    assert_eq!(dry["referenced"], 1);
    assert_eq!(dry["young"], 1, "the young blob is left alone");
    assert_eq!(dry["garbage"].as_array().unwrap().len(), 1);
    assert_eq!(dry["garbage"][0]["sha256"], old.as_str());
    assert_eq!(dry["garbage_bytes"], 25);
    assert_eq!(dry["deleted"], 0);
    assert!(
        blob_path(d.data_dir(), &old).exists(),
        "nothing is deleted without --apply"
    );

    // The text report says what it found and how to delete it.
    let text = gc(d.data_dir(), &[]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains(&old) && stdout.contains("--apply"), "{stdout}");

    let applied = gc_json(d.data_dir(), &["--apply"]);
    assert_eq!(
        (applied["deleted"].as_u64(), applied["deleted_bytes"].as_u64()),
        (Some(1), Some(25))
    );
    assert!(!blob_path(d.data_dir(), &old).exists());
    assert!(blob_path(d.data_dir(), &young).exists());
    let dl = http::get(&d.url("/local/api/v1/crates/gc-kept/1.0.0/download"), None);
    assert_eq!(dl.status, 200);
    assert_eq!(sha256_hex(&dl.body), kept, "the published crate is intact");

    // A deleted registry leaves its blobs to gc.
    d.admin_ok(&["registry", "create", "scratch", "--kind", "hosted"]);
    let tok = d.user_token_for("gc-user", &[], "scratch");
    let (body, krate) = package::simple_publish("gc-scratch", "0.1.0");
    assert_eq!(http::publish_raw(&d.api_url("scratch"), Some(&tok), body).status, 200);
    d.admin_ok(&["registry", "delete", "scratch", "--force"]);
    let gone = sha256_hex(&krate);
    age_file(&blob_path(d.data_dir(), &gone), Duration::from_secs(7200));
    let after = gc_json(d.data_dir(), &["--apply"]);
    assert_eq!(after["deleted"], 1);
    assert!(!blob_path(d.data_dir(), &gone).exists());
}

#[test]
fn gc_refuses_a_short_grace_and_a_missing_store() {
    let d = Daemon::start();
    let short = gc(d.data_dir(), &["--grace", "5s"]);
    assert_eq!(short.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 1m"));
    let junk = gc(d.data_dir(), &["--grace", "soon"]);
    assert_eq!(junk.status.code(), Some(64));
    let empty = tempfile::tempdir().unwrap();
    let none = gc(empty.path(), &[]);
    assert_eq!(none.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no store"));
    assert!(!empty.path().join("store").exists(), "gc does not create a store");
}
