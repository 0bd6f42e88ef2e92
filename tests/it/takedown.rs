//! Upstream takedowns (issue 13): the fake upstream removes a crate or one version line; after
//! `index_ttl` (1 s here; every wait polls against a deadline, nothing is timed) the proxy
//! answers 404 for the index file, refuses the cached `.crate` (also from the memory tier and
//! through a merged view) with a message saying it was removed and quarantined, lists it in
//! `cargohold quarantine list`, counts it in a metric and sends `upstream.removed` once. An
//! upstream that fails, or sends an empty file, removes nothing; an offline proxy keeps what
//! it has.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::daemon::Daemon;
use crate::support::fake_upstream::{FakeUpstream, Package};
use crate::support::http::{self, Resp};
use crate::support::sha256_hex;

/// A proxy `crates-io` of `up` revalidating every second, `local` merged over it by crate and
/// `union` by version, webhooks to loopback allowed.
fn daemon_over(up: &FakeUpstream, proxy_extra: &str) -> Daemon {
    let top = "[webhooks]\nallow_private = true\nretry_base = \"50ms\"\n";
    let extra = format!("index_ttl = \"1s\"\n{proxy_extra}");
    Daemon::start_with_config(&crate::support::merged_config(
        &up.index_url(),
        top,
        &extra,
        "",
        Some(""),
    ))
}

fn get(d: &Daemon, path: &str) -> Resp {
    http::get(&d.url(path), None)
}

fn download(d: &Daemon, reg: &str, name: &str, vers: &str) -> Resp {
    get(d, &format!("/{reg}/api/v1/crates/{name}/{vers}/download"))
}

fn index_path(name: &str) -> String {
    crate::support::index_path(name)
}

