//! The proxy and the merged view driven by the real `cargo`, over the fake upstream:
//! source replacement (lockfile identical to one made against the upstream directly), the
//! merged view next to private crates, private shadowing, and `cargo fetch --locked` during an
//! upstream outage.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::cargo::CargoEnv;
use crate::support::daemon::Daemon;
use crate::support::fake_upstream::{FakeUpstream, Package};

/// The upstream crates: alpha depends on beta; gamma has two versions.
fn upstream_with_crates() -> FakeUpstream {
    let up = FakeUpstream::start_blocking();
    up.add_crate(&Package::new("beta", "1.0.0").file("src/lib.rs", "pub fn beta() -> u32 {\n    2\n}\n"));
    up.add_crate(
        &Package::new("alpha", "1.0.0")
            .dep("beta", "^1")
            .file("src/lib.rs", "pub fn alpha() -> u32 {\n    beta::beta() + 1\n}\n"),
    );
    for v in ["0.1.0", "0.2.0"] {
        up.add_crate(&Package::new("gamma", v).file("src/lib.rs", "pub fn gamma() -> u32 {\n    7\n}\n"));
    }
    up
}

fn consumer(env: &CargoEnv, dir: &str, deps: &str, main_rs: &str) -> PathBuf {
    env.project(
        dir,
        &format!(
            "[package]\nname = \"{dir}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n{deps}"
        ),
        &[("src/main.rs", main_rs)],
    )
}

fn lockfile(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("Cargo.lock")).expect("Cargo.lock")
}

/// Checklist 39-41 and issue 3's e2e (1) and (4).
#[test]
fn source_replacement_through_the_proxy_then_fetch_during_an_outage() {
    let mut up = upstream_with_crates();
    let d = Daemon::start_with_config(&format!(
        "[registries.crates-io]\nkind = \"proxy\"\nupstream = \"{}\"\nindex_ttl = \"1s\"\n",
        up.index_url()
    ));
    let deps = "alpha = \"1\"\ngamma = \"0.2\"\n";
    let main_rs = "fn main() {\n    assert_eq!(alpha::alpha() + gamma::gamma(), 10);\n}\n";

    let mut via_proxy = CargoEnv::bare();
    via_proxy
        .add_registry("mirror", &d.index_url("crates-io"))
        .replace_crates_io_with("mirror");
    let project = consumer(&via_proxy, "app", deps, main_rs);
    via_proxy.must_succeed(&project, &["generate-lockfile"]);
    via_proxy.must_succeed(&project, &["fetch"]);
    via_proxy.must_succeed(&project, &["build"]);
    let through_proxy = lockfile(&project);
    let git_form = format!("source = \"registry+{}\"", tame_index::CRATES_IO_INDEX);
    assert_eq!(through_proxy.matches(&git_form).count(), 3, "{through_proxy}");

    let mut direct = CargoEnv::bare();
    direct
        .add_registry("direct", &up.index_url())
        .replace_crates_io_with("direct");
    let direct_project = consumer(&direct, "app", deps, main_rs);
    direct.must_succeed(&direct_project, &["generate-lockfile"]);
    assert_eq!(
        through_proxy,
        lockfile(&direct_project),
        "the mirror returns the upstream's checksums"
    );

    // Outage: a fresh CARGO_HOME with the lockfile still fetches everything from the cache.
    up.go_down_blocking();
    std::thread::sleep(Duration::from_millis(1100));
    let mut offline_env = CargoEnv::bare();
    offline_env
        .add_registry("mirror", &d.index_url("crates-io"))
        .replace_crates_io_with("mirror");
    let again = consumer(&offline_env, "app", deps, main_rs);
    std::fs::write(again.join("Cargo.lock"), &through_proxy).unwrap();
    offline_env.must_succeed(&again, &["fetch", "--locked"]);
    offline_env.must_succeed(&again, &["build", "--locked"]);
}

/// Issue 3's e2e (2) and (3): upstream crates through the merged view next to private crates,
/// and a private crate shadowing an upstream name.
#[test]
fn merged_view_with_private_crates_and_private_shadowing() {
    let up = upstream_with_crates();
    let d = Daemon::start_with_config(&format!(
        "[registries.crates-io]\nkind = \"proxy\"\nupstream = \"{}\"\n\n\
         [registries.local]\nkind = \"hosted\"\nupstreams = [\"crates-io\"]\nallow_upstream_names = true\n",
        up.index_url()
    ));
    let token = d.user_token("alice", &["read", "publish", "yank", "owners"]);
    let env = CargoEnv::new(&d);

    let privy = env.project(
        "privy",
        "[package]\nname = \"privy\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense = \"MIT\"\ndescription = \"private\"\n",
        &[("src/lib.rs", "pub fn privy() -> u32 {\n    100\n}\n")],
    );
    env.must_succeed(
        &privy,
        &["publish", "--registry", "local", "--allow-dirty", "--token", &token],
    );

    let app = consumer(
        &env,
        "merged-app",
        "",
        "fn main() {\n    assert_eq!(alpha::alpha() + privy::privy(), 103);\n}\n",
    );
    env.must_succeed(&app, &["add", "alpha", "--registry", "local"]);
    env.must_succeed(&app, &["add", "privy", "--registry", "local"]);
    env.must_succeed(&app, &["build"]);
    let lock = lockfile(&app);
    let local_source = format!("source = \"{}\"", d.index_url("local"));
    assert_eq!(
        lock.matches(&local_source).count(),
        3,
        "alpha, beta and privy come through local: {lock}"
    );

    // A private `gamma` shadows the upstream one (shadow = "crate").
    let private_gamma = env.project(
        "gamma",
        "[package]\nname = \"gamma\"\nversion = \"5.0.0\"\nedition = \"2021\"\nlicense = \"MIT\"\ndescription = \"private gamma\"\n",
        &[("src/lib.rs", "pub fn private_gamma() -> u32 {\n    5\n}\n")],
    );
    env.must_succeed(
        &private_gamma,
        &["publish", "--registry", "local", "--allow-dirty", "--token", &token],
    );
    let shadow_app = consumer(
        &env,
        "shadow-app",
        "",
        "fn main() {\n    assert_eq!(gamma::private_gamma(), 5);\n}\n",
    );
    env.must_succeed(&shadow_app, &["add", "gamma", "--registry", "local"]);
    env.must_succeed(&shadow_app, &["build"]);
    assert!(lockfile(&shadow_app).contains("version = \"5.0.0\""));
}
