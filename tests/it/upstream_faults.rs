//! Upstreams as users have them and upstreams that misbehave (issue 9, items 1, 9 and 12):
//! TLS with a private CA (trusted only through `ca_file` or `SSL_CERT_FILE`), an HTTP CONNECT
//! proxy from `HTTPS_PROXY` (and `NO_PROXY`), and the fault modes of the fake upstream —
//! trickles, lying and huge `Content-Length`s, huge index files, resets, wrong checksums, 500s,
//! fills larger than the disk budget, credentials in the upstream URL. Every case ends with a
//! clear answer, nothing corrupt in the cache, and a good download afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;

use crate::support::connect_proxy::ConnectProxy;
use crate::support::daemon::Daemon;
use crate::support::fake_upstream::{FakeUpstream, Package};
use crate::support::http;

/// A config with one proxy `crates-io` over `url`; `top` goes before the registries (e.g. a
/// `[limits]` table), `proxy` into the proxy's table.
fn config(url: &str, top: &str, proxy: &str) -> String {
    format!("{top}\n[registries.crates-io]\nkind = \"proxy\"\nupstream = \"{url}\"\n{proxy}\n")
}

/// What a client got: status, `x-cache`, and the body or why reading it failed.
struct Got {
    status: u16,
    x_cache: String,
    body: Result<Vec<u8>, String>,
    timed_out: bool,
}

impl Got {
    fn text(&self) -> String {
        match &self.body {
            Ok(b) => String::from_utf8_lossy(b).into_owned(),
            Err(e) => format!("<body failed: {e}>"),
        }
    }

    fn detail(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.text())
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()));
        v["errors"][0]["detail"].as_str().unwrap_or_default().to_owned()
    }
}

/// GET with a generous overall timeout (a liveness guard, not a speed assertion).
fn fetch(url: &str) -> Got {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    rt.block_on(async {
        let resp = match client.get(url).send().await {
            Ok(r) => r,
            Err(e) => {
                return Got {
                    status: 0,
                    x_cache: String::new(),
                    timed_out: e.is_timeout(),
                    body: Err(e.to_string()),
                }
            }
        };
        let status = resp.status().as_u16();
        let x_cache = resp
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        match resp.bytes().await {
            Ok(b) => Got {
                status,
                x_cache,
                body: Ok(b.to_vec()),
                timed_out: false,
            },
            Err(e) => Got {
                status,
                x_cache,
                timed_out: e.is_timeout(),
                body: Err(e.to_string()),
            },
        }
    })
}

fn download_url(d: &Daemon, pkg: &Package) -> String {
    d.url(&format!(
        "/crates-io/api/v1/crates/{}/{}/download",
        pkg.name(),
        pkg.vers()
    ))
}

/// Files under `cache/crates` (committed, not `tmp/`) and under `cache/crates/tmp`.
fn crate_cache_files(data: &Path) -> (usize, usize) {
    let root = data.join("cache/crates");
    let mut committed = 0;
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        if dir.file_name() != "tmp" {
            committed += std::fs::read_dir(dir.path()).into_iter().flatten().count();
        }
    }
    let temp = std::fs::read_dir(root.join("tmp")).into_iter().flatten().count();
    (committed, temp)
}

/// The daemon's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kib(d: &Daemon) -> u64 {
    let pid = d.pid().expect("daemon running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

/// Polls `cond` for up to 30 s (a liveness guard).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..300 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not reached within 30 s: {what}");
}

/// The download failed cleanly: an error status, or a 200 whose transfer was aborted — never a
/// complete-looking body that differs from the real one, and never the real one either.
fn assert_refused_or_aborted(got: &Got, real: &[u8], case: &str) {
    match (&got.body, got.status) {
        (Ok(body), 200) => panic!(
            "{case}: a 200 with a complete body of {} bytes (real: {}), equal: {}",
            body.len(),
            real.len(),
            body.as_slice() == real
        ),
        (Ok(_), s) => assert!(s >= 500, "{case}: status {s}: {}", got.text()),
        (Err(_), _) => assert!(!got.timed_out, "{case}: the client had to time out"),
    }
}

/// After a fault: the fault is off, a download gives the real bytes, and it was fetched anew.
fn assert_recovers(d: &Daemon, up: &FakeUpstream, pkg: &Package, case: &str) {
    let before = up.download_hits();
    let again = fetch(&download_url(d, pkg));
    assert_eq!(again.status, 200, "{case}: {}", again.text());
    assert_eq!(
        again.body.as_deref().ok(),
        Some(pkg.crate_bytes().as_slice()),
        "{case}: the real bytes"
    );
    assert_eq!(
        up.download_hits(),
        before + 1,
        "{case}: nothing had been cached by the failed fill"
    );
}