/// Polls `f` (every 100 ms, for at most 60 s) until it returns `Some`.
fn wait_until<T>(what: &str, d: &Daemon, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            d.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Downloads `name@vers` until it is served from the memory tier (the first download fills
/// the disk cache, the next reads the file into memory, the one after is a memory hit).
fn cache_in_memory(d: &Daemon, reg: &str, pkg: &Package) {
    for _ in 0..3 {
        let r = download(d, reg, pkg.name(), pkg.vers());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, pkg.crate_bytes());
    }
}

/// Every line of the metrics page naming `name`.
fn metric_lines(d: &Daemon, name: &str) -> Vec<String> {
    get(d, "/-/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with(name))
        .map(str::to_owned)
        .collect()
}

/// Stops the daemon gracefully (its caches flushed), rewrites its config file with `edit`,
/// and starts it again on the same data directory.
fn restart_with_config(d: &mut Daemon, edit: impl FnOnce(&str) -> String) {
    d.stop();
    let path = d.config_path().expect("a config file").to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
    d.restart();
}

fn quarantine_json(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["quarantine", "list", "--json"];
    all.extend_from_slice(args);
    let out = d.admin_ok(&all);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["quarantine"].as_array().cloned().unwrap_or_default()
}

/// A webhook receiver on 127.0.0.1 that answers 200 and keeps every body.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let g = g.clone();
                std::thread::spawn(move || serve(conn, &g));
            }
        });
        Receiver { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn received(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, got: &Mutex<Vec<Value>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        got.lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        let mut w = &conn;
        if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

fn hook_to(d: &Daemon, rx: &Receiver, events: &str) {
    let secret = d.scratch_dir().join("hook-secret");
    std::fs::write(&secret, "a secret of the takedown tests\n").unwrap();
    d.admin_ok(&[
        "hook",
        "create",
        "--url",
        &rx.url(),
        "--secret-file",
        secret.to_str().unwrap(),
        "--events",
        events,
    ]);
}

#[test]
fn a_crate_taken_down_upstream_is_refused_quarantined_counted_and_reported_once() {
    let up = FakeUpstream::start_blocking();
    let v1 = Package::new("evil", "1.0.0");
    let v2 = Package::new("evil", "1.1.0");
    let good = Package::new("good", "1.0.0");
    for p in [&v1, &v2, &good] {
        up.add_crate(p);
    }
    let rx = Receiver::start();
    let d = daemon_over(&up, "");
    hook_to(&d, &rx, "upstream.removed");
    // 1.0.0 cached on disk and in memory, through the proxy and the merged view; 1.1.0 never
    // downloaded; `good` cached too.
    cache_in_memory(&d, "crates-io", &v1);
    cache_in_memory(&d, "local", &v1);
    cache_in_memory(&d, "union", &v1);
    cache_in_memory(&d, "crates-io", &good);
    for reg in ["crates-io", "local", "union"] {
        assert_eq!(
            get(&d, &format!("/{reg}/index/{}", index_path("evil"))).status,
            200,
            "{reg}"
        );
    }

    up.remove_crate("evil");
    // Within index_ttl (plus the poll) the index file is a 404 ...
    wait_until("the index file to be a 404", &d, || {
        (get(&d, &format!("/crates-io/index/{}", index_path("evil"))).status == 404).then_some(())
    });
    // ... and the cached .crate is refused, memory tier included, saying why.
    for reg in ["crates-io", "local", "union"] {
        let r = download(&d, reg, "evil", "1.0.0");
        assert_eq!(r.status, 404, "{reg}: {}", r.text());
        let detail = r.error_details().join(" ");
        assert!(
            detail.contains("removed from the upstream index") && detail.contains("quarantined"),
            "{reg}: {detail}"
        );
        assert_ne!(r.body, v1.crate_bytes());
    }
    for reg in ["local", "union"] {
        let status = get(&d, &format!("/{reg}/index/{}", index_path("evil"))).status;
        assert_eq!(status, 404, "merged view {reg}");
    }
    let r = download(&d, "crates-io", "evil", "1.1.0");
    assert_eq!(r.status, 404, "{}", r.text());
    // Other crates are untouched.
    assert_eq!(download(&d, "crates-io", "good", "1.0.0").body, good.crate_bytes());

    // Quarantined: listed by the API (the CLI default) and from the data directory, kept on
    // disk, out of the served cache.
    let sha = sha256_hex(&v1.crate_bytes());
    for rows in [quarantine_json(&d, &[]), {
        let dir = d.data_dir().to_str().unwrap().to_owned();
        quarantine_json(&d, &["--data-dir", &dir])
    }] {
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = &rows[0];
        assert_eq!(
            (
                &row["registry"],
                &row["crate"],
                &row["version"],
                &row["reason"],
                &row["cksum"]
            ),
            (
                &Value::from("crates-io"),
                &Value::from("evil"),
                &Value::from("1.0.0"),
                &Value::from("crate_removed"),
                &Value::from(sha.as_str())
            )
        );
        assert_eq!(row["size"], v1.crate_bytes().len());
    }
    let table = d.admin_ok(&["quarantine", "list"]);
    assert!(
        table.contains("evil 1.0.0") && table.contains("crate_removed"),
        "{table}"
    );
    let kept = d.data_dir().join(format!("cache/crates/quarantine/{sha}.crate"));
    assert_eq!(std::fs::read(&kept).unwrap(), v1.crate_bytes());
    assert!(!d.data_dir().join(format!("cache/crates/{}/{sha}", &sha[..2])).exists());

    // Counted: both versions of the crate (one of them was not cached).
    let lines = metric_lines(&d, "cargohold_upstream_removed_total{");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("registry=\"crates-io\"")
            && lines[0].contains("reason=\"crate_removed\"")
            && lines[0].ends_with(" 2"),
        "{lines:?}"
    );

    // Reported: one event per version.
    let got = wait_until("two upstream.removed deliveries", &d, || {
        let got = rx.received();
        (got.len() >= 2).then_some(got)
    });
    let mut events: Vec<(String, bool)> = got
        .iter()
        .map(|e| {
            assert_eq!(e["event"], "upstream.removed", "{e}");
            assert_eq!(
                (&e["registry"], &e["crate"], &e["reason"]),
                (
                    &Value::from("crates-io"),
                    &Value::from("evil"),
                    &Value::from("crate_removed")
                )
            );
            (
                e["version"].as_str().unwrap().to_owned(),
                e["quarantined"].as_bool().unwrap(),
            )
        })
        .collect();
    events.sort();
    assert_eq!(events, [("1.0.0".to_owned(), true), ("1.1.0".to_owned(), false)]);
    assert_eq!(
        got.iter().find(|e| e["version"] == "1.0.0").unwrap()["cksum"],
        sha.as_str()
    );

    // Revalidated again and again: still one event per version.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(get(&d, &format!("/crates-io/index/{}", index_path("evil"))).status, 404);
        assert_eq!(download(&d, "crates-io", "evil", "1.0.0").status, 404);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rx.received().len(), 2, "{:?}", rx.received());
}

