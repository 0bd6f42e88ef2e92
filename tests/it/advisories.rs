//! Security advisories (issue 13): a small RustSec advisory-db written here is imported with
//! the CLI through a running daemon (from the checkout and from archives) and decides the
//! downloads of a proxied crate from the fake upstream: `flag` (header + metric), `deny` (403
//! with Cargo's JSON error naming the advisory and how to allow it), `advisories_allow`,
//! patched and unaffected versions, informational advisories, `off`, a merged view; the real
//! `cargo` fails to fetch a project locked to a denied version and names the advisory; a
//! webhook receiver gets `advisory.matched` once per action; bad input is refused.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use crate::support::cargo::CargoEnv;
use crate::support::daemon::{scrub_env, Daemon, BIN};
use crate::support::fake_upstream::{FakeUpstream, Package};
use crate::support::http;
use crate::webhooks::{create_hook, verify, Receiver};

const VULN: &str = "RUSTSEC-2024-0101";
const WITHDRAWN: &str = "RUSTSEC-2024-0102";
const UNMAINTAINED: &str = "RUSTSEC-2024-0103";
const VULN_TITLE: &str = "Memory corruption in vulnlib";

/// One advisory file in RustSec's format (TOML front matter in a ```toml block, then Markdown
/// whose first heading is the title).
fn advisory(id: &str, krate: &str, extra: &str, versions: &str, title: &str) -> String {
    format!(
        "```toml\n[advisory]\nid = \"{id}\"\npackage = \"{krate}\"\ndate = \"2024-02-01\"\nurl = \"https://example.invalid/{id}\"\n{extra}\n[versions]\n{versions}\n```\n\n# {title}\n\nWhat goes wrong, and what to do.\n"
    )
}

/// The fixture: `vulnlib` affected below 1.2.0 (0.x never affected), a withdrawn advisory of
/// `vulnlib` that would affect every version, and `oldlib` unmaintained.
fn write_db(root: &Path) {
    let files = [
        (
            "vulnlib",
            VULN,
            advisory(
                VULN,
                "vulnlib",
                "categories = [\"memory-corruption\"]\n",
                "patched = [\">= 1.2.0\"]\nunaffected = [\"< 1.0.0\"]",
                VULN_TITLE,
            ),
        ),
        (
            "vulnlib",
            WITHDRAWN,
            advisory(
                WITHDRAWN,
                "vulnlib",
                "withdrawn = \"2024-03-01\"\n",
                "patched = []",
                "Withdrawn",
            ),
        ),
        (
            "oldlib",
            UNMAINTAINED,
            advisory(
                UNMAINTAINED,
                "oldlib",
                "informational = \"unmaintained\"\n",
                "patched = []",
                "oldlib is unmaintained",
            ),
        ),
    ];
    for (krate, id, text) in files {
        let dir = root.join("crates").join(krate);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{id}.md")), text).unwrap();
    }
    // What a checkout also holds, and the import leaves alone.
    std::fs::create_dir_all(root.join("rust/std")).unwrap();
    std::fs::write(root.join("README.md"), "# advisory-db\n").unwrap();
}

/// A tar of the checkout `root` under `advisory-db-main/`, written through `wrap`.
fn archive(root: &Path, out: &Path, wrap: impl FnOnce(std::fs::File) -> Box<dyn std::io::Write>) {
    let w = wrap(std::fs::File::create(out).unwrap());
    let mut tar = tar::Builder::new(w);
    tar.append_dir_all("advisory-db-main", root).unwrap();
    tar.into_inner().unwrap().flush().unwrap();
}

fn upstream() -> FakeUpstream {
    let up = FakeUpstream::start_blocking();
    for v in ["0.9.0", "1.0.0", "1.1.0", "1.2.0"] {
        up.add_crate(&Package::new("vulnlib", v));
    }
    up.add_crate(&Package::new("oldlib", "1.0.0"));
    up.add_crate(&Package::new("fine", "1.0.0"));
    up
}

fn config(up: &FakeUpstream, proxy_extra: &str) -> String {
    format!(
        "[registries.crates-io]\nkind = \"proxy\"\nupstream = \"{}\"\n{proxy_extra}\n\n[registries.local]\nkind = \"hosted\"\nupstreams = [\"crates-io\"]\n\n[webhooks]\nallow_private = true\nretry_base = \"50ms\"\n",
        up.index_url()
    )
}

fn download(d: &Daemon, reg: &str, name: &str, vers: &str) -> http::Resp {
    http::get(&d.url(&format!("/{reg}/api/v1/crates/{name}/{vers}/download")), None)
}

