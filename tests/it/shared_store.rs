//! The step from one node to several: `cargohold migrate --to-config FILE` copies the embedded
//! store of a node into PostgreSQL + S3, and a node started on that shared store serves every
//! crate of it to real cargo. Needs the engines `.ci/run` starts (CARGOHOLD_TEST_POSTGRES_URL
//! and CARGOHOLD_TEST_S3_*); without them the test prints that it was skipped.

use std::path::Path;
use std::process::Command;

use crate::support::cargo::CargoEnv;
use crate::support::daemon::{scrub_env, Daemon, BIN, HERMETIC_DEFAULT};
use crate::support::{http, index_path, package, parse_index_lines, sha256_hex};

/// The engines of the environment: (PostgreSQL server URL, S3 endpoint, bucket, key, secret).
pub(crate) struct Engines {
    pub(crate) postgres: String,
    pub(crate) endpoint: String,
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) secret: String,
}

pub(crate) fn engines(test: &str) -> Option<Engines> {
    let var = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
    match (
        var("CARGOHOLD_TEST_POSTGRES_URL"),
        var("CARGOHOLD_TEST_S3_ENDPOINT"),
        var("CARGOHOLD_TEST_S3_BUCKET"),
        var("CARGOHOLD_TEST_S3_ACCESS_KEY"),
        var("CARGOHOLD_TEST_S3_SECRET_KEY"),
    ) {
        (Some(postgres), Some(endpoint), Some(bucket), Some(key), Some(secret)) => Some(Engines {
            postgres,
            endpoint,
            bucket,
            key,
            secret,
        }),
        _ => {
            eprintln!(
                "skipped {test}: needs CARGOHOLD_TEST_POSTGRES_URL and CARGOHOLD_TEST_S3_* (.ci/run starts PostgreSQL and Ceph RGW)"
            );
            None
        }
    }
}

/// A new, empty database on the test server; its URL.
pub(crate) fn fresh_database(server: &str) -> String {
    let name = format!("cargohold_it_{:016x}", rand::random::<u64>());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(server)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let base = server.rsplit_once('/').map_or(server, |(b, _)| b);
    format!("{base}/{name}")
}

/// A daemon config on the shared store (with the hermetic registries).
pub(crate) fn shared_config(e: &Engines, database: &str, prefix: &str) -> String {
    format!(
        "{HERMETIC_DEFAULT}\n[store]\ndatabase = \"{database}\"\nblobs = \"s3://{}/{prefix}\"\n\n[store.s3]\nendpoint = \"{}\"\nallow_http = true\n",
        e.bucket, e.endpoint
    )
}

fn migrate(source: &Daemon, target_config: &Path, e: &Engines) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    scrub_env(&mut cmd);
    cmd.arg("migrate")
        .arg("--data-dir")
        .arg(source.data_dir())
        .arg("--to-config")
        .arg(target_config)
        .env("AWS_ACCESS_KEY_ID", &e.key)
        .env("AWS_SECRET_ACCESS_KEY", &e.secret);
    if let Some(c) = source.config_path() {
        cmd.arg("--config").arg(c);
    }
    cmd.output().expect("run cargohold migrate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn an_embedded_store_migrates_to_postgres_and_s3_and_a_node_there_serves_every_crate() {
    let Some(e) = engines("the migration to PostgreSQL + S3") else {
        return;
    };
    // One node on the embedded store, with crates, a yank and a user with a token.
    let mut one = Daemon::start();
    let token = one.user_token("alice", &[]);
    let api = one.api_url("local");
    let published = [("acme-core", "0.1.0"), ("acme-core", "0.2.0"), ("acme-util", "1.0.0")];
    for (name, vers) in published {
        let (body, _) = package::simple_publish(name, vers);
        let r = http::publish_raw(&api, Some(&token), body);
        assert!((200..300).contains(&r.status), "publish {name} {vers}: {}", r.text());
    }
    let r = http::send(
        reqwest::Method::DELETE,
        &format!("{api}/api/v1/crates/acme-core/0.1.0/yank"),
        Some(&token),
        None,
        &[],
    );
    assert!((200..300).contains(&r.status), "yank: {}", r.text());
    one.stop();

    // The target, named by a config file's [store].
    let database = fresh_database(&e.postgres);
    let prefix = format!("it-{:016x}", rand::random::<u64>());
    let target_toml = shared_config(&e, &database, &prefix);
    let scratch = tempfile::tempdir().unwrap();
    let target_path = scratch.path().join("shared.toml");
    std::fs::write(&target_path, &target_toml).unwrap();

    let out = migrate(&one, &target_path, &e);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "migrate failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("3 sent"), "{stdout}");
    assert!(stdout.contains("imported in one transaction"), "{stdout}");
    assert!(stdout.contains("2 crates, 3 versions"), "{stdout}");
    // Again: nothing changes.
    let out = migrate(&one, &target_path, &e);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "second migrate failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("0 sent") && stdout.contains("nothing changed"),
        "{stdout}"
    );

    // A node on the shared store, with a data dir of its own, serves every crate.
    // The store carries the cluster's admin token (the first node's): the new node has it too.
    let two = Daemon::start_node(
        &target_toml,
        &[("AWS_ACCESS_KEY_ID", &e.key), ("AWS_SECRET_ACCESS_KEY", &e.secret)],
        one.admin_token(),
    );
    assert_ne!(two.data_dir(), one.data_dir());
    for (name, vers) in published {
        let body = http::get(&two.url(&format!("/local/index/{}", index_path(name))), None).text();
        let lines = parse_index_lines(&body);
        let line = lines
            .iter()
            .find(|l| l["vers"] == vers)
            .unwrap_or_else(|| panic!("{name} {vers} is not in the index on the shared store: {body}"));
        assert_eq!(line["yanked"], name == "acme-core" && vers == "0.1.0", "{line}");
        let krate = http::get(
            &format!(
                "{api2}/api/v1/crates/{name}/{vers}/download",
                api2 = two.api_url("local")
            ),
            None,
        );
        assert!(
            (200..300).contains(&krate.status),
            "download {name} {vers}: {}",
            krate.status
        );
        assert_eq!(sha256_hex(&krate.body), line["cksum"].as_str().unwrap());
    }
    // Real cargo resolves and fetches through it.
    let env = CargoEnv::new(&two);
    let project = env.project(
        "consumer",
        "[package]\nname = \"consumer\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\nacme-core = { version = \"0.2\", registry = \"local\" }\nacme-util = { version = \"1\", registry = \"local\" }\n",
        &[("src/main.rs", "fn main() {\n    println!(\"{} {}\", acme_core::version(), acme_util::version());\n}\n")],
    );
    env.must_succeed(&project, &["fetch"]);
    let run = env.must_succeed(&project, &["run", "-q"]);
    assert!(run.stdout.contains("0.2.0 1.0.0"), "{}", run.stdout);
    // The migrated token publishes on the new node, and the blob lands in the bucket.
    let (body, krate) = package::simple_publish("acme-util", "1.1.0");
    let r = http::publish_raw(&two.api_url("local"), Some(&token), body);
    assert!(
        (200..300).contains(&r.status),
        "publish on the shared store: {}",
        r.text()
    );
    let got = http::get(
        &format!("{}/api/v1/crates/acme-util/1.1.0/download", two.api_url("local")),
        None,
    );
    assert_eq!(got.body, krate);
    // The migration now finds a target that moved on, and refuses it.
    let out = migrate(&one, &target_path, &e);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("holds other data"), "{}", text(&out.stderr));
}

