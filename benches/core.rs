//! Micro-benchmarks of the hot and pure paths: index-line parsing and building, the merge of
//! local and upstream files, route parsing, memory-hit and disk-hit index lookups, and
//! single-flight under contention, the proxied download hot path (checksum memo + memory
//! tier), and a proxied download from memory with and without a security advisory database
//! (the check's cost on the hot path, as a ratio). Run with `cargo bench --bench core` (add
//! `-- --quick` for a short run). Inputs are the real crates.io index files in `../shared/data/index` when present.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use cargohold::cache::crate_files::CrateFiles;
use cargohold::cache::index_cache::{IndexCache, IndexEntry};
use cargohold::cache::single_flight::SingleFlight;
use cargohold::http::route::route;
use cargohold::index::publish_frame::NewCrate;
use cargohold::index::IndexLine;
use cargohold::registry::merge::merge_versions;
use cargohold::registry::CacheHandles;
use cargohold::upstream::cached::{CachedUpstream, ProxySettings};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hyper::Method;

fn shared_file(path: &str) -> Option<Vec<u8>> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/index")
            .join(path),
    )
    .ok()
}

/// A synthetic index file of `n` versions.
fn synthetic_file(name: &str, n: usize, origin: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(
            format!(
                r#"{{"name":"{name}","vers":"{}.{}.0","deps":[{{"name":"serde","req":"^1","features":[],"optional":false,"default_features":true,"target":null,"kind":"normal","registry":null,"package":null}}],"cksum":"{origin}{:060}","features":{{}},"yanked":false,"links":null,"v":1}}"#,
                i / 100,
                i % 100,
                i
            )
            .as_bytes(),
        );
        out.push(b'\n');
    }
    out
}

fn index_lines(c: &mut Criterion) {
    let mut g = c.benchmark_group("index_line");
    let big = shared_file("se/rd/serde").unwrap_or_else(|| synthetic_file("serde", 300, "aaaa"));
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("parse_file_serde", |b| {
        b.iter(|| {
            let n = black_box(&big)
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
                .count();
            black_box(n)
        })
    });
    g.bench_function("find_cksum_serde_last", |b| {
        b.iter(|| cargohold::upstream::cached::find_cksum(black_box(&big), black_box("1.0.228")))
    });
    let meta: NewCrate = serde_json::from_str(
        r#"{"name":"acme-core","vers":"0.3.1","deps":[{"name":"serde","version_req":"^1.0","features":["derive"],"optional":false,"default_features":true,"target":null,"kind":"normal","registry":"https://example.com/index"}],"features":{"extra":[]},"authors":[],"description":null,"documentation":null,"homepage":null,"readme":null,"readme_file":null,"keywords":[],"categories":[],"license":"MIT","license_file":null,"repository":null,"badges":{},"links":null,"rust_version":"1.74"}"#,
    )
    .unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("build_line_from_publish", |b| {
        b.iter(|| {
            let line = IndexLine::from_publish(black_box(&meta), "ab".repeat(32), &[], "2026-05-01T12:00:00Z".into());
            black_box(line.to_json())
        })
    });
    g.finish();
}

fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge_versions");
    for n in [10usize, 1000] {
        let upstream = synthetic_file("x", n, "uuuu");
        let local = synthetic_file("x", n / 10 + 1, "llll");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(merge_versions(black_box(&local), black_box(&upstream))))
        });
    }
    g.finish();
}

fn routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for path in [
        "/crates-io/index/se/rd/serde",
        "/local/api/v1/crates/serde/1.0.0+build/download",
        "/-/healthz",
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(path), path, |b, p| {
            b.iter(|| black_box(route(&Method::GET, black_box(p))))
        });
    }
    g.finish();
}

/// The two-worker runtime every async bench runs on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn lookups(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let cache = IndexCache::open(dir.path(), 64 << 20, 1 << 30).unwrap();
    let body = Bytes::from(shared_file("se/rd/serde").unwrap_or_else(|| synthetic_file("serde", 300, "aaaa")));
    rt.block_on(cache.put("p", "serde", Arc::new(IndexEntry::found(body, None, None, 1))));
    let mut g = c.benchmark_group("index_lookup");
    g.bench_function("memory_hit", |b| {
        b.iter(|| black_box(cache.memory_get("p", black_box("serde"))))
    });
    // Reopen so the memory tier is empty; each disk hit is read from sled and decoded.
    rt.block_on(cache.flush());
    drop(cache);
    let cold = IndexCache::open(dir.path(), 1 << 20, 1 << 30).unwrap();
    g.bench_function("disk_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cold.disk_get("p", "serde").await) })
    });
    g.finish();
}

fn single_flight(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("single_flight");
    for waiters in [1usize, 64] {
        g.throughput(Throughput::Elements(waiters as u64));
        g.bench_with_input(BenchmarkId::new("waiters", waiters), &waiters, |b, &n| {
            b.to_async(&rt).iter(|| async move {
                let sf = Arc::new(SingleFlight::<u32, u32>::default());
                let mut tasks = Vec::with_capacity(n);
                for _ in 0..n {
                    let sf = sf.clone();
                    tasks.push(tokio::spawn(async move {
                        sf.run(7, || async {
                            tokio::task::yield_now().await;
                            1
                        })
                        .await
                    }));
                }
                for t in tasks {
                    black_box(t.await.unwrap().unwrap());
                }
            })
        });
    }
    g.finish();
}

