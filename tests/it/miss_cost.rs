//! What misses cost (issue 9, items 4 and 5): a shared upstream fetch that fails in any way
//! leaves nothing stuck and tells clients nothing internal; many distinct misses cost bounded
//! disk, and bounded concurrent upstream traffic (the excess is answered 503 + `Retry-After`).

use crate::support::daemon::Daemon;
use crate::support::fake_upstream::FakeUpstream;
use crate::support::http::{self, Resp};

/// A daemon whose `crates-io` proxy points at `up` (`proxy_extra` goes into its section, `top`
/// before it), with `local` merged over it.
fn daemon_over(up: &FakeUpstream, top: &str, proxy_extra: &str) -> Daemon {
    Daemon::start_with_config(&crate::support::merged_config(
        &up.index_url(),
        top,
        proxy_extra,
        "",
        None,
    ))
}

fn get(d: &Daemon, path: &str) -> Resp {
    http::get(&d.url(path), None)
}

/// Confirmed defect: a non-ASCII name made the shared fetch panic; the panic text reached the
/// client, and the panicked flight stayed in the map for ever. Whatever the name layer answers
/// now, the answer is a clean JSON error and asking again gets the same answer.
#[test]
fn a_failing_shared_fetch_leaks_no_internals_and_sticks_nowhere() {
    let up = FakeUpstream::start_blocking();
    let d = daemon_over(&up, "", "");
    for path in [
        "/crates-io/api/v1/crates/%C3%A9a/1.0.0/download",
        "/local/api/v1/crates/%E6%97%A5%E6%9C%AC%E8%AA%9E/1.0.0/download",
    ] {
        for attempt in 0..2 {
            let r = get(&d, path);
            assert!(
                (400..600).contains(&r.status) && r.status != 500,
                "{path} #{attempt}: {}",
                r.status
            );
            let details = r.error_details().join(" ");
            for leak in ["panick", "char boundary", "byte index", ".rs:"] {
                assert!(!details.contains(leak), "{path} #{attempt} leaks `{leak}`: {details}");
            }
        }
    }
    // Still serving normally.
    let r = get(&d, "/crates-io/index/3/a/abc");
    assert_eq!(r.status, 404, "{}", r.text());
}

/// The `/metrics` value of an unlabelled gauge.
fn gauge(d: &Daemon, name: &str) -> u64 {
    let text = get(d, "/-/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}")) as u64
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = e.metadata() else { continue };
        total += if meta.is_dir() {
            dir_bytes(&e.path())
        } else {
            meta.len()
        };
    }
    total
}

