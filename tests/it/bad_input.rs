//! Bad input over HTTP: malformed, oversized, hostile or unauthorized publishes (and yank and
//! owner calls) must get a fitting 4xx with Cargo's `{"errors":[{"detail":…}]}` body saying what
//! is wrong, and must leave the store as it was: every watched crate's index file byte-identical
//! (or still 404) and every watched version's download unchanged (so a version that was never
//! accepted stays 404). Each group of cases runs on its own daemon; the last test runs every group
//! against one daemon, then checks that a good publish still works and that everything accepted
//! is still served after SIGKILL + restart. `early_413_keeps_the_connection_usable_or_closes_it`
//! checks the connection a 413 answered before reading the body leaves behind (the daemon says
//! `Connection: close`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::Method;
use serde_json::{json, Value};
use tar::{EntryType, Header};

use crate::support::daemon::{Daemon, HERMETIC_DEFAULT};
use crate::support::fake_upstream::{FakeUpstream, Package};
use crate::support::http::{self, Resp};
use crate::support::package::{crate_tarball, manifest, metadata, metadata_dep, publish_body, simple_crate};
use crate::support::{expand_dl, index_path, parse_index_lines, sha256_hex};

/// The hosted registry of the default daemon.
const REG: &str = "local";

/// Small limits for the oversize cases (appended to [`HERMETIC_DEFAULT`]).
const SMALL_LIMITS: &str = r#"
[limits]
max_crate_size = "64KiB"
max_metadata_size = "4KiB"
max_unpacked_size = "1MiB"
"#;

// ---------------------------------------------------------------------------------------------
// HTTP

/// Per-thread runtime and two clients: one that keeps connections alive (as cargo does) and one
/// that never reuses a connection. The timeout only turns a wedged connection into a failure
/// instead of a hung test run; it asserts nothing about speed.
struct Io {
    rt: tokio::runtime::Runtime,
    pooled: reqwest::Client,
    one_shot: reqwest::Client,
}

fn io() -> Io {
    let client = |max_idle: usize| {
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(max_idle)
            .timeout(Duration::from_secs(120))
            .build()
            .expect("HTTP client")
    };
    Io {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime"),
        pooled: client(usize::MAX),
        one_shot: client(0),
    }
}

fn send_with(
    one_shot: bool,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Resp {
    thread_local! {
        static IO: Io = io();
    }
    IO.with(|io| {
        let client = if one_shot { &io.one_shot } else { &io.pooled };
        io.rt
            .block_on(http::send_async(client, method.clone(), url, token, body, headers))
            .unwrap_or_else(|e| panic!("{method} {url} failed: {e:?}"))
    })
}

/// One request on a kept-alive connection.
fn call(method: Method, url: &str, token: Option<&str>, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Resp {
    send_with(false, method, url, token, body, headers)
}

fn get(d: &Daemon, path: &str, token: Option<&str>) -> Resp {
    call(Method::GET, &d.url(path), token, None, &[])
}

/// `PUT {path}` with a publish body, as cargo sends it.
fn put_publish(d: &Daemon, path: &str, token: Option<&str>, body: Vec<u8>) -> Resp {
    send_with(false, Method::PUT, &d.url(path), token, Some(body), PUBLISH_HEADERS)
}

const PUBLISH_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "application/octet-stream"),
    ("Accept", "application/json"),
];

/// `PUT /{reg}/api/v1/crates/new`.
fn publish_to(d: &Daemon, reg: &str, token: Option<&str>, body: Vec<u8>) -> Resp {
    put_publish(d, &format!("/{reg}/api/v1/crates/new"), token, body)
}

/// `DELETE /{reg}/api/v1/crates/{name}/{vers}/yank`.
fn yank(d: &Daemon, reg: &str, token: Option<&str>, name: &str, vers: &str) -> Resp {
    call(
        Method::DELETE,
        &d.url(&format!("/{reg}/api/v1/crates/{name}/{vers}/yank")),
        token,
        None,
        &[("Accept", "application/json")],
    )
}

/// `PUT` (add) or `DELETE` (remove) `/{reg}/api/v1/crates/{name}/owners` with `{"users":[…]}`.
fn change_owners(d: &Daemon, reg: &str, method: Method, token: &str, name: &str, users: &[&str]) -> Resp {
    call(
        method,
        &d.url(&format!("/{reg}/api/v1/crates/{name}/owners")),
        Some(token),
        Some(json!({ "users": users }).to_string().into_bytes()),
        &[("Content-Type", "application/json"), ("Accept", "application/json")],
    )
}

/// The owner logins of a crate in `local`.
fn owner_logins(d: &Daemon, token: &str, name: &str) -> Vec<String> {
    let resp = get(d, &format!("/{REG}/api/v1/crates/{name}/owners"), Some(token));
    assert_eq!(resp.status, 200, "owners of {name}: {}\n{}", resp.text(), d.log_tail());
    resp.json()["users"]
        .as_array()
        .unwrap_or_else(|| panic!("owners of {name}: no `users` array: {}", resp.text()))
        .iter()
        .map(|u| u["login"].as_str().expect("owner login is a string").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Bodies and tarballs

/// A publish body from raw parts: `u32 LE json len | json | u32 LE crate len | crate`.
fn frame(json: &[u8], krate: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&u32::try_from(json.len()).unwrap().to_le_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(&u32::try_from(krate.len()).unwrap().to_le_bytes());
    out.extend_from_slice(krate);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).expect("gzip write");
    enc.finish().expect("gzip finish")
}

/// One member of a hand-made tar archive. Paths and link targets go into the header raw,
/// bypassing `tar::Builder`'s own path checks, so hostile archives can be built.
enum Member<'a> {
    /// A regular file: path, contents.
    File(&'a str, &'a str),
    /// A link entry: kind, path, target.
    Link(EntryType, &'a str, &'a str),
}

fn raw_header(path: &str, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    let name = path.as_bytes();
    assert!(name.len() <= 100, "raw tar name too long: {path}");
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1_153_704_088);
    h
}

/// A gzip-compressed tar of `members`, exactly as given.
fn raw_crate(members: &[Member<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        match *m {
            Member::File(path, data) => {
                let mut h = raw_header(path, EntryType::Regular, data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).expect("append file");
            }
            Member::Link(kind, path, target) => {
                let mut h = raw_header(path, kind, 0);
                let t = target.as_bytes();
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
                h.set_cksum();
                b.append(&h, std::io::empty()).expect("append link");
            }
        }
    }
    gzip(&b.into_inner().expect("finish tar"))
}

