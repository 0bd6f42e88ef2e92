//! `cargohold export` / `cargohold import`: verified bundles of a proxy registry's cached
//! content, for carrying a mirror across an air gap.
//!
//! A bundle is one file: a tar stream compressed with zstd (with zstd's frame checksum). Its
//! first entry is `manifest.json` ([`Manifest`]): the format and its version, the source
//! registry (name, kind, upstream), the creation time, the bundle's random id, the id of the
//! bundle it is an increment on (`base`), and for every other entry its path, size and
//! SHA-256. The other entries are `index/<sparse index path>` (an index file, byte for byte as
//! the upstream sent it; the manifest keeps its upstream validators and fetch time) and
//! `crates/<name>/<version>.crate`.
//!
//! The same code runs in the daemon, behind the admin API (`POST
//! /-/api/v1/registries/{name}/export`, `POST /-/api/v1/import`), and in the CLI on a stopped
//! daemon's data directory (`--data-dir`). An import verifies everything before anything becomes
//! visible: the manifest, every entry's size and SHA-256, that nothing is missing, unlisted or
//! repeated, and every `.crate` against the `cksum` of its index line (from the bundle, or for
//! an increment from what the registry already holds). `.crate` files are staged in the crate
//! cache's temp directory; then they are moved into place (invisible until an index file names
//! them), and the index files are written together with the bundle's id in one transaction of
//! the index cache's database. Importing a bundle recorded there again changes nothing; an
//! increment whose base is not recorded is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::crate_files::CrateFiles;
use crate::cache::index_cache::{IndexCache, IndexEntry};
use crate::config::{RegistryKind, RegistrySpec};
use crate::index::index_path;
use crate::index::line::{line_key, lines};
use crate::index::name::is_lookup_name;
use crate::index::wants::{Pick, Want};

/// The `format` of every bundle's manifest.
pub const FORMAT: &str = "cargohold-bundle";
/// The version of the bundle format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The first entry of every bundle.
pub const MANIFEST: &str = "manifest.json";
/// A hosted registry's crate records and the users they name ([`Records`]).
pub const RECORDS: &str = "records.json";
/// The largest manifest or index file an import reads into memory.
const MAX_IN_MEMORY: u64 = 256 << 20;
/// zstd level of exports (fast; the `.crate` files inside are gzip already).
const ZSTD_LEVEL: i32 = 3;

/// What a bundle holds (its first entry, `manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Random, 32 hex digits.
    pub id: String,
    /// The bundle this one is an increment on (`export --since`).
    pub base: Option<String>,
    /// RFC 3339.
    pub created: String,
    pub registry: Source,
    /// Every entry after the manifest, in order.
    pub entries: Vec<Entry>,
    /// What the base chain holds and this bundle therefore leaves out (path and SHA-256), so
    /// that an export `--since` this bundle leaves those out too.
    #[serde(default)]
    pub inherited: Vec<Known>,
}

/// The registry a bundle was exported from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    /// `proxy` (the only kind exported so far).
    pub kind: String,
    /// The proxy's upstream index URL (`None`: crates.io).
    pub upstream: Option<String>,
}

/// One entry of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// For `index/...` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexMeta>,
    /// For `crates/...` entries.
    #[serde(default, rename = "crate", skip_serializing_if = "Option::is_none")]
    pub krate: Option<CrateMeta>,
}

/// How an index file was fetched, so an offline proxy revalidates it like the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Lowercase crate name.
    pub name: String,
    pub upstream_etag: Option<String>,
    pub upstream_last_modified: Option<String>,
    /// Unix ms of the fetch.
    pub fetched_at: u64,
}

/// Which version a `.crate` entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrateMeta {
    /// As published.
    pub name: String,
    pub vers: String,
}

/// The `records.json` of a hosted registry's bundle: its crates (versions with their index
/// lines, owners, yanks) and the users they name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    pub crates: Vec<crate::store::CrateRecord>,
    pub users: Vec<crate::store::UserRecord>,
}

/// An entry a base chain holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Known {
    pub path: String,
    pub sha256: String,
}

/// Why an export or import did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BundleError {
    /// The request itself is wrong (a registry of the wrong kind, a `--since` of another
    /// registry): the CLI's usage exit code, HTTP 400. Otherwise the bundle or the target
    /// refused it (damaged, incomplete, missing base, over budget): exit 1, HTTP 422.
    pub usage: bool,
    pub message: String,
}

fn usage(m: impl Into<String>) -> BundleError {
    BundleError {
        usage: true,
        message: m.into(),
    }
}

fn failure(m: impl Into<String>) -> BundleError {
    BundleError {
        usage: false,
        message: m.into(),
    }
}

/// Progress of one phase (a bar or plain lines in the CLI; nothing in the daemon).
pub trait Progress: Send + Sync {
    /// One entry done, of `bytes`.
    fn item(&self, bytes: u64);
    /// The phase ended.
    fn finish(&self);
}

/// Makes the [`Progress`] of a phase from its label and, when known, its items and bytes.
pub type Reporter = Arc<dyn Fn(&str, Option<u64>, Option<u64>) -> Box<dyn Progress> + Send + Sync>;

struct Silent;

impl Progress for Silent {
    fn item(&self, _: u64) {}
    fn finish(&self) {}
}

/// A reporter that shows nothing (the daemon).
pub fn silent() -> Reporter {
    Arc::new(|_, _, _| Box::new(Silent))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads the manifest (the first entry) of a bundle, without verifying the rest.
pub fn read_manifest(file: &Path) -> Result<Manifest, BundleError> {
    let f = std::fs::File::open(file).map_err(|e| usage(format!("cannot open {}: {e}", file.display())))?;
    let decoder = zstd::Decoder::new(f).map_err(|e| failure(format!("cannot read {}: {e}", file.display())))?;
    let mut archive = tar::Archive::new(decoder);
    let refuse = |m: String| failure(format!("{} is not a usable bundle: {m}", file.display()));
    let mut entries = archive.entries().map_err(|e| refuse(e.to_string()))?;
    let mut first = match entries.next() {
        Some(Ok(e)) => e,
        Some(Err(e)) => {
            return Err(refuse(format!(
                "entry `{MANIFEST}` (the first) is truncated or damaged: {e}"
            )))
        }
        None => return Err(refuse("it is empty".into())),
    };
    parse_manifest(&mut first).map_err(refuse)
}

fn parse_manifest(entry: &mut tar::Entry<'_, impl Read>) -> Result<Manifest, String> {
    let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    if path != MANIFEST {
        return Err(format!("its first entry is `{path}`, not `{MANIFEST}`"));
    }
    let mut text = Vec::new();
    entry
        .take(MAX_IN_MEMORY)
        .read_to_end(&mut text)
        .map_err(|e| format!("entry `{MANIFEST}` is truncated or damaged: {e}"))?;
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("entry `{MANIFEST}` is not a bundle manifest: {e}"))?;
    check_fields(&m)?;
    Ok(m)
}

