//! The CI set-up of docs/CI.md and deploy/ci/ with the real cargo: registries known only through
//! `CARGO_REGISTRIES_<NAME>_INDEX` / `_TOKEN` (no `[registries]` in any config file), publishing
//! with a token limited to `publish` on one registry and expiring in 30 days, and an
//! auth-required registry read through `CARGO_REGISTRY_GLOBAL_CREDENTIAL_PROVIDERS`.

use crate::support::cargo::CargoEnv;
use crate::support::daemon::Daemon;
use crate::support::{http, index_path};

fn lib(env: &CargoEnv, name: &str) -> std::path::PathBuf {
    env.project(
        name,
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             description = \"{name}: CI test crate\"\nlicense = \"MIT\"\n\n[dependencies]\n"
        ),
        &[("src/lib.rs", "pub fn f() -> u32 { 1 }\n")],
    )
}

#[test]
fn a_runner_configured_by_environment_publishes_with_a_scoped_expiring_token() {
    let mut daemon = Daemon::start();
    daemon.add_user("ci");
    // Exactly the command of docs/CI.md.
    let token = daemon.admin_ok(&[
        "token",
        "create",
        "--user",
        "ci",
        "--scope",
        "publish",
        "--registry",
        "local",
        "--expires",
        "30d",
    ]);
    let env = CargoEnv::bare();
    assert!(!env.config_text().contains("[registries"), "{}", env.config_text());
    let dir = lib(&env, "ci-lib");
    let index = daemon.index_url("local");
    let vars = [
        ("CARGO_REGISTRIES_CARGOHOLD_INDEX", index.as_str()),
        ("CARGO_REGISTRIES_CARGOHOLD_TOKEN", token.as_str()),
    ];
    env.must_succeed_with(
        &dir,
        &["publish", "--registry", "cargohold", "--allow-dirty"],
        &vars,
        None,
    );
    let resp = http::get(&daemon.url(&format!("/local/index/{}", index_path("ci-lib"))), None);
    assert_eq!(resp.status, 200, "{}", resp.text());

    // The token is limited to `local`: another hosted registry refuses it.
    daemon.admin_ok(&["registry", "create", "other", "--kind", "hosted"]);
    let other = daemon.index_url("other");
    let out = env.must_fail_with(
        &lib(&env, "ci-other"),
        &["publish", "--registry", "cargohold", "--allow-dirty", "--no-verify"],
        &[
            ("CARGO_REGISTRIES_CARGOHOLD_INDEX", other.as_str()),
            ("CARGO_REGISTRIES_CARGOHOLD_TOKEN", token.as_str()),
        ],
    );
    env.check(
        out.stderr.contains("403"),
        "a token for `local` is refused by `other`",
        &out,
    );

    // An auth-required registry: the token provider comes from the environment too.
    daemon.admin_ok(&["registry", "create", "private", "--kind", "hosted", "--auth-required"]);
    let reader = daemon.user_token("dev", &[]);
    let private = daemon.index_url("private");
    let dir = lib(&env, "ci-private");
    let mut vars = vec![
        ("CARGO_REGISTRIES_CARGOHOLD_MIRROR_INDEX", private.as_str()),
        ("CARGO_REGISTRIES_CARGOHOLD_MIRROR_TOKEN", reader.as_str()),
    ];
    let out = env.must_fail_with(
        &dir,
        &[
            "publish",
            "--registry",
            "cargohold-mirror",
            "--allow-dirty",
            "--no-verify",
        ],
        &vars,
    );
    env.check(
        out.stderr.contains("credential-provider"),
        "without a provider cargo refuses an authenticated registry",
        &out,
    );
    vars.push(("CARGO_REGISTRY_GLOBAL_CREDENTIAL_PROVIDERS", "cargo:token"));
    env.must_succeed_with(
        &dir,
        &[
            "publish",
            "--registry",
            "cargohold-mirror",
            "--allow-dirty",
            "--no-verify",
        ],
        &vars,
        None,
    );
    daemon.stop();
}
