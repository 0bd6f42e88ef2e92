//! Operations: TLS from PEM files (ALPN `h2` and `http/1.1` on one port, the real cargo over
//! https, certificate reload on SIGHUP without dropping open connections), Prometheus metrics,
//! graceful shutdown on SIGTERM with a download in flight, health endpoints, edge limits (slow
//! headers, oversize bodies) and the access log (one line per request, never a token).
//!
//! Tests that need the daemon's pid, TLS or extra command-line flags run their own
//! `cargohold serve` child ([`Proc`]); the others use the shared [`Daemon`]. Every wait has a
//! generous deadline that only guards against hangs; no test asserts how long anything took.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::{Method, StatusCode, Version};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::cargo::CargoEnv;
use crate::support::daemon::{drain, format_log_tail, scrub_env, Daemon, Log, BIN, HERMETIC_DEFAULT};
use crate::support::{http, index_path, package, random_secret, sha256_hex};

/// Deadline for events we wait for (a daemon starting, a signal taking effect). A liveness
/// guard on a loaded 2-core machine, not an assertion about speed.
const WAIT: Duration = Duration::from_secs(60);

/// Size of the "large" crate of the download tests: big enough that the body cannot sit in
/// socket buffers and HTTP/2 windows, so the server is still sending while the test pauses.
const BIG: usize = 12 << 20;

// ---------------------------------------------------------------------------------------------
// A `cargohold serve` child process whose pid, flags and exit status the test controls.

/// A `cargohold [GLOBAL_ARGS] serve --config FILE --data-dir DIR --listen 127.0.0.1:0` child.
/// Dropping it kills the process (and prints its log when the test panicked).
struct Proc {
    child: Option<Child>,
    /// `http(s)://127.0.0.1:PORT` from the `cargohold listening on` line.
    url: String,
    admin_token: String,
    config_path: PathBuf,
    global_args: Vec<String>,
    rust_log: String,
    stderr: Log,
    stdout: Log,
    data: TempDir,
    _aux: TempDir,
}

impl Proc {
    /// Starts the daemon with `config` (TOML text) and `RUST_LOG=info`.
    fn start(config: &str, global_args: &[&str]) -> Proc {
        Self::start_with_filter(config, global_args, "info")
    }

    /// Starts the daemon with `config`, extra global flags and a `RUST_LOG` filter.
    fn start_with_filter(config: &str, global_args: &[&str], rust_log: &str) -> Proc {
        let data = tempfile::Builder::new()
            .prefix("cargohold-ops-data-")
            .tempdir()
            .expect("create data dir");
        let aux = tempfile::Builder::new()
            .prefix("cargohold-ops-aux-")
            .tempdir()
            .expect("create aux dir");
        let config_path = aux.path().join("cargohold.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut p = Proc {
            child: None,
            url: String::new(),
            admin_token: random_secret(),
            config_path,
            global_args: global_args.iter().map(|s| (*s).to_owned()).collect(),
            rust_log: rust_log.to_owned(),
            stderr: Log::default(),
            stdout: Log::default(),
            data,
            _aux: aux,
        };
        p.spawn();
        p
    }

