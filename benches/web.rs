//! The web interface's crate page with 500 versions (issue 14: under 5 ms server-side).
//! Run with `cargo bench --bench web` (add `-- --quick` for a short run).
//!
//! - `crate_page/template_500`: the page rendered from a crate already read (maud).
//! - `crate_page/server_500`: what a page view costs the server: the crate's view (from the
//!   read cache, as on every view but the first after a change; the first reads the crate
//!   from SQLite and parses its 500 index lines), then rendered; the README comes from the
//!   handler's cache (a hit, likewise).
//! - `crate_page/index_file_500` is the baseline measured in the same run: rendering the
//!   same crate's sparse index file (what cargo gets), so the page cost reads as a ratio.

use std::hint::black_box;

use cargohold::cache::crate_files::CrateFiles;
use cargohold::cache::index_cache::IndexCache;
use cargohold::config::{Limits, RegistryKind, RegistrySpec};
use cargohold::index::line::render_file;
use cargohold::index::IndexLine;
use cargohold::registry::{CacheHandles, RegistryService, ServiceSettings};
use cargohold::store::{CrateChange, PrivateStore, VersionRecord};
use cargohold::web::markdown;
use cargohold::web::pages::crate_page;
use criterion::{criterion_group, criterion_main, Criterion};

const VERSIONS: usize = 500;

fn line(i: usize) -> IndexLine {
    serde_json::from_value(serde_json::json!({
        "name": "bigcrate",
        "vers": format!("{}.{}.{}", i / 100, (i / 10) % 10, i % 10),
        "deps": [
            {"name": "serde", "req": "^1", "features": ["derive"], "optional": false, "default_features": true,
             "target": null, "kind": "normal", "registry": null, "package": null},
            {"name": "tokio", "req": "^1.30", "features": [], "optional": true, "default_features": true,
             "target": "cfg(unix)", "kind": "normal", "registry": null, "package": null},
            {"name": "proptest", "req": "^1", "features": [], "optional": false, "default_features": true,
             "target": null, "kind": "dev", "registry": null, "package": null}
        ],
        "cksum": format!("{i:064x}"),
        "features": {"default": ["std"], "std": [], "async": ["dep:tokio"]},
        "yanked": i % 17 == 0,
        "links": null,
        "v": 2,
        "pubtime": "2026-12-05T04:00:00Z"
    }))
    .expect("a valid index line")
}

async fn service(dir: &std::path::Path) -> RegistryService {
    let store = PrivateStore::open_embedded(&dir.join("store")).await.expect("store");
    store
        .meta
        .put_registry(&RegistrySpec::new("local", RegistryKind::Hosted))
        .await
        .expect("registry");
    let mut revision = None;
    for i in 0..VERSIONS {
        let change = CrateChange::Publish {
            name: "bigcrate".into(),
            version: VersionRecord {
                line: line(i),
                published_by: "alice".into(),
            },
            description: Some("A crate with many versions".into()),
            keywords: vec!["bench".into()],
        };
        revision = Some(
            store
                .meta
                .change_crate("local", "bigcrate", revision, &change)
                .await
                .expect("publish"),
        );
    }
    let cache_dir = dir.join("cache");
    let caches = CacheHandles {
        index: IndexCache::open(&cache_dir, 1 << 20, 1 << 30).expect("index cache"),
        crates: CrateFiles::open(&cache_dir.join("crates"), 1 << 20).expect("crate cache"),
        crate_bytes: CacheHandles::crate_memory(1 << 20),
    };
    let settings = ServiceSettings {
        public_url: "http://127.0.0.1:1".into(),
        limits: Limits::default(),
        memory_bytes: 8 << 20,
        env_admin_hash: None,
    };
    RegistryService::new(store, caches, settings).await.expect("service")
}

fn crate_pages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let svc = rt.block_on(service(dir.path()));
    let spec = svc.registry("local").expect("registry");
    let readme =
        markdown::render(&"## Usage\n\nSome *text*, a [link](https://example.invalid/) and `code`.\n\n".repeat(40));
    let view = rt
        .block_on(svc.crate_view("local", None, "bigcrate"))
        .expect("read")
        .expect("crate");
    assert_eq!(view.versions.len(), VERSIONS);
    let lines: Vec<IndexLine> = view.versions.iter().map(|v| v.line.clone()).collect();

    let mut g = c.benchmark_group("crate_page");
    g.bench_function("index_file_500", |b| {
        b.iter(|| black_box(render_file(black_box(&lines))))
    });
    g.bench_function("template_500", |b| {
        b.iter(|| {
            let sel = view.default_version().expect("a version");
            black_box(crate_page(None, &spec, &view, sel, Some(&readme)))
        })
    });
    g.bench_function("server_500", |b| {
        b.to_async(&rt).iter(|| async {
            let view = svc
                .crate_view("local", None, "bigcrate")
                .await
                .expect("read")
                .expect("crate");
            let sel = view.default_version().expect("a version");
            black_box(crate_page(None, &spec, &view, sel, Some(&readme)))
        })
    });
    g.finish();
}

criterion_group!(benches, crate_pages);
criterion_main!(benches);
