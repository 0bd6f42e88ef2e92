//! Changes to hosted crates: publish (`publish.rs`), yank/unyank and owners. Each is decided
//! on the crate as read and committed at the revision it was read at ([`Metadata::change_crate`]);
//! when a concurrent change (of this process or another sharing the database) wins, the
//! crate is read again and the change decided again. After each commit the rendered index
//! file is invalidated ([`Reads::invalidate`]), before the client gets its answer.

use std::sync::Arc;

use semver::Version;
use serde_json::{json, Value};

use super::admin::check_login;
use super::catalog::Catalog;
use super::error::{RegistryError, RegistryResult};
use super::reads::Reads;
use super::{check_name_and_version, Principal, Scope, MAX_CHANGE_ATTEMPTS};
use crate::index::canonical_name;
use crate::store::{Blobs, CrateChange, CrateRecord, Metadata, StoreError};

/// Most users one owners request may add or remove (crates.io takes a handful).
const MAX_OWNER_CHANGE: usize = 100;

/// What a decision on a crate, as read, says to do.
#[allow(clippy::large_enum_variant)] // one value per decision, never kept
pub(crate) enum Decision<T> {
    /// Nothing to change; the answer is `T`.
    Keep(T),
    /// Commit this change at the revision read; the answer is `T`.
    Change(CrateChange, T),
}

/// The write side of hosted registries.
pub struct Changes {
    pub(super) meta: Arc<dyn Metadata>,
    pub(super) blobs: Arc<dyn Blobs>,
    pub(super) catalog: Arc<Catalog>,
    pub(super) reads: Arc<Reads>,
    /// Wakes this node's webhook worker after a commit (its event is in the outbox).
    pub(super) outbox: Arc<tokio::sync::Notify>,
}

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

/// The crate named `name` (any case, `-`/`_` as published), or 404.
fn existing<'a>(rec: Option<&'a CrateRecord>, registry: &str, name: &str) -> RegistryResult<&'a CrateRecord> {
    rec.filter(|r| r.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| RegistryError::NotFound(format!("crate `{name}` does not exist in registry `{registry}`")))
}

/// [`existing`], and owned by `who` (or `who` is an administrator), else 403.
fn owned<'a>(
    rec: Option<&'a CrateRecord>,
    registry: &str,
    name: &str,
    who: &Principal,
) -> RegistryResult<&'a CrateRecord> {
    let rec = existing(rec, registry, name)?;
    if !rec.owners.contains(&who.user) && !who.is_admin() {
        return Err(RegistryError::Forbidden(format!(
            "`{}` is not an owner of crate `{}`",
            who.user, rec.name
        )));
    }
    Ok(rec)
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

impl Changes {
    /// Loads a crate record by any spelling of its name.
    pub(super) async fn load_crate(&self, registry: &str, name: &str) -> RegistryResult<Option<CrateRecord>> {
        Ok(self.meta.get_crate(registry, &canonical_name(name)).await?)
    }

