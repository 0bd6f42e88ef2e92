//! `cargo publish`: every check of protocol.md §5.5, then an all-or-nothing commit (blob first,
//! durable; record second, durable; only then the 200).

use bytes::Bytes;
use semver::{Version, VersionReq};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::changes::{Changes, Decision};
use super::error::{RegistryError, RegistryResult};
use super::reads::UpstreamPresence;
use super::tarball::{self, TarballLimits};
use super::{Principal, Scope};
use crate::config::{RegistrySpec, Shadow};
use crate::index::license::LicensePolicy;
use crate::index::line::pubtime;
use crate::index::name::validate_dep_name;
use crate::index::publish_frame::{parse_frame, FrameError, NewCrate};
use crate::index::{validate_crate_name, IndexLine};
use crate::store::{CrateChange, CrateRecord, VersionRecord};

use crate::index::name::MAX_VERSION_LEN;
const MAX_DEPS: usize = 500;
const MAX_FEATURES: usize = 300;
const MAX_KEYWORDS: usize = 5;
const MAX_KEYWORD_LEN: usize = 20;
const MAX_CATEGORIES: usize = 5;

fn bad(msg: impl Into<String>) -> RegistryError {
    RegistryError::BadRequest(msg.into())
}

impl From<FrameError> for RegistryError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::JsonTooLarge { .. } | FrameError::CrateTooLarge { .. } => RegistryError::TooLarge(format!(
                "{e}; ask the registry administrator to raise `limits` in the config"
            )),
            _ => RegistryError::BadRequest(format!("malformed publish request: {e}")),
        }
    }
}

/// Checks the publish metadata on its own (before the tarball).
pub fn validate_metadata(meta: &NewCrate) -> RegistryResult<Version> {
    validate_crate_name(&meta.name).map_err(|e| bad(format!("invalid crate name: {e}")))?;
    if meta.vers.len() > MAX_VERSION_LEN {
        return Err(bad(format!("the version is longer than {MAX_VERSION_LEN} characters")));
    }
    let version =
        Version::parse(&meta.vers).map_err(|e| bad(format!("`{}` is not a valid semver version: {e}", meta.vers)))?;
    if meta.deps.len() > MAX_DEPS {
        return Err(bad(format!(
            "a crate may have at most {MAX_DEPS} dependencies; this one has {}",
            meta.deps.len()
        )));
    }
    for d in &meta.deps {
        validate_crate_name(&d.name)
            .or_else(|e| {
                if matches!(e, crate::index::name::NameError::Reserved(_)) {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| bad(format!("invalid dependency name: {e}")))?;
        if let Some(alias) = &d.explicit_name_in_toml {
            validate_dep_name(alias).map_err(|e| bad(format!("invalid dependency rename `{alias}`: {e}")))?;
        }
        VersionReq::parse(&d.version_req).map_err(|e| {
            bad(format!(
                "dependency `{}` has an invalid version requirement `{}`: {e}",
                d.name, d.version_req
            ))
        })?;
        if let Some(k) = &d.kind {
            if !matches!(k.as_str(), "normal" | "build" | "dev") {
                return Err(bad(format!("dependency `{}` has an unknown kind `{k}`", d.name)));
            }
        }
        if let Some(r) = &d.registry {
            let bare = r.strip_prefix("sparse+").unwrap_or(r);
            if !(bare.starts_with("https://") || bare.starts_with("http://") || bare.starts_with("file://")) {
                return Err(bad(format!(
                    "dependency `{}` names registry `{r}`, which is not an index URL",
                    d.name
                )));
            }
        }
    }
    if meta.features.len() > MAX_FEATURES {
        return Err(bad(format!("a crate may have at most {MAX_FEATURES} features")));
    }
    for (name, values) in &meta.features {
        let mut chars = name.chars();
        let ok_start = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_start || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.')) {
            return Err(bad(format!("invalid feature name `{name}`")));
        }
        if values.len() > MAX_FEATURES {
            return Err(bad(format!("feature `{name}` has more than {MAX_FEATURES} entries")));
        }
    }
    if let Some(rv) = &meta.rust_version {
        let parts: Vec<&str> = rv.split('.').collect();
        if parts.len() > 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad(format!(
                "`rust-version` must be a bare version like 1.74 or 1.74.1, not `{rv}`"
            )));
        }
    }
    if meta.keywords.len() > MAX_KEYWORDS {
        return Err(bad(format!("expected at most {MAX_KEYWORDS} keywords per crate")));
    }
    if let Some(k) = meta.keywords.iter().find(|k| k.len() > MAX_KEYWORD_LEN) {
        return Err(bad(format!(
            "keyword `{k}` is longer than {MAX_KEYWORD_LEN} characters"
        )));
    }
    if meta.categories.len() > MAX_CATEGORIES {
        return Err(bad(format!("expected at most {MAX_CATEGORIES} categories per crate")));
    }
    Ok(version)
}

