//! Publish latency with and without a webhook whose receiver hangs (issue 13: a slow or dead
//! receiver never slows a publish), measured in the same run.
//!
//! ```text
//! cargo run --release --example webhook_latency -- [--rounds R] [--per-round N] [--dir DIR]
//! ```
//!
//! Two in-process `RegistryService`s on the embedded SQLite store, each with a hosted registry
//! `local` and its webhook worker running. On the second, a hook for every event targets a
//! receiver on 127.0.0.1 that accepts each delivery, reads it and never answers (the hooks'
//! request timeout is set to 10 minutes, so every delivery stays held). Each round publishes N
//! new crates on one service then the other (the order alternates, so machine noise hits
//! both) and prints p50 / mean per service and the hook/baseline ratio (1.00x: no cost), and
//! how many deliveries the receiver was holding at the end.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/publish.rs"]
mod publish;
use publish::publish_body;

use anyhow::{Context, Result};
use serde_json::json;

use cargohold::cache::crate_files::CrateFiles;
use cargohold::cache::index_cache::IndexCache;
use cargohold::config::{Limits, RegistrySpec, WebhooksConfig};
use cargohold::registry::admin::NewToken;
use cargohold::registry::webhooks::NewHook;
use cargohold::registry::{CacheHandles, Principal, RegistryService, ServiceSettings};
use cargohold::store::blobs::FileBlobs;
use cargohold::store::sql::SqlMetadata;
use cargohold::store::PrivateStore;

const REGISTRY: &str = "local";

async fn service(dir: &Path) -> Result<(Arc<RegistryService>, Principal)> {
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir)?;
    let store = PrivateStore {
        meta: Arc::new(SqlMetadata::open_sqlite(&store_dir.join("registry.db")).await?),
        blobs: Arc::new(FileBlobs::open(store_dir.join("blobs"))?),
    };
    let memory: u64 = 256 << 20;
    let cache_dir = dir.join("cache");
    let caches = CacheHandles {
        index: IndexCache::open(&cache_dir, memory / 2, 1 << 30)?,
        crates: CrateFiles::open(&cache_dir.join("crates"), 1 << 30)?,
        crate_bytes: CacheHandles::crate_memory(memory / 4),
    };
    let settings = ServiceSettings {
        public_url: "http://127.0.0.1:9".into(),
        limits: Limits::default(),
        memory_bytes: memory,
        env_admin_hash: None,
    };
    let svc = Arc::new(RegistryService::new(store, caches, settings).await?);
    let spec: RegistrySpec = serde_json::from_value(json!({"name": REGISTRY, "kind": "hosted"}))?;
    svc.apply_configured([spec], dir).await?;
    svc.start_webhooks(WebhooksConfig {
        allow_private: true,
        timeout: Duration::from_secs(600),
        ..WebhooksConfig::default()
    })?;
    svc.create_user("bench", None).await?;
    let token = svc
        .create_token(NewToken {
            user: "bench".into(),
            name: None,
            scopes: None,
            registries: None,
            expires: None,
        })
        .await?;
    let token = token["token"].as_str().context("no token")?.to_owned();
    let principal = svc.authorize_publish(REGISTRY, Some(&token)).await?;
    Ok((svc, principal))
}

/// A receiver that reads each delivery and never answers; counts the held connections.
fn hanging_receiver() -> Result<(String, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let held = Arc::new(AtomicUsize::new(0));
    let h = held.clone();
    std::thread::spawn(move || {
        let mut conns = Vec::new();
        for conn in listener.incoming().flatten() {
            let mut c = conn;
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = c.read(&mut buf);
            h.fetch_add(1, Ordering::SeqCst);
            conns.push(c);
        }
    });
    Ok((url, held))
}

fn stats(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = ms(v[v.len() / 2]);
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    (p50, mean)
}

fn main() -> Result<()> {
    let mut rounds = 5usize;
    let mut per_round = 20usize;
    let mut base: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--per-round" => per_round = args.next().context("--per-round N")?.parse()?,
            "--dir" => base = Some(args.next().context("--dir DIR")?.into()),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let tmp = match &base {
            Some(b) => tempfile::tempdir_in(b)?,
            None => tempfile::tempdir()?,
        };
        let (plain, plain_who) = service(&tmp.path().join("plain")).await?;
        let (hooked, hooked_who) = service(&tmp.path().join("hooked")).await?;
        let (url, held) = hanging_receiver()?;
        hooked
            .create_hook(
                &hooked_who,
                NewHook {
                    url,
                    secret: "bench".into(),
                    registry: None,
                    events: Vec::new(),
                },
            )
            .await?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let order: [bool; 2] = if r % 2 == 0 { [false, true] } else { [true, false] };
            for with_hook in order {
                let (svc, who, out) = if with_hook {
                    (&hooked, &hooked_who, &mut b)
                } else {
                    (&plain, &plain_who, &mut a)
                };
                for i in 0..per_round {
                    let body = publish_body(&format!("wh-r{r}-c{i}"), "1.0.0")?;
                    let t = Instant::now();
                    svc.publish(REGISTRY, who, body).await?;
                    out.push(t.elapsed());
                }
            }
        }
        // Let the worker hand what it can to the receiver.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (ap50, amean) = stats(&mut a);
        let (bp50, bmean) = stats(&mut b);
        println!("publishes per service: {}", a.len());
        println!("| service | p50 ms | mean ms |");
        println!("|---|---|---|");
        println!("| no hook | {ap50:.2} | {amean:.2} |");
        println!("| hook to a hanging receiver | {bp50:.2} | {bmean:.2} |");
        println!(
            "ratio hook/no hook: p50 {:.2}x, mean {:.2}x",
            bp50 / ap50,
            bmean / amean
        );
        println!(
            "deliveries held unanswered by the receiver at the end: {}",
            held.load(Ordering::SeqCst)
        );
        anyhow::Ok(())
    })
}
