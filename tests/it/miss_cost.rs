//! What misses cost (issue 9, items 4 and 5): a shared upstream fetch that fails in any way
//! leaves nothing stuck and tells clients nothing internal; many distinct misses cost bounded
//! disk, and bounded concurrent upstream traffic (the excess is answered 503 + `Retry-After`).

use crate::support::daemon::Daemon;
use crate::support::fake_upstream::FakeUpstream;
use crate::support::http::{self, Resp};

/// A daemon whose `crates-io` proxy points at `up` (`proxy_extra` goes into its section, `top`
/// before it), with `local` merged over it.
fn daemon_over(up: &FakeUpstream, top: &str, proxy_extra: &str) -> Daemon {
    Daemon::start_with_config(&format!(
        r#"
{top}

[registries.crates-io]
kind = "proxy"
upstream = "{}"
{proxy_extra}

[registries.local]
kind = "hosted"
upstreams = ["crates-io"]
"#,
        up.index_url()
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
        total += if meta.is_dir() { dir_bytes(&e.path()) } else { meta.len() };
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
/// (2,300 names grew it from 224 B to 20 MB, surviving restarts). Now the cache is bounded
/// by `[cache] index_disk`, before and after a restart, with one upstream request per name.
#[test]
fn distinct_misses_keep_the_disk_index_cache_within_its_budget() {
    let up = FakeUpstream::start_blocking();
    let budget: u64 = 256 << 10;
    let mut d = daemon_over(&up, "[cache]\nindex_disk = \"256KiB\"", "");
    let statuses = ask_distinct(&d, 3_000, "miss");
    assert!(statuses.iter().all(|s| *s == 404), "{:?}", &statuses[..10]);
    assert_eq!(up.index_hits(), 3_000, "one upstream request per distinct name");
    let bytes = gauge(&d, "cargohold_index_disk_cache_bytes");
    assert!(bytes <= budget, "{bytes} > {budget}");
    assert!(bytes > budget / 2, "the budget is used: {bytes}");
    d.restart();
    let after = gauge(&d, "cargohold_index_disk_cache_bytes");
    assert!(after <= budget, "after a restart: {after} > {budget}");
    let on_disk = dir_bytes(&d.data_dir().join("cache/index-db"));
    eprintln!("index cache: {bytes} B counted, {after} B after restart, {on_disk} B of sled files");
    // sled's files hold a fixed few MiB of segments on top (5 MiB here, the same for 3,000 and
    // for 12,000 names); without the bound they grew by ~250 bytes per name for ever.
    assert!(on_disk < 16 << 20, "{on_disk}");
    // A name asked again is still answered from the cache when it was kept.
    let before = up.index_hits();
    let again = ask_distinct(&d, 1, "miss");
    assert_eq!(again, vec![404]);
    assert!(up.index_hits() <= before + 1);
}