/// The advisory header of a download that must succeed.
fn flagged(d: &Daemon, reg: &str, name: &str, vers: &str) -> Option<String> {
    let r = download(d, reg, name, vers);
    assert_eq!(r.status, 200, "{reg}: {name} {vers}: {}", r.text());
    r.header("x-cargohold-advisory")
}

fn status(d: &Daemon) -> Value {
    serde_json::from_str(&d.admin_ok(&["advisories", "status", "--json"])).unwrap()
}

fn metric(d: &Daemon, series: &str) -> u64 {
    let text = http::get(&d.url("/-/metrics"), None).text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[test]
fn a_proxy_flags_denies_and_allows_the_versions_an_advisory_affects() {
    let up = upstream();
    let d = Daemon::start_with_config(&config(&up, ""));
    let rx = Receiver::start(&[]);
    let hook = create_hook(&d, &rx.url(), &["--events", "advisory.matched"]);

    // No database: nothing matches, and the status says so.
    assert!(status(&d)["imported"].is_null());
    assert_eq!(flagged(&d, "crates-io", "vulnlib", "1.0.0"), None);
    assert!(d.admin_ok(&["advisories", "status"]).contains("none imported"));

    let db = d.scratch_dir().join("advisory-db");
    write_db(&db);
    let out = d.admin_ok(&["advisories", "import", db.to_str().unwrap()]);
    assert!(out.contains("2 advisories (1 informational)"), "{out}");
    let s = status(&d);
    assert_eq!(
        (s["advisories"].as_u64(), s["informational"].as_u64()),
        (Some(2), Some(1)),
        "{s}"
    );
    assert_eq!(s["newest_advisory"], "2024-02-01");
    assert!(s["imported"].as_str().is_some(), "{s}");
    let modes: Vec<(String, String)> = s["registries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["advisories"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        modes,
        [("crates-io".into(), "flag".into()), ("local".into(), "flag".into())]
    );

    // flag (the default): served with the header and counted; patched, unaffected and other
    // crates pass untouched; the withdrawn advisory matches nothing.
    let series = "cargohold_advisory_matches_total{registry=\"crates-io\",action=\"flagged\"}";
    let before = metric(&d, series);
    assert_eq!(flagged(&d, "crates-io", "vulnlib", "1.0.0").as_deref(), Some(VULN));
    assert_eq!(flagged(&d, "crates-io", "vulnlib", "1.1.0").as_deref(), Some(VULN));
    assert_eq!(flagged(&d, "crates-io", "vulnlib", "1.2.0"), None, "patched");
    assert_eq!(flagged(&d, "crates-io", "vulnlib", "0.9.0"), None, "unaffected");
    assert_eq!(flagged(&d, "crates-io", "fine", "1.0.0"), None);
    assert_eq!(
        flagged(&d, "crates-io", "oldlib", "1.0.0").as_deref(),
        Some(UNMAINTAINED)
    );
    // A version the upstream does not list is a 404: it counts, reports and denies nothing.
    assert_eq!(download(&d, "crates-io", "vulnlib", "1.0.5").status, 404);
    assert_eq!(metric(&d, series), before + 3, "one count per flagged download");
    // Repeated downloads (a memory hit now) are flagged each time, reported once.
    for _ in 0..3 {
        assert_eq!(flagged(&d, "crates-io", "vulnlib", "1.0.0").as_deref(), Some(VULN));
    }
    assert_eq!(metric(&d, series), before + 6);

    // Search results flag a hit whose newest version is affected (oldlib); vulnlib's newest,
    // 1.2.0, is patched.
    let hits = http::get(&d.url("/crates-io/api/v1/crates?q=lib"), None).json();
    let by_name = |n: &str| {
        hits["crates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("oldlib")["advisories"][0]["id"], UNMAINTAINED, "{hits}");
    assert_eq!(by_name("oldlib")["advisories"][0]["informational"], "unmaintained");
    assert!(by_name("vulnlib").get("advisories").is_none(), "{hits}");
    // So does the web interface's search page.
    let html = http::get(&d.url("/-/search?q=oldlib"), None).text();
    assert!(
        html.contains(&format!("title=\"oldlib is unmaintained\">{UNMAINTAINED}<")),
        "{html}"
    );
    // The crate page shows the selected version's advisory with its title, and marks the
    // affected versions in the table.
    let page = http::get(&d.url("/crates-io/crates/vulnlib/1.0.0"), None);
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        html.contains("role=\"alert\"") && html.contains(VULN) && html.contains(VULN_TITLE),
        "{html}"
    );
    let html = http::get(&d.url("/crates-io/crates/vulnlib/1.2.0"), None).text();
    assert!(!html.contains("role=\"alert\""), "a patched version has no alert");
    assert_eq!(
        html.matches(&format!(">{VULN}<")).count(),
        2,
        "1.0.0 and 1.1.0 are marked: {html}"
    );

    // deny: 403 with Cargo's JSON error naming the advisory, its title and the way out;
    // patched versions and informational advisories still pass.
    d.admin_ok(&["registry", "update", "crates-io", "--advisories", "deny"]);
    assert_eq!(download(&d, "crates-io", "vulnlib", "1.0.6").status, 404, "not a 403");
    let r = download(&d, "crates-io", "vulnlib", "1.0.0");
    assert_eq!(r.status, 403, "{}", r.text());
    let detail = r.error_details().join(" ");
    for want in [
        VULN,
        VULN_TITLE,
        "advisories_allow = [\"RUSTSEC-2024-0101\"]",
        "`crates-io`",
    ] {
        assert!(detail.contains(want), "{want} in {detail}");
    }
    assert_eq!(flagged(&d, "crates-io", "vulnlib", "1.2.0"), None);
    assert_eq!(
        flagged(&d, "crates-io", "oldlib", "1.0.0").as_deref(),
        Some(UNMAINTAINED)
    );
    assert!(
        metric(
            &d,
            "cargohold_advisory_matches_total{registry=\"crates-io\",action=\"denied\"}"
        ) >= 1
    );
    // Through the merged view (flag) the proxy's deny still holds: the stricter one wins.
    let r = download(&d, "local", "vulnlib", "1.1.0");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.error_details()[0].contains(VULN));

    // advisories_allow on the proxy lets it through; the view, which does not allow it,
    // still flags it.
    d.admin_ok(&["registry", "update", "crates-io", "--advisories-allow", VULN]);
    assert_eq!(flagged(&d, "crates-io", "vulnlib", "1.0.0"), None);
    assert_eq!(flagged(&d, "local", "vulnlib", "1.0.0").as_deref(), Some(VULN));

    // off: nothing at all.
    d.admin_ok(&[
        "registry",
        "update",
        "crates-io",
        "--advisories",
        "off",
        "--advisories-allow",
        "",
    ]);
    d.admin_ok(&["registry", "update", "local", "--advisories", "off"]);
    assert_eq!(flagged(&d, "crates-io", "vulnlib", "1.0.0"), None);
    assert_eq!(flagged(&d, "local", "vulnlib", "1.1.0"), None);
    assert_eq!(flagged(&d, "crates-io", "oldlib", "1.0.0"), None);

    // The hook got each finding once per action, however often it was downloaded: vulnlib
    // 1.0.0 (flagged, then denied) and 1.1.0 (crates-io), oldlib (crates-io), vulnlib 1.1.0
    // and 1.0.0 (local).
    let got = rx.wait_for(6, &d);
    let mut findings: Vec<(String, String, String, String)> = got
        .iter()
        .map(verify)
        .map(|b| {
            assert_eq!(b["event"], "advisory.matched");
            (
                b["registry"].as_str().unwrap().to_owned(),
                format!("{}@{}", b["crate"].as_str().unwrap(), b["version"].as_str().unwrap()),
                b["advisory"]["id"].as_str().unwrap().to_owned(),
                b["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    findings.sort();
    let f = |r: &str, cv: &str, id: &str, a: &str| (r.to_owned(), cv.to_owned(), id.to_owned(), a.to_owned());
    assert_eq!(
        findings,
        [
            f("crates-io", "oldlib@1.0.0", UNMAINTAINED, "flagged"),
            f("crates-io", "vulnlib@1.0.0", VULN, "denied"),
            f("crates-io", "vulnlib@1.0.0", VULN, "flagged"),
            f("crates-io", "vulnlib@1.1.0", VULN, "flagged"),
            f("local", "vulnlib@1.0.0", VULN, "flagged"),
            f("local", "vulnlib@1.1.0", VULN, "denied"),
        ]
    );
    let title = got.iter().map(verify).find(|b| b["advisory"]["id"] == VULN).unwrap()["advisory"]["title"].clone();
    assert_eq!(title, VULN_TITLE);
    let deliveries = d.admin_ok(&["hook", "deliveries", &hook]);
    assert_eq!(deliveries.matches("advisory.matched").count(), 6, "{deliveries}");
}

#[test]
fn archives_replace_the_database_and_a_stopped_daemons_store_takes_one_directly() {
    let up = upstream();
    // `local` may publish upstream names, and denies too.
    let cfg = config(&up, "advisories = \"deny\"").replace(
        "upstreams = [\"crates-io\"]\n",
        "upstreams = [\"crates-io\"]\nallow_upstream_names = true\nadvisories = \"deny\"\n",
    );
    let mut d = Daemon::start_with_config(&cfg);
    let db = d.scratch_dir().join("advisory-db");
    write_db(&db);
    // .tar.gz: as the checkout.
    let tgz = d.scratch_dir().join("advisory-db.tar.gz");
    archive(&db, &tgz, |f| {
        Box::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()))
    });
    d.admin_ok(&["advisories", "import", tgz.to_str().unwrap()]);
    assert_eq!(status(&d)["advisories"], 2);
    assert_eq!(download(&d, "crates-io", "vulnlib", "1.0.0").status, 403);

    // .tar.zst of a database without the vulnlib advisory: the import replaces the whole
    // database, so vulnlib passes again.
    std::fs::remove_dir_all(db.join("crates/vulnlib")).unwrap();
    let zst = d.scratch_dir().join("advisory-db.tar.zst");
    archive(&db, &zst, |f| {
        Box::new(zstd::stream::write::Encoder::new(f, 3).unwrap().auto_finish())
    });
    d.admin_ok(&["advisories", "import", zst.to_str().unwrap()]);
    assert_eq!(status(&d)["advisories"], 1);
    assert_eq!(flagged(&d, "crates-io", "vulnlib", "1.0.0"), None);

    // A plain .tar into the stopped daemon's data directory; the restarted daemon denies again.
    write_db(&db);
    let tar = d.scratch_dir().join("advisory-db.tar");
    archive(&db, &tar, |f| Box::new(f));
    d.stop();
    let out = run(&[
        "advisories",
        "import",
        "--data-dir",
        d.data_dir().to_str().unwrap(),
        tar.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = run(&["advisories", "status", "--data-dir", d.data_dir().to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 advisories"),
        "{}",
        describe(&out)
    );
    d.restart();
    let r = download(&d, "crates-io", "vulnlib", "1.0.0");
    assert_eq!(r.status, 403, "{}", r.text());

    // A crate published here is never checked, even under an advisory's name: the merged
    // view serves its own vulnlib 1.0.0 (`shadow = "crate"` hides the upstream's).
    assert_eq!(
        download(&d, "local", "vulnlib", "1.0.0").status,
        403,
        "upstream's, through the view"
    );
    let token = d.user_token("alice", &[]);
    let (body, _) = crate::support::package::simple_publish("vulnlib", "1.0.0");
    let r = http::publish_raw(&d.api_url("local"), Some(&token), body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(flagged(&d, "local", "vulnlib", "1.0.0"), None, "the local crate");
    let r = download(&d, "local", "vulnlib", "1.1.0");
    assert_eq!(
        r.status,
        404,
        "shadowed, so not served at all (not a 403): {}",
        r.text()
    );
}

#[test]
fn cargo_fetch_of_a_project_locked_to_a_denied_version_fails_naming_the_advisory() {
    let up = upstream();
    let d = Daemon::start_with_config(&config(&up, "advisories = \"deny\""));
    let db = d.scratch_dir().join("advisory-db");
    write_db(&db);
    d.admin_ok(&["advisories", "import", db.to_str().unwrap()]);

    let mut env = CargoEnv::bare();
    env.add_registry("mirror", &d.index_url("crates-io"))
        .replace_crates_io_with("mirror");
    let project = env.project(
        "app",
        "[package]\nname = \"app\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\nvulnlib = \"=1.0.0\"\n",
        &[("src/main.rs", "fn main() {}\n")],
    );
    // Resolving reads the index only; fetching the denied `.crate` fails.
    env.must_succeed(&project, &["generate-lockfile"]);
    let out = env.must_fail(&project, &["build", "--locked"]);
    let text = format!("{}{}", out.stdout, out.stderr);
    env.check(text.contains(VULN), "cargo's output names the advisory", &out);
    env.check(text.contains("403"), "cargo shows the 403", &out);

    // The patched version builds.
    std::fs::write(
        project.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\nvulnlib = \"=1.2.0\"\n",
    )
    .unwrap();
    env.must_succeed(&project, &["build"]);
}

fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    scrub_env(&mut cmd);
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn bad_advisory_input_is_refused_and_changes_nothing() {
    let up = upstream();
    let d = Daemon::start_with_config(&config(&up, ""));
    let good = d.scratch_dir().join("good");
    write_db(&good);
    d.admin_ok(&["advisories", "import", good.to_str().unwrap()]);
    let admin = |args: &[&str]| {
        let out = d.admin(args);
        assert!(!out.status.success(), "{args:?} succeeded: {}", describe(&out));
        assert_eq!(out.status.code(), Some(64), "a usage error: {}", describe(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // A malformed file fails the whole import, naming the file.
    let bad = d.scratch_dir().join("bad");
    write_db(&bad);
    std::fs::create_dir_all(bad.join("crates/broken")).unwrap();
    std::fs::write(
        bad.join("crates/broken/RUSTSEC-2024-0999.md"),
        "```toml\n[advisory\nid = \n```\n",
    )
    .unwrap();
    let err = admin(&["advisories", "import", bad.to_str().unwrap()]);
    assert!(err.contains("crates/broken/RUSTSEC-2024-0999.md"), "{err}");
    // Not a checkout; not an archive; nothing there.
    let err = admin(&["advisories", "import", d.scratch_dir().to_str().unwrap()]);
    assert!(err.contains("advisory-db checkout"), "{err}");
    let junk = d.scratch_dir().join("junk.tar.gz");
    std::fs::write(&junk, b"\x1f\x8b this is not gzip").unwrap();
    let err = admin(&["advisories", "import", junk.to_str().unwrap()]);
    assert!(err.contains("not a readable archive"), "{err}");
    let missing = d.scratch_dir().join("missing");
    admin(&["advisories", "import", missing.to_str().unwrap()]);
    assert_eq!(status(&d)["advisories"], 2, "nothing changed");

    // The admin endpoint checks everything again: hostile JSON is refused, all or nothing.
    let url = d.url("/-/api/v1/advisories");
    let token = Some(d.admin_token());
    let put = |body: &[u8]| http::send(reqwest::Method::PUT, &url, token, Some(body.to_vec()), &[]);
    let one = |over: Value| {
        let mut a = json!({"id": "RUSTSEC-2025-0001", "crate": "fine", "title": "t", "date": "2025-01-01",
                           "patched": [">=2"], "unaffected": []});
        for (k, v) in over.as_object().unwrap() {
            a[k] = v.clone();
        }
        json!({"advisories": [a]})
    };
    for (body, want) in [
        (b"{not json".to_vec(), "invalid JSON"),
        (b"{\"advisories\": 5}".to_vec(), "invalid JSON"),
        (br#"{"advisories": [], "extra": 1}"#.to_vec(), "unknown field"),
        (one(json!({"id": "GHSA-xxxx"})).to_string().into_bytes(), "`id`"),
        (one(json!({"crate": "../../etc"})).to_string().into_bytes(), "`crate`"),
        (
            one(json!({"patched": ["> = nope"]})).to_string().into_bytes(),
            "`patched`",
        ),
        (one(json!({"title": "a\u{0}b"})).to_string().into_bytes(), "`title`"),
        (one(json!({"date": "yesterday"})).to_string().into_bytes(), "`date`"),
    ] {
        let r = put(&body);
        assert_eq!(r.status, 400, "{}", r.text());
        let detail = r.error_details().join(" ");
        assert!(detail.contains(want), "{want} in {detail}");
    }
    let dup = one(json!({}));
    let twice = json!({"advisories": [dup["advisories"][0], dup["advisories"][0]]});
    let r = put(twice.to_string().as_bytes());
    assert_eq!(r.status, 400);
    assert!(r.error_details()[0].contains("twice"));
    assert_eq!(status(&d)["advisories"], 2, "nothing changed");

    // Only an admin may read or replace the database.
    let user = d.user_token("alice", &[]);
    let r = http::send(
        reqwest::Method::PUT,
        &url,
        Some(&user),
        Some(b"{\"advisories\":[]}".to_vec()),
        &[],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(http::get(&url, None).status, 401);
    assert_eq!(status(&d)["advisories"], 2, "nothing changed");

    // A bad mode, through the CLI (admin API) and in the config file.
    let err = d.admin(&["registry", "update", "crates-io", "--advisories", "block"]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("block"),
        "{}",
        describe(&err)
    );
    let err = d.admin(&["registry", "update", "crates-io", "--advisories-allow", "CVE-2024-1"]);
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("CVE-2024-1"),
        "{}",
        describe(&err)
    );
    let cfg = d.scratch_dir().join("bad.toml");
    std::fs::write(&cfg, "[registries.p]\nkind = \"proxy\"\nadvisories = \"block\"\n").unwrap();
    let out = run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("registries.p.advisories") && text.contains("`block`"),
        "{text}"
    );
}
