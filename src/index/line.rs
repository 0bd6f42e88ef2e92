//! One line of a sparse index file (one published version), and building it from publish
//! metadata. Field order and presence are fixed: every dependency field is always written
//! (older cargo needs `features`/`optional`/`default_features`), `pubtime` is
//! `YYYY-MM-DDTHH:MM:SSZ`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::name::{is_lookup_name, validate_version};
use super::publish_frame::{NewCrate, NewCrateDep};

/// A version record as it appears in the index. Fields that cargo's index format lets an
/// index leave out (crates.io writes no `v` for format 1, no `links` when null) read as cargo
/// reads them; we always write every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexLine {
    pub name: String,
    pub vers: String,
    #[serde(default)]
    pub deps: Vec<IndexDep>,
    pub cksum: String,
    #[serde(default)]
    pub features: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub yanked: bool,
    #[serde(default)]
    pub links: Option<String>,
    #[serde(default = "format_one")]
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rust_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubtime: Option<String>,
}

/// A dependency of an index line. `name` is the name used in the dependent's `Cargo.toml`
/// (the alias when renamed); `package` is the real name then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDep {
    pub name: String,
    pub req: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub optional: bool,
    #[serde(default = "yes")]
    pub default_features: bool,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default = "normal")]
    pub kind: String,
    #[serde(default)]
    pub registry: Option<String>,
    #[serde(default)]
    pub package: Option<String>,
}

/// The index format version of a line without `v`.
fn format_one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

fn normal() -> String {
    "normal".into()
}

impl IndexLine {
    /// Builds the index line for a publish. `own_index_urls` are the URLs this registry is known
    /// by (`sparse+http://host/reg/index/`); a dependency whose `registry` names one of them is
    /// stored as `null` (same registry). Every other value, the git-form crates.io URL included,
    /// is kept exactly as cargo sent it.
    pub fn from_publish(meta: &NewCrate, cksum: String, own_index_urls: &[String], pubtime: String) -> Self {
        let own: Vec<&str> = own_index_urls.iter().map(|u| u.trim_end_matches('/')).collect();
        let deps = meta.deps.iter().map(|d| IndexDep::from_publish(d, &own)).collect();
        IndexLine {
            name: meta.name.clone(),
            vers: meta.vers.clone(),
            deps,
            cksum,
            features: meta.features.clone(),
            yanked: false,
            links: meta.links.clone(),
            v: 1,
            rust_version: meta.rust_version.clone(),
            pubtime: Some(pubtime),
        }
    }

    /// The line as JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl IndexDep {
    fn from_publish(d: &NewCrateDep, own: &[&str]) -> Self {
        let (name, package) = match &d.explicit_name_in_toml {
            Some(alias) => (alias.clone(), Some(d.name.clone())),
            None => (d.name.clone(), None),
        };
        let registry = d
            .registry
            .as_ref()
            .filter(|r| !own.contains(&r.trim_end_matches('/')))
            .cloned();
        IndexDep {
            name,
            req: d.version_req.clone(),
            features: d.features.clone(),
            optional: d.optional,
            default_features: d.default_features,
            target: d.target.clone(),
            kind: d.kind.clone().unwrap_or_else(|| "normal".to_owned()),
            registry,
            package,
        }
    }
}

/// Renders an index file: one JSON line per version, each ending with `\n`.
pub fn render_file<'a>(lines: impl IntoIterator<Item = &'a IndexLine>) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        // Serialising plain structs of strings, bools and maps cannot fail.
        if serde_json::to_writer(&mut out, line).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// The fields of an index line this daemon reads itself (merge, search, `cksum` lookup),
/// borrowed from the line where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineKey<'a> {
    /// The name as published (passes [`is_lookup_name`]).
    pub name: Cow<'a, str>,
    /// The version string exactly as in the line.
    pub vers: Cow<'a, str>,
    /// `vers`, parsed.
    pub version: semver::Version,
    /// 64 hex digits.
    pub cksum: Cow<'a, str>,
    pub yanked: bool,
}

/// Reads the key fields of one index line. `None` for a line this daemon cannot use (not
/// JSON, a field missing or of the wrong type, a name that is not a crate name, a version that
/// is not semver, a checksum that is not 64 hex digits): such a line is served verbatim in an
/// upstream's file but skipped by our own parsing.
pub fn line_key(line: &[u8]) -> Option<LineKey<'_>> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow)]
        vers: Cow<'a, str>,
        #[serde(borrow)]
        cksum: Cow<'a, str>,
        #[serde(default)]
        yanked: bool,
    }
    let raw: Raw<'_> = serde_json::from_slice(line).ok()?;
    if !is_lookup_name(&raw.name) || raw.cksum.len() != 64 || !raw.cksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let version = validate_version(&raw.vers).ok()?;
    Some(LineKey {
        name: raw.name,
        vers: raw.vers,
        version,
        cksum: raw.cksum,
        yanked: raw.yanked,
    })
}

