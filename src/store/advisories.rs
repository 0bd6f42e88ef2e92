//! Security advisories as the store keeps them: plain values, checked by the registry layer
//! (`registry::advisories`) before they get here, replaced all at once by an import.

use serde::{Deserialize, Serialize};

/// One advisory of a RustSec database (withdrawn ones are never imported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryRecord {
    /// `RUSTSEC-YYYY-NNNN`.
    pub id: String,
    /// The crate, spelled as in the advisory.
    #[serde(rename = "crate")]
    pub krate: String,
    pub title: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `None`: a vulnerability; else the informational kind (`unmaintained`, `unsound`,
    /// `notice`, ...).
    #[serde(default)]
    pub informational: Option<String>,
    /// Version requirements of the patched versions.
    #[serde(default)]
    pub patched: Vec<String>,
    /// Version requirements of versions never affected.
    #[serde(default)]
    pub unaffected: Vec<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// The advisory database of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdvisoryDb {
    pub advisories: Vec<AdvisoryRecord>,
    /// When it was imported (unix seconds); `None`: never.
    pub imported: Option<u64>,
}
