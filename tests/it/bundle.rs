//! `cargohold export` / `cargohold import`: a proxy's cached content carried across an air gap
//! in a verified bundle, served by an offline proxy exactly as the live one served it; damaged
//! bundles and increments without their base refused with the registry unchanged; increments.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cargohold::cli::bundle::read_manifest;

use crate::support::daemon::{scrub_env, Daemon, BIN};
use crate::support::fake_upstream::{FakeUpstream, Package};
use crate::support::{http, sha256_hex};

const OFFLINE: &str = "[registries.mirror]\nkind = \"proxy\"\noffline = true\n";

fn live_config(up: &FakeUpstream) -> String {
    format!(
        "[registries.mirror]\nkind = \"proxy\"\nupstream = \"{}\"\nindex_ttl = \"1h\"\n",
        up.index_url()
    )
}

fn cli(d: &Daemon, args: &[&str]) -> Output {
    run_cli(d.data_dir(), d.config_path().expect("a config file"), args)
}

fn run_cli(data: &Path, config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    scrub_env(&mut cmd);
    cmd.args(args)
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null());
    cmd.output().expect("run cargohold")
}

fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a terminal: plain progress lines, never control codes in a log.
    assert!(
        !out.stderr.contains(&0x1b),
        "{what} wrote control codes to a non-terminal:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a command that must fail; returns its stderr.
fn refused(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what} must be refused\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn export(d: &Daemon, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["export", "--registry", "mirror", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(cli(d, &args), "export")
}

fn import(d: &Daemon, file: &Path) -> Output {
    cli(d, &["import", file.to_str().unwrap()])
}

/// What a registry serves for these names: per index file its status, body hash and ETag; per
/// version its download status and body hash.
fn listing(d: &Daemon, pkgs: &[Package]) -> Vec<String> {
    let mut out = Vec::new();
    let mut names: Vec<&str> = pkgs.iter().map(Package::name).collect();
    names.sort();
    names.dedup();
    for n in names {
        let r = http::get(
            &d.url(&format!("/mirror/index/{}", cargohold::index::index_path(n))),
            None,
        );
        out.push(format!(
            "index {n}: {} {} {:?}",
            r.status,
            sha256_hex(&r.body),
            r.header("etag")
        ));
    }
    for p in pkgs {
        let r = http::get(
            &d.url(&format!("/mirror/api/v1/crates/{}/{}/download", p.name(), p.vers())),
            None,
        );
        let hash = if r.status == 200 {
            sha256_hex(&r.body)
        } else {
            String::new()
        };
        out.push(format!("crate {}@{}: {} {hash}", p.name(), p.vers(), r.status));
    }
    out
}

/// The entry paths a bundle's manifest lists, sorted.
fn entry_paths(bundle: &Path) -> Vec<String> {
    let mut paths: Vec<String> = read_manifest(bundle)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    paths.sort();
    paths
}

/// Publishes `name@vers` (a [`crate::support::package::simple_publish`] body) to `d`'s hosted
/// registry `local` with `token`.
fn publish_hosted(d: &Daemon, token: &str, name: &str, vers: &str) {
    let (body, _) = crate::support::package::simple_publish(name, vers);
    let r = http::publish_raw(&d.api_url("local"), Some(token), body);
    assert_eq!(r.status, 200, "publish {name} {vers}: {}", r.text());
}

fn fetch(d: &Daemon, p: &Package) {
    let r = http::get(
        &d.url(&format!("/mirror/api/v1/crates/{}/{}/download", p.name(), p.vers())),
        None,
    );
    assert_eq!(r.status, 200, "{}@{}", p.name(), p.vers());
    assert_eq!(r.body, p.crate_bytes());
}

#[test]
fn an_imported_bundle_is_served_offline_as_the_live_proxy_served_it() {
    let mut up = FakeUpstream::start_blocking();
    let pkgs = [
        Package::new("alpha", "1.0.0"),
        Package::new("beta", "2.0.0"),
        Package::new("beta", "2.1.0"),
    ];
    for p in &pkgs {
        up.add_crate(p);
    }
    let mut live = Daemon::start_with_config(&live_config(&up));
    fetch(&live, &pkgs[0]);
    fetch(&live, &pkgs[1]);
    // Only what was fetched (listing beta 2.1.0 on the live proxy would fetch it).
    let fetched = &pkgs[..2];
    let before = listing(&live, fetched);
    assert!(before.iter().all(|l| l.contains(": 200 ")), "{before:?}");
    live.stop();

    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("mirror.bundle");
    let said = export(&live, &bundle, &[]);
    assert!(said.contains("2 index file(s) and 2 crate file(s)"), "{said}");
    let m = read_manifest(&bundle).unwrap();
    assert_eq!(
        (m.registry.name.as_str(), m.registry.kind.as_str(), m.base.as_ref()),
        ("mirror", "proxy", None)
    );
    let mut paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "crates/alpha/1.0.0.crate",
            "crates/beta/2.0.0.crate",
            "index/al/ph/alpha",
            "index/be/ta/beta"
        ]
    );
    assert!(m
        .entries
        .iter()
        .all(|e| e.index.as_ref().is_none_or(|i| i.upstream_etag.is_some())));

    // The air-gapped side: no upstream at all, a fresh data dir, the bundle imported.
    let config = dir.path().join("offline.toml");
    std::fs::write(&config, OFFLINE).unwrap();
    let mut offline = Daemon::start_seeded(OFFLINE, |data| {
        let said = ok(run_cli(data, &config, &["import", bundle.to_str().unwrap()]), "import");
        assert!(said.contains("2 index file(s), 2 crate file(s)"), "{said}");
    });
    up.go_down_blocking();
    let after = listing(&offline, fetched);
    // The same bytes and ETags; beta 2.1.0 was never fetched, so it is not there.
    assert_eq!(after, before);
    let never = http::get(&offline.url("/mirror/api/v1/crates/beta/2.1.0/download"), None);
    assert_ne!(never.status, 200);
    for name in ["alpha", "beta"] {
        let url = offline.url(&format!("/mirror/index/{}", cargohold::index::index_path(name)));
        let etag = http::get(&url, None).header("etag").unwrap();
        let again = http::send(reqwest::Method::GET, &url, None, None, &[("if-none-match", &etag)]);
        assert_eq!(again.status, 304, "{name}");
    }

    // The daemon holds the data dir: an import is refused, saying why.
    let busy = refused(import(&offline, &bundle), "an import beside the running daemon");
    assert!(busy.contains("is the daemon running"), "{busy}");
    // The same bundle twice changes nothing.
    offline.stop();
    let twice = ok(import(&offline, &bundle), "the second import");
    assert!(twice.contains("nothing changed"), "{twice}");
    offline.restart();
    assert_eq!(listing(&offline, fetched), after);
}

