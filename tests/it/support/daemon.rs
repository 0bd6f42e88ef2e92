//! A `cargohold serve` child process on a temporary data directory, plus the admin CLI.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Path of the daemon binary built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_cargohold");

/// The line prefix the daemon prints once it is listening.
const LISTENING: &str = "cargohold listening on ";

/// How long to wait for the listening line (a fresh debug build may be slow to start on a
/// loaded 2-core machine). This is a liveness guard, not an assertion about speed.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared, growing text log (the daemon's stderr across restarts).
pub type Log = Arc<Mutex<String>>;

/// A running daemon. Dropping it kills the process; the data directory lives as long as the
/// struct, so [`Daemon::restart`] reuses it. When the test panics (or `CARGOHOLD_TEST_LOG` is
/// set) the daemon's stderr is printed on drop.
pub struct Daemon {
    data: TempDir,
    aux: TempDir,
    config_path: Option<PathBuf>,
    admin_token: String,
    child: Option<Child>,
    base_url: String,
    stderr: Log,
    stdout: Log,
    users: Mutex<HashSet<String>>,
    generation: u32,
    /// Variables set on every start (after the scrub), e.g. `HTTPS_PROXY`, `SSL_CERT_FILE`.
    extra_env: Vec<(String, String)>,
    /// Whether the daemon gets `CARGOHOLD_ADMIN_TOKEN`; without it, it bootstraps its own
    /// token into `<data_dir>/admin-token`, which `admin_token` then holds.
    env_admin: bool,
}

/// The embedded default with the crates.io proxy offline (hermetic).
pub const HERMETIC_DEFAULT: &str = r#"
[registries.crates-io]
kind = "proxy"
offline = true

[registries.local]
kind = "hosted"
upstreams = ["crates-io"]
"#;

impl Daemon {
    /// Starts `cargohold serve` with the embedded default's registries (`local` merged over a
    /// `crates-io` proxy), except that the proxy is `offline`, so no test ever sends traffic
    /// beyond loopback.
    pub fn start() -> Daemon {
        Self::start_inner(Some(HERMETIC_DEFAULT))
    }

    /// Starts `cargohold serve --config FILE` with `config_toml` written to a temporary file.
    pub fn start_with_config(config_toml: &str) -> Daemon {
        Self::start_inner(Some(config_toml))
    }

    /// [`Daemon::start_with_config`] with extra environment variables for the daemon (set after
    /// [`scrub_env`], so `*_PROXY` given here do reach it).
    pub fn start_with_config_env(config_toml: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_inner_with(Some(config_toml), true, env)
    }

    /// A node of a cluster: [`Daemon::start_with_config_env`] with `CARGOHOLD_ADMIN_TOKEN` set
    /// to `admin_token`, the one admin token every node sharing a store must have.
    pub fn start_node(config_toml: &str, env: &[(&str, &str)], admin_token: &str) -> Daemon {
        Self::start_inner_full(Some(config_toml), true, env, Some(admin_token), |_| {})
    }

    /// Like [`Daemon::start_with_config`], but without `CARGOHOLD_ADMIN_TOKEN`: the daemon
    /// generates its bootstrap admin token, which [`Daemon::admin_token`] reads from the file.
    pub fn start_with_bootstrap_token(config_toml: &str) -> Daemon {
        Self::start_inner_with(Some(config_toml), false, &[])
    }

    /// Like [`Daemon::start_with_config`], after `seed` has written into the (empty) data dir:
    /// a daemon starting on data an earlier release wrote.
    pub fn start_seeded(config_toml: &str, seed: impl FnOnce(&Path)) -> Daemon {
        Self::start_inner_seeded(Some(config_toml), true, &[], seed)
    }

    fn start_inner(config_toml: Option<&str>) -> Daemon {
        Self::start_inner_with(config_toml, true, &[])
    }

    fn start_inner_with(config_toml: Option<&str>, env_admin: bool, env: &[(&str, &str)]) -> Daemon {
        Self::start_inner_seeded(config_toml, env_admin, env, |_| {})
    }