/// Whether `existing` (an index version string) equals `new` ignoring build metadata.
fn same_release(existing: &str, new: &Version) -> bool {
    Version::parse(existing)
        .is_ok_and(|v| v.major == new.major && v.minor == new.minor && v.patch == new.patch && v.pre == new.pre)
}

impl Changes {
    /// Handles a publish body for the hosted `registry` on behalf of `who` (authorised for
    /// `publish` before the body was read). Returns cargo's success body.
    pub async fn publish(&self, registry: &str, who: &Principal, body: Bytes) -> RegistryResult<serde_json::Value> {
        let reg = self.catalog.hosted(registry, "publishing")?;
        who.require(Scope::Publish, Some(registry))?;

        let limits = self.catalog.limits();
        let frame = parse_frame(&body, limits.max_metadata_bytes, limits.max_crate_bytes)?;
        let meta: NewCrate = serde_json::from_slice(frame.json).map_err(|e| {
            bad(format!(
                "the publish metadata is not valid JSON of the expected shape: {e}"
            ))
        })?;
        let version = validate_metadata(&meta)?;
        // The licence policy, before the tarball is inspected and long before anything is
        // stored: a refused crate leaves no blob and no row.
        if let Some(policy) = LicensePolicy::new(&reg.allowed_licenses, reg.allow_license_file_only) {
            policy
                .check(registry, meta.license.as_deref(), meta.license_file.as_deref())
                .map_err(bad)?;
        }
        // Decompressing and hashing a crate of up to `max_crate_size` takes a while: off the
        // connection's thread, so an edge worker keeps serving its other connections meanwhile.
        let krate = body.slice_ref(frame.krate);
        let (name, vers) = (meta.name.clone(), meta.vers.clone());
        let tarball_limits = TarballLimits::new(limits.max_unpacked_bytes);
        let cksum = tokio::task::spawn_blocking(move || {
            tarball::inspect(&krate, &name, &vers, tarball_limits)
                .map(|_| hex::encode(Sha256::digest(&krate)))
                .map_err(|e| bad(format!("invalid crate file: {e}")))
        })
        .await
        .map_err(|e| RegistryError::Store(crate::store::StoreError::Io(format!("crate inspection failed: {e}"))))??;

        // Same-registry dependencies must exist here (locally, or upstream in a merged view).
        let own_urls = vec![self.catalog.index_url(registry)];
        let line = IndexLine::from_publish(&meta, cksum.clone(), &own_urls, pubtime(std::time::SystemTime::now()));
        for dep in line.deps.iter().filter(|d| d.registry.is_none()) {
            let real = dep.package.as_deref().unwrap_or(&dep.name);
            // An upstream that cannot be asked does not refuse the dependency: it may well be
            // there, and a missing one fails loudly at the consumer's resolution.
            let exists = self.load_crate(registry, real).await?.is_some_and(|r| r.name == real)
                || !matches!(
                    self.reads.upstream_presence(&reg, real).await?,
                    UpstreamPresence::Absent
                );
            if !exists {
                return Err(bad(format!(
                    "dependency `{real}` does not exist in registry `{registry}`; publish it first (or declare where it comes from with `registry = ...` in Cargo.toml)"
                )));
            }
        }

        // Decided on what is stored now; decided again below if a concurrent change wins.
        let prior = self.load_crate(registry, &meta.name).await?;
        check_publish_allowed(prior.as_ref(), &meta, &version, who)?;
        if prior.is_none() && !reg.allow_upstream_names {
            self.dependency_confusion_guard(&reg, &meta.name).await?;
        }

        // The blob is durable before the version names it: a crash in between leaves an
        // unreferenced blob (`cargohold gc`), never a visible version without bytes.
        let krate = body.slice_ref(frame.krate);
        self.blobs.put(krate.clone()).await?;

        // One transaction, decided by the database: the version is added at the crate's
        // revision read here, or the crate is created if it still does not exist. A
        // concurrent change (from this process or another) makes the store refuse; the
        // crate is read again and the publish decided again on what won.
        let version_record = VersionRecord {
            line,
            published_by: who.user.clone(),
        };
        self.decide_and_change(registry, &meta.name, &who.user, prior, |cur| {
            check_publish_allowed(cur, &meta, &version, who)?;
            let change = CrateChange::Publish {
                name: meta.name.clone(),
                version: version_record.clone(),
                description: meta.description.clone(),
                keywords: meta.keywords.clone(),
            };
            Ok(Decision::Change(change, ()))
        })
        .await?;
        // Garbage collection spares young blobs; should one have collected this blob anyway
        // (a publish slower than its grace period), it is written again before the 200.
        if !self.blobs.exists(&cksum).await? {
            tracing::warn!(registry, krate.name = %meta.name, "the blob of a publish was gone after its commit; writing it again");
            self.blobs.put(krate).await?;
        }
        tracing::info!(registry, krate.name = %meta.name, krate.version = %meta.vers, user = %who.user, "published");
        Ok(json!({"warnings": {"invalid_categories": [], "invalid_badges": [], "other": []}}))
    }

