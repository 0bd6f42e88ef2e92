//! Pure merge of a local index file with an upstream one (`shadow = "version"`): the union of
//! versions, the local line winning when both have a version (compared without build
//! metadata, as the index's uniqueness rule does), sorted by semver. Lines are kept byte for
//! byte. Lines whose version cannot be read are kept after the sorted ones, in input order.

use semver::Version;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vers<'a> {
    #[serde(borrow)]
    vers: std::borrow::Cow<'a, str>,
}

fn release_of(line: &[u8]) -> Option<Version> {
    let v: Vers<'_> = serde_json::from_slice(line).ok()?;
    let mut parsed = Version::parse(&v.vers).ok()?;
    parsed.build = semver::BuildMetadata::EMPTY;
    Some(parsed)
}

fn lines(file: &[u8]) -> impl Iterator<Item = &[u8]> {
    file.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

/// Merges `local` over `upstream`; returns the new file (each line `\n`-terminated).
pub fn merge_versions(local: &[u8], upstream: &[u8]) -> Vec<u8> {
    let mut sorted: Vec<(Version, &[u8])> = Vec::new();
    let mut unsorted: Vec<&[u8]> = Vec::new();
    for line in lines(local) {
        match release_of(line) {
            Some(v) => sorted.push((v, line)),
            None => unsorted.push(line),
        }
    }
    let local_versions: std::collections::HashSet<Version> = sorted.iter().map(|(v, _)| v.clone()).collect();
    for line in lines(upstream) {
        match release_of(line) {
            Some(v) if local_versions.contains(&v) => {}
            Some(v) => sorted.push((v, line)),
            None => unsorted.push(line),
        }
    }
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut out = Vec::with_capacity(local.len() + upstream.len() + 2);
    for line in sorted.into_iter().map(|(_, l)| l).chain(unsorted) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(v: &str, origin: &str) -> String {
        format!(r#"{{"name":"x","vers":"{v}","deps":[],"cksum":"{origin}","features":{{}},"yanked":false}}"#)
    }

    #[test]
    fn local_wins_and_result_is_sorted() {
        let up = format!(
            "{}\n{}\n{}\n",
            line("1.0.0", "up"),
            line("1.2.0", "up"),
            line("0.9.0", "up")
        );
        let local = format!("{}\n{}\n", line("1.2.0+private", "local"), line("1.3.0", "local"));
        let merged = String::from_utf8(merge_versions(local.as_bytes(), up.as_bytes())).unwrap();
        let expected = [
            line("0.9.0", "up"),
            line("1.0.0", "up"),
            line("1.2.0+private", "local"),
            line("1.3.0", "local"),
        ]
        .join("\n")
            + "\n";
        assert_eq!(merged, expected);
    }

    #[test]
    fn empty_sides() {
        assert_eq!(merge_versions(b"", b""), b"");
        let l = line("1.0.0", "l") + "\n";
        assert_eq!(merge_versions(l.as_bytes(), b""), l.as_bytes());
        assert_eq!(merge_versions(b"", l.as_bytes()), l.as_bytes());
    }

    proptest! {
        #[test]
        fn union_sorted_duplicate_free_local_wins(
            local in proptest::collection::btree_set((0u64..4, 0u64..4), 0..6),
            up in proptest::collection::btree_set((0u64..4, 0u64..4), 0..6),
        ) {
            let mk = |set: &std::collections::BTreeSet<(u64, u64)>, origin: &str| {
                set.iter().map(|(a, b)| line(&format!("{a}.{b}.0"), origin) + "\n").collect::<String>()
            };
            let merged = merge_versions(mk(&local, "l").as_bytes(), mk(&up, "u").as_bytes());
            let out: Vec<&[u8]> = lines(&merged).collect();
            let versions: Vec<Version> = out.iter().map(|l| release_of(l).unwrap()).collect();
            let mut sorted = versions.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&versions, &sorted);
            let all: std::collections::BTreeSet<_> = local.union(&up).collect();
            prop_assert_eq!(versions.len(), all.len());
            for (a, b) in &local {
                let l = line(&format!("{a}.{b}.0"), "l");
                prop_assert!(out.contains(&l.as_bytes()));
            }
            // Deterministic.
            prop_assert_eq!(merged.clone(), merge_versions(mk(&local, "l").as_bytes(), mk(&up, "u").as_bytes()));
        }
    }
}
