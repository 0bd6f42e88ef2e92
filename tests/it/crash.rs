//! Crash safety: SIGKILL the daemon while publishes are in flight, restart it on the same data
//! directory, and check that what was acknowledged survived and that nothing half-written is
//! visible.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::support::daemon::Daemon;
use crate::support::{expand_dl, http, index_path, package, parse_index_lines, sha256_hex};

const CRATES: [&str; 4] = ["crash-alpha", "crash-beta", "crash-gamma", "crash-delta"];
const PER_ROUND: usize = 20;

/// One publish request of the test.
#[derive(Clone)]
struct Job {
    name: String,
    vers: String,
    /// SHA-256 of the `.crate` bytes sent.
    sha: String,
    body: Vec<u8>,
}

/// What happened to one request.
#[derive(Debug)]
enum Outcome {
    Status(u16, String),
    Transport(String),
}

fn jobs_for_round(round: usize) -> Vec<Job> {
    (0..PER_ROUND)
        .map(|i| {
            let name = CRATES[i % CRATES.len()].to_owned();
            let vers = format!("{round}.{}.0", i / CRATES.len());
            let (body, krate) = package::simple_publish(&name, &vers);
            Job {
                name,
                vers,
                sha: sha256_hex(&krate),
                body,
            }
        })
        .collect()
}

/// Fires every job concurrently and SIGKILLs the daemon once `kill_after` responses have come
/// back (immediately when 0). Returns each job's outcome, in job order.
fn fire_and_kill(daemon: &mut Daemon, token: &str, jobs: &[Job], kill_after: usize) -> Vec<Outcome> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        // A guard against a wedged connection, not an assertion about speed.
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client");
    let url = format!("{}/api/v1/crates/new", daemon.api_url("local"));
    let (tx, rx) = mpsc::channel::<()>();
    let handles: Vec<_> = jobs
        .iter()
        .map(|job| {
            let client = client.clone();
            let url = url.clone();
            let token = token.to_owned();
            let body = job.body.clone();
            let tx = tx.clone();
            rt.spawn(async move {
                let res = http::send_async(
                    &client,
                    Method::PUT,
                    &url,
                    Some(&token),
                    Some(body),
                    &[
                        ("Content-Type", "application/octet-stream"),
                        ("Accept", "application/json"),
                    ],
                )
                .await;
                let _ = tx.send(());
                match res {
                    Ok(r) => Outcome::Status(r.status, r.text()),
                    Err(e) => Outcome::Transport(e.to_string()),
                }
            })
        })
        .collect();
    drop(tx);
    for _ in 0..kill_after {
        // Liveness guard only: if responses stop coming, kill anyway.
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            break;
        }
    }
    daemon.kill9();
    let outcomes = rt.block_on(async {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("publish task panicked"));
        }
        out
    });
    rt.shutdown_background();
    outcomes
}

