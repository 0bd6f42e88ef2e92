//! Licence policy of hosted registries (issue 13): the real `cargo publish` is refused with a
//! message naming the licence and the rule, an allowed licence publishes, a refused publish
//! stores nothing, and the admin CLI/API check the list.

use std::path::Path;

use serde_json::Value;

use crate::support::cargo::CargoEnv;
use crate::support::daemon::{Daemon, HERMETIC_DEFAULT};
use crate::support::{http, index_path, package};

/// Files under `<data_dir>/store/blobs` (the `.crate` blobs of hosted registries).
fn blob_count(d: &Daemon) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p).map_or(0, |rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p)
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    walk(&d.data_dir().join("store").join("blobs"))
}

fn index_status(d: &Daemon, reg: &str, name: &str) -> u16 {
    http::get(&d.url(&format!("/{reg}/index/{}", index_path(name))), None).status
}

/// A library project with the given licence lines in `[package]`.
fn project(env: &CargoEnv, name: &str, licence_lines: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
         description = \"{name}: licence policy test crate\"\n{licence_lines}\n\n[dependencies]\n"
    );
    let mut all = vec![("src/lib.rs", "pub fn f() -> u32 { 1 }\n")];
    all.extend_from_slice(files);
    env.project(name, &manifest, &all)
}

#[test]
fn cargo_publish_is_refused_for_a_disallowed_licence_and_passes_for_an_allowed_one() {
    let config = HERMETIC_DEFAULT.replace(
        "[registries.local]\nkind = \"hosted\"\n",
        "[registries.local]\nkind = \"hosted\"\nallowed_licenses = [\"MIT\", \"Apache-2.0\"]\n",
    );
    assert!(config.contains("allowed_licenses"), "{config}");
    let daemon = Daemon::start_with_config(&config);
    let token = daemon.user_token("alice", &[]);
    let env = CargoEnv::new(&daemon);
    let publish_no_verify = [
        "publish",
        "--registry",
        "local",
        "--allow-dirty",
        "--no-verify",
        "--token",
        &token,
    ];

    // Disallowed: GPL only. cargo shows the registry's message.
    let gpl = project(&env, "gpl-lib", "license = \"GPL-3.0-only\"", &[]);
    let out = env.must_fail(&gpl, &publish_no_verify);
    eprintln!("cargo's output for the refused publish:\n{}", out.stderr);
    env.check(
        out.stderr.contains("`GPL-3.0-only`")
            && out.stderr.contains("allowed_licenses = [\"MIT\", \"Apache-2.0\"]")
            && out.stderr.contains("ask the registry administrator"),
        "cargo's output names the licence, the rule and what to do",
        &out,
    );
    // `AND` needs both: refused, naming the licence that is not allowed.
    let both = project(&env, "both-lib", "license = \"MIT AND GPL-3.0-only\"", &[]);
    let out = env.must_fail(&both, &publish_no_verify);
    env.check(
        out.stderr.contains("`MIT AND GPL-3.0-only`"),
        "the expression is named",
        &out,
    );
    // A licence file alone is refused by default.
    let file_only = project(
        &env,
        "file-lib",
        "license-file = \"LICENSE.txt\"",
        &[("LICENSE.txt", "All rights reserved.\n")],
    );
    let out = env.must_fail(&file_only, &publish_no_verify);
    env.check(
        out.stderr.contains("allow_license_file_only"),
        "the license-file rule is named",
        &out,
    );
    // Nothing of the refused crates was stored.
    assert_eq!(blob_count(&daemon), 0, "a refused publish stores no blob");
    for name in ["gpl-lib", "both-lib", "file-lib"] {
        assert_eq!(index_status(&daemon, "local", name), 404, "{name} has no index file");
    }

    // Allowed: one branch of the OR suffices; the real verify build runs.
    let ok = project(&env, "ok-lib", "license = \"MIT OR GPL-3.0-only\"", &[]);
    env.must_succeed(
        &ok,
        &["publish", "--registry", "local", "--allow-dirty", "--token", &token],
    );
    assert_eq!(index_status(&daemon, "local", "ok-lib"), 200);
    assert_eq!(blob_count(&daemon), 1);

    // The administrator allows licence files alone: the same crate now publishes.
    daemon.admin_ok(&["registry", "update", "local", "--allow-license-file-only", "true"]);
    env.must_succeed(&file_only, &publish_no_verify);
    assert_eq!(index_status(&daemon, "local", "file-lib"), 200);
}

