//! End-to-end tests: the real `cargo` against a running `cargohold serve`. Each test starts its
//! own daemon and its own hermetic cargo environment (crates.io is replaced by a local
//! directory source holding `fakedep 1.0.0`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::cargo::{locked_version, CargoEnv, CargoOutput};
use crate::support::daemon::Daemon;
use crate::support::{expand_dl, http, index_path, package, parse_index_lines, sha256_hex};

const DEP_FIELDS: [&str; 9] = [
    "name",
    "req",
    "features",
    "optional",
    "default_features",
    "target",
    "kind",
    "registry",
    "package",
];

/// `Cargo.toml` of a library crate with the given `[dependencies]` body.
fn lib_manifest(name: &str, vers: &str, deps: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\n\
         description = \"{name}: cargohold end-to-end test crate\"\nlicense = \"MIT\"\n\n\
         [dependencies]\n{deps}"
    )
}

/// Writes a library project `projects/{name}-{vers}` and returns its directory.
fn lib_project(env: &CargoEnv, name: &str, vers: &str, deps: &str, lib_rs: &str) -> PathBuf {
    env.project(
        &format!("{name}-{vers}"),
        &lib_manifest(name, vers, deps),
        &[("src/lib.rs", lib_rs)],
    )
}

/// `cargo publish --registry {reg} --allow-dirty` (with the real verify build) in `dir`.
fn publish(env: &CargoEnv, dir: &Path, reg: &str, extra: &[&str]) -> CargoOutput {
    let mut args = vec!["publish", "--registry", reg, "--allow-dirty"];
    args.extend_from_slice(extra);
    env.must_succeed(dir, &args)
}

/// Publishes a dependency-free library `name@vers` to `local` with `token`.
fn publish_simple(env: &CargoEnv, name: &str, vers: &str, token: &str) {
    let dir = lib_project(
        env,
        name,
        vers,
        "",
        &format!("pub fn version() -> &'static str {{ \"{vers}\" }}\n"),
    );
    publish(env, &dir, "local", &["--token", token]);
}

/// Fetches and parses `config.json` of a registry (optionally with a token).
fn config_json(daemon: &Daemon, reg: &str, token: Option<&str>) -> Value {
    let resp = http::get(&daemon.url(&format!("/{reg}/index/config.json")), token);
    assert_eq!(
        resp.status,
        200,
        "config.json of {reg}: {}\n{}",
        resp.text(),
        daemon.log_tail()
    );
    resp.json()
}

/// All lines of a crate's index file (panics unless the file answers 200).
fn index_lines(daemon: &Daemon, reg: &str, name: &str, token: Option<&str>) -> Vec<Value> {
    let url = daemon.url(&format!("/{reg}/index/{}", index_path(name)));
    let resp = http::get(&url, token);
    assert_eq!(resp.status, 200, "GET {url}: {}\n{}", resp.text(), daemon.log_tail());
    parse_index_lines(&resp.text())
}

/// The index line of `name@vers` (exact version string).
fn index_line(daemon: &Daemon, reg: &str, name: &str, vers: &str, token: Option<&str>) -> Value {
    let lines = index_lines(daemon, reg, name, token);
    let found: Vec<&Value> = lines.iter().filter(|l| l["vers"] == vers).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one line for {name}@{vers} in the {reg} index, lines: {lines:#?}"
    );
    found[0].clone()
}

/// Downloads a version through the `dl` template of `config.json`; returns the bytes after
/// checking status, encoding and checksum against the index line.
fn download_checked(daemon: &Daemon, reg: &str, line: &Value, token: Option<&str>) -> Vec<u8> {
    let cfg = config_json(daemon, reg, token);
    let dl = cfg["dl"].as_str().expect("config.json `dl` is a string");
    let name = line["name"].as_str().unwrap();
    let vers = line["vers"].as_str().unwrap();
    let cksum = line["cksum"].as_str().expect("index line has a string cksum");
    let url = expand_dl(dl, name, vers, cksum);
    let resp = http::get(&url, token);
    assert_eq!(
        resp.status,
        200,
        "download {url}: {}\n{}",
        resp.text(),
        daemon.log_tail()
    );
    assert!(
        resp.header("content-encoding").is_none(),
        ".crate must not be served with a Content-Encoding: {:?}",
        resp.headers
    );
    assert_eq!(
        sha256_hex(&resp.body),
        cksum,
        "sha256 of {url} differs from the index cksum"
    );
    resp.body
}