// ---------------------------------------------------------------------------------------------
// Deadlines

#[test]
fn a_trickling_crate_download_ends_at_the_total_deadline() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("trickle", "1.0.0").size_padding(2_000);
    up.add_crate(&pkg);
    let d = Daemon::start_with_config(&config(&up.index_url(), "", "upstream_deadline = \"2s\""));
    assert_eq!(fetch(&d.url("/crates-io/index/tr/ic/trickle")).status, 200);
    // One byte per 100 ms never trips the 15 s read timeout: only a total deadline ends it.
    up.set_trickle(Some(Duration::from_millis(100)));
    let got = fetch(&download_url(&d, &pkg));
    assert_refused_or_aborted(&got, &pkg.crate_bytes(), "trickle");
    eventually("the log names the deadline", || {
        d.stderr_log().contains("total deadline")
    });
    let (committed, _) = crate_cache_files(d.data_dir());
    assert_eq!(committed, 0);
    eventually("the temp file is gone", || crate_cache_files(d.data_dir()).1 == 0);
    up.set_trickle(None);
    assert_recovers(&d, &up, &pkg, "trickle");
}

#[test]
fn a_trickling_index_file_ends_at_the_total_deadline_with_504() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("slowidx", "1.0.0");
    up.add_crate(&pkg);
    let d = Daemon::start_with_config(&config(&up.index_url(), "", "upstream_deadline = \"2s\""));
    up.set_trickle(Some(Duration::from_millis(100)));
    let got = fetch(&d.url("/crates-io/index/sl/ow/slowidx"));
    assert_eq!(got.status, 504, "{}", got.text());
    assert!(got.detail().contains("deadline"), "{}", got.detail());
    up.set_trickle(None);
    let ok = fetch(&d.url("/crates-io/index/sl/ow/slowidx"));
    assert_eq!((ok.status, ok.x_cache.as_str()), (200, "MISS"), "{}", ok.text());
}

// ---------------------------------------------------------------------------------------------
// Size caps and the disk budget

#[test]
fn a_crate_announcing_5_gib_is_refused_before_reading() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("huge", "1.0.0");
    up.add_crate(&pkg);
    let d = Daemon::start_with_config(&config(&up.index_url(), "[cache]\ndisk = \"50MiB\"\n", ""));
    up.set_huge_content_length(Some(5 << 30));
    let got = fetch(&download_url(&d, &pkg));
    assert_eq!(got.status, 502, "{}", got.text());
    assert!(got.detail().contains("limit"), "{}", got.detail());
    eventually("no temp file left", || crate_cache_files(d.data_dir()) == (0, 0));
    up.set_huge_content_length(None);
    assert_recovers(&d, &up, &pkg, "huge Content-Length");
}

#[test]
fn a_crate_larger_than_the_disk_budget_is_refused_whether_announced_or_not() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("bulky", "1.0.0").size_padding(3 << 20);
    up.add_crate(&pkg);
    let small = Package::new("small", "1.0.0");
    up.add_crate(&small);
    // The per-file cap is far above the budget, so the budget is what refuses.
    let d = Daemon::start_with_config(&config(
        &up.index_url(),
        "[limits]\nmax_upstream_crate_size = \"10GiB\"\n[cache]\ndisk = \"1MiB\"\n",
        "",
    ));
    up.set_huge_content_length(Some(5 << 30));
    let got = fetch(&download_url(&d, &pkg));
    assert_eq!(got.status, 502, "{}", got.text());
    assert!(got.detail().contains("whole crate cache"), "{}", got.detail());
    up.set_huge_content_length(None);

    // Without Content-Length the fill is stopped once it passes the budget.
    up.set_no_content_length(true);
    let got = fetch(&download_url(&d, &pkg));
    assert_refused_or_aborted(&got, &pkg.crate_bytes(), "chunked body above the budget");
    eventually("no temp file left", || crate_cache_files(d.data_dir()) == (0, 0));
    eventually("the log says why", || d.stderr_log().contains("whole crate cache"));
    // A file that fits is still cached.
    assert_recovers(&d, &up, &small, "a small file after the refusal");
    assert_eq!(crate_cache_files(d.data_dir()), (1, 0));
}