#[test]
fn a_removed_version_goes_alone() {
    let up = FakeUpstream::start_blocking();
    let old = Package::new("multi", "1.0.0");
    let new = Package::new("multi", "1.1.0");
    up.add_crate(&old);
    up.add_crate(&new);
    let d = daemon_over(&up, "");
    let rx = Receiver::start();
    hook_to(&d, &rx, "upstream.removed,upstream.relisted");
    cache_in_memory(&d, "crates-io", &old);
    cache_in_memory(&d, "crates-io", &new);

    up.remove_version("multi", "1.0.0");
    let body = wait_until("the index file without 1.0.0", &d, || {
        let r = get(&d, &format!("/crates-io/index/{}", index_path("multi")));
        assert_eq!(r.status, 200);
        (!r.text().contains("\"1.0.0\"")).then(|| r.text())
    });
    assert!(body.contains("\"1.1.0\""), "{body}");
    let r = download(&d, "crates-io", "multi", "1.0.0");
    assert_eq!(r.status, 404, "{}", r.text());
    let detail = r.error_details().join(" ");
    assert!(
        detail.contains("version_removed") && detail.contains("quarantined"),
        "{detail}"
    );
    for reg in ["crates-io", "local"] {
        assert_eq!(download(&d, reg, "multi", "1.1.0").body, new.crate_bytes(), "{reg}");
    }
    let rows = quarantine_json(&d, &[]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0]["version"], &rows[0]["reason"]),
        (&Value::from("1.0.0"), &Value::from("version_removed"))
    );
    let lines = metric_lines(&d, "cargohold_upstream_removed_total{");
    assert!(
        lines.len() == 1 && lines[0].contains("version_removed") && lines[0].ends_with(" 1"),
        "{lines:?}"
    );

    // The 404 says how the file comes back.
    let sha = sha256_hex(&old.crate_bytes());
    assert!(
        detail.contains("lists it again") && detail.contains(&format!("cargohold quarantine release {sha}")),
        "{detail}"
    );

    // Listed again upstream with the same bytes (the removal was a mistake): the revalidation
    // that sees it drops the removal and puts the file back; it is served from that copy.
    let downloads = up.download_hits();
    up.add_crate(&old);
    wait_until("the index file with 1.0.0 again", &d, || {
        let r = get(&d, &format!("/crates-io/index/{}", index_path("multi")));
        r.text().contains("\"1.0.0\"").then_some(())
    });
    assert!(quarantine_json(&d, &[]).is_empty());
    for reg in ["crates-io", "local"] {
        assert_eq!(download(&d, reg, "multi", "1.0.0").body, old.crate_bytes(), "{reg}");
    }
    assert_eq!(up.download_hits(), downloads, "served from the copy put back");
    assert!(d.stderr_log().contains("lists this version again"), "{}", d.log_tail());
    // Counted, and reported after the removal: the receiver learns it is back.
    let lines = metric_lines(&d, "cargohold_upstream_relisted_total{");
    assert!(
        lines.len() == 1 && lines[0].contains("registry=\"crates-io\"") && lines[0].ends_with(" 1"),
        "{lines:?}"
    );
    let got = wait_until("the removal and the relisting delivered", &d, || {
        let got = rx.received();
        (got.len() >= 2).then_some(got)
    });
    let seen: Vec<(String, String, Value)> = got
        .iter()
        .map(|e| {
            assert_eq!(
                (&e["crate"], &e["cksum"]),
                (&Value::from("multi"), &Value::from(sha.as_str())),
                "{e}"
            );
            let flag = if e["event"] == "upstream.removed" {
                e["quarantined"].clone()
            } else {
                e["released"].clone()
            };
            (
                e["event"].as_str().unwrap().to_owned(),
                e["version"].as_str().unwrap().to_owned(),
                flag,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("upstream.removed".to_owned(), "1.0.0".to_owned(), Value::from(true)),
            ("upstream.relisted".to_owned(), "1.0.0".to_owned(), Value::from(true)),
        ]
    );

    // Removed once more, then released by hand: served from the released copy.
    up.remove_version("multi", "1.0.0");
    wait_until("the second takedown", &d, || {
        get(&d, &format!("/crates-io/index/{}", index_path("multi")));
        (quarantine_json(&d, &[]).len() == 1).then_some(())
    });
    assert_eq!(download(&d, "crates-io", "multi", "1.0.0").status, 404);
    // A new episode: reported again, so the receiver's last event is the version's state.
    let got = wait_until("the second removal delivered", &d, || {
        let got = rx.received();
        (got.len() >= 3).then_some(got)
    });
    assert_eq!(
        (&got[2]["event"], &got[2]["episode"]),
        (&Value::from("upstream.removed"), &Value::from(1)),
        "{got:?}"
    );
    assert_eq!(
        (&got[0]["episode"], &got[1]["episode"]),
        (&Value::from(0), &Value::from(0))
    );
    d.admin_ok(&["quarantine", "release", &sha]);
    assert!(quarantine_json(&d, &[]).is_empty());
}