/// A valid `.crate` for `name@vers` whose bytes differ from [`simple_crate`]'s.
fn other_crate(name: &str, vers: &str) -> Vec<u8> {
    crate_tarball(
        name,
        vers,
        &[
            ("Cargo.toml", &manifest(name, vers)),
            ("src/lib.rs", "// a different upload of the same version\n"),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Store observation and assertions

/// What a client can see of one crate version in `local`: the crate's index file and the
/// version's download (status and bytes).
#[derive(Debug, PartialEq)]
struct Seen {
    index: (u16, String),
    download: (u16, Vec<u8>),
}

fn seen(d: &Daemon, name: &str, vers: &str) -> Seen {
    let index = get(d, &format!("/{REG}/index/{}", index_path(name)), None);
    assert!(
        matches!(index.status, 200 | 404),
        "index file of {name}: unexpected status {}: {}\n{}",
        index.status,
        index.text(),
        d.log_tail()
    );
    let dl = get(d, &format!("/{REG}/api/v1/crates/{name}/{vers}/download"), None);
    // 400: a name or version that cannot exist (refused before any lookup).
    assert!(
        matches!(dl.status, 200 | 400 | 404),
        "download of {name}@{vers}: unexpected status {}: {}\n{}",
        dl.status,
        dl.text(),
        d.log_tail()
    );
    Seen {
        index: (index.status, index.text()),
        download: (dl.status, dl.body),
    }
}

/// Sends a request that must be refused, and checks: the status is one of `statuses`; the body
/// is JSON of Cargo's error shape whose details contain every one of `needles` (case-sensitive);
/// and for every `(name, vers)` in `watch` the index file and the download are exactly what they
/// were before (so a version that was never accepted is still a 404). Returns the response.
fn refused(
    d: &Daemon,
    label: &str,
    watch: &[(&str, &str)],
    statuses: &[u16],
    needles: &[&str],
    send: impl FnOnce() -> Resp,
) -> Resp {
    let before: Vec<Seen> = watch.iter().map(|(n, v)| seen(d, n, v)).collect();
    let resp = send();
    assert!(
        statuses.contains(&resp.status),
        "{label}: expected status {statuses:?}, got {} with body {}\n{}",
        resp.status,
        resp.text(),
        d.log_tail()
    );
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{label}: the error body must be JSON, got content-type {ct:?} and body {}",
        resp.text()
    );
    let details = resp.error_details().join(" | ");
    for needle in needles {
        assert!(
            details.contains(needle),
            "{label}: the error detail should mention {needle:?}, got {details:?}"
        );
    }
    for ((name, vers), before) in watch.iter().zip(before) {
        let after = seen(d, name, vers);
        assert!(
            after == before,
            "{label}: the refused request changed what is served for {name}@{vers}\n\
             before: index {:?} / download status {}\nafter:  index {:?} / download status {}\n{}",
            before.index,
            before.download.0,
            after.index,
            after.download.0,
            d.log_tail()
        );
    }
    resp
}

/// A version the daemon accepted, with the exact `.crate` bytes sent.
#[derive(Debug, Clone)]
struct Accepted {
    name: String,
    vers: String,
    krate: Vec<u8>,
}

/// Publishes `meta` + `krate` to `local`; must answer 200.
fn publish_ok(d: &Daemon, token: &str, meta: &Value, krate: Vec<u8>) -> Accepted {
    let resp = publish_to(d, REG, Some(token), publish_body(meta, &krate));
    assert_eq!(
        resp.status,
        200,
        "publish of {meta} should succeed: {}\n{}",
        resp.text(),
        d.log_tail()
    );
    Accepted {
        name: meta["name"].as_str().unwrap().to_owned(),
        vers: meta["vers"].as_str().unwrap().to_owned(),
        krate,
    }
}

fn publish_simple(d: &Daemon, token: &str, name: &str, vers: &str) -> Accepted {
    publish_ok(d, token, &metadata(name, vers), simple_crate(name, vers))
}

/// Checks that `local` serves exactly the accepted versions: each crate's index file lists
/// exactly its accepted versions (nothing from a refused request), with the right `cksum`, and
/// each download (through the `dl` template of `config.json`) returns the bytes that were sent.
fn assert_served(d: &Daemon, accepted: &[Accepted]) {
    let cfg = get(d, &format!("/{REG}/index/config.json"), None);
    assert_eq!(cfg.status, 200, "config.json: {}\n{}", cfg.text(), d.log_tail());
    let dl = cfg.json()["dl"]
        .as_str()
        .expect("config.json has a `dl` string")
        .to_owned();
    let mut names: Vec<&str> = accepted.iter().map(|a| a.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let resp = get(d, &format!("/{REG}/index/{}", index_path(name)), None);
        assert_eq!(
            resp.status,
            200,
            "index file of {name}: {}\n{}",
            resp.text(),
            d.log_tail()
        );
        let lines = parse_index_lines(&resp.text());
        let mut listed: Vec<&str> = lines.iter().map(|l| l["vers"].as_str().unwrap_or("?")).collect();
        let mut expected: Vec<&str> = accepted
            .iter()
            .filter(|a| a.name == name)
            .map(|a| a.vers.as_str())
            .collect();
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed, expected, "versions in the index file of {name}: {lines:#?}");
        for a in accepted.iter().filter(|a| a.name == name) {
            let line = lines.iter().find(|l| l["vers"] == a.vers.as_str()).unwrap();
            let sha = sha256_hex(&a.krate);
            assert_eq!(line["name"], name, "index line {line}");
            assert_eq!(line["cksum"], sha.as_str(), "cksum of {name}@{}: {line}", a.vers);
            let url = expand_dl(&dl, name, &a.vers, &sha);
            let got = call(Method::GET, &url, None, None, &[]);
            assert_eq!(got.status, 200, "download {url}: {}\n{}", got.text(), d.log_tail());
            assert!(got.body == a.krate, "download {url} differs from the accepted bytes");
        }
    }
}

/// Tokens shared by the groups.
struct Ctx {
    /// Full default-scope token of `alice`.
    alice: String,
}

fn ctx(d: &Daemon) -> Ctx {
    Ctx {
        alice: d.user_token("alice", &[]),
    }
}

// ---------------------------------------------------------------------------------------------
// Groups of cases. Each uses its own crate names so all of them can share one daemon; each
// returns what it got accepted.

/// Body framing: truncation at each part, trailing bytes, lying length prefixes, empty body.
/// Afterwards the well-formed body is accepted (nothing half-done was left behind).
fn frames(d: &Daemon, cx: &Ctx) -> Vec<Accepted> {
    let (name, vers) = ("frame-demo", "0.1.0");
    let krate = simple_crate(name, vers);
    let good = publish_body(&metadata(name, vers), &krate);
    let j = u32::from_le_bytes(good[..4].try_into().unwrap()) as usize;
    let len = good.len();
    let patched = |at: usize, n: u32| {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&n.to_le_bytes());
        b
    };
    let cases: Vec<(&str, Vec<u8>, u16, &[&str])> = vec![
        ("empty body", Vec::new(), 400, &["truncated", "metadata length"]),
        (
            "cut inside the json length",
            good[..2].to_vec(),
            400,
            &["truncated", "metadata length"],
        ),
        (
            "cut inside the json",
            good[..4 + j / 2].to_vec(),
            400,
            &["truncated", "metadata"],
        ),
        (
            "cut inside the crate length",
            good[..4 + j + 2].to_vec(),
            400,
            &["truncated", "crate length"],
        ),
        (
            "cut inside the crate",
            good[..len - 10].to_vec(),
            400,
            &["truncated", "crate file"],
        ),
        (
            "trailing bytes after the crate",
            [&good[..], b"xyz"].concat(),
            400,
            &["3 unexpected bytes"],
        ),
        (
            "json length claims more than the body",
            patched(0, len as u32),
            400,
            &["truncated", "metadata"],
        ),
        (
            "crate length claims more than the rest",
            patched(4 + j, krate.len() as u32 + 100),
            400,
            &["truncated", "crate file"],
        ),
        ("json length u32::MAX", patched(0, u32::MAX), 413, &["limit"]),
    ];
    for (label, body, status, needles) in cases {
        refused(d, label, &[(name, vers)], &[status], needles, || {
            publish_to(d, REG, Some(&cx.alice), body)
        });
    }
    vec![publish_ok(d, &cx.alice, &metadata(name, vers), krate)]
}