#[test]
fn a_100_mib_index_file_is_refused_and_not_cached() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("hugeindex", "1.0.0");
    up.add_crate(&pkg);
    let d = Daemon::start_with_config(&config(&up.index_url(), "", ""));
    for announce in [true, false] {
        up.set_huge_index(Some((100 << 20, announce)));
        let before = up.streamed_bytes();
        let got = fetch(&d.url("/crates-io/index/hu/ge/hugeindex"));
        assert_eq!(got.status, 502, "announce={announce}: {}", got.text());
        let detail = got.detail();
        assert!(
            detail.contains("limits.max_upstream_index_size") && detail.contains("20971520"),
            "{detail}"
        );
        // Not read to the end: the cap (20 MiB) plus what sat in socket buffers.
        let read = up.streamed_bytes() - before;
        assert!(read < 60 << 20, "announce={announce}: {read} bytes were sent");
    }
    // Four at once (distinct names, so four upstream transfers): memory stays bounded by the
    // cap. Before the cap, four 100 MiB files peaked at about 1.6 GiB.
    up.set_huge_index(Some((100 << 20, false)));
    let urls: Vec<String> = ["aaaa", "bbbb", "cccc", "dddd"]
        .iter()
        .map(|n| d.url(&format!("/crates-io/index/{}/{}/{n}", &n[..2], &n[2..])))
        .collect();
    let threads: Vec<_> = urls
        .into_iter()
        .map(|u| std::thread::spawn(move || fetch(&u).status))
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 502);
    }
    let peak = peak_rss_kib(&d);
    eprintln!("daemon peak RSS after four 100 MiB index files: {peak} KiB");
    assert!(peak < 400 << 10, "peak RSS {peak} KiB");
    up.set_huge_index(None);
    let ok = fetch(&d.url("/crates-io/index/hu/ge/hugeindex"));
    assert_eq!(
        (ok.status, ok.x_cache.as_str()),
        (200, "MISS"),
        "nothing was cached: {}",
        ok.text()
    );
    assert_eq!(ok.body.unwrap(), up.index_body("hugeindex").unwrap());
}

// ---------------------------------------------------------------------------------------------
// Broken transfers

#[test]
fn lying_lengths_resets_bad_checksums_500s_and_stalls_never_leave_a_corrupt_entry() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("faulty", "1.0.0").size_padding(200_000);
    up.add_crate(&pkg);
    let d = Daemon::start_with_config(&config(&up.index_url(), "", "upstream_timeout = \"3s\""));
    let real = pkg.crate_bytes();
    let url = download_url(&d, &pkg);

    let cases: [(&str, &dyn Fn(bool)); 6] = [
        ("body shorter than Content-Length", &|on| {
            up.set_content_length_delta(if on { 1000 } else { 0 })
        }),
        ("body longer than Content-Length", &|on| {
            up.set_content_length_delta(if on { -1000 } else { 0 })
        }),
        ("reset mid-body", &|on| up.set_drop_mid_body(on)),
        ("wrong checksum", &|on| up.set_corrupt_downloads(on)),
        ("HTTP 500", &|on| up.set_status_override(on.then_some(500))),
        // A body that stops for longer than `upstream_timeout` (3 s).
        ("stall mid-body", &|on| {
            up.set_trickle(on.then_some(Duration::from_secs(5)))
        }),
    ];
    for (case, set) in cases {
        set(true);
        let got = fetch(&url);
        assert_refused_or_aborted(&got, &real, case);
        if got.status == 502 {
            assert!(!got.detail().is_empty(), "{case}");
        }
        eventually("no temp file left", || crate_cache_files(d.data_dir()).1 == 0);
        assert_eq!(crate_cache_files(d.data_dir()).0, 0, "{case}: nothing committed");
        set(false);
    }
    assert_recovers(&d, &up, &pkg, "after every fault");
}

#[test]
fn a_daemon_killed_during_a_fill_serves_nothing_half_written_after_restart() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("killed", "1.0.0").size_padding(2_000);
    up.add_crate(&pkg);
    let mut d = Daemon::start_with_config(&config(&up.index_url(), "", ""));
    assert_eq!(fetch(&d.url("/crates-io/index/ki/ll/killed")).status, 200);
    up.set_trickle(Some(Duration::from_millis(50)));
    let url = download_url(&d, &pkg);
    let client = std::thread::spawn(move || fetch(&url));
    eventually("the fill has a partial temp file", || {
        crate_cache_files(d.data_dir()).1 == 1 && up.streamed_bytes() > 20
    });
    d.kill9();
    let got = client.join().unwrap();
    assert_refused_or_aborted(&got, &pkg.crate_bytes(), "killed mid-fill");
    up.set_trickle(None);
    d.restart();
    assert_eq!(crate_cache_files(d.data_dir()), (0, 0), "the partial file is gone");
    let again = fetch(&download_url(&d, &pkg));
    assert_eq!(
        (again.status, again.x_cache.as_str()),
        (200, "MISS"),
        "{}",
        again.text()
    );
    assert_eq!(again.body.unwrap(), pkg.crate_bytes());
}

