//! `cargohold warm`: filling a proxy from a lockfile and a list, through the running daemon.

use crate::support::daemon::Daemon;
use crate::support::fake_upstream::{FakeUpstream, Package};
use crate::support::http;

fn warm(d: &Daemon, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cargohold"))
        .args(["--server", d.base_url(), "warm"])
        .args(args)
        .env_remove("CARGOHOLD_TOKEN")
        .env_remove("CARGOHOLD_ADMIN_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn warm_from_a_lockfile_and_a_list_then_serve_offline() {
    let mut up = FakeUpstream::start_blocking();
    let pkgs = [
        Package::new("alpha", "1.0.0"),
        Package::new("beta", "2.0.0"),
        Package::new("beta", "2.1.0"),
    ];
    for p in &pkgs {
        up.add_crate(p);
    }
    let d = Daemon::start_with_config(&format!(
        "[registries.crates-io]\nkind = \"proxy\"\nupstream = \"{}\"\nindex_ttl = \"1s\"\n",
        up.index_url()
    ));
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("Cargo.lock");
    std::fs::write(
        &lock,
        format!(
            "version = 4\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"alpha\"\nversion = \"1.0.0\"\nsource = \"registry+{}\"\nchecksum = \"{}\"\n",
            tame_index::CRATES_IO_INDEX,
            pkgs[0].cksum()
        ),
    )
    .unwrap();
    let list = dir.path().join("crates.txt");
    std::fs::write(&list, "# newest beta\nbeta\n").unwrap();

    let out = warm(
        &d,
        &[
            "--registry",
            "crates-io",
            "--lockfile",
            lock.to_str().unwrap(),
            "--crates",
            list.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_tail()
    );
    assert!(stdout.contains("2 fetched from upstream"), "{stdout}");
    assert_eq!(up.download_hits(), 2, "alpha 1.0.0 and the newest beta (2.1.0)");

    let again = warm(
        &d,
        &[
            "--registry",
            "crates-io",
            "--crates",
            list.to_str().unwrap(),
            "--all-versions",
        ],
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("1 fetched from upstream, 1 already cached"));

    // Warmed crates are served with the upstream gone.
    up.go_down_blocking();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for (name, vers) in [("alpha", "1.0.0"), ("beta", "2.0.0"), ("beta", "2.1.0")] {
        let r = http::get(
            &d.url(&format!("/crates-io/api/v1/crates/{name}/{vers}/download")),
            None,
        );
        assert_eq!(r.status, 200, "{name}@{vers}");
    }

    // The list's forms: a requirement picks the newest match, `=` an exact version (both
    // cached by now), and --index-only fetches no crate file.
    std::fs::write(&list, "beta@2.0\nbeta@=2.0.0\n").unwrap();
    let forms = warm(&d, &["--registry", "crates-io", "--crates", list.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&forms.stdout);
    assert!(
        forms.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&forms.stderr)
    );
    assert!(stdout.contains("2 crate file(s)"), "beta 2.1.0 and 2.0.0: {stdout}");
    let index_only = warm(
        &d,
        &[
            "--registry",
            "crates-io",
            "--crates",
            list.to_str().unwrap(),
            "--index-only",
        ],
    );
    assert!(String::from_utf8_lossy(&index_only.stdout).contains("1 index file(s)"));

    // Missing versions and bad input are reported, with the right exit codes.
    std::fs::write(&list, "alpha@=9.9.9\nalpha@9\n").unwrap();
    let missing = warm(&d, &["--registry", "crates-io", "--crates", list.to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("alpha@=9.9.9: no such version"), "{stderr}");
    assert!(stderr.contains("alpha@^9: no version in the index matches"), "{stderr}");
    std::fs::write(&list, "alpha@not a requirement\n").unwrap();
    let bad = warm(&d, &["--registry", "crates-io", "--crates", list.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 1"));
    let nothing = warm(&d, &["--registry", "crates-io"]);
    assert_eq!(nothing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("--lockfile"));
}

/// Every failure (a name the upstream lacks, a `.crate` it cannot deliver) is listed, the run
/// still warms the rest and ends with its summary and exit code 1; without a terminal the
/// progress comes as a few plain lines, never control codes.
#[test]
fn warm_lists_each_failure_with_plain_progress_lines() {
    let up = FakeUpstream::start_blocking();
    up.add_crate(&Package::new("okay", "1.0.0"));
    // In the index, but the upstream has no file to download.
    up.add_raw_line("gone", &Package::new("gone", "1.0.0").index_line());
    let d = Daemon::start_with_config(&format!(
        "[registries.crates-io]\nkind = \"proxy\"\nupstream = \"{}\"\n",
        up.index_url()
    ));
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("crates.txt");
    std::fs::write(&list, "okay\ngone\nnope\n").unwrap();
    let out = warm(&d, &["--registry", "crates-io", "--crates", list.to_str().unwrap()]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("failed: gone@1.0.0: the download answered 404"),
        "{stderr}"
    );
    assert!(stderr.contains("failed: nope: the index answered 404"), "{stderr}");
    assert!(stderr.contains("2 item(s) could not be warmed"), "{stderr}");
    assert!(stdout.contains("warmed 2 index file(s)"), "{stdout}");
    assert!(
        stdout.contains("1 crate file(s)") && stdout.contains("1 fetched from upstream") && stdout.contains("2 failed"),
        "{stdout}"
    );
    // Progress: plain lines with items, bytes and rate, and a last one per phase.
    assert!(stderr.contains("index files: 3/3 items, "), "{stderr}");
    assert!(stderr.contains("crates: 2/2 items, "), "{stderr}");
    assert!(stderr.contains("/s, done in"), "{stderr}");
    assert!(
        !stderr.chars().any(|c| c.is_control() && c != '\n'),
        "no control codes without a terminal: {stderr:?}"
    );
}
