//! A programmable fake *sparse registry* (the upstream a caching proxy talks to), served
//! in-process on `127.0.0.1:<ephemeral port>` with hyper (HTTP/1.1 and h2c prior knowledge).
//!
//! * `GET /index/config.json` → `{"dl":"http://127.0.0.1:PORT/dl/{crate}/{version}/download","api":"http://127.0.0.1:PORT"}`
//! * `GET /index/<sparse path>` → the index file (with `ETag` / `Last-Modified` and `304`
//!   handling while validators are on), `404` when unknown.
//! * `GET /dl/{crate}/{version}/download` → the `.crate` bytes (`application/octet-stream`,
//!   `Content-Length`, never `Content-Encoding`), `404` when unknown.
//!
//! The server runs on its **own** tokio runtime (a dedicated thread), so it keeps serving while
//! the test thread blocks (e.g. on a `cargo build` child process or a blocking HTTP helper).
//! Both async (`start`, `go_down`, ...) and blocking (`start_blocking`, `go_down_blocking`, ...)
//! entry points exist; the blocking ones must not be called from inside an async context.
//!
//! Crates to serve are built with [`Package`], which produces real, compilable `.crate` files.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RespBody = BoxBody<Bytes, BoxError>;

/// Chunk size of slow (`set_slow_body`) download bodies.
const SLOW_CHUNK: usize = 16 * 1024;

/// How long `come_back` keeps retrying to re-bind the old port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Package builder
// ---------------------------------------------------------------------------------------------

/// A real, compilable crate built in memory: `.crate` bytes, checksum and index line.
///
/// The tarball is deterministic (fixed mtime/mode, GNU headers, fixed entry order and
/// deterministic padding), so the same builder calls always give the same bytes and checksum.
#[derive(Debug, Clone)]
pub struct Package {
    name: String,
    vers: String,
    /// `(name, req as written)`.
    deps: Vec<(String, String)>,
    /// Extra/override files in insertion order (a later call for the same path replaces it).
    files: Vec<(String, Vec<u8>)>,
    features: Vec<(String, Vec<String>)>,
    padding: usize,
    yanked: bool,
    cache: OnceLock<Vec<u8>>,
}

