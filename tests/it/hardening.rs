//! Hardening of the edge (issue "real networks, hostile clients, faulty upstreams"): writes are
//! authorised before their bodies are read, a write is visible to every read after its 200, a
//! revoked bootstrap admin token stays revoked, a merged registry keeps working while its
//! upstream is down, and a merged view never shows what its upstreams' access rules hide.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::bad_input::read_response;
use crate::support::cargo::CargoEnv;
use crate::support::daemon::{Daemon, BIN, HERMETIC_DEFAULT};
use crate::support::fake_upstream::{FakeUpstream, Package};
use crate::support::http;
use crate::support::index_path;
use crate::support::package::simple_publish;

/// Opens a connection and sends only the head of a request announcing a `len`-byte body.
fn send_head(d: &Daemon, method: &str, path: &str, token: Option<&str>, len: u64) -> TcpStream {
    let addr = d.base_url().strip_prefix("http://").expect("http base URL").to_owned();
    let mut stream = TcpStream::connect(&addr).expect("connect to the daemon");
    // Guards against a wedged connection (the failure before the fix), not a speed assertion.
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map(|t| format!("Authorization: {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/octet-stream\r\n\
         Content-Length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send the request head");
    stream
}

/// The status and `detail` of a response read from a connection whose body was never sent.
fn answer_without_body(stream: &mut TcpStream, what: &str) -> (u16, String, String) {
    let (head, body) =
        read_response(stream).unwrap_or_else(|| panic!("{what}: no answer while the body was still unsent"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{what}: body is not JSON ({e})"));
    let detail = v["errors"][0]["detail"].as_str().unwrap_or_default().to_owned();
    (status, detail, head)
}

/// Publish and owner changes without a valid token are answered 401/403 before the body is
/// read (it is never sent here), and the connection is closed: before the fix the daemon
/// waited for (and buffered) the whole announced body, so these connections got no answer.
#[test]
fn writes_are_refused_before_their_bodies_are_read() {
    let d = Daemon::start();
    let reader = d.user_token("reader", &["read"]);
    let cases: [(&str, &str, Option<&str>, u16); 5] = [
        ("PUT", "/local/api/v1/crates/new", None, 401),
        ("PUT", "/local/api/v1/crates/new", Some("not-a-token"), 401),
        ("PUT", "/local/api/v1/crates/new", Some(reader.as_str()), 403),
        ("PUT", "/local/api/v1/crates/demo/owners", None, 401),
        ("DELETE", "/local/api/v1/crates/demo/owners", Some(reader.as_str()), 403),
    ];
    for (method, path, token, want) in cases {
        let what = format!("{method} {path} (token: {})", token.is_some());
        // 40 connections at once, each announcing 512 KiB (under every body limit, so only the
        // order of the checks can refuse them early): none is waited for or buffered.
        let mut streams: Vec<TcpStream> = (0..40).map(|_| send_head(&d, method, path, token, 512 << 10)).collect();
        for s in &mut streams {
            let (status, detail, head) = answer_without_body(s, &what);
            assert_eq!(status, want, "{what}: {detail}");
            assert!(!detail.is_empty(), "{what}: empty error detail");
            assert!(
                head.lines()
                    .any(|l| l.starts_with("connection:") && l.contains("close")),
                "{what}: the unread body must close the connection:\n{head}"
            );
        }
    }
    // The daemon is still fine.
    assert_eq!(http::get(&d.url("/-/healthz"), None).status, 200);
}

/// After a publish, yank or unyank returns 200, every following read of the index file shows
/// the change, with readers hammering that file throughout.
#[test]
fn a_write_is_visible_to_every_read_after_its_200() {
    let d = Arc::new(Daemon::start_with_config(HERMETIC_DEFAULT));
    let token = d.user_token("alice", &[]);
    let name = "race-demo";
    let url = d.url(&format!("/local/index/{}", index_path(name)));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, reads) = (url.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let client = http::client();
                while !stop.load(Ordering::Relaxed) {
                    let _ = rt.block_on(http::send_async(&client, reqwest::Method::GET, &url, None, None, &[]));
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let index_has = |vers: &str, yanked: bool| {
        let r = http::get(&url, None);
        assert_eq!(r.status, 200, "index of {name}: {}", r.text());
        r.text().lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["vers"] == vers && v["yanked"] == yanked
        })
    };
    let api = d.url("/local/api/v1/crates");
    for i in 0..40 {
        let vers = format!("0.{i}.0");
        let (body, _) = simple_publish(name, &vers);
        let r = http::publish_raw(&d.url("/local"), Some(&token), body);
        assert_eq!(r.status, 200, "publish {vers}: {}", r.text());
        assert!(
            index_has(&vers, false),
            "{name}@{vers} missing from the index after its 200"
        );
        if i % 8 == 0 {
            let r = http::delete(&format!("{api}/{name}/{vers}/yank"), Some(&token), None);
            assert_eq!(r.status, 200, "yank {vers}: {}", r.text());
            assert!(
                index_has(&vers, true),
                "{name}@{vers} not yanked in the index after its 200"
            );
            let r = http::send(
                reqwest::Method::PUT,
                &format!("{api}/{name}/{vers}/unyank"),
                Some(&token),
                None,
                &[],
            );
            assert_eq!(r.status, 200, "unyank {vers}: {}", r.text());
            assert!(
                index_has(&vers, false),
                "{name}@{vers} still yanked after the unyank's 200"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(reads.load(Ordering::Relaxed) > 0, "the readers never ran");
}

/// A revoked bootstrap admin token stays revoked across restarts: the daemon does not store it
/// again from `<data_dir>/admin-token` (it did before the fix), and says how to get a new one.
#[test]
fn a_revoked_bootstrap_token_stays_revoked() {
    let mut d = Daemon::start_with_bootstrap_token(HERMETIC_DEFAULT);
    let bootstrap = d.admin_token().to_owned();
    assert!(!bootstrap.is_empty(), "no bootstrap token was written");
    let tokens_url = d.url("/-/api/v1/tokens");
    // A second admin token, then revoke the bootstrap one with it.
    let second = d.user_token("ops", &["admin"]);
    let list = http::get(&tokens_url, Some(&second)).json();
    let id = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bootstrap admin token")
        .and_then(|t| t["id"].as_str())
        .expect("the bootstrap token is listed")
        .to_owned();
    let r = http::delete(&format!("{tokens_url}/{id}"), Some(&second), None);
    assert_eq!(r.status, 200, "revoke: {}", r.text());
    assert_eq!(http::get(&tokens_url, Some(&bootstrap)).status, 401);

    d.kill9();
    d.restart();
    let tokens_url = d.url("/-/api/v1/tokens");
    assert_eq!(
        http::get(&tokens_url, Some(&bootstrap)).status,
        401,
        "the revoked bootstrap token works again after a restart"
    );
    assert_eq!(http::get(&tokens_url, Some(&second)).status, 200);
    assert!(
        d.stderr_log().contains("was revoked"),
        "the start does not say the bootstrap token was revoked:\n{}",
        d.log_tail()
    );
    assert!(
        d.stdout_log().contains("was revoked"),
        "the start banner does not say the bootstrap token was revoked:\n{}",
        d.stdout_log()
    );
}

/// A `crates-io` proxy over `up` (with `proxy_extra` lines), `local` merged over it with
/// `local_extra`, and `union` (`shadow = "version"`) over it too.
fn merged_config(up: &FakeUpstream, proxy_extra: &str, local_extra: &str) -> String {
    crate::support::merged_config(&up.index_url(), "", proxy_extra, local_extra, Some(local_extra))
}

/// With the upstream unreachable, a merged registry still takes a new private crate — real
/// `cargo publish` first asks for the crate's index file, which answered 502 before — and keeps
/// serving its local crates. The dependency-confusion guard cannot ask the upstream then: with
/// `shadow = "crate"` (a local crate hides every upstream version of its name) the publish goes
/// ahead; with `shadow = "version"` it is refused with a 503 that says what to do.
#[test]
fn a_merged_registry_works_while_its_upstream_is_down() {
    let mut up = FakeUpstream::start_blocking();
    up.add_crate(&Package::new("pubdep", "1.0.0"));
    let d = Daemon::start_with_config(&merged_config(&up, "", ""));
    let token = d.user_token("alice", &[]);
    let env = CargoEnv::new(&d);
    let publish_lib = |name: &str| {
        let dir = env.project(
            &format!("{name}-0.1.0"),
            &format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense = \"MIT\"\ndescription = \"d\"\n"
            ),
            &[("src/lib.rs", &format!("pub fn {}() {{}}\n", name.replace('-', "_")))],
        );
        env.must_succeed(
            &dir,
            &["publish", "--registry", "local", "--allow-dirty", "--token", &token],
        );
    };
    // Publishing while the upstream is up: the guard asks it.
    publish_lib("early");

    up.go_down_blocking();
    // A name that is not local and not cached: 404, not 502.
    let r = http::get(&d.url(&format!("/local/index/{}", index_path("brand-new"))), None);
    assert_eq!(
        r.status,
        404,
        "merged index of an unknown name while the upstream is down: {}",
        r.text()
    );
    // Real cargo publishes a brand-new private crate.
    publish_lib("brand-new");
    // And resolves local crates through the merged view.
    let app = env.project(
        "app",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n\
         brand-new = { version = \"0.1\", registry = \"local\" }\nearly = { version = \"0.1\", registry = \"local\" }\n",
        &[("src/main.rs", "fn main() { brand_new::brand_new(); early::early(); }\n")],
    );
    env.must_succeed(&app, &["build"]);

    // shadow = "version": the guard does not publish a new name blind.
    let (body, _) = simple_publish("blind-name", "0.1.0");
    let r = http::publish_raw(&d.url("/union"), Some(&token), body);
    assert_eq!(
        r.status,
        503,
        "shadow = version publish while the upstream is down: {}",
        r.text()
    );
    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
    let detail = r.error_details().join(" ");
    assert!(
        detail.contains("allow_upstream_names") && detail.contains("shadow"),
        "the 503 does not say what to do: {detail}"
    );
    // The proxy itself has nothing to answer for a never-cached name: 502, as before.
    let r = http::get(&d.url(&format!("/crates-io/index/{}", index_path("pubdep"))), None);
    assert_eq!(r.status, 502, "pubdep was never cached: {}", r.text());

    // Once cached, a name that exists upstream is still refused while the upstream is down
    // (the stale copy answers the guard).
    up.come_back_blocking();
    let r = http::get(&d.url(&format!("/crates-io/index/{}", index_path("pubdep"))), None);
    assert_eq!(r.status, 200, "{}", r.text());
    up.go_down_blocking();
    let (body, _) = simple_publish("pubdep", "9.0.0");
    let r = http::publish_raw(&d.url("/local"), Some(&token), body);
    assert_eq!(r.status, 403, "an upstream name known from the cache: {}", r.text());
}

/// A registry readable without a token may not merge an `auth_required` proxy: the config is
/// refused with a message (check-config accepted it before), and so is the same set-up through
/// the admin API, in either order.
#[test]
fn a_public_registry_may_not_merge_a_private_proxy() {
    let up = FakeUpstream::start_blocking();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, merged_config(&up, "auth_required = true", "")).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config", file.to_str().unwrap()])
        .env_remove("CARGOHOLD_ADMIN_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "check-config accepted it: {err}");
    assert!(
        err.contains("registries.local.upstreams") && err.contains("auth_required"),
        "check-config does not say what is wrong: {err}"
    );

    let d = Daemon::start_with_config(&merged_config(&up, "", ""));
    let admin = |args: &[&str]| d.admin(args);
    let out = admin(&[
        "registry",
        "create",
        "vault",
        "--kind",
        "proxy",
        "--upstream",
        &up.index_url(),
        "--auth-required",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = admin(&["registry", "create", "open", "--kind", "hosted", "--upstreams", "vault"]);
    assert!(
        !out.status.success(),
        "a public registry merging an auth_required proxy was created"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth_required"));
    // The other order: making a merged proxy auth_required while a public registry merges it.
    let r = http::send(
        reqwest::Method::PATCH,
        &d.url("/-/api/v1/registries/crates-io"),
        Some(d.admin_token()),
        Some(br#"{"auth_required": true}"#.to_vec()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("auth_required"), "{}", r.text());
}

/// A token limited to some registries does not reach an `auth_required` proxy through a merged
/// view, and anonymous clients get nothing of it: index, download and search.
#[test]
fn a_merged_view_honours_its_upstreams_access_rules() {
    let up = FakeUpstream::start_blocking();
    let pkg = Package::new("secretdep", "1.0.0");
    up.add_crate(&pkg);
    let d = Daemon::start_with_config(&merged_config(&up, "auth_required = true", "auth_required = true"));
    let only_local = d.user_token_for("carol", &["read"], "local");
    let everywhere = d.user_token("dave", &["read"]);
    let index = d.url(&format!("/local/index/{}", index_path("secretdep")));
    let download = d.url("/local/api/v1/crates/secretdep/1.0.0/download");
    let search = d.url("/local/api/v1/crates?q=secretdep");
    for url in [&index, &download, &search] {
        assert_eq!(http::get(url, None).status, 401, "anonymous {url}");
        let r = http::get(url, Some(&only_local));
        assert_eq!(
            r.status,
            403,
            "a token limited to `local` read {url} through it: {}",
            r.text()
        );
        assert!(
            r.text().contains("crates-io"),
            "the 403 does not name the proxy: {}",
            r.text()
        );
    }
    let r = http::get(&index, Some(&everywhere));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http::get(&download, Some(&everywhere));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, pkg.crate_bytes());
}

/// Search parameters at the edges of their types answer normally (a page number times the page
/// size overflowed before, a panic on the request path).
#[test]
fn search_paging_at_the_edges_is_answered() {
    let d = Daemon::start();
    for query in [
        "q=&page=18446744073709551615&per_page=100",
        "q=x&page=0&per_page=0",
        "q=x&page=-1&per_page=99999999999999999999999",
        "q=%FF%FE&per_page=abc",
    ] {
        let r = http::get(&d.url(&format!("/local/api/v1/crates?{query}")), None);
        assert_eq!(r.status, 200, "search ?{query}: {}", r.text());
        assert!(r.json()["crates"].is_array(), "search ?{query}: {}", r.text());
    }
}

/// Token and owner requests at the edges get a 400 saying why: an expiry that overflows (a
/// panic before) or is in the past, an admin token "limited" to registries (it was silently
/// unlimited), an empty registry list (it meant every registry), and an owners list that is too
/// long (it held the global write lock for seconds) or names an invalid login.
#[test]
fn admin_and_owner_requests_at_the_edges_are_refused() {
    let d = Daemon::start();
    d.add_user("bob");
    let tokens = d.url("/-/api/v1/tokens");
    let admin = Some(d.admin_token());
    for (body, why) in [
        (r#"{"user":"bob","expires":"18446744073709551615s"}"#, "too far"),
        (
            r#"{"user":"bob","expires":"1970-01-01T00:00:01Z"}"#,
            "not in the future",
        ),
        (
            r#"{"user":"bob","scopes":["admin"],"registries":["local"]}"#,
            "cannot be limited",
        ),
        (r#"{"user":"bob","registries":[]}"#, "empty"),
    ] {
        let r = http::send(
            reqwest::Method::POST,
            &tokens,
            admin,
            Some(body.as_bytes().to_vec()),
            &[("Content-Type", "application/json")],
        );
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(why), "{body}: {}", r.text());
    }
    // Owners: publish a crate, then hostile owner lists.
    let alice = d.user_token("alice", &[]);
    let (body, _) = simple_publish("owned", "1.0.0");
    assert_eq!(http::publish_raw(&d.url("/local"), Some(&alice), body).status, 200);
    let owners = d.url("/local/api/v1/crates/owned/owners");
    let many: Vec<String> = (0..101).map(|i| format!("user{i}")).collect();
    for (users, status, why) in [
        (serde_json::json!(many), 400, "at most 100"),
        (serde_json::json!(["bad login!"]), 400, "invalid login"),
        (serde_json::json!(["bob", "bob"]), 200, "bob"),
    ] {
        let r = http::put_json(&owners, Some(&alice), &serde_json::json!({ "users": users }));
        assert_eq!(r.status, status, "{users}: {}", r.text());
        assert!(r.text().contains(why), "{users}: {}", r.text());
    }
}

/// A deleted proxy's cached index files do not come back under a new proxy of the same name
/// (they did, even when the old one was `auth_required` and the new one public).
#[test]
fn a_deleted_proxy_leaves_nothing_for_its_successor() {
    let a = FakeUpstream::start_blocking();
    a.add_crate(&Package::new("privcrate", "1.0.0"));
    let b = FakeUpstream::start_blocking();
    let d = Daemon::start();
    let reader = d.user_token("reader", &["read"]);
    let create = |upstream: &str, private: bool| {
        let mut args = vec!["registry", "create", "p3", "--kind", "proxy", "--upstream", upstream];
        if private {
            args.push("--auth-required");
        }
        d.admin_ok(&args);
    };
    create(&a.index_url(), true);
    let file = d.url(&format!("/p3/index/{}", index_path("privcrate")));
    assert_eq!(http::get(&file, Some(&reader)).status, 200);
    d.admin_ok(&["registry", "delete", "p3"]);
    create(&b.index_url(), false);
    let r = http::get(&file, None);
    assert_eq!(r.status, 404, "the old proxy's file was served: {}", r.text());
    let r = http::get(&d.url("/p3/api/v1/crates?q=privcrate"), None);
    assert!(
        !r.text().contains("privcrate"),
        "search shows the old proxy's crate: {}",
        r.text()
    );
}

/// A hostile upstream cannot make the daemon fetch another host's pages and serve them as
/// index files: a redirect away from the upstream's origin is an upstream error, and the other
/// host is never asked (before, its answer was cached and served to anyone).
#[test]
fn an_upstream_cannot_redirect_index_fetches_elsewhere() {
    let internal = FakeUpstream::start_blocking();
    internal.add_crate(&Package::new("secret", "1.0.0"));
    let hostile = FakeUpstream::start_blocking();
    hostile.set_redirect(Some(&internal.index_file_url("secret")));
    // Also with credentials in the upstream URL: reqwest requests it without them, which once
    // made every index request look like a download to the redirect rule.
    let with_credentials = format!("sparse+http://robot:pw@{}/index/", hostile.addr());
    for upstream in [hostile.index_url(), with_credentials] {
        let d = Daemon::start_with_config(&crate::support::merged_config(&upstream, "", "", "", None));
        let r = http::get(&d.url(&format!("/crates-io/index/{}", index_path("redirect1"))), None);
        assert_eq!(
            r.status,
            502,
            "{upstream}: a redirected index file was served: {}",
            r.text()
        );
        assert!(r.text().contains("302"), "{}", r.text());
        assert_eq!(
            internal.total_hits(),
            0,
            "{upstream}: the daemon followed the redirect to another host"
        );
    }
}

/// Only an outage (unreachable, timed out) makes the merged view answer from its local crates
/// and the dependency-confusion guard decide without the upstream. An upstream that answers
/// with a failure (here 500s; a busy proxy's 503 alike) is passed on: a 404 would be cached by
/// cargo as a true answer, and the guard must not let a new name through on it.
#[test]
fn an_upstream_failure_that_is_not_an_outage_is_passed_on() {
    let up = FakeUpstream::start_blocking();
    let d = Daemon::start_with_config(&merged_config(&up, "", ""));
    let token = d.user_token("alice", &[]);
    up.set_status_override(Some(500));
    let r = http::get(&d.url(&format!("/local/index/{}", index_path("unknown-name"))), None);
    assert_eq!(
        r.status,
        502,
        "merged index while the upstream answers 500: {}",
        r.text()
    );
    let (body, _) = simple_publish("unchecked-name", "0.1.0");
    let r = http::publish_raw(&d.url("/local"), Some(&token), body);
    assert_eq!(r.status, 502, "the guard let a new name through on a 500: {}", r.text());
    up.set_status_override(None);
    let r = http::get(&d.url(&format!("/local/index/{}", index_path("unchecked-name"))), None);
    assert_eq!(r.status, 404, "nothing was published: {}", r.text());
}

/// The merge access rule also covers registries created at run time: a restart with a config
/// that makes a proxy `auth_required` while a stored public registry merges it does not come
/// up (it used to start, and that registry then failed every read with an unexplained 401).
#[test]
fn a_start_is_refused_when_a_stored_registry_would_expose_a_private_proxy() {
    let up = FakeUpstream::start_blocking();
    let mut d = Daemon::start_with_config(&merged_config(&up, "", ""));
    d.admin_ok(&[
        "registry",
        "create",
        "open",
        "--kind",
        "hosted",
        "--upstreams",
        "crates-io",
    ]);
    d.kill9();
    let config = d.scratch_dir().join("private.toml");
    std::fs::write(
        &config,
        merged_config(&up, "auth_required = true", "auth_required = true"),
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
        ])
        .arg(d.data_dir())
        .env("CARGOHOLD_ADMIN_TOKEN", d.admin_token())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon started although `open` would expose the private proxy");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("`open`") && err.contains("auth_required"), "{err}");
}
