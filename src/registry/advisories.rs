//! Security advisories ([`Advisories`]): the imported RustSec database as an in-memory index
//! by crate, the checks of an import (hostile input: everything is checked again here, whoever
//! parsed it), and the verdict on a download of a proxied crate version.
//!
//! Matching follows rustsec: a version is affected when no `patched` and no `unaffected`
//! requirement matches it (`rustsec::advisory::Versions::is_vulnerable`). Informational
//! advisories (unmaintained, unsound, notice) are flagged, never denied.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use rustsec::advisory::Versions;
use serde_json::{json, Value};

use super::error::{RegistryError, RegistryResult};
use crate::cache::FastHasher;
use crate::config::{is_advisory_id, AdvisoryMode, RegistrySpec};
use crate::index::canonical_name;
use crate::index::name::validate_lookup_name;
use crate::store::advisories::{AdvisoryDb, AdvisoryRecord};
use crate::store::{now_secs, Metadata};

/// Most advisories one import may hold (the public database has about a thousand crates'
/// worth; this leaves room and bounds what a hostile upload costs).
pub const MAX_ADVISORIES: usize = 50_000;
/// Most characters of a title.
pub const MAX_TITLE: usize = 512;
/// Most requirements in `patched` or `unaffected`, and characters of each.
pub const MAX_REQS: usize = 64;
const MAX_REQ_LEN: usize = 256;
const MAX_URL: usize = 2048;

/// One advisory as the index keeps it.
#[derive(Debug)]
pub struct Entry {
    pub id: String,
    pub title: String,
    pub informational: Option<String>,
    versions: Versions,
}

impl Entry {
    /// Whether `version` is affected (rustsec's rule).
    pub fn affects(&self, version: &semver::Version) -> bool {
        self.versions.is_vulnerable(version)
    }
}

/// The loaded database: advisories by canonical crate name (lowercase, `-` as `_`).
#[derive(Debug, Default)]
pub struct AdvisoryIndex {
    by_crate: HashMap<String, Vec<Arc<Entry>>, FastHasher>,
    /// Unix seconds; `None`: never imported.
    pub imported: Option<u64>,
    /// The newest advisory's date (`YYYY-MM-DD`).
    pub newest: Option<String>,
    pub count: usize,
    pub informational: usize,
}

impl AdvisoryIndex {
    /// The index of `db` (whose records passed [`check_import`] when they were imported; a
    /// record that no longer parses is skipped with a warning).
    pub fn build(db: &AdvisoryDb) -> Self {
        let mut ix = AdvisoryIndex {
            imported: db.imported,
            ..Default::default()
        };
        for a in &db.advisories {
            let versions = match versions_of(a) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(id = %a.id, error = %e, "skipping a stored advisory that does not parse");
                    continue;
                }
            };
            ix.count += 1;
            ix.informational += usize::from(a.informational.is_some());
            if ix.newest.as_deref().is_none_or(|n| a.date.as_str() > n) {
                ix.newest = Some(a.date.clone());
            }
            ix.by_crate
                .entry(canonical_name(&a.krate))
                .or_default()
                .push(Arc::new(Entry {
                    id: a.id.clone(),
                    title: a.title.clone(),
                    informational: a.informational.clone(),
                    versions,
                }));
        }
        ix
    }

    /// The advisories of the crate `name` (any spelling), if any. Allocation-free for names
    /// already in canonical form (the usual case).
    pub fn of_crate(&self, name: &str) -> Option<&[Arc<Entry>]> {
        if self.by_crate.is_empty() {
            return None;
        }
        let hit = if name.bytes().any(|b| b == b'-' || b.is_ascii_uppercase()) {
            // Canonical in a stack buffer: the download path of every `a-b` crate asks this.
            let mut buf = [0u8; 64];
            match buf.get_mut(..name.len()) {
                Some(out) if name.is_ascii() => {
                    for (o, b) in out.iter_mut().zip(name.bytes()) {
                        *o = if b == b'-' { b'_' } else { b.to_ascii_lowercase() };
                    }
                    std::str::from_utf8(out).ok().and_then(|c| self.by_crate.get(c))
                }
                _ => self.by_crate.get(&canonical_name(name)),
            }
        } else {
            self.by_crate.get(name)
        };
        hit.map(Vec::as_slice)
    }

    /// The advisories affecting `name@version`.
    pub fn affecting(&self, name: &str, version: &str) -> Vec<Arc<Entry>> {
        let Some(list) = self.of_crate(name) else {
            return Vec::new();
        };
        let Ok(v) = semver::Version::parse(version) else {
            return Vec::new();
        };
        list.iter().filter(|e| e.affects(&v)).cloned().collect()
    }
}