impl Package {
    /// `name`/`vers` with the default `src/lib.rs`
    /// (`pub fn hello() -> &'static str { "<name>-<vers>" }`).
    pub fn new(name: &str, vers: &str) -> Package {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "invalid crate name {name:?}"
        );
        semver::Version::parse(vers).unwrap_or_else(|e| panic!("invalid version {vers:?}: {e}"));
        Package {
            name: name.to_owned(),
            vers: vers.to_owned(),
            deps: Vec::new(),
            files: Vec::new(),
            features: Vec::new(),
            padding: 0,
            yanked: false,
            cache: OnceLock::new(),
        }
    }

    /// A normal dependency on `name` (same registry: index `registry: null`, plain
    /// `name = "req"` in the manifest).
    pub fn dep(mut self, name: &str, req: &str) -> Package {
        semver::VersionReq::parse(req).unwrap_or_else(|e| panic!("invalid requirement {req:?}: {e}"));
        self.deps.push((name.to_owned(), req.to_owned()));
        self.cache = OnceLock::new();
        self
    }

    /// An extra file, or an override of `src/lib.rs` / `Cargo.toml`.
    pub fn file(self, path: &str, contents: &str) -> Package {
        self.file_bytes(path, contents.as_bytes())
    }

    /// [`Package::file`] with binary contents.
    pub fn file_bytes(mut self, path: &str, contents: &[u8]) -> Package {
        assert!(
            !path.starts_with('/') && !path.split('/').any(|c| c.is_empty() || c == "." || c == ".."),
            "bad file path {path:?}"
        );
        self.files.retain(|(p, _)| p != path);
        self.files.push((path.to_owned(), contents.to_vec()));
        self.cache = OnceLock::new();
        self
    }

    /// Adds an incompressible file (`padding.bin`) of exactly `bytes` bytes (deterministic
    /// pseudo-random content seeded from name and version), so the `.crate` is about that big.
    pub fn size_padding(mut self, bytes: usize) -> Package {
        self.padding = bytes;
        self.cache = OnceLock::new();
        self
    }

    /// A `[features]` entry (also in the index line's `features`).
    pub fn feature(mut self, name: &str, enables: &[&str]) -> Package {
        self.features.retain(|(n, _)| n != name);
        self.features
            .push((name.to_owned(), enables.iter().map(|s| (*s).to_owned()).collect()));
        self.cache = OnceLock::new();
        self
    }

    /// Marks the index line as yanked (does not change the `.crate`).
    pub fn yanked(mut self, yanked: bool) -> Package {
        self.yanked = yanked;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn vers(&self) -> &str {
        &self.vers
    }

    /// The generated `Cargo.toml` (unless overridden with `file("Cargo.toml", ..)`).
    pub fn manifest(&self) -> String {
        let mut m = format!(
            "[package]\nname = \"{}\"\nversion = \"{}\"\nedition = \"2021\"\n\
             description = \"fake upstream test crate {}\"\nlicense = \"MIT\"\n",
            self.name, self.vers, self.name
        );
        if !self.deps.is_empty() {
            m.push_str("\n[dependencies]\n");
            for (name, req) in &self.deps {
                m.push_str(&format!("\"{name}\" = \"{req}\"\n"));
            }
        }
        if !self.features.is_empty() {
            m.push_str("\n[features]\n");
            for (name, enables) in &self.features {
                let list: Vec<String> = enables.iter().map(|e| format!("\"{e}\"")).collect();
                m.push_str(&format!("\"{name}\" = [{}]\n", list.join(", ")));
            }
        }
        m
    }

    /// The entries of the tarball (paths relative to `{name}-{vers}/`), in archive order.
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        let find = |p: &str| self.files.iter().find(|(path, _)| path == p).map(|(_, c)| c.clone());
        let mut out = vec![
            (
                "Cargo.toml".to_owned(),
                find("Cargo.toml").unwrap_or_else(|| self.manifest().into_bytes()),
            ),
            (
                "src/lib.rs".to_owned(),
                find("src/lib.rs").unwrap_or_else(|| {
                    format!("pub fn hello() -> &'static str {{ \"{}-{}\" }}\n", self.name, self.vers).into_bytes()
                }),
            ),
        ];
        for (path, contents) in &self.files {
            if path != "Cargo.toml" && path != "src/lib.rs" {
                out.push((path.clone(), contents.clone()));
            }
        }
        if self.padding > 0 {
            out.push(("padding.bin".to_owned(), self.padding_bytes()));
        }
        out
    }

    fn padding_bytes(&self) -> Vec<u8> {
        // FNV-1a of "name-vers" seeds a xorshift64* generator.
        let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
        for b in format!("{}-{}", self.name, self.vers).bytes() {
            seed ^= u64::from(b);
            seed = seed.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(self.padding + 8);
        while out.len() < self.padding {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(self.padding);
        out
    }

    /// The `.crate` file: a deterministic gzip'd tar with every entry under `{name}-{vers}/`.
    pub fn crate_bytes(&self) -> Vec<u8> {
        self.cache.get_or_init(|| self.build_tarball()).clone()
    }

    fn build_tarball(&self) -> Vec<u8> {
        // Padding is incompressible anyway; the fast level keeps multi-MB crates quick to build
        // in debug builds. Either level is deterministic.
        let level = if self.padding >= 64 * 1024 {
            Compression::fast()
        } else {
            Compression::best()
        };
        let gz = GzEncoder::new(Vec::new(), level);
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        for (path, contents) in self.entries() {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1_153_704_088);
            header.set_entry_type(tar::EntryType::Regular);
            let full = format!("{}-{}/{path}", self.name, self.vers);
            tar.append_data(&mut header, &full, contents.as_slice())
                .unwrap_or_else(|e| panic!("append {full} to tarball: {e}"));
        }
        let gz = tar.into_inner().expect("finish tar");
        gz.finish().expect("finish gzip")
    }

    /// Lowercase hex SHA-256 of [`Package::crate_bytes`].
    pub fn cksum(&self) -> String {
        hex::encode(Sha256::digest(self.crate_bytes()))
    }

    /// The index line as JSON (every dependency field spelled out).
    pub fn index_json(&self) -> Value {
        let deps: Vec<Value> = self
            .deps
            .iter()
            .map(|(name, req)| {
                // Normalized the way cargo writes requirements (`1.0` → `^1.0`).
                let req = semver::VersionReq::parse(req).expect("validated in dep()").to_string();
                json!({
                    "name": name,
                    "req": req,
                    "features": [],
                    "optional": false,
                    "default_features": true,
                    "target": null,
                    "kind": "normal",
                })
            })
            .collect();
        let mut features = serde_json::Map::new();
        for (name, enables) in &self.features {
            features.insert(name.clone(), json!(enables));
        }
        json!({
            "name": self.name,
            "vers": self.vers,
            "deps": deps,
            "cksum": self.cksum(),
            "features": features,
            "yanked": self.yanked,
            // As crates.io writes format-1 lines: no `v`, no null `links`, a `pubtime`.
            "pubtime": "2024-01-01T00:00:00Z",
        })
    }

    /// The index line (one line of JSON, no trailing newline).
    pub fn index_line(&self) -> String {
        self.index_json().to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Fake upstream
// ---------------------------------------------------------------------------------------------

/// One request as the fake upstream saw it (recorded on arrival).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Request path as sent (not percent-decoded), without the query.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub version: String,
    /// Header names lowercased, values lossily decoded.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct IndexFile {
    body: Bytes,
    /// Unix seconds.
    last_modified: u64,
}

struct State {
    addr: SocketAddr,
    started: u64,
    shared_root: Option<PathBuf>,
    /// Overlay of index files by sparse path (`3/f/foo`), shadowing the shared index.
    files: Mutex<HashMap<String, IndexFile>>,
    /// `(name, vers)` exactly as in the index → `.crate` bytes.
    downloads: Mutex<HashMap<(String, String), Bytes>>,
    /// Sparse paths removed by [`FakeUpstream::remove_crate`]: 404 even if the shared index
    /// has them.
    removed: Mutex<std::collections::HashSet<String>>,
    hits: Mutex<HashMap<String, usize>>,
    log: Mutex<Vec<RecordedRequest>>,
    total: AtomicUsize,
    index: AtomicUsize,
    config: AtomicUsize,
    download: AtomicUsize,
    conditional: AtomicUsize,
    latency: Mutex<Duration>,
    status_override: Mutex<Option<u16>>,
    /// `(remaining, status)`.
    fail_next: Mutex<(usize, u16)>,
    retry_after: Mutex<Option<u32>>,
    validators: AtomicBool,
    drop_mid_body: AtomicBool,
    corrupt: AtomicBool,
    slow_body: Mutex<Option<Duration>>,
    /// TLS mode: the acceptor (`https://` URLs everywhere).
    tls: Option<tokio_rustls::TlsAcceptor>,
    faults: Mutex<Faults>,
    streamed: Arc<std::sync::atomic::AtomicU64>,
    /// Requests being handled now (until the response head is sent), and the most at once.
    concurrent: AtomicUsize,
    max_concurrent: AtomicUsize,
}

/// Counts one request in `State::concurrent` until dropped.
struct Concurrent<'a>(&'a State);

