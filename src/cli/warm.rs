//! `cargohold warm`: fills a registry's caches (a proxy, or a merged view over one) with the
//! crates a set of lockfiles or a list names, through the running daemon's ordinary registry
//! routes — so the same checks as any download apply (the daemon verifies SHA-256 before
//! caching) and this command verifies every file again against the index. Typical use: warm a
//! mirror, then carry its data directory to an air-gapped site and run it `offline = true`.

use std::path::PathBuf;

use futures_util::StreamExt;
use semver::Version;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::progress::Progress;
use super::CliError;
use crate::index::index_path;
pub use crate::index::wants::{from_list, from_lockfile, Pick, Want};

#[derive(Deserialize)]
struct Line {
    name: String,
    vers: String,
    cksum: String,
    #[serde(default)]
    yanked: bool,
}

/// Options of one run.
pub struct WarmArgs {
    pub server: String,
    pub registry: String,
    pub token: Option<String>,
    pub wants: Vec<Want>,
    pub all_versions: bool,
    pub jobs: usize,
    /// Fetch the index files only, no `.crate` files.
    pub index_only: bool,
}

/// Fetches every wanted crate, with progress on stderr (a bar on a terminal, plain lines
/// otherwise; see `cli::progress`), then lists each failure on stderr and prints a summary on
/// stdout. Any failure makes the run fail (exit 1).
pub async fn run(args: WarmArgs) -> Result<(), CliError> {
    let failure = |m: String| CliError {
        code: super::EXIT_FAILURE,
        message: m,
    };
    let tls = crate::upstream::tls::client_config(None).map_err(failure)?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .build()
        .map_err(|e| failure(e.to_string()))?;
    let root = format!("{}/{}", args.server.trim_end_matches('/'), args.registry);
    let request = |method: reqwest::Method, url: String| {
        let mut req = http.request(method, url);
        if let Some(t) = &args.token {
            req = req.header("Authorization", t);
        }
        req.send()
    };
    let get = |url: String| request(reqwest::Method::GET, url);
    // Resolve index files first (one request per name, `jobs` at once), then download.
    let mut names: Vec<String> = args.wants.iter().map(|w| w.name.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let mut files = std::collections::HashMap::new();
    let mut failed: Vec<String> = Vec::new();
    let progress = Progress::new("index files", Some(names.len() as u64), None);
    let mut fetches = futures_util::stream::iter(names)
        .map(|name| {
            let url = format!("{root}/index/{}", index_path(&name));
            // The whole file even from a `prune_index` proxy: what is not cached yet is what
            // warming is for.
            let mut req = http.get(url.clone()).header("x-cargohold-unpruned", "1");
            if let Some(t) = &args.token {
                req = req.header("Authorization", t);
            }
            let fut = req.send();
            async move {
                let r = match fut.await {
                    Ok(r) => r,
                    Err(e) => return (name, Err(Err(e))),
                };
                if !r.status().is_success() {
                    let status = r.status();
                    return (
                        name.clone(),
                        Err(Ok(format!("{name}: the index answered {status} for {url}"))),
                    );
                }
                match r.text().await {
                    Ok(body) => (name, Ok(body)),
                    Err(e) => (name.clone(), Err(Ok(format!("{name}: the index transfer broke: {e}")))),
                }
            }
        })
        .buffer_unordered(args.jobs.max(1));
    while let Some((name, fetched)) = fetches.next().await {
        match fetched {
            Ok(body) => {
                progress.item(body.len() as u64);
                let lines: Vec<Line> = body.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
                files.insert(name, lines);
            }
            Err(Ok(why)) => {
                progress.item(0);
                failed.push(why);
            }
            Err(Err(e)) => {
                progress.abandon();
                return Err(failure(format!(
                    "cannot reach cargohold at {}: {e}; is `cargohold serve` running? (set --server)",
                    args.server
                )));
            }
        }
    }
    drop(fetches);
    let index_bytes = progress.finish().bytes;
    let mut jobs: Vec<(String, String, String)> = Vec::new();
    for w in &args.wants {
        let Some(lines) = files.get(&w.name.to_ascii_lowercase()) else {
            continue;
        };
        let newest = |matches: &dyn Fn(&Version) -> bool| {
            lines
                .iter()
                .filter(|l| !l.yanked)
                .filter_map(|l| Version::parse(&l.vers).ok().filter(|v| matches(v)).map(|v| (v, l)))
                .max_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, l)| l)
        };
        let picked: Vec<&Line> = match &w.version {
            Pick::Exact(v) => match lines.iter().find(|l| &l.vers == v) {
                Some(l) => vec![l],
                None => {
                    failed.push(format!("{}@={v}: no such version in the index", w.name));
                    continue;
                }
            },
            Pick::Req(req) => match newest(&|v| req.matches(v)) {
                Some(l) => vec![l],
                None => {
                    failed.push(format!("{}@{req}: no version in the index matches", w.name));
                    continue;
                }
            },
            Pick::Newest if args.all_versions => lines.iter().collect(),
            Pick::Newest => newest(&|_| true).into_iter().collect(),
        };
        for l in picked {
            if let Some(c) = w.checksum.as_ref().filter(|c| **c != l.cksum) {
                failed.push(format!(
                    "{}@{}: the lockfile's checksum {c} differs from the index's {}",
                    l.name, l.vers, l.cksum
                ));
                continue;
            }
            jobs.push((l.name.clone(), l.vers.clone(), l.cksum.clone()));
        }
    }
    jobs.sort();
    jobs.dedup();
    if args.index_only {
        for f in &failed {
            eprintln!("failed: {f}");
        }
        println!(
            "warmed {} index file(s) ({index_bytes} bytes) in registry `{}` (--index-only: no crate files), {} failed",
            files.len(),
            args.registry,
            failed.len()
        );
        return if failed.is_empty() {
            Ok(())
        } else {
            Err(failure(format!(
                "{} item(s) could not be warmed (listed above)",
                failed.len()
            )))
        };
    }
    let progress = Progress::new("crates", Some(jobs.len() as u64), None);
    let mut results = futures_util::stream::iter(jobs)
        .map(|(name, vers, cksum)| {
            let url = format!("{root}/api/v1/crates/{name}/{vers}/download");
            let head = request(reqwest::Method::HEAD, url.clone());
            let fut = get(url);
            async move {
                // A re-run resumes: a file the daemon already holds (it verified the checksum
                // before caching it) is not transferred again.
                let x_cache = |r: &reqwest::Response| match r.headers().get("x-cache").and_then(|v| v.to_str().ok()) {
                    Some("HIT") => "cached",
                    _ => "fetched",
                };
                // The HEAD's answer says what this run did: a miss there started the fetch
                // (the GET below then finds it cached or joins it).
                let mut cache = None;
                if let Ok(h) = head.await {
                    if h.status().is_success() && x_cache(&h) == "cached" {
                        let len = h.content_length().unwrap_or(0);
                        return Ok((format!("{name}@{vers}"), "cached", usize::try_from(len).unwrap_or(0)));
                    }
                    cache = h.status().is_success().then_some("fetched");
                }
                let r = fut.await.map_err(|e| format!("{name}@{vers}: {e}"))?;
                if !r.status().is_success() {
                    return Err(format!("{name}@{vers}: the download answered {}", r.status()));
                }
                let cache = cache.unwrap_or_else(|| x_cache(&r));
                let bytes = r
                    .bytes()
                    .await
                    .map_err(|e| format!("{name}@{vers}: the transfer broke: {e}"))?;
                if hex::encode(Sha256::digest(&bytes)) != cksum {
                    return Err(format!("{name}@{vers}: the bytes do not match the index checksum"));
                }
                Ok((format!("{name}@{vers}"), cache, bytes.len()))
            }
        })
        .buffer_unordered(args.jobs.max(1));
    let (mut fetched, mut cached) = (0, 0);
    while let Some(r) = results.next().await {
        match r {
            Ok((_, how, len)) => {
                progress.item(len as u64);
                if how == "cached" {
                    cached += 1;
                } else {
                    fetched += 1;
                }
            }
            Err(e) => {
                progress.item(0);
                failed.push(e);
            }
        }
    }
    drop(results);
    let bytes = progress.finish().bytes;
    for f in &failed {
        eprintln!("failed: {f}");
    }
    println!(
        "warmed {} index file(s) and {} crate file(s) ({bytes} bytes) in registry `{}`: {fetched} fetched from upstream, {cached} already cached, {} failed",
        files.len(),
        fetched + cached,
        args.registry,
        failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failure(format!(
            "{} item(s) could not be warmed (listed above)",
            failed.len()
        )))
    }
}

/// Reads the wanted crates from lockfiles and/or a list file.
pub fn wants(lockfiles: &[PathBuf], list: Option<&PathBuf>) -> Result<Vec<Want>, CliError> {
    let usage = |m: String| CliError {
        code: super::EXIT_USAGE,
        message: m,
    };
    let mut out = Vec::new();
    for p in lockfiles {
        let text = std::fs::read_to_string(p).map_err(|e| usage(format!("cannot read {}: {e}", p.display())))?;
        out.extend(from_lockfile(&text).map_err(|e| usage(format!("{}: {e}", p.display())))?);
    }
    if let Some(p) = list {
        let text = std::fs::read_to_string(p).map_err(|e| usage(format!("cannot read {}: {e}", p.display())))?;
        out.extend(from_list(&text).map_err(|e| usage(format!("{}: {e}", p.display())))?);
    }
    if out.is_empty() {
        return Err(usage(
            "nothing to warm: pass --lockfile Cargo.lock (repeatable) or --crates FILE".into(),
        ));
    }
    Ok(out)
}