fn versions_of(a: &AdvisoryRecord) -> Result<Versions, String> {
    let parse = |list: &[String], what: &str| -> Result<Vec<semver::VersionReq>, String> {
        list.iter()
            .map(|r| {
                semver::VersionReq::parse(r)
                    .map_err(|e| format!("`{what}` requirement `{}` is not valid: {e}", shorten(r, 64)))
            })
            .collect()
    };
    Versions::new(parse(&a.patched, "patched")?, parse(&a.unaffected, "unaffected")?)
        .map_err(|e| format!("inconsistent version requirements: {e}"))
}

fn shorten(s: &str, max: usize) -> String {
    crate::index::name::shorten(s, max)
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Checks one advisory of an import; the problems, each naming the field.
fn problems_of(a: &AdvisoryRecord) -> Vec<String> {
    let mut out = Vec::new();
    if !is_advisory_id(&a.id) {
        out.push(format!(
            "`id` `{}` is not a RustSec id (`RUSTSEC-YYYY-NNNN`)",
            shorten(&a.id, 64)
        ));
    }
    if let Err(e) = validate_lookup_name(&a.krate) {
        out.push(format!("`crate` `{}`: {e}", shorten(&a.krate, 80)));
    }
    if a.title.trim().is_empty() || a.title.chars().count() > MAX_TITLE || a.title.chars().any(char::is_control) {
        out.push(format!(
            "`title` must be 1 to {MAX_TITLE} characters without control characters"
        ));
    }
    if !is_date(&a.date) {
        out.push(format!("`date` `{}` is not YYYY-MM-DD", shorten(&a.date, 32)));
    }
    if let Some(k) = &a.informational {
        if k.is_empty() || k.len() > 32 || !k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
            out.push(format!(
                "`informational` `{}` is not a kind such as `unmaintained`",
                shorten(k, 32)
            ));
        }
    }
    for (what, list) in [("patched", &a.patched), ("unaffected", &a.unaffected)] {
        if list.len() > MAX_REQS || list.iter().any(|r| r.len() > MAX_REQ_LEN) {
            out.push(format!(
                "`{what}` holds at most {MAX_REQS} requirements of at most {MAX_REQ_LEN} characters"
            ));
        }
    }
    if out.is_empty() {
        if let Err(e) = versions_of(a) {
            out.push(e);
        }
    }
    if let Some(u) = &a.url {
        if u.len() > MAX_URL
            || !(u.starts_with("https://") || u.starts_with("http://"))
            || u.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            out.push(format!("`url` is not an http(s) URL of at most {MAX_URL} characters"));
        }
    }
    out
}

