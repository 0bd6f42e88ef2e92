//! Operations on existing crates: yank/unyank, owners, search.

use semver::Version;
use serde_json::{json, Value};

use super::admin::check_login;
use super::error::{RegistryError, RegistryResult};
use super::{check_name_and_version, Principal, RegistryService, Scope, MAX_CHANGE_ATTEMPTS};
use std::collections::HashSet;
use std::sync::Arc;

use crate::config::RegistryKind;
use crate::index::canonical_name;
use crate::index::line::{line_key, lines};
use crate::store::{CrateChange, CrateRecord, StoreError};
use crate::upstream::cached::CachedUpstream;

/// Most users one owners request may add or remove (crates.io takes a handful).
const MAX_OWNER_CHANGE: usize = 100;

enum SearchHit {
    Local(CrateRecord),
    Upstream(Arc<CachedUpstream>, String),
}

/// The published name and highest non-yanked version in an upstream index file, and how many
/// unusable lines were skipped.
fn upstream_summary(body: &[u8]) -> (Option<(String, Option<String>)>, usize) {
    let mut name = None;
    let mut best: Option<(Version, String)> = None;
    let mut skipped = 0;
    for line in lines(body) {
        let Some(l) = line_key(line) else {
            skipped += 1;
            continue;
        };
        name.get_or_insert_with(|| l.name.into_owned());
        if !l.yanked && best.as_ref().is_none_or(|(b, _)| l.version > *b) {
            best = Some((l.version, l.vers.into_owned()));
        }
    }
    (name.map(|n| (n, best.map(|(_, s)| s))), skipped)
}

/// Longest search query accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 256;

/// Index of the version of `rec` that `requested` names: the exact string, the same semver
/// (`1.0.0+b` vs `1.0.0+b`), or — when `requested` has no build metadata — the one release
/// that differs only in build metadata.
pub fn find_version(rec: &CrateRecord, requested: &str) -> Option<usize> {
    if let Some(i) = rec.versions.iter().position(|v| v.line.vers == requested) {
        return Some(i);
    }
    let want = Version::parse(requested).ok()?;
    rec.versions.iter().position(|v| {
        Version::parse(&v.line.vers).is_ok_and(|have| {
            have == want
                || (want.build.is_empty()
                    && (have.major, have.minor, have.patch, &have.pre)
                        == (want.major, want.minor, want.patch, &want.pre))
        })
    })
}

/// The version search shows: the highest non-yanked one (or the highest if all are yanked).
fn max_version(rec: &CrateRecord) -> Option<String> {
    let parsed = |yanked_ok: bool| {
        rec.versions
            .iter()
            .filter(|v| yanked_ok || !v.line.yanked)
            .filter_map(|v| Version::parse(&v.line.vers).ok().map(|p| (p, v.line.vers.clone())))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, s)| s)
    };
    parsed(false).or_else(|| parsed(true))
}

/// The owners of `rec` after adding or removing `logins`, and the message saying so.
fn owners_after(rec: &CrateRecord, logins: &[String], add: bool) -> RegistryResult<(Vec<String>, String)> {
    if add {
        let mut owners = rec.owners.clone();
        for login in logins {
            if !owners.contains(login) {
                owners.push(login.clone());
            }
        }
        return Ok((
            owners,
            format!("user(s) {} added as owner(s) of crate {}", logins.join(", "), rec.name),
        ));
    }
    let remaining: Vec<String> = rec.owners.iter().filter(|o| !logins.contains(o)).cloned().collect();
    if remaining.is_empty() {
        return Err(RegistryError::BadRequest(format!(
            "cannot remove every owner of crate `{}`; add another owner first",
            rec.name
        )));
    }
    if let Some(missing) = logins.iter().find(|l| !rec.owners.contains(l)) {
        return Err(RegistryError::NotFound(format!(
            "`{missing}` is not an owner of crate `{}`",
            rec.name
        )));
    }
    Ok((
        remaining,
        format!("owners successfully removed from crate {}", rec.name),
    ))
}

impl RegistryService {
    /// The crate named `name` (any case, `-`/`_` as published), or 404.
    async fn existing_crate(&self, registry: &str, name: &str) -> RegistryResult<CrateRecord> {
        self.load_crate(registry, name)
            .await?
            .filter(|r| r.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| RegistryError::NotFound(format!("crate `{name}` does not exist in registry `{registry}`")))
    }

    async fn owned_crate(&self, registry: &str, name: &str, who: &Principal) -> RegistryResult<CrateRecord> {
        let rec = self.existing_crate(registry, name).await?;
        if !rec.owners.contains(&who.user) && !who.is_admin() {
            return Err(RegistryError::Forbidden(format!(
                "`{}` is not an owner of crate `{}`",
                who.user, rec.name
            )));
        }
        Ok(rec)
    }