/// What a manifest must satisfy, wherever it comes from (a bundle's first entry, or the
/// `since` of an export request).
fn check_fields(m: &Manifest) -> Result<(), String> {
    if m.format != FORMAT {
        return Err(format!("entry `{MANIFEST}` has format `{}`, not `{FORMAT}`", m.format));
    }
    if m.format_version != FORMAT_VERSION {
        return Err(format!(
            "it has format version {}; this cargohold reads version {FORMAT_VERSION}",
            m.format_version
        ));
    }
    // The ids name staging directories and markers: exactly what `export` makes, 32 hex digits.
    let is_id = |s: &str| s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_id(&m.id) {
        return Err(format!("entry `{MANIFEST}` has an invalid bundle id"));
    }
    if m.base.as_deref().is_some_and(|b| !is_id(b)) {
        return Err(format!("entry `{MANIFEST}` has an invalid base bundle id"));
    }
    let mut seen = HashSet::new();
    for e in &m.entries {
        if e.size > MAX_ENTRY_BYTES {
            return Err(format!("entry `{}` is larger than any entry a bundle may hold", e.path));
        }
        if let Some(i) = &e.index {
            let header_ok = |v: &Option<String>| {
                v.as_deref()
                    .is_none_or(|v| reqwest::header::HeaderValue::from_str(v).is_ok())
            };
            if i.name != i.name.to_ascii_lowercase()
                || !header_ok(&i.upstream_etag)
                || !header_ok(&i.upstream_last_modified)
            {
                return Err(format!("entry `{}` is described wrongly in the manifest", e.path));
            }
        }
        if !seen.insert(e.path.as_str()) || e.path == MANIFEST {
            return Err(format!("entry `{}` is listed twice in the manifest", e.path));
        }
        if !crate::store::is_blob_name(&e.sha256) {
            return Err(format!("entry `{}` has no valid SHA-256 in the manifest", e.path));
        }
        match (&e.index, &e.krate) {
            (Some(i), None) if is_lookup_name(&i.name) && e.path == format!("index/{}", index_path(&i.name)) => {}
            (None, Some(c)) if is_lookup_name(&c.name) && e.path == crate_path(&c.name, &c.vers) => {}
            (None, None) if e.path == RECORDS => {}
            _ => return Err(format!("entry `{}` is described wrongly in the manifest", e.path)),
        }
    }
    Ok(())
}

/// Largest entry a bundle may list (far above any `.crate` or index file a registry accepts).
const MAX_ENTRY_BYTES: u64 = 1 << 40;

fn crate_path(name: &str, vers: &str) -> String {
    format!("crates/{name}/{vers}.crate")
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    pub id: String,
    pub base: Option<String>,
    pub index_files: usize,
    pub crate_files: usize,
    /// Bytes of the entries (uncompressed).
    pub bytes: u64,
    /// Size of the bundle file.
    pub file_bytes: u64,
    /// Entries left out because the base chain holds them.
    pub unchanged: usize,
}

/// Whether `vers` of `lower` is in the set asked for (`None`: everything).
fn wanted(wants: &Option<HashMap<String, Vec<Pick>>>, lower: &str, vers: &str, version: &semver::Version) -> bool {
    let Some(w) = wants else { return true };
    w.get(lower).is_some_and(|picks| {
        picks.iter().any(|p| match p {
            Pick::Newest => true,
            Pick::Req(r) => r.matches(version),
            Pick::Exact(v) => v == vers || semver::Version::parse(v).is_ok_and(|v| &v == version),
        })
    })
}

/// Where an entry's bytes come from.
pub enum Source2 {
    Bytes(bytes::Bytes),
    File(PathBuf),
    /// A blob of the private store, by SHA-256.
    Blob(String),
}