/// Rewrites a bundle without the entry at `path` (the manifest still lists it).
fn without_entry(src: &Path, dst: &Path, path: &str) {
    let mut raw = Vec::new();
    zstd::Decoder::new(std::fs::File::open(src).unwrap())
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    let mut archive = tar::Archive::new(raw.as_slice());
    let mut b = tar::Builder::new(Vec::new());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if p == path {
            continue;
        }
        let mut h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        b.append_data(&mut h, &p, data.as_slice()).unwrap();
    }
    let tar = b.into_inner().unwrap();
    std::fs::write(dst, zstd::encode_all(tar.as_slice(), 3).unwrap()).unwrap();
}

/// Damaged copies of `bundle`: a flipped byte, the first half, one entry removed.
fn damaged(bundle: &Path, dir: &Path, entry: &str) -> Vec<(PathBuf, &'static str)> {
    let bytes = std::fs::read(bundle).unwrap();
    let flipped = dir.join("flipped.bundle");
    let mut f = bytes.clone();
    let i = f.len() * 2 / 3;
    f[i] ^= 0x40;
    std::fs::write(&flipped, f).unwrap();
    let truncated = dir.join("truncated.bundle");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let removed = dir.join("removed.bundle");
    without_entry(bundle, &removed, entry);
    vec![
        (flipped, "a flipped byte"),
        (truncated, "a truncated file"),
        (removed, "a removed entry"),
    ]
}