/// Size limits (needs a daemon with [`SMALL_LIMITS`]): whole body, crate part, metadata part,
/// unpacked size.
fn oversize(d: &Daemon, cx: &Ctx) -> Vec<Accepted> {
    let name = "big-demo";
    // The limits are not so small that a normal crate is refused.
    let ok = publish_simple(d, &cx.alice, name, "0.1.0");
    let watch = [(name, "0.1.0"), (name, "0.2.0")];
    let meta = metadata(name, "0.2.0");

    // 80 KiB of crate: the body is over everything the daemon accepts (64 KiB + 4 KiB + 8).
    // Sent on a connection of its own: the daemon answers this 413 without reading the body
    // and then drops the connection without saying so, which breaks the next request on a
    // kept-alive connection (see `early_413_keeps_the_connection_usable_or_closes_it`).
    let resp = refused(d, "body over the limit", &watch, &[413], &["limit"], || {
        let body = publish_body(&meta, &vec![0x5a; 80 << 10]);
        let url = d.url(&format!("/{REG}/api/v1/crates/new"));
        send_with(true, Method::PUT, &url, Some(&cx.alice), Some(body), PUBLISH_HEADERS)
    });
    let detail = resp.error_details().join(" ");
    assert!(
        ["65536", "64 KiB", "64KiB", "69640"].iter().any(|n| detail.contains(n)),
        "the 413 should name the limit: {detail:?}"
    );

    // A crate part over 64 KiB inside a body the transport still takes.
    refused(
        d,
        "crate part over max_crate_size",
        &watch,
        &[413],
        &["limit", "65536"],
        || publish_to(d, REG, Some(&cx.alice), publish_body(&meta, &vec![0x5a; 66_000])),
    );

    // Metadata JSON over 4 KiB.
    let mut fat = meta.clone();
    fat["description"] = json!("x".repeat(5000));
    refused(
        d,
        "metadata over max_metadata_size",
        &watch,
        &[413],
        &["limit", "4096"],
        || {
            publish_to(
                d,
                REG,
                Some(&cx.alice),
                publish_body(&fat, &simple_crate(name, "0.2.0")),
            )
        },
    );

    // A small gzip that unpacks to more than 1 MiB.
    let zeros = "0".repeat(2 << 20);
    let bomb = crate_tarball(
        name,
        "0.2.0",
        &[("Cargo.toml", &manifest(name, "0.2.0")), ("zeros.txt", &zeros)],
    );
    assert!(bomb.len() < 64 << 10, "the bomb must pass the crate size limit");
    refused(
        d,
        "crate unpacking over max_unpacked_size",
        &watch,
        &[400, 413],
        &["1048576"],
        || publish_to(d, REG, Some(&cx.alice), publish_body(&meta, &bomb)),
    );
    vec![ok]
}

/// The metadata JSON: not JSON, wrong shape, missing `name`, bad dependencies.
fn metadata_json(d: &Daemon, cx: &Ctx) -> Vec<Accepted> {
    let (name, vers) = ("meta-demo", "0.1.0");
    let krate = simple_crate(name, vers);
    let watch = [(name, vers)];
    let send = |body: Vec<u8>| publish_to(d, REG, Some(&cx.alice), body);

    let truncated_json = format!("{{\"name\": \"{name}\", \"vers\": \"{vers}\",");
    refused(d, "invalid JSON", &watch, &[400], &["not valid JSON"], || {
        send(frame(truncated_json.as_bytes(), &krate))
    });
    refused(
        d,
        "JSON that is not an object",
        &watch,
        &[400],
        &["not valid JSON"],
        || send(frame(b"[1, 2, 3]", &krate)),
    );
    let mut no_name = metadata(name, vers);
    no_name.as_object_mut().unwrap().remove("name");
    refused(
        d,
        "metadata without `name`",
        &watch,
        &[400],
        &["missing field `name`"],
        || send(publish_body(&no_name, &krate)),
    );
    let mut numeric_name = metadata(name, vers);
    numeric_name["name"] = json!(5);
    refused(d, "`name` is a number", &watch, &[400], &["invalid type"], || {
        send(publish_body(&numeric_name, &krate))
    });

    let mut bad_req = metadata(name, vers);
    bad_req["deps"] = json!([metadata_dep("frame-demo", "not a requirement")]);
    refused(
        d,
        "dependency with an invalid version requirement",
        &watch,
        &[400],
        &["`not a requirement`", "version requirement"],
        || send(publish_body(&bad_req, &krate)),
    );
    let mut missing_dep = metadata(name, vers);
    missing_dep["deps"] = json!([metadata_dep("no-such-dep", "^1.0")]);
    refused(
        d,
        "dependency on a crate this registry does not have",
        &watch,
        &[400],
        &["`no-such-dep`", "does not exist"],
        || send(publish_body(&missing_dep, &krate)),
    );
    Vec::new()
}

/// Crate names: invalid and reserved ones, and new spellings of an existing crate.
fn names(d: &Daemon, cx: &Ctx) -> Vec<Accepted> {
    let long = "a".repeat(65);
    let cases: [(&str, &str); 7] = [
        ("1abc", "must start with an ASCII letter"),
        ("a.b", "contains `.`"),
        ("über", "ASCII"),
        (&long, "longer than 64"),
        ("nul", "reserved"),
        ("std", "reserved"),
        ("con", "reserved"),
    ];
    for (name, needle) in cases {
        let label = format!("crate name {name:?}");
        let quoted = format!("`{name}`");
        refused(d, &label, &[(name, "0.1.0")], &[400], &[&quoted, needle], || {
            let body = publish_body(&metadata(name, "0.1.0"), &simple_crate(name, "0.1.0"));
            publish_to(d, REG, Some(&cx.alice), body)
        });
    }

    let first = publish_simple(d, &cx.alice, "foo-bar", "0.1.0");
    for other in ["foo_bar", "Foo-Bar"] {
        let label = format!("new spelling {other:?} of foo-bar");
        let watch = [("foo-bar", "0.1.0"), ("foo-bar", "0.2.0"), (other, "0.2.0")];
        // The detail must name the existing spelling (the request never says `foo-bar`).
        refused(d, &label, &watch, &[400, 409], &["`foo-bar`"], || {
            let body = publish_body(&metadata(other, "0.2.0"), &simple_crate(other, "0.2.0"));
            publish_to(d, REG, Some(&cx.alice), body)
        });
    }
    vec![first]
}