/// Checks the store after a restart. `acked` = versions that got a 200, `sent` = every version
/// ever sent (with its crate's SHA-256). Returns the versions present in the index.
fn verify(
    daemon: &Daemon,
    acked: &BTreeSet<(String, String)>,
    sent: &BTreeMap<(String, String), String>,
) -> BTreeSet<(String, String)> {
    let cfg = http::get(&daemon.url("/local/index/config.json"), None);
    assert_eq!(cfg.status, 200, "config.json after restart: {}", cfg.text());
    let dl = cfg.json()["dl"].as_str().expect("config.json dl").to_owned();
    let mut present = BTreeSet::new();
    for name in CRATES {
        let url = daemon.url(&format!("/local/index/{}", index_path(name)));
        let resp = http::get(&url, None);
        let lines: Vec<Value> = match resp.status {
            200 => parse_index_lines(&resp.text()),
            404 => Vec::new(),
            s => panic!("GET {url} after restart: {s} {}", resp.text()),
        };
        let mut seen = BTreeSet::new();
        for line in &lines {
            let vers = line["vers"].as_str().expect("vers").to_owned();
            assert_eq!(line["name"], name, "line in the wrong file: {line}");
            assert!(seen.insert(vers.clone()), "{name}@{vers} listed twice: {lines:#?}");
            let cksum = line["cksum"].as_str().expect("cksum").to_owned();
            let key = (name.to_owned(), vers.clone());
            if let Some(sha) = sent.get(&key) {
                assert_eq!(
                    &cksum, sha,
                    "{name}@{vers}: index cksum is not the SHA-256 of the uploaded .crate"
                );
            }
            let dl_url = expand_dl(&dl, name, &vers, &cksum);
            let got = http::get(&dl_url, None);
            assert_eq!(
                got.status,
                200,
                "{name}@{vers} is in the index but its download fails ({dl_url}): {}",
                got.text()
            );
            assert_eq!(
                sha256_hex(&got.body),
                cksum,
                "{name}@{vers}: downloaded bytes do not match the index cksum"
            );
            present.insert(key);
        }
    }
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "acknowledged (HTTP 200) publishes missing from the index after SIGKILL + restart: {lost:?}"
    );
    present
}

#[test]
fn acknowledged_publishes_survive_sigkill() {
    let mut daemon = Daemon::start();
    let token = daemon.user_token("crasher", &[]);
    let mut acked = BTreeSet::new();
    let mut sent = BTreeMap::new();
    let mut report = Vec::new();

    // Kill at different moments: before any answer, after a few, after most.
    for (round, kill_after) in [0usize, 2, 6, 15].into_iter().enumerate() {
        let jobs = jobs_for_round(round);
        for j in &jobs {
            sent.insert((j.name.clone(), j.vers.clone()), j.sha.clone());
        }
        let outcomes = fire_and_kill(&mut daemon, &token, &jobs, kill_after);
        let mut ok = 0;
        let mut transport = Vec::new();
        for (job, outcome) in jobs.iter().zip(&outcomes) {
            match outcome {
                Outcome::Status(200, _) => {
                    ok += 1;
                    acked.insert((job.name.clone(), job.vers.clone()));
                }
                Outcome::Status(s, body) => {
                    // A valid, distinct version may only fail for server-side reasons.
                    assert!(
                        !(400..500).contains(s) || *s == 429,
                        "publish of {}@{} refused with {s}: {body}",
                        job.name,
                        job.vers
                    );
                }
                Outcome::Transport(e) => transport.push(e.clone()),
            }
        }
        report.push(format!(
            "round {round}: kill after {kill_after} answers, {ok} x 200, {} transport errors {:?}",
            transport.len(),
            transport.first()
        ));
        daemon.restart();
        let present = verify(&daemon, &acked, &sent);
        report.push(format!(
            "  after restart: {} versions in the index, {} acknowledged so far",
            present.len(),
            acked.len()
        ));
    }

    // The daemon still works after the crashes: every version that did not make it into the
    // index can be published now (no half-written state blocks it), and shows up.
    let present = verify(&daemon, &acked, &sent);
    let api = daemon.api_url("local");
    let mut republished = BTreeSet::new();
    for (name, vers) in sent.keys() {
        if present.contains(&(name.clone(), vers.clone())) {
            continue;
        }
        let (body, _) = package::simple_publish(name, vers);
        let resp = http::publish_raw(&api, Some(&token), body);
        assert_eq!(
            resp.status,
            200,
            "re-publishing {name}@{vers} (not in the index after the crashes) failed: {}\n{}",
            resp.text(),
            report.join("\n")
        );
        republished.insert((name.clone(), vers.clone()));
    }
    acked.extend(republished);
    let present = verify(&daemon, &acked, &sent);
    assert_eq!(
        present.len(),
        sent.len(),
        "after re-publishing everything is in the index\n{}",
        report.join("\n")
    );
    eprintln!("{}", report.join("\n"));
}
