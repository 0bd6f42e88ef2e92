//! A hermetic environment for the real `cargo`: its own `CARGO_HOME` (with a `config.toml`),
//! its own target directory, and a *directory source* standing in for crates.io, so nothing
//! ever leaves 127.0.0.1.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use tempfile::TempDir;

use super::daemon::{format_log_tail, scrub_env, Daemon, Log};

/// What one cargo invocation produced.
#[derive(Debug)]
pub struct CargoOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    pub command: String,
}

impl CargoOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// The cargo binary to run: `$CARGO` (set by cargo and nextest for test processes), else
/// `cargo` from `PATH`.
pub fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// A crate of the fake crates.io directory source.
#[derive(Debug, Clone)]
pub struct FakeCrate {
    pub name: String,
    pub vers: String,
    pub lib_rs: String,
}

/// A temporary `CARGO_HOME` + target dir + project folders.
pub struct CargoEnv {
    root: TempDir,
    registries: Vec<(String, String)>,
    credential_providers: bool,
    multiplexing: Option<bool>,
    fake_crates: Vec<FakeCrate>,
    env: Vec<(String, String)>,
    daemon_log: Option<Log>,
    /// `[source.crates-io] replace-with` target; `None` = the fake directory source.
    crates_io_replacement: Option<String>,
}

impl CargoEnv {
    /// An environment knowing the daemon's `local` registry (`[registries.local]`), with the fake
    /// crates.io holding `fakedep 1.0.0`.
    pub fn new(daemon: &Daemon) -> CargoEnv {
        let mut env = CargoEnv::bare();
        env.daemon_log = Some(daemon.log_handle());
        env.registries.push(("local".to_owned(), daemon.index_url("local")));
        env.write_config();
        env
    }

    /// An environment without any alternative registry (only the fake crates.io).
    pub fn bare() -> CargoEnv {
        check_toolchain();
        let root = tempfile::Builder::new()
            .prefix("cargohold-cargo-")
            .tempdir()
            .expect("create cargo temp dir");
        for sub in ["home", "target", "fake-crates-io", "projects"] {
            std::fs::create_dir_all(root.path().join(sub)).expect("create cargo env dirs");
        }
        let mut env = CargoEnv {
            root,
            registries: Vec::new(),
            credential_providers: false,
            multiplexing: None,
            fake_crates: Vec::new(),
            env: Vec::new(),
            daemon_log: None,
            crates_io_replacement: None,
        };
        env.add_fake_crate(
            "fakedep",
            "1.0.0",
            "//! Stand-in for a crates.io crate.\npub fn answer() -> u32 {\n    42\n}\n",
        );
        env.write_config();
        env
    }

    /// Adds `[registries.{name}] index = "{index_url}"`.
    pub fn add_registry(&mut self, name: &str, index_url: &str) -> &mut Self {
        self.registries.retain(|(n, _)| n != name);
        self.registries.push((name.to_owned(), index_url.to_owned()));
        self.write_config();
        self
    }

    /// Replaces crates.io with the `[registries]` entry `name` (e.g. the daemon's proxy)
    /// instead of the fake directory source.
    pub fn replace_crates_io_with(&mut self, name: &str) -> &mut Self {
        self.crates_io_replacement = Some(name.to_owned());
        self.write_config();
        self
    }

    /// Sets `[registry] global-credential-providers = ["cargo:token"]` (needed for
    /// auth-required registries).
    pub fn with_credential_provider(&mut self) -> &mut Self {
        self.credential_providers = true;
        self.write_config();
        self
    }

    /// Sets `[http] multiplexing`.
    pub fn set_multiplexing(&mut self, on: bool) -> &mut Self {
        self.multiplexing = Some(on);
        self.write_config();
        self
    }