/// Versions: not semver, duplicates, duplicates modulo build metadata (both orders), and
/// re-publishing a yanked version.
fn versions(d: &Daemon, cx: &Ctx) -> Vec<Accepted> {
    let send = |meta: Value, krate: Vec<u8>| publish_to(d, REG, Some(&cx.alice), publish_body(&meta, &krate));
    let name = "vers-demo";
    refused(
        d,
        "version `1.0`",
        &[(name, "1.0")],
        &[400],
        &["`1.0`", "semver"],
        || send(metadata(name, "1.0"), simple_crate(name, "1.0")),
    );
    let first = publish_simple(d, &cx.alice, name, "0.1.0");
    refused(
        d,
        "duplicate 0.1.0",
        &[(name, "0.1.0")],
        &[409],
        &["already uploaded"],
        || send(metadata(name, "0.1.0"), other_crate(name, "0.1.0")),
    );
    refused(
        d,
        "0.1.0+meta after 0.1.0",
        &[(name, "0.1.0"), (name, "0.1.0+meta")],
        &[409],
        &["build metadata"],
        || send(metadata(name, "0.1.0+meta"), simple_crate(name, "0.1.0+meta")),
    );

    let meta_first = "vers-meta-demo";
    let with_build = publish_simple(d, &cx.alice, meta_first, "0.1.0+meta");
    for vers in ["0.1.0", "0.1.0+other"] {
        let label = format!("{vers} after 0.1.0+meta");
        refused(
            d,
            &label,
            &[(meta_first, "0.1.0+meta"), (meta_first, vers)],
            &[409],
            &["build metadata"],
            || send(metadata(meta_first, vers), simple_crate(meta_first, vers)),
        );
    }
    refused(
        d,
        "duplicate 0.1.0+meta",
        &[(meta_first, "0.1.0+meta")],
        &[409],
        &["already uploaded"],
        || {
            send(
                metadata(meta_first, "0.1.0+meta"),
                other_crate(meta_first, "0.1.0+meta"),
            )
        },
    );

    let yanked_name = "vers-yank-demo";
    let yanked = publish_simple(d, &cx.alice, yanked_name, "0.1.0");
    let resp = yank(d, REG, Some(&cx.alice), yanked_name, "0.1.0");
    assert_eq!(resp.status, 200, "yank: {}\n{}", resp.text(), d.log_tail());
    refused(
        d,
        "re-publishing a yanked version",
        &[(yanked_name, "0.1.0")],
        &[409],
        &["already uploaded"],
        || send(metadata(yanked_name, "0.1.0"), other_crate(yanked_name, "0.1.0")),
    );
    vec![first, with_build, yanked]
}

/// Hostile or inconsistent `.crate` files. Afterwards a good one is accepted.
fn tarballs(d: &Daemon, cx: &Ctx) -> Vec<Accepted> {
    use Member::{File, Link};
    let (name, vers) = ("tar-demo", "0.1.0");
    let toml = manifest(name, vers);
    let root = |p: &str| format!("{name}-{vers}/{p}");
    let (cargo_toml, lib_rs) = (root("Cargo.toml"), root("src/lib.rs"));
    let lib = "pub fn f() {}\n";
    let wrong_name = manifest("tar-demo-other", vers);
    let wrong_vers = manifest(name, "0.1.1");
    let (dotdot, absolute, outside) = (root("../evil.rs"), format!("/{lib_rs}"), "elsewhere-0.1.0/src/lib.rs");
    let (symlink, hardlink) = (root("src/link.rs"), root("src/hard.rs"));
    let not_tar = gzip(&b"this is gzip, but what it holds is not a tar archive\n".repeat(40));

    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "entry with `..`",
            raw_crate(&[File(&cargo_toml, &toml), File(&dotdot, lib)]),
            &["contains `..`"],
        ),
        (
            "absolute entry path",
            raw_crate(&[File(&cargo_toml, &toml), File(&absolute, lib)]),
            &["absolute"],
        ),
        (
            "symlink entry",
            raw_crate(&[
                File(&cargo_toml, &toml),
                Link(EntryType::Symlink, &symlink, "../../../../etc/passwd"),
            ]),
            &["symbolic link"],
        ),
        (
            "hardlink entry",
            raw_crate(&[File(&cargo_toml, &toml), Link(EntryType::Link, &hardlink, &cargo_toml)]),
            &["hard link"],
        ),
        (
            "entry outside {name}-{vers}/",
            raw_crate(&[File(&cargo_toml, &toml), File(outside, lib)]),
            &["not inside", "`tar-demo-0.1.0/`"],
        ),
        (
            "no Cargo.toml",
            raw_crate(&[File(&lib_rs, lib)]),
            &["no `tar-demo-0.1.0/Cargo.toml`"],
        ),
        (
            "Cargo.toml with another package name",
            raw_crate(&[File(&cargo_toml, &wrong_name), File(&lib_rs, lib)]),
            &["`tar-demo-other`", "does not match"],
        ),
        (
            "Cargo.toml with another version",
            raw_crate(&[File(&cargo_toml, &wrong_vers), File(&lib_rs, lib)]),
            &["`0.1.1`", "does not match"],
        ),
        (
            "not gzip",
            b"PK\x03\x04 this is no gzip stream".to_vec(),
            &["not valid gzip"],
        ),
        ("gzip but not tar", not_tar, &["not a valid tar"]),
    ];
    for (label, krate, needles) in cases {
        refused(d, label, &[(name, vers)], &[400], needles, || {
            publish_to(d, REG, Some(&cx.alice), publish_body(&metadata(name, vers), &krate))
        });
    }
    vec![publish_ok(
        d,
        &cx.alice,
        &metadata(name, vers),
        raw_crate(&[File(&cargo_toml, &toml), File(&lib_rs, lib)]),
    )]
}

/// Authentication and token scopes. Creates the hosted registry `other`.
fn auth(d: &Daemon, cx: &Ctx) -> Vec<Accepted> {
    let (name, vers) = ("auth-demo", "0.1.0");
    let body = || publish_body(&metadata(name, vers), &simple_crate(name, vers));
    let watch = [(name, vers)];

    let resp = refused(
        d,
        "publish without Authorization",
        &watch,
        &[401],
        &["needs a token"],
        || publish_to(d, REG, None, body()),
    );
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("Cargo login_url="),
        "a 401 must carry a `WWW-Authenticate: Cargo login_url=…` challenge, got {challenge:?}"
    );
    let unknown = format!("chd_{}", "x".repeat(40));
    refused(
        d,
        "publish with an unknown token",
        &watch,
        &[401],
        &["not valid"],
        || publish_to(d, REG, Some(&unknown), body()),
    );
    let read_only = d.user_token("alice", &["read"]);
    refused(
        d,
        "publish with a read-only token",
        &watch,
        &[403],
        &["`publish` scope"],
        || publish_to(d, REG, Some(&read_only), body()),
    );
    d.admin_ok(&["registry", "create", "other", "--kind", "hosted"]);
    let elsewhere = d.user_token_for("alice", &[], "other");
    refused(
        d,
        "publish with a token limited to registry `other`",
        &watch,
        &[403],
        &["limited to", "`local`"],
        || publish_to(d, REG, Some(&elsewhere), body()),
    );

    let ok = publish_simple(d, &cx.alice, name, vers);
    refused(
        d,
        "yank without Authorization",
        &watch,
        &[401],
        &["needs a token"],
        || yank(d, REG, None, name, vers),
    );
    refused(
        d,
        "yank with a read-only token",
        &watch,
        &[403],
        &["`yank` scope"],
        || yank(d, REG, Some(&read_only), name, vers),
    );
    refused(
        d,
        "yank with a token for `other`",
        &watch,
        &[403],
        &["limited to"],
        || yank(d, REG, Some(&elsewhere), name, vers),
    );
    vec![ok]
}

