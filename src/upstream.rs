//! Talking to an upstream sparse index: `config.json`, index files with conditional headers,
//! `.crate` downloads as streams. Failures are classified by fault side and retryability
//! (`classify.rs`, pure). Knows nothing of caches or the store.

pub mod cached;
pub mod classify;
pub mod client;
pub mod garbage;
pub mod tls;

pub use classify::{redact, Fault, Fetched, UpstreamError};
pub use client::{UpstreamClient, UpstreamSettings};

use crate::index::name::{dir_prefix, validate_lookup_name, validate_version};

/// Why a `dl` template was not expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlError {
    #[error("the crate name `{0}` cannot be put in a download URL: {1}")]
    Name(String, String),
    #[error("the version `{0}` cannot be put in a download URL: {1}")]
    Version(String, String),
    #[error("the checksum `{0}` is not 64 hex digits")]
    Checksum(String),
}

/// Expands a `dl` template per cargo's rules: without markers, `{dl}/{crate}/{version}/download`;
/// otherwise `{crate}`, `{version}`, `{prefix}`, `{lowerprefix}`, `{sha256-checksum}` replaced.
///
/// Total and safe on any input: the name must pass [`is_lookup_name`](crate::index::name::is_lookup_name), the version
/// [`validate_version`] and the checksum be 64 hex digits, so every substituted value is made of
/// ASCII letters, digits, `-`, `_`, `.` and `+` (kept literal, as cargo sends it) and cannot add
/// a path segment, a `..`, a query or a fragment to the URL. Anything else is refused.
pub fn expand_dl(template: &str, name: &str, version: &str, cksum: &str) -> Result<String, DlError> {
    const MARKERS: [&str; 5] = ["{crate}", "{version}", "{prefix}", "{lowerprefix}", "{sha256-checksum}"];
    if let Err(e) = validate_lookup_name(name) {
        return Err(DlError::Name(short(name), e.to_string()));
    }
    if let Err(e) = validate_version(version) {
        return Err(DlError::Version(short(version), e));
    }
    if cksum.len() != 64 || !cksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DlError::Checksum(short(cksum)));
    }
    if !MARKERS.iter().any(|m| template.contains(m)) {
        return Ok(format!("{}/{name}/{version}/download", template.trim_end_matches('/')));
    }
    let prefix = prefix_of(name);
    Ok(template
        .replace("{crate}", name)
        .replace("{version}", version)
        .replace("{lowerprefix}", &prefix.to_ascii_lowercase())
        .replace("{prefix}", &prefix)
        .replace("{sha256-checksum}", cksum))
}

/// At most 64 characters of `s`, for messages.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The directory prefix of a name in its original case (`1`, `2`, `3/a`, `ab/cd`). Total: on
/// any string, counted in characters (see [`dir_prefix`]).
pub fn prefix_of(name: &str) -> String {
    dir_prefix(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::name::is_lookup_name;
    use proptest::prelude::*;

    const C: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    #[test]
    fn dl_templates() {
        assert_eq!(
            expand_dl("http://h.example/api/v1/crates", "foo", "1.0.0", C).unwrap(),
            "http://h.example/api/v1/crates/foo/1.0.0/download"
        );
        assert_eq!(
            expand_dl(
                "https://h.example/dl/{lowerprefix}/{crate}/{crate}-{version}.crate",
                "Serde_Json",
                "1.0.0+x",
                C
            )
            .unwrap(),
            "https://h.example/dl/se/rd/Serde_Json/Serde_Json-1.0.0+x.crate"
        );
        assert_eq!(
            expand_dl("https://h.example/{prefix}/{sha256-checksum}", "abc", "1.0.0", C).unwrap(),
            format!("https://h.example/3/a/{C}")
        );
    }

    #[test]
    fn hostile_values_are_refused_not_pasted() {
        let t = "http://h.example/dl/{prefix}/{crate}/{version}/download";
        for name in [
            "日本語",
            "éa",
            "..",
            "../../secret",
            "a?b",
            "a#b",
            "a/b",
            "a\\b",
            "",
            &"a".repeat(30_000),
        ] {
            assert!(
                matches!(expand_dl(t, name, "1.0.0", C), Err(DlError::Name(..))),
                "{name:?}"
            );
        }
        for vers in ["..", "1.0.0/../x", "1.0.0?x", "1.0.0#x", "1.0"] {
            assert!(
                matches!(expand_dl(t, "foo", vers, C), Err(DlError::Version(..))),
                "{vers:?}"
            );
        }
        assert!(matches!(
            expand_dl(t, "foo", "1.0.0", "../x"),
            Err(DlError::Checksum(_))
        ));
        assert_eq!(prefix_of("日本語"), "3/日");
        assert_eq!(prefix_of("éa"), "2");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Never panics; whatever it expands stays under the template's own path, with no
        /// added query, fragment or dot segment.
        #[test]
        fn expand_dl_is_total_and_safe(
            name in prop_oneof![any::<String>(), "[A-Za-z_][A-Za-z0-9_-]{0,8}", "[a-z./?#%\\\\+-]{0,6}"],
            vers in prop_oneof![any::<String>(), "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(-[a-z0-9.]{1,4})?(\\+[a-z0-9.-]{1,4})?", "[0-9a-z./?#+-]{0,8}"],
        ) {
            let _ = prefix_of(&name);
            for t in ["http://h.example/dl", "http://h.example/dl/{lowerprefix}/{prefix}/{crate}/{version}/{sha256-checksum}"] {
                if let Ok(url) = expand_dl(t, &name, &vers, C) {
                    prop_assert!(is_lookup_name(&name));
                    let rest = url.strip_prefix("http://h.example/dl/").unwrap();
                    prop_assert!(!rest.contains(['?', '#', '\\', '%']), "{}", url);
                    prop_assert!(rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."), "{}", url);
                }
            }
        }
    }
}