/// The entries of a hosted registry's bundle: `records.json`, then every version's `.crate`
/// from the store's blobs. A limit (`--lockfile` / `--crates`) picks whole crates by name:
/// an import replaces each crate it carries, so a crate is never carried in part.
async fn hosted_entries(
    store: &crate::store::PrivateStore,
    reg: &str,
    wants: &Option<HashMap<String, Vec<Pick>>>,
) -> Result<Vec<(Entry, Source2)>, BundleError> {
    let store_err = |e: crate::store::StoreError| failure(e.to_string());
    let mut crates = store.meta.crates(reg).await.map_err(store_err)?;
    if let Some(w) = wants {
        crates.retain(|c| w.contains_key(&c.name.to_ascii_lowercase()));
        let mut missing: Vec<&String> = w
            .keys()
            .filter(|n| !crates.iter().any(|c| c.name.eq_ignore_ascii_case(n)))
            .collect();
        missing.sort();
        if !missing.is_empty() {
            return Err(failure(format!(
                "registry `{reg}` has no crate {}; no bundle was written",
                missing.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let named: HashSet<&str> = crates
        .iter()
        .flat_map(|c| {
            c.owners
                .iter()
                .map(String::as_str)
                .chain(c.versions.iter().map(|v| v.published_by.as_str()))
        })
        .collect();
    let users: Vec<_> = store
        .meta
        .users()
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|u| named.contains(u.login.as_str()))
        .collect();
    let mut out = Vec::new();
    for c in &crates {
        for v in &c.versions {
            let sha = &v.line.cksum;
            let Some(info) = store.blobs.info(sha).await.map_err(store_err)? else {
                return Err(failure(format!(
                    "the store has no .crate file for `{}` {} (blob {sha}); no bundle was written",
                    c.name, v.line.vers
                )));
            };
            out.push((
                Entry {
                    path: crate_path(&c.name, &v.line.vers),
                    size: info.len,
                    sha256: sha.clone(),
                    index: None,
                    krate: Some(CrateMeta {
                        name: c.name.clone(),
                        vers: v.line.vers.clone(),
                    }),
                },
                Source2::Blob(sha.clone()),
            ));
        }
    }
    let records = serde_json::to_vec_pretty(&Records { crates, users }).map_err(|e| failure(e.to_string()))?;
    out.insert(
        0,
        (
            Entry {
                path: RECORDS.into(),
                size: records.len() as u64,
                sha256: sha256_hex(&records),
                index: None,
                krate: None,
            },
            Source2::Bytes(records.into()),
        ),
    );
    Ok(out)
}

/// The crates a limited export carries, by lowercase name.
fn wants_by_name(wants: Option<&[Want]>) -> Option<HashMap<String, Vec<Pick>>> {
    wants.map(|ws| {
        let mut m: HashMap<String, Vec<Pick>> = HashMap::new();
        for w in ws {
            m.entry(w.name.to_ascii_lowercase())
                .or_default()
                .push(w.version.clone());
        }
        m
    })
}

/// The entries of a hosted registry's bundle (see [`plan`]).
pub async fn hosted_plan(
    store: &crate::store::PrivateStore,
    spec: &RegistrySpec,
    wants: Option<&[Want]>,
) -> Result<Vec<(Entry, Source2)>, BundleError> {
    hosted_entries(store, &spec.name, &wants_by_name(wants)).await
}

/// The entries of a proxy's bundle: its cached index files (those `wants` names, or all) and
/// the cached `.crate` files of their versions (those `wants` picks, or all). A limited export
/// carries everything it names, or fails.
pub async fn proxy_plan(
    index: &IndexCache,
    crates: &CrateFiles,
    spec: &RegistrySpec,
    wants: Option<&[Want]>,
) -> Result<Vec<(Entry, Source2)>, BundleError> {
    let reg = spec.name.as_str();
    let by_name = wants_by_name(wants);
    let mut names = index.names(reg).await;
    names.sort();
    if let Some(w) = &by_name {
        names.retain(|n| w.contains_key(n));
    }
    let mut entries: Vec<(Entry, Source2)> = Vec::new();
    let mut crate_entries: Vec<(Entry, Source2)> = Vec::new();
    let mut found: HashSet<(String, String)> = HashSet::new();
    for name in &names {
        let Some(e) = index.disk_get(reg, name).await else {
            continue;
        };
        if e.not_found {
            continue;
        }
        for line in lines(&e.body) {
            let Some(k) = line_key(line) else { continue };
            if !wanted(&by_name, name, &k.vers, &k.version) {
                continue;
            }
            let Some((path, len)) = crates.lookup(&k.cksum) else {
                continue;
            };
            found.insert((name.clone(), k.vers.to_string()));
            crate_entries.push((
                Entry {
                    path: crate_path(&k.name, &k.vers),
                    size: len,
                    sha256: k.cksum.to_string(),
                    index: None,
                    krate: Some(CrateMeta {
                        name: k.name.to_string(),
                        vers: k.vers.to_string(),
                    }),
                },
                Source2::File(path),
            ));
        }
        entries.push((
            Entry {
                path: format!("index/{}", index_path(name)),
                size: e.body.len() as u64,
                sha256: sha256_hex(&e.body),
                index: Some(IndexMeta {
                    name: name.clone(),
                    upstream_etag: e.upstream_etag.clone(),
                    upstream_last_modified: e.upstream_last_modified.clone(),
                    fetched_at: e.fetched_at,
                }),
                krate: None,
            },
            Source2::Bytes(e.body.clone()),
        ));
    }
    if let Some(ws) = wants {
        let mut missing = Vec::new();
        for w in ws {
            let lower = w.name.to_ascii_lowercase();
            let ok = match &w.version {
                Pick::Exact(v) => found.contains(&(lower.clone(), v.clone())),
                Pick::Req(r) => found
                    .iter()
                    .any(|(n, v)| *n == lower && semver::Version::parse(v).is_ok_and(|v| r.matches(&v))),
                Pick::Newest => found.iter().any(|(n, _)| *n == lower),
            };
            if !ok {
                missing.push(w.to_line());
            }
        }
        if !missing.is_empty() {
            return Err(failure(format!(
                "registry `{reg}` has no cached .crate file for: {}; warm it first (`cargohold warm`); no bundle was written",
                missing.join(", ")
            )));
        }
    }
    entries.extend(crate_entries);
    Ok(entries)
}

/// A bundle decided but not written yet.
pub struct Plan {
    pub manifest: Manifest,
    entries: Vec<(Entry, Source2)>,
    /// What it holds (`file_bytes` is 0 until written).
    pub summary: ExportSummary,
}

/// Checks a manifest sent by a client (the `--since` bundle's) as an import checks one.
pub fn check_manifest(m: &Manifest) -> Result<(), BundleError> {
    check_fields(m).map_err(|why| usage(format!("the --since bundle: {why}")))
}

/// Decides a bundle of `entries`: leaves out what the base chain of `prev` holds and writes the
/// manifest.
pub fn plan(
    spec: &RegistrySpec,
    mut entries: Vec<(Entry, Source2)>,
    prev: Option<Manifest>,
) -> Result<Plan, BundleError> {
    let reg = spec.name.as_str();
    let kind = match spec.kind {
        RegistryKind::Hosted => "hosted",
        RegistryKind::Proxy => "proxy",
    };
    if let Some(p) = prev
        .as_ref()
        .filter(|p| p.registry.name != reg || p.registry.kind != kind)
    {
        return Err(usage(format!(
            "--since names bundle {}, of {} registry `{}`; an increment of {kind} registry `{reg}` builds on a bundle of it",
            p.id, p.registry.kind, p.registry.name
        )));
    }
    // An increment leaves out what its base chain holds.
    let (base, inherited) = match &prev {
        Some(p) => {
            let mut known: Vec<Known> = p.inherited.clone();
            known.extend(p.entries.iter().map(|e| Known {
                path: e.path.clone(),
                sha256: e.sha256.clone(),
            }));
            known.sort_by(|a, b| (&a.path, &a.sha256).cmp(&(&b.path, &b.sha256)));
            known.dedup();
            (Some(p.id.clone()), known)
        }
        None => (None, Vec::new()),
    };
    let known: HashSet<(&str, &str)> = inherited.iter().map(|k| (k.path.as_str(), k.sha256.as_str())).collect();
    let before = entries.len();
    entries.retain(|(e, _)| !known.contains(&(e.path.as_str(), e.sha256.as_str())));
    let unchanged = before - entries.len();
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        id: hex::encode(rand::random::<[u8; 16]>()),
        base: base.clone(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        registry: Source {
            name: reg.to_owned(),
            kind: kind.into(),
            upstream: spec.upstream.clone(),
        },
        entries: entries.iter().map(|(e, _)| e.clone()).collect(),
        inherited,
    };
    let summary = ExportSummary {
        id: manifest.id.clone(),
        base,
        index_files: entries.iter().filter(|(e, _)| e.index.is_some()).count(),
        crate_files: entries.iter().filter(|(e, _)| e.krate.is_some()).count(),
        bytes: entries.iter().map(|(e, _)| e.size).sum(),
        file_bytes: 0,
        unchanged,
    };
    Ok(Plan {
        manifest,
        entries,
        summary,
    })
}

/// Writes `plan` to `out` as a file: `<out>.partial`, fsynced, then renamed, so a failed export
/// leaves no bundle. `blobs` are where a hosted registry's `.crate` files come from.
pub async fn write_file(
    plan: Plan,
    out: &Path,
    blobs: Option<Arc<dyn crate::store::Blobs>>,
    reporter: Reporter,
) -> Result<ExportSummary, BundleError> {
    let summary = plan.summary.clone();
    let out = out.to_owned();
    let rt = tokio::runtime::Handle::current();
    let file_bytes = tokio::task::spawn_blocking(move || {
        let mut partial = out.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let io = |e: std::io::Error| failure(format!("cannot write {}: {e}", partial.display()));
        let result = (|| {
            let file = std::fs::File::create(&partial).map_err(io)?;
            let file = write_blocking(
                &plan,
                BufWriter::with_capacity(1 << 20, file),
                blobs.map(|b| (rt, b)),
                &reporter,
            )?;
            let file = file.into_inner().map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
            file.metadata().map(|m| m.len()).map_err(io)
        })();
        match result {
            Ok(n) => std::fs::rename(&partial, &out)
                .map(|()| n)
                .map_err(|e| failure(format!("cannot write {}: {e}", out.display()))),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| failure(format!("the export failed: {e}")))??;
    Ok(ExportSummary { file_bytes, ..summary })
}

/// A reader that hashes and counts what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// The private store's blobs, where a hosted registry's `.crate` files come from.
pub type StoreBlobs = Arc<dyn crate::store::Blobs>;

/// Where [`Source2::Blob`] entries come from: the store's blobs, read on the runtime.
pub type BlobSource = (tokio::runtime::Handle, StoreBlobs);

/// Writes the bundle of `plan` (tar + zstd with its frame checksum) into `out` and returns it
/// (blocking: run it off the runtime). Every entry is checked against the plan as it is
/// written, so a file that changed since it was planned fails the export.
pub fn write_blocking<W: Write>(
    plan: &Plan,
    out: W,
    blobs: Option<BlobSource>,
    reporter: &Reporter,
) -> Result<W, BundleError> {
    let io = |e: std::io::Error| failure(format!("cannot write the bundle: {e}"));
    let (manifest, entries) = (&plan.manifest, &plan.entries);
    let mut enc = zstd::Encoder::new(out, ZSTD_LEVEL).map_err(io)?;
    enc.include_checksum(true).map_err(io)?;
    let mut tar = tar::Builder::new(enc);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| failure(e.to_string()))?;
    tar.append_data(&mut tar_header(json.len() as u64), MANIFEST, json.as_slice())
        .map_err(io)?;
    let progress = reporter(
        "export",
        Some(entries.len() as u64),
        Some(entries.iter().fold(0u64, |a, (e, _)| a.saturating_add(e.size))),
    );
    for (e, src) in entries.iter() {
        match src {
            Source2::Bytes(b) => tar
                .append_data(&mut tar_header(e.size), &e.path, b.as_ref())
                .map_err(io)?,
            Source2::Blob(sha) => {
                let Some((rt, blobs)) = &blobs else {
                    return Err(failure(format!("entry `{}`: no store to read it from", e.path)));
                };
                let bytes = rt
                    .block_on(async {
                        use tokio::io::AsyncReadExt;
                        let Some(mut b) = blobs.get(sha).await? else {
                            return Ok(None);
                        };
                        let mut buf = Vec::with_capacity(usize::try_from(b.len).unwrap_or(0));
                        b.reader.read_to_end(&mut buf).await?;
                        Ok::<_, crate::store::StoreError>(Some(buf))
                    })
                    .map_err(|err| failure(format!("cannot read the blob of `{}`: {err}", e.path)))?;
                match bytes {
                    Some(b) if b.len() as u64 == e.size && sha256_hex(&b) == e.sha256 => {
                        tar.append_data(&mut tar_header(e.size), &e.path, b.as_slice())
                            .map_err(io)?;
                    }
                    _ => {
                        return Err(failure(format!(
                            "the stored blob of `{}` is missing or does not match its checksum; no bundle was written",
                            e.path
                        )))
                    }
                }
            }
            Source2::File(p) => {
                let f = std::fs::File::open(p).map_err(|err| {
                    failure(format!(
                        "cannot read the cached file of `{}` ({}): {err}; warm it again",
                        e.path,
                        p.display()
                    ))
                })?;
                let mut r = Hashing {
                    inner: f.take(e.size),
                    hasher: Sha256::new(),
                    len: 0,
                };
                tar.append_data(&mut tar_header(e.size), &e.path, &mut r).map_err(io)?;
                if r.len != e.size || hex::encode(r.hasher.finalize()) != e.sha256 {
                    return Err(failure(format!(
                        "the cached file of `{}` ({}) does not match its checksum; delete it and warm again; no bundle was written",
                        e.path,
                        p.display()
                    )));
                }
            }
        }
        progress.item(e.size);
    }
    progress.finish();
    let enc = tar.into_inner().map_err(io)?;
    enc.finish().map_err(io)
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    pub id: String,
    pub registry: String,
    /// The bundle had been imported before: nothing changed.
    pub already: bool,
    pub index_files: usize,
    pub crate_files: usize,
    pub bytes: u64,
    /// The crates a hosted registry's import restored (their cached index files are stale).
    pub crates: Vec<String>,
}

/// A bundle read and verified, its `.crate` files staged.
struct Staged {
    /// `records.json` of a hosted registry's bundle.
    records: Option<Vec<u8>>,
    index: Vec<(String, IndexEntry)>,
    /// (entry, staged file).
    crates: Vec<(Entry, PathBuf)>,
    bytes: u64,
}

/// Removes the staging directory however the import ends.
struct StagingDir(PathBuf);

impl StagingDir {
    /// A new, empty directory for the import of bundle `id` under `parent`. Its path goes to
    /// the log, never to the client.
    fn create(parent: &Path, id: &str) -> Result<Self, BundleError> {
        let dir = StagingDir(parent.join(format!("import-{id}-{:016x}", rand::random::<u64>())));
        std::fs::create_dir_all(&dir.0).map_err(|e| {
            tracing::warn!(path = %dir.0.display(), error = %e, "cannot create a staging directory");
            failure(format!("cannot stage the bundle ({e}); the log names the directory"))
        })?;
        Ok(dir)
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads the whole bundle, checking every entry against the manifest; `.crate` files go to
/// `staging`, index files to memory.
fn read_and_stage(
    file: &Path,
    manifest: &Manifest,
    staging: Option<&Path>,
    reporter: &Reporter,
) -> Result<Staged, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("cannot open it: {e}"))?;
    let gate = |m: &Manifest| {
        if m == manifest {
            Gate::Stage(staging.map(Path::to_owned))
        } else {
            Gate::Stop
        }
    };
    match read_bundle(f, gate, reporter)? {
        Some((_, staged)) => Ok(staged),
        None => Err("its manifest changed while it was read".into()),
    }
}

/// What to do with a bundle once its manifest is read.
pub enum Gate {
    /// Verify every entry, staging the `.crate` files in this directory (`None`: verify only).
    Stage(Option<PathBuf>),
    /// Read no further (the rest of the input is drained unread).
    Stop,
}

/// Reads a bundle from `reader`: its manifest, then, as `gate` decides, every entry checked
/// against it (see [`read_and_stage`]); `None` when the gate stopped it.
fn read_bundle<R: Read>(
    reader: R,
    gate: impl FnOnce(&Manifest) -> Gate,
    reporter: &Reporter,
) -> Result<Option<(Manifest, Staged)>, String> {
    let decoder = zstd::Decoder::new(reader).map_err(|e| format!("cannot read it: {e}"))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive
        .entries()
        .map_err(|e| format!("entry `{MANIFEST}` (the first) is truncated or damaged: {e}"))?;
    let manifest = match entries.next() {
        Some(Ok(mut first)) => parse_manifest(&mut first)?,
        Some(Err(e)) => return Err(format!("entry `{MANIFEST}` (the first) is truncated or damaged: {e}")),
        None => return Err("it is empty".into()),
    };
    let staging = match gate(&manifest) {
        Gate::Stage(dir) => dir,
        Gate::Stop => {
            // (`entries` is not used again: the archive is free to give its reader back.)
            let mut raw = archive.into_inner().finish();
            let _ = std::io::copy(&mut raw, &mut std::io::sink());
            return Ok(None);
        }
    };
    let staging = staging.as_deref();
    let listed: HashMap<&str, &Entry> = manifest.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut staged = Staged {
        records: None,
        index: Vec::new(),
        crates: Vec::new(),
        bytes: 0,
    };
    let mut last = MANIFEST.to_owned();
    {
        let damaged = |last: &str, e: std::io::Error| format!("it is truncated or damaged after entry `{last}`: {e}");
        let progress = reporter(
            if staging.is_some() { "import: verify" } else { "verify" },
            Some(manifest.entries.len() as u64),
            Some(manifest.entries.iter().fold(0u64, |a, e| a.saturating_add(e.size))),
        );
        for item in entries {
            let mut entry = item.map_err(|e| damaged(&last, e))?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(m) = listed.get(path.as_str()) else {
                return Err(format!("entry `{path}` is not listed in the manifest"));
            };
            if !seen.insert(path.clone()) {
                return Err(format!("entry `{path}` appears twice"));
            }
            let header_size = entry.header().size().map_err(|e| format!("entry `{path}`: {e}"))?;
            if header_size != m.size {
                return Err(format!(
                    "entry `{path}` holds {header_size} bytes; the manifest says {}",
                    m.size
                ));
            }
            let read_err = |e: std::io::Error| format!("entry `{path}` is truncated or damaged: {e}");
            let mut hasher = Sha256::new();
            let mut len = 0u64;
            if m.index.is_none() && m.krate.is_none() {
                if m.size > MAX_IN_MEMORY {
                    return Err(format!("entry `{path}` is too large"));
                }
                let mut body = Vec::with_capacity(usize::try_from(m.size).unwrap_or(0));
                (&mut entry).take(m.size + 1).read_to_end(&mut body).map_err(read_err)?;
                hasher.update(&body);
                len = body.len() as u64;
                staged.records = Some(body);
            } else if let Some(meta) = &m.index {
                if m.size > MAX_IN_MEMORY {
                    return Err(format!("entry `{path}` is too large for an index file"));
                }
                let mut body = Vec::with_capacity(usize::try_from(m.size).unwrap_or(0));
                (&mut entry).take(m.size + 1).read_to_end(&mut body).map_err(read_err)?;
                hasher.update(&body);
                len = body.len() as u64;
                staged.index.push((
                    meta.name.clone(),
                    IndexEntry::found(
                        bytes::Bytes::from(body),
                        meta.upstream_etag.clone(),
                        meta.upstream_last_modified.clone(),
                        // Never later than now: a time from the future would keep the file
                        // fresh forever, never asked for upstream again.
                        meta.fetched_at.min(crate::store::now_secs()),
                    ),
                ));
            } else {
                let dest = staging.map(|s| s.join(format!("{}.{}", m.sha256, staged.crates.len())));
                let mut out = match &dest {
                    Some(d) => Some(BufWriter::new(
                        std::fs::File::create(d).map_err(|e| format!("cannot stage entry `{path}`: {e}"))?,
                    )),
                    None => None,
                };
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = entry.read(&mut buf).map_err(read_err)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    len += n as u64;
                    if let Some(out) = out.as_mut() {
                        out.write_all(&buf[..n])
                            .map_err(|e| format!("cannot stage entry `{path}`: {e}"))?;
                    }
                }
                if let (Some(mut out), Some(dest)) = (out, dest) {
                    out.flush().map_err(|e| format!("cannot stage entry `{path}`: {e}"))?;
                    staged.crates.push(((*m).clone(), dest));
                }
            }
            if len != m.size {
                return Err(format!("entry `{path}` is truncated: {len} of {} bytes", m.size));
            }
            if hex::encode(hasher.finalize()) != m.sha256 {
                return Err(format!("entry `{path}` does not match its SHA-256 in the manifest"));
            }
            staged.bytes += len;
            last = path;
            progress.item(len);
        }
        progress.finish();
    }
    if let Some(missing) = manifest.entries.iter().find(|e| !seen.contains(&e.path)) {
        return Err(format!(
            "entry `{}` is missing (the bundle is truncated or incomplete)",
            missing.path
        ));
    }
    // Reading to the end checks zstd's frame checksum, and that nothing follows.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(|e| format!("it is truncated or damaged after entry `{last}`: {e}"))?;
    Ok(Some((manifest, staged)))
}

/// What [`read_bundle`] gives: the manifest and the staged entries, `None` when stopped, or
/// why the bundle is refused.
type ReadOutcome = Result<Option<(Manifest, Staged)>, String>;

/// A bundle arriving as a stream (an upload to the daemon), read once: verified and staged as
/// it arrives, on a blocking thread that stops after the manifest until the import has checked
/// it ([`Upload::stage`]), so nothing is written for a bundle that is refused at once.
pub struct Upload {
    manifest: Manifest,
    go: Option<std::sync::mpsc::Sender<Gate>>,
    done: Option<tokio::task::JoinHandle<ReadOutcome>>,
}

impl Upload {
    /// Starts reading `reader`; returns once its manifest is read (or the input failed).
    pub async fn start<R: Read + Send + 'static>(reader: R, reporter: Reporter) -> Result<Upload, BundleError> {
        let (manifest_tx, manifest_rx) = tokio::sync::oneshot::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<Gate>();
        let mut done = tokio::task::spawn_blocking(move || {
            let gate = |m: &Manifest| {
                let _ = manifest_tx.send(m.clone());
                go_rx.recv().unwrap_or(Gate::Stop)
            };
            read_bundle(reader, gate, &reporter)
        });
        match manifest_rx.await {
            Ok(manifest) => Ok(Upload {
                manifest,
                go: Some(go),
                done: Some(done),
            }),
            // The input ended or failed before a manifest: the thread says why.
            Err(_) => {
                let why = match (&mut done).await {
                    Ok(Err(why)) => why,
                    Ok(Ok(_)) => "it has no manifest".into(),
                    Err(e) => e.to_string(),
                };
                Err(failure(format!(
                    "the bundle is not usable: {why}; nothing was imported"
                )))
            }
        }
    }

    /// The bundle's manifest (checked as an import checks one).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Lets the reading go on, verifying every entry and staging the `.crate` files under a
    /// new directory of `parent`.
    async fn stage(&mut self, label: &str, parent: &Path) -> Result<(StagingDir, Staged), BundleError> {
        let staging = StagingDir::create(parent, &self.manifest.id)?;
        let (Some(go), Some(done)) = (self.go.take(), self.done.take()) else {
            return Err(failure("the bundle was read already"));
        };
        let _ = go.send(Gate::Stage(Some(staging.0.clone())));
        let read = done
            .await
            .map_err(|e| failure(format!("the import failed: {e}")))?
            .map_err(|why| failure(format!("{label} is refused: {why}; nothing was imported")))?;
        match read {
            Some((_, staged)) => Ok((staging, staged)),
            None => Err(failure("the bundle was not read")),
        }
    }

    /// Ends the upload: one not staged is drained unread (so its sender gets an answer).
    pub async fn finish(mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(Gate::Stop);
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

/// Where an import's bundle comes from.
pub enum Input<'a> {
    /// A file, read after its manifest was checked.
    File(&'a Path),
    /// An upload being read ([`Upload`]).
    Stream(&'a mut Upload),
}

impl Input<'_> {
    async fn stage(
        &mut self,
        label: &str,
        manifest: &Manifest,
        parent: &Path,
        reporter: &Reporter,
    ) -> Result<(StagingDir, Staged), BundleError> {
        match self {
            Input::File(file) => stage(file, label, manifest, parent, reporter).await,
            Input::Stream(upload) => upload.stage(label, parent).await,
        }
    }
}

/// Reads and verifies the whole bundle into a new staging directory under `parent` (removed
/// when the returned guard is dropped). `label` names the bundle in errors.
async fn stage(
    file: &Path,
    label: &str,
    manifest: &Manifest,
    parent: &Path,
    reporter: &Reporter,
) -> Result<(StagingDir, Staged), BundleError> {
    let staging = StagingDir::create(parent, &manifest.id)?;
    let (path, m, dir, reporter) = (file.to_owned(), manifest.clone(), staging.0.clone(), reporter.clone());
    let staged = tokio::task::spawn_blocking(move || read_and_stage(&path, &m, Some(&dir), &reporter))
        .await
        .map_err(|e| failure(format!("the import failed: {e}")))?
        .map_err(|why| failure(format!("{label} is refused: {why}; nothing was imported")))?;
    Ok((staging, staged))
}

/// Verifies a whole bundle file against its manifest (every entry's size and SHA-256, nothing
/// missing, unlisted or repeated, zstd's frame checksum), writing nothing.
pub async fn verify(file: &Path, manifest: &Manifest, reporter: &Reporter) -> Result<(), BundleError> {
    let (path, m, reporter) = (file.to_owned(), manifest.clone(), reporter.clone());
    tokio::task::spawn_blocking(move || read_and_stage(&path, &m, None, &reporter))
        .await
        .map_err(|e| failure(format!("the verification failed: {e}")))?
        .map(|_| ())
        .map_err(|why| failure(format!("{} is damaged: {why}", file.display())))
}

/// Whether a bundle of `manifest` may go into `spec`: a registry of its kind, and (unless the
/// registry was named explicitly, `explicit`) an online proxy of the same upstream. An online
/// proxy would mix another upstream's index files with its own and revalidate them against the
/// wrong upstream; an offline proxy (the air-gapped side) serves what it is given, whatever
/// the connected side proxied.
pub fn check_target(manifest: &Manifest, spec: &RegistrySpec, explicit: bool, label: &str) -> Result<(), BundleError> {
    let reg = &spec.name;
    let kind = |k: RegistryKind| if k == RegistryKind::Hosted { "hosted" } else { "proxy" };
    if manifest.registry.kind != kind(spec.kind) {
        return Err(usage(format!(
            "{label} holds a {} registry; `{reg}` is a {} registry: import it into a registry of its kind",
            manifest.registry.kind,
            kind(spec.kind)
        )));
    }
    if spec.kind == RegistryKind::Proxy && !explicit && !spec.offline && manifest.registry.upstream != spec.upstream {
        let show = |u: &Option<String>| u.clone().unwrap_or_else(|| "crates.io".into());
        return Err(failure(format!(
            "{label} is refused: it was made from a proxy of {}, but `{reg}` proxies {}; pass --registry {reg} to import it anyway; nothing was imported",
            show(&manifest.registry.upstream),
            show(&spec.upstream)
        )));
    }
    Ok(())
}

/// Verifies a bundle completely, then adds its content to proxy registry `reg`, all at once
/// (after [`check_target`]). `max_index_bytes` is the largest index file the proxy accepts.
/// Safe beside a running daemon's readers: the index files appear in one transaction and
/// their copies in memory are dropped.
#[allow(clippy::too_many_arguments)]
pub async fn import_proxy(
    index: &IndexCache,
    crates: &Arc<CrateFiles>,
    max_index_bytes: u64,
    mut input: Input<'_>,
    label: &str,
    manifest: &Manifest,
    reg: &str,
    reporter: &Reporter,
) -> Result<ImportSummary, BundleError> {
    let reg = reg.to_owned();
    let cache_err = |e: crate::cache::index_cache::CacheError| failure(e.0);
    let mut summary = ImportSummary {
        id: manifest.id.clone(),
        registry: reg.clone(),
        ..ImportSummary::default()
    };
    if index.has_bundle(&reg, &manifest.id).map_err(cache_err)? {
        summary.already = true;
        return Ok(summary);
    }
    if let Some(base) = &manifest.base {
        if !index.has_bundle(&reg, base).map_err(cache_err)? {
            return Err(failure(format!(
                "{label} is refused: it is an increment on bundle {base}, which has not been imported into `{reg}`; \
                 import that bundle (and any it builds on) first; nothing was imported"
            )));
        }
    }
    let refused = |why: String| failure(format!("{label} is refused: {why}; nothing was imported"));
    // Room, from the manifest's sizes, before anything is read: a small bundle of highly
    // compressible entries cannot fill memory or the disk before the budgets say no.
    let (mut index_sizes, mut crate_sizes) = (0u64, 0u64);
    for e in &manifest.entries {
        if e.index.is_some() {
            if e.size > max_index_bytes {
                return Err(refused(format!(
                    "entry `{}` is larger than `max_upstream_index_size` ({} bytes)",
                    e.path, max_index_bytes
                )));
            }
            index_sizes = index_sizes.saturating_add(e.size);
        } else {
            crate_sizes = crate_sizes.saturating_add(e.size);
        }
    }
    if crates.disk_bytes().saturating_add(crate_sizes) > crates.budget() {
        return Err(refused(format!(
            "its .crate files ({crate_sizes} bytes) do not fit the crate cache's budget of {} (`[cache] disk`); raise it",
            crates.budget()
        )));
    }
    if index.disk_bytes().saturating_add(index_sizes) > index.disk_budget() {
        return Err(refused(format!(
            "its index files ({index_sizes} bytes) do not fit the index cache's budget of {} (`[cache] index_disk`); raise it",
            index.disk_budget()
        )));
    }
    let (staging, staged) = input.stage(label, manifest, &crates.staging_dir(), reporter).await?;
    // Every .crate against its index line: the bundle's index file, else the one the registry
    // holds (an increment carrying only new .crate files).
    let in_bundle: BTreeMap<&str, &IndexEntry> = staged.index.iter().map(|(n, e)| (n.as_str(), e)).collect();
    let mut held: HashMap<String, Option<Arc<IndexEntry>>> = HashMap::new();
    for (e, _) in &staged.crates {
        let Some(c) = e.krate.as_ref() else {
            return Err(refused(format!(
                "entry `{}` is described wrongly in the manifest",
                e.path
            )));
        };
        let lower = c.name.to_ascii_lowercase();
        let body = match in_bundle.get(lower.as_str()) {
            Some(entry) => Some(entry.body.clone()),
            None => {
                if !held.contains_key(&lower) {
                    let got = index.disk_get(&reg, &lower).await;
                    held.insert(lower.clone(), got);
                }
                held[&lower].as_ref().filter(|e| !e.not_found).map(|e| e.body.clone())
            }
        };
        let Some(body) = body else {
            return Err(refused(format!(
                "entry `{}`: neither the bundle nor registry `{reg}` has the index file of `{}`",
                e.path, c.name
            )));
        };
        match crate::upstream::cached::find_cksum(&body, &c.vers) {
            Some((name, cksum)) if cksum == e.sha256 && name == c.name => {}
            Some(_) => {
                return Err(refused(format!(
                    "entry `{}` does not match the cksum of its index line",
                    e.path
                )))
            }
            None => {
                return Err(refused(format!(
                    "entry `{}`: the index file of `{}` has no version {}",
                    e.path, c.name, c.vers
                )))
            }
        }
    }
    // Room: an import never evicts what it brings (or what was there) to make room.
    let new_crate_bytes: u64 = {
        let mut seen = HashSet::new();
        staged
            .crates
            .iter()
            .filter(|(e, _)| seen.insert(e.sha256.clone()) && crates.lookup(&e.sha256).is_none())
            .map(|(e, _)| e.size)
            .sum()
    };
    if crates.disk_bytes() + new_crate_bytes > crates.budget() {
        return Err(refused(format!(
            "the crate cache would grow to {} bytes, over its budget of {} (`[cache] disk`); raise it",
            crates.disk_bytes() + new_crate_bytes,
            crates.budget()
        )));
    }
    let new_index_bytes: u64 = staged
        .index
        .iter()
        .map(|(n, e)| e.body.len() as u64 + 2 * (reg.len() + n.len()) as u64 + 256)
        .sum();
    if index.disk_bytes() + new_index_bytes > index.disk_budget() {
        return Err(refused(format!(
            "the index cache would grow to about {} bytes, over its budget of {} (`[cache] index_disk`); raise it",
            index.disk_bytes() + new_index_bytes,
            index.disk_budget()
        )));
    }
    // Commit: the .crate files first (nothing names them yet), then the index files and the
    // bundle's id in one transaction.
    summary.index_files = staged.index.len();
    summary.crate_files = staged.crates.len();
    summary.bytes = staged.bytes;
    let done = {
        let (index, crates, reg, id) = (index.clone(), crates.clone(), reg.clone(), manifest.id.clone());
        tokio::task::spawn_blocking(move || -> Result<bool, String> {
            let mut seen = HashSet::new();
            let new: Vec<(String, PathBuf)> = staged
                .crates
                .iter()
                .filter(|(e, _)| seen.insert(e.sha256.clone()) && crates.lookup(&e.sha256).is_none())
                .map(|(e, path)| (e.sha256.clone(), path.clone()))
                .collect();
            crates
                .adopt_many(&new)
                .map_err(|err| format!("cannot move the .crate files into the crate cache: {err}"))?;
            index.import_bundle(&reg, &staged.index, &id).map_err(|e| e.0)
        })
        .await
        .map_err(|e| failure(format!("the import failed: {e}")))?
        .map_err(|e| {
            failure(format!(
                "the import failed: {e}; the registry's index files are unchanged"
            ))
        })?
    };
    drop(staging);
    summary.already = !done;
    Ok(summary)
}

/// The import of a hosted registry's bundle (after [`check_target`]): verified and staged
/// under `staging_parent`, blobs into the store, then the crates replaced and the bundle's
/// marker recorded in one transaction of the store. The caller drops what it cached of the
/// crates in [`ImportSummary::crates`].
#[allow(clippy::too_many_arguments)]
pub async fn import_hosted(
    store: &crate::store::PrivateStore,
    staging_parent: &Path,
    max_crate_bytes: u64,
    mut input: Input<'_>,
    label: &str,
    manifest: &Manifest,
    reg: &str,
    reporter: &Reporter,
) -> Result<ImportSummary, BundleError> {
    let store_err = |e: crate::store::StoreError| failure(e.to_string());
    let marker = |id: &str| format!("bundle:{reg}:{id}");
    let mut summary = ImportSummary {
        id: manifest.id.clone(),
        registry: reg.to_owned(),
        ..ImportSummary::default()
    };
    if store.meta.has_marker(&marker(&manifest.id)).await.map_err(store_err)? {
        summary.already = true;
        return Ok(summary);
    }
    if let Some(base) = &manifest.base {
        if !store.meta.has_marker(&marker(base)).await.map_err(store_err)? {
            return Err(failure(format!(
                "{label} is refused: it is an increment on bundle {base}, which has not been imported into `{reg}`; \
                 import that bundle (and any it builds on) first; nothing was imported"
            )));
        }
    }
    let refused = |why: String| failure(format!("{label} is refused: {why}; nothing was imported"));
    // Sizes from the manifest, before anything is read: a hosted registry's bundle carries
    // no index files, and no `.crate` larger than a publish may send (`max_crate_size`), so
    // a small bundle of compressible entries cannot fill memory or the disk first.
    for e in &manifest.entries {
        if e.index.is_some() {
            return Err(refused(format!(
                "entry `{}` is an index file, which a hosted registry's bundle never carries",
                e.path
            )));
        }
        if e.krate.is_some() && e.size > max_crate_bytes {
            return Err(refused(format!(
                "entry `{}` is larger than `max_crate_size` ({max_crate_bytes} bytes)",
                e.path
            )));
        }
    }
    // Under a temp directory the daemon empties when it starts (the blob store's, or the crate
    // cache's through the daemon),
    // so an import that was killed leaves nothing behind for long.
    let (_staging, staged) = input.stage(label, manifest, staging_parent, reporter).await?;
    let records: Records = match &staged.records {
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| refused(format!("entry `{RECORDS}` is not a list of crate records: {e}")))?,
        None if staged.crates.is_empty() => Records {
            crates: Vec::new(),
            users: Vec::new(),
        },
        None => return Err(refused(format!("entry `{RECORDS}` is missing"))),
    };
    // Users and owners: valid logins, and every owner a user the bundle carries or that
    // exists here (a login nobody has yet would hand the crate to whoever takes it later).
    for u in &records.users {
        if crate::registry::admin::check_login(&u.login).is_err() {
            return Err(refused(format!(
                "entry `{RECORDS}` names an invalid user `{}`",
                u.login
            )));
        }
    }
    for c in &records.crates {
        if c.owners.is_empty() {
            return Err(refused(format!("entry `{RECORDS}`: crate `{}` has no owner", c.name)));
        }
        for o in &c.owners {
            let carried = records.users.iter().any(|u| u.login == *o);
            if !carried && store.meta.get_user(o).await.map_err(store_err)?.is_none() {
                return Err(refused(format!(
                    "entry `{RECORDS}`: owner `{o}` of crate `{}` is neither a user in the bundle nor here",
                    c.name
                )));
            }
        }
    }
    // Every .crate is one of the records' versions, and every version's .crate is in the
    // bundle or already in the store.
    let mut cksums: HashMap<(String, String), String> = HashMap::new();
    for c in &records.crates {
        if !is_lookup_name(&c.name) {
            return Err(refused(format!(
                "entry `{RECORDS}` names an invalid crate `{}`",
                c.name
            )));
        }
        for v in &c.versions {
            if v.line.name != c.name
                || !crate::store::is_blob_name(&v.line.cksum)
                || crate::index::name::validate_version(&v.line.vers).is_err()
            {
                return Err(refused(format!(
                    "entry `{RECORDS}`: version {} of `{}` is malformed",
                    v.line.vers, c.name
                )));
            }
            cksums.insert((c.name.clone(), v.line.vers.clone()), v.line.cksum.clone());
        }
    }
    let mut carried = HashSet::new();
    for (e, _) in &staged.crates {
        let Some(c) = e.krate.as_ref() else {
            return Err(refused(format!(
                "entry `{}` is described wrongly in the manifest",
                e.path
            )));
        };
        match cksums.get(&(c.name.clone(), c.vers.clone())) {
            Some(cksum) if *cksum == e.sha256 => {
                carried.insert(e.sha256.clone());
            }
            Some(_) => {
                return Err(refused(format!(
                    "entry `{}` does not match the cksum of its version in `{RECORDS}`",
                    e.path
                )))
            }
            None => return Err(refused(format!("entry `{}` is not a version in `{RECORDS}`", e.path))),
        }
    }
    for ((name, vers), cksum) in &cksums {
        if !carried.contains(cksum) && !store.blobs.exists(cksum).await.map_err(store_err)? {
            return Err(refused(format!(
                "`{name}` {vers}: its .crate is neither in the bundle nor in the store"
            )));
        }
    }
    // Published versions never change: a crate that is here already must keep every version
    // it has, with the same bytes (a bundle restores and adds; it never rolls back).
    for c in &records.crates {
        let Some(have) = store
            .meta
            .get_crate(reg, &crate::index::canonical_name(&c.name))
            .await
            .map_err(store_err)?
        else {
            continue;
        };
        if have.name != c.name {
            return Err(refused(format!(
                "crate `{}` is here as `{}`; a bundle cannot rename it",
                c.name, have.name
            )));
        }
        for v in &have.versions {
            let kept = c
                .versions
                .iter()
                .any(|b| b.line.vers == v.line.vers && b.line.cksum == v.line.cksum);
            if !kept {
                return Err(refused(format!(
                    "`{}` {} is published here and the bundle would drop or change it; published versions never change",
                    c.name, v.line.vers
                )));
            }
        }
    }
    // Commit: blobs first (nothing names them yet), then the crates with the marker.
    for (e, path) in &staged.crates {
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|err| failure(format!("cannot read the staged `{}`: {err}", e.path)))?;
        let (sha, _) = store.blobs.put_stream(&mut f).await.map_err(store_err)?;
        if sha != e.sha256 {
            return Err(failure(format!(
                "the staged `{}` changed on disk; the registry is unchanged",
                e.path
            )));
        }
    }
    summary.crate_files = staged.crates.len();
    summary.bytes = staged.bytes;
    let done = store
        .meta
        .restore_crates(reg, &records.crates, &records.users, &marker(&manifest.id))
        .await
        .map_err(|e| failure(format!("the import failed: {e}; the registry is unchanged")))?;
    summary.already = !done;
    if done {
        summary.crates = records.crates.iter().map(|c| c.name.clone()).collect();
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_checks_its_entries() {
        let good = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            id: "ab".repeat(16),
            base: None,
            created: "2026-01-01T00:00:00Z".into(),
            registry: Source {
                name: "p".into(),
                kind: "proxy".into(),
                upstream: None,
            },
            entries: vec![
                Entry {
                    path: format!("index/{}", index_path("serde")),
                    size: 1,
                    sha256: "a".repeat(64),
                    index: Some(IndexMeta {
                        name: "serde".into(),
                        upstream_etag: None,
                        upstream_last_modified: None,
                        fetched_at: 1,
                    }),
                    krate: None,
                },
                Entry {
                    path: "crates/Serde/1.0.0+b.crate".into(),
                    size: 1,
                    sha256: "b".repeat(64),
                    index: None,
                    krate: Some(CrateMeta {
                        name: "Serde".into(),
                        vers: "1.0.0+b".into(),
                    }),
                },
            ],
            inherited: vec![],
        };
        let roundtrip = |m: &Manifest| {
            let json = serde_json::to_vec(m).unwrap();
            let mut b = tar::Builder::new(Vec::new());
            b.append_data(&mut tar_header(json.len() as u64), MANIFEST, json.as_slice())
                .unwrap();
            let bytes = b.into_inner().unwrap();
            let mut a = tar::Archive::new(bytes.as_slice());
            let mut e = a.entries().unwrap().next().unwrap().unwrap();
            parse_manifest(&mut e)
        };
        assert_eq!(roundtrip(&good).unwrap(), good);
        let mut bad = good.clone();
        bad.entries[1].path = "crates/../x".into();
        assert!(roundtrip(&bad).unwrap_err().contains("described wrongly"));
        let mut bad = good.clone();
        bad.entries.push(good.entries[0].clone());
        assert!(roundtrip(&bad).unwrap_err().contains("listed twice"));
        let mut bad = good.clone();
        bad.format_version = 2;
        assert!(roundtrip(&bad).unwrap_err().contains("format version 2"));
        let mut bad = good.clone();
        bad.entries[0].sha256 = "x".into();
        assert!(roundtrip(&bad).unwrap_err().contains("SHA-256"));
        // Ids name staging directories and markers: only what export makes.
        let mut bad = good.clone();
        bad.id = "x/../../../../../tmp/evil".into();
        assert!(roundtrip(&bad).unwrap_err().contains("invalid bundle id"));
        let mut bad = good.clone();
        bad.base = Some("../up".into());
        assert!(roundtrip(&bad).unwrap_err().contains("invalid base bundle id"));
        // Index metadata must be what the daemon would have stored and can send again.
        let mut bad = good.clone();
        if let Some(i) = bad.entries[0].index.as_mut() {
            i.upstream_etag = Some("\"a\"\r\nX-Evil: 1".into());
        }
        assert!(roundtrip(&bad).unwrap_err().contains("described wrongly"));
        let mut bad = good.clone();
        if let Some(i) = bad.entries[0].index.as_mut() {
            i.name = "Serde".into();
        }
        bad.entries[0].path = format!("index/{}", index_path("Serde"));
        assert!(roundtrip(&bad).unwrap_err().contains("described wrongly"));
        let mut bad = good;
        bad.entries[1].size = u64::MAX;
        assert!(roundtrip(&bad).unwrap_err().contains("larger than any entry"));
    }
}