/// Ownership: a non-owner may not publish, yank or make himself owner; the last owner cannot
/// leave; unknown users cannot be added; unknown crates and versions are 404.
fn ownership(d: &Daemon, cx: &Ctx) -> Vec<Accepted> {
    let name = "owned-demo";
    let ok = publish_simple(d, &cx.alice, name, "0.1.0");
    let bob = d.user_token("bob", &[]);
    let alice_only = vec!["alice".to_owned()];

    refused(
        d,
        "bob publishes a version of alice's crate",
        &[(name, "0.1.0"), (name, "0.2.0")],
        &[403],
        &["`bob` is not an owner"],
        || {
            let body = publish_body(&metadata(name, "0.2.0"), &simple_crate(name, "0.2.0"));
            publish_to(d, REG, Some(&bob), body)
        },
    );
    // Another spelling of the same crate changes nothing: a non-owner is refused as a
    // non-owner (403), not told to retry with the exact spelling (which would only get a 403).
    for spelling in ["Owned-Demo", "OWNED-DEMO"] {
        let label = format!("bob publishes {spelling} over alice's {name}");
        refused(
            d,
            &label,
            &[(name, "0.1.0"), (name, "0.2.0"), (spelling, "0.2.0")],
            &[403],
            &["`bob` is not an owner"],
            || {
                let body = publish_body(&metadata(spelling, "0.2.0"), &simple_crate(spelling, "0.2.0"));
                publish_to(d, REG, Some(&bob), body)
            },
        );
    }
    refused(
        d,
        "bob yanks alice's crate",
        &[(name, "0.1.0")],
        &[403],
        &["`bob` is not an owner"],
        || yank(d, REG, Some(&bob), name, "0.1.0"),
    );
    refused(
        d,
        "bob adds himself as owner",
        &[(name, "0.1.0")],
        &[403],
        &["`bob` is not an owner"],
        || change_owners(d, REG, Method::PUT, &bob, name, &["bob"]),
    );
    assert_eq!(
        owner_logins(d, &cx.alice, name),
        alice_only,
        "owners after bob's attempt"
    );
    refused(
        d,
        "alice removes the last owner",
        &[(name, "0.1.0")],
        &[400],
        &["every owner"],
        || change_owners(d, REG, Method::DELETE, &cx.alice, name, &["alice"]),
    );
    assert_eq!(
        owner_logins(d, &cx.alice, name),
        alice_only,
        "owners after removing the last"
    );
    refused(
        d,
        "adding a user that does not exist",
        &[(name, "0.1.0")],
        &[404],
        &["`nobody-here`"],
        || change_owners(d, REG, Method::PUT, &cx.alice, name, &["nobody-here"]),
    );
    assert_eq!(
        owner_logins(d, &cx.alice, name),
        alice_only,
        "owners after adding an unknown user"
    );
    refused(
        d,
        "yank of a version that does not exist",
        &[(name, "0.1.0")],
        &[404],
        &["`9.9.9`"],
        || yank(d, REG, Some(&cx.alice), name, "9.9.9"),
    );
    refused(
        d,
        "yank of a crate that does not exist",
        &[("owned-none", "0.1.0")],
        &[404],
        &["`owned-none`"],
        || yank(d, REG, Some(&cx.alice), "owned-none", "0.1.0"),
    );
    vec![ok]
}

/// Writes to the read-only proxy registry `crates-io` are a prompt 405, never a hang.
fn proxy(d: &Daemon, cx: &Ctx) -> Vec<Accepted> {
    let (name, vers) = ("proxy-demo", "0.1.0");
    let proxy_index = format!("/crates-io/index/{}", index_path(name));
    let before = get(d, &proxy_index, None);
    refused(
        d,
        "publish to the proxy",
        &[(name, vers)],
        &[405],
        &["read-only proxy"],
        || {
            let body = publish_body(&metadata(name, vers), &simple_crate(name, vers));
            publish_to(d, "crates-io", Some(&cx.alice), body)
        },
    );
    refused(
        d,
        "yank on the proxy",
        &[(name, vers)],
        &[405],
        &["read-only proxy"],
        || yank(d, "crates-io", Some(&cx.alice), name, vers),
    );
    refused(
        d,
        "owners change on the proxy",
        &[(name, vers)],
        &[405],
        &["read-only proxy"],
        || change_owners(d, "crates-io", Method::PUT, &cx.alice, name, &["alice"]),
    );
    let after = get(d, &proxy_index, None);
    assert_eq!(
        (before.status, before.body),
        (after.status, after.body),
        "the proxy's index file of {name} changed"
    );
    Vec::new()
}