/// `YYYY-MM-DDTHH:MM:SSZ` exactly.
fn is_pubtime(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn assert_all_dep_fields(line: &Value) {
    for dep in line["deps"].as_array().expect("deps is an array") {
        for field in DEP_FIELDS {
            assert!(
                dep.get(field).is_some(),
                "dependency field `{field}` missing in {dep} (line {line})"
            );
        }
    }
}

fn dep_named<'a>(line: &'a Value, name: &str) -> &'a Value {
    line["deps"]
        .as_array()
        .expect("deps is an array")
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no dependency named {name} in {line}"))
}

/// A consumer binary project with the given `[dependencies]` body.
fn bin_project(env: &CargoEnv, dir_name: &str, deps: &str, main_rs: &str) -> PathBuf {
    env.project(
        dir_name,
        &format!(
            "[package]\nname = \"{dir_name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             publish = false\n\n[dependencies]\n{deps}"
        ),
        &[("src/main.rs", main_rs)],
    )
}

/// Checklist 12, 13, 15, 28, 33 (crates.io part), 26 (login via stdin).
#[test]
fn publish_with_crates_io_dep_records_git_index_url() {
    let daemon = Daemon::start();
    let token = daemon.user_token("alice", &[]);
    let env = CargoEnv::new(&daemon);

    let cfg = config_json(&daemon, "local", None);
    assert_eq!(cfg["api"], daemon.api_url("local"), "config.json: {cfg}");
    assert!(cfg["dl"].is_string(), "config.json without dl: {cfg}");

    let dir = lib_project(
        &env,
        "acme-core",
        "0.1.0",
        "fakedep = \"1\"\n",
        "pub fn answer() -> u32 {\n    fakedep::answer()\n}\n",
    );
    let login = env.must_succeed_with(
        &dir,
        &["login", "--registry", "local"],
        &[],
        Some(&format!("{token}\n")),
    );
    let creds = std::fs::read_to_string(env.home().join("credentials.toml")).unwrap_or_default();
    env.check(
        creds.contains(&token),
        "`cargo login` stores the token in credentials.toml",
        &login,
    );

    let out = publish(&env, &dir, "local", &[]);
    env.check(
        out.stderr.contains("Published acme-core v0.1.0"),
        "cargo saw the new version in the index after publishing",
        &out,
    );

    let line = index_line(&daemon, "local", "acme-core", "0.1.0", None);
    assert_eq!(line["name"], "acme-core");
    assert_eq!(line["yanked"], false, "{line}");
    assert_all_dep_fields(&line);
    let dep = dep_named(&line, "fakedep");
    assert_eq!(dep["registry"], tame_index::CRATES_IO_INDEX, "{line}");
    assert_eq!(dep["req"], "^1", "{line}");
    assert_eq!(dep["kind"], "normal", "{line}");
    assert_eq!(dep["package"], Value::Null, "{line}");
    assert_eq!(dep["optional"], false, "{line}");
    assert_eq!(dep["default_features"], true, "{line}");
    assert_eq!(dep["features"], serde_json::json!([]), "{line}");
    assert_eq!(dep["target"], Value::Null, "{line}");
    let pubtime = line["pubtime"].as_str().unwrap_or_default();
    assert!(is_pubtime(pubtime), "pubtime {:?} in {line}", line["pubtime"]);

    let bytes = download_checked(&daemon, "local", &line, None);
    let packaged = env.target_dir().join("package/acme-core-0.1.0.crate");
    if let Ok(local) = std::fs::read(&packaged) {
        assert_eq!(
            sha256_hex(&local),
            sha256_hex(&bytes),
            "the served .crate differs from the one cargo packaged"
        );
    }
}