    /// Decides a change of the crate `name` on `current` (the crate as the caller read it)
    /// and commits it at that revision. When a concurrent change wins, the crate is read
    /// again and the change decided again, up to [`MAX_CHANGE_ATTEMPTS`] times (then the
    /// conflict becomes a 503 to retry). After a commit the rendered index file is
    /// invalidated. Returns the answer and whether a change was committed.
    pub(super) async fn decide_and_change<T>(
        &self,
        registry: &str,
        name: &str,
        actor: &str,
        mut current: Option<CrateRecord>,
        mut decide: impl FnMut(Option<&CrateRecord>) -> RegistryResult<Decision<T>>,
    ) -> RegistryResult<(T, bool)> {
        let canonical = canonical_name(name);
        let mut attempts = 0;
        loop {
            let (change, answer) = match decide(current.as_ref())? {
                Decision::Keep(answer) => return Ok((answer, false)),
                Decision::Change(change, answer) => (change, answer),
            };
            let expected = current.as_ref().map(|r| r.revision);
            // The commit and the invalidation run in their own task: should the client go away
            // (dropping this request) while the change is committing, the cached index file is
            // still dropped after the commit, never left showing the crate as it was.
            let committed = {
                let (meta, reads, outbox) = (self.meta.clone(), self.reads.clone(), self.outbox.clone());
                let (registry, name, canonical) = (registry.to_owned(), name.to_owned(), canonical.clone());
                let actor = actor.to_owned();
                tokio::spawn(async move {
                    // The webhook event is written in the change's transaction (the outbox).
                    let done = meta
                        .change_crate_as(&registry, &canonical, expected, &change, &actor)
                        .await;
                    if done.is_ok() {
                        reads.invalidate(&registry, &name);
                        outbox.notify_one();
                    }
                    done
                })
                .await
                .map_err(|e| StoreError::Io(format!("the change task failed: {e}")))?
            };
            match committed {
                Ok(_) => return Ok((answer, true)),
                Err(StoreError::Conflict(why)) if attempts < MAX_CHANGE_ATTEMPTS => {
                    attempts += 1;
                    tracing::debug!(
                        registry,
                        krate.name = name,
                        why,
                        "a concurrent change of the crate won; deciding again"
                    );
                    current = self.load_crate(registry, name).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Yanks (`yanked = true`) or unyanks a version on behalf of `who` (authorised for
    /// `yank` on the hosted `registry`). Returns `{"ok":true}`.
    pub async fn set_yanked(
        &self,
        registry: &str,
        who: &Principal,
        name: &str,
        version: &str,
        yanked: bool,
    ) -> RegistryResult<Value> {
        check_name_and_version(name, Some(version))?;
        let current = self.load_crate(registry, name).await?;
        let (krate, changed) = self
            .decide_and_change(registry, name, &who.user, current, |cur| {
                let rec = owned(cur, registry, name, who)?;
                let i = find_version(rec, version).ok_or_else(|| {
                    RegistryError::NotFound(format!("crate `{}` has no version `{version}`", rec.name))
                })?;
                if rec.versions[i].line.yanked == yanked {
                    return Ok(Decision::Keep(rec.name.clone()));
                }
                let vers = rec.versions[i].line.vers.clone();
                Ok(Decision::Change(
                    CrateChange::SetYanked { vers, yanked },
                    rec.name.clone(),
                ))
            })
            .await?;
        if changed {
            tracing::info!(registry, krate.name = %krate, krate.version = %version, yanked, user = %who.user, "yank state changed");
        }
        Ok(json!({"ok": true}))
    }

    /// `GET .../owners` (read access checked by the caller): `{"users":[{"id","login","name"}]}`.
    pub async fn owners(&self, registry: &str, name: &str) -> RegistryResult<Value> {
        check_name_and_version(name, None)?;
        let current = self.load_crate(registry, name).await?;
        let rec = existing(current.as_ref(), registry, name)?;
        let mut users = Vec::new();
        for login in &rec.owners {
            let user = self.meta.get_user(login).await?;
            users.push(json!({
                "id": user.as_ref().map_or(0, |u| u.id),
                "login": login,
                "name": user.and_then(|u| u.name),
            }));
        }
        Ok(json!({ "users": users }))
    }

    /// `PUT`/`DELETE .../owners` with `{"users":[logins]}` on behalf of `who`. Returns
    /// `{"ok":true,"msg":...}`.
    pub async fn change_owners(
        &self,
        registry: &str,
        who: &Principal,
        name: &str,
        logins: Vec<String>,
        add: bool,
    ) -> RegistryResult<Value> {
        self.catalog.hosted(registry, "changing owners")?;
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
        // Users are looked up before the crate is read: they are not part of the decision
        // the store checks at commit.
        if add {
            for login in &logins {
                if self.meta.get_user(login).await?.is_none() {
                    return Err(RegistryError::NotFound(format!(
                        "there is no user `{login}`; an administrator can create it with `cargohold user add {login}`"
                    )));
                }
            }
        }
        let current = self.load_crate(registry, name).await?;
        let ((krate, msg), _) = self
            .decide_and_change(registry, name, &who.user, current, |cur| {
                let rec = owned(cur, registry, name, who)?;
                let (owners, msg) = owners_after(rec, &logins, add)?;
                Ok(Decision::Change(
                    CrateChange::SetOwners(owners),
                    (rec.name.clone(), msg),
                ))
            })
            .await?;
        tracing::info!(registry, krate.name = %krate, user = %who.user, add, count = logins.len(), "owners changed");
        Ok(json!({"ok": true, "msg": msg}))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::index::IndexLine;
    use crate::store::VersionRecord;

    /// A crate `foo` with these (version, yanked) pairs.
    pub(crate) fn record(versions: &[(&str, bool)]) -> CrateRecord {
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
        let r = record(&[("1.0.0", false), ("2.0.0+b5", false)]);
        assert_eq!(find_version(&r, "1.0.0"), Some(0));
        assert_eq!(find_version(&r, "2.0.0+b5"), Some(1));
        assert_eq!(find_version(&r, "2.0.0"), Some(1));
        assert_eq!(find_version(&r, "2.0.0+other"), None);
        assert_eq!(find_version(&r, "3.0.0"), None);
        assert_eq!(find_version(&r, "junk"), None);
    }
}