/// Routing: wrong methods are 405 with `Allow`, unknown paths and registries 404 JSON, and a
/// doubled slash before `api/v1` routes like a single one.
fn routing(d: &Daemon, cx: &Ctx) -> Vec<Accepted> {
    let send = |method: Method, path: &str| call(method, &d.url(path), Some(&cx.alice), None, &[]);
    for (method, path, allow) in [
        (Method::GET, "/local/api/v1/crates/new", "PUT"),
        (Method::GET, "/local//api/v1/crates/new", "PUT"),
        (Method::POST, "/local/api/v1/crates/new", "PUT"),
        (Method::POST, "/local/api/v1/crates/x/1.0.0/yank", "DELETE"),
    ] {
        let label = format!("{method} {path}");
        let resp = refused(d, &label, &[], &[405], &["not allowed"], || send(method.clone(), path));
        let got = resp.header("allow").unwrap_or_default();
        assert!(got.contains(allow), "{label}: `Allow` should list {allow}, got {got:?}");
    }
    for path in [
        "/local/nothing-here",
        "/-/nothing",
        "/local/api/v1/crates/new/extra",
        "//nothing",
        "/local/api/v2/crates/new",
    ] {
        let label = format!("GET {path}");
        refused(d, &label, &[], &[404], &["no endpoint"], || send(Method::GET, path));
    }
    refused(
        d,
        "config.json of an unknown registry",
        &[],
        &[404],
        &["`no-such-registry`"],
        || send(Method::GET, "/no-such-registry/index/config.json"),
    );
    refused(
        d,
        "publish to an unknown registry",
        &[],
        &[404],
        &["`no-such-registry`"],
        || {
            let body = publish_body(&metadata("ghost-demo", "0.1.0"), &simple_crate("ghost-demo", "0.1.0"));
            publish_to(d, "no-such-registry", Some(&cx.alice), body)
        },
    );

    // `api = "http://…/local/"` makes cargo send `/local//api/v1/...`.
    let (name, vers) = ("slash-demo", "0.1.0");
    let krate = simple_crate(name, vers);
    let resp = put_publish(
        d,
        "/local//api/v1/crates/new",
        Some(&cx.alice),
        publish_body(&metadata(name, vers), &krate),
    );
    assert_eq!(
        resp.status,
        200,
        "publish via //api/v1: {}\n{}",
        resp.text(),
        d.log_tail()
    );
    let resp = call(
        Method::DELETE,
        &d.url(&format!("/local//api/v1/crates/{name}/{vers}/yank")),
        Some(&cx.alice),
        None,
        &[],
    );
    assert_eq!(resp.status, 200, "yank via //api/v1: {}\n{}", resp.text(), d.log_tail());
    assert_eq!(resp.json()["ok"], true, "yank body: {}", resp.text());
    let resp = call(
        Method::PUT,
        &d.url(&format!("/local//api/v1/crates/{name}/{vers}/unyank")),
        Some(&cx.alice),
        None,
        &[],
    );
    assert_eq!(
        resp.status,
        200,
        "unyank via //api/v1: {}\n{}",
        resp.text(),
        d.log_tail()
    );
    vec![Accepted {
        name: name.to_owned(),
        vers: vers.to_owned(),
        krate,
    }]
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Runs one group on a fresh default daemon and checks the store afterwards.
fn on_default_daemon(group: fn(&Daemon, &Ctx) -> Vec<Accepted>) {
    let d = Daemon::start();
    let cx = ctx(&d);
    let accepted = group(&d, &cx);
    assert_served(&d, &accepted);
}

#[test]
fn frames_are_checked() {
    on_default_daemon(frames);
}

#[test]
fn oversize_bodies_are_413() {
    let d = Daemon::start_with_config(&format!("{HERMETIC_DEFAULT}{SMALL_LIMITS}"));
    let cx = ctx(&d);
    let accepted = oversize(&d, &cx);
    assert_served(&d, &accepted);
}

#[test]
fn metadata_json_is_checked() {
    on_default_daemon(metadata_json);
}

#[test]
fn crate_names_are_checked() {
    on_default_daemon(names);
}

#[test]
fn versions_are_checked() {
    on_default_daemon(versions);
}

#[test]
fn hostile_tarballs_are_refused() {
    on_default_daemon(tarballs);
}

#[test]
fn auth_is_checked() {
    on_default_daemon(auth);
}

#[test]
fn ownership_is_enforced() {
    on_default_daemon(ownership);
}

#[test]
fn proxy_registry_refuses_writes() {
    on_default_daemon(proxy);
}

#[test]
fn routing_errors_are_json() {
    on_default_daemon(routing);
}

/// Reads one HTTP/1.1 response (head, lowercased, and its `Content-Length` body) from a raw
/// connection; `None` when the connection ends or fails before a complete response.
pub(crate) fn read_response(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut more = |buf: &mut Vec<u8>| match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    };
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if !more(&mut buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < end + 4 + len {
        if !more(&mut buf) {
            return None;
        }
    }
    Some((head, buf[end + 4..end + 4 + len].to_vec()))
}

/// A publish body over the transport limit is answered 413 before it is read. The connection
/// must then either be announced as closing (`Connection: close`) or still serve the next
/// request; otherwise a keep-alive client (reqwest here, cargo's libcurl too) reuses a
/// connection the daemon has dropped and its next request fails with a transport error.
#[test]
fn early_413_keeps_the_connection_usable_or_closes_it() {
    let d = Daemon::start_with_config(&format!("{HERMETIC_DEFAULT}{SMALL_LIMITS}"));
    // Authorised (writes are authorised before their body is read, so an anonymous one would
    // get a 401 instead).
    let token = d.user_token("alice", &[]);
    let addr = d.base_url().strip_prefix("http://").expect("http base URL").to_owned();
    let mut stream = TcpStream::connect(&addr).expect("connect to the daemon");
    // Guards against a wedged connection, not assertions about speed.
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(60))).unwrap();

    let body = vec![0x5a; 80 << 10];
    let mut request = format!(
        "PUT /{REG}/api/v1/crates/new HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\n\
         Content-Type: application/octet-stream\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let written = stream.write_all(&request);
    let (head, error_body) = read_response(&mut stream).unwrap_or_else(|| {
        panic!(
            "no response to the over-limit publish (write: {written:?})\n{}",
            d.log_tail()
        )
    });
    assert!(head.starts_with("http/1.1 413"), "over-limit publish: {head}");
    let detail: Value = serde_json::from_slice(&error_body).expect("413 body is JSON");
    assert!(
        detail["errors"][0]["detail"]
            .as_str()
            .is_some_and(|s| s.contains("limit")),
        "413 body: {detail}"
    );
    if head
        .lines()
        .any(|l| l.starts_with("connection:") && l.contains("close"))
    {
        return;
    }

    let next = stream.write_all(format!("GET /-/healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
    let second = read_response(&mut stream);
    assert!(
        second.as_ref().is_some_and(|(h, _)| h.starts_with("http/1.1 200")),
        "the 413 did not announce `Connection: close`, so the connection may be reused, but the next \
         request on it (GET /-/healthz) got no answer: write {next:?}, response {second:?}\n413 head:\n{head}"
    );
}

/// Every group against one daemon; then a good publish of fresh versions still succeeds, and
/// after SIGKILL + restart every accepted version (and nothing else) is served.
#[test]
fn store_survives_every_bad_input() {
    let mut d = Daemon::start_with_config(&format!("{HERMETIC_DEFAULT}{SMALL_LIMITS}"));
    let cx = ctx(&d);
    let groups: [fn(&Daemon, &Ctx) -> Vec<Accepted>; 10] = [
        frames,
        oversize,
        metadata_json,
        names,
        versions,
        tarballs,
        auth,
        ownership,
        proxy,
        routing,
    ];
    let mut accepted: Vec<Accepted> = groups.iter().flat_map(|g| g(&d, &cx)).collect();
    accepted.push(publish_simple(&d, &cx.alice, "fresh-demo", "1.0.0"));
    accepted.push(publish_simple(&d, &cx.alice, "vers-demo", "0.2.0"));
    accepted.push(publish_simple(&d, &cx.alice, "meta-demo", "0.1.0"));
    assert_served(&d, &accepted);

    d.kill9();
    d.restart();
    assert_served(&d, &accepted);
    // The refusals still hold after the restart.
    refused(
        &d,
        "duplicate after restart",
        &[("fresh-demo", "1.0.0")],
        &[409],
        &["already uploaded"],
        || {
            let body = publish_body(&metadata("fresh-demo", "1.0.0"), &other_crate("fresh-demo", "1.0.0"));
            publish_to(&d, REG, Some(&cx.alice), body)
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Names, versions and paths at the boundary; garbage from the upstream

/// One request on its own connection with the request target sent byte for byte (an HTTP
/// client would resolve `%2E%2E` and `..` before sending). Returns the status and the body
/// parsed as JSON (`Value::Null` when it is not JSON).
fn raw_request(d: &Daemon, method: &str, target: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    let addr = d.base_url().strip_prefix("http://").expect("http base URL").to_owned();
    let mut stream = TcpStream::connect(&addr).expect("connect to the daemon");
    // Guards against a wedged connection, not assertions about speed.
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token.map(|t| format!("Authorization: {t}\r\n")).unwrap_or_default();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Accept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    stream.write_all(&req).expect("send the request");
    let (head, body) =
        read_response(&mut stream).unwrap_or_else(|| panic!("no response to {method} {target}\n{}", d.log_tail()));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head}"));
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Percent-encodes every byte but ASCII letters, digits, `-` and `_` (so `.` too: no `..`
/// reaches a client-side normaliser).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The index path the daemon computed for a name before names were checked (byte slices of
/// the lowercased name), each part percent-encoded: what gets a hostile name past the prefix
/// check of the index route. `None` when the old code would have panicked or the name has a
/// `/` (which cannot come back as one segment).
fn old_style_index_target(reg: &str, name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if lower.contains('/') {
        return None;
    }
    let parts: Vec<&str> = match lower.len() {
        0 => return None,
        1 => vec!["1"],
        2 => vec!["2"],
        3 => vec!["3", lower.get(..1)?],
        _ => vec![lower.get(..2)?, lower.get(2..4)?],
    };
    let parts: Vec<String> = parts.iter().map(|p| enc(p)).collect();
    Some(format!("/{reg}/index/{}/{}", parts.join("/"), enc(&lower)))
}

/// Asserts a refusal: 400 or 404 with Cargo's error body.
fn assert_refused(label: &str, (status, body): (u16, Value), d: &Daemon) {
    assert!(
        matches!(status, 400 | 404),
        "{label}: expected 400 or 404, got {status}: {body}\n{}",
        d.log_tail()
    );
    assert!(
        body["errors"][0]["detail"].is_string(),
        "{label}: the error body is not Cargo's JSON: {body}"
    );
}

/// A daemon whose `crates-io` proxy reads `up`, with `local` merged over it (by crate) and
/// `union` (by version).
fn daemon_over_fake(up: &FakeUpstream) -> Daemon {
    Daemon::start_with_config(&crate::support::merged_config(
        &up.index_url(),
        "",
        "",
        "",
        Some("allow_upstream_names = true"),
    ))
}

fn assert_no_panic(d: &Daemon) {
    let log = d.stderr_log();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{}", d.log_tail());
}

/// Non-ASCII names in proxied and merged download URLs (`%C3%A9a`, `日本語`) used to panic in
/// `index_path` (byte slicing). They are refused with a 400 naming the problem, every time
/// (nothing wedged), with no panic and nothing sent upstream.
#[test]
fn non_ascii_names_in_download_urls_are_refused_without_a_panic() {
    let up = FakeUpstream::start_blocking();
    let d = daemon_over_fake(&up);
    for name in ["éa", "日本語", "ab日本"] {
        for reg in ["crates-io", "local", "union"] {
            let url = d.url(&format!("/{reg}/api/v1/crates/{}/1.0.0/download", enc(name)));
            for attempt in 0..2 {
                let resp = call(Method::GET, &url, None, None, &[]);
                assert_eq!(
                    resp.status,
                    400,
                    "{reg} download of {name:?} (attempt {attempt}): {}\n{}",
                    resp.text(),
                    d.log_tail()
                );
                let details = resp.error_details().join(" | ");
                assert!(details.contains("invalid crate name"), "{details}");
            }
        }
    }
    assert_no_panic(&d);
    assert_eq!(up.requests().len(), 0, "sent upstream: {:?}", up.requests());
}

/// Hostile names and versions (percent-encoded `?`, `#`, `..`, `/`, `\`, NUL, spaces, non-ASCII,
/// 30,000 characters) on every route that takes one get a 400 or 404 with Cargo's JSON error and
/// are never forwarded: the fake upstream sees no request at all. Before, 15 of 15 such names
/// reached the upstream, some outside its base path (`GET /secret`).
#[test]
fn hostile_names_and_versions_are_refused_on_every_route_and_never_forwarded() {
    let up = FakeUpstream::start_blocking();
    up.add_crate(&Package::new("foo", "1.0.0"));
    let d = daemon_over_fake(&up);
    let token = d.user_token("alice", &[]);
    let long = "a".repeat(30_000);
    let names: Vec<&str> = vec![
        "..",
        "../secret",
        "../../secret",
        "../../../secret",
        "..?x",
        "a?b=c",
        "?x",
        "a#b",
        "#frag",
        "a/b",
        "a\\b",
        "..\\..\\secret",
        "a b",
        "a\0b",
        "a.b",
        "éa",
        "日本語",
        "-x",
        &long,
    ];
    for name in &names {
        let e = enc(name);
        let short: String = name.chars().take(20).collect();
        for reg in ["crates-io", "local", "union"] {
            if let Some(target) = old_style_index_target(reg, name) {
                let label = format!("{reg} index file of {short:?}");
                assert_refused(&label, raw_request(&d, "GET", &target, None, b""), &d);
            }
            let target = format!("/{reg}/api/v1/crates/{e}/1.0.0/download");
            let label = format!("{reg} download of {short:?}");
            assert_refused(&label, raw_request(&d, "GET", &target, None, b""), &d);
        }
        let base = format!("/local/api/v1/crates/{e}");
        let owners = br#"{"users":["alice"]}"#;
        for (method, target, body) in [
            ("DELETE", format!("{base}/1.0.0/yank"), &b""[..]),
            ("PUT", format!("{base}/1.0.0/unyank"), &b""[..]),
            ("GET", format!("{base}/owners"), &b""[..]),
            ("PUT", format!("{base}/owners"), &owners[..]),
            ("DELETE", format!("{base}/owners"), &owners[..]),
        ] {
            let label = format!("{method} {} of {short:?}", target.rsplit('/').next().unwrap_or(""));
            assert_refused(&label, raw_request(&d, method, &target, Some(&token), body), &d);
        }
        // A search query is matched, never looked up: it answers 200, or 400 when over-long.
        for reg in ["crates-io", "local"] {
            let (status, body) = raw_request(&d, "GET", &format!("/{reg}/api/v1/crates?q={e}"), None, b"");
            let expected = if name.len() > 256 { 400 } else { 200 };
            assert_eq!(status, expected, "{reg} search for {short:?}: {body}");
        }
    }
    // Versions: a known crate with a version that is not semver (or is over-long).
    let long_version = format!("1.0.0-{}", "a".repeat(30_000));
    for vers in [
        "..",
        "../../secret",
        "1.0.0/../../secret",
        "1.0.0?x=1",
        "1.0.0#x",
        "1.0.0\\x",
        "1.0",
        "v1.0.0",
        "1.0.0 ",
        "1.0.0-é",
        &long_version,
    ] {
        let e = enc(vers);
        let short: String = vers.chars().take(20).collect();
        for reg in ["crates-io", "local", "union"] {
            let target = format!("/{reg}/api/v1/crates/foo/{e}/download");
            let label = format!("{reg} download of foo version {short:?}");
            let (status, body) = raw_request(&d, "GET", &target, None, b"");
            assert_refused(&label, (status, body.clone()), &d);
            assert!(
                body["errors"][0]["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("invalid version"),
                "{label}: {body}"
            );
        }
        let target = format!("/local/api/v1/crates/foo/{e}/yank");
        assert_refused(
            &format!("yank of version {short:?}"),
            raw_request(&d, "DELETE", &target, Some(&token), b""),
            &d,
        );
    }
    assert_no_panic(&d);
    assert_eq!(
        up.requests().iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
        Vec::<String>::new(),
        "hostile names or versions were forwarded upstream"
    );

    // The log above is meaningful: a good request does reach the upstream.
    let ok = get(&d, "/crates-io/api/v1/crates/foo/1.0.0/download", None);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(up.hits(&FakeUpstream::index_path("foo")) >= 1);
}

/// A `.crate` whose `Cargo.toml` is larger than the manifest cap (4 MiB) is refused with a
/// clear 400, however well it compresses; before, a 300 MiB manifest was read whole and
/// accepted. A manifest under the cap is still accepted.
#[test]
fn oversized_manifests_are_refused() {
    let d = Daemon::start();
    let alice = d.user_token("alice", &[]);
    let (name, vers) = ("big-manifest", "0.1.0");
    let padded = |bytes: usize| {
        let m = format!("{}# {}\n", manifest(name, vers), "x".repeat(bytes));
        crate_tarball(name, vers, &[("Cargo.toml", &m), ("src/lib.rs", "")])
    };
    refused(
        &d,
        "a 5 MiB Cargo.toml",
        &[(name, vers)],
        &[400],
        &["Cargo.toml", "at most 4194304 bytes"],
        || {
            publish_to(
                &d,
                REG,
                Some(&alice),
                publish_body(&metadata(name, vers), &padded(5 << 20)),
            )
        },
    );
    let ok = publish_ok(&d, &alice, &metadata(name, vers), padded(1 << 20));
    assert_served(&d, &[ok]);
}

/// Garbage lines in an upstream index file (not JSON, missing fields, non-ASCII or invalid
/// names, bad versions) are served verbatim by the proxy, and never break our own parsing:
/// downloads of good versions work, the garbage lines' versions are 404 (a non-ASCII name in a
/// line used to panic in `prefix_of`; a `../x` name was pasted into the download URL), the
/// merged file leaves them out, search shows the real name, and the log says so once per file.
#[test]
fn garbage_upstream_index_lines_are_served_verbatim_and_skipped() {
    let up = FakeUpstream::start_blocking();
    let good = Package::new("messy", "1.0.0");
    up.add_crate(&good);
    let (c, two, three) = (
        good.cksum(),
        Package::new("messy", "2.0.0"),
        Package::new("messy", "3.0.0"),
    );
    let (c2, c3) = (two.cksum(), three.cksum());
    for line in [
        "not json at all".to_owned(),
        r#"{"name":"messy"}"#.to_owned(),
        format!(r#"{{"name":"日本語","vers":"2.0.0","deps":[],"cksum":"{c2}","features":{{}},"yanked":false}}"#),
        format!(r#"{{"name":"../x","vers":"3.0.0","deps":[],"cksum":"{c3}","features":{{}},"yanked":false}}"#),
        format!(r#"{{"name":"messy","vers":"banana","deps":[],"cksum":"{c}","features":{{}},"yanked":false}}"#),
        r#"{"name":"messy","vers":"4.0.0","deps":[],"cksum":"zz","features":{},"yanked":false}"#.to_owned(),
    ] {
        up.add_raw_line("messy", &line);
    }
    // The files also answer under the garbage lines' names (as sent, or as a client resolves
    // `../x`), so only our own parsing can refuse them.
    for (n, v, bytes) in [
        ("日本語", "2.0.0", two.crate_bytes()),
        ("../x", "3.0.0", three.crate_bytes()),
        ("x", "3.0.0", three.crate_bytes()),
        ("messy", "4.0.0", good.crate_bytes()),
    ] {
        up.add_download(n, v, bytes);
    }
    let d = daemon_over_fake(&up);
    let upstream_file = up.index_body("messy").unwrap();

    let served = get(&d, &format!("/crates-io/index/{}", index_path("messy")), None);
    assert_eq!(served.status, 200);
    assert!(
        served.body == upstream_file,
        "the proxy serves the upstream file verbatim"
    );
    for reg in ["crates-io", "local", "union"] {
        let ok = get(&d, &format!("/{reg}/api/v1/crates/messy/1.0.0/download"), None);
        assert_eq!(ok.status, 200, "{reg}: {}\n{}", ok.text(), d.log_tail());
        assert!(ok.body == good.crate_bytes());
        for vers in ["2.0.0", "3.0.0", "4.0.0"] {
            for attempt in 0..3 {
                let resp = get(&d, &format!("/{reg}/api/v1/crates/messy/{vers}/download"), None);
                assert_eq!(
                    resp.status,
                    404,
                    "{reg} messy@{vers} (attempt {attempt}): {}\n{}",
                    resp.text(),
                    d.log_tail()
                );
            }
        }
    }
    let bad_paths: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| !(p.starts_with("/index/") || p.starts_with("/dl/messy/1.0.0/")))
        .collect();
    assert!(bad_paths.is_empty(), "requests made from garbage lines: {bad_paths:?}");

    // The merged (by version) file: a local version plus the usable upstream line only.
    let alice = d.user_token("alice", &[]);
    let body = publish_body(&metadata("messy", "0.5.0"), &simple_crate("messy", "0.5.0"));
    let published = publish_to(&d, "union", Some(&alice), body);
    assert_eq!(published.status, 200, "{}\n{}", published.text(), d.log_tail());
    for _ in 0..3 {
        let merged = get(&d, &format!("/union/index/{}", index_path("messy")), None);
        assert_eq!(merged.status, 200, "{}", merged.text());
        let lines = parse_index_lines(&merged.text());
        let versions: Vec<&str> = lines.iter().map(|l| l["vers"].as_str().unwrap_or("?")).collect();
        assert_eq!(versions, ["0.5.0", "1.0.0"], "merged file:\n{}", merged.text());
    }
    // Search shows the crate under its real name, with its real highest version.
    for reg in ["crates-io", "local"] {
        for _ in 0..3 {
            let found = get(&d, &format!("/{reg}/api/v1/crates?q=mess"), None).json();
            let hit = found["crates"]
                .as_array()
                .and_then(|a| a.iter().find(|c| c["name"] == "messy").cloned())
                .unwrap_or_else(|| panic!("{reg}: messy not found: {found}"));
            assert_eq!(hit["max_version"], "1.0.0", "{reg}: {found}");
        }
    }
    assert_no_panic(&d);
    let warnings = d
        .stderr_log()
        .lines()
        .filter(|l| l.contains("unusable lines") && l.contains("messy"))
        .count();
    assert_eq!(
        warnings,
        1,
        "one warning for the file, not one per request:\n{}",
        d.log_tail()
    );
}