/// Checklist 33: same-registry dependency → `registry: null`; renamed dependency →
/// `name` = alias, `package` = real name.
///
/// Cargo refuses to depend on one package twice under two names (RFC 3176 is not
/// implemented), so the renamed dependency points at another, semver-incompatible version of
/// the same crate.
#[test]
fn same_registry_and_renamed_deps_are_stored_as_cargo_sent_them() {
    let daemon = Daemon::start();
    let token = daemon.user_token("alice", &[]);
    let mut env = CargoEnv::new(&daemon);
    env.set_env("CARGO_REGISTRIES_LOCAL_TOKEN", &token);

    for vers in ["0.1.0", "0.2.0"] {
        let dir = lib_project(&env, "acme-util", vers, "", "pub fn util() -> u32 {\n    7\n}\n");
        publish(&env, &dir, "local", &[]);
    }
    let app = lib_project(
        &env,
        "acme-app",
        "0.1.0",
        "acme-util = { version = \"0.1\", registry = \"local\" }\n\
         util2 = { package = \"acme-util\", version = \"0.2\", registry = \"local\" }\n\
         fakedep = \"1\"\n",
        "pub fn sum() -> u32 {\n    acme_util::util() + util2::util() + fakedep::answer()\n}\n",
    );
    publish(&env, &app, "local", &[]);

    let line = index_line(&daemon, "local", "acme-app", "0.1.0", None);
    assert_all_dep_fields(&line);
    let same = dep_named(&line, "acme-util");
    assert_eq!(same["registry"], Value::Null, "same-registry dep: {line}");
    assert_eq!(same["package"], Value::Null, "{line}");
    assert_eq!(same["req"], "^0.1", "{line}");
    let renamed = dep_named(&line, "util2");
    assert_eq!(renamed["package"], "acme-util", "renamed dep: {line}");
    assert_eq!(renamed["registry"], Value::Null, "{line}");
    assert_eq!(renamed["req"], "^0.2", "{line}");
    let cio = dep_named(&line, "fakedep");
    assert_eq!(cio["registry"], tame_index::CRATES_IO_INDEX, "{line}");
    download_checked(&daemon, "local", &line, None);

    // And the published crate is usable by a consumer.
    let consumer = bin_project(
        &env,
        "app-consumer",
        "acme-app = { version = \"0.1\", registry = \"local\" }\n",
        "fn main() {\n    assert_eq!(acme_app::sum(), 56);\n}\n",
    );
    env.must_succeed(&consumer, &["build"]);
}

/// Checklist 14, 30: build metadata in the version.
#[test]
fn build_metadata_version_publish_download_and_conflict() {
    let daemon = Daemon::start();
    let token = daemon.user_token("alice", &[]);
    let mut env = CargoEnv::new(&daemon);
    env.set_env("CARGO_REGISTRIES_LOCAL_TOKEN", &token);

    let dir = lib_project(
        &env,
        "acme-meta",
        "0.2.0+build.5",
        "",
        "pub fn meta() -> &'static str {\n    \"build.5\"\n}\n",
    );
    publish(&env, &dir, "local", &[]);

    let line = index_line(&daemon, "local", "acme-meta", "0.2.0+build.5", None);
    let via_dl = download_checked(&daemon, "local", &line, None);
    let raw = http::get(
        &daemon.url("/local/api/v1/crates/acme-meta/0.2.0+build.5/download"),
        None,
    );
    assert_eq!(raw.status, 200, "raw `+` in the download path: {}", raw.text());
    assert_eq!(raw.body, via_dl);

    let consumer = bin_project(
        &env,
        "meta-consumer",
        "acme-meta = { version = \"0.2\", registry = \"local\" }\n",
        "fn main() {\n    assert_eq!(acme_meta::meta(), \"build.5\");\n}\n",
    );
    env.must_succeed(&consumer, &["build"]);
    assert_eq!(locked_version(&consumer, "acme-meta"), "0.2.0+build.5");

    // The same version with other build metadata, and the identical version, are refused by the
    // server (cargo would refuse client-side first, so talk HTTP).
    let api = daemon.api_url("local");
    for vers in ["0.2.0+other", "0.2.0+build.5", "0.2.0"] {
        let krate = package::simple_crate("acme-meta", vers);
        let body = package::publish_body(&package::metadata("acme-meta", vers), &krate);
        let resp = http::publish_raw(&api, Some(&token), body);
        assert!(
            (400..500).contains(&resp.status),
            "re-publishing acme-meta {vers} must be refused with a 4xx, got {}: {}",
            resp.status,
            resp.text()
        );
        let details = resp.error_details();
        assert!(!details[0].is_empty(), "empty error detail for {vers}");
    }
    let lines = index_lines(&daemon, "local", "acme-meta", None);
    assert_eq!(lines.len(), 1, "refused publishes left lines: {lines:#?}");
}

