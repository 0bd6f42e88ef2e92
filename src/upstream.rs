//! Talking to an upstream sparse index: `config.json`, index files with conditional headers,
//! `.crate` downloads as streams. Failures are classified by fault side and retryability
//! (`classify.rs`, pure). Knows nothing of caches or the store.

pub mod cached;
pub mod classify;
pub mod client;
pub mod tls;

pub use classify::{redact, Fault, Fetched, UpstreamError};
pub use client::{UpstreamClient, UpstreamSettings};

/// Expands a `dl` template per cargo's rules: without markers, `{dl}/{crate}/{version}/download`;
/// otherwise `{crate}`, `{version}`, `{prefix}`, `{lowerprefix}`, `{sha256-checksum}` replaced.
pub fn expand_dl(template: &str, name: &str, version: &str, cksum: &str) -> String {
    const MARKERS: [&str; 5] = ["{crate}", "{version}", "{prefix}", "{lowerprefix}", "{sha256-checksum}"];
    if !MARKERS.iter().any(|m| template.contains(m)) {
        return format!("{}/{name}/{version}/download", template.trim_end_matches('/'));
    }
    let prefix = prefix_of(name);
    template
        .replace("{crate}", name)
        .replace("{version}", version)
        .replace("{lowerprefix}", &prefix.to_ascii_lowercase())
        .replace("{prefix}", &prefix)
        .replace("{sha256-checksum}", cksum)
}

/// The directory prefix of a name in its original case (`1`, `2`, `3/a`, `ab/cd`).
fn prefix_of(name: &str) -> String {
    match name.len() {
        1 => "1".into(),
        2 => "2".into(),
        3 => format!("3/{}", &name[..1]),
        _ => format!("{}/{}", &name[..2], &name[2..4]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dl_templates() {
        assert_eq!(
            expand_dl("http://h.example/api/v1/crates", "foo", "1.0.0", "x"),
            "http://h.example/api/v1/crates/foo/1.0.0/download"
        );
        assert_eq!(
            expand_dl(
                "https://h.example/dl/{lowerprefix}/{crate}/{crate}-{version}.crate",
                "Serde_Json",
                "1.0.0+x",
                "c"
            ),
            "https://h.example/dl/se/rd/Serde_Json/Serde_Json-1.0.0+x.crate"
        );
        assert_eq!(
            expand_dl("https://h.example/{prefix}/{sha256-checksum}", "abc", "1", "ff"),
            "https://h.example/3/a/ff"
        );
    }
}