#[test]
fn migrate_refuses_what_it_cannot_do_with_clear_messages() {
    let one = Daemon::start();
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("t.toml");
    let e = Engines {
        postgres: String::new(),
        endpoint: "http://127.0.0.1:9".into(),
        bucket: "bucket".into(),
        key: "k".into(),
        secret: "s".into(),
    };
    for (toml, expect) in [
        ("[store]\ndatabase = \"postgres://db/x\"\n", "both database"),
        ("[store]\nblobs = \"s3://bucket\"\n", "both database"),
        ("[store]\ndatabase = \"mysql://db/x\"\n", "store.database"),
        ("[store]\nbolbs = \"s3://bucket\"\n", "bolbs"),
    ] {
        std::fs::write(&target, toml).unwrap();
        let out = migrate(&one, &target, &e);
        assert_eq!(out.status.code(), Some(64), "{toml}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(expect), "{toml}: {}", text(&out.stderr));
    }
    // No store in the data dir.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(
        &target,
        "[store]\ndatabase = \"postgres://db/x\"\nblobs = \"s3://bucket\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    scrub_env(&mut cmd);
    let out = cmd
        .args(["migrate", "--data-dir"])
        .arg(empty.path())
        .arg("--to-config")
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("there is no store"), "{}", text(&out.stderr));
}

#[test]
fn a_node_that_cannot_reach_its_shared_store_says_why_without_secrets() {
    let scratch = tempfile::tempdir().unwrap();
    let run = |toml: &str, env: &[(&str, &str)]| {
        let path = scratch.path().join("node.toml");
        std::fs::write(&path, format!("{HERMETIC_DEFAULT}\n{toml}")).unwrap();
        let mut cmd = Command::new(BIN);
        scrub_env(&mut cmd);
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"] {
            cmd.env_remove(var);
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(scratch.path().join("data"))
            .arg("--config")
            .arg(&path)
            .env("CARGOHOLD_ADMIN_TOKEN", "chd_admin_token_of_the_unreachable_store_test");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run cargohold serve");
        assert!(!out.status.success(), "started without its store");
        text(&out.stderr)
    };
    // S3 blobs without the keys in the environment: the variables are named.
    let err = run(
        "[store]\nblobs = \"s3://bucket/prefix\"\n[store.s3]\nendpoint = \"http://127.0.0.1:9\"\nallow_http = true\n",
        &[],
    );
    assert!(
        err.contains("AWS_ACCESS_KEY_ID") && err.contains("AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    // An endpoint that does not answer: the start fails naming the bucket, never the secret.
    let err = run(
        "[store]\nblobs = \"s3://bucket/prefix\"\n[store.s3]\nendpoint = \"http://127.0.0.1:9\"\nallow_http = true\n",
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
            ("AWS_SECRET_ACCESS_KEY", "s3-secret-never-shown"),
        ],
    );
    assert!(err.contains("s3://bucket/prefix"), "{err}");
    assert!(!err.contains("s3-secret-never-shown"), "{err}");
    // A database that does not answer: the URL is shown with its password redacted.
    let err = run(
        "[store]\ndatabase = \"postgres://app:pg-password-never-shown@127.0.0.1:9/cargohold\"\n",
        &[],
    );
    assert!(err.contains("postgres://app:***@127.0.0.1:9/cargohold"), "{err}");
    assert!(!err.contains("pg-password-never-shown"), "{err}");
}