/// Checks a whole import: every advisory, the count, unique ids. The error lists the first
/// problems, each with the advisory it is about.
pub fn check_import(list: &[AdvisoryRecord]) -> RegistryResult<()> {
    if list.len() > MAX_ADVISORIES {
        return Err(RegistryError::BadRequest(format!(
            "{} advisories is more than the limit of {MAX_ADVISORIES}",
            list.len()
        )));
    }
    let mut problems = Vec::new();
    let mut ids = HashSet::new();
    for (i, a) in list.iter().enumerate() {
        let who = if is_advisory_id(&a.id) {
            a.id.clone()
        } else {
            format!("#{i}")
        };
        for p in problems_of(a) {
            problems.push(format!("advisory {who}: {p}"));
        }
        if !ids.insert(a.id.as_str()) {
            problems.push(format!("advisory {who}: the id appears twice"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(10);
    let more = if n > 10 {
        format!(" (and {} more)", n - 10)
    } else {
        String::new()
    };
    Err(RegistryError::BadRequest(format!(
        "the advisory database is not valid, nothing was imported: {}{more}",
        problems.join("; ")
    )))
}

/// What a registry does about one advisory: its mode, unless it allows the id; informational
/// advisories are never denied.
fn action_of(reg: &RegistrySpec, e: &Entry) -> AdvisoryMode {
    if reg.advisories_allow.iter().any(|a| a == &e.id) {
        return AdvisoryMode::Off;
    }
    match reg.advisories {
        AdvisoryMode::Deny if e.informational.is_some() => AdvisoryMode::Flag,
        m => m,
    }
}

/// One advisory matched by a download, with what the registries decided.
#[derive(Debug, Clone)]
pub struct Matched {
    pub entry: Arc<Entry>,
    pub action: AdvisoryMode,
    /// The registries whose mode denies it (for the message).
    pub denied_by: Vec<String>,
}

/// The verdict on a download: the advisories to report (flagged or denied), strictest first.
/// `chain` is the registry asked and, for a merged view, the proxy the version comes from:
/// each advisory gets the strictest action of the two (each registry's own
/// `advisories_allow` taken into account for its own mode).
pub fn verdict(index: &AdvisoryIndex, chain: &[&RegistrySpec], name: &str, version: &str) -> Vec<Matched> {
    let mut out: Vec<Matched> = index
        .affecting(name, version)
        .into_iter()
        .filter_map(|entry| {
            let action = chain.iter().map(|r| action_of(r, &entry)).max()?;
            (action != AdvisoryMode::Off).then(|| Matched {
                denied_by: chain
                    .iter()
                    .filter(|r| action_of(r, &entry) == AdvisoryMode::Deny)
                    .map(|r| r.name.clone())
                    .collect(),
                entry,
                action,
            })
        })
        .collect();
    out.sort_by(|a, b| b.action.cmp(&a.action).then_with(|| a.entry.id.cmp(&b.entry.id)));
    out
}

/// The 403 of a denied download: the advisory, its title and how to allow it.
pub fn denial(name: &str, version: &str, m: &Matched) -> RegistryError {
    let fix = m
        .denied_by
        .iter()
        .map(|r| format!("`advisories_allow = [\"{}\"]` on registry `{r}`", m.entry.id))
        .collect::<Vec<_>>()
        .join(" and ");
    RegistryError::Forbidden(format!(
        "crate `{name}` version `{version}` is denied by security advisory {}: {}. Use a patched version, or allow it with {fix}",
        m.entry.id, m.entry.title
    ))
}

/// The advisory component: the index (swapped whole on reload) and the store it loads from.
pub struct Advisories {
    meta: Arc<dyn Metadata>,
    index: RwLock<Arc<AdvisoryIndex>>,
    /// One reload at a time, so an older read never replaces a newer one.
    reload: tokio::sync::Mutex<()>,
    /// Findings this node reported already (key of `report_once`), so a hot flagged download
    /// does not write to the store each time; bounded.
    reported: moka::sync::Cache<String, (), FastHasher>,
}

impl Advisories {
    pub fn new(meta: Arc<dyn Metadata>) -> Self {
        Advisories {
            meta,
            index: RwLock::new(Arc::new(AdvisoryIndex::default())),
            reload: tokio::sync::Mutex::new(()),
            reported: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .build_with_hasher(FastHasher::default()),
        }
    }

    /// The index now.
    pub fn index(&self) -> Arc<AdvisoryIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the crate `name` has any advisory (the cheap test of the download path).
    pub fn any_for(&self, name: &str) -> bool {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .of_crate(name)
            .is_some()
    }

    /// Reads the database from the store and swaps the index.
    pub async fn reload(&self) -> RegistryResult<()> {
        let _one = self.reload.lock().await;
        let db = self.meta.advisories().await?;
        let ix = Arc::new(AdvisoryIndex::build(&db));
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = ix;
        Ok(())
    }

    /// Checks and stores a whole database (replacing the one there), then reloads.
    pub async fn import(&self, list: Vec<AdvisoryRecord>) -> RegistryResult<Value> {
        check_import(&list)?;
        let db = AdvisoryDb {
            advisories: list,
            imported: Some(now_secs()),
        };
        self.meta.replace_advisories(&db).await?;
        self.reload().await?;
        tracing::info!(advisories = db.advisories.len(), "security advisory database imported");
        Ok(self.status_json())
    }

    /// The database's figures (`advisories status`).
    pub fn status_json(&self) -> Value {
        let ix = self.index();
        json!({
            "imported": ix.imported.map(|t| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t)).to_string()),
            "newest_advisory": ix.newest,
            "advisories": ix.count,
            "informational": ix.informational,
            "crates": ix.by_crate.len(),
        })
    }

    /// Whether the finding `key` is new to this node (and remembers it).
    pub fn first_report(&self, key: &str) -> bool {
        if self.reported.contains_key(key) {
            return false;
        }
        self.reported.insert(key.to_owned(), ());
        true
    }

    /// Forgets the finding `key` (its report could not be recorded: the next download tries
    /// again).
    pub fn forget_report(&self, key: &str) {
        self.reported.invalidate(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistryKind;

    fn rec(id: &str, krate: &str, patched: &[&str], unaffected: &[&str], info: Option<&str>) -> AdvisoryRecord {
        AdvisoryRecord {
            id: id.into(),
            krate: krate.into(),
            title: format!("{id} title"),
            date: "2024-03-04".into(),
            informational: info.map(str::to_owned),
            patched: patched.iter().map(|s| (*s).to_owned()).collect(),
            unaffected: unaffected.iter().map(|s| (*s).to_owned()).collect(),
            url: None,
        }
    }

    fn index(list: Vec<AdvisoryRecord>) -> AdvisoryIndex {
        check_import(&list).unwrap();
        AdvisoryIndex::build(&AdvisoryDb {
            advisories: list,
            imported: Some(1),
        })
    }

    #[test]
    fn affected_versions_follow_patched_and_unaffected() {
        let ix = index(vec![rec(
            "RUSTSEC-2024-0001",
            "Foo-Bar",
            &[">=1.2.3", "~1.1.5"],
            &["<1.0.0"],
            None,
        )]);
        let ids = |v: &str| {
            ix.affecting("foo_bar", v)
                .iter()
                .map(|e| e.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("1.2.0"), ["RUSTSEC-2024-0001"]);
        assert_eq!(ids("1.1.4"), ["RUSTSEC-2024-0001"]);
        assert!(ids("1.1.5").is_empty(), "patched");
        assert!(ids("1.2.3").is_empty(), "patched");
        assert!(ids("2.0.0").is_empty(), "patched");
        assert!(ids("0.9.0").is_empty(), "unaffected");
        assert!(ids("not-a-version").is_empty());
        // Any spelling of the name.
        assert_eq!(ix.affecting("FOO-BAR", "1.2.0").len(), 1);
        assert!(ix.affecting("other", "1.2.0").is_empty());
        assert_eq!((ix.count, ix.newest.as_deref()), (1, Some("2024-03-04")));
    }

    #[test]
    fn modes_combine_strictest_first_with_each_registrys_allow_list() {
        let ix = index(vec![
            rec("RUSTSEC-2024-0001", "foo", &[">=2.0.0"], &[], None),
            rec("RUSTSEC-2024-0002", "foo", &[], &[], Some("unmaintained")),
        ]);
        let mut proxy = RegistrySpec::new("p", RegistryKind::Proxy);
        let mut view = RegistrySpec::new("v", RegistryKind::Hosted);
        let actions = |chain: &[&RegistrySpec]| {
            verdict(&ix, chain, "foo", "1.0.0")
                .iter()
                .map(|m| (m.entry.id.clone(), m.action))
                .collect::<Vec<_>>()
        };
        // Default: flag both.
        assert_eq!(
            actions(&[&proxy]),
            [
                ("RUSTSEC-2024-0001".into(), AdvisoryMode::Flag),
                ("RUSTSEC-2024-0002".into(), AdvisoryMode::Flag)
            ]
        );
        // Deny: the vulnerability is denied, the informational one only flagged.
        proxy.advisories = AdvisoryMode::Deny;
        assert_eq!(actions(&[&proxy])[0], ("RUSTSEC-2024-0001".into(), AdvisoryMode::Deny));
        assert_eq!(actions(&[&proxy])[1].1, AdvisoryMode::Flag);
        // A view that is `off` does not lift the proxy's deny.
        view.advisories = AdvisoryMode::Off;
        let m = verdict(&ix, &[&view, &proxy], "foo", "1.0.0");
        assert_eq!(
            (m[0].action, m[0].denied_by.clone()),
            (AdvisoryMode::Deny, vec!["p".to_owned()])
        );
        // Allowed on the proxy: the view (off) and the proxy (allowed) let it pass unflagged.
        proxy.advisories_allow = vec!["RUSTSEC-2024-0001".into()];
        assert_eq!(
            actions(&[&view, &proxy]),
            [("RUSTSEC-2024-0002".into(), AdvisoryMode::Flag)]
        );
        // Off everywhere: nothing.
        proxy.advisories = AdvisoryMode::Off;
        assert!(actions(&[&view, &proxy]).is_empty());
        // Patched versions always pass.
        view.advisories = AdvisoryMode::Deny;
        assert!(verdict(&ix, &[&view], "foo", "2.0.0")
            .iter()
            .all(|m| m.entry.informational.is_some()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Any advisory is accepted or refused with a message, never a panic; an accepted one
        /// builds an index that answers any version without panic.
        #[test]
        fn any_advisory_is_decided_without_panic(
            id in "(RUSTSEC-20[0-9]{2}-[0-9]{4}|[ -~]{0,20})",
            krate in "([a-zA-Z][a-zA-Z0-9_-]{0,10}|[ -~]{0,12}|\\PC{0,8})",
            title in proptest::prelude::any::<String>(),
            date in "(20[0-9]{2}-[0-9]{2}-[0-9]{2}|[ -~]{0,12})",
            reqs in proptest::collection::vec("([<>=^~*]{0,2} ?[0-9]{1,2}(\\.[0-9x*]{1,2}){0,2}(-[a-z0-9.]{1,4})?|[ -~]{0,10})", 0..4),
            split in 0usize..4,
            version in "([0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(-[a-z0-9.]{1,4})?|[ -~]{0,10})",
        ) {
            let at = split.min(reqs.len());
            let a = AdvisoryRecord {
                id, krate, title, date,
                informational: None,
                patched: reqs[..at].to_vec(),
                unaffected: reqs[at..].to_vec(),
                url: None,
            };
            if check_import(std::slice::from_ref(&a)).is_ok() {
                let ix = AdvisoryIndex::build(&AdvisoryDb { advisories: vec![a.clone()], imported: None });
                let _ = ix.affecting(&a.krate, &version);
                let spec = RegistrySpec::new("p", RegistryKind::Proxy);
                let _ = verdict(&ix, &[&spec], &a.krate, &version);
            }
        }
    }

    #[test]
    fn hostile_imports_are_refused_with_every_problem_named() {
        let good = rec("RUSTSEC-2024-0001", "foo", &[">=1"], &[], None);
        assert!(check_import(std::slice::from_ref(&good)).is_ok());
        let bad = |f: &dyn Fn(&mut AdvisoryRecord)| {
            let mut a = good.clone();
            f(&mut a);
            match check_import(&[a]) {
                Err(RegistryError::BadRequest(m)) => m,
                other => panic!("accepted: {other:?}"),
            }
        };
        assert!(bad(&|a| a.id = "CVE-2024-1".into()).contains("`id`"));
        assert!(bad(&|a| a.id = "RUSTSEC-2024-1".into()).contains("`id`"));
        assert!(bad(&|a| a.krate = "../etc".into()).contains("`crate`"));
        assert!(bad(&|a| a.krate = String::new()).contains("`crate`"));
        assert!(bad(&|a| a.title = "x\ny".into()).contains("`title`"));
        assert!(bad(&|a| a.title = "t".repeat(MAX_TITLE + 1)).contains("`title`"));
        assert!(bad(&|a| a.date = "2024-1-1".into()).contains("`date`"));
        assert!(bad(&|a| a.patched = vec!["not a req".into()]).contains("`patched`"));
        assert!(bad(&|a| a.unaffected = vec![">=1".into(); MAX_REQS + 1]).contains("`unaffected`"));
        assert!(bad(&|a| a.informational = Some("DROP TABLE".into())).contains("`informational`"));
        assert!(bad(&|a| a.url = Some("javascript:alert(1)".into())).contains("`url`"));
        let m = match check_import(&[good.clone(), good.clone()]) {
            Err(RegistryError::BadRequest(m)) => m,
            other => panic!("accepted: {other:?}"),
        };
        assert!(m.contains("twice"), "{m}");
        let many = vec![good; MAX_ADVISORIES + 1];
        assert!(check_import(&many).is_err());
    }
}

/// An advisory as pages and search results show it next to a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub id: String,
    pub title: String,
    /// `None`: a vulnerability; else the informational kind.
    pub informational: Option<String>,
}

impl Note {
    fn of(e: &Entry) -> Self {
        Note {
            id: e.id.clone(),
            title: e.title.clone(),
            informational: e.informational.clone(),
        }
    }

    fn json(&self) -> Value {
        json!({"id": self.id, "title": self.title, "informational": self.informational})
    }
}

/// The `advisory.matched` counter.
pub const METRIC: &str = "cargohold_advisory_matches_total";

/// Body of `PUT /-/api/v1/advisories`: the whole database.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryUpload {
    pub advisories: Vec<AdvisoryRecord>,
}

impl super::RegistryService {
    /// Replaces the advisory database (admin; the caller checked the principal).
    pub async fn import_advisories(&self, upload: AdvisoryUpload) -> RegistryResult<Value> {
        let mut status = self.advisories.import(upload.advisories).await?;
        status["registries"] = self.advisory_modes();
        Ok(status)
    }

    /// `advisories status`: the database's date and counts, and each registry's mode.
    pub fn advisories_status(&self) -> Value {
        let mut status = self.advisories.status_json();
        status["registries"] = self.advisory_modes();
        status
    }

    fn advisory_modes(&self) -> Value {
        let regs = self.catalog.registries();
        Value::Array(
            regs.values()
                .filter(|r| r.kind == crate::config::RegistryKind::Proxy || !r.upstreams.is_empty())
                .map(|r| json!({"name": r.name, "kind": r.kind, "advisories": r.advisories, "advisories_allow": r.advisories_allow}))
                .collect(),
        )
    }

    /// Adds `advisories` (`[{"id","title","informational"}]`) to each hit of a search answer
    /// of `reg` whose `max_version` an advisory affects, unless the hit is a local crate or the
    /// registry's mode is `off`.
    pub(crate) async fn annotate_search(&self, reg: &RegistrySpec, answer: &mut Value) -> RegistryResult<()> {
        if reg.advisories == AdvisoryMode::Off {
            return Ok(());
        }
        let ix = self.advisories.index();
        if ix.count == 0 {
            return Ok(());
        }
        let Some(list) = answer["crates"].as_array_mut() else {
            return Ok(());
        };
        for hit in list {
            let (Some(name), Some(vers)) = (
                hit["name"].as_str().map(str::to_owned),
                hit["max_version"].as_str().map(str::to_owned),
            ) else {
                continue;
            };
            let found = ix.affecting(&name, &vers);
            if found.is_empty() {
                continue;
            }
            if reg.kind == crate::config::RegistryKind::Hosted
                && self
                    .reads
                    .load_crate(&reg.name, &name)
                    .await?
                    .is_some_and(|r| r.name.eq_ignore_ascii_case(&name))
            {
                continue;
            }
            hit["advisories"] = Value::Array(found.iter().map(|e| Note::of(e).json()).collect());
        }
        Ok(())
    }

    /// The advisories of each version of a proxied crate's view (by version), for its page;
    /// none for a local crate or a registry whose mode is `off`.
    pub fn advisory_notes(&self, reg: &RegistrySpec, view: &super::CrateView) -> HashMap<String, Vec<Note>> {
        let mut out = HashMap::new();
        if view.local || reg.advisories == AdvisoryMode::Off {
            return out;
        }
        let ix = self.advisories.index();
        let Some(list) = ix.of_crate(&view.name) else {
            return out;
        };
        for v in &view.versions {
            let Ok(parsed) = semver::Version::parse(&v.line.vers) else {
                continue;
            };
            let notes: Vec<Note> = list
                .iter()
                .filter(|e| e.affects(&parsed))
                .map(|e| Note::of(e))
                .collect();
            if !notes.is_empty() {
                out.insert(v.line.vers.clone(), notes);
            }
        }
        out
    }

    /// The advisories of a download of `name@version` from `reg`, decided before any byte is
    /// fetched: a denied version answers 403 here; flagged ones come back (their ids, for the
    /// response header). Only proxied versions are checked: a hosted registry's own crates,
    /// and versions a merged view serves from its local crates, are not.
    pub(crate) async fn check_advisories(
        &self,
        reg: &Arc<RegistrySpec>,
        name: &str,
        version: &str,
    ) -> RegistryResult<Option<String>> {
        let ix = self.advisories.index();
        if ix.affecting(name, version).is_empty() {
            return Ok(None);
        }
        // Where the download would come from (as `Reads::download` decides it; only crates
        // with an advisory pay for this). A version no proxy lists is left to the download's
        // 404: made-up versions must not count, report or deny anything.
        let proxies: &[String] = if reg.kind == crate::config::RegistryKind::Hosted {
            let local = self
                .reads
                .load_crate(&reg.name, name)
                .await?
                .filter(|r| r.name.eq_ignore_ascii_case(name));
            if let Some(rec) = local {
                if super::changes::find_version(&rec, version).is_some() || reg.shadow == crate::config::Shadow::Crate {
                    return Ok(None);
                }
            }
            &reg.upstreams
        } else {
            std::slice::from_ref(&reg.name)
        };
        let mut from = None;
        for up in proxies {
            if self.catalog.proxy(up)?.locate(name, version).await.is_ok() {
                from = Some(self.catalog.registry(up)?);
                break;
            }
        }
        let Some(from) = from else {
            return Ok(None);
        };
        let mut chain = vec![reg.clone()];
        if from.name != reg.name {
            chain.push(from);
        }
        let specs: Vec<&RegistrySpec> = chain.iter().map(|r| &**r).collect();
        let matched = verdict(&ix, &specs, name, version);
        if matched.is_empty() {
            return Ok(None);
        }
        let lower = name.to_ascii_lowercase();
        for m in &matched {
            let action = if m.action == AdvisoryMode::Deny {
                "denied"
            } else {
                "flagged"
            };
            crate::telemetry::METRICS.add(METRIC, &[("registry", &reg.name), ("action", action)], 1);
            // Once per action too: a version flagged, then denied after the mode changed,
            // is reported again (a receiver learns that downloads of it now fail).
            let key = format!("{lower}@{version}@{}@{action}", m.entry.id);
            let seen = format!("{}\0{key}", reg.name);
            if self.advisories.first_report(&seen) {
                tracing::warn!(registry = %reg.name, krate = %name, version, advisory = %m.entry.id, action, "download of a version a security advisory affects");
                let event = crate::store::hooks::HookEvent::advisory_matched(
                    &reg.name,
                    name,
                    version,
                    &m.entry.id,
                    &m.entry.title,
                    action,
                );
                if !self.report_once(&key, event).await {
                    self.advisories.forget_report(&seen);
                }
            }
        }
        if matched[0].action == AdvisoryMode::Deny {
            return Err(denial(name, version, &matched[0]));
        }
        Ok(Some(
            matched
                .iter()
                .map(|m| m.entry.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }
}
