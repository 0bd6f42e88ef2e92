//! `prune_index = true`: a proxy serving each index file cut down to the versions whose
//! `.crate` it holds, with its own ETag, online and offline, also through a merged view; and
//! real cargo resolving against such a proxy.

use reqwest::Method;

use crate::support::cargo::CargoEnv;
use crate::support::daemon::Daemon;
use crate::support::fake_upstream::{FakeUpstream, Package};
use crate::support::http::{self, Resp};

const FILE: &str = "/crates-io/index/pr/un/prune-me";

fn get(d: &Daemon, path: &str) -> Resp {
    http::get(&d.url(path), None)
}

fn get_if_none_match(d: &Daemon, path: &str, etag: &str) -> Resp {
    http::send(Method::GET, &d.url(path), None, None, &[("if-none-match", etag)])
}

fn download(d: &Daemon, name: &str, vers: &str) {
    let r = get(d, &format!("/crates-io/api/v1/crates/{name}/{vers}/download"));
    assert_eq!(r.status, 200, "{name}@{vers}: {}", r.text());
}

fn versions(r: &Resp) -> Vec<String> {
    r.text()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["vers"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn set(d: &Daemon, flag: &str, on: bool) {
    d.admin_ok(&[
        "registry",
        "update",
        "crates-io",
        flag,
        if on { "true" } else { "false" },
    ]);
}

#[test]
fn a_pruned_proxy_serves_only_cached_versions_with_its_own_etag() {
    let up = FakeUpstream::start_blocking();
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        up.add_crate(&Package::new("prune-me", v));
    }
    up.add_crate(&Package::new("other", "1.0.0"));
    up.add_crate(&Package::new("never", "1.0.0"));
    let d = Daemon::start_with_config(&crate::support::merged_config(&up.index_url(), "", "", "", None));

    // Verbatim by default; warm two of the three versions.
    let full = get(&d, FILE);
    assert_eq!(full.status, 200);
    assert_eq!(versions(&full), ["1.0.0", "1.1.0", "1.2.0"]);
    let full_etag = full.header("etag").unwrap();
    download(&d, "prune-me", "1.0.0");
    download(&d, "prune-me", "1.1.0");
    assert_eq!(get(&d, "/crates-io/index/ne/ve/never").status, 200);

    set(&d, "--prune-index", true);
    let shown = d.admin_ok(&["registry", "show", "crates-io"]);
    assert!(shown.contains("prune_index"), "{shown}");
    let pruned = get(&d, FILE);
    assert_eq!(pruned.status, 200);
    assert_eq!(versions(&pruned), ["1.0.0", "1.1.0"]);
    for line in pruned.text().lines() {
        assert!(full.text().contains(line), "lines are served verbatim: {line}");
    }
    let etag = pruned.header("etag").unwrap();
    assert_ne!(etag, full_etag, "a pruned file has its own ETag");
    let again = get_if_none_match(&d, FILE, &etag);
    assert_eq!(again.status, 304, "{}", again.text());
    assert_eq!(
        get_if_none_match(&d, FILE, &full_etag).status,
        200,
        "the verbatim ETag no longer matches"
    );
    // The merged view over the proxy shows the pruned file.
    let merged = get(&d, "/local/index/pr/un/prune-me");
    assert_eq!(merged.text(), pruned.text());
    // A file none of whose versions is cached is not found.
    assert_eq!(get(&d, "/crates-io/index/ne/ve/never").status, 404);
    assert_eq!(get(&d, "/local/index/ne/ve/never").status, 404);

    // Another crate arriving leaves this file (and its ETag) as it is.
    download(&d, "other", "1.0.0");
    assert_eq!(get_if_none_match(&d, FILE, &etag).status, 304);

    // Online, a version not shown can still be downloaded, and then it is shown.
    download(&d, "prune-me", "1.2.0");
    let grown = get(&d, FILE);
    assert_eq!(versions(&grown), ["1.0.0", "1.1.0", "1.2.0"]);
    assert_ne!(grown.header("etag").unwrap(), etag);
    assert_eq!(get_if_none_match(&d, FILE, &etag).status, 200);

    // Offline and pruned: what is cached, nothing more, without asking the upstream.
    set(&d, "--offline", true);
    up.reset_hits();
    assert_eq!(versions(&get(&d, FILE)), ["1.0.0", "1.1.0", "1.2.0"]);
    let other = get(&d, "/crates-io/index/ot/he/other");
    assert_eq!(versions(&other), ["1.0.0"]);
    assert_eq!(
        get_if_none_match(&d, "/crates-io/index/ot/he/other", &other.header("etag").unwrap()).status,
        304
    );
    assert_eq!(get(&d, "/crates-io/index/ne/ve/never").status, 404);
    assert_eq!(up.total_hits(), 0, "offline never contacts the upstream");

    // Asked for the unpruned file (as `warm` does), the proxy and the merged view give the
    // upstream's file.
    for path in ["/crates-io/index/ne/ve/never", "/local/index/ne/ve/never"] {
        let r = http::send(Method::GET, &d.url(path), None, None, &[("x-cargohold-unpruned", "1")]);
        assert_eq!(versions(&r), ["1.0.0"], "{path}");
    }

    // Off again: verbatim.
    set(&d, "--prune-index", false);
    assert_eq!(get(&d, "/crates-io/index/ne/ve/never").status, 200);
}

/// `cargo generate-lockfile` against an offline, pruned proxy filled from a bundle picks only
/// versions it can download, and every one of them downloads (`cargo fetch`).
#[test]
fn cargo_resolves_only_downloadable_versions_through_a_pruned_offline_proxy() {
    let mut up = FakeUpstream::start_blocking();
    up.add_crate(&Package::new("leaf", "1.0.0"));
    up.add_crate(&Package::new("leaf", "1.1.0"));
    up.add_crate(&Package::new("top", "1.0.0").dep("leaf", "^1"));
    up.add_crate(&Package::new("top", "1.1.0").dep("leaf", "^1"));
    let d = Daemon::start_with_config(&format!(
        "[registries.crates-io]\nkind = \"proxy\"\nupstream = \"{}\"\nprune_index = true\n",
        up.index_url()
    ));
    // Warm the older versions only; the index knows newer ones.
    download(&d, "top", "1.0.0");
    download(&d, "leaf", "1.0.0");
    // `warm` sees the whole index of a pruned proxy, so it can add a version not cached yet.
    let list = d.scratch_dir().join("warm-list.txt");
    std::fs::write(&list, "leaf@=1.1.0\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cargohold"))
        .args(["--server", d.base_url(), "warm", "--registry", "crates-io", "--crates"])
        .arg(&list)
        .env_remove("CARGOHOLD_TOKEN")
        .env_remove("CARGOHOLD_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let leaf = get(&d, "/crates-io/index/le/af/leaf");
    assert_eq!(versions(&leaf), ["1.0.0", "1.1.0"]);
    // Across the gap: a bundle exported through the connected daemon, imported into a fresh,
    // running air-gapped daemon that has no upstream at all and prunes.
    let bundle = d.scratch_dir().join("mirror.bundle");
    d.admin_ok(&["export", "--registry", "crates-io", "--out", bundle.to_str().unwrap()]);
    let air =
        Daemon::start_with_config("[registries.crates-io]\nkind = \"proxy\"\noffline = true\nprune_index = true\n");
    air.admin_ok(&["import", bundle.to_str().unwrap()]);
    drop(d);
    up.go_down_blocking();

    let mut env = CargoEnv::bare();
    env.add_registry("mirror", &air.index_url("crates-io"))
        .replace_crates_io_with("mirror");
    let project = env.project(
        "pruned-app",
        "[package]\nname = \"pruned-app\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\ntop = \"1\"\n",
        &[("src/main.rs", "fn main() {}\n")],
    );
    env.must_succeed(&project, &["generate-lockfile"]);
    assert_eq!(crate::support::cargo::locked_version(&project, "top"), "1.0.0");
    assert_eq!(crate::support::cargo::locked_version(&project, "leaf"), "1.1.0");
    env.must_succeed(&project, &["fetch", "--locked"]);
}