    /// Yanks (`yanked = true`) or unyanks a version. Returns `{"ok":true}`.
    pub async fn set_yanked(
        &self,
        registry: &str,
        header: Option<&str>,
        name: &str,
        version: &str,
        yanked: bool,
    ) -> RegistryResult<Value> {
        let reg = self.hosted(registry, "yanking")?;
        let who = self.require_principal(registry, header).await?;
        who.require(Scope::Yank, Some(registry))?;
        check_name_and_version(name, Some(version))?;
        // Decided on the crate as read; a concurrent change makes the store refuse and the
        // decision is made again on what won.
        let mut attempts = 0;
        loop {
            let rec = self.owned_crate(&reg.name, name, &who).await?;
            let i = find_version(&rec, version)
                .ok_or_else(|| RegistryError::NotFound(format!("crate `{}` has no version `{version}`", rec.name)))?;
            if rec.versions[i].line.yanked == yanked {
                break;
            }
            let change = CrateChange::SetYanked {
                vers: rec.versions[i].line.vers.clone(),
                yanked,
            };
            let canonical = canonical_name(&rec.name);
            match self
                .store
                .meta
                .change_crate(&reg.name, &canonical, Some(rec.revision), &change)
                .await
            {
                Ok(_) => {
                    self.invalidate(&reg.name, &rec.name);
                    tracing::info!(registry, krate.name = %rec.name, krate.version = %version, yanked, user = %who.user, "yank state changed");
                    break;
                }
                Err(StoreError::Conflict(_)) if attempts < MAX_CHANGE_ATTEMPTS => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(json!({"ok": true}))
    }

    /// `GET .../owners`: `{"users":[{"id","login","name"}]}`.
    pub async fn owners(&self, registry: &str, header: Option<&str>, name: &str) -> RegistryResult<Value> {
        let reg = self.hosted(registry, "listing owners")?;
        let who = self.require_principal(registry, header).await?;
        if reg.auth_required {
            who.require(Scope::Read, Some(registry))?;
        }
        check_name_and_version(name, None)?;
        let rec = self.existing_crate(registry, name).await?;
        let mut users = Vec::new();
        for login in &rec.owners {
            let user = self.store.meta.get_user(login).await?;
            users.push(json!({
                "id": user.as_ref().map_or(0, |u| u.id),
                "login": login,
                "name": user.and_then(|u| u.name),
            }));
        }
        Ok(json!({ "users": users }))
    }

    /// Decides whether the `Authorization` header may change owners in `registry`, before the
    /// request body is read.
    pub async fn authorize_owners(&self, registry: &str, header: Option<&str>) -> RegistryResult<Principal> {
        self.authorize_write(registry, header, Scope::Owners, "changing owners")
            .await
    }

    /// `PUT`/`DELETE .../owners` with `{"users":[logins]}` on behalf of `who` (from
    /// [`authorize_owners`](Self::authorize_owners)). Returns `{"ok":true,"msg":...}`.
    pub async fn change_owners(
        &self,
        registry: &str,
        who: &Principal,
        name: &str,
        logins: Vec<String>,
        add: bool,
    ) -> RegistryResult<Value> {
        let reg = self.hosted(registry, "changing owners")?;
        who.require(Scope::Owners, Some(registry))?;
        check_name_and_version(name, None)?;
        if logins.is_empty() {
            return Err(RegistryError::BadRequest(
                "no users given; send {\"users\":[\"login\"]}".into(),
            ));
        }
        let mut logins = logins;
        logins.sort();
        logins.dedup();
        if logins.len() > MAX_OWNER_CHANGE {
            return Err(RegistryError::BadRequest(format!(
                "at most {MAX_OWNER_CHANGE} users can be added or removed at once; this request names {}",
                logins.len()
            )));
        }
        for login in &logins {
            check_login(login)?;
        }
        // Users are looked up before the write lock: an owner change never holds up the
        // writes of other crates while it reads the store.
        if add {
            for login in &logins {
                if self.store.meta.get_user(login).await?.is_none() {
                    return Err(RegistryError::NotFound(format!(
                        "there is no user `{login}`; an administrator can create it with `cargohold user add {login}`"
                    )));
                }
            }
        }
        let mut attempts = 0;
        loop {
            let rec = self.owned_crate(&reg.name, name, who).await?;
            let (owners, msg) = owners_after(&rec, &logins, add)?;
            let canonical = canonical_name(&rec.name);
            let change = CrateChange::SetOwners(owners);
            match self
                .store
                .meta
                .change_crate(&reg.name, &canonical, Some(rec.revision), &change)
                .await
            {
                Ok(_) => {
                    tracing::info!(registry, krate.name = %rec.name, user = %who.user, add, count = logins.len(), "owners changed");
                    return Ok(json!({"ok": true, "msg": msg}));
                }
                Err(StoreError::Conflict(_)) if attempts < MAX_CHANGE_ATTEMPTS => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `GET /api/v1/crates?q=&per_page=&page=`: crates whose name, description or keywords
    /// contain the query (case-insensitive, `-`/`_` alike in names), exact name first. Proxy
    /// and merged registries also list the upstream crates they have cached (never asking
    /// the upstream); local crates hide upstream ones of the same name.
    pub async fn search(
        &self,
        registry: &str,
        header: Option<&str>,
        q: &str,
        per_page: usize,
        page: usize,
    ) -> RegistryResult<Value> {
        let reg = self.registry(registry)?;
        self.authorize_read(&reg, header).await?;
        if q.len() > MAX_QUERY_LEN {
            return Err(RegistryError::BadRequest(format!(
                "the search query is longer than {MAX_QUERY_LEN} bytes"
            )));
        }
        let per_page = per_page.clamp(1, 100);
        let q_lower = q.trim().to_lowercase();
        let q_canon = canonical_name(q.trim());
        // (exact match, canonical name, source)
        let mut hits: Vec<(bool, String, SearchHit)> = Vec::new();
        if reg.kind == RegistryKind::Hosted {
            for r in self.store.meta.crates(registry).await? {
                let matches = canonical_name(&r.name).contains(&q_canon)
                    || r.description
                        .as_ref()
                        .is_some_and(|d| d.to_lowercase().contains(&q_lower))
                    || r.keywords.iter().any(|k| k.to_lowercase() == q_lower);
                if !r.versions.is_empty() && (q_lower.is_empty() || matches) {
                    let canon = canonical_name(&r.name);
                    hits.push((canon == q_canon, canon, SearchHit::Local(r)));
                }
            }
        }
        let proxies: Vec<String> = if reg.kind == RegistryKind::Proxy {
            vec![reg.name.clone()]
        } else {
            reg.upstreams.clone()
        };
        let mut seen: HashSet<String> = hits.iter().map(|h| h.1.clone()).collect();
        for up in proxies {
            let Ok(proxy) = self.proxy(&up) else { continue };
            for name in proxy.cached_names().await {
                // A cache written by an older version may hold names never checked.
                if !crate::index::name::is_lookup_name(&name) {
                    continue;
                }
                let canon = canonical_name(&name);
                if (q_lower.is_empty() || canon.contains(&q_canon)) && seen.insert(canon.clone()) {
                    hits.push((canon == q_canon, canon, SearchHit::Upstream(proxy.clone(), name)));
                }
            }
        }
        hits.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let total = hits.len();
        let mut crates = Vec::new();
        let skip = page.saturating_sub(1).saturating_mul(per_page);
        for (_, _, hit) in hits.into_iter().skip(skip).take(per_page) {
            crates.push(match hit {
                SearchHit::Local(r) => {
                    json!({"name": r.name, "max_version": max_version(&r), "description": r.description})
                }
                SearchHit::Upstream(proxy, lower) => {
                    let (name, max) = match proxy.cached(&lower).await {
                        Some(e) => {
                            // Parsing a whole index file (up to megabytes) happens on the
                            // blocking pool, not on the edge worker serving other requests.
                            let (registry, name) = (proxy.settings().registry.clone(), lower.clone());
                            let summary = tokio::task::spawn_blocking(move || {
                                let (summary, skipped) = upstream_summary(&e.body);
                                crate::upstream::garbage::report(&registry, &name, &e.etag, skipped, "search");
                                summary
                            })
                            .await
                            .ok()
                            .flatten();
                            summary.unwrap_or((lower.clone(), None))
                        }
                        None => (lower.clone(), None),
                    };
                    json!({"name": name, "max_version": max.unwrap_or_else(|| "0.0.0".into()), "description": null})
                }
            });
        }
        Ok(json!({"crates": crates, "meta": {"total": total}}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::IndexLine;
    use crate::store::VersionRecord;

    fn rec(versions: &[(&str, bool)]) -> CrateRecord {
        CrateRecord {
            name: "foo".into(),
            owners: vec![],
            description: None,
            keywords: vec![],
            versions: versions
                .iter()
                .map(|(v, y)| VersionRecord {
                    line: IndexLine {
                        name: "foo".into(),
                        vers: (*v).into(),
                        deps: vec![],
                        cksum: String::new(),
                        features: Default::default(),
                        yanked: *y,
                        links: None,
                        v: 1,
                        rust_version: None,
                        pubtime: None,
                    },
                    published_by: "a".into(),
                })
                .collect(),
            revision: 1,
        }
    }

    #[test]
    fn versions_are_found_with_or_without_build_metadata() {
        let r = rec(&[("1.0.0", false), ("2.0.0+b5", false)]);
        assert_eq!(find_version(&r, "1.0.0"), Some(0));
        assert_eq!(find_version(&r, "2.0.0+b5"), Some(1));
        assert_eq!(find_version(&r, "2.0.0"), Some(1));
        assert_eq!(find_version(&r, "2.0.0+other"), None);
        assert_eq!(find_version(&r, "3.0.0"), None);
        assert_eq!(find_version(&r, "junk"), None);
    }

    #[test]
    fn max_version_skips_yanked() {
        assert_eq!(
            max_version(&rec(&[("1.0.0", false), ("1.1.0", true)])).as_deref(),
            Some("1.0.0")
        );
        assert_eq!(
            max_version(&rec(&[("1.0.0", true), ("0.9.0", true)])).as_deref(),
            Some("1.0.0")
        );
        assert_eq!(
            max_version(&rec(&[("1.10.0", false), ("1.9.0", false)])).as_deref(),
            Some("1.10.0")
        );
    }
}