    fn start_inner_seeded(
        config_toml: Option<&str>,
        env_admin: bool,
        env: &[(&str, &str)],
        seed: impl FnOnce(&Path),
    ) -> Daemon {
        Self::start_inner_full(config_toml, env_admin, env, None, seed)
    }

    fn start_inner_full(
        config_toml: Option<&str>,
        env_admin: bool,
        env: &[(&str, &str)],
        admin_token: Option<&str>,
        seed: impl FnOnce(&Path),
    ) -> Daemon {
        let data = tempfile::Builder::new()
            .prefix("cargohold-data-")
            .tempdir()
            .expect("create temp data dir");
        let aux = tempfile::Builder::new()
            .prefix("cargohold-aux-")
            .tempdir()
            .expect("create temp dir");
        let config_path = config_toml.map(|text| {
            let p = aux.path().join("cargohold.toml");
            std::fs::write(&p, text).expect("write daemon config");
            p
        });
        let mut d = Daemon {
            data,
            aux,
            config_path,
            admin_token: admin_token.map_or_else(super::random_secret, str::to_owned),
            child: None,
            base_url: String::new(),
            stderr: Arc::default(),
            stdout: Arc::default(),
            users: Mutex::default(),
            generation: 0,
            extra_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            env_admin,
        };
        seed(d.data.path());
        d.spawn();
        d
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The directory the daemon stores its state in (`--data-dir`).
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        self.generation += 1;
        {
            let mut log = self.stderr.lock().unwrap();
            log.push_str(&format!("===== cargohold serve, start #{} =====\n", self.generation));
        }
        let data_dir = self.data.path().to_path_buf();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0");
        if let Some(cfg) = &self.config_path {
            cmd.arg("--config").arg(cfg);
        }
        scrub_env(&mut cmd);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.env("RUST_LOG", "info");
        if self.env_admin {
            cmd.env("CARGOHOLD_ADMIN_TOKEN", &self.admin_token);
        } else {
            cmd.env_remove("CARGOHOLD_ADMIN_TOKEN");
        }
        cmd.current_dir(self.aux.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));

        let stderr = child.stderr.take().expect("stderr piped");
        let stderr_log = Arc::clone(&self.stderr);
        thread::spawn(move || drain(stderr, &stderr_log, None));

