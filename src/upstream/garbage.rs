//! Unusable lines in an upstream index file (not JSON, fields missing, a name that is not a
//! crate name, a version that is not semver). The file is still served verbatim; merge,
//! search and `cksum` lookup skip such lines, and say so in the log once per file (by its
//! ETag, whichever registry or operation met it first), not once per request.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Mutex;

/// How many files' warnings are remembered before the set starts over.
const REMEMBERED: usize = 4096;

static WARNED: Mutex<Option<HashSet<u64>>> = Mutex::new(None);

/// Logs a warning that `skipped` lines of `name`'s index file (ETag `etag`), met in `registry`
/// during `during`, were unusable, unless that file was already reported. Returns whether it
/// logged.
pub fn report(registry: &str, name: &str, etag: &str, skipped: usize, during: &'static str) -> bool {
    if skipped == 0 {
        return false;
    }
    let key = foldhash::fast::FixedState::with_seed(0x5eed).hash_one(etag);
    {
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        let set = warned.get_or_insert_with(HashSet::new);
        if set.len() >= REMEMBERED {
            set.clear();
        }
        if !set.insert(key) {
            return false;
        }
    }
    tracing::warn!(
        registry,
        krate.name = name,
        skipped,
        during,
        "the upstream index file has unusable lines (not JSON, missing fields, invalid name, version or checksum); they are served as they are but skipped here"
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_file() {
        assert!(!report("r-test", "foo", "\"e0\"", 0, "merge"));
        assert!(report("r-test", "foo", "\"e1\"", 2, "merge"));
        assert!(!report("r-test", "foo", "\"e1\"", 2, "search"));
        assert!(report("r-test", "foo", "\"e2\"", 1, "merge"));
        assert!(!report("r-other", "foo", "\"e1\"", 1, "merge"));
    }
}