#[test]
fn policy_set_by_the_admin_cli_is_checked_and_enforced_over_http() {
    let daemon = Daemon::start();
    // Bad entries are refused, naming each.
    let out = daemon.admin(&[
        "registry",
        "create",
        "corp",
        "--kind",
        "hosted",
        "--allowed-licenses",
        "MIT,Apache 2,MIT OR BSD-3-Clause",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("`Apache 2`") && stderr.contains("`MIT OR BSD-3-Clause`"),
        "{stderr}"
    );
    // A proxy cannot have a policy.
    let out = daemon.admin(&["registry", "update", "crates-io", "--allowed-licenses", "MIT"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("only hosted registries have a licence policy"),
        "{stderr}"
    );

    daemon.admin_ok(&[
        "registry",
        "create",
        "corp",
        "--kind",
        "hosted",
        "--allowed-licenses",
        "MIT,Apache-2.0 WITH LLVM-exception",
    ]);
    let shown: Value = serde_json::from_str(&daemon.admin_ok(&["registry", "show", "corp"])).unwrap();
    assert_eq!(
        shown["allowed_licenses"],
        serde_json::json!(["MIT", "Apache-2.0 WITH LLVM-exception"]),
        "{shown}"
    );
    assert_eq!(shown["allow_license_file_only"], false, "{shown}");

    let token = daemon.user_token("bob", &[]);
    let api = daemon.api_url("corp");
    let publish = |name: &str, license: Value, license_file: Value| {
        let mut meta = package::metadata(name, "1.0.0");
        meta["license"] = license;
        meta["license_file"] = license_file;
        let body = package::publish_body(&meta, &package::simple_crate(name, "1.0.0"));
        http::publish_raw(&api, Some(&token), body)
    };
    for (name, license, file, want) in [
        (
            "gpl",
            Value::from("GPL-3.0-only"),
            Value::Null,
            "`GPL-3.0-only` is not allowed",
        ),
        (
            "bare-apache",
            Value::from("Apache-2.0"),
            Value::Null,
            "`Apache-2.0` is not",
        ),
        (
            "junk",
            Value::from("MIT OR OR"),
            Value::Null,
            "not a valid SPDX expression",
        ),
        ("none", Value::Null, Value::Null, "declares no licence"),
        ("file", Value::Null, Value::from("LICENSE"), "allow_license_file_only"),
    ] {
        let resp = publish(name, license, file);
        assert_eq!(resp.status, 400, "{name}: {}", resp.text());
        let details = resp.error_details();
        assert!(details[0].contains(want), "{name}: {details:?}");
        assert!(details[0].contains("registry `corp`"), "{name}: {details:?}");
        assert_eq!(index_status(&daemon, "corp", name), 404);
    }
    assert_eq!(blob_count(&daemon), 0, "refused publishes store no blob");
    let resp = publish("llvm", Value::from("Apache-2.0 WITH LLVM-exception"), Value::Null);
    assert_eq!(resp.status, 200, "{}", resp.text());

    // `""` removes the policy.
    daemon.admin_ok(&["registry", "update", "corp", "--allowed-licenses", ""]);
    let resp = publish("gpl", Value::from("GPL-3.0-only"), Value::Null);
    assert_eq!(resp.status, 200, "{}", resp.text());
}
