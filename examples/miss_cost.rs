//! Measures what distinct anonymous misses cost the daemon: resident memory, on-disk cache
//! bytes and upstream requests, before and after N requests for distinct valid names that the
//! upstream does not have. Used by `benches/misses.sh`; everything is on 127.0.0.1.
//!
//! ```text
//! cargo run --release --example miss_cost -- DAEMON_BIN [NAMES] [CONCURRENCY] [SETTLE_SECS]
//! ```
//!
//! Starts a fake upstream (answers `config.json` and 404 to every index file, counting the
//! requests and the most in flight at once, each held 20 ms to look like a real network), then
//! `DAEMON_BIN serve` on a fresh data directory with a `crates-io` proxy of it (all other settings
//! at their defaults) and a hosted `local` merged over it. It asks one name to warm up, measures,
//! asks NAMES (default 10000) distinct 64-character names, CONCURRENCY (default 32) at a time,
//! measures again, waits SETTLE_SECS (default 75: past the default `negative_ttl`) and measures,
//! then restarts the daemon (SIGTERM, same data directory) and measures once more. Prints a
//! Markdown table.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct Upstream {
    requests: AtomicUsize,
    index: AtomicUsize,
    now: AtomicUsize,
    max: AtomicUsize,
}

async fn upstream(listener: tokio::net::TcpListener, state: Arc<Upstream>) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    state.requests.fetch_add(1, Ordering::SeqCst);
                    let now = state.now.fetch_add(1, Ordering::SeqCst) + 1;
                    state.max.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    state.now.fetch_sub(1, Ordering::SeqCst);
                    let resp = if req.uri().path() == "/index/config.json" {
                        Response::new(Full::new(Bytes::from(format!(
                            "{{\"dl\":\"http://127.0.0.1:{port}/dl\",\"api\":\"http://127.0.0.1:{port}\"}}"
                        ))))
                    } else {
                        state.index.fetch_add(1, Ordering::SeqCst);
                        let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Sum of file sizes under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
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

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Daemon {
    child: Child,
    url: String,
}

fn start(bin: &str, data: &Path, config: &Path) -> Result<Daemon> {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {bin}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("cargohold listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the daemon did not say it was listening")?;
    Ok(Daemon { child, url })
}

fn stop(mut d: Daemon) {
    let _ = Command::new("kill").arg("-TERM").arg(d.child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = d.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = d.child.kill();
    let _ = d.child.wait();
}

/// Cargo's index path of a lowercase ASCII name of 4 or more characters.
fn index_path(name: &str) -> String {
    format!("{}/{}/{name}", &name[..2], &name[2..4])
}

struct Row {
    when: String,
    rss: (u64, u64),
    cache: u64,
    index_db: u64,
    /// The daemon's own count of index-cache bytes on disk, where it has one.
    counted: Option<u64>,
    upstream: usize,
}

/// An unlabelled gauge from `/-/metrics`.
fn gauge(rt: &tokio::runtime::Runtime, client: &reqwest::Client, d: &Daemon, name: &str) -> Option<u64> {
    let text = rt.block_on(async {
        let r = client.get(format!("{}/-/metrics", d.url)).send().await.ok()?;
        r.text().await.ok()
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .map(|v| v as u64)
}

fn measure(
    when: &str,
    d: &Daemon,
    data: &Path,
    up: &Upstream,
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
) -> Row {
    Row {
        when: when.to_owned(),
        rss: rss_kib(d.child.id()),
        cache: dir_bytes(&data.join("cache")),
        index_db: dir_bytes(&data.join("cache/index-db")),
        counted: gauge(rt, client, d, "cargohold_index_disk_cache_bytes "),
        upstream: up.index.load(Ordering::SeqCst),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(bin) = args.get(1).cloned() else {
        bail!("usage: miss_cost DAEMON_BIN [NAMES] [CONCURRENCY] [SETTLE_SECS]");
    };
    let names: usize = args.get(2).map_or(Ok(10_000), |s| s.parse())?;
    let conc: usize = args.get(3).map_or(Ok(32), |s| s.parse())?;
    let settle: u64 = args.get(4).map_or(Ok(75), |s| s.parse())?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let up = Arc::new(Upstream::default());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    rt.spawn(upstream(listener, up.clone()));

    let tmp = std::env::temp_dir().join(format!("cargohold-misses-{}", std::process::id()));
    let data = tmp.join("data");
    std::fs::create_dir_all(&data)?;
    let config = tmp.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[registries.crates-io]\nkind = \"proxy\"\nupstream = \"sparse+http://127.0.0.1:{port}/index/\"\n\n\
             [registries.local]\nkind = \"hosted\"\nupstreams = [\"crates-io\"]\n"
        ),
    )?;

    let client = reqwest::Client::builder().no_proxy().build()?;
    let d = start(&bin, &data, &config)?;
    let c2 = client.clone();
    let get = move |url: String| {
        let client = c2.clone();
        async move { client.get(&url).send().await.map_or(0, |r| r.status().as_u16()) }
    };
    let warm = rt.block_on(get(format!("{}/crates-io/index/{}", d.url, index_path("warm-up-name"))));
    std::thread::sleep(Duration::from_secs(2));
    let mut rows = vec![measure("before (one miss)", &d, &data, &up, &rt, &client)];

    let base = d.url.clone();
    let started = Instant::now();
    let statuses: Vec<u16> = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(conc));
        let mut tasks = Vec::with_capacity(names);
        for i in 0..names {
            let name = format!("miss-{i:0>59}");
            let url = format!("{base}/crates-io/index/{}", index_path(&name));
            let (sem, get) = (sem.clone(), get.clone());
            tasks.push(tokio::spawn(async move {
                let _p = sem.acquire_owned().await;
                get(url).await
            }));
        }
        let mut out = Vec::with_capacity(names);
        for t in tasks {
            out.push(t.await.unwrap_or(0));
        }
        out
    });
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    rows.push(measure(&format!("after {names} misses"), &d, &data, &up, &rt, &client));
    std::thread::sleep(Duration::from_secs(settle));
    rows.push(measure(&format!("{settle} s later"), &d, &data, &up, &rt, &client));
    stop(d);
    let d = start(&bin, &data, &config)?;
    std::thread::sleep(Duration::from_secs(2));
    rows.push(measure("after a restart", &d, &data, &up, &rt, &client));
    stop(d);
    let _ = std::fs::remove_dir_all(&tmp);

    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_insert(0usize) += 1;
    }
    println!("daemon: {bin}");
    println!(
        "{names} distinct 64-character names, {conc} at a time, in {:.1} s; warm-up status {warm}; statuses {counts:?}; \
         upstream requests in total {} (most at once {})",
        elapsed.as_secs_f64(),
        up.requests.load(Ordering::SeqCst),
        up.max.load(Ordering::SeqCst)
    );
    println!();
    println!("| when | RSS MiB | peak RSS MiB | cache/ bytes | cache/index-db bytes | index cache bytes counted | upstream index requests |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {} |",
            r.when,
            r.rss.0 as f64 / 1024.0,
            r.rss.1 as f64 / 1024.0,
            r.cache,
            r.index_db,
            r.counted.map_or_else(|| "n/a".to_owned(), |b| b.to_string()),
            r.upstream
        );
    }
    Ok(())
}