#[test]
fn an_upstream_that_fails_or_sends_an_empty_file_removes_nothing() {
    let mut up = FakeUpstream::start_blocking();
    let pkg = Package::new("steady", "1.0.0");
    up.add_crate(&pkg);
    let d = daemon_over(&up, "");
    cache_in_memory(&d, "crates-io", &pkg);
    let path = format!("/crates-io/index/{}", index_path("steady"));
    let check_served = |what: &str| {
        let r = get(&d, &path);
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert!(r.text().contains("\"1.0.0\""), "{what}");
        assert_eq!(
            download(&d, "crates-io", "steady", "1.0.0").body,
            pkg.crate_bytes(),
            "{what}"
        );
        r
    };
    // 500s while revalidating: the stale copy is served.
    up.set_status_override(Some(500));
    let hits = up.index_hits();
    wait_until("a revalidation against the failing upstream", &d, || {
        let r = check_served("500");
        (up.index_hits() > hits && r.header("x-cache").as_deref() == Some("STALE")).then_some(())
    });
    up.set_status_override(None);
    // A 200 with an empty body: a broken upstream, not a takedown; served stale.
    up.set_index_file("steady", b"");
    let hits = up.index_hits();
    wait_until("a revalidation that gets the empty file", &d, || {
        check_served("empty");
        (up.index_hits() > hits).then_some(())
    });
    check_served("empty, after");
    // Down altogether.
    up.go_down_blocking();
    // Past the 10 s the stale answer above holds, so the proxy does try the upstream.
    std::thread::sleep(Duration::from_millis(10_500));
    check_served("down");
    assert!(quarantine_json(&d, &[]).is_empty());
    assert!(metric_lines(&d, "cargohold_upstream_removed_total{").is_empty());
}

#[test]
fn an_offline_proxy_keeps_what_it_has() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("kept", "1.0.0");
    up.add_crate(&pkg);
    let mut d = daemon_over(&up, "");
    cache_in_memory(&d, "crates-io", &pkg);
    // The same data directory (caches flushed by a graceful stop), now offline.
    restart_with_config(&mut d, |text| {
        text.replace("index_ttl = \"1s\"", "index_ttl = \"1s\"\noffline = true")
    });
    up.remove_crate("kept");
    let hits = up.total_hits();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1100));
        let r = get(&d, &format!("/crates-io/index/{}", index_path("kept")));
        assert_eq!(r.status, 200, "{}", r.text());
        for reg in ["crates-io", "local"] {
            assert_eq!(download(&d, reg, "kept", "1.0.0").body, pkg.crate_bytes(), "{reg}");
        }
    }
    assert_eq!(up.total_hits(), hits, "offline never asks the upstream");
    assert!(quarantine_json(&d, &[]).is_empty());
}

