//! Shared helpers for the integration tests: a running daemon ([`daemon::Daemon`]), a hermetic
//! cargo environment ([`cargo::CargoEnv`]), raw HTTP ([`http`]) and hand-built publish bodies
//! ([`package`]). Not every test module uses every helper.
#![allow(dead_code)]

pub mod browser;
pub mod cargo;
pub mod connect_proxy;
pub mod daemon;
pub mod fake_upstream;
pub mod http;
pub mod package;
pub mod ports;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// A daemon config: `top` (top-level keys and sections), a `crates-io` proxy of `index_url`
/// with the `proxy_extra` lines, `local` merged over it (by crate) with `local_extra`, and, if
/// `union_extra` is given, `union` merged over it by version with those lines.
pub fn merged_config(
    index_url: &str,
    top: &str,
    proxy_extra: &str,
    local_extra: &str,
    union_extra: Option<&str>,
) -> String {
    let union = union_extra
        .map(|extra| {
            format!(
                "\n[registries.union]\nkind = \"hosted\"\nupstreams = [\"crates-io\"]\nshadow = \"version\"\n{extra}\n"
            )
        })
        .unwrap_or_default();
    format!(
        "{top}\n\n[registries.crates-io]\nkind = \"proxy\"\nupstream = \"{index_url}\"\n{proxy_extra}\n\n\
         [registries.local]\nkind = \"hosted\"\nupstreams = [\"crates-io\"]\n{local_extra}\n{union}"
    )
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A fresh, unguessable-enough string (64 hex chars) for admin tokens and the like.
pub fn random_secret() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let stack_marker = 0u8;
    let seed = format!(
        "{}-{}-{}-{:p}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed),
        &stack_marker
    );
    sha256_hex(seed.as_bytes())
}

/// The sparse-index path of a crate (`1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd`): the library's own.
pub fn index_path(name: &str) -> String {
    cargohold::index::index_path(name)
}

/// Expands a `config.json` `dl` template for one version (cargo's algorithm: append
/// `/{crate}/{version}/download` when there is no marker, else substitute every marker).
pub fn expand_dl(dl: &str, name: &str, vers: &str, cksum: &str) -> String {
    const MARKERS: [&str; 5] = ["{crate}", "{version}", "{prefix}", "{lowerprefix}", "{sha256-checksum}"];
    if !MARKERS.iter().any(|m| dl.contains(m)) {
        return format!("{dl}/{name}/{vers}/download");
    }
    let prefix = match name.len() {
        1 => "1".to_owned(),
        2 => "2".to_owned(),
        3 => format!("3/{}", &name[..1]),
        _ => format!("{}/{}", &name[..2], &name[2..4]),
    };
    dl.replace("{crate}", name)
        .replace("{version}", vers)
        .replace("{lowerprefix}", &prefix.to_ascii_lowercase())
        .replace("{prefix}", &prefix)
        .replace("{sha256-checksum}", cksum)
}

/// Parses an index file body into its JSON lines (blank lines skipped; a line that is not JSON
/// panics, since this daemon must never write one).
pub fn parse_index_lines(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("index line is not JSON ({e}): {l}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("abc"), "3/a/abc");
        assert_eq!(index_path("MyCrate"), "my/cr/mycrate");
    }

    #[test]
    fn dl_templates() {
        assert_eq!(
            expand_dl("http://h.example/r/api/v1/crates", "x", "1.0.0+b", "c"),
            "http://h.example/r/api/v1/crates/x/1.0.0+b/download"
        );
        assert_eq!(
            expand_dl(
                "http://h.example/dl/{lowerprefix}/{prefix}/{crate}-{version}.crate?{sha256-checksum}",
                "Serde_Json",
                "1.0.0+x",
                "ab"
            ),
            "http://h.example/dl/se/rd/Se/rd/Serde_Json-1.0.0+x.crate?ab"
        );
        assert_eq!(
            expand_dl("http://h.example/{prefix}/{crate}", "Abc", "1", "c"),
            "http://h.example/3/A/Abc"
        );
    }
}
