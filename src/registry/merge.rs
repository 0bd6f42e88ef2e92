//! Pure merge of a local index file with an upstream one (`shadow = "version"`): the union of
//! versions, the local line winning when both have a version (compared without build
//! metadata, as the index's uniqueness rule does), sorted by semver. Lines are kept byte for
//! byte. Lines this daemon cannot read (see [`line_key`]: not JSON, fields missing, a name
//! that is not a crate name, a version that is not semver) are left out and counted, so the
//! caller can log them; the upstream's own file is still served verbatim elsewhere.

use semver::Version;

use crate::index::line::{line_key, lines};

/// The merged file and how many unusable lines were left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// Each line `\n`-terminated.
    pub file: Vec<u8>,
    /// Unusable lines left out (of either side).
    pub skipped: usize,
}

fn release_of(line: &[u8]) -> Option<Version> {
    let mut parsed = line_key(line)?.version;
    parsed.build = semver::BuildMetadata::EMPTY;
    Some(parsed)
}

/// Merges `local` over `upstream`.
pub fn merge_versions(local: &[u8], upstream: &[u8]) -> Merged {
    let mut sorted: Vec<(Version, &[u8])> = Vec::new();
    let mut skipped = 0;
    for line in lines(local) {
        match release_of(line) {
            Some(v) => sorted.push((v, line)),
            None => skipped += 1,
        }
    }
    let local_versions: std::collections::HashSet<Version> = sorted.iter().map(|(v, _)| v.clone()).collect();
    for line in lines(upstream) {
        match release_of(line) {
            Some(v) if local_versions.contains(&v) => {}
            Some(v) => sorted.push((v, line)),
            None => skipped += 1,
        }
    }
    // Stable: among equal releases the first (local, then upstream order) is kept.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut file = Vec::with_capacity(local.len() + upstream.len() + 2);
    for (_, line) in sorted {
        file.extend_from_slice(line);
        file.push(b'\n');
    }
    Merged { file, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A line whose checksum is `origin` (one letter) repeated.
    fn line(v: &str, origin: &str) -> String {
        let cksum = origin.repeat(64 / origin.len());
        format!(r#"{{"name":"x","vers":"{v}","deps":[],"cksum":"{cksum}","features":{{}},"yanked":false}}"#)
    }

    #[test]
    fn local_wins_and_result_is_sorted() {
        let up = format!(
            "{}\n{}\n{}\n",
            line("1.0.0", "e"),
            line("1.2.0", "e"),
            line("0.9.0", "e")
        );
        let local = format!("{}\n{}\n", line("1.2.0+private", "a"), line("1.3.0", "a"));
        let merged = String::from_utf8(merge_versions(local.as_bytes(), up.as_bytes()).file).unwrap();
        let expected = [
            line("0.9.0", "e"),
            line("1.0.0", "e"),
            line("1.2.0+private", "a"),
            line("1.3.0", "a"),
        ]
        .join("\n")
            + "\n";
        assert_eq!(merged, expected);
    }

    #[test]
    fn empty_sides() {
        assert_eq!(merge_versions(b"", b"").file, b"");
        let l = line("1.0.0", "d") + "\n";
        assert_eq!(merge_versions(l.as_bytes(), b"").file, l.as_bytes());
        assert_eq!(merge_versions(b"", l.as_bytes()).file, l.as_bytes());
    }

    #[test]
    fn garbage_lines_are_left_out_and_counted() {
        let c = "c".repeat(64);
        let up = format!(
            "{}\nnot json\n{{\"name\":\"x\"}}\n{{\"name\":\"日本語\",\"vers\":\"2.0.0\",\"cksum\":\"{c}\"}}\n\
             {{\"name\":\"x\",\"vers\":\"banana\",\"cksum\":\"{c}\"}}\n",
            line("1.0.0", "e"),
        );
        let mut up = up.into_bytes();
        up.extend_from_slice(b"\xff\xfe\n");
        up.extend_from_slice(format!("{}\n", line("1.1.0", "e")).as_bytes());
        let local = line("0.5.0", "a") + "\n";
        let m = merge_versions(local.as_bytes(), &up);
        assert_eq!(m.skipped, 5);
        let expected = format!("{local}{}\n{}\n", line("1.0.0", "e"), line("1.1.0", "e"));
        assert_eq!(String::from_utf8(m.file).unwrap(), expected);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn union_sorted_duplicate_free_local_wins(
            local in proptest::collection::btree_set((0u64..4, 0u64..4), 0..6),
            up in proptest::collection::btree_set((0u64..4, 0u64..4), 0..6),
        ) {
            let mk = |set: &std::collections::BTreeSet<(u64, u64)>, origin: &str| {
                set.iter().map(|(a, b)| line(&format!("{a}.{b}.0"), origin) + "\n").collect::<String>()
            };
            let merged = merge_versions(mk(&local, "a").as_bytes(), mk(&up, "e").as_bytes()).file;
            let out: Vec<&[u8]> = lines(&merged).collect();
            let versions: Vec<Version> = out.iter().map(|l| release_of(l).unwrap()).collect();
            let mut sorted = versions.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&versions, &sorted);
            let all: std::collections::BTreeSet<_> = local.union(&up).collect();
            prop_assert_eq!(versions.len(), all.len());
            for (a, b) in &local {
                let l = line(&format!("{a}.{b}.0"), "a");
                prop_assert!(out.contains(&l.as_bytes()));
            }
            // Deterministic.
            prop_assert_eq!(merged.clone(), merge_versions(mk(&local, "a").as_bytes(), mk(&up, "e").as_bytes()).file);
        }

        /// Arbitrary bytes on either side never panic, and every merged line is usable.
        #[test]
        fn arbitrary_bytes_never_panic(
            local in proptest::collection::vec(any::<u8>(), 0..300),
            up in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let m = merge_versions(&local, &up);
            for l in lines(&m.file) {
                prop_assert!(line_key(l).is_some());
            }
        }
    }
}