#[test]
fn damaged_bundles_and_missing_bases_are_refused_and_increments_add_up() {
    let up = FakeUpstream::start_blocking();
    let first = [
        Package::new("alpha", "1.0.0").size_padding(64 << 10),
        Package::new("beta", "2.0.0"),
    ];
    let later = [
        Package::new("beta", "2.1.0"),
        Package::new("gamma", "0.3.0").size_padding(64 << 10),
    ];
    let all: Vec<Package> = first.iter().chain(later.iter()).cloned().collect();
    for p in &all {
        up.add_crate(p);
    }
    let dir = tempfile::tempdir().unwrap();
    let (b1, b2, full) = (
        dir.path().join("b1.bundle"),
        dir.path().join("b2.bundle"),
        dir.path().join("full.bundle"),
    );
    let mut live = Daemon::start_with_config(&live_config(&up));
    for p in &first {
        fetch(&live, p);
    }
    live.stop();
    export(&live, &b1, &[]);
    live.restart();
    for p in &later {
        fetch(&live, p);
    }
    live.stop();
    let said = export(&live, &b2, &["--since", b1.to_str().unwrap()]);
    export(&live, &full, &[]);
    let (m1, m2) = (read_manifest(&b1).unwrap(), read_manifest(&b2).unwrap());
    // The increment carries only what is new: beta's index file did not change.
    let mut paths: Vec<&str> = m2.entries.iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "crates/beta/2.1.0.crate",
            "crates/gamma/0.3.0.crate",
            "index/ga/mm/gamma"
        ],
        "{said}"
    );
    assert_eq!(m2.base.as_deref(), Some(m1.id.as_str()));
    assert!(said.contains(&format!("an increment on {}", m1.id)), "{said}");

    let mut target = Daemon::start_with_config(OFFLINE);
    let empty = listing(&target, &all);
    assert!(empty.iter().all(|l| !l.contains(": 200")), "{empty:?}");
    target.stop();

    // Refused with the registry unchanged: an increment without its base, damaged bundles.
    let why = refused(import(&target, &b2), "an increment without its base");
    assert!(why.contains(&m1.id) && why.contains("has not been imported"), "{why}");
    let bad1 = dir.path().join("bad1");
    std::fs::create_dir(&bad1).unwrap();
    for (file, what) in damaged(&b1, &bad1, "crates/beta/2.0.0.crate") {
        let why = refused(import(&target, &file), what);
        assert!(
            (why.contains("refused") || why.contains("not a usable bundle")) && why.contains("entry `"),
            "{what}: {why}"
        );
        if what == "a removed entry" {
            assert!(why.contains("entry `crates/beta/2.0.0.crate` is missing"), "{why}");
        }
    }
    target.restart();
    assert_eq!(listing(&target, &all), empty);
    target.stop();

    ok(import(&target, &b1), "importing the first bundle");
    target.restart();
    let after_first = listing(&target, &all);
    assert_ne!(after_first, empty);
    target.stop();
    let bad2 = dir.path().join("bad2");
    std::fs::create_dir(&bad2).unwrap();
    for (file, what) in damaged(&b2, &bad2, "crates/gamma/0.3.0.crate") {
        let why = refused(import(&target, &file), what);
        assert!(
            (why.contains("refused") || why.contains("not a usable bundle")) && why.contains("entry `"),
            "{what}: {why}"
        );
    }
    target.restart();
    assert_eq!(listing(&target, &all), after_first);
    target.stop();

    // First then second = one full export, and importing again changes nothing.
    ok(import(&target, &b2), "importing the increment");
    assert!(ok(import(&target, &b2), "the increment again").contains("nothing changed"));
    target.restart();
    let chained = listing(&target, &all);
    assert!(chained.iter().all(|l| l.contains(": 200 ")), "{chained:?}");
    let config = dir.path().join("offline.toml");
    std::fs::write(&config, OFFLINE).unwrap();
    let whole = Daemon::start_seeded(OFFLINE, |data| {
        ok(
            run_cli(data, &config, &["import", full.to_str().unwrap()]),
            "importing the full export",
        );
    });
    assert_eq!(listing(&whole, &all), chained);
}