/// `n` distinct valid 64-character names, each asked once (16 at a time); returns the statuses.
fn ask_distinct(d: &Daemon, n: usize, tag: &str) -> Vec<u16> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = d.url("/crates-io/index/");
    rt.block_on(async {
        let client = http::client();
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = Vec::new();
        for i in 0..n {
            let name = format!("{tag}-{i:0>width$}", width = 63 - tag.len());
            let url = format!("{base}{}", crate::support::index_path(&name));
            let (client, sem) = (client.clone(), sem.clone());
            tasks.push(tokio::spawn(async move {
                let _p = sem.acquire_owned().await.unwrap();
                client.get(&url).send().await.map_or(0, |r| r.status().as_u16())
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

/// Confirmed defect: every distinct miss added an entry to the disk index cache for ever
/// (2,300 names grew it from 224 B to 20 MB, surviving restarts). Now a miss writes nothing
/// to disk (its 404 is remembered in memory, for `negative_ttl`), and what the upstream does
/// have is bounded by `[cache] index_disk`, before and after a restart.
#[test]
fn distinct_misses_cost_no_disk_and_the_disk_index_cache_keeps_its_budget() {
    let up = FakeUpstream::start_blocking();
    let budget: u64 = 256 << 10;
    // 404s remembered for an hour: the 3,000 misses below may take longer than the default
    // minute on a loaded machine, and the second pass must find them all in memory.
    let mut d = daemon_over(&up, "[cache]\nindex_disk = \"256KiB\"", "negative_ttl = \"1h\"");
    let index_db = d.data_dir().join("cache/index-db");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let empty = dir_bytes(&index_db);
    let statuses = ask_distinct(&d, 3_000, "miss");
    assert!(statuses.iter().all(|s| *s == 404), "{:?}", &statuses[..10]);
    assert_eq!(up.index_hits(), 3_000, "one upstream request per distinct name");
    let again = ask_distinct(&d, 100, "miss");
    assert!(again.iter().all(|s| *s == 404));
    assert_eq!(up.index_hits(), 3_000, "404s are remembered (in memory)");
    assert_eq!(gauge(&d, "cargohold_index_disk_cache_bytes"), 0, "misses wrote nothing");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let after_misses = dir_bytes(&index_db);
    assert!(
        after_misses < empty + (256 << 10),
        "the sled files grew from {empty} to {after_misses} bytes"
    );

    // Files the upstream has: 300 of about 2 KB against a 256 KiB budget.
    let body = |i: usize| {
        let line = format!(
            "{{\"name\":\"have-{i}\",\"vers\":\"1.0.0\",\"deps\":[],\"cksum\":\"{}\",\"features\":{{}},\"yanked\":false}}\n",
            "0".repeat(64)
        );
        line.repeat(2_000 / line.len() + 1)
    };
    for i in 0..300 {
        up.set_index_file(&format!("have-{i}"), body(i).as_bytes());
    }
    for i in 0..300 {
        let r = get(
            &d,
            &format!("/crates-io/index/{}", crate::support::index_path(&format!("have-{i}"))),
        );
        assert_eq!(r.status, 200);
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let bytes = gauge(&d, "cargohold_index_disk_cache_bytes");
    assert!(bytes <= budget, "{bytes} > {budget}");
    assert!(bytes > budget / 2, "the budget is used: {bytes}");
    // A graceful stop flushes the disk tier (a kill -9 could lose the last writes, which
    // sled has not synced yet, and the check of `have-299` below would fetch it again).
    d.stop();
    d.restart();
    let after = gauge(&d, "cargohold_index_disk_cache_bytes");
    assert!(after <= budget && after > budget / 2, "after a restart: {after}");
    let on_disk = dir_bytes(&index_db);
    eprintln!("index-db: {empty} B empty, {after_misses} B after 3,000 misses, {on_disk} B with {after} B counted after a restart");
    // The most recently fetched file is still served from disk.
    let hits = up.index_hits();
    assert_eq!(
        get(
            &d,
            &format!("/crates-io/index/{}", crate::support::index_path("have-299"))
        )
        .status,
        200
    );
    assert_eq!(up.index_hits(), hits);
}

/// One answer of [`fire`]: status, `Retry-After`, body.
type Answer = (u16, Option<String>, Vec<u8>);

/// Sends one GET per URL, all at once.
fn fire(urls: Vec<String>) -> Vec<Answer> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = http::client();
        let tasks: Vec<_> = urls
            .into_iter()
            .map(|url| {
                let client = client.clone();
                tokio::spawn(async move {
                    match client.get(&url).send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let retry = r
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            (status, retry, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
                        }
                        Err(_) => (0, None, Vec::new()),
                    }
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

/// Checks a 503 for a full upstream queue: `Retry-After` and Cargo's JSON error.
fn assert_busy(a: &Answer) {
    assert!(
        a.1.as_deref().is_some_and(|s| s.parse::<u32>().is_ok_and(|n| n > 0)),
        "Retry-After: {:?}",
        a.1
    );
    let v: serde_json::Value = serde_json::from_slice(&a.2).expect("a JSON error body");
    let detail = v["errors"][0]["detail"].as_str().expect("errors[0].detail");
    assert!(detail.contains("too many requests"), "{detail}");
}

/// Many distinct misses at once cost at most `upstream_concurrency` upstream requests at a
/// time; the excess waits in a bounded queue, and beyond it is answered 503 + `Retry-After`.
#[test]
fn distinct_misses_are_capped_by_upstream_concurrency() {
    let up = FakeUpstream::start_blocking();
    let d = daemon_over(&up, "", "upstream_concurrency = 2");
    up.set_latency(std::time::Duration::from_secs(2));
    let urls = (0..30)
        .map(|i| {
            d.url(&format!(
                "/crates-io/index/{}",
                crate::support::index_path(&format!("capped-{i}"))
            ))
        })
        .collect();
    let answers = fire(urls);
    let found = answers.iter().filter(|a| a.0 == 404).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!(
        found + busy.len(),
        30,
        "only 404 or 503: {:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    assert!(
        up.max_concurrent() <= 2,
        "{} upstream requests at once",
        up.max_concurrent()
    );
    assert!(found >= 2, "{found}");
    assert!(
        busy.len() >= 30 - 2 - 8,
        "the queue holds 4 per slot: {} refused",
        busy.len()
    );
    busy.iter().for_each(|a| assert_busy(a));
    assert_eq!(
        up.index_hits(),
        found,
        "an upstream request for each 404, none for a 503"
    );
    // The gate recovers.
    up.set_latency(std::time::Duration::ZERO);
    assert_eq!(get(&d, "/crates-io/index/ca/pp/capped-after").status, 404);
}

/// Crate transfers pass the same gate; clients of one fill share its slot.
#[test]
fn crate_transfers_are_capped_by_upstream_concurrency() {
    use crate::support::fake_upstream::Package;
    let up = FakeUpstream::start_blocking();
    let d = daemon_over(&up, "", "upstream_concurrency = 1");
    let pkgs: Vec<Package> = (0..4).map(|i| Package::new(&format!("gated-{i}"), "1.0.0")).collect();
    for p in &pkgs {
        up.add_crate(p);
        // Index files cached first: only transfers are measured.
        assert_eq!(
            get(
                &d,
                &format!("/crates-io/index/{}", crate::support::index_path(p.name()))
            )
            .status,
            200
        );
    }
    up.set_latency(std::time::Duration::from_millis(700));
    up.reset_max_concurrent();
    let url = |p: &Package| d.url(&format!("/crates-io/api/v1/crates/{}/1.0.0/download", p.name()));
    let mut urls: Vec<String> = pkgs.iter().map(url).collect();
    urls.extend((0..6).map(|_| url(&pkgs[0])));
    let answers = fire(urls);
    assert!(
        up.max_concurrent() <= 1,
        "{} upstream requests at once",
        up.max_concurrent()
    );
    for (i, a) in answers.iter().enumerate() {
        let p = &pkgs[if i < 4 { i } else { 0 }];
        match a.0 {
            200 => assert_eq!(a.2, p.crate_bytes(), "{}", p.name()),
            503 => assert_busy(a),
            other => panic!("{}: {other} {}", p.name(), String::from_utf8_lossy(&a.2)),
        }
    }
    assert!(answers.iter().any(|a| a.0 == 200));
    assert!(up.download_hits() <= 4, "one transfer per file: {}", up.download_hits());
}