impl<'a> Concurrent<'a> {
    fn enter(state: &'a State) -> Self {
        let now = state.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_concurrent.fetch_max(now, Ordering::SeqCst);
        Concurrent(state)
    }
}

impl Drop for Concurrent<'_> {
    fn drop(&mut self) {
        self.0.concurrent.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Fault modes added for the fault-injection suite (all off by default).
#[derive(Debug, Clone, Default)]
struct Faults {
    /// Index files and downloads send one byte per interval.
    trickle: Option<Duration>,
    /// Downloads announce `Content-Length` = real length + delta (the body stays the real one).
    length_delta: i64,
    /// Downloads announce this `Content-Length` and stream zeros until the client goes away.
    huge_length: Option<u64>,
    /// Downloads send no `Content-Length` (chunked).
    no_length: bool,
    /// Index files are `(bytes, announce the length)` of repeated valid lines, streamed.
    huge_index: Option<(u64, bool)>,
    /// Every index file and download answers `302 Location: <this>`.
    redirect: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The dedicated runtime thread.
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The accept loop of one "up" period.
struct Running {
    shutdown: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

/// A fake sparse registry on 127.0.0.1. Dropping it stops the server and its runtime.
pub struct FakeUpstream {
    state: Arc<State>,
    addr: SocketAddr,
    /// TLS mode: the PEM of the private CA that signed the server certificate.
    ca_pem: Option<String>,
    rt: RuntimeThread,
    server: Option<Running>,
    /// While down: the port, held so that no other socket takes it before
    /// [`come_back`](Self::come_back) (connections to it are refused meanwhile).
    parked: Option<super::ports::HeldPort>,
}

impl FakeUpstream {
    /// An empty registry (only `config.json`).
    pub async fn start() -> FakeUpstream {
        Self::launch(None)
    }

    /// Also serves every file under `../shared/data/index/` (relative to the package root),
    /// read lazily from disk and served byte for byte.
    pub async fn start_with_shared_index() -> FakeUpstream {
        Self::launch(Some(Self::shared_index_dir()))
    }

    /// [`FakeUpstream::start`] for synchronous tests.
    pub fn start_blocking() -> FakeUpstream {
        Self::launch(None)
    }

    /// [`FakeUpstream::start_with_shared_index`] for synchronous tests.
    pub fn start_with_shared_index_blocking() -> FakeUpstream {
        Self::launch(Some(Self::shared_index_dir()))
    }

    /// `$CARGO_MANIFEST_DIR/../shared/data/index`.
    pub fn shared_index_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/index")
    }

    /// An empty registry served over TLS (`https://127.0.0.1:PORT`, HTTP/2 or HTTP/1.1 by
    /// ALPN) with a certificate signed by a private CA generated for it: see
    /// [`FakeUpstream::ca_pem`].
    pub fn start_tls_blocking() -> FakeUpstream {
        Self::launch_with(None, Some(TlsMode::generate()))
    }

    /// The private CA's certificate (PEM), in TLS mode.
    pub fn ca_pem(&self) -> &str {
        self.ca_pem.as_deref().expect("not a TLS fake upstream")
    }

    fn launch(shared_root: Option<PathBuf>) -> FakeUpstream {
        Self::launch_with(shared_root, None)
    }

    fn launch_with(shared_root: Option<PathBuf>, tls: Option<TlsMode>) -> FakeUpstream {
        if let Some(root) = &shared_root {
            assert!(root.is_dir(), "shared index directory {} is missing", root.display());
        }
        let (htx, hrx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-upstream".to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("fake-upstream-worker")
                    .enable_all()
                    .build()
                    .expect("build fake upstream runtime");
                htx.send(rt.handle().clone()).expect("send runtime handle");
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn fake upstream thread");
        let handle = hrx.recv().expect("fake upstream runtime failed to start");

        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            addr,
            started: now_secs(),
            shared_root,
            files: Mutex::new(HashMap::new()),
            downloads: Mutex::new(HashMap::new()),
            removed: Mutex::new(std::collections::HashSet::new()),
            hits: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            total: AtomicUsize::new(0),
            index: AtomicUsize::new(0),
            config: AtomicUsize::new(0),
            download: AtomicUsize::new(0),
            conditional: AtomicUsize::new(0),
            latency: Mutex::new(Duration::ZERO),
            status_override: Mutex::new(None),
            fail_next: Mutex::new((0, 500)),
            retry_after: Mutex::new(None),
            validators: AtomicBool::new(true),
            drop_mid_body: AtomicBool::new(false),
            corrupt: AtomicBool::new(false),
            slow_body: Mutex::new(None),
            concurrent: AtomicUsize::new(0),
            max_concurrent: AtomicUsize::new(0),
            tls: tls.as_ref().map(|t| t.acceptor.clone()),
            faults: Mutex::new(Faults::default()),
            streamed: Arc::default(),
        });
        let mut up = FakeUpstream {
            state,
            addr,
            ca_pem: tls.map(|t| t.ca_pem),
            rt: RuntimeThread {
                handle,
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            server: None,
            parked: None,
        };
        up.serve(listener);
        up
    }

    fn serve(&mut self, listener: StdTcpListener) {
        listener.set_nonblocking(true).expect("set_nonblocking");
        let listener = {
            let _guard = self.rt.handle.enter();
            tokio::net::TcpListener::from_std(listener).expect("register listener")
        };
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        self.rt
            .handle
            .spawn(accept_loop(listener, self.state.clone(), shutdown_rx, done_tx));
        self.server = Some(Running {
            shutdown: shutdown_tx,
            done: done_rx,
        });
    }

    // -- addresses ----------------------------------------------------------------------------

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http` or, in TLS mode, `https`.
    pub fn scheme(&self) -> &'static str {
        self.state.scheme()
    }

    /// `http://127.0.0.1:PORT` (`https://` in TLS mode)
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.addr)
    }

    /// `sparse+http://127.0.0.1:PORT/index/` (`https://` in TLS mode)
    pub fn index_url(&self) -> String {
        format!("sparse+{}/index/", self.base_url())
    }

    /// The `dl` template of `config.json`:
    /// `http://127.0.0.1:PORT/dl/{crate}/{version}/download`.
    pub fn dl_base(&self) -> String {
        format!("{}/dl/{{crate}}/{{version}}/download", self.base_url())
    }

    /// The request path of `name`'s index file, e.g. `/index/3/f/foo` (for [`FakeUpstream::hits`]).
    pub fn index_path(name: &str) -> String {
        format!("/index/{}", cargohold::index::index_path(name))
    }

    /// Full URL of `name`'s index file.
    pub fn index_file_url(&self, name: &str) -> String {
        format!("{}{}", self.base_url(), Self::index_path(name))
    }

    /// The request path of a download, e.g. `/dl/foo/1.0.0/download`.
    pub fn download_path(name: &str, vers: &str) -> String {
        format!("/dl/{name}/{vers}/download")
    }

    /// Full download URL (the expanded `dl` template).
    pub fn download_url(&self, name: &str, vers: &str) -> String {
        format!("{}{}", self.base_url(), Self::download_path(name, vers))
    }

    // -- contents -----------------------------------------------------------------------------

    /// Publishes `pkg`: appends its index line and keeps its bytes for download.
    pub fn add_crate(&self, pkg: &Package) {
        self.add_download(pkg.name(), pkg.vers(), pkg.crate_bytes());
        self.add_raw_line(pkg.name(), &pkg.index_line());
    }

    /// Makes `bytes` downloadable as `name`/`vers` without touching the index.
    pub fn add_download(&self, name: &str, vers: &str, bytes: Vec<u8>) {
        lock(&self.state.downloads).insert((name.to_owned(), vers.to_owned()), Bytes::from(bytes));
    }

    /// Appends a raw line (a newline is added) to `name`'s index file, creating it if needed
    /// (starting from the shared index's copy when there is one).
    pub fn add_raw_line(&self, name: &str, line: &str) {
        self.modify_index(name, |body| {
            if !body.is_empty() && !body.ends_with(b"\n") {
                body.push(b'\n');
            }
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        });
    }

    /// Replaces `name`'s index file with `body` verbatim.
    pub fn set_index_file(&self, name: &str, body: &[u8]) {
        self.modify_index(name, |b| *b = body.to_vec());
    }

    /// Takes `name` down: its index file answers 404 from now on (also when the shared index
    /// has it) and its `.crate` files are no longer downloadable, as a registry does when it
    /// removes a malicious crate. Adding a line or file for it later brings it back.
    pub fn remove_crate(&self, name: &str) {
        let path = cargohold::index::index_path(name);
        lock(&self.state.files).remove(&path);
        lock(&self.state.removed).insert(path);
        lock(&self.state.downloads).retain(|(n, _), _| !n.eq_ignore_ascii_case(name));
    }

    /// Removes the line(s) of `name` whose `vers` is `vers` (other lines stay byte-identical)
    /// and makes that version's `.crate` no longer downloadable. Panics when there is no such
    /// line.
    pub fn remove_version(&self, name: &str, vers: &str) {
        self.modify_index(name, |body| {
            let text = String::from_utf8(std::mem::take(body)).expect("index file is not UTF-8");
            let mut found = false;
            let mut out = String::with_capacity(text.len());
            for seg in text.split_inclusive('\n') {
                let line = seg.strip_suffix('\n').unwrap_or(seg);
                match serde_json::from_str::<Value>(line) {
                    Ok(v) if v["vers"].as_str() == Some(vers) => found = true,
                    _ => out.push_str(seg),
                }
            }
            assert!(found, "remove_version: no line for {name} {vers}");
            *body = out.into_bytes();
        });
        lock(&self.state.downloads).remove(&(name.to_owned(), vers.to_owned()));
    }

    /// Sets `yanked` on the line(s) of `name` whose `vers` is `vers` (other lines stay
    /// byte-identical). Panics when there is no such line.
    pub fn set_yanked(&self, name: &str, vers: &str, yanked: bool) {
        self.modify_index(name, |body| {
            let text = String::from_utf8(std::mem::take(body)).expect("index file is not UTF-8");
            let mut found = false;
            let mut out = String::with_capacity(text.len() + 16);
            for seg in text.split_inclusive('\n') {
                let (line, nl) = match seg.strip_suffix('\n') {
                    Some(l) => (l, "\n"),
                    None => (seg, ""),
                };
                match serde_json::from_str::<Value>(line) {
                    Ok(mut v) if v["vers"].as_str() == Some(vers) => {
                        v["yanked"] = Value::Bool(yanked);
                        found = true;
                        out.push_str(&v.to_string());
                    }
                    _ => out.push_str(line),
                }
                out.push_str(nl);
            }
            assert!(found, "set_yanked: no line for {name} {vers}");
            *body = out.into_bytes();
        });
    }

    /// The current body of `name`'s index file (overlay, else shared index), if any.
    pub fn index_body(&self, name: &str) -> Option<Vec<u8>> {
        let path = cargohold::index::index_path(name);
        if let Some(f) = lock(&self.state.files).get(&path) {
            return Some(f.body.to_vec());
        }
        self.state.read_shared_sync(&path).map(|f| f.body.to_vec())
    }

    fn modify_index(&self, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let path = cargohold::index::index_path(name);
        let gone = lock(&self.state.removed).remove(&path);
        let mut files = lock(&self.state.files);
        let (mut body, prev_lm) = match files.get(&path) {
            Some(file) => (file.body.to_vec(), file.last_modified),
            None => match self.state.read_shared_sync(&path).filter(|_| !gone) {
                Some(file) => (file.body.to_vec(), file.last_modified),
                None => (Vec::new(), 0),
            },
        };
        f(&mut body);
        // Strictly increasing, so `If-Modified-Since` never hides a change made within the
        // same second (Last-Modified may therefore run a few seconds ahead of the clock).
        let last_modified = now_secs().max(prev_lm + 1);
        files.insert(
            path,
            IndexFile {
                body: Bytes::from(body),
                last_modified,
            },
        );
    }

    // -- request counting ---------------------------------------------------------------------

    /// Requests whose path is exactly `path` (e.g. `/index/3/f/foo`, `/dl/foo/1.0.0/download`).
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.state.hits).get(path).copied().unwrap_or(0)
    }

    /// Requests for index files under `/index/` (excluding `config.json`, see
    /// [`FakeUpstream::config_hits`]).
    pub fn index_hits(&self) -> usize {
        self.state.index.load(Ordering::SeqCst)
    }

    /// Requests for `/index/config.json`.
    pub fn config_hits(&self) -> usize {
        self.state.config.load(Ordering::SeqCst)
    }

    /// Requests under `/dl/`.
    pub fn download_hits(&self) -> usize {
        self.state.download.load(Ordering::SeqCst)
    }

    /// Every request, whatever its path or outcome.
    pub fn total_hits(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Requests that carried `If-None-Match` or `If-Modified-Since`.
    pub fn conditional_hits(&self) -> usize {
        self.state.conditional.load(Ordering::SeqCst)
    }

    /// Every request so far (since the last [`FakeUpstream::reset_hits`]), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.log).clone()
    }

    /// Zeroes every counter and clears the request log.
    pub fn reset_hits(&self) {
        lock(&self.state.hits).clear();
        lock(&self.state.log).clear();
        for c in [
            &self.state.total,
            &self.state.index,
            &self.state.config,
            &self.state.download,
            &self.state.conditional,
        ] {
            c.store(0, Ordering::SeqCst);
        }
    }

    // -- chaos knobs --------------------------------------------------------------------------

    /// The most requests handled at once (each counted from arrival to its response head,
    /// so latency from [`FakeUpstream::set_latency`] counts) since start or the last
    /// [`FakeUpstream::reset_max_concurrent`].
    pub fn max_concurrent(&self) -> usize {
        self.state.max_concurrent.load(Ordering::SeqCst)
    }

    /// Restarts [`FakeUpstream::max_concurrent`] from the requests in progress now.
    pub fn reset_max_concurrent(&self) {
        let now = self.state.concurrent.load(Ordering::SeqCst);
        self.state.max_concurrent.store(now, Ordering::SeqCst);
    }

    /// Delay before the response headers of every request.
    pub fn set_latency(&self, d: Duration) {
        *lock(&self.state.latency) = d;
    }

    /// Every request answers `s` with a small text body (`None` turns this off). Checked after
    /// [`FakeUpstream::fail_next`].
    pub fn set_status_override(&self, s: Option<u16>) {
        if let Some(s) = s {
            StatusCode::from_u16(s).expect("valid status code");
        }
        *lock(&self.state.status_override) = s;
    }

    /// The next `n` requests answer `status` (replaces any pending `fail_next`).
    pub fn fail_next(&self, n: usize, status: u16) {
        StatusCode::from_u16(status).expect("valid status code");
        *lock(&self.state.fail_next) = (n, status);
    }

    /// Adds `Retry-After: secs` to the forced failures of `fail_next` / `set_status_override`.
    pub fn set_retry_after(&self, secs: Option<u32>) {
        *lock(&self.state.retry_after) = secs;
    }

    /// On (default): `ETag` + `Last-Modified` and 304s; off: neither header, never 304.
    pub fn set_validators(&self, on: bool) {
        self.state.validators.store(on, Ordering::SeqCst);
    }

    /// Downloads send the full `Content-Length`, half the body, then abort the connection
    /// (HTTP/2: reset the stream).
    pub fn set_drop_mid_body(&self, on: bool) {
        self.state.drop_mid_body.store(on, Ordering::SeqCst);
    }

    /// Downloads serve the same number of bytes, every byte inverted (checksum mismatch).
    pub fn set_corrupt_downloads(&self, on: bool) {
        self.state.corrupt.store(on, Ordering::SeqCst);
    }

    /// Downloads stream in 16 KiB chunks with `chunk_delay` between chunks (`None`: one piece).
    pub fn set_slow_body(&self, chunk_delay: Option<Duration>) {
        *lock(&self.state.slow_body) = chunk_delay;
    }

    /// Index files and downloads send their body one byte per `interval` (`None`: off), with
    /// the right `Content-Length`: a transfer that never stalls long enough for a read timeout.
    pub fn set_trickle(&self, interval: Option<Duration>) {
        lock(&self.state.faults).trickle = interval;
    }

    /// Downloads announce `Content-Length` = real length + `delta` while sending the real body:
    /// negative = a body longer than announced, positive = shorter (the connection then closes).
    pub fn set_content_length_delta(&self, delta: i64) {
        lock(&self.state.faults).length_delta = delta;
    }

    /// Downloads announce `Content-Length: len` and stream zeros until the client goes away.
    pub fn set_huge_content_length(&self, len: Option<u64>) {
        lock(&self.state.faults).huge_length = len;
    }

    /// Downloads are sent chunked, without `Content-Length`.
    pub fn set_no_content_length(&self, on: bool) {
        lock(&self.state.faults).no_length = on;
    }

    /// Every index file is `bytes` long (repeated valid index lines of a crate `huge`),
    /// streamed; with `announce`, `Content-Length` says so up front, else it is chunked.
    pub fn set_huge_index(&self, huge: Option<(u64, bool)>) {
        lock(&self.state.faults).huge_index = huge;
    }

    /// Index files and downloads answer `302 Location: location` (`None`: off).
    pub fn set_redirect(&self, location: Option<&str>) {
        lock(&self.state.faults).redirect = location.map(str::to_owned);
    }

    /// Bytes of response bodies actually handed to the connections by the fault modes above
    /// (streamed bodies only).
    pub fn streamed_bytes(&self) -> u64 {
        self.state.streamed.load(Ordering::SeqCst)
    }

    // -- availability -------------------------------------------------------------------------

    /// True while listening.
    pub fn is_up(&self) -> bool {
        self.server.is_some()
    }

    /// Stops listening and drops every open connection; connections are refused afterwards.
    /// No-op when already down.
    pub async fn go_down(&mut self) {
        if let Some(running) = self.server.take() {
            let _ = running.shutdown.send(());
            let _ = running.done.await;
            self.park();
        }
    }

    /// [`FakeUpstream::go_down`] for synchronous tests.
    pub fn go_down_blocking(&mut self) {
        if let Some(running) = self.server.take() {
            let _ = running.shutdown.send(());
            let _ = running.done.blocking_recv();
            self.park();
        }
    }

    /// Holds the port while down (if it cannot, `come_back` binds it again, retrying).
    fn park(&mut self) {
        self.parked = super::ports::HeldPort::at(self.addr).ok();
    }

    /// Listens again on the same port with the same state. No-op when up.
    pub async fn come_back(&mut self) {
        self.come_back_blocking();
    }

    /// [`FakeUpstream::come_back`] for synchronous tests (it only blocks while re-binding).
    pub fn come_back_blocking(&mut self) {
        if self.server.is_some() {
            return;
        }
        if let Some(held) = self.parked.take() {
            self.serve(held.listen());
            return;
        }
        let deadline = Instant::now() + REBIND_TIMEOUT;
        let listener = loop {
            match StdTcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("fake upstream cannot re-bind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(running) = self.server.take() {
            let _ = running.shutdown.send(());
        }
        if let Some(stop) = self.rt.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.rt.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("addr", &self.addr)
            .field("up", &self.server.is_some())
            .field("shared_index", &self.state.shared_root)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Server internals
// ---------------------------------------------------------------------------------------------

async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    mut shutdown: oneshot::Receiver<()>,
    done: oneshot::Sender<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(stream, state.clone()));
                }
                // e.g. too many open files: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
    let _ = done.send(());
}