/// Checklist 10, 11, 35: cargo add / build / yank / update / unyank.
#[test]
fn consumer_build_yank_update_unyank() {
    let daemon = Daemon::start();
    let token = daemon.user_token("alice", &[]);
    let mut env = CargoEnv::new(&daemon);
    env.set_env("CARGO_REGISTRIES_LOCAL_TOKEN", &token);

    let v010 = lib_project(
        &env,
        "acme-core",
        "0.1.0",
        "fakedep = \"1\"\n",
        "pub fn answer() -> u32 {\n    fakedep::answer()\n}\n",
    );
    publish(&env, &v010, "local", &[]);

    let consumer = bin_project(
        &env,
        "consumer",
        "",
        "fn main() {\n    println!(\"{}\", acme_core::answer());\n}\n",
    );
    env.must_succeed(&consumer, &["add", "acme-core@0.1.0", "--registry", "local"]);
    let manifest = std::fs::read_to_string(consumer.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("acme-core") && manifest.contains("registry = \"local\""),
        "cargo add wrote: {manifest}"
    );
    env.must_succeed(&consumer, &["build"]);
    assert_eq!(locked_version(&consumer, "acme-core"), "0.1.0");

    let v011 = lib_project(
        &env,
        "acme-core",
        "0.1.1",
        "fakedep = \"1\"\n",
        "pub fn answer() -> u32 {\n    fakedep::answer() + 1\n}\n",
    );
    publish(&env, &v011, "local", &[]);

    // A second consumer locks 0.1.1 before the yank.
    let early = bin_project(
        &env,
        "early-consumer",
        "acme-core = { version = \"0.1\", registry = \"local\" }\n",
        "fn main() {\n    assert_eq!(acme_core::answer(), 43);\n}\n",
    );
    env.must_succeed(&early, &["build"]);
    assert_eq!(locked_version(&early, "acme-core"), "0.1.1");

    let before = http::get(&daemon.url("/local/index/ac/me/acme-core"), None);
    let out = env.must_succeed(&consumer, &["yank", "--registry", "local", "acme-core@0.1.1"]);
    let line = index_line(&daemon, "local", "acme-core", "0.1.1", None);
    assert_eq!(line["yanked"], true, "after `cargo yank`: {line}\n{}", out.stderr);
    let after = http::get(&daemon.url("/local/index/ac/me/acme-core"), None);
    if let (Some(a), Some(b)) = (before.header("etag"), after.header("etag")) {
        assert_ne!(a, b, "the index file's ETag must change on yank");
    }

    // Locked builds keep working; resolution no longer picks the yanked version.
    env.must_succeed(&consumer, &["build"]);
    env.must_succeed(&early, &["build"]);
    assert_eq!(locked_version(&early, "acme-core"), "0.1.1");
    env.must_succeed(&consumer, &["update"]);
    assert_eq!(
        locked_version(&consumer, "acme-core"),
        "0.1.0",
        "`cargo update` must not select the yanked 0.1.1"
    );
    env.must_succeed(&consumer, &["build"]);

    env.must_succeed(&consumer, &["yank", "--undo", "--registry", "local", "acme-core@0.1.1"]);
    let line = index_line(&daemon, "local", "acme-core", "0.1.1", None);
    assert_eq!(line["yanked"], false, "after `cargo yank --undo`: {line}");
    env.must_succeed(&consumer, &["update"]);
    assert_eq!(
        locked_version(&consumer, "acme-core"),
        "0.1.1",
        "`cargo update` picks the unyanked version"
    );
    env.must_succeed(&consumer, &["build"]);

    // Yanking a version that does not exist is an error with the server's message.
    let out = env.must_fail(&consumer, &["yank", "--registry", "local", "acme-core@9.9.9"]);
    env.check(
        out.stderr.contains("the remote server responded with an error"),
        "yank of an unknown version shows the server's JSON error",
        &out,
    );
}

