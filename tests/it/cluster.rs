//! Two nodes behind one load balancer: separate data dirs, one PostgreSQL database and one S3
//! bucket (Ceph RGW in CI). What one node commits, the other serves — to real cargo, at its next
//! request; races between the nodes have one winner; a node killed mid-publish loses nothing it
//! acknowledged. Needs the engines `.ci/run` starts; without them it prints that it was skipped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::shared_store::{engines, fresh_database, shared_config, Engines};
use crate::support::cargo::CargoEnv;
use crate::support::daemon::Daemon;
use crate::support::fake_upstream::{FakeUpstream, Package as FakePackage};
use crate::support::{http, index_path, package, parse_index_lines, random_secret, sha256_hex};

/// Two nodes on a fresh database and bucket prefix, with the cluster's one admin token.
fn two_nodes(e: &Engines) -> (Daemon, Daemon) {
    let database = fresh_database(&e.postgres);
    let prefix = format!("cluster-{:016x}", rand::random::<u64>());
    let config = shared_config(e, &database, &prefix);
    let env = [
        ("AWS_ACCESS_KEY_ID", e.key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", e.secret.as_str()),
    ];
    let token = random_secret();
    let a = Daemon::start_node(&config, &env, &token);
    let b = Daemon::start_node(&config, &env, &token);
    (a, b)
}

/// The index lines node `d` serves for `name` in `local` (none for a 404).
fn lines(d: &Daemon, name: &str) -> Vec<serde_json::Value> {
    let r = http::get(&d.url(&format!("/local/index/{}", index_path(name))), None);
    if r.status == 404 {
        return Vec::new();
    }
    assert_eq!(r.status, 200, "{}", r.text());
    parse_index_lines(&r.text())
}

/// Polls until `check` holds; returns how long that took. Generous bound (a loaded CI
/// machine): this proves the change arrives, the delay is printed, not asserted.
fn eventually(what: &str, check: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(15), "never seen: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn two_nodes_share_one_store_and_stay_coherent() {
    let Some(e) = engines("two nodes on one store") else {
        return;
    };
    let (mut a, b) = two_nodes(&e);
    let alice = a.user_token("alice", &[]);

    // Published through A; B has answered 404 for it just before, and real cargo through B
    // resolves and builds it.
    assert!(lines(&b, "acme-core").is_empty());
    let (body, krate) = package::simple_publish("acme-core", "1.0.0");
    let r = http::publish_raw(&a.api_url("local"), Some(&alice), body);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = eventually("B serves acme-core 1.0.0", || lines(&b, "acme-core").len() == 1);
    eprintln!("publish on A visible on B after {seen:?}");
    let env = CargoEnv::new(&b);
    let project = env.project(
        "consumer",
        "[package]\nname = \"consumer\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\nacme-core = { version = \"1\", registry = \"local\" }\n",
        &[("src/main.rs", "fn main() {\n    println!(\"{}\", acme_core::version());\n}\n")],
    );
    let run = env.must_succeed(&project, &["run", "-q"]);
    assert!(run.stdout.contains("1.0.0"), "{}", run.stdout);
    let got = http::get(&b.url("/local/api/v1/crates/acme-core/1.0.0/download"), None);
    assert_eq!(got.body, krate);

    // A yank through B reaches A, which had the file cached.
    assert_eq!(lines(&a, "acme-core")[0]["yanked"], false);
    let r = http::send(
        reqwest::Method::DELETE,
        &b.url("/local/api/v1/crates/acme-core/1.0.0/yank"),
        Some(&alice),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = eventually("A serves the yank", || lines(&a, "acme-core")[0]["yanked"] == true);
    eprintln!("yank on B visible on A after {seen:?}");

    // A registry created on A is served by B.
    a.admin_ok(&["registry", "create", "team", "--kind", "hosted"]);
    eventually("B serves registry `team`", || {
        http::get(&b.url("/team/index/config.json"), None).status == 200
    });

    // The same version sent to both nodes at once: one winner, and both nodes serve it.
    let outcomes: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = [&a, &b]
            .into_iter()
            .map(|d| {
                let (api, tok) = (d.api_url("local"), alice.clone());
                s.spawn(move || {
                    let (body, _) = package::simple_publish("contested", "1.0.0");
                    http::publish_raw(&api, Some(&tok), body).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|s| **s == 200).count(), 1, "{outcomes:?}");
    for d in [&a, &b] {
        eventually("both nodes serve the one contested version", || {
            lines(d, "contested").len() == 1
        });
    }

    // A killed during 10 concurrent publishes: every version A acknowledged is complete on B
    // (its index line, and a download matching its checksum), its blob in the bucket.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let api = a.api_url("local");
    std::thread::scope(|s| {
        for i in 0..10 {
            let (api, tok, acked) = (api.clone(), alice.clone(), acked.clone());
            s.spawn(move || {
                let name = format!("burst-{i}");
                let (body, krate) = package::simple_publish(&name, "1.0.0");
                if http::try_publish_raw(&api, Some(&tok), body).is_some_and(|r| r.status == 200) {
                    acked.lock().unwrap().push((name, sha256_hex(&krate)));
                }
            });
        }
        // Kill A as soon as the first acknowledgement is in, while the others are in flight.
        let start = Instant::now();
        while acked.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        a.kill9();
    });
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "A acknowledged no publish before it was killed");
    eprintln!("{} of 10 publishes acknowledged before kill -9", acked.len());
    for (name, cksum) in &acked {
        let l = lines(&b, name);
        assert_eq!(l.len(), 1, "{name}: {l:?}");
        assert_eq!(l[0]["cksum"], cksum.as_str(), "{name}");
        let got = http::get(&b.url(&format!("/local/api/v1/crates/{name}/1.0.0/download")), None);
        assert_eq!(got.status, 200, "{name}");
        assert_eq!(&sha256_hex(&got.body), cksum, "{name}");
    }
}

/// A node that was down while another changed a proxy's upstream URL drops, at its start, the
/// index files it cached from the old upstream. Revalidating them against the new upstream
/// would read every version the new one lacks as taken down, and quarantine its `.crate`.
#[test]
fn a_node_down_while_the_upstream_changed_drops_what_the_old_one_sent() {
    let Some(e) = engines("a node down while the upstream changed") else {
        return;
    };
    let old = FakeUpstream::start_blocking();
    let kept = FakePackage::new("moved", "1.0.0");
    let only_old = FakePackage::new("moved", "1.1.0");
    old.add_crate(&kept);
    old.add_crate(&only_old);
    let new = FakeUpstream::start_blocking();
    new.add_crate(&kept);

    let (a, mut b) = two_nodes(&e);
    let json = |method: reqwest::Method, url: String, body: serde_json::Value| {
        http::send(
            method,
            &url,
            Some(a.admin_token()),
            Some(body.to_string().into_bytes()),
            &[("Content-Type", "application/json")],
        )
    };
    let r = json(
        reqwest::Method::POST,
        a.url("/-/api/v1/registries"),
        serde_json::json!({"name": "mirror", "kind": "proxy", "upstream": old.index_url(), "index_ttl_secs": 1}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let path = format!("/mirror/index/{}", index_path("moved"));
    eventually("node B serving the new proxy", || {
        http::get(&b.url(&path), None).status == 200
    });
    for pkg in [&kept, &only_old] {
        let r = http::get(
            &b.url(&format!("/mirror/api/v1/crates/moved/{}/download", pkg.vers())),
            None,
        );
        assert_eq!(r.body, pkg.crate_bytes());
    }
    b.stop();

    let r = json(
        reqwest::Method::PATCH,
        a.url("/-/api/v1/registries/mirror"),
        serde_json::json!({"upstream": new.index_url()}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    b.restart();
    // Past `index_ttl`: a file still cached would be revalidated now.
    std::thread::sleep(Duration::from_millis(1100));
    let r = http::get(&b.url(&path), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("\"1.0.0\"") && !r.text().contains("\"1.1.0\""),
        "{}",
        r.text()
    );
    let quarantine = b.admin_ok(&["quarantine", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&quarantine).unwrap();
    assert_eq!(v["quarantine"], serde_json::json!([]), "{quarantine}\n{}", b.log_tail());
}
