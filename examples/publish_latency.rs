//! Publish latency of the private store: the embedded SQLite store (the default) against the
//! sled store of earlier releases and, when the engines are there, the shared store of several
//! nodes (PostgreSQL + S3), measured in the same run. Used by `benches/publish.sh`; everything
//! is in-process, in a temp dir; the only network is to the PostgreSQL server and the S3
//! endpoint named by `CARGOHOLD_TEST_POSTGRES_URL` and `CARGOHOLD_TEST_S3_*` (loopback in CI),
//! when those are set.
//!
//! ```text
//! cargo run --release --example publish_latency -- [--rounds R] [--quick] [--dir DIR]
//! ```
//!
//! Builds one `RegistryService` per backend (SQLite + blob files, sled + blob files, and
//! PostgreSQL + S3 on a fresh database and a fresh key prefix; the same
//! caches and settings as the daemon's defaults) with a hosted registry `local`, a user and a
//! token, then times real publishes through `RegistryService::publish` with real publish bodies
//! (cargo's frame around a gzipped tarball that passes the daemon's tarball inspection). Each
//! round runs, for each backend in turn (A,B then B,A, so machine noise hits both):
//!
//! - sequential publishes of new crates, and of new versions of four existing crates;
//! - yanks of versions published in the round;
//! - a concurrent batch: 8 tasks, each publishing 4 versions of its own crate, all at once
//!   (per-publish latency, and publishes per second over the batch);
//! - the pieces of a publish on their own, straight on the backend's store:
//!   `Metadata::change_crate` (the metadata commit), `Metadata::get_crate` (the read a publish
//!   or yank decides on) and `Blobs::put` (the `.crate` file).
//!
//! Prints the fsync cost of this file system, what a bare SQLite commit costs with
//! `synchronous = FULL` and `NORMAL`, the store's `synchronous`/`journal_mode`, and a
//! Markdown table of p50/p99/mean per backend with the SQLite/sled ratios (below 1.00x SQLite
//! is faster). `DIR` (default: the system temp dir) should be on the disk a daemon would use:
//! on tmpfs fsync costs nothing and the numbers say little about durability.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/publish.rs"]
mod publish;
use publish::{crate_tarball, publish_body};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::json;

use cargohold::cache::crate_files::CrateFiles;
use cargohold::cache::index_cache::IndexCache;
use cargohold::config::store::S3Config;
use cargohold::config::{Limits, RegistrySpec};
use cargohold::index::{canonical_name, IndexLine};
use cargohold::registry::admin::NewToken;
use cargohold::registry::{CacheHandles, Principal, RegistryService, ServiceSettings};
use cargohold::store::blobs::FileBlobs;
use cargohold::store::s3::{S3Blobs, S3Credentials};
use cargohold::store::sled::SledMetadata;
use cargohold::store::sql::SqlMetadata;
use cargohold::store::{Blobs, CrateChange, Metadata, PrivateStore, VersionRecord};

const REGISTRY: &str = "local";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Sled,
    /// PostgreSQL + S3, the store several nodes share.
    Shared,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Sled => "sled",
            Backend::Shared => "PG+S3",
        }
    }
}

/// The engines of the shared store, from the environment (as the store tests read them).
struct Engines {
    postgres: String,
    s3: S3Config,
    creds: S3Credentials,
}

fn engines() -> Option<Engines> {
    let var = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
    let endpoint = var("CARGOHOLD_TEST_S3_ENDPOINT")?;
    Some(Engines {
        postgres: var("CARGOHOLD_TEST_POSTGRES_URL")?,
        s3: S3Config {
            bucket: var("CARGOHOLD_TEST_S3_BUCKET")?,
            prefix: format!("bench-{:016x}", rand::random::<u64>()),
            allow_http: endpoint.starts_with("http://"),
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
        },
        creds: S3Credentials {
            access_key_id: var("CARGOHOLD_TEST_S3_ACCESS_KEY")?,
            secret_access_key: var("CARGOHOLD_TEST_S3_SECRET_KEY")?,
            session_token: None,
        },
    })
}