/// Checklist 36 and ownership checks on publish/yank.
#[test]
fn owners_list_add_remove_and_non_owner_is_refused() {
    let daemon = Daemon::start();
    let alice = daemon.user_token("alice", &[]);
    let bob = daemon.user_token("bob", &[]);
    let mut env = CargoEnv::new(&daemon);
    env.set_env("CARGO_REGISTRIES_LOCAL_TOKEN", &alice);

    let dir = lib_project(&env, "acme-core", "0.1.0", "", "pub fn f() {}\n");
    publish(&env, &dir, "local", &[]);

    let owner = |args: &[&str]| -> CargoOutput {
        let mut all = vec!["owner", "--registry", "local"];
        all.extend_from_slice(args);
        env.must_succeed(&dir, &all)
    };
    let list = owner(&["--list", "acme-core"]);
    env.check(
        list.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some("alice")),
        "the publisher is listed as owner",
        &list,
    );
    env.check(!list.stdout.contains("bob"), "bob is not an owner yet", &list);

    owner(&["--add", "bob", "acme-core"]);
    let list = owner(&["--list", "acme-core"]);
    env.check(
        list.stdout.lines().any(|l| l.split_whitespace().next() == Some("bob")),
        "bob is listed after --add",
        &list,
    );
    owner(&["--remove", "bob", "acme-core"]);
    let list = owner(&["--list", "acme-core"]);
    env.check(
        !list.stdout.contains("bob") && list.stdout.contains("alice"),
        "bob is gone after --remove, alice stays",
        &list,
    );

    // bob (a valid user, not an owner) cannot yank: the server's message reaches cargo.
    let api = daemon.api_url("local");
    let raw = http::delete(&format!("{api}/api/v1/crates/acme-core/0.1.0/yank"), Some(&bob), None);
    assert!(
        (400..500).contains(&raw.status),
        "non-owner yank must be refused with a 4xx, got {}: {}",
        raw.status,
        raw.text()
    );
    let yank_detail = raw.error_details().join(", ");
    assert!(!yank_detail.trim().is_empty(), "empty error detail: {}", raw.text());
    let out = env.must_fail(
        &dir,
        &["yank", "--registry", "local", "--token", &bob, "acme-core@0.1.0"],
    );
    env.check(
        out.stderr.contains("the remote server responded with an error") && out.stderr.contains(&yank_detail),
        &format!("cargo shows the server's refusal ({yank_detail:?})"),
        &out,
    );
    let line = index_line(&daemon, "local", "acme-core", "0.1.0", None);
    assert_eq!(line["yanked"], false, "a refused yank changed the index: {line}");

    // bob cannot publish a new version either.
    let krate = package::simple_crate("acme-core", "0.1.2");
    let raw = http::publish_raw(
        &api,
        Some(&bob),
        package::publish_body(&package::metadata("acme-core", "0.1.2"), &krate),
    );
    assert!(
        (400..500).contains(&raw.status),
        "non-owner publish must be refused with a 4xx, got {}: {}",
        raw.status,
        raw.text()
    );
    let publish_detail = raw.error_details().join(", ");
    assert!(!publish_detail.trim().is_empty(), "empty error detail: {}", raw.text());
    let v012 = lib_project(&env, "acme-core", "0.1.2", "", "pub fn f() {}\n");
    let out = env.must_fail(
        &v012,
        &["publish", "--registry", "local", "--allow-dirty", "--token", &bob],
    );
    env.check(
        out.stderr.contains("the remote server responded with an error") && out.stderr.contains(&publish_detail),
        &format!("cargo shows the server's refusal ({publish_detail:?})"),
        &out,
    );
    let lines = index_lines(&daemon, "local", "acme-core", None);
    assert!(
        lines.iter().all(|l| l["vers"] != "0.1.2"),
        "a refused publish reached the index: {lines:#?}"
    );
}