/// The crate cache is shared by content: when one proxy's upstream takes a version down, an
/// offline proxy that has the same bytes keeps listing (`prune_index`) and serving them (it
/// never sees a takedown and cannot fetch them again), copied back from the quarantine; the
/// proxy that removed it still refuses it.
#[test]
fn an_offline_proxy_keeps_bytes_another_proxy_quarantined() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("shared", "1.0.0");
    up.add_crate(&pkg);
    let config = format!(
        "[registries.live]\nkind = \"proxy\"\nupstream = \"{0}\"\nindex_ttl = \"1s\"\n\n\
         [registries.frozen]\nkind = \"proxy\"\nupstream = \"{0}\"\nindex_ttl = \"1s\"\n# frozen\n",
        up.index_url()
    );
    let mut d = Daemon::start_with_config(&config);
    for reg in ["live", "frozen"] {
        assert_eq!(download(&d, reg, "shared", "1.0.0").body, pkg.crate_bytes(), "{reg}");
    }
    restart_with_config(&mut d, |_| {
        config.replace("# frozen\n", "offline = true\nprune_index = true\n")
    });
    up.remove_crate("shared");
    wait_until("the live proxy's takedown", &d, || {
        (download(&d, "live", "shared", "1.0.0").status == 404).then_some(())
    });
    assert_eq!(quarantine_json(&d, &[]).len(), 1);
    // Its pruned index file (only what it can serve) still lists the version.
    let r = get(&d, &format!("/frozen/index/{}", index_path("shared")));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"1.0.0\""), "{}", r.text());
    for _ in 0..2 {
        let r = download(&d, "frozen", "shared", "1.0.0");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, pkg.crate_bytes());
    }
    let r = download(&d, "live", "shared", "1.0.0");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("quarantined"), "{}", r.text());
    assert_eq!(quarantine_json(&d, &[]).len(), 1, "still listed");
}

/// A removed crate whose name is published again upstream (crates.io frees the name of a
/// deleted crate) with the same version number but other bytes: those bytes were never taken
/// down, so the proxy fetches them; the quarantined ones stay refused and listed.
#[test]
fn a_version_published_again_with_other_bytes_is_not_the_quarantined_one() {
    let up = FakeUpstream::start_blocking();
    let old = Package::new("reborn", "1.0.0");
    up.add_crate(&old);
    // The 404 is remembered for a second, not the default minute.
    let d = daemon_over(&up, "negative_ttl = \"1s\"");
    assert_eq!(download(&d, "crates-io", "reborn", "1.0.0").body, old.crate_bytes());
    up.remove_crate("reborn");
    wait_until("the takedown", &d, || {
        (download(&d, "crates-io", "reborn", "1.0.0").status == 404).then_some(())
    });
    assert_eq!(quarantine_json(&d, &[]).len(), 1);
    let new = Package::new("reborn", "1.0.0").file("src/new.rs", "// a new owner\n");
    assert_ne!(new.cksum(), old.cksum());
    up.add_crate(&new);
    wait_until("the index file to list it again", &d, || {
        (get(&d, &format!("/crates-io/index/{}", index_path("reborn"))).status == 200).then_some(())
    });
    let r = download(&d, "crates-io", "reborn", "1.0.0");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, new.crate_bytes());
    let rows = quarantine_json(&d, &[]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["cksum"], old.cksum());
}