/// `fsync` and `synchronous_commit` of the PostgreSQL server, for the report.
async fn postgres_settings(server: &str) -> Result<String> {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(server)
        .await?;
    let mut out = Vec::new();
    for name in ["fsync", "synchronous_commit"] {
        let row = sqlx::query(&format!("SHOW {name}")).fetch_one(&pool).await?;
        out.push(format!("{name}={}", row.try_get::<String, _>(0)?));
    }
    pool.close().await;
    Ok(out.join(", "))
}

/// A new, empty database on the server `server` names; its URL.
async fn fresh_database(server: &str) -> Result<String> {
    sqlx::any::install_default_drivers();
    let admin = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(server)
        .await?;
    let name = format!("cargohold_bench_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    admin.close().await;
    let base = server.rsplit_once('/').map_or(server, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

/// What is timed; the order of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    NewCrate,
    NewVersion,
    Yank,
    Concurrent,
    MetaCommit,
    MetaRead,
    MetaReadSmall,
    BlobPut,
}

impl Op {
    const ALL: [Op; 8] = [
        Op::NewCrate,
        Op::NewVersion,
        Op::Yank,
        Op::Concurrent,
        Op::MetaCommit,
        Op::MetaRead,
        Op::MetaReadSmall,
        Op::BlobPut,
    ];

    fn label(self, conc: usize, per_task: usize, rounds: usize, new_versions: usize) -> String {
        match self {
            Op::NewCrate => "publish, new crate (sequential)".into(),
            Op::NewVersion => "publish, new version of an existing crate (sequential)".into(),
            Op::Yank => "yank (sequential)".into(),
            Op::Concurrent => format!("publish, {conc} tasks at once ({per_task} versions of its own crate each)"),
            Op::MetaCommit => "part: metadata commit alone (`Metadata::change_crate`, new version)".into(),
            Op::MetaRead => format!(
                "part: crate read alone (`Metadata::get_crate`, a crate that grows from 1 to {} versions over the run)",
                1 + self_versions(rounds, new_versions)
            ),
            Op::MetaReadSmall => "part: crate read alone (`Metadata::get_crate`, a crate of 1 version)".into(),
            Op::BlobPut => "part: `.crate` blob alone (`Blobs::put`, new file)".into(),
        }
    }
}

/// Versions each of the four `hot-N` crates gets over the run.
fn self_versions(rounds: usize, new_versions: usize) -> usize {
    rounds * new_versions.div_ceil(4)
}

struct Params {
    rounds: usize,
    new_crates: usize,
    new_versions: usize,
    yanks: usize,
    conc: usize,
    per_task: usize,
    parts: usize,
}

/// One backend under test.
struct Bench {
    backend: Backend,
    svc: Arc<RegistryService>,
    principal: Principal,
    token: String,
    samples: Vec<(Op, Duration)>,
    /// Wall time of each concurrent batch.
    batches: Vec<Duration>,
    /// The shared store only: a second node on the same database (pools, caches and change
    /// feed of its own), for the publish-to-visible delay.
    other: Option<Arc<RegistryService>>,
    /// Publish acknowledged on this node -> served by the other, per sequential new version.
    visible: Vec<Duration>,
}

async fn open(backend: Backend, dir: &Path, engines: Option<&Engines>) -> Result<Bench> {
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir)?;
    let mut shared_url = None;
    let (meta, blobs): (Arc<dyn Metadata>, Arc<dyn Blobs>) = match backend {
        Backend::Sqlite => (
            Arc::new(SqlMetadata::open_sqlite(&store_dir.join("registry.db")).await?),
            Arc::new(FileBlobs::open(store_dir.join("blobs"))?),
        ),
        Backend::Sled => (
            Arc::new(SledMetadata::open(&store_dir)?),
            Arc::new(FileBlobs::open(store_dir.join("blobs"))?),
        ),
        Backend::Shared => {
            let e = engines.context("no engines for the shared store")?;
            let url = fresh_database(&e.postgres).await?;
            shared_url = Some(url.clone());
            (
                Arc::new(SqlMetadata::open_postgres(&url).await?),
                Arc::new(S3Blobs::open(&e.s3, &e.creds, store_dir.join("spool")).await?),
            )
        }
    };
    let store = PrivateStore { meta, blobs };
    // The daemon's default cache sizes (the caches only matter for reads here).
    let memory: u64 = 256 << 20;
    let cache_dir = dir.join("cache");
    let caches = CacheHandles {
        index: IndexCache::open(&cache_dir, memory / 2, 1 << 30)?,
        crates: CrateFiles::open(&cache_dir.join("crates"), 1 << 30)?,
        crate_bytes: CacheHandles::crate_memory(memory / 4),
    };
    let settings = ServiceSettings {
        // Never contacted: the hosted registry has no upstreams.
        public_url: "http://127.0.0.1:9".into(),
        limits: Limits::default(),
        memory_bytes: memory,
        env_admin_hash: None,
    };
    let svc = Arc::new(RegistryService::new(store, caches, settings.clone()).await?);
    svc.watch_store().await?;
    let spec: RegistrySpec = serde_json::from_value(json!({"name": REGISTRY, "kind": "hosted"}))?;
    svc.apply_configured([spec], dir).await?;
    svc.create_user("bench", None).await?;
    let token = svc
        .create_token(NewToken {
            user: "bench".into(),
            name: Some("publish benchmark".into()),
            scopes: None,
            registries: None,
            expires: None,
        })
        .await?;
    let token = token["token"].as_str().context("no token in the answer")?.to_owned();
    let principal = svc.authorize_publish(REGISTRY, Some(&token)).await?;
    // The other node: its own handles on the same database and bucket, its own caches.
    let other = match (&shared_url, engines) {
        (Some(url), Some(e)) => {
            let other_dir = dir.join("other-node");
            let store = PrivateStore {
                meta: Arc::new(SqlMetadata::open_postgres(url).await?),
                blobs: Arc::new(S3Blobs::open(&e.s3, &e.creds, other_dir.join("spool")).await?),
            };
            let caches = CacheHandles {
                index: IndexCache::open(&other_dir.join("cache"), memory / 2, 1 << 30)?,
                crates: CrateFiles::open(&other_dir.join("cache/crates"), 1 << 30)?,
                crate_bytes: CacheHandles::crate_memory(memory / 4),
            };
            let node = Arc::new(RegistryService::new(store, caches, settings).await?);
            node.watch_store().await?;
            Some(node)
        }
        _ => None,
    };
    Ok(Bench {
        backend,
        svc,
        principal,
        token,
        samples: Vec::new(),
        batches: Vec::new(),
        other,
        visible: Vec::new(),
    })
}

/// Whether `node` serves `vers` of `name` in its (cached) index file.
async fn serves(node: &RegistryService, name: &str, vers: &str) -> Result<bool> {
    let spec = node.registry(REGISTRY)?;
    let answer = node.index_file(&spec, &name.to_ascii_lowercase()).await?;
    let needle = format!("\"vers\":\"{vers}\"");
    Ok(answer
        .file
        .is_some_and(|f| String::from_utf8_lossy(f.body()).contains(&needle)))
}

async fn publish(b: &Bench, name: &str, vers: &str) -> Result<Duration> {
    let body = publish_body(name, vers)?;
    let t = Instant::now();
    b.svc
        .publish(REGISTRY, &b.principal, body)
        .await
        .with_context(|| format!("{}: publishing {name} {vers}", b.backend.label()))?;
    Ok(t.elapsed())
}

/// An index line for a direct metadata commit (what `publish` would store).
fn line(name: &str, vers: &str, cksum: &str) -> Result<IndexLine> {
    Ok(serde_json::from_value(json!({
        "name": name, "vers": vers, "deps": [], "cksum": cksum,
        "features": {"default": [], "extra": []}, "yanked": false, "links": null, "v": 2,
    }))?)
}

/// One round of every measurement on one backend.
async fn round(b: &mut Bench, r: usize, p: &Params) -> Result<()> {
    let tag = r;
    // Sequential: new crates.
    for i in 0..p.new_crates {
        let d = publish(b, &format!("new-r{tag}-c{i}"), "1.0.0").await?;
        b.samples.push((Op::NewCrate, d));
    }
    // Sequential: new versions of four crates created before the first round.
    let mut published = Vec::new();
    for j in 0..p.new_versions {
        let name = format!("hot-{}", j % 4);
        let vers = format!("1.{tag}.{j}");
        if let Some(other) = &b.other {
            // The other node holds the file (rendered before this version), as a busy node does.
            serves(other, &name, "0.1.0").await?;
        }
        let d = publish(b, &name, &vers).await?;
        b.samples.push((Op::NewVersion, d));
        if let Some(other) = &b.other {
            let t = Instant::now();
            while !serves(other, &name, &vers).await? {
                anyhow::ensure!(
                    t.elapsed() < Duration::from_secs(10),
                    "{name} {vers} never reached the other node"
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            b.visible.push(t.elapsed());
        }
        published.push((name, vers));
    }
    // Yanks of versions just published.
    for (name, vers) in published.iter().take(p.yanks) {
        let t = Instant::now();
        b.svc
            .set_yanked(REGISTRY, Some(&b.token), name, vers, true)
            .await
            .with_context(|| format!("{}: yanking {name} {vers}", b.backend.label()))?;
        b.samples.push((Op::Yank, t.elapsed()));
    }
    // Concurrent: each task publishes versions of its own crate.
    let mut bodies = Vec::new();
    for t in 0..p.conc {
        let name = format!("conc-r{tag}-t{t}");
        let mut mine = Vec::new();
        for k in 0..p.per_task {
            let vers = format!("1.0.{k}");
            mine.push((name.clone(), vers.clone(), publish_body(&name, &vers)?));
        }
        bodies.push(mine);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mine in bodies {
        let (svc, who) = (b.svc.clone(), b.principal.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for (name, vers, body) in mine {
                let t = Instant::now();
                svc.publish(REGISTRY, &who, body)
                    .await
                    .with_context(|| format!("publishing {name} {vers} concurrently"))?;
                out.push(t.elapsed());
            }
            anyhow::Ok(out)
        }));
    }
    for t in tasks {
        for d in t.await?? {
            b.samples.push((Op::Concurrent, d));
        }
    }
    b.batches.push(start.elapsed());
    // The parts, straight on the store: a metadata commit of a new version, a new blob.
    let store = b.svc.store().clone();
    let canonical = "parts";
    let mut revision = store.meta.get_crate(REGISTRY, canonical).await?.map(|c| c.revision);
    for k in 0..p.parts {
        let vers = format!("1.{tag}.{k}");
        let krate = Bytes::from(crate_tarball(canonical, &vers)?);
        let t = Instant::now();
        let cksum = store.blobs.put(krate).await?;
        b.samples.push((Op::BlobPut, t.elapsed()));
        let change = CrateChange::Publish {
            name: canonical.into(),
            version: VersionRecord {
                line: line(canonical, &vers, &cksum)?,
                published_by: "bench".into(),
            },
            description: Some("publish latency benchmark crate".into()),
            keywords: Vec::new(),
        };
        let t = Instant::now();
        revision = Some(
            store
                .meta
                .change_crate(REGISTRY, canonical, revision, &change)
                .await
                .with_context(|| format!("{}: change_crate", b.backend.label()))?,
        );
        b.samples.push((Op::MetaCommit, t.elapsed()));
        // What a publish or a yank reads before deciding (the crate with all its versions).
        let hot = canonical_name(&format!("hot-{}", k % 4));
        let t = Instant::now();
        let rec = store.meta.get_crate(REGISTRY, &hot).await?;
        b.samples.push((Op::MetaRead, t.elapsed()));
        anyhow::ensure!(rec.is_some(), "{}: {hot} not found", b.backend.label());
        let small = canonical_name(&format!("new-r{tag}-c{}", k % p.new_crates.max(1)));
        let t = Instant::now();
        let rec = store.meta.get_crate(REGISTRY, &small).await?;
        b.samples.push((Op::MetaReadSmall, t.elapsed()));
        anyhow::ensure!(rec.is_some(), "{}: {small} not found", b.backend.label());
    }
    Ok(())
}

/// Nearest-rank percentile of sorted samples, in milliseconds.
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
    mean: f64,
}

fn stats(b: &Bench, op: Op) -> Stats {
    let mut v: Vec<f64> = b
        .samples
        .iter()
        .filter(|(o, _)| *o == op)
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    v.sort_by(f64::total_cmp);
    Stats {
        n: v.len(),
        p50: pct(&v, 0.50),
        p99: pct(&v, 0.99),
        mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
    }
}

/// Median cost of `write 4 KiB + fsync` of a file in `dir`, and of an fsync of `dir` itself.
fn fsync_cost(dir: &Path) -> Result<(f64, f64)> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for i in 0..50u8 {
        let t = Instant::now();
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&[i; 4096])?;
        f.sync_all()?;
        files.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        std::fs::File::open(dir)?.sync_all()?;
        dirs.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    std::fs::remove_file(&path)?;
    files.sort_by(f64::total_cmp);
    dirs.sort_by(f64::total_cmp);
    Ok((pct(&files, 0.5), pct(&dirs, 0.5)))
}