    /// Refuses a *new* crate name that exists in an upstream of the registry. When an upstream
    /// cannot be asked and has nothing cached for the name, what is safe depends on `shadow`:
    /// with `crate` (the default) the local crate hides every upstream version of its name,
    /// so no upstream code can ever be mixed into it: the publish goes ahead, logged. With
    /// `version` a same-named upstream crate would add its versions to the private one, so
    /// the guard will not publish blind: 503, saying what to do.
    async fn dependency_confusion_guard(&self, reg: &RegistrySpec, name: &str) -> RegistryResult<()> {
        let registry = &reg.name;
        match self.reads.upstream_presence(reg, name).await? {
            UpstreamPresence::Absent => Ok(()),
            UpstreamPresence::Found(up) => Err(RegistryError::Forbidden(format!(
                "a crate named `{name}` exists in upstream registry `{up}`; publishing a new crate under an upstream name is refused to prevent dependency confusion. Pick another name, or set `allow_upstream_names = true` on registry `{registry}`"
            ))),
            UpstreamPresence::Unknown(failed) => {
                let ups: Vec<String> = failed.iter().map(|(u, e)| format!("`{u}` ({e})")).collect();
                let ups = ups.join(", ");
                if reg.shadow == Shadow::Crate {
                    tracing::warn!(registry = %registry, krate.name = name, upstreams = %ups, "publishing a new crate without asking the unreachable upstreams whether they have the name; with shadow = \"crate\" the local crate hides every upstream version of it");
                    Ok(())
                } else {
                    Err(RegistryError::Unavailable(format!(
                        "cannot check whether upstream {ups} has a crate named `{name}`; registry `{registry}` uses shadow = \"version\", where a same-named upstream crate would add its versions to yours, so a new name is not published unchecked. Retry when the upstream is reachable, or have an administrator set `allow_upstream_names = true` on `{registry}`"
                    )))
                }
            }
        }
    }
}