#[test]
fn a_download_whose_index_lookup_fails_asks_the_upstream_once() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("onlyonce", "1.0.0");
    up.add_crate(&pkg);
    let d = Daemon::start_with_config(&config(&up.index_url(), "", ""));
    up.set_status_override(Some(500));
    let got = fetch(&download_url(&d, &pkg));
    assert_eq!(got.status, 502, "{}", got.text());
    // One lookup: the first try and its two retries, not a second round from the download.
    assert_eq!(up.hits("/index/on/ly/onlyonce"), 3);
}

// ---------------------------------------------------------------------------------------------
// Credentials

#[test]
fn upstream_credentials_never_reach_clients_or_logs() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("secretive", "1.0.0");
    up.add_crate(&pkg);
    let url = format!("sparse+http://robot:s3cret-pa55@{}/index/", up.addr());
    let d = Daemon::start_with_config(&config(&url, "", ""));
    // The index is cached first, so the download's own upstream requests fail next.
    assert_eq!(fetch(&d.url("/crates-io/index/se/cr/secretive")).status, 200);
    up.set_status_override(Some(500));
    let index = fetch(&d.url("/crates-io/index/no/ne/nonexistent"));
    let download = fetch(&download_url(&d, &pkg));
    for (what, got) in [("index", &index), ("download", &download)] {
        assert_eq!(got.status, 502, "{what}: {}", got.text());
        assert!(
            !got.text().contains("s3cret"),
            "{what} leaks the password: {}",
            got.text()
        );
        assert!(got.text().contains("***@127.0.0.1"), "{what}: {}", got.text());
    }
    assert!(
        !d.stderr_log().contains("s3cret"),
        "the log leaks the password\n{}",
        d.log_tail()
    );
}

// ---------------------------------------------------------------------------------------------
// TLS and proxies

/// A TLS fake upstream with one crate, and its CA written to `dir/ca.pem`.
fn tls_upstream(dir: &Path) -> (FakeUpstream, Package, PathBuf) {
    let up = FakeUpstream::start_tls_blocking();
    let pkg = Package::new("tlscrate", "1.0.0");
    up.add_crate(&pkg);
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, up.ca_pem()).expect("write ca.pem");
    (up, pkg, ca)
}

fn assert_serves(d: &Daemon, pkg: &Package, how: &str) {
    let index = fetch(&d.url("/crates-io/index/tl/sc/tlscrate"));
    assert_eq!(index.status, 200, "{how}: {}\n{}", index.text(), d.log_tail());
    let dl = fetch(&download_url(d, pkg));
    assert_eq!(dl.status, 200, "{how}: {}", dl.text());
    assert_eq!(dl.body.unwrap(), pkg.crate_bytes(), "{how}");
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.to_str().expect("UTF-8 temp path"))
}

#[test]
fn a_tls_upstream_with_a_private_ca_is_trusted_only_through_ca_file_or_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let (up, pkg, ca) = tls_upstream(dir.path());

    let untrusted = Daemon::start_with_config(&config(&up.index_url(), "", ""));
    let got = fetch(&untrusted.url("/crates-io/index/tl/sc/tlscrate"));
    assert_eq!(got.status, 502, "{}", got.text());
    let detail = got.detail();
    assert!(
        detail.contains("certificate is not trusted") && detail.contains("ca_file") && detail.contains("SSL_CERT_FILE"),
        "the error says what to do: {detail}"
    );
    drop(untrusted);

    let with_ca_file =
        Daemon::start_with_config(&config(&up.index_url(), "", &format!("ca_file = {}", toml_path(&ca))));
    assert_serves(&with_ca_file, &pkg, "ca_file");
    drop(with_ca_file);

    let ca_str = ca.to_str().unwrap();
    let with_env = Daemon::start_with_config_env(&config(&up.index_url(), "", ""), &[("SSL_CERT_FILE", ca_str)]);
    assert_serves(&with_env, &pkg, "SSL_CERT_FILE");
}