    /// Starts (again) on the same data directory and config; the port may change.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let mut cmd = Command::new(BIN);
        scrub_env(&mut cmd);
        cmd.args(&self.global_args)
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", &self.rust_log)
            .env("CARGOHOLD_ADMIN_TOKEN", &self.admin_token)
            .current_dir(self._aux.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let err = child.stderr.take().expect("stderr piped");
        let err_log = Arc::clone(&self.stderr);
        thread::spawn(move || drain(err, &err_log, None));
        let out = child.stdout.take().expect("stdout piped");
        let out_log = Arc::clone(&self.stdout);
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || drain(out, &out_log, Some(tx)));
        let deadline = Instant::now() + WAIT;
        let url = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("cargohold listening on ") {
                        break rest.trim().trim_end_matches('/').to_owned();
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!(
                        "cargohold serve did not print its listening line ({e:?}); exit: {status:?}\n\
                         --- stdout ---\n{}\n{}",
                        self.stdout.lock().unwrap(),
                        format_log_tail(&self.stderr)
                    );
                }
            }
        };
        self.url = url;
        self.child = Some(child);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The bound socket address.
    fn addr(&self) -> SocketAddr {
        let hostport = self.url.split_once("://").map(|(_, r)| r).unwrap_or(&self.url);
        hostport
            .parse()
            .unwrap_or_else(|e| panic!("listen URL {} has no socket address: {e}", self.url))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Sends a signal (`TERM`, `HUP`, ...) with `kill`.
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed: {status}", self.pid());
    }

    /// `None` while the process runs.
    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .expect("daemon started")
            .try_wait()
            .expect("try_wait")
    }

    /// Waits (up to `limit`, a hang guard) for the process to exit and reaps it.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit_status() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "cargohold did not exit within {limit:?} after the signal\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn stdout_log(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn log_tail(&self) -> String {
        format_log_tail(&self.stderr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() || std::env::var_os("CARGOHOLD_TEST_LOG").is_some() {
            eprintln!("--- stdout ---\n{}\n{}", self.stdout_log(), self.log_tail());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A test certificate authority.
struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A server certificate for `127.0.0.1` and `localhost`.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl TestCa {
    fn new(common_name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf(&self) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cargohold test server");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`; returns the CA path.
fn write_pems(dir: &Path, ca: &TestCa, leaf: &Leaf) -> PathBuf {
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).expect("write ca.pem");
    std::fs::write(dir.join("cert.pem"), &leaf.cert_pem).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), &leaf.key_pem).expect("write key.pem");
    ca_path
}

/// A `[tls]` table naming `dir/cert.pem` and `dir/key.pem`.
fn tls_table(dir: &Path) -> String {
    let s = |name: &str| format!("{:?}", dir.join(name).to_str().expect("UTF-8 temp path"));
    format!("[tls]\ncert = {}\nkey = {}\n", s("cert.pem"), s("key.pem"))
}

/// A client that trusts only `ca_pem` (no built-in roots, no proxy), optionally HTTP/1.1 only.
fn tls_client(ca_pem: &str, http1_only: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("parse CA PEM");
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .tls_info(true)
        // A guard against a wedged connection, not an assertion about speed.
        .timeout(Duration::from_secs(180));
    if http1_only {
        b = b.http1_only();
    }
    b.build().expect("build TLS client")
}

/// The DER of the certificate the server presented for this response.
fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info with a peer certificate")
        .to_vec()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// Crates and HTTP helpers

/// Deterministic incompressible bytes (splitmix64).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A valid `.crate` of about `payload` bytes: `Cargo.toml`, `src/lib.rs` and a blob of random
/// bytes, gzip-stored without compression (random data would not shrink anyway).
fn big_crate(name: &str, vers: &str, payload: usize) -> Vec<u8> {
    let gz = GzEncoder::new(Vec::with_capacity(payload + 16 * 1024), Compression::none());
    let mut tar = tar::Builder::new(gz);
    let toml = package::manifest(name, vers);
    let lib = "//! A large test crate.\n".to_owned();
    let blob = noise(payload, payload as u64 ^ 0x5eed);
    for (path, data) in [
        ("Cargo.toml", toml.as_bytes()),
        ("src/lib.rs", lib.as_bytes()),
        ("blob.bin", &blob[..]),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_153_704_088);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{name}-{vers}/{path}"), data)
            .expect("append to tarball");
    }
    tar.into_inner().expect("finish tar").finish().expect("finish gzip")
}

/// Creates `login` and a default-scope token for it through the admin API (blocking; plain
/// HTTP daemons only).
fn admin_user_token(base: &str, admin_token: &str, login: &str) -> String {
    let r = http::send(
        Method::POST,
        &format!("{base}/-/api/v1/users"),
        Some(admin_token),
        Some(json!({ "login": login }).to_string().into_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 201, "create user: {}", r.text());
    let r = http::send(
        Method::POST,
        &format!("{base}/-/api/v1/tokens"),
        Some(admin_token),
        Some(json!({ "user": login }).to_string().into_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 201, "create token: {}", r.text());
    r.json()["token"].as_str().expect("token in answer").to_owned()
}

/// Async [`admin_user_token`] with a given client (for TLS daemons).
async fn admin_user_token_async(c: &reqwest::Client, base: &str, admin_token: &str, login: &str) -> String {
    let r = c
        .post(format!("{base}/-/api/v1/users"))
        .header("Authorization", admin_token)
        .json(&json!({ "login": login }))
        .send()
        .await
        .expect("create user");
    assert_eq!(r.status(), StatusCode::CREATED, "create user: {:?}", r.text().await);
    let r = c
        .post(format!("{base}/-/api/v1/tokens"))
        .header("Authorization", admin_token)
        .json(&json!({ "user": login }))
        .send()
        .await
        .expect("create token");
    assert_eq!(r.status(), StatusCode::CREATED, "create token");
    let v: Value = r.json().await.expect("token JSON");
    v["token"].as_str().expect("token in answer").to_owned()
}

/// Reads an HTTP/1.1 response head from `s`: status, lower-cased headers, and any body bytes
/// that arrived with the head.
fn read_head(s: &mut TcpStream) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, buf[end + 4..].to_vec())
}

/// Reads until the peer closes (EOF or reset) or `limit` passes; returns whether it closed and
/// the bytes received meanwhile.
fn wait_for_close(s: &mut TcpStream, limit: Duration) -> (bool, Vec<u8>) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, got);
        }
        s.set_read_timeout(Some(left)).expect("set read timeout");
        match s.read(&mut chunk) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return (false, got),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (true, got),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses `k="v",k2="v2"` (with `\\`, `\"` and `\n` escapes).
fn parse_labels(s: &str, line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label value must be quoted in {line:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("dangling escape in {line:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        }
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty(),
            "bad label name {key:?} in {line:?}"
        );
        out.push((key, value));
        match chars.next() {
            Some(',') | None => {}
            Some(c) => panic!("unexpected {c:?} after a label in {line:?}"),
        }
    }
    out
}

