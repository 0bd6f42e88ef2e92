//! Proxy registries and the merged view over HTTP, against the programmable fake upstream:
//! verbatim serving, coalescing, outages, checksum verification, revalidation, offline mode,
//! eviction, and the merged view's priority rules.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;

use crate::support::daemon::Daemon;
use crate::support::fake_upstream::{FakeUpstream, Package};
use crate::support::http::{self, Resp};
use crate::support::package::{metadata, publish_body, simple_crate};
use crate::support::sha256_hex;

/// A daemon whose `crates-io` proxy points at `up`, with `local` merged over it.
fn daemon_over(up: &FakeUpstream, extra: &str) -> Daemon {
    Daemon::start_with_config(&crate::support::merged_config(&up.index_url(), "", extra, "", None))
}

fn get(d: &Daemon, path: &str) -> Resp {
    http::get(&d.url(path), None)
}

fn get_with(d: &Daemon, path: &str, headers: &[(&str, &str)]) -> Resp {
    http::send(Method::GET, &d.url(path), None, None, headers)
}

fn x_cache(r: &Resp) -> String {
    r.header("x-cache").unwrap_or_default()
}

/// Fires `n` concurrent GETs and returns the responses (status, body).
fn concurrent_gets(url: &str, n: usize) -> Vec<(u16, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = http::client();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (client, url) = (client.clone(), url.to_owned());
            tasks.push(tokio::spawn(async move {
                match client.get(&url).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (status, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
                    }
                    Err(_) => (0, Vec::new()),
                }
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

fn crate_cache_bytes(data_dir: &Path) -> u64 {
    let root = data_dir.join("cache/crates");
    let mut total = 0;
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        if dir.file_name() == "tmp" {
            continue;
        }
        for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            total += f.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total
}

#[test]
fn proxy_serves_upstream_index_verbatim_with_etags_and_cached_404s() {
    let up = FakeUpstream::start_with_shared_index_blocking();
    let d = daemon_over(&up, "");

    let config = get(&d, "/crates-io/index/config.json").json();
    assert_eq!(config["api"], d.api_url("crates-io"));
    assert!(
        config["dl"].as_str().unwrap().starts_with(d.base_url()),
        "dl points at us: {config}"
    );

    let on_disk = std::fs::read(FakeUpstream::shared_index_dir().join("se/rd/serde")).unwrap();
    let first = get(&d, "/crates-io/index/se/rd/serde");
    assert_eq!(first.status, 200);
    assert_eq!(first.body, on_disk, "index bytes are served verbatim");
    assert_eq!(x_cache(&first), "MISS");
    let etag = first.header("etag").expect("etag");
    let second = get(&d, "/crates-io/index/se/rd/serde");
    assert_eq!((second.status, x_cache(&second)), (200, "HIT".to_owned()));
    let not_modified = get_with(&d, "/crates-io/index/se/rd/serde", &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(
        up.hits("/index/se/rd/serde"),
        1,
        "hits and 304s are answered from the cache"
    );

    let missing = get(&d, "/crates-io/index/no/-s/no-such-crate");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["errors"][0]["detail"].is_string());
    let again = get(&d, "/crates-io/index/no/-s/no-such-crate");
    assert_eq!((again.status, x_cache(&again)), (404, "HIT".to_owned()));
    assert_eq!(
        up.hits("/index/no/-s/no-such-crate"),
        1,
        "404s are cached for negative_ttl"
    );
}

#[test]
fn two_hundred_concurrent_index_misses_make_one_upstream_request() {
    let up = FakeUpstream::start_with_shared_index_blocking();
    up.set_latency(Duration::from_millis(300));
    let d = daemon_over(&up, "");
    let on_disk = std::fs::read(FakeUpstream::shared_index_dir().join("it/oa/itoa")).unwrap();
    let results = concurrent_gets(&d.url("/crates-io/index/it/oa/itoa"), 200);
    assert!(
        results.iter().all(|(s, b)| *s == 200 && *b == on_disk),
        "every client got the file"
    );
    assert_eq!(up.hits("/index/it/oa/itoa"), 1);
}

#[test]
fn two_hundred_concurrent_crate_misses_share_one_upstream_download() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("bulky", "1.0.0").size_padding(1 << 20);
    up.add_crate(&pkg);
    up.set_slow_body(Some(Duration::from_millis(5)));
    let d = daemon_over(&up, "");
    let results = concurrent_gets(&d.url("/crates-io/api/v1/crates/bulky/1.0.0/download"), 200);
    let want = pkg.cksum();
    assert!(
        results.iter().all(|(s, b)| *s == 200 && sha256_hex(b) == want),
        "every client got verified bytes"
    );
    assert_eq!(up.download_hits(), 1);
    let hit = get(&d, "/crates-io/api/v1/crates/bulky/1.0.0/download");
    assert_eq!((hit.status, x_cache(&hit)), (200, "HIT".to_owned()));
    assert!(hit.header("content-encoding").is_none());
    assert_eq!(up.download_hits(), 1);
}

#[test]
fn upstream_outage_serves_cached_content_and_fails_uncached_clearly() {
    let mut up = FakeUpstream::start_with_shared_index_blocking();
    let pkg = Package::new("warm", "1.0.0");
    let cold = Package::new("cold", "1.0.0");
    up.add_crate(&pkg);
    up.add_crate(&cold);
    let d = daemon_over(&up, "index_ttl = \"1s\"");
    assert_eq!(get(&d, "/crates-io/index/se/rd/serde").status, 200);
    assert_eq!(get(&d, "/crates-io/index/wa/rm/warm").status, 200);
    assert_eq!(get(&d, "/crates-io/index/co/ld/cold").status, 200);
    assert_eq!(get(&d, "/crates-io/api/v1/crates/warm/1.0.0/download").status, 200);
    up.go_down_blocking();
    // Let the index entries expire so the daemon has to ask the (dead) upstream.
    std::thread::sleep(Duration::from_millis(1100));

    let stale = get(&d, "/crates-io/index/se/rd/serde");
    assert_eq!((stale.status, x_cache(&stale)), (200, "STALE".to_owned()));
    let crate_hit = get(&d, "/crates-io/api/v1/crates/warm/1.0.0/download");
    assert_eq!((crate_hit.status, x_cache(&crate_hit)), (200, "HIT".to_owned()));
    assert_eq!(sha256_hex(&crate_hit.body), pkg.cksum());

    let uncached = get(&d, "/crates-io/index/sy/nn/synnn");
    assert_eq!(uncached.status, 502, "{}", uncached.text());
    assert!(uncached.json()["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("upstream"));
    let uncached_crate = get(&d, "/crates-io/api/v1/crates/cold/1.0.0/download");
    assert_eq!(uncached_crate.status, 502, "{}", uncached_crate.text());
    assert!(uncached_crate.json()["errors"][0]["detail"].is_string());

    up.come_back_blocking();
    let back = get(&d, "/crates-io/api/v1/crates/cold/1.0.0/download");
    assert_eq!(back.status, 200);
    assert_eq!(sha256_hex(&back.body), cold.cksum());
}

/// After one file found the upstream unreachable (here: timing out), other expired files are
/// served stale without asking it, instead of each waiting out its own retries; once the
/// back-off is over the upstream is asked again.
#[test]
fn an_unreachable_upstream_is_left_alone_for_every_expired_file() {
    let up = FakeUpstream::start_with_shared_index_blocking();
    let d = daemon_over(&up, "index_ttl = \"1s\"\nupstream_timeout = \"300ms\"");
    let files = ["se/rd/serde", "2/cc", "ru/st/rustls"];
    for f in files {
        let r = get(&d, &format!("/crates-io/index/{f}"));
        assert_eq!(r.status, 200, "{f}: {}", r.text());
    }
    up.set_latency(Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(1100));

    let first = get(&d, "/crates-io/index/se/rd/serde");
    assert_eq!((first.status, x_cache(&first)), (200, "STALE".to_owned()));
    up.reset_hits();
    for f in &files[1..] {
        let r = get(&d, &format!("/crates-io/index/{f}"));
        assert_eq!((r.status, x_cache(&r)), (200, "STALE".to_owned()), "{f}");
    }
    assert_eq!(up.index_hits(), 0, "no upstream request while it is known unreachable");

    up.set_latency(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(10_500));
    let back = get(&d, "/crates-io/index/ru/st/rustls");
    assert_eq!((back.status, x_cache(&back)), (200, "REVALIDATED".to_owned()));
    assert!(up.index_hits() >= 1);
}

#[test]
fn a_wrong_checksum_is_never_cached_or_completed() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("tampered", "1.0.0").size_padding(64 << 10);
    up.add_crate(&pkg);
    up.set_corrupt_downloads(true);
    let d = daemon_over(&up, "");
    let url = d.url("/crates-io/api/v1/crates/tampered/1.0.0/download");
    let bad = concurrent_gets(&url, 1);
    assert!(
        bad[0].0 != 200 || sha256_hex(&bad[0].1) != pkg.cksum() && bad[0].1.len() < pkg.crate_bytes().len(),
        "the client's transfer must fail"
    );
    assert_eq!(crate_cache_bytes(d.data_dir()), 0, "nothing was cached");
    up.set_corrupt_downloads(false);
    let good = get(&d, "/crates-io/api/v1/crates/tampered/1.0.0/download");
    assert_eq!(good.status, 200);
    assert_eq!(sha256_hex(&good.body), pkg.cksum());
    assert_eq!(up.download_hits(), 2, "the bad copy was not served from cache");
}

#[test]
fn a_body_cut_mid_stream_leaves_no_cache_entry() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("cut", "1.0.0").size_padding(256 << 10);
    up.add_crate(&pkg);
    up.set_drop_mid_body(true);
    let d = daemon_over(&up, "");
    let url = d.url("/crates-io/api/v1/crates/cut/1.0.0/download");
    let broken = concurrent_gets(&url, 1);
    assert!(
        broken[0].0 != 200 || broken[0].1.len() < pkg.crate_bytes().len(),
        "the client saw the failure"
    );
    assert_eq!(crate_cache_bytes(d.data_dir()), 0);
    up.set_drop_mid_body(false);
    let whole = get(&d, "/crates-io/api/v1/crates/cut/1.0.0/download");
    assert_eq!(sha256_hex(&whole.body), pkg.cksum());
    assert!(up.download_hits() >= 2);
}

#[test]
fn expired_files_are_revalidated_with_validators_or_by_hash() {
    let up = FakeUpstream::start_with_shared_index_blocking();
    let d = daemon_over(&up, "index_ttl = \"1s\"");
    assert_eq!(x_cache(&get(&d, "/crates-io/index/it/oa/itoa")), "MISS");
    std::thread::sleep(Duration::from_millis(1100));
    let r = get(&d, "/crates-io/index/it/oa/itoa");
    assert_eq!((r.status, x_cache(&r)), (200, "REVALIDATED".to_owned()));
    assert_eq!(
        up.conditional_hits(),
        1,
        "the revalidation carried the upstream's validator"
    );

    // An upstream without validators is refetched and compared by hash.
    up.set_validators(false);
    let pkg = Package::new("novalid", "1.0.0");
    up.add_crate(&pkg);
    assert_eq!(x_cache(&get(&d, "/crates-io/index/no/va/novalid")), "MISS");
    std::thread::sleep(Duration::from_millis(1100));
    let same = get(&d, "/crates-io/index/no/va/novalid");
    assert_eq!(x_cache(&same), "REVALIDATED");
    up.add_crate(&Package::new("novalid", "1.1.0"));
    std::thread::sleep(Duration::from_millis(1100));
    let changed = get(&d, "/crates-io/index/no/va/novalid");
    assert_eq!(x_cache(&changed), "MISS");
    assert!(
        changed.text().contains("\"1.1.0\""),
        "a changed upstream file is picked up"
    );
    assert_ne!(changed.header("etag"), same.header("etag"));
}

#[test]
fn offline_mode_makes_zero_upstream_requests() {
    let up = FakeUpstream::start_with_shared_index_blocking();
    up.add_crate(&Package::new("present", "1.0.0"));
    let d = daemon_over(&up, "offline = true");
    assert_eq!(get(&d, "/crates-io/index/config.json").status, 200);
    assert_eq!(get(&d, "/crates-io/index/se/rd/serde").status, 404);
    assert_eq!(get(&d, "/crates-io/index/pr/es/present").status, 404);
    assert_eq!(get(&d, "/crates-io/api/v1/crates/present/1.0.0/download").status, 404);
    assert_eq!(get(&d, "/local/index/pr/es/present").status, 404);
    assert_eq!(up.total_hits(), 0, "offline never contacts the upstream");
}

#[test]
fn eviction_keeps_the_disk_cache_under_its_budget() {
    let up = FakeUpstream::start_blocking();
    let budget = 300 * 1024;
    let pkgs: Vec<Package> = (0..6)
        .map(|i| Package::new(&format!("evict{i}"), "1.0.0").size_padding(100 * 1024))
        .collect();
    for p in &pkgs {
        up.add_crate(p);
    }
    let d = Daemon::start_with_config(&format!(
        "[cache]\ndisk = \"{budget}\"\n\n[registries.crates-io]\nkind = \"proxy\"\nupstream = \"{}\"\n",
        up.index_url()
    ));
    for p in &pkgs {
        let r = get(&d, &format!("/crates-io/api/v1/crates/{}/1.0.0/download", p.name()));
        assert_eq!(sha256_hex(&r.body), p.cksum());
        assert!(
            crate_cache_bytes(d.data_dir()) <= budget,
            "over budget after {}",
            p.name()
        );
    }
    assert!(crate_cache_bytes(d.data_dir()) > 0);
    // The most recent one is still cached; the first was evicted and is fetched again.
    let before = up.download_hits();
    assert_eq!(
        x_cache(&get(&d, "/crates-io/api/v1/crates/evict5/1.0.0/download")),
        "HIT"
    );
    assert_eq!(
        x_cache(&get(&d, "/crates-io/api/v1/crates/evict0/1.0.0/download")),
        "MISS"
    );
    assert_eq!(up.download_hits(), before + 1);
}

fn publish(d: &Daemon, reg: &str, token: &str, name: &str, vers: &str) -> Resp {
    let body = publish_body(&metadata(name, vers), &simple_crate(name, vers));
    http::publish_raw(&d.api_url(reg), Some(token), body)
}

#[test]
fn merged_view_serves_local_first_upstream_otherwise_and_routes_downloads() {
    let up = FakeUpstream::start_blocking();
    let shared = Package::new("shared", "1.0.0");
    up.add_crate(&shared);
    up.add_crate(&Package::new("clash", "1.0.0"));
    let d = Daemon::start_with_config(&format!(
        r#"
[registries.crates-io]
kind = "proxy"
upstream = "{}"

[registries.local]
kind = "hosted"
upstreams = ["crates-io"]

[registries.loose]
kind = "hosted"
upstreams = ["crates-io"]
allow_upstream_names = true

[registries.union]
kind = "hosted"
upstreams = ["crates-io"]
shadow = "version"
allow_upstream_names = true
"#,
        up.index_url()
    ));
    let token = d.user_token("alice", &["read", "publish", "yank", "owners"]);

    // A name only upstream: served through the merged view, byte for byte.
    let via_local = get(&d, "/local/index/sh/ar/shared");
    assert_eq!(via_local.status, 200);
    assert_eq!(via_local.body, up.index_body("shared").unwrap());
    let dl = get(&d, "/local/api/v1/crates/shared/1.0.0/download");
    assert_eq!(sha256_hex(&dl.body), shared.cksum());

    // A private crate: served from the store.
    assert_eq!(publish(&d, "local", &token, "mine", "0.1.0").status, 200);
    let mine = get(&d, "/local/index/mi/ne/mine");
    assert!(mine.text().contains("\"mine\""));
    assert_eq!(x_cache(&mine), "BYPASS");

    // Dependency-confusion guard.
    let refused = publish(&d, "local", &token, "clash", "9.0.0");
    assert_eq!(refused.status, 403);
    assert!(
        refused.error_details()[0].contains("allow_upstream_names"),
        "{:?}",
        refused.error_details()
    );
    assert!(!get(&d, "/local/index/cl/as/clash").text().contains("9.0.0"));

    // shadow = "crate": the local crate hides every upstream version.
    assert_eq!(publish(&d, "loose", &token, "clash", "9.0.0").status, 200);
    let shadowed = get(&d, "/loose/index/cl/as/clash").text();
    assert!(
        shadowed.contains("\"9.0.0\"") && !shadowed.contains("\"1.0.0\""),
        "{shadowed}"
    );
    assert_eq!(get(&d, "/loose/api/v1/crates/clash/1.0.0/download").status, 404);

    // shadow = "version": the union, local winning.
    assert_eq!(publish(&d, "union", &token, "clash", "9.0.0").status, 200);
    let union = get(&d, "/union/index/cl/as/clash").text();
    assert!(union.contains("\"1.0.0\"") && union.contains("\"9.0.0\""), "{union}");
    assert_eq!(get(&d, "/union/api/v1/crates/clash/1.0.0/download").status, 200);
    assert_eq!(get(&d, "/union/api/v1/crates/clash/9.0.0/download").status, 200);
    // A publish changes the merged file (its cache is invalidated).
    let before = get(&d, "/union/index/cl/as/clash").header("etag");
    assert_eq!(publish(&d, "union", &token, "clash", "9.1.0").status, 200);
    let after = get(&d, "/union/index/cl/as/clash");
    assert!(after.text().contains("\"9.1.0\""));
    assert_ne!(after.header("etag"), before);

    // Search lists local crates and the upstream names already cached.
    let found = http::get(&d.url("/local/api/v1/crates?q=sha&per_page=5"), None).json();
    assert!(
        found["crates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "shared"),
        "{found}"
    );
}

#[test]
fn proxies_refuse_writes_with_a_clear_error() {
    let up = FakeUpstream::start_blocking();
    let d = daemon_over(&up, "");
    let token = d.user_token("alice", &["read", "publish", "yank", "owners"]);
    let r = publish(&d, "crates-io", &token, "anything", "1.0.0");
    assert_eq!(r.status, 405);
    assert!(r.error_details()[0].contains("proxy"));
    let y = http::send(
        Method::DELETE,
        &d.url("/crates-io/api/v1/crates/x/1.0.0/yank"),
        Some(&token),
        None,
        &[],
    );
    assert_eq!(y.status, 405);
}

#[test]
fn a_slow_upstream_gives_504_and_a_fast_one_afterwards_works() {
    let up = FakeUpstream::start_with_shared_index_blocking();
    up.set_latency(Duration::from_secs(3));
    let d = daemon_over(&up, "upstream_timeout = \"1s\"");
    let slow = get(&d, "/crates-io/index/it/oa/itoa");
    assert_eq!(slow.status, 504, "{}", slow.text());
    assert!(slow.json()["errors"][0]["detail"].as_str().unwrap().contains("in time"));
    up.set_latency(Duration::ZERO);
    assert_eq!(get(&d, "/crates-io/index/it/oa/itoa").status, 200);
}

#[test]
fn upstream_outage_degrades_the_merged_view_to_local_crates_and_lets_new_names_through() {
    let mut up = FakeUpstream::start_blocking();
    let d = Daemon::start_with_config(&crate::support::merged_config(
        &up.index_url(),
        "",
        "",
        "",
        Some("allow_upstream_names = true"),
    ));
    let token = d.user_token("alice", &["read", "publish"]);
    // allow_upstream_names: the publish does not consult (or cache) the upstream.
    assert_eq!(publish(&d, "union", &token, "ours", "1.0.0").status, 200);
    up.go_down_blocking();

    let ours = get(&d, "/union/index/ou/rs/ours");
    assert_eq!(
        (ours.status, x_cache(&ours)),
        (200, "STALE".to_owned()),
        "{}",
        ours.text()
    );
    assert!(ours.text().contains("\"1.0.0\""));

    // shadow = "crate": a local crate hides every upstream version of its name, so the
    // dependency-confusion guard lets a new name through when it cannot ask the upstream
    // (tests/it/hardening.rs covers shadow = "version", which refuses with a 503).
    let accepted = publish(&d, "local", &token, "brandnew", "1.0.0");
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    let served = get(&d, "/local/index/br/an/brandnew");
    assert_eq!(served.status, 200, "{}", served.text());
    assert!(served.text().contains("\"1.0.0\""));
    assert!(
        d.stderr_log().contains("without asking the unreachable upstreams"),
        "the blind publish is not logged"
    );
}