#[test]
fn a_limited_export_carries_the_named_crates_or_nothing() {
    let up = FakeUpstream::start_blocking();
    let pkgs = [Package::new("alpha", "1.0.0"), Package::new("beta", "2.0.0")];
    for p in &pkgs {
        up.add_crate(p);
    }
    let mut live = Daemon::start_with_config(&live_config(&up));
    for p in &pkgs {
        fetch(&live, p);
    }
    live.stop();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("crates.txt");
    let out = dir.path().join("limited.bundle");
    std::fs::write(&list, "beta@=2.0.0\n").unwrap();
    export(&live, &out, &["--crates", list.to_str().unwrap()]);
    let paths = entry_paths(&out);
    assert_eq!(paths, ["crates/beta/2.0.0.crate", "index/be/ta/beta"]);
    // A crate that is not cached: an error naming it, and no bundle.
    std::fs::write(&list, "beta@=2.0.0\nalpha@=9.0.0\n").unwrap();
    let missing = dir.path().join("missing.bundle");
    let out = cli(
        &live,
        &[
            "export",
            "--registry",
            "mirror",
            "--out",
            missing.to_str().unwrap(),
            "--crates",
            list.to_str().unwrap(),
        ],
    );
    let why = refused(out, "an export of an uncached crate");
    assert!(why.contains("alpha@=9.0.0"), "{why}");
    assert!(!missing.exists());
}

/// Issue 12's end to end: a connected proxy fetched a project's dependencies; a bundle limited
/// to its lockfile, imported into a fresh data dir of a proxy with no upstream at all, serves
/// real `cargo fetch --locked` and `cargo build --locked` from an empty CARGO_HOME.
#[test]
fn cargo_fetch_and_build_through_an_offline_proxy_filled_from_a_bundle() {
    use crate::support::cargo::CargoEnv;
    let mut up = FakeUpstream::start_blocking();
    up.add_crate(&Package::new("beta", "1.0.0").file("src/lib.rs", "pub fn beta() -> u32 {\n    2\n}\n"));
    up.add_crate(
        &Package::new("alpha", "1.0.0")
            .dep("beta", "^1")
            .file("src/lib.rs", "pub fn alpha() -> u32 {\n    beta::beta() + 1\n}\n"),
    );
    for v in ["0.1.0", "0.2.0"] {
        up.add_crate(&Package::new("gamma", v).file("src/lib.rs", "pub fn gamma() -> u32 {\n    7\n}\n"));
    }
    let proxy = |extra: &str| format!("[registries.crates-io]\nkind = \"proxy\"\n{extra}\n");
    let mut live = Daemon::start_with_config(&proxy(&format!("upstream = \"{}\"", up.index_url())));
    let manifest = "[package]\nname = \"app\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
                    [dependencies]\nalpha = \"1\"\ngamma = \"0.2\"\n";
    let main_rs = "fn main() {\n    assert_eq!(alpha::alpha() + gamma::gamma(), 10);\n}\n";
    let mut connected = CargoEnv::bare();
    connected
        .add_registry("mirror", &live.index_url("crates-io"))
        .replace_crates_io_with("mirror");
    let project = connected.project("app", manifest, &[("src/main.rs", main_rs)]);
    connected.must_succeed(&project, &["generate-lockfile"]);
    connected.must_succeed(&project, &["fetch"]);
    let lock = std::fs::read_to_string(project.join("Cargo.lock")).unwrap();
    live.stop();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("app.bundle");
    let out = cli(
        &live,
        &[
            "export",
            "--registry",
            "crates-io",
            "--out",
            bundle.to_str().unwrap(),
            "--lockfile",
            project.join("Cargo.lock").to_str().unwrap(),
        ],
    );
    let said = ok(out, "export --lockfile");
    assert!(said.contains("3 index file(s) and 3 crate file(s)"), "{said}");
    up.go_down_blocking();

    let offline_toml = proxy("offline = true");
    let config = dir.path().join("offline.toml");
    std::fs::write(&config, &offline_toml).unwrap();
    let offline = Daemon::start_seeded(&offline_toml, |data| {
        ok(run_cli(data, &config, &["import", bundle.to_str().unwrap()]), "import");
    });
    let mut air_gapped = CargoEnv::bare();
    air_gapped
        .add_registry("mirror", &offline.index_url("crates-io"))
        .replace_crates_io_with("mirror");
    let again = air_gapped.project("app", manifest, &[("src/main.rs", main_rs)]);
    std::fs::write(again.join("Cargo.lock"), &lock).unwrap();
    air_gapped.must_succeed(&again, &["fetch", "--locked"]);
    air_gapped.must_succeed(&again, &["build", "--locked"]);
}