fn check_publish_allowed(
    prior: Option<&CrateRecord>,
    meta: &NewCrate,
    version: &Version,
    who: &Principal,
) -> RegistryResult<()> {
    let Some(rec) = prior else { return Ok(()) };
    // Another spelling with `-` and `_` swapped is another name that collides: taken, whoever
    // asks. A spelling differing only in case is this crate: only its owners may publish, and
    // only they are told to retry with the exact spelling (a non-owner would only get a 403
    // on retrying).
    let same_crate = rec.name.eq_ignore_ascii_case(&meta.name);
    if !same_crate {
        return Err(RegistryError::Conflict(format!(
            "a crate named `{}` already exists; names are compared case-insensitively with `-` and `_` treated alike",
            rec.name
        )));
    }
    if !rec.owners.contains(&who.user) && !who.is_admin() {
        return Err(RegistryError::Forbidden(format!(
            "`{}` is not an owner of crate `{}`; an owner can add you with `cargo owner --add {} {}`",
            who.user, rec.name, who.user, rec.name
        )));
    }
    if rec.name != meta.name {
        return Err(bad(format!(
            "crate was previously named `{}`; publish it under that exact spelling",
            rec.name
        )));
    }
    if let Some(v) = rec.versions.iter().find(|v| same_release(&v.line.vers, version)) {
        return Err(RegistryError::Conflict(if v.line.vers == meta.vers {
            format!("crate version `{}@{}` is already uploaded", meta.name, meta.vers)
        } else {
            format!(
                "crate version `{}@{}` conflicts with the uploaded `{}` (versions may not differ only in build metadata)",
                meta.name, meta.vers, v.line.vers
            )
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, vers: &str) -> NewCrate {
        serde_json::from_value(json!({
            "name": name, "vers": vers, "deps": [], "features": {}, "authors": [], "description": null,
            "documentation": null, "homepage": null, "readme": null, "readme_file": null, "keywords": [],
            "categories": [], "license": null, "license_file": null, "repository": null, "badges": {},
            "links": null, "rust_version": null
        }))
        .unwrap()
    }

    #[test]
    fn metadata_rules() {
        assert!(validate_metadata(&meta("ok", "1.0.0+build")).is_ok());
        assert!(validate_metadata(&meta("1bad", "1.0.0")).is_err());
        assert!(validate_metadata(&meta("ok", "1.0")).is_err());
        assert!(validate_metadata(&meta("ok", &format!("1.0.0-{}", "a".repeat(150)))).is_err());
        let mut m = meta("ok", "1.0.0");
        m.rust_version = Some(">=1.70".into());
        assert!(validate_metadata(&m).is_err());
        m.rust_version = Some("1.70".into());
        m.keywords = vec!["a".into(); 6];
        assert!(validate_metadata(&m).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Publish metadata: arbitrary bytes, and a good document with one byte changed or any
        /// string in any field, are refused or accepted, never a panic.
        #[test]
        fn metadata_checks_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            pos in proptest::prelude::any::<usize>(),
            byte in proptest::prelude::any::<u8>(),
            field in 0usize..6,
            value in proptest::prelude::any::<String>(),
        ) {
            let mut good = json!({
                "name": "ok", "vers": "1.0.0", "deps": [{"name": "dep", "version_req": "^1", "features": [],
                "optional": false, "default_features": true, "target": null, "kind": "normal",
                "registry": null, "explicit_name_in_toml": "alias"}], "features": {"f": ["dep"]},
                "keywords": ["k"], "categories": [], "rust_version": "1.70", "description": null,
                "documentation": null, "homepage": null, "readme": null, "readme_file": null,
                "license": null, "license_file": null, "repository": null, "links": null
            });
            let v = serde_json::Value::String(value.clone());
            match field {
                0 => good["name"] = v,
                1 => good["vers"] = v,
                2 => good["deps"][0]["version_req"] = v,
                3 => good["deps"][0]["explicit_name_in_toml"] = v,
                4 => good["rust_version"] = v,
                _ => good["features"] = json!({ value: ["dep"] }),
            }
            let text = good.to_string().into_bytes();
            let i = pos % text.len();
            let mut mutated = text.clone();
            mutated[i] = byte;
            for input in [&bytes, &text, &mutated] {
                if let Ok(meta) = serde_json::from_slice::<NewCrate>(input) {
                    let _ = validate_metadata(&meta);
                }
            }
        }
    }

    #[test]
    fn build_metadata_does_not_make_a_new_release() {
        let v = Version::parse("1.0.0+b").unwrap();
        assert!(same_release("1.0.0", &v));
        assert!(same_release("1.0.0+a", &v));
        assert!(!same_release("1.0.1", &v));
        assert!(!same_release("1.0.0-rc1", &v));
    }
}