async fn serve_connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    match state.tls.clone() {
        None => serve_io(stream, state).await,
        Some(acceptor) => {
            // A client that does not trust the CA aborts the handshake: nothing to serve.
            if let Ok(tls) = acceptor.accept(stream).await {
                serve_io(tls, state).await;
            }
        }
    }
}

async fn serve_io<S>(stream: S, state: Arc<State>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
}

/// Whether `rel` is a well-formed lowercase sparse path (also rules out `..` and friends).
fn is_sparse_path(rel: &str) -> bool {
    let Some(name) = rel.rsplit('/').next() else {
        return false;
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && cargohold::index::index_path(name) == rel
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl State {
    fn record(&self, req: &Request<Incoming>) {
        let path = req.uri().path().to_owned();
        let h = req.headers();
        let conditional = h.contains_key(header::IF_NONE_MATCH) || h.contains_key(header::IF_MODIFIED_SINCE);
        self.total.fetch_add(1, Ordering::SeqCst);
        if conditional {
            self.conditional.fetch_add(1, Ordering::SeqCst);
        }
        if path == "/index/config.json" {
            self.config.fetch_add(1, Ordering::SeqCst);
        } else if path.starts_with("/index/") {
            self.index.fetch_add(1, Ordering::SeqCst);
        } else if path.starts_with("/dl/") {
            self.download.fetch_add(1, Ordering::SeqCst);
        }
        *lock(&self.hits).entry(path.clone()).or_insert(0) += 1;
        let headers = h
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        lock(&self.log).push(RecordedRequest {
            method: req.method().as_str().to_owned(),
            path,
            version: format!("{:?}", req.version()),
            headers,
        });
    }

    /// The status a request is forced to answer, if any (consumes one `fail_next`).
    fn forced_status(&self) -> Option<u16> {
        {
            let mut fail = lock(&self.fail_next);
            if fail.0 > 0 {
                fail.0 -= 1;
                return Some(fail.1);
            }
        }
        *lock(&self.status_override)
    }

    fn read_shared_sync(&self, rel: &str) -> Option<IndexFile> {
        let root = self.shared_root.as_ref()?;
        let p = root.join(rel);
        let body = std::fs::read(&p).ok()?;
        let last_modified = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(self.started, |d| d.as_secs());
        Some(IndexFile {
            body: Bytes::from(body),
            last_modified,
        })
    }

    async fn lookup_index(&self, rel: &str) -> Option<IndexFile> {
        if let Some(f) = lock(&self.files).get(rel).cloned() {
            return Some(f);
        }
        if lock(&self.removed).contains(rel) {
            return None;
        }
        let root = self.shared_root.as_ref()?;
        let p = root.join(rel);
        let body = tokio::fs::read(&p).await.ok()?;
        let last_modified = tokio::fs::metadata(&p)
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(self.started, |d| d.as_secs());
        Some(IndexFile {
            body: Bytes::from(body),
            last_modified,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn config_json(&self) -> Bytes {
        let v = json!({
            "dl": format!("{}://{}/dl/{{crate}}/{{version}}/download", self.scheme(), self.addr),
            "api": format!("{}://{}", self.scheme(), self.addr),
        });
        Bytes::from(v.to_string())
    }
}

fn full(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

fn text_response(status: u16, msg: String) -> Response<RespBody> {
    let mut resp = Response::new(full(msg));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn not_found(path: &str) -> Response<RespBody> {
    text_response(404, format!("fake upstream: {path} not found\n"))
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<RespBody> {
    state.record(&req);
    let _concurrent = Concurrent::enter(&state);
    let latency = *lock(&state.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = state.forced_status() {
        let mut resp = text_response(status, format!("fake upstream: forced status {status}\n"));
        if let Some(secs) = *lock(&state.retry_after) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return resp;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text_response(405, "fake upstream: only GET and HEAD\n".to_owned());
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.uri().path().to_owned();
    if let Some(location) = lock(&state.faults).redirect.clone() {
        if path != "/index/config.json" {
            let mut resp = text_response(302, "fake upstream: redirected\n".to_owned());
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
    }
    if path == "/index/config.json" {
        let file = IndexFile {
            body: state.config_json(),
            last_modified: state.started,
        };
        return serve_index_file(&state, &req, file, "application/json");
    }
    if let Some(rel) = path.strip_prefix("/index/") {
        if !is_sparse_path(rel) {
            return not_found(&path);
        }
        let faults = lock(&state.faults).clone();
        if let Some((len, announce)) = faults.huge_index {
            return huge_index_response(&state, len, announce);
        }
        if let Some(interval) = faults.trickle {
            if let Some(file) = state.lookup_index(rel).await {
                return fault_response(&state, file.body, Some(interval), 0, false);
            }
        }
        return match state.lookup_index(rel).await {
            Some(file) => serve_index_file(&state, &req, file, "text/plain; charset=utf-8"),
            None => not_found(&path),
        };
    }
    if let Some(rest) = path.strip_prefix("/dl/") {
        let parts: Vec<&str> = rest.split('/').collect();
        if let [name, vers, "download"] = parts.as_slice() {
            let key = (percent_decode(name), percent_decode(vers));
            let bytes = lock(&state.downloads).get(&key).cloned();
            if let Some(bytes) = bytes {
                return serve_download(&state, bytes);
            }
        }
        return not_found(&path);
    }
    not_found(&path)
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(body))[..32])
}

/// RFC 9110 weak comparison of an `If-None-Match` list against `etag`.
fn if_none_match_matches(header_value: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let ours = strip(etag);
    header_value.split(',').any(|t| t.trim() == "*" || strip(t) == ours)
}

fn serve_index_file(
    state: &State,
    req: &Request<Incoming>,
    file: IndexFile,
    content_type: &'static str,
) -> Response<RespBody> {
    let validators = state.validators.load(Ordering::SeqCst);
    if !validators {
        let mut resp = Response::new(full(file.body));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        return resp;
    }
    let etag = etag_of(&file.body);
    let last_modified = http_date(file.last_modified);
    let h = req.headers();
    let not_modified = if let Some(inm) = h.get(header::IF_NONE_MATCH) {
        if_none_match_matches(&String::from_utf8_lossy(inm.as_bytes()), &etag)
    } else if let Some(ims) = h.get(header::IF_MODIFIED_SINCE) {
        ims.to_str()
            .ok()
            .and_then(parse_http_date)
            .is_some_and(|since| since >= file.last_modified)
    } else {
        false
    };
    let mut resp = if not_modified {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(full(file.body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let hs = resp.headers_mut();
    hs.insert(header::ETAG, HeaderValue::from_str(&etag).expect("ascii etag"));
    hs.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&last_modified).expect("ascii date"),
    );
    resp
}

fn serve_download(state: &State, bytes: Bytes) -> Response<RespBody> {
    let bytes = if state.corrupt.load(Ordering::SeqCst) {
        Bytes::from(bytes.iter().map(|b| !b).collect::<Vec<u8>>())
    } else {
        bytes
    };
    let faults = lock(&state.faults).clone();
    if let Some(len) = faults.huge_length {
        let streamed = state.streamed.clone();
        let zeros = Bytes::from(vec![0u8; 64 * 1024]);
        let stream = futures_util::stream::unfold((), move |()| {
            let (zeros, streamed) = (zeros.clone(), streamed.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                streamed.fetch_add(zeros.len() as u64, Ordering::SeqCst);
                Some((Ok::<_, BoxError>(Frame::data(zeros)), ()))
            }
        });
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return resp;
    }
    if faults.trickle.is_some() || faults.length_delta != 0 || faults.no_length {
        return fault_response(state, bytes, faults.trickle, faults.length_delta, faults.no_length);
    }
    let len = bytes.len();
    let drop_mid = state.drop_mid_body.load(Ordering::SeqCst);
    let delay = *lock(&state.slow_body);
    let body = if !drop_mid && delay.is_none() {
        full(bytes)
    } else {
        streamed_body(bytes, delay, drop_mid)
    };
    let mut resp = Response::new(body);
    let hs = resp.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    hs.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// A streamed body (one byte per `trickle` interval, or one piece) with a `Content-Length` of
/// the real length + `delta`, or none.
fn fault_response(
    state: &State,
    bytes: Bytes,
    trickle: Option<Duration>,
    delta: i64,
    no_length: bool,
) -> Response<RespBody> {
    let announced = u64::try_from(bytes.len() as i64 + delta).unwrap_or(0);
    let streamed = state.streamed.clone();
    let stream = futures_util::stream::unfold((bytes, 0usize), move |(bytes, pos)| {
        let streamed = streamed.clone();
        async move {
            if pos >= bytes.len() {
                return None;
            }
            let n = match trickle {
                Some(d) => {
                    if pos > 0 {
                        tokio::time::sleep(d).await;
                    }
                    1
                }
                None => bytes.len(),
            };
            streamed.fetch_add(n as u64, Ordering::SeqCst);
            let piece = bytes.slice(pos..pos + n);
            Some((Ok::<_, BoxError>(Frame::data(piece)), (bytes, pos + n)))
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    if !no_length {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(announced));
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// An index file of `len` bytes of repeated valid lines, streamed in 64 KiB pieces.
fn huge_index_response(state: &State, len: u64, announce: bool) -> Response<RespBody> {
    let line = format!(
        "{{\"name\":\"huge\",\"vers\":\"1.0.0\",\"deps\":[],\"cksum\":\"{}\",\"features\":{{}},\"yanked\":false}}\n",
        "0".repeat(64)
    );
    let mut block = Vec::with_capacity(64 * 1024 + line.len());
    while block.len() < 64 * 1024 {
        block.extend_from_slice(line.as_bytes());
    }
    let block = Bytes::from(block);
    let streamed = state.streamed.clone();
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let (block, streamed) = (block.clone(), streamed.clone());
        async move {
            if sent >= len {
                return None;
            }
            let n = usize::try_from((len - sent).min(block.len() as u64)).unwrap_or(block.len());
            streamed.fetch_add(n as u64, Ordering::SeqCst);
            Some((Ok::<_, BoxError>(Frame::data(block.slice(..n))), sent + n as u64))
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    if announce {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// TLS material of a TLS-mode fake upstream: a private CA and a server certificate it signed
/// for `127.0.0.1` and `localhost`.
struct TlsMode {
    acceptor: tokio_rustls::TlsAcceptor,
    ca_pem: String,
}

impl TlsMode {
    fn generate() -> TlsMode {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake upstream private CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake upstream");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");
        let chain = vec![rustls::pki_types::CertificateDer::from(cert.der().to_vec())];
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key DER");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsMode {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca_pem: ca_cert.pem(),
        }
    }
}

struct StreamState {
    bytes: Bytes,
    pos: usize,
    end: usize,
    chunk: usize,
    delay: Option<Duration>,
    drop_mid: bool,
    first: bool,
    finished: bool,
}

fn streamed_body(bytes: Bytes, delay: Option<Duration>, drop_mid: bool) -> RespBody {
    let end = if drop_mid { bytes.len() / 2 } else { bytes.len() };
    let chunk = if delay.is_some() { SLOW_CHUNK } else { end.max(1) };
    let st = StreamState {
        bytes,
        pos: 0,
        end,
        chunk,
        delay,
        drop_mid,
        first: true,
        finished: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.finished {
            return None;
        }
        if st.pos < st.end {
            if !st.first {
                if let Some(d) = st.delay {
                    tokio::time::sleep(d).await;
                }
            }
            st.first = false;
            let n = st.chunk.min(st.end - st.pos);
            let piece = st.bytes.slice(st.pos..st.pos + n);
            st.pos += n;
            return Some((Ok::<_, BoxError>(Frame::data(piece)), st));
        }
        st.finished = true;
        if st.drop_mid {
            // Give the half body a moment to reach the socket, then fail the body: hyper
            // aborts the HTTP/1 connection (HTTP/2: resets the stream).
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Some((
                Err::<Frame<Bytes>, BoxError>("fake upstream: dropped mid-body".into()),
                st,
            ));
        }
        None
    });
    BodyExt::boxed(StreamBody::new(stream))
}

// ---------------------------------------------------------------------------------------------
// HTTP dates (IMF-fixdate)
// ---------------------------------------------------------------------------------------------

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for Unix seconds.
pub fn http_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let wd = DAYS[((days + 4).rem_euclid(7)) as usize];
    format!(
        "{wd}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) into Unix seconds.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_wd, d, mon, y, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    let d: u32 = d.parse().ok()?;
    let m = MONTHS.iter().position(|x| x == mon)? as u32 + 1;
    let y: i64 = y.parse().ok()?;
    let t: Vec<u64> = hms.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [hh, mm, ss] = t.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&d) || *hh > 23 || *mm > 59 || *ss > 60 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    u64::try_from(days * 86_400).ok().map(|s| s + hh * 3600 + mm * 60 + ss)
}