/// The non-blank lines of an index file, without their `\r\n` / `\n` endings.
pub fn lines(file: &[u8]) -> impl Iterator<Item = &[u8]> {
    file.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

/// Formats a time as the index `pubtime` (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn pubtime(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRATES_IO_GIT: &str = tame_index::CRATES_IO_INDEX;

    fn meta() -> NewCrate {
        serde_json::from_str(&format!(
            r#"{{"name":"acme-core","vers":"0.3.1","deps":[
                {{"name":"serde","version_req":"^1.0","features":["derive"],"optional":false,"default_features":true,"target":null,"kind":"normal","registry":"{CRATES_IO_GIT}"}},
                {{"name":"acme-util","version_req":"^0.2","features":[],"optional":true,"default_features":true,"target":null,"kind":"normal","explicit_name_in_toml":"util"}},
                {{"name":"own","version_req":"^1","features":[],"optional":false,"default_features":false,"target":"cfg(unix)","kind":"dev","registry":"sparse+http://h.example/local/index/"}}
              ],"features":{{"extra":["dep:util"]}},"authors":[],"description":null,"documentation":null,"homepage":null,
              "readme":null,"readme_file":null,"keywords":[],"categories":[],"license":"MIT","license_file":null,
              "repository":null,"badges":{{}},"links":null,"rust_version":"1.74"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn line_from_publish_keeps_every_field() {
        let line = IndexLine::from_publish(
            &meta(),
            "ab".repeat(32),
            &["sparse+http://h.example/local/index".to_owned()],
            "2026-05-01T12:00:00Z".to_owned(),
        );
        let json = line.to_json();
        let expected = format!(
            r#"{{"name":"acme-core","vers":"0.3.1","deps":[{{"name":"serde","req":"^1.0","features":["derive"],"optional":false,"default_features":true,"target":null,"kind":"normal","registry":"{CRATES_IO_GIT}","package":null}},{{"name":"util","req":"^0.2","features":[],"optional":true,"default_features":true,"target":null,"kind":"normal","registry":null,"package":"acme-util"}},{{"name":"own","req":"^1","features":[],"optional":false,"default_features":false,"target":"cfg(unix)","kind":"dev","registry":null,"package":null}}],"cksum":"{}","features":{{"extra":["dep:util"]}},"yanked":false,"links":null,"v":1,"rust_version":"1.74","pubtime":"2026-05-01T12:00:00Z"}}"#,
            "ab".repeat(32)
        );
        assert_eq!(json, expected);
        let back: IndexLine = serde_json::from_str(&json).unwrap();
        assert_eq!(back, line);
    }

    #[test]
    fn render_is_newline_terminated() {
        let line = IndexLine::from_publish(&meta(), "0".repeat(64), &[], "2026-05-01T12:00:00Z".into());
        let file = render_file([&line, &line]);
        assert_eq!(file.iter().filter(|b| **b == b'\n').count(), 2);
        assert!(file.ends_with(b"\n"));
    }

    #[test]
    fn line_keys_skip_garbage() {
        let c = "ab".repeat(32);
        let good = format!(r#"{{"name":"Foo","vers":"1.0.0+b","cksum":"{c}","deps":[],"yanked":true}}"#);
        let k = line_key(good.as_bytes()).unwrap();
        assert_eq!((&*k.name, &*k.vers, k.yanked), ("Foo", "1.0.0+b", true));
        for bad in [
            "not json".to_owned(),
            "{}".to_owned(),
            r#"{"name":"foo","vers":"1.0.0"}"#.to_owned(),
            format!(r#"{{"name":"日本語","vers":"1.0.0","cksum":"{c}"}}"#),
            format!(r#"{{"name":"../x","vers":"1.0.0","cksum":"{c}"}}"#),
            format!(r#"{{"name":"foo","vers":"banana","cksum":"{c}"}}"#),
            r#"{"name":"foo","vers":"1.0.0","cksum":"zz"}"#.to_owned(),
            format!(r#"{{"name":"foo","vers":"1.0.0","cksum":"{c}","yanked":"no"}}"#),
            format!(r#"[{{"name":"foo","vers":"1.0.0","cksum":"{c}"}}]"#),
        ] {
            assert_eq!(line_key(bad.as_bytes()), None, "{bad}");
        }
        let file = format!("{good}\r\n\n  \n{good}");
        assert_eq!(lines(file.as_bytes()).count(), 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Arbitrary bytes, and mutations of a good line, never panic; whatever is accepted
        /// has a lookup name and a semver version.
        #[test]
        fn line_parsing_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            pos in proptest::prelude::any::<usize>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let good = format!(r#"{{"name":"foo","vers":"1.0.0","cksum":"{}"}}"#, "a".repeat(64)).into_bytes();
            let mut mutated = good.clone();
            let i = pos % mutated.len();
            mutated[i] = byte;
            for input in [&bytes, &mutated] {
                for line in lines(input) {
                    if let Some(k) = line_key(line) {
                        proptest::prop_assert!(is_lookup_name(&k.name));
                        proptest::prop_assert_eq!(semver::Version::parse(&k.vers).ok(), Some(k.version.clone()));
                    }
                }
                let _ = serde_json::from_slice::<IndexLine>(input);
            }
        }
    }

    #[test]
    fn pubtime_format() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_777_636_800);
        let s = pubtime(t);
        assert_eq!(s.len(), 20);
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T');
    }
}