/// A hosted registry's bundle is its backup: a fresh data dir restores its crates, versions,
/// owners and yanks (the same index files and downloads); an increment carries the new
/// `.crate` files and the records, and adds up.
#[test]
fn a_hosted_registry_bundle_restores_crates_owners_and_yanks() {
    use reqwest::Method;
    const HOSTED: &str = "[registries.local]\nkind = \"hosted\"\n\n[registries.p]\nkind = \"proxy\"\noffline = true\n";
    let mut src = Daemon::start_with_config(HOSTED);
    let alice = src.user_token("alice", &[]);
    src.add_user("bob");
    let publish = |d: &Daemon, name: &str, vers: &str| publish_hosted(d, &alice, name, vers);
    let versions = [("one", "1.0.0"), ("one", "1.1.0"), ("two", "0.1.0"), ("two", "0.2.0")];
    for (n, v) in &versions[..3] {
        publish(&src, n, v);
    }
    let yank = http::send(
        Method::DELETE,
        &src.url("/local/api/v1/crates/one/1.0.0/yank"),
        Some(&alice),
        None,
        &[],
    );
    assert_eq!(yank.status, 200, "{}", yank.text());
    let owners = http::send(
        Method::PUT,
        &src.url("/local/api/v1/crates/two/owners"),
        Some(&alice),
        Some(br#"{"users":["bob"]}"#.to_vec()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(owners.status, 200, "{}", owners.text());
    let state = |d: &Daemon| -> Vec<String> {
        let mut out = Vec::new();
        for name in ["one", "two"] {
            let r = http::get(
                &d.url(&format!("/local/index/{}", cargohold::index::index_path(name))),
                None,
            );
            out.push(format!("index {name}: {} {}", r.status, r.text()));
            let o = http::get(
                &d.url(&format!("/local/api/v1/crates/{name}/owners")),
                Some(d.admin_token()),
            );
            let mut logins: Vec<String> = o.json()["users"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u["login"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            logins.sort();
            out.push(format!("owners {name}: {} {logins:?}", o.status));
        }
        for (n, v) in &versions {
            let r = http::get(&d.url(&format!("/local/api/v1/crates/{n}/{v}/download")), None);
            let hash = if r.status == 200 {
                sha256_hex(&r.body)
            } else {
                String::new()
            };
            out.push(format!("crate {n}@{v}: {} {hash}", r.status));
        }
        out
    };
    let before = state(&src);
    assert!(
        before[1].contains("\"alice\"") && before[3].contains("\"bob\""),
        "{before:?}"
    );
    assert!(before[0].contains("\"yanked\":true"), "{before:?}");
    src.stop();
    let dir = tempfile::tempdir().unwrap();
    let (b1, b2) = (dir.path().join("h1.bundle"), dir.path().join("h2.bundle"));
    let said = ok(
        cli(&src, &["export", "--registry", "local", "--out", b1.to_str().unwrap()]),
        "export of a hosted registry",
    );
    assert!(said.contains("3 crate file(s)"), "{said}");
    let m1 = read_manifest(&b1).unwrap();
    assert_eq!(m1.registry.kind, "hosted");

    let config = dir.path().join("hosted.toml");
    std::fs::write(&config, HOSTED).unwrap();
    let mut dst = Daemon::start_seeded(HOSTED, |data| {
        ok(
            run_cli(data, &config, &["import", b1.to_str().unwrap()]),
            "import of a hosted bundle",
        );
    });
    assert_eq!(state(&dst), before);

    // An increment: the records and the one new .crate.
    src.restart();
    publish(&src, "two", "0.2.0");
    let later = state(&src);
    src.stop();
    ok(
        cli(
            &src,
            &[
                "export",
                "--registry",
                "local",
                "--out",
                b2.to_str().unwrap(),
                "--since",
                b1.to_str().unwrap(),
            ],
        ),
        "an increment of a hosted registry",
    );
    let paths = entry_paths(&b2);
    assert_eq!(paths, ["crates/two/0.2.0.crate", "records.json"]);
    // An increment builds on a bundle of the same registry; a hosted bundle does not go into a proxy.
    let other = dir.path().join("other.bundle");
    let wrong = cli(
        &src,
        &[
            "export",
            "--registry",
            "p",
            "--out",
            other.to_str().unwrap(),
            "--since",
            b1.to_str().unwrap(),
        ],
    );
    assert_eq!(
        wrong.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let wrong = cli(&src, &["import", b1.to_str().unwrap(), "--registry", "p"]);
    assert_eq!(
        wrong.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("holds a hosted registry"));
    dst.stop();
    ok(import(&dst, &b2), "importing the increment");
    assert!(ok(import(&dst, &b2), "again").contains("nothing changed"));
    dst.restart();
    assert_eq!(state(&dst), later);

    // A bundle restores and adds; it never drops or changes a version published here: a
    // registry where `one` has a version the bundle lacks refuses it and stays as it was.
    let mut third = Daemon::start_with_config(HOSTED);
    let tok = third.user_token("alice", &[]);
    publish_hosted(&third, &tok, "one", "9.0.0");
    let index_of_one = |d: &Daemon| {
        http::get(
            &d.url(&format!("/local/index/{}", cargohold::index::index_path("one"))),
            None,
        )
        .text()
    };
    let kept = index_of_one(&third);
    third.stop();
    let err = refused(import(&third, &b1), "a bundle that would drop a published version");
    assert!(err.contains("published versions never change"), "{err}");
    third.restart();
    assert_eq!(index_of_one(&third), kept);
}

#[test]
fn an_online_proxy_of_another_upstream_refuses_a_bundle_unless_named() {
    let up = FakeUpstream::start_blocking();
    let alpha = Package::new("alpha", "1.0.0");
    up.add_crate(&alpha);
    let mut live = Daemon::start_with_config(&live_config(&up));
    fetch(&live, &alpha);
    live.stop();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("mirror.bundle");
    export(&live, &bundle, &[]);

    // Another proxy named `mirror`, online, over another upstream.
    let other = FakeUpstream::start_blocking();
    let config = dir.path().join("other.toml");
    std::fs::write(&config, live_config(&other)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let err = refused(
        run_cli(data.path(), &config, &["import", bundle.to_str().unwrap()]),
        "a bundle of another upstream into an online proxy",
    );
    assert!(err.contains("pass --registry mirror"), "{err}");
    ok(
        run_cli(
            data.path(),
            &config,
            &["import", bundle.to_str().unwrap(), "--registry", "mirror"],
        ),
        "the same, named explicitly",
    );
}

/// The main mode: `export` and `import` through running daemons' admin API. The bundle streams
/// out of the live proxy while it serves; the offline daemon keeps running, verifies the upload
/// completely, and serves the content at the next request: a name it had answered 404 for
/// (cached in memory) is found, with the live proxy's bytes, ETags and 304s. A damaged upload
/// is refused naming the entry, with the registry unchanged; a wrong token is refused before
/// any upload; increments go the same way.
#[test]
fn bundles_go_through_running_daemons_and_are_served_at_once() {
    let up = FakeUpstream::start_blocking();
    let first = [
        Package::new("alpha", "1.0.0").size_padding(64 << 10),
        Package::new("beta", "2.0.0"),
    ];
    let later = Package::new("beta", "2.1.0");
    for p in first.iter().chain([&later]) {
        up.add_crate(p);
    }
    let live = Daemon::start_with_config(&live_config(&up));
    for p in &first {
        fetch(&live, p);
    }
    let before = listing(&live, &first);
    let dir = tempfile::tempdir().unwrap();
    let (b1, b2) = (dir.path().join("b1.bundle"), dir.path().join("b2.bundle"));
    let said = ok(
        live.admin(&["export", "--registry", "mirror", "--out", b1.to_str().unwrap()]),
        "an export through the running daemon",
    );
    assert!(said.contains("2 index file(s) and 2 crate file(s)"), "{said}");
    assert!(!dir.path().join("b1.bundle.partial").exists());

    let offline = Daemon::start_with_config(OFFLINE);
    // Asked before the import: a 404, which the daemon keeps in memory.
    let alpha_index = offline.url(&format!("/mirror/index/{}", cargohold::index::index_path("alpha")));
    assert_eq!(http::get(&alpha_index, None).status, 404);
    let listing_before = listing(&offline, &first);

    // A damaged upload is refused, naming the entry or the damage; nothing changes.
    for (bad, what) in damaged(&b1, dir.path(), "crates/alpha/1.0.0.crate") {
        let err = refused(offline.admin(&["import", bad.to_str().unwrap()]), what);
        assert!(
            err.contains("is refused") || err.contains("not a usable bundle"),
            "{what}: {err}"
        );
        assert!(err.contains(bad.to_str().unwrap()), "{what} names the file: {err}");
        assert_eq!(listing(&offline, &first), listing_before, "{what}");
    }
    // A wrong token is refused before the upload.
    let mut cmd = Command::new(BIN);
    scrub_env(&mut cmd);
    let out = cmd
        .args(["--server", offline.base_url(), "import", b1.to_str().unwrap()])
        .env("CARGOHOLD_ADMIN_TOKEN", "not-the-token")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    let said = ok(
        offline.admin(&["import", b1.to_str().unwrap()]),
        "an import into the running daemon",
    );
    assert!(said.contains("2 index file(s), 2 crate file(s)"), "{said}");
    // Served at once, exactly as the live proxy served it.
    assert_eq!(listing(&offline, &first), before);
    let etag = http::get(&alpha_index, None).header("etag").unwrap();
    let again = http::send(
        reqwest::Method::GET,
        &alpha_index,
        None,
        None,
        &[("if-none-match", &etag)],
    );
    assert_eq!(again.status, 304);
    let twice = ok(
        offline.admin(&["import", b1.to_str().unwrap()]),
        "the same bundle again",
    );
    assert!(twice.contains("nothing changed"), "{twice}");

    // An increment, also through both daemons: only what is new travels.
    fetch(&live, &later);
    ok(
        live.admin(&[
            "export",
            "--registry",
            "mirror",
            "--out",
            b2.to_str().unwrap(),
            "--since",
            b1.to_str().unwrap(),
        ]),
        "an increment through the running daemon",
    );
    let paths = entry_paths(&b2);
    // beta's index file (already listing 2.1.0) is unchanged: only the new .crate travels,
    // checked on import against the index file the offline daemon holds.
    assert_eq!(paths, ["crates/beta/2.1.0.crate"]);
    ok(offline.admin(&["import", b2.to_str().unwrap()]), "the increment");
    let all: Vec<Package> = first.iter().cloned().chain([later]).collect();
    assert_eq!(listing(&offline, &all), listing(&live, &all));
}

/// A hosted registry through the admin API: exported from one running daemon, imported into
/// another that had answered 404 for the crate, which then serves its index file and download
/// at once; an export of crates the registry lacks writes nothing.
#[test]
fn a_hosted_bundle_goes_through_running_daemons() {
    const HOSTED: &str = "[registries.local]\nkind = \"hosted\"\n";
    let src = Daemon::start_with_config(HOSTED);
    let alice = src.user_token("alice", &[]);
    publish_hosted(&src, &alice, "solo", "1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("hosted.bundle");
    let list = dir.path().join("crates.txt");
    std::fs::write(&list, "nosuch\n").unwrap();
    let err = refused(
        src.admin(&[
            "export",
            "--registry",
            "local",
            "--out",
            b.to_str().unwrap(),
            "--crates",
            list.to_str().unwrap(),
        ]),
        "an export of a crate the registry lacks",
    );
    assert!(err.contains("no crate `nosuch`"), "{err}");
    assert!(!b.exists());
    ok(
        src.admin(&["export", "--registry", "local", "--out", b.to_str().unwrap()]),
        "an export of a hosted registry through the daemon",
    );

    let dst = Daemon::start_with_config(HOSTED);
    let index = |d: &Daemon| {
        http::get(
            &d.url(&format!("/local/index/{}", cargohold::index::index_path("solo"))),
            None,
        )
    };
    assert_eq!(index(&dst).status, 404);
    let said = ok(
        dst.admin(&["import", b.to_str().unwrap()]),
        "an import of a hosted bundle",
    );
    assert!(said.contains("1 crate file(s)"), "{said}");
    let (want, got) = (index(&src), index(&dst));
    assert_eq!((got.status, got.text()), (200, want.text()));
    let dl = http::get(&dst.url("/local/api/v1/crates/solo/1.0.0/download"), None);
    assert_eq!(dl.status, 200);
    assert_eq!(
        dl.body,
        http::get(&src.url("/local/api/v1/crates/solo/1.0.0/download"), None).body
    );
}

/// Rewrites a bundle with the entry at `path` changed by `edit`, its size and SHA-256 updated
/// in the manifest (a well-formed bundle with hostile content).
fn with_entry_edited(src: &Path, dst: &Path, path: &str, edit: impl Fn(Vec<u8>) -> Vec<u8>) {
    let mut raw = Vec::new();
    zstd::Decoder::new(std::fs::File::open(src).unwrap())
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for e in tar::Archive::new(raw.as_slice()).entries().unwrap() {
        let mut e = e.unwrap();
        let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push((p, data));
    }
    let i = entries.iter().position(|(p, _)| p == path).unwrap();
    entries[i].1 = edit(std::mem::take(&mut entries[i].1));
    let mut manifest: serde_json::Value = serde_json::from_slice(&entries[0].1).unwrap();
    for m in manifest["entries"].as_array_mut().unwrap() {
        if m["path"] == path {
            m["size"] = entries[i].1.len().into();
            m["sha256"] = sha256_hex(&entries[i].1).into();
        }
    }
    entries[0].1 = serde_json::to_vec(&manifest).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in &entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, p, data.as_slice()).unwrap();
    }
    std::fs::write(dst, zstd::encode_all(b.into_inner().unwrap().as_slice(), 3).unwrap()).unwrap();
}

/// A hosted bundle is hostile input even when its hashes agree: an owner who is neither a user
/// in the bundle nor one here (whoever took that login later would own the crate) is refused,
/// and so is a crate with no owner; the registry is unchanged.
#[test]
fn a_hosted_bundle_naming_unknown_owners_is_refused() {
    const HOSTED: &str = "[registries.local]\nkind = \"hosted\"\n";
    let src = Daemon::start_with_config(HOSTED);
    let alice = src.user_token("alice", &[]);
    publish_hosted(&src, &alice, "owned", "1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.bundle");
    ok(
        src.admin(&["export", "--registry", "local", "--out", good.to_str().unwrap()]),
        "export",
    );
    let edit = |owners: serde_json::Value| {
        move |bytes: Vec<u8>| {
            let mut r: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            r["crates"][0]["owners"] = owners.clone();
            r["users"] = serde_json::json!([]);
            serde_json::to_vec(&r).unwrap()
        }
    };
    let (stranger, nobody) = (dir.path().join("stranger.bundle"), dir.path().join("nobody.bundle"));
    with_entry_edited(&good, &stranger, "records.json", edit(serde_json::json!(["mallory"])));
    with_entry_edited(&good, &nobody, "records.json", edit(serde_json::json!([])));
    let dst = Daemon::start_with_config(HOSTED);
    let index = dst.url(&format!("/local/index/{}", cargohold::index::index_path("owned")));
    for (bad, why) in [(&stranger, "owner `mallory`"), (&nobody, "has no owner")] {
        let err = refused(dst.admin(&["import", bad.to_str().unwrap()]), why);
        assert!(err.contains(why), "{err}");
        assert_eq!(http::get(&index, None).status, 404, "{why}");
    }
    // Sizes come from the manifest, checked before anything is read: no `.crate` larger than
    // a publish may send, no index files in a hosted registry's bundle.
    let small = Daemon::start_with_config(&format!("{HOSTED}\n[limits]\nmax_crate_size = \"64B\"\n"));
    let err = refused(
        small.admin(&["import", good.to_str().unwrap()]),
        "a .crate over max_crate_size",
    );
    assert!(err.contains("larger than `max_crate_size`"), "{err}");
    let with_index = dir.path().join("with-index.bundle");
    with_entry_edited(&good, &with_index, "manifest.json", |bytes| {
        let mut m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let e = m["entries"].as_array_mut().unwrap();
        e.push(serde_json::json!({
            "path": format!("index/{}", cargohold::index::index_path("zzz")),
            "size": 1u64 << 30,
            "sha256": "a".repeat(64),
            "index": {"name": "zzz", "upstream_etag": null, "upstream_last_modified": null, "fetched_at": 1}
        }));
        serde_json::to_vec(&m).unwrap()
    });
    let err = refused(
        dst.admin(&["import", with_index.to_str().unwrap()]),
        "an index file in a hosted bundle",
    );
    assert!(err.contains("never carries"), "{err}");
    assert_eq!(http::get(&index, None).status, 404);
}