    /// Sets an environment variable for every later cargo invocation.
    pub fn set_env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a crate to the fake crates.io (a directory source replacing crates-io).
    pub fn add_fake_crate(&mut self, name: &str, vers: &str, lib_rs: &str) -> &mut Self {
        let dir = self.fake_registry_dir().join(format!("{name}-{vers}"));
        std::fs::create_dir_all(dir.join("src")).expect("create fake crate dir");
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\n\
                 description = \"fake crates.io crate\"\nlicense = \"MIT\"\n"
            ),
        )
        .expect("write fake Cargo.toml");
        std::fs::write(dir.join("src/lib.rs"), lib_rs).expect("write fake lib.rs");
        // A directory source needs a checksum file per package; an empty `files` map skips the
        // per-file verification and a null `package` means "no checksum" in lockfiles.
        std::fs::write(dir.join(".cargo-checksum.json"), r#"{"files":{},"package":null}"#)
            .expect("write .cargo-checksum.json");
        self.fake_crates.push(FakeCrate {
            name: name.to_owned(),
            vers: vers.to_owned(),
            lib_rs: lib_rs.to_owned(),
        });
        self
    }

    pub fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    pub fn target_dir(&self) -> PathBuf {
        self.root.path().join("target")
    }

    pub fn fake_registry_dir(&self) -> PathBuf {
        self.root.path().join("fake-crates-io")
    }

    /// Path of `$CARGO_HOME/config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.home().join("config.toml")
    }

    /// The current `config.toml` text.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config_path()).unwrap_or_default()
    }

    fn write_config(&self) {
        let mut c = String::new();
        c.push_str("# written by the cargohold test suite\n");
        match &self.crates_io_replacement {
            Some(name) => {
                let _ = writeln!(c, "[source.crates-io]\nreplace-with = {}\n", toml_str(name));
            }
            None => {
                c.push_str("[source.crates-io]\nreplace-with = \"fake-crates-io\"\n\n");
                let _ = writeln!(
                    c,
                    "[source.fake-crates-io]\ndirectory = {}\n",
                    toml_str(&self.fake_registry_dir().to_string_lossy())
                );
            }
        }
        for (name, url) in &self.registries {
            let _ = writeln!(c, "[registries.{name}]\nindex = {}\n", toml_str(url));
        }
        if self.credential_providers {
            c.push_str("[registry]\nglobal-credential-providers = [\"cargo:token\"]\n\n");
        }
        c.push_str("[net]\nretry = 0\n\n");
        c.push_str("[http]\ntimeout = 30\n");
        if let Some(m) = self.multiplexing {
            let _ = writeln!(c, "multiplexing = {m}");
        }
        std::fs::write(self.config_path(), c).expect("write cargo config.toml");
    }

    /// Creates (or overwrites) a project directory `projects/{dir_name}` with `Cargo.toml` and
    /// the given extra files (e.g. `("src/lib.rs", "...")`); returns its path.
    pub fn project(&self, dir_name: &str, cargo_toml: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.root.path().join("projects").join(dir_name);
        std::fs::create_dir_all(&dir).expect("create project dir");
        std::fs::write(dir.join("Cargo.toml"), cargo_toml).expect("write project Cargo.toml");
        for (path, contents) in files {
            let p = dir.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("create project subdir");
            }
            std::fs::write(&p, contents).expect("write project file");
        }
        dir
    }

    /// The command for `cargo <args>` in `dir`, with a clean environment: every inherited
    /// `CARGO*`, `RUSTC*`, `RUSTDOC*`, `RUSTFLAGS`, proxy and make-jobserver variable removed,
    /// then `CARGO_HOME`, `CARGO_TARGET_DIR` and a few determinism settings set.
    pub fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(cargo_bin());
        clean_cargo_env(&mut cmd);
        cmd.args(args)
            .current_dir(dir)
            .env("CARGO_HOME", self.home())
            .env("CARGO_TARGET_DIR", self.target_dir())
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_TERM_PROGRESS_WHEN", "never")
            .env("CARGO_NET_RETRY", "0")
            .env("CARGO_HTTP_TIMEOUT", "30")
            .env("CARGO_INCREMENTAL", "0");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `cargo <args>` in `dir` with extra environment variables and optional stdin.
    pub fn cargo_with(&self, dir: &Path, args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> CargoOutput {
        let mut cmd = self.command(dir, args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let command = format!("cargo {}", args.join(" "));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin piped");
            pipe.write_all(input.as_bytes()).expect("write cargo stdin");
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {command}: {e}"));
        CargoOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            command,
        }
    }

    /// Runs `cargo <args>` in `dir`.
    pub fn cargo(&self, dir: &Path, args: &[&str]) -> CargoOutput {
        self.cargo_with(dir, args, &[], None)
    }

    /// Runs `cargo <args>` in `dir` and panics (showing both streams, the config and the daemon
    /// log) unless it succeeds.
    pub fn must_succeed(&self, dir: &Path, args: &[&str]) -> CargoOutput {
        self.must_succeed_with(dir, args, &[], None)
    }

    /// [`CargoEnv::must_succeed`] with extra environment variables and optional stdin.
    pub fn must_succeed_with(
        &self,
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> CargoOutput {
        let out = self.cargo_with(dir, args, envs, stdin);
        if !out.success() {
            panic!("{}", self.describe_failure("expected success", &out));
        }
        out
    }

    /// Runs `cargo <args>` in `dir` and panics unless it fails; returns the output.
    pub fn must_fail(&self, dir: &Path, args: &[&str]) -> CargoOutput {
        self.must_fail_with(dir, args, &[])
    }

    /// [`CargoEnv::must_fail`] with extra environment variables.
    pub fn must_fail_with(&self, dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> CargoOutput {
        let out = self.cargo_with(dir, args, envs, None);
        if out.success() {
            panic!("{}", self.describe_failure("expected failure", &out));
        }
        out
    }

    /// A report of one invocation: command, status, streams, config and the daemon log tail.
    pub fn describe_failure(&self, what: &str, out: &CargoOutput) -> String {
        let log = self.daemon_log.as_ref().map(format_log_tail).unwrap_or_default();
        format!(
            "`{}` ({what}) exited with {}\n--- cargo stdout ---\n{}\n--- cargo stderr ---\n{}\n\
             --- CARGO_HOME/config.toml ---\n{}\n{log}",
            out.command,
            out.status,
            out.stdout,
            out.stderr,
            self.config_text()
        )
    }

    /// Panics with [`CargoEnv::describe_failure`] unless `cond` holds.
    pub fn check(&self, cond: bool, what: &str, out: &CargoOutput) {
        if !cond {
            panic!("{}", self.describe_failure(what, out));
        }
    }
}

/// Removes the test runner's cargo/rustc variables from `cmd`; keeps `PATH`, `HOME`,
/// `RUSTUP_HOME` and `RUSTUP_TOOLCHAIN` (the toolchain must keep resolving to the one running
/// the tests).
pub fn clean_cargo_env(cmd: &mut Command) {
    scrub_env(cmd);
}

/// Checks once per process that `cargo --version` works in the clean environment.
fn check_toolchain() {
    static CHECKED: OnceLock<Result<String, String>> = OnceLock::new();
    let res = CHECKED.get_or_init(|| {
        let home = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(cargo_bin());
        clean_cargo_env(&mut cmd);
        let out = cmd
            .arg("--version")
            .env("CARGO_HOME", home.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", cargo_bin().display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "`cargo --version` failed in the clean environment: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = res {
        panic!("{e}");
    }
}

/// A TOML basic string literal.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads the `[[package]]` entries of a `Cargo.lock` as `(name, version, source)`.
pub fn lock_packages(lock_text: &str) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String, Option<String>)> = None;
    for line in lock_text.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            if let Some(p) = cur.take() {
                out.push(p);
            }
            cur = Some((String::new(), String::new(), None));
            continue;
        }
        if line.starts_with('[') {
            if let Some(p) = cur.take() {
                out.push(p);
            }
            continue;
        }
        let Some(p) = cur.as_mut() else { continue };
        let value = |l: &str| -> String {
            l.split_once('=')
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        if line.starts_with("name =") {
            p.0 = value(line);
        } else if line.starts_with("version =") {
            p.1 = value(line);
        } else if line.starts_with("source =") {
            p.2 = Some(value(line));
        }
    }
    if let Some(p) = cur {
        out.push(p);
    }
    out
}

/// The locked version of `name` in the project's `Cargo.lock` (panics if absent or ambiguous).
pub fn locked_version(project: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(project.join("Cargo.lock"))
        .unwrap_or_else(|e| panic!("read {}/Cargo.lock: {e}", project.display()));
    let found: Vec<_> = lock_packages(&text).into_iter().filter(|(n, _, _)| n == name).collect();
    assert_eq!(found.len(), 1, "expected exactly one `{name}` in Cargo.lock:\n{text}");
    found[0].1.clone()
}