        let stdout = child.stdout.take().expect("stdout piped");
        let stdout_log = Arc::clone(&self.stdout);
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || drain(stdout, &stdout_log, Some(tx)));

        let deadline = Instant::now() + START_TIMEOUT;
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix(LISTENING) {
                        break rest.trim().trim_end_matches('/').to_owned();
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!(
                        "cargohold serve did not print `{LISTENING}...` ({e:?}); exit: {status:?}\n\
                         --- stdout ---\n{}\n--- stderr ---\n{}",
                        self.stdout.lock().unwrap(),
                        self.stderr.lock().unwrap()
                    );
                }
            }
        };
        assert!(url.starts_with("http://127.0.0.1:"), "unexpected listen URL {url:?}");
        self.base_url = url;
        self.child = Some(child);
        if !self.env_admin {
            if let Ok(t) = std::fs::read_to_string(self.data.path().join("admin-token")) {
                self.admin_token = t.trim().to_owned();
            }
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url() + path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `sparse+http://127.0.0.1:PORT/{reg}/index/`.
    pub fn index_url(&self, reg: &str) -> String {
        format!("sparse+{}/{reg}/index/", self.base_url)
    }

    /// The `api` base of a registry: `http://127.0.0.1:PORT/{reg}`.
    pub fn api_url(&self, reg: &str) -> String {
        format!("{}/{reg}", self.base_url)
    }

    /// The admin token the daemon was started with.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Runs `cargohold --server URL <args>` with the admin token in the environment.
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        scrub_env(&mut cmd);
        cmd.arg("--server")
            .arg(&self.base_url)
            .args(args)
            .env("CARGOHOLD_ADMIN_TOKEN", &self.admin_token)
            .stdin(Stdio::null());
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {BIN} {args:?}: {e}"))
    }

    /// Like [`Daemon::admin`] but panics (with both streams and the daemon log) unless the
    /// command exits 0; returns its trimmed stdout.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        if !out.status.success() {
            panic!(
                "admin command {args:?} failed: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates the user (once per daemon) with `cargohold user add`.
    pub fn add_user(&self, login: &str) {
        let mut users = self.users.lock().unwrap();
        if users.insert(login.to_owned()) {
            self.admin_ok(&["user", "add", login]);
        }
    }

    /// Adds the user if needed and creates a token for it. Empty `scopes` = the CLI default
    /// (read, publish, yank, owners).
    pub fn user_token(&self, login: &str, scopes: &[&str]) -> String {
        self.token_inner(login, scopes, None)
    }

    /// Like [`Daemon::user_token`], restricted to one registry (`--registry NAME`).
    pub fn user_token_for(&self, login: &str, scopes: &[&str], registry: &str) -> String {
        self.token_inner(login, scopes, Some(registry))
    }

    fn token_inner(&self, login: &str, scopes: &[&str], registry: Option<&str>) -> String {
        self.add_user(login);
        let joined = scopes.join(",");
        let mut args = vec!["token", "create", "--user", login];
        if !scopes.is_empty() {
            args.extend(["--scope", joined.as_str()]);
        }
        if let Some(reg) = registry {
            args.extend(["--registry", reg]);
        }
        let token = self.admin_ok(&args);
        assert!(
            !token.is_empty() && !token.contains('\n'),
            "`token create` must print exactly one token line, got {token:?}"
        );
        token
    }

    /// Kills the daemon with SIGKILL (`Child::kill`) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon gracefully (SIGTERM, like `systemctl stop`) and waits for it to exit:
    /// its caches are flushed and its databases unlocked, so commands that work on a stopped
    /// daemon's data directory can run. [`Daemon::restart`] starts it again.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("the daemon did not stop within 60 s of SIGTERM\n{}", self.log_tail());
                    }
                }
            }
        }
    }

    /// The `--config` file the daemon runs with, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Starts the daemon again on the same data directory (the port may change).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Everything the daemon wrote to stderr so far (all starts).
    pub fn stderr_log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything the daemon wrote to stdout so far.
    pub fn stdout_log(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// A handle on the stderr log that stays valid across restarts.
    pub fn log_handle(&self) -> Log {
        Arc::clone(&self.stderr)
    }

    /// The last lines of the stderr log, formatted for a panic message.
    pub fn log_tail(&self) -> String {
        format_log_tail(&self.stderr)
    }

    /// A scratch directory that lives as long as the daemon (the daemon's working directory;
    /// holds the `--config` file when there is one).
    pub fn scratch_dir(&self) -> &Path {
        self.aux.path()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::env::var_os("CARGOHOLD_TEST_LOG").is_some() {
            eprintln!("--- cargohold daemon log ---\n{}", self.stderr_log());
        } else if thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// The last 300 lines of a log, with a header.
pub fn format_log_tail(log: &Log) -> String {
    let text = log.lock().map(|l| l.clone()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(300);
    format!(
        "--- cargohold daemon log (last {} of {} lines) ---\n{}",
        lines.len() - skip,
        lines.len(),
        lines[skip..].join("\n")
    )
}

/// Removes variables of the test runner that could leak into a child process (cargo's own
/// `CARGO_*`, rustc settings, proxies).
pub fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        let upper = k.to_ascii_uppercase();
        let drop = upper.starts_with("CARGO")
            || upper.starts_with("__CARGO")
            || upper.starts_with("RUSTC")
            || upper.starts_with("RUSTDOC")
            || upper == "RUSTFLAGS"
            || upper.ends_with("_PROXY")
            || upper == "MAKEFLAGS"
            || upper == "MFLAGS";
        if drop {
            cmd.env_remove(&key);
        }
    }
}

/// Copies a child's stream into `log` line by line (and to `tx`, if given).
pub fn drain(stream: impl Read, log: &Log, tx: Option<mpsc::Sender<String>>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).into_owned();
                if let Ok(mut l) = log.lock() {
                    l.push_str(&line);
                    if !line.ends_with('\n') {
                        l.push('\n');
                    }
                }
                if let Some(tx) = &tx {
                    let _ = tx.send(line);
                }
            }
        }
    }
}