#[test]
fn ca_file_is_checked_at_load_and_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let (up, pkg, ca) = tls_upstream(dir.path());
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    for bad in [dir.path().join("missing.pem"), empty] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(
            &cfg,
            config(&up.index_url(), "", &format!("ca_file = {}", toml_path(&bad))),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cargohold"))
            .arg("check-config")
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("registries.crates-io.ca_file"), "names the key: {err}");
    }

    // A proxy created at run time takes a ca_file too.
    let d = Daemon::start_with_config(&config(&up.index_url(), "", &format!("ca_file = {}", toml_path(&ca))));
    let create = |ca_file: &str| {
        http::send(
            Method::POST,
            &d.url("/-/api/v1/registries"),
            Some(d.admin_token()),
            Some(
                serde_json::json!({
                    "name": "mirror",
                    "kind": "proxy",
                    "upstream": up.index_url(),
                    "ca_file": ca_file,
                })
                .to_string()
                .into_bytes(),
            ),
            &[("Content-Type", "application/json")],
        )
    };
    let refused = create("/nonexistent/ca.pem");
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("ca_file"), "{}", refused.text());
    let created = create(ca.to_str().unwrap());
    assert_eq!(created.status, 201, "{}", created.text());
    let dl = fetch(&d.url(&format!("/mirror/api/v1/crates/{}/{}/download", pkg.name(), pkg.vers())));
    assert_eq!(dl.status, 200, "{}", dl.text());
    assert_eq!(dl.body.unwrap(), pkg.crate_bytes());

    // The CLI removes and sets it again (a PATCH); the client is rebuilt each time.
    up.add_crate(&Package::new("another", "1.0.0"));
    d.admin_ok(&["registry", "update", "mirror", "--ca-file", ""]);
    let untrusted = fetch(&d.url("/mirror/index/an/ot/another"));
    assert_eq!(untrusted.status, 502, "{}", untrusted.text());
    d.admin_ok(&["registry", "update", "mirror", "--ca-file", ca.to_str().unwrap()]);
    let trusted = fetch(&d.url("/mirror/index/an/ot/another"));
    assert_eq!(trusted.status, 200, "{}", trusted.text());
}

#[test]
fn an_upstream_behind_an_https_proxy_is_reached_through_the_tunnel_unless_no_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (up, pkg, ca) = tls_upstream(dir.path());
    let proxy = ConnectProxy::start();
    let cfg = config(&up.index_url(), "", &format!("ca_file = {}", toml_path(&ca)));
    let proxy_url = proxy.url();

    let d = Daemon::start_with_config_env(&cfg, &[("HTTPS_PROXY", &proxy_url)]);
    assert_serves(&d, &pkg, "HTTPS_PROXY");
    let tunnels = proxy.tunnels();
    assert!(tunnels > 0, "the upstream was reached through the proxy");
    let target = up.addr().to_string();
    assert!(proxy.targets().iter().all(|t| *t == target), "{:?}", proxy.targets());
    drop(d);

    let lower = Daemon::start_with_config_env(&cfg, &[("https_proxy", &proxy_url)]);
    assert_serves(&lower, &pkg, "https_proxy");
    assert!(proxy.tunnels() > tunnels, "the lowercase form is honoured");
    drop(lower);

    let tunnels = proxy.tunnels();
    let bypass = Daemon::start_with_config_env(&cfg, &[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "127.0.0.1")]);
    assert_serves(&bypass, &pkg, "NO_PROXY");
    assert_eq!(proxy.tunnels(), tunnels, "NO_PROXY bypasses the proxy");
    assert_eq!(proxy.refused(), 0);
}

#[test]
fn a_plain_http_upstream_goes_through_http_proxy() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("plain", "1.0.0");
    up.add_crate(&pkg);
    let proxy = ConnectProxy::start();
    let d = Daemon::start_with_config_env(&config(&up.index_url(), "", ""), &[("HTTP_PROXY", &proxy.url())]);
    assert_eq!(fetch(&d.url("/crates-io/index/pl/ai/plain")).status, 200);
    let dl = fetch(&download_url(&d, &pkg));
    assert_eq!(dl.status, 200, "{}", dl.text());
    assert_eq!(dl.body.unwrap(), pkg.crate_bytes());
    assert!(proxy.forwards() > 0, "the upstream was reached through HTTP_PROXY");
    assert_eq!((proxy.tunnels(), proxy.refused()), (0, 0));
}