/// The file system type of the mount holding `dir` (from /proc/mounts; longest prefix).
fn fs_type(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(at).then(|| (at.len(), kind.to_owned()))
        })
        .max()
        .map_or_else(|| "unknown".into(), |(_, k)| k)
}

/// `PRAGMA synchronous` and `journal_mode` as a new connection to the database sees them (the
/// store's own connections set neither `synchronous` nor anything else at open, so they get the
/// same defaults; `journal_mode = WAL` is stored in the database file).
async fn sqlite_pragmas(db: &Path) -> Result<(String, String)> {
    use sqlx::{Connection, Row};
    let url = format!("sqlite://{}", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
    conn.close().await?;
    let sync = match sync {
        0 => "OFF (0)".to_owned(),
        1 => "NORMAL (1)".to_owned(),
        2 => "FULL (2)".to_owned(),
        3 => "EXTRA (3)".to_owned(),
        n => n.to_string(),
    };
    Ok((sync, mode))
}

/// Median time of a one-row write transaction on a bare SQLite connection in WAL mode, with
/// `synchronous = FULL` and with `NORMAL` (which does not fsync the WAL at commit): what the
/// durability setting costs on this file system, apart from the store.
async fn sqlite_commit_cost(dir: &Path) -> Result<(f64, f64)> {
    use sqlx::{Connection, Executor};
    let db = dir.join("commit-probe.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    conn.execute("PRAGMA journal_mode = WAL").await?;
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .await?;
    let mut out = [0.0; 2];
    for (slot, mode) in ["FULL", "NORMAL"].into_iter().enumerate() {
        conn.execute(format!("PRAGMA synchronous = {mode}").as_str()).await?;
        let mut v = Vec::new();
        for i in 0..200i64 {
            let t = Instant::now();
            let mut tx = conn.begin().await?;
            sqlx::query("INSERT INTO t (k, v) VALUES (?, ?)")
                .bind(i + 1000 * slot as i64)
                .bind("x".repeat(300))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        v.sort_by(f64::total_cmp);
        out[slot] = pct(&v, 0.5);
    }
    conn.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok((out[0], out[1]))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut rounds = 30;
    let mut quick = false;
    let mut base: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("--rounds needs a number")?.parse()?,
            "--quick" => quick = true,
            "--dir" => base = Some(args.next().context("--dir needs a path")?.into()),
            "-h" | "--help" => {
                println!("usage: publish_latency [--rounds R] [--quick] [--dir DIR]");
                return Ok(());
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    if quick {
        rounds = rounds.min(5);
    }
    let p = Params {
        rounds,
        new_crates: 10,
        new_versions: 20,
        yanks: 5,
        conc: 8,
        per_task: 4,
        parts: 10,
    };
    let base = base.unwrap_or_else(std::env::temp_dir);
    let tmp = base.join(format!("cargohold-publish-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = run(&tmp, &p);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run(tmp: &Path, p: &Params) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let fs = fs_type(tmp);
    let (fsync_file, fsync_dir) = fsync_cost(tmp)?;
    let engines = engines();
    let mut backends = vec![Backend::Sqlite, Backend::Sled];
    match &engines {
        Some(e) => {
            eprintln!(
                "publish_latency: the shared store too: PostgreSQL at {} and s3://{}/{} at {}",
                cargohold::store::redact_url(&e.postgres),
                e.s3.bucket,
                e.s3.prefix,
                e.s3.endpoint.as_deref().unwrap_or("AWS")
            );
            backends.push(Backend::Shared);
        }
        None => eprintln!(
            "publish_latency: CARGOHOLD_TEST_POSTGRES_URL and CARGOHOLD_TEST_S3_* are not set: PostgreSQL + S3 is skipped (benches/publish.sh --engines starts them)"
        ),
    }
    rt.block_on(async {
        let mut benches = Vec::new();
        for &backend in &backends {
            let dir = tmp.join(backend.label().to_ascii_lowercase().replace('+', "-"));
            let b = open(backend, &dir, engines.as_ref()).await?;
            // Four crates whose new versions the rounds publish, and one warm-up publish.
            for j in 0..4 {
                publish(&b, &format!("hot-{j}"), "0.1.0").await?;
            }
            publish(&b, "warm-up", "0.1.0").await?;
            benches.push(b);
        }
        let started = Instant::now();
        for r in 0..p.rounds {
            // Each round starts with another backend, so machine noise hits all alike.
            let n = benches.len();
            for k in 0..n {
                round(&mut benches[(r + k) % n], r, p).await?;
            }
            eprintln!("publish_latency: round {}/{} done", r + 1, p.rounds);
        }
        let elapsed = started.elapsed();
        let (sync, mode) = sqlite_pragmas(&tmp.join("sqlite/store/registry.db")).await?;
        let (commit_full, commit_normal) = sqlite_commit_cost(tmp).await?;
        let now = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!();
        println!("### publish latency, SQLite vs sled — {now}, nproc {nproc}, {cpu}");
        println!();
        println!(
            "Command: `benches/publish.sh` · {} rounds in {:.1} s, backends alternating (SQLite first on even rounds) · \
             each backend: `RegistryService` over its metadata store + blob files (`FileBlobs`), hosted registry, real \
             publish bodies (~{} KiB `.crate`) · temp dir on {fs}: write 4 KiB + fsync {fsync_file:.2} ms, fsync of the \
             directory {fsync_dir:.2} ms, one-row SQLite transaction on a bare WAL connection: synchronous=FULL \
             {commit_full:.2} ms, NORMAL {commit_normal:.2} ms (medians) · the store's SQLite: journal_mode {mode}, synchronous {sync} \
             · sled: `flush` after every write · load average at the end {}",
            p.rounds,
            elapsed.as_secs_f64(),
            crate_tarball("sample", "1.0.0")?.len() / 1024,
            std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        );
        println!();
        println!("| operation | n per backend | p50 SQLite ms | p50 sled ms | p50 SQLite/sled | p99 SQLite ms | p99 sled ms | p99 SQLite/sled | mean SQLite ms | mean sled ms | mean SQLite/sled |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() };
        for op in Op::ALL {
            let (a, b) = (stats(&benches[0], op), stats(&benches[1], op));
            println!(
                "| {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {} |",
                op.label(p.conc, p.per_task, p.rounds, p.new_versions),
                a.n.min(b.n),
                a.p50,
                b.p50,
                ratio(a.p50, b.p50),
                a.p99,
                b.p99,
                ratio(a.p99, b.p99),
                a.mean,
                b.mean,
                ratio(a.mean, b.mean),
            );
        }
        let rate = |b: &Bench| {
            let total: f64 = b.batches.iter().map(Duration::as_secs_f64).sum();
            (b.batches.len() * p.conc * p.per_task) as f64 / total.max(1e-9)
        };
        let (ra, rb) = (rate(&benches[0]), rate(&benches[1]));
        println!();
        println!(
            "Concurrent throughput ({} tasks): SQLite {ra:.0} publishes/s, sled {rb:.0} publishes/s (SQLite/sled {:.2}x; above 1.00x SQLite is faster). \
             Latency ratios: below 1.00x SQLite is faster. The `part:` rows time one piece of a publish each, straight on the backend's store.",
            p.conc,
            ra / rb.max(1e-9),
        );
        if let Some(shared) = benches.iter().find(|b| b.backend == Backend::Shared) {
            let e = engines.as_ref().context("engines")?;
            println!();
            println!(
                "### publish latency, PostgreSQL + S3 (several nodes) vs SQLite (one node) — the same run",
            );
            println!();
            let pg = postgres_settings(&e.postgres).await.unwrap_or_else(|err| format!("settings unknown: {err}"));
            println!(
                "PostgreSQL: {} (fresh database; {pg}) · S3: {} bucket {} (fresh prefix) · the `.crate` goes to S3 with one PUT, the version to PostgreSQL in one transaction \
                 · the engines are what the environment names: in CI a throwaway PostgreSQL with fsync=off and Ceph RGW on a memory-backed OSD, on the same 2 cores, so the figures \
                 show the protocol's cost (round trips, signing, hashing), not a disk's",
                cargohold::store::redact_url(&e.postgres),
                e.s3.endpoint.as_deref().unwrap_or("AWS"),
                e.s3.bucket,
            );
            println!();
            println!("| operation | n per backend | p50 SQLite ms | p50 PG+S3 ms | p50 PG+S3/SQLite | p99 SQLite ms | p99 PG+S3 ms | p99 PG+S3/SQLite | mean SQLite ms | mean PG+S3 ms | mean PG+S3/SQLite |");
            println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for op in Op::ALL {
                let (a, c) = (stats(&benches[0], op), stats(shared, op));
                println!(
                    "| {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {} |",
                    op.label(p.conc, p.per_task, p.rounds, p.new_versions),
                    a.n.min(c.n),
                    a.p50,
                    c.p50,
                    ratio(c.p50, a.p50),
                    a.p99,
                    c.p99,
                    ratio(c.p99, a.p99),
                    a.mean,
                    c.mean,
                    ratio(c.mean, a.mean),
                );
            }
            let rc = rate(shared);
            println!();
            println!(
                "Concurrent throughput ({} tasks): PG+S3 {rc:.0} publishes/s against SQLite {ra:.0} (PG+S3/SQLite {:.2}x). \
                 Latency ratios: above 1.00x PG+S3 is slower.",
                p.conc,
                rc / ra.max(1e-9),
            );
            let mut v: Vec<f64> = shared.visible.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
            v.sort_by(f64::total_cmp);
            println!();
            println!(
                "Publish to visible on the other node (PG+S3; a second `RegistryService` with its own pools, caches and \
                 change feed, holding the crate's index file when the publish is acknowledged; polled every 0.2 ms): \
                 n {}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.",
                v.len(),
                pct(&v, 0.50),
                pct(&v, 0.99),
                v.last().copied().unwrap_or(f64::NAN),
            );
        }
        for b in &benches {
            let counts = b.svc.store().meta.counts().await?;
            eprintln!("publish_latency: {} holds {counts:?}", b.backend.label());
            b.svc.store().meta.close().await?;
        }
        anyhow::Ok(())
    })
}