/// Checklist 37.
#[test]
fn search_lists_published_crates() {
    let daemon = Daemon::start();
    let token = daemon.user_token("alice", &[]);
    let env = CargoEnv::new(&daemon);
    publish_simple(&env, "acme-core", "0.1.0", &token);
    publish_simple(&env, "acme-core", "0.3.1", &token);
    publish_simple(&env, "acme-util", "0.2.0", &token);
    publish_simple(&env, "widget", "1.0.0", &token);

    let dir = env.project("search-dir", &lib_manifest("search-dir", "0.0.0", ""), &[]);
    let out = env.must_succeed(&dir, &["search", "--registry", "local", "acme", "--limit", "5"]);
    env.check(
        out.stdout.contains("acme-core = \"0.3.1\""),
        "search shows acme-core with its newest version",
        &out,
    );
    env.check(
        out.stdout.contains("acme-util = \"0.2.0\""),
        "search shows acme-util",
        &out,
    );
    env.check(
        out.stdout.contains("acme-core: cargohold end-to-end test crate"),
        "search shows the description",
        &out,
    );

    let out = env.must_succeed(&dir, &["search", "--registry", "local", "widget"]);
    env.check(out.stdout.contains("widget = \"1.0.0\""), "search finds widget", &out);
}

/// Checklist 19-24: an auth-required registry created with the admin CLI.
#[test]
fn auth_required_registry_end_to_end() {
    let daemon = Daemon::start();
    daemon.admin_ok(&["registry", "create", "private", "--kind", "hosted", "--auth-required"]);
    let token = daemon.user_token("alice", &[]);
    let config_url = daemon.url("/private/index/config.json");

    // Raw HTTP: the unauthenticated probe and the challenge.
    let resp = http::get(&config_url, None);
    assert_eq!(resp.status, 401, "unauthenticated config.json: {}", resp.text());
    let challenge = resp
        .header("www-authenticate")
        .expect("401 on config.json carries WWW-Authenticate");
    let expected = format!("login_url=\"{}\"", daemon.url("/private/me"));
    assert!(
        challenge.to_ascii_lowercase().starts_with("cargo ") && challenge.contains(&expected),
        "WWW-Authenticate is {challenge:?}, expected `Cargo {expected}`"
    );
    let resp = http::get(&config_url, Some("not-a-real-token"));
    assert_eq!(resp.status, 401, "unknown token on config.json: {}", resp.text());
    for auth in [token.clone(), format!("Bearer {token}")] {
        let cfg = config_json(&daemon, "private", Some(&auth));
        assert_eq!(cfg["auth-required"], true, "config.json: {cfg}");
        assert_eq!(cfg["api"], daemon.api_url("private"), "config.json: {cfg}");
    }

    // Publish and consume with cargo, token from the environment.
    let mut env = CargoEnv::new(&daemon);
    env.add_registry("private", &daemon.index_url("private"))
        .with_credential_provider();
    let good = [("CARGO_REGISTRIES_PRIVATE_TOKEN", token.as_str())];
    let lib = lib_project(
        &env,
        "secret-lib",
        "0.1.0",
        "fakedep = \"1\"\n",
        "pub fn secret() -> u32 {\n    fakedep::answer() * 2\n}\n",
    );
    env.must_succeed_with(
        &lib,
        &["publish", "--registry", "private", "--allow-dirty"],
        &good,
        None,
    );
    let consumer = bin_project(
        &env,
        "private-consumer",
        "secret-lib = { version = \"0.1\", registry = \"private\" }\n",
        "fn main() {\n    assert_eq!(secret_lib::secret(), 84);\n}\n",
    );
    env.must_succeed_with(&consumer, &["build"], &good, None);

    // Index files and downloads need the token too.
    let index_url = daemon.url(&format!("/private/index/{}", index_path("secret-lib")));
    assert_eq!(http::get(&index_url, None).status, 401, "index file without token");
    let line = index_line(&daemon, "private", "secret-lib", "0.1.0", Some(&token));
    let dl = config_json(&daemon, "private", Some(&token))["dl"]
        .as_str()
        .unwrap()
        .to_owned();
    let crate_url = expand_dl(&dl, "secret-lib", "0.1.0", line["cksum"].as_str().unwrap());
    assert_eq!(http::get(&crate_url, None).status, 401, "download without token");
    download_checked(&daemon, "private", &line, Some(&token));

    // A wrong token is rejected (cached config already says auth-required) ...
    let other = bin_project(
        &env,
        "private-consumer-2",
        "secret-lib = { version = \"0.1\", registry = \"private\" }\n",
        "fn main() {}\n",
    );
    let bad = [("CARGO_REGISTRIES_PRIVATE_TOKEN", "wrong-token-0123456789")];
    let out = env.must_fail_with(&other, &["generate-lockfile"], &bad);
    env.check(
        out.stderr.contains("token rejected"),
        "cargo reports the rejected token",
        &out,
    );

    // ... and through the 401 probe in a fresh CARGO_HOME.
    let mut fresh = CargoEnv::new(&daemon);
    fresh
        .add_registry("private", &daemon.index_url("private"))
        .with_credential_provider();
    let other = bin_project(
        &fresh,
        "private-consumer-3",
        "secret-lib = { version = \"0.1\", registry = \"private\" }\n",
        "fn main() {}\n",
    );
    let out = fresh.must_fail_with(&other, &["build"], &bad);
    fresh.check(
        out.stderr.contains("token rejected"),
        "cargo reports the rejected token after the 401 probe",
        &out,
    );
    let out = fresh.must_fail(&other, &["generate-lockfile"]);
    fresh.check(
        out.stderr.contains("no token found for `private`"),
        "cargo asks for a token when it has none",
        &out,
    );
    fresh.must_succeed_with(&other, &["generate-lockfile"], &good, None);
    assert_eq!(locked_version(&other, "secret-lib"), "0.1.0");
}

