//! What misses cost (issue 9, items 4 and 5): a shared upstream fetch that fails in any way
//! leaves nothing stuck and tells clients nothing internal; many distinct misses cost bounded
//! disk, and bounded concurrent upstream traffic (the excess is answered 503 + `Retry-After`).

use crate::support::daemon::Daemon;
use crate::support::fake_upstream::FakeUpstream;
use crate::support::http::{self, Resp};

/// A daemon whose `crates-io` proxy points at `up` (`proxy_extra` goes into its section, `top`
/// before it), with `local` merged over it.
fn daemon_over(up: &FakeUpstream, top: &str, proxy_extra: &str) -> Daemon {
    Daemon::start_with_config(&format!(
        r#"
{top}

[registries.crates-io]
kind = "proxy"
upstream = "{}"
{proxy_extra}

[registries.local]
kind = "hosted"
upstreams = ["crates-io"]
"#,
        up.index_url()
    ))
}

fn get(d: &Daemon, path: &str) -> Resp {
    http::get(&d.url(path), None)
}

/// Confirmed defect: a non-ASCII name made the shared fetch panic; the panic text reached the
/// client, and the panicked flight stayed in the map for ever. Whatever the name layer answers
/// now, the answer is a clean JSON error and asking again gets the same answer.
#[test]
fn a_failing_shared_fetch_leaks_no_internals_and_sticks_nowhere() {
    let up = FakeUpstream::start_blocking();
    let d = daemon_over(&up, "", "");
    for path in [
        "/crates-io/api/v1/crates/%C3%A9a/1.0.0/download",
        "/local/api/v1/crates/%E6%97%A5%E6%9C%AC%E8%AA%9E/1.0.0/download",
    ] {
        for attempt in 0..2 {
            let r = get(&d, path);
            assert!(
                (400..600).contains(&r.status) && r.status != 500,
                "{path} #{attempt}: {}",
                r.status
            );
            let details = r.error_details().join(" ");
            for leak in ["panick", "char boundary", "byte index", ".rs:"] {
                assert!(!details.contains(leak), "{path} #{attempt} leaks `{leak}`: {details}");
            }
        }
    }
    // Still serving normally.
    let r = get(&d, "/crates-io/index/3/a/abc");
    assert_eq!(r.status, 404, "{}", r.text());
}