/// Parses the exposition text, checking that every sample belongs to a family with a
/// `# TYPE` line.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "unknown metric type in {line:?}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "unexpected comment {line:?}");
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample without value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("sample value is not a number ({e}): {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed label set: {line:?}"));
                (name, parse_labels(inner, line))
            }
            None => (series, Vec::new()),
        };
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let family_ok = types.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|f| types.get(f).is_some_and(|k| k == "histogram"))
            });
        assert!(family_ok, "sample {line:?} has no `# TYPE` line before it");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// A canonical series key: the name and its labels sorted by name.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<(&str, &str)> = labels.to_vec();
    l.sort();
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Samples by canonical series key.
fn metric_map(samples: &[Sample]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .map(|s| {
            let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            (series(&s.name, &labels), s.value)
        })
        .collect()
}

fn scrape(url: &str) -> (String, BTreeMap<String, f64>, Vec<Sample>) {
    let r = http::get(url, None);
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "metrics content-type is {ct:?}"
    );
    let text = r.text();
    let samples = parse_metrics(&text);
    (text.clone(), metric_map(&samples), samples)
}

// ---------------------------------------------------------------------------------------------
// 1. TLS end to end

#[test]
fn tls_serves_h2_and_http1_on_one_port_and_cargo_publishes_and_builds_over_https() {
    let certs = tempfile::tempdir().expect("cert dir");
    let ca = TestCa::new("cargohold ops test CA");
    let leaf = ca.leaf();
    let ca_path = write_pems(certs.path(), &ca, &leaf);
    let d = Proc::start(&format!("{}\n{HERMETIC_DEFAULT}", tls_table(certs.path())), &[]);
    assert!(
        d.url.starts_with("https://127.0.0.1:"),
        "with [tls] the daemon must advertise https, got {}",
        d.url
    );

    let rt = runtime();
    let token = rt.block_on(async {
        let h2 = tls_client(&ca.pem, false);
        let h1 = tls_client(&ca.pem, true);
        let cfg_url = d.url("/local/index/config.json");
        for (client, want) in [(&h2, Version::HTTP_2), (&h1, Version::HTTP_11)] {
            let r = client
                .get(&cfg_url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {cfg_url} ({want:?}): {e:?}"));
            assert_eq!(r.status(), StatusCode::OK, "config.json over {want:?}");
            assert_eq!(r.version(), want, "negotiated protocol (ALPN)");
            assert_eq!(peer_cert(&r), leaf.der, "the configured certificate is served");
            let cfg: Value = r.json().await.expect("config.json is JSON");
            let dl = cfg["dl"].as_str().expect("dl");
            let api = cfg["api"].as_str().expect("api");
            assert!(dl.starts_with(&d.url), "dl {dl:?} must use the https public URL");
            assert_eq!(api, d.url("/local"), "api of config.json");
        }
        let healthz = h2.get(d.url("/-/healthz")).send().await.expect("healthz over h2");
        assert_eq!(healthz.status(), StatusCode::OK);
        admin_user_token_async(&h2, &d.url, &d.admin_token, "tls-publisher").await
    });

    let mut env = CargoEnv::bare();
    env.add_registry("local", &format!("sparse+{}/local/index/", d.url));
    env.set_env("CARGO_HTTP_CAINFO", ca_path.to_str().expect("UTF-8 path"));
    let lib = env.project(
        "ops-tls-lib",
        "[package]\nname = \"ops-tls-lib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
         description = \"published over https\"\nlicense = \"MIT\"\n\n[dependencies]\n",
        &[(
            "src/lib.rs",
            "pub fn greeting() -> &'static str {\n    \"hello over tls\"\n}\n",
        )],
    );
    env.must_succeed(
        &lib,
        &["publish", "--registry", "local", "--allow-dirty", "--token", &token],
    );
    let app = env.project(
        "ops-tls-app",
        "[package]\nname = \"ops-tls-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\nops-tls-lib = { version = \"0.1.0\", registry = \"local\" }\n",
        &[(
            "src/main.rs",
            "fn main() {\n    println!(\"{}\", ops_tls_lib::greeting());\n}\n",
        )],
    );
    env.must_succeed(&app, &["build"]);
    let out = env.must_succeed(&app, &["run", "-q"]);
    assert_eq!(out.stdout.trim(), "hello over tls", "{}", out.stderr);
    let lock = std::fs::read_to_string(app.join("Cargo.lock")).expect("Cargo.lock");
    assert!(
        lock.contains(&format!("sparse+{}/local/index/", d.url)),
        "the dependency is locked to the https registry:\n{lock}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Certificate reload on SIGHUP

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_keeps_open_ones() {
    let certs = tempfile::tempdir().expect("cert dir");
    let ca1 = TestCa::new("cargohold ops CA one");
    let leaf1 = ca1.leaf();
    write_pems(certs.path(), &ca1, &leaf1);
    // A long header_read_timeout keeps the idle keep-alive connection below open for the test.
    let config = format!(
        "[limits]\nmax_crate_size = \"16MiB\"\nheader_read_timeout = \"300s\"\n\n{}\n{HERMETIC_DEFAULT}",
        tls_table(certs.path())
    );
    let d = Proc::start(&config, &[]);
    let krate = big_crate("ops-reload-big", "1.0.0", BIG);
    let want_sha = sha256_hex(&krate);

    let rt = runtime();
    rt.block_on(async {
        let old_h2 = tls_client(&ca1.pem, false);
        let old_h1 = tls_client(&ca1.pem, true);
        let token = admin_user_token_async(&old_h2, &d.url, &d.admin_token, "reloader").await;
        let r = old_h2
            .put(d.url("/local/api/v1/crates/new"))
            .header("Authorization", &token)
            .body(package::publish_body(
                &package::metadata("ops-reload-big", "1.0.0"),
                &krate,
            ))
            .send()
            .await
            .expect("publish the large crate");
        assert_eq!(r.status(), StatusCode::OK, "publish: {:?}", r.text().await);

        // An idle pooled HTTP/1.1 connection, opened before the reload.
        let r = old_h1
            .get(d.url("/local/index/config.json"))
            .send()
            .await
            .expect("h1 GET");
        assert_eq!((r.status(), r.version()), (StatusCode::OK, Version::HTTP_11));
        assert_eq!(peer_cert(&r), leaf1.der);
        r.bytes().await.expect("read config.json");

        // A download in flight across the reload (HTTP/2).
        let dl_url = d.url("/local/api/v1/crates/ops-reload-big/1.0.0/download");
        let mut dl = old_h2.get(&dl_url).send().await.expect("start download");
        assert_eq!((dl.status(), dl.version()), (StatusCode::OK, Version::HTTP_2));
        assert_eq!(peer_cert(&dl), leaf1.der);
        let mut body = Vec::with_capacity(BIG + 65536);
        while body.len() < 256 * 1024 {
            let chunk = dl.chunk().await.expect("download chunk").expect("body ended early");
            body.extend_from_slice(&chunk);
        }

        // New files (a new CA) over the old paths, then SIGHUP.
        let ca2 = TestCa::new("cargohold ops CA two");
        let leaf2 = ca2.leaf();
        write_pems(certs.path(), &ca2, &leaf2);
        d.signal("HUP");

        let deadline = Instant::now() + WAIT;
        let last_err = loop {
            // A fresh client each time: a new TLS handshake.
            let fresh = tls_client(&ca2.pem, false);
            match fresh.get(d.url("/-/healthz")).send().await {
                Ok(r) if r.status() == StatusCode::OK => {
                    assert_eq!(peer_cert(&r), leaf2.der, "new handshakes present the new certificate");
                    break None;
                }
                Ok(r) => break Some(format!("status {}", r.status())),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => break Some(format!("{e:?}")),
            }
        };
        assert!(
            last_err.is_none(),
            "after SIGHUP a client trusting only the new CA never got through: {last_err:?}\n{}",
            d.log_tail()
        );
        let stale = tls_client(&ca1.pem, false).get(d.url("/-/healthz")).send().await;
        assert!(
            stale.is_err(),
            "a new connection trusting only the old CA must fail after the reload, got {:?}",
            stale.map(|r| r.status())
        );

        // The in-flight download finishes intact on its pre-reload connection.
        while let Some(chunk) = dl.chunk().await.expect("download chunk after reload") {
            body.extend_from_slice(&chunk);
        }
        assert_eq!(body.len(), krate.len(), "download length");
        assert!(
            sha256_hex(&body) == want_sha,
            "download sha256 differs from the published crate"
        );

        // Both pre-reload connections still serve requests (a new connection could not: these
        // clients trust only the old CA).
        for (client, v) in [(&old_h1, Version::HTTP_11), (&old_h2, Version::HTTP_2)] {
            let r = client
                .get(d.url("/local/index/config.json"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("pre-reload {v:?} connection was dropped: {e:?}"));
            assert_eq!((r.status(), r.version()), (StatusCode::OK, v));
            assert_eq!(peer_cert(&r), leaf1.der, "still the connection made before the reload");
        }
    });
    assert!(d.log().contains("TLS certificate reloaded"), "{}", d.log_tail());
}

// ---------------------------------------------------------------------------------------------
// 3. Metrics

#[test]
fn metrics_count_requests_publishes_and_durations_without_crate_names() {
    let d = Daemon::start();
    let token = d.user_token("metrics-user", &[]);
    let metrics_url = d.url("/-/metrics");
    let (_, before, _) = scrape(&metrics_url);

    let missing = ["ops-missing-one", "ops-missing-two", "ops-missing-three"];
    for name in missing {
        let r = http::get(&d.url(&format!("/local/index/{}", index_path(name))), None);
        assert_eq!(r.status, 404, "index of {name}: {}", r.text());
    }
    let (body, _) = package::simple_publish("ops-metrics-probe", "0.1.0");
    let r = http::publish_raw(&d.api_url("local"), Some(&token), body.clone());
    assert_eq!(r.status, 200, "publish: {}", r.text());
    let dup = http::publish_raw(&d.api_url("local"), Some(&token), body);
    assert!(
        (400..500).contains(&dup.status),
        "duplicate publish: {} {}",
        dup.status,
        dup.text()
    );
    let r = http::get(&d.url("/local/index/config.json"), None);
    assert_eq!(r.status, 200);

    let (text, after, samples) = scrape(&metrics_url);
    let delta = |key: &str| after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0);
    let requests = |route: &str, status: &str| {
        series(
            "cargohold_http_requests_total",
            &[("registry", "local"), ("route", route), ("status", status)],
        )
    };
    let checks = [
        (requests("/{reg}/index/{path}", "404"), 3.0),
        (requests("/{reg}/index/config.json", "200"), 1.0),
        (requests("/{reg}/api/v1/crates/new", "200"), 1.0),
        (
            series("cargohold_publishes_total", &[("registry", "local"), ("outcome", "ok")]),
            1.0,
        ),
        (
            series(
                "cargohold_publishes_total",
                &[("registry", "local"), ("outcome", "refused")],
            ),
            1.0,
        ),
        (
            series(
                "cargohold_http_request_duration_seconds_count",
                &[("route", "/{reg}/index/{path}")],
            ),
            3.0,
        ),
    ];
    for (key, want) in &checks {
        assert_eq!(delta(key), *want, "change of {key}\n{text}");
    }
    let publish_all: f64 = after
        .keys()
        .filter(|k| k.starts_with("cargohold_http_requests_total{") && k.contains("route=\"/{reg}/api/v1/crates/new\""))
        .map(|k| delta(k))
        .sum();
    assert_eq!(publish_all, 2.0, "publish requests of any status\n{text}");

    // The histogram of the index route: buckets cumulative, +Inf = _count, a _sum.
    let route = "/{reg}/index/{path}";
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == "cargohold_http_request_duration_seconds_bucket")
        .filter(|s| s.labels.iter().any(|(k, v)| k == "route" && v == route))
        .map(|s| {
            let le = &s.labels.iter().find(|(k, _)| k == "le").expect("bucket has `le`").1;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("numeric le")
            };
            (bound, s.value)
        })
        .collect();
    assert!(buckets.len() >= 2, "histogram buckets of {route}\n{text}");
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets must be cumulative: {buckets:?}"
    );
    let count = after[&series("cargohold_http_request_duration_seconds_count", &[("route", route)])];
    assert_eq!(buckets.last().map(|b| (b.0, b.1)), Some((f64::INFINITY, count)));
    let sum = after
        .get(&series(
            "cargohold_http_request_duration_seconds_sum",
            &[("route", route)],
        ))
        .copied()
        .unwrap_or_else(|| panic!("no _sum for {route}\n{text}"));
    assert!(sum >= 0.0 && sum.is_finite(), "sum {sum}");

    // No crate name anywhere, in particular in no label.
    for name in missing.iter().chain(["ops-metrics-probe"].iter()) {
        assert!(!text.contains(name), "crate name {name} appears in the metrics\n{text}");
    }
    let label_values: BTreeSet<&str> = samples
        .iter()
        .flat_map(|s| s.labels.iter().map(|(_, v)| v.as_str()))
        .collect();
    for v in &label_values {
        assert!(!v.contains("ops-"), "label value {v:?} looks like a crate name");
    }
    for name in ["cargohold_http_requests_in_flight", "cargohold_connections_open"] {
        assert!(samples.iter().any(|s| s.name == name), "gauge {name} missing\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Graceful shutdown

#[test]
fn sigterm_finishes_the_in_flight_download_refuses_new_connections_and_exits_zero() {
    let config = format!("shutdown_grace = \"300s\"\n\n[limits]\nmax_crate_size = \"16MiB\"\n{HERMETIC_DEFAULT}");
    let mut d = Proc::start(&config, &[]);
    let token = admin_user_token(&d.url, &d.admin_token, "graceful");
    let krate = big_crate("ops-graceful-big", "1.0.0", BIG);
    let r = http::publish_raw(
        &d.url("/local"),
        Some(&token),
        package::publish_body(&package::metadata("ops-graceful-big", "1.0.0"), &krate),
    );
    assert_eq!(r.status, 200, "publish: {}", r.text());

    let addr = d.addr();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    write!(
        s,
        "GET /local/api/v1/crates/ops-graceful-big/1.0.0/download HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .expect("send request");
    let (status, headers, mut body) = read_head(&mut s);
    assert_eq!(status, 200, "download status; headers {headers:?}");
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .expect("download has a Content-Length");
    assert_eq!(len, krate.len());
    // Read a little, slowly, then stop reading: the server is left with most of the body.
    let mut chunk = vec![0u8; 16 * 1024];
    while body.len() < 512 * 1024 {
        let n = s.read(&mut chunk).expect("read body");
        assert!(n > 0, "connection closed after {} body bytes", body.len());
        body.extend_from_slice(&chunk[..n]);
        thread::sleep(Duration::from_millis(2));
    }

    d.signal("TERM");
    // New connections are refused once the daemon stops accepting.
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "new connections were still accepted long after SIGTERM: {other:?}\n{}",
                    d.log_tail()
                );
                drop(other);
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert!(
        d.try_exit_status().is_none(),
        "the daemon exited while a download was in flight (grace is 300s)\n{}",
        d.log_tail()
    );

    // Finish reading (still in small chunks): the whole body arrives intact.
    while body.len() < len {
        let n = s.read(&mut chunk).unwrap_or_else(|e| {
            panic!(
                "download broken after {} of {len} bytes: {e}\n{}",
                body.len(),
                d.log_tail()
            )
        });
        assert!(
            n > 0,
            "download cut after {} of {len} bytes during shutdown\n{}",
            body.len(),
            d.log_tail()
        );
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(body.len(), len, "no bytes beyond Content-Length");
    assert!(
        sha256_hex(&body) == sha256_hex(&krate),
        "download sha256 differs from the published crate"
    );
    let (closed, extra) = wait_for_close(&mut s, WAIT);
    assert!(
        closed && extra.is_empty(),
        "the connection must be closed after the last response during shutdown (closed: {closed}, {} extra bytes)",
        extra.len()
    );

    let status = d.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM\n{}", d.log_tail());
    let log = d.log();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{}",
        d.log_tail()
    );

    // What was stored is there after a restart on the same data directory.
    d.spawn();
    let r = http::get(
        &d.url(&format!("/local/index/{}", index_path("ops-graceful-big"))),
        None,
    );
    assert_eq!(r.status, 200, "index after restart: {}", r.text());
    assert!(r.text().contains(&sha256_hex(&krate)), "index line with the cksum");
}

// ---------------------------------------------------------------------------------------------
// 5. Health endpoints

#[test]
fn healthz_and_readyz_answer_without_depending_on_the_upstream() {
    let d = Daemon::start_with_config(
        r#"
[registries.down]
kind = "proxy"
upstream = "http://127.0.0.1:9/index/"

[registries.local]
kind = "hosted"
upstreams = ["down"]
"#,
    );
    let check = |when: &str| {
        let h = http::get(&d.url("/-/healthz"), None);
        assert_eq!((h.status, h.text().as_str()), (200, "ok\n"), "healthz {when}");
        let r = http::get(&d.url("/-/readyz"), None);
        assert_eq!((r.status, r.text().as_str()), (200, "ready\n"), "readyz {when}");
    };
    check("at start");
    // The upstream really is unreachable...
    let r = http::get(&d.url(&format!("/down/index/{}", index_path("some-crate"))), None);
    assert!(
        r.status >= 500,
        "an unreachable upstream must give a 5xx, got {} {}",
        r.status,
        r.text()
    );
    // ...and health does not depend on it.
    check("after an upstream failure");
    let head = http::send(Method::HEAD, &d.url("/-/healthz"), None, None, &[]);
    assert_eq!(head.status, 200, "HEAD /-/healthz");
    let post = http::send(Method::POST, &d.url("/-/readyz"), None, None, &[]);
    assert_eq!(post.status, 405, "POST /-/readyz");
}

// ---------------------------------------------------------------------------------------------
// 6. Slow headers

const SLOW_HEADERS: &str = "\n[limits]\nheader_read_timeout = \"1s\"\n";

#[test]
fn slow_headers_are_cut_off_while_other_clients_are_served() {
    let d = Daemon::start_with_config(&format!("{HERMETIC_DEFAULT}{SLOW_HEADERS}"));
    let addr: SocketAddr = d.base_url().trim_start_matches("http://").parse().expect("address");
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"GET /-/healthz HT")
        .expect("send a partial request line");
    // Meanwhile a normal request on another connection works.
    let r = http::get(&d.url("/-/healthz"), None);
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let (closed, got) = wait_for_close(&mut slow, Duration::from_secs(20));
    assert!(
        closed,
        "a connection stuck in its request line was not closed (header_read_timeout = 1s); received {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "only a 408 (or nothing) may precede the close, got {:?}",
        String::from_utf8_lossy(&got)
    );
    let r = http::get(&d.url("/-/healthz"), None);
    assert_eq!(r.status, 200, "still serving after the cut-off");
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let d = Daemon::start_with_config(&format!("{HERMETIC_DEFAULT}{SLOW_HEADERS}"));
    let addr: SocketAddr = d.base_url().trim_start_matches("http://").parse().expect("address");
    let mut idle = TcpStream::connect(addr).expect("connect");
    let r = http::get(&d.url("/-/healthz"), None);
    assert_eq!(r.status, 200);
    let (closed, got) = wait_for_close(&mut idle, Duration::from_secs(20));
    assert!(
        closed,
        "an idle connection that never sent a byte was still open 20s later (header_read_timeout = 1s); \
         received {:?}",
        String::from_utf8_lossy(&got)
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Oversize bodies

#[test]
fn oversize_publish_and_admin_bodies_get_413_naming_the_limit() {
    let d = Daemon::start_with_config(&format!(
        "{HERMETIC_DEFAULT}\n[limits]\nmax_crate_size = \"64KiB\"\nmax_json_body = \"1KiB\"\n"
    ));
    let token = d.user_token("big-publisher", &[]);
    let api = d.api_url("local");

    let krate = big_crate("ops-too-big", "1.0.0", 128 * 1024);
    assert!(krate.len() > 64 * 1024);
    let r = http::publish_raw(
        &api,
        Some(&token),
        package::publish_body(&package::metadata("ops-too-big", "1.0.0"), &krate),
    );
    assert_eq!(r.status, 413, "publish of a {} byte crate: {}", krate.len(), r.text());
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{:?}",
        r.headers
    );
    let details = r.error_details();
    assert!(
        details.iter().any(|m| m.contains("65536")),
        "the error must name the 64KiB limit: {details:?}"
    );
    let idx = http::get(&d.url(&format!("/local/index/{}", index_path("ops-too-big"))), None);
    assert_eq!(idx.status, 404, "nothing of the refused crate is visible");

    // Just under the limit is accepted.
    let fits = big_crate("ops-fits", "1.0.0", 32 * 1024);
    assert!(fits.len() < 64 * 1024);
    let r = http::publish_raw(
        &api,
        Some(&token),
        package::publish_body(&package::metadata("ops-fits", "1.0.0"), &fits),
    );
    assert_eq!(r.status, 200, "publish of a {} byte crate: {}", fits.len(), r.text());

    // A body announced far beyond every limit is refused from its Content-Length alone.
    let addr: SocketAddr = d.base_url().trim_start_matches("http://").parse().expect("address");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    write!(
        s,
        "PUT /local/api/v1/crates/new HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        100u64 << 20
    )
    .expect("send head");
    let (status, headers, mut rest) = read_head(&mut s);
    assert_eq!(status, 413, "announced 100MiB publish; headers {headers:?}");
    let blen: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .expect("413 with a Content-Length");
    let mut chunk = [0u8; 4096];
    while rest.len() < blen {
        let n = s.read(&mut chunk).expect("read 413 body");
        assert!(n > 0, "413 body cut short");
        rest.extend_from_slice(&chunk[..n]);
    }
    let v: Value = serde_json::from_slice(&rest[..blen]).expect("413 body is JSON");
    let detail = v["errors"][0]["detail"].as_str().expect("errors[0].detail");
    assert!(detail.contains("limit"), "{detail}");

    // Admin JSON bodies are capped by max_json_body.
    let users = d.url("/-/api/v1/users");
    let huge = json!({ "login": "huge-name", "name": "n".repeat(4096) }).to_string();
    let r = http::send(
        Method::POST,
        &users,
        Some(d.admin_token()),
        Some(huge.into_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 413, "admin body over max_json_body: {}", r.text());
    let details = r.error_details();
    assert!(
        details.iter().any(|m| m.contains("1024")),
        "the error must name the 1KiB limit: {details:?}"
    );
    let small = json!({ "login": "small-name", "name": "Small" }).to_string();
    let r = http::send(
        Method::POST,
        &users,
        Some(d.admin_token()),
        Some(small.into_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 201, "admin body under the limit: {}", r.text());
    let list = http::get(&users, Some(d.admin_token())).text();
    assert!(!list.contains("huge-name"), "the refused user must not exist: {list}");
}

// ---------------------------------------------------------------------------------------------
// 8. Logs

/// The `request` events of a JSON log: `(method, route, status, registry, duration_ms)`.
fn request_lines(log: &str) -> Vec<(String, String, u64, String, f64)> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
        .filter(|v| v["fields"]["message"] == "request")
        .map(|v| {
            let f = &v["fields"];
            let s = |k: &str| {
                f[k].as_str()
                    .unwrap_or_else(|| panic!("request log line without string `{k}`: {v}"))
                    .to_owned()
            };
            (
                s("http.method"),
                s("http.route"),
                f["http.status"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("request log line without numeric `http.status`: {v}")),
                s("registry"),
                f["duration_ms"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("request log line without numeric `duration_ms`: {v}")),
            )
        })
        .collect()
}

#[test]
fn json_access_log_has_one_line_per_request_and_never_a_token() {
    let mut d = Proc::start_with_filter(HERMETIC_DEFAULT, &["--log-format", "json"], "info,cargohold=debug");
    let token = admin_user_token(&d.url, &d.admin_token, "logger");
    let bogus = random_secret();
    let (body, krate) = package::simple_publish("ops-logged", "0.1.0");
    let mut expected: Vec<(&str, &str, u64, &str)> = vec![
        ("POST", "/-/api/v1/users", 201, "-"),
        ("POST", "/-/api/v1/tokens", 201, "-"),
    ];
    let mut step = |method: Method,
                    path: &str,
                    tok: Option<&str>,
                    body: Option<Vec<u8>>,
                    want: (&'static str, u64, &'static str)| {
        let r = http::send(method.clone(), &d.url(path), tok, body, &[]);
        assert_eq!(r.status as u64, want.1, "{method} {path}: {}", r.text());
        expected.push((method_name(&method), want.0, want.1, want.2));
        r
    };
    step(Method::GET, "/-/healthz", None, None, ("/-/healthz", 200, "-"));
    step(
        Method::GET,
        "/local/index/config.json",
        Some(&token),
        None,
        ("/{reg}/index/config.json", 200, "local"),
    );
    step(
        Method::PUT,
        "/local/api/v1/crates/new",
        Some(&token),
        Some(body.clone()),
        ("/{reg}/api/v1/crates/new", 200, "local"),
    );
    step(
        Method::PUT,
        "/local/api/v1/crates/new",
        Some(&bogus),
        Some(body),
        ("/{reg}/api/v1/crates/new", 401, "local"),
    );
    step(
        Method::GET,
        &format!("/local/index/{}", index_path("ops-logged")),
        Some(&token),
        None,
        ("/{reg}/index/{path}", 200, "local"),
    );
    let dl = step(
        Method::GET,
        "/local/api/v1/crates/ops-logged/0.1.0/download",
        Some(&token),
        None,
        ("/{reg}/api/v1/crates/{name}/{version}/download", 200, "local"),
    );
    assert_eq!(dl.body, krate);
    step(
        Method::GET,
        &format!("/local/index/{}", index_path("ops-not-there")),
        None,
        None,
        ("/{reg}/index/{path}", 404, "local"),
    );
    step(
        Method::GET,
        "/nowhere/at/all",
        Some(&token),
        None,
        ("unmatched", 404, "-"),
    );
    step(Method::GET, "/-/metrics", None, None, ("/-/metrics", 200, "-"));

    // Each response is logged before it is sent; wait for the pipe to deliver the lines.
    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let lines = request_lines(&d.log());
        if lines.len() >= expected.len() || Instant::now() > deadline {
            break lines;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let got: Vec<(&str, &str, u64, &str)> = lines
        .iter()
        .map(|(m, r, s, reg, _)| (m.as_str(), r.as_str(), *s, reg.as_str()))
        .collect();
    assert_eq!(
        got,
        expected,
        "one access-log line per request, in order\n{}",
        d.log_tail()
    );
    for (_, _, _, _, ms) in &lines {
        assert!(ms.is_finite() && *ms >= 0.0, "duration_ms {ms}");
    }
    let log = d.log();
    for line in log.lines().filter(|l| l.contains("ops-logged")) {
        let v: Value = serde_json::from_str(line).expect("JSON");
        assert_ne!(
            v["fields"]["message"], "request",
            "an access-log line names a crate: {line}"
        );
    }

    // Secrets never reach the logs, whatever happens (success, refusal, shutdown).
    d.signal("TERM");
    let status = d.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", d.log_tail());
    let (log, out) = (d.log(), d.stdout_log());
    for (what, secret) in [
        ("user token", &token),
        ("admin token", &d.admin_token),
        ("bogus token", &bogus),
    ] {
        assert!(
            !log.contains(secret.as_str()),
            "the {what} appears in the daemon's stderr log"
        );
        assert!(
            !out.contains(secret.as_str()),
            "the {what} appears in the daemon's stdout"
        );
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

#[test]
fn tokens_never_reach_the_text_log() {
    let d = Daemon::start();
    let token = d.user_token("text-logger", &[]);
    let (body, _) = package::simple_publish("ops-text-logged", "0.1.0");
    let r = http::publish_raw(&d.api_url("local"), Some(&token), body);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http::get(&d.url("/-/api/v1/tokens"), Some(d.admin_token()));
    assert_eq!(r.status, 200);
    let bogus = random_secret();
    let r = http::get(&d.url("/-/api/v1/users"), Some(&bogus));
    assert_eq!(r.status, 401, "{}", r.text());
    let r = http::get(&d.url("/local/me"), Some(&token));
    assert_eq!(r.status, 200);
    // The request lines are written before the responses: all are in the pipe by now.
    let deadline = Instant::now() + WAIT;
    while !d.stderr_log().contains("/{reg}/me") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let (log, out) = (d.stderr_log(), d.stdout_log());
    assert!(log.contains("/{reg}/me"), "access log line of the last request\n{log}");
    for (what, secret) in [
        ("user token", token.as_str()),
        ("admin token", d.admin_token()),
        ("bogus token", &bogus),
    ] {
        assert!(!log.contains(secret), "the {what} appears in the daemon's stderr log");
        assert!(!out.contains(secret), "the {what} appears in the daemon's stdout");
    }
}

#[test]
fn sighup_without_tls_is_logged_and_harmless() {
    let mut d = Proc::start(HERMETIC_DEFAULT, &[]);
    d.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while !d.log().contains("nothing to reload") {
        assert!(Instant::now() < deadline, "SIGHUP was not logged\n{}", d.log());
        assert!(d.try_exit_status().is_none(), "SIGHUP stopped the daemon\n{}", d.log());
        thread::sleep(Duration::from_millis(50));
    }
    assert!(d.try_exit_status().is_none());
    assert_eq!(http::get(&format!("{}/-/healthz", d.url), None).status, 200);
    d.signal("TERM");
    assert!(d.wait_exit(WAIT).success());
}

#[test]
fn idle_keep_alive_connections_are_closed_but_busy_ones_are_not() {
    let d = Daemon::start_with_config(&format!("[limits]\nidle_timeout = \"1s\"\n\n{HERMETIC_DEFAULT}"));
    let addr = d.base_url().trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    use std::io::{Read, Write};
    conn.write_all(b"GET /-/healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Now idle: the server closes the connection (read returns 0) well before our 20 s guard.
    let started = Instant::now();
    let n = conn.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was closed");
    assert!(started.elapsed() < Duration::from_secs(20));
    // A slow but progressing download is not cut: covered by the SIGTERM test's slow reader.
    assert_eq!(http::get(&d.url("/-/healthz"), None).status, 200);
}