/// The harness itself: the directory source stands in for crates.io, and the lockfile records
/// the dependency as a crates.io package.
#[test]
fn hermetic_crates_io_stand_in_builds() {
    let env = CargoEnv::bare();
    let dir = bin_project(
        &env,
        "uses-fakedep",
        "fakedep = \"1\"\n",
        "fn main() {\n    assert_eq!(fakedep::answer(), 42);\n}\n",
    );
    env.must_succeed(&dir, &["build"]);
    let lock = std::fs::read_to_string(dir.join("Cargo.lock")).unwrap();
    let pkgs = crate::support::cargo::lock_packages(&lock);
    let fake = pkgs
        .iter()
        .find(|(n, _, _)| n == "fakedep")
        .unwrap_or_else(|| panic!("fakedep not locked:\n{lock}"));
    assert_eq!(fake.1, "1.0.0");
    assert_eq!(
        fake.2.as_deref(),
        Some(format!("registry+{}", tame_index::CRATES_IO_INDEX).as_str()),
        "{lock}"
    );
}

/// Checklist 3, 7, 17: one- to four-letter and mixed-case names resolve through their index
/// paths; a missing crate is reported by cargo; everything also works over HTTP/1.1 only.
#[test]
fn short_and_mixed_case_names_resolve_over_http1() {
    let daemon = Daemon::start();
    let token = daemon.user_token("alice", &[]);
    let mut env = CargoEnv::new(&daemon);
    env.set_multiplexing(false);
    let names = ["a", "ab", "abc", "abcd", "MyCrate"];
    for name in names {
        publish_simple(&env, name, "0.1.0", &token);
    }
    for (name, path) in names
        .iter()
        .zip(["1/a", "2/ab", "3/a/abc", "ab/cd/abcd", "my/cr/mycrate"])
    {
        let resp = http::get(&daemon.url(&format!("/local/index/{path}")), None);
        assert_eq!(resp.status, 200, "GET /local/index/{path}: {}", resp.text());
        let lines = parse_index_lines(&resp.text());
        assert_eq!(lines.len(), 1, "{path}: {lines:?}");
        assert_eq!(lines[0]["name"], *name, "the line keeps the published spelling");
    }
    let deps: String = names
        .iter()
        .map(|n| format!("{n} = {{ version = \"0.1\", registry = \"local\" }}\n"))
        .collect();
    let consumer = bin_project(
        &env,
        "short-names",
        &deps,
        "fn main() {\n    let _ = (a::version(), ab::version(), abc::version(), abcd::version());\n    \
         let _ = MyCrate::version();\n}\n",
    );
    env.must_succeed(&consumer, &["build"]);
    for name in names {
        assert_eq!(locked_version(&consumer, name), "0.1.0");
    }

    let missing = bin_project(
        &env,
        "missing-dep",
        "does-not-exist = { version = \"1\", registry = \"local\" }\n",
        "fn main() {}\n",
    );
    let out = env.must_fail(&missing, &["generate-lockfile"]);
    env.check(
        out.stderr.contains("no matching package named `does-not-exist` found"),
        "cargo reports the missing crate (index 404)",
        &out,
    );
}