/// A service with an offline proxy `crates-io` whose index cache holds `serde` 1.0.0 and
/// whose crate-bytes tier holds its `.crate`: every download is the memory hit.
async fn proxy_service(dir: &std::path::Path) -> cargohold::registry::RegistryService {
    use cargohold::config::{Limits, RegistryKind, RegistrySpec};
    use cargohold::registry::{CacheHandles, RegistryService, ServiceSettings};
    use sha2::Digest;
    let store = cargohold::store::PrivateStore::open_embedded(&dir.join("store"))
        .await
        .expect("store");
    let mut spec = RegistrySpec::new("crates-io", RegistryKind::Proxy);
    spec.offline = true;
    store.meta.put_registry(&spec).await.expect("registry");
    let cache_dir = dir.join("cache");
    let caches = CacheHandles {
        index: IndexCache::open(&cache_dir, 16 << 20, 1 << 30).expect("index cache"),
        crates: cargohold::cache::crate_files::CrateFiles::open(&cache_dir.join("crates"), 1 << 30).expect("crates"),
        crate_bytes: CacheHandles::crate_memory(64 << 20),
    };
    let krate = Bytes::from(vec![7u8; 64 << 10]);
    let cksum = hex::encode(sha2::Sha256::digest(&krate));
    let line = format!(
        r#"{{"name":"serde","vers":"1.0.0","deps":[],"cksum":"{cksum}","features":{{}},"yanked":false,"links":null,"v":1}}"#
    );
    caches
        .index
        .put(
            "crates-io",
            "serde",
            Arc::new(IndexEntry::found(Bytes::from(line + "\n"), None, None, 1)),
        )
        .await;
    caches.crate_bytes.insert(cksum, krate);
    let settings = ServiceSettings {
        public_url: "http://127.0.0.1:1".into(),
        limits: Limits::default(),
        memory_bytes: 8 << 20,
        env_admin_hash: None,
    };
    RegistryService::new(store, caches, settings).await.expect("service")
}

/// `n` advisories of crates other than `serde`, plus (with `serde_affected`) one that
/// affects `serde` 1.0.0.
fn advisory_upload(n: usize, serde_affected: bool) -> cargohold::registry::advisories::AdvisoryUpload {
    use cargohold::store::advisories::AdvisoryRecord;
    let rec = |i: usize, krate: String| AdvisoryRecord {
        id: format!("RUSTSEC-2024-{i:04}"),
        krate,
        title: format!("advisory {i}"),
        date: "2024-01-01".into(),
        informational: None,
        patched: vec![">=2.0.0".into()],
        unaffected: vec![],
        url: None,
    };
    let mut advisories: Vec<AdvisoryRecord> = (0..n).map(|i| rec(i, format!("crate-{i}"))).collect();
    if serde_affected {
        advisories.push(rec(n, "serde".into()));
    }
    cargohold::registry::advisories::AdvisoryUpload { advisories }
}

fn downloads(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let svc = rt.block_on(proxy_service(dir.path()));
    let spec = svc.registry("crates-io").unwrap();
    let once = || async {
        let (d, flag) = svc.download(&spec, "serde", "1.0.0").await.expect("download");
        black_box((d, flag))
    };
    // Fills the checksum cache, so every measured call takes the memory fast path.
    rt.block_on(once());
    let mut g = c.benchmark_group("proxied_download_memory_hit");
    // The baseline: no advisory database (as before advisories existed).
    g.bench_function("no_advisories", |b| b.to_async(&rt).iter(once));
    // About the size of the public database, none for the crate downloaded: the common case.
    rt.block_on(svc.import_advisories(advisory_upload(1000, false)))
        .unwrap();
    g.bench_function("1000_advisories_other_crates", |b| b.to_async(&rt).iter(once));
    // The crate has an advisory that flags this version (reported once, then counted).
    rt.block_on(svc.import_advisories(advisory_upload(1000, true))).unwrap();
    assert!(rt.block_on(once()).1.is_some(), "flagged");
    g.bench_function("flagged", |b| b.to_async(&rt).iter(once));
    g.finish();
}

/// The proxied download's memory hit, as `Reads::download` does it before anything else: the
/// checksum memo of `name@version`, then the crate-bytes tier by checksum. The index file is
/// cached fresh, so no upstream is ever asked (the URL is a closed loopback port).
fn download_hot_path(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let index = IndexCache::open(&dir.path().join("index"), 64 << 20, 1 << 30).unwrap();
    let crates = CrateFiles::open(&dir.path().join("crates"), 1 << 30).unwrap();
    let body = Bytes::from(synthetic_file("serde", 300, "aaaa"));
    let now = cargohold::cache::now_ms();
    rt.block_on(index.put("p", "serde", Arc::new(IndexEntry::found(body, None, None, now))));
    let settings = ProxySettings {
        registry: "p".into(),
        upstream_url: "http://127.0.0.1:9/".into(),
        index_ttl: std::time::Duration::from_secs(3600),
        negative_ttl: std::time::Duration::from_secs(60),
        timeout: std::time::Duration::from_secs(1),
        deadline: std::time::Duration::from_secs(1),
        max_index_bytes: 1 << 20,
        max_crate_bytes: 1 << 20,
        ca_file: None,
        offline: false,
        prune_index: false,
        upstream_concurrency: 4,
    };
    let proxy = CachedUpstream::new(settings, index, crates).unwrap();
    let (_, cksum) = rt.block_on(proxy.locate("serde", "1.50.0")).unwrap();
    let memory = CacheHandles::crate_memory(64 << 20);
    memory.insert(cksum, Bytes::from(vec![1u8; 10_000]));
    let mut g = c.benchmark_group("download_hot_path");
    g.bench_function("memo_and_memory_hit", |b| {
        b.iter(|| {
            black_box(
                proxy
                    .cached_cksum(black_box("serde"), black_box("1.50.0"))
                    .and_then(|(_, c)| memory.get(&c)),
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    index_lines,
    merge,
    routes,
    lookups,
    single_flight,
    download_hot_path,
    downloads
);
criterion_main!(benches);