#[test]
fn the_quarantine_api_refuses_bad_input_and_needs_admin() {
    let up = FakeUpstream::start_blocking();
    let d = daemon_over(&up, "");
    let r = get(&d, "/-/api/v1/quarantine");
    assert_eq!(r.status, 401, "{}", r.text());
    let r = http::get(&d.url("/-/api/v1/quarantine"), Some(d.admin_token()));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["quarantine"], Value::Array(vec![]));
    for sha in ["..%2F..%2Fetc", "ABC", &"a".repeat(64)] {
        let out = d.admin(&["quarantine", "purge", sha]);
        assert!(!out.status.success(), "{sha}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("SHA-256") || err.contains("no quarantined file"),
            "{sha}: {err}"
        );
    }
    let out = d.admin(&["quarantine", "release", &"b".repeat(64)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no quarantined file"));
    assert!(d.admin_ok(&["quarantine", "list"]).contains("nothing is quarantined"));
}

/// The real `cargo`: a project pinned to a version that was taken down upstream no longer
/// fetches through the proxy once the proxy revalidated, and cargo names the version.
#[test]
fn cargo_fetch_of_a_version_taken_down_fails_clearly() {
    let up = FakeUpstream::start_blocking();
    let bad = Package::new("evil", "1.0.0");
    up.add_crate(&bad);
    up.add_crate(&Package::new("evil", "1.1.0"));
    let d = daemon_over(&up, "");
    let project_in = |env: &crate::support::cargo::CargoEnv| {
        env.project(
            "app",
            "[package]\nname = \"app\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\nevil = \"=1.0.0\"\n",
            &[("src/main.rs", "fn main() {}\n")],
        )
    };
    let mut before = crate::support::cargo::CargoEnv::bare();
    before
        .add_registry("mirror", &d.index_url("crates-io"))
        .replace_crates_io_with("mirror");
    let first = project_in(&before);
    before.must_succeed(&first, &["fetch"]);

    up.remove_version("evil", "1.0.0");
    wait_until("the proxy to drop evil 1.0.0", &d, || {
        let r = get(&d, &format!("/crates-io/index/{}", index_path("evil")));
        (!r.text().contains("\"1.0.0\"")).then_some(())
    });
    let mut after = crate::support::cargo::CargoEnv::bare();
    after
        .add_registry("mirror", &d.index_url("crates-io"))
        .replace_crates_io_with("mirror");
    let project = project_in(&after);
    // The lockfile made before the takedown, in a fresh CARGO_HOME (nothing cached by cargo).
    std::fs::copy(first.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let out = after.must_fail(&project, &["fetch"]);
    assert!(
        out.stderr.contains("evil") && out.stderr.contains("1.0.0"),
        "{}",
        after.describe_failure("cargo fetch of a removed version", &out)
    );
    assert_eq!(quarantine_json(&d, &[]).len(), 1);
}

/// The upstream URL changed while the daemon was stopped (the config file edited before a
/// restart, or a cluster node down while the definition changed): what it cached from the
/// old upstream is dropped, not revalidated against the new one, which would read every
/// version the new upstream lacks as taken down and quarantine it.
#[test]
fn files_cached_from_an_earlier_upstream_are_dropped_not_taken_down() {
    let old = FakeUpstream::start_blocking();
    let kept = Package::new("moved", "1.0.0");
    let only_old = Package::new("moved", "1.1.0");
    old.add_crate(&kept);
    old.add_crate(&only_old);
    let mut d = daemon_over(&old, "");
    cache_in_memory(&d, "crates-io", &kept);
    cache_in_memory(&d, "crates-io", &only_old);
    let new = FakeUpstream::start_blocking();
    new.add_crate(&kept);
    restart_with_config(&mut d, |text| {
        assert!(text.contains(&old.index_url()));
        text.replace(&old.index_url(), &new.index_url())
    });
    // Past `index_ttl`: a file still cached would be revalidated now.
    std::thread::sleep(Duration::from_millis(1100));
    let r = get(&d, &format!("/crates-io/index/{}", index_path("moved")));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("\"1.0.0\"") && !r.text().contains("\"1.1.0\""),
        "{}",
        r.text()
    );
    assert!(new.index_hits() >= 1, "the new upstream was asked");
    assert_eq!(download(&d, "crates-io", "moved", "1.0.0").body, kept.crate_bytes());
    assert_eq!(download(&d, "crates-io", "moved", "1.1.0").status, 404);
    assert!(quarantine_json(&d, &[]).is_empty(), "nothing was taken down");
    assert!(
        metric_lines(&d, "cargohold_upstream_removed_total{").is_empty(),
        "{}",
        d.log_tail()
    );
}

/// An offline (air-gapped) proxy never revalidates, and what its cache holds cannot be fetched
/// again: when its `upstream` is changed (set to a placeholder, or to the bundles' source)
/// before a restart, it keeps every cached file and serves it as before.
#[test]
fn an_offline_proxy_keeps_its_files_when_its_upstream_changes() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("airgap", "1.0.0");
    up.add_crate(&pkg);
    let mut d = daemon_over(&up, "");
    cache_in_memory(&d, "crates-io", &pkg);
    restart_with_config(&mut d, |text| {
        assert!(text.contains(&up.index_url()) && text.contains("index_ttl = \"1s\"\n"));
        // A loopback placeholder nobody listens on (an offline proxy never contacts it).
        text.replace(&up.index_url(), "http://127.0.0.1:9/placeholder/index/")
            .replace("index_ttl = \"1s\"\n", "index_ttl = \"1s\"\noffline = true\n")
    });
    let r = get(&d, &format!("/crates-io/index/{}", index_path("airgap")));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.log_tail());
    assert!(r.text().contains("\"1.0.0\""), "{}", r.text());
    assert_eq!(download(&d, "crates-io", "airgap", "1.0.0").body, pkg.crate_bytes());
    assert!(
        !d.stderr_log().contains("its cached index files were dropped"),
        "{}",
        d.log_tail()
    );
}
