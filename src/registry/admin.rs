//! Administration ([`Admin`]): registry definitions, users, tokens, and the first-start admin
//! token. Every call here needs a principal with the `admin` scope (checked by the caller,
//! [`Auth::require_admin`](super::auth::Auth::require_admin)).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{hash_token, new_secret, new_token_id, Scope};
use super::catalog::Catalog;
use super::error::{RegistryError, RegistryResult};
use super::reads::Reads;
use crate::cache::index_cache::IndexCache;
use crate::config::{merge_exposure, units, RegistryKind, RegistrySpec, Shadow};
use crate::store::{now_secs, Metadata, TokenRecord};

/// Login of the built-in administrator.
pub const ADMIN_USER: &str = "admin";
/// File (in the data dir) holding the generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// A partial update of a registry (admin API `PATCH`); absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryPatch {
    pub description: Option<String>,
    pub labels: Option<Vec<String>>,
    pub auth_required: Option<bool>,
    pub upstream: Option<String>,
    pub offline: Option<bool>,
    pub prune_index: Option<bool>,
    pub index_ttl_secs: Option<u64>,
    pub negative_ttl_secs: Option<u64>,
    pub upstream_timeout_secs: Option<u64>,
    pub upstream_concurrency: Option<u32>,
    pub upstream_deadline_secs: Option<u64>,
    /// A PEM file of extra roots for the upstream; `""` removes it.
    pub ca_file: Option<std::path::PathBuf>,
    pub upstreams: Option<Vec<String>>,
    pub shadow: Option<Shadow>,
    pub allow_upstream_names: Option<bool>,
    /// Hosted: the licence policy; `[]` removes it.
    pub allowed_licenses: Option<Vec<String>>,
    pub allow_license_file_only: Option<bool>,
    /// `off`, `flag` or `deny`.
    pub advisories: Option<crate::config::AdvisoryMode>,
    /// Advisory ids ignored here; `[]` empties the list.
    pub advisories_allow: Option<Vec<String>>,
}

/// Body of `POST /-/api/v1/tokens`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub user: String,
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub registries: Option<Vec<String>>,
    /// A duration from now (`90d`) or an RFC 3339 time.
    pub expires: Option<String>,
}

/// The login rule, quoted in errors.
pub const LOGIN_RULE: &str =
    "a login is 1-64 characters: ASCII letters, digits, `_`, `.` or `-`, starting with a letter or digit";

pub(crate) fn check_login(login: &str) -> RegistryResult<()> {
    let mut chars = login.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && login.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadRequest(format!(
            "invalid login `{login}`: {LOGIN_RULE}"
        )))
    }
}

/// An expiry as unix seconds: a duration from now or an RFC 3339 time, in the future.
fn parse_expiry(s: &str) -> RegistryResult<u64> {
    let now = now_secs();
    let at = if let Ok(d) = units::parse_duration(s) {
        now.checked_add(d.as_secs())
            .ok_or_else(|| RegistryError::BadRequest(format!("the expiry `{s}` is too far in the future")))?
    } else {
        humantime::parse_rfc3339_weak(s)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .ok_or_else(|| {
                RegistryError::BadRequest(format!(
                    "`{s}` is neither a duration (e.g. 90d) nor a date (e.g. 2027-01-31T00:00:00Z)"
                ))
            })?
    };
    if at <= now {
        return Err(RegistryError::BadRequest(format!(
            "the expiry `{s}` is not in the future; a token must expire later than now"
        )));
    }
    Ok(at)
}

fn token_json(t: &TokenRecord) -> Value {
    json!({
        "id": t.id, "user": t.user, "name": t.name, "scopes": t.scopes,
        "registries": t.registries, "expires": t.expires, "created": t.created,
    })
}

/// Where the cluster's admin token comes from (see [`Admin::bootstrap_admin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminToken {
    /// `CARGOHOLD_ADMIN_TOKEN`.
    Env,
    /// The generated token in this file.
    File(std::path::PathBuf),
    /// The generated token in this file was revoked; no bootstrap token is in use.
    Revoked(std::path::PathBuf),
    /// The store already holds an admin token (another node's, or `CARGOHOLD_ADMIN_TOKEN`'s
    /// from elsewhere): this node made none of its own.
    InStore,
}

/// The id under which `CARGOHOLD_ADMIN_TOKEN`'s hash is stored: one per cluster.
pub const CLUSTER_ADMIN_TOKEN_ID: &str = "cluster-admin";
/// The id of the token generated on a first start without `CARGOHOLD_ADMIN_TOKEN`: a fixed id,
/// so two nodes starting at once on an empty store cannot both make one.
pub const BOOTSTRAP_TOKEN_ID: &str = "bootstrap-admin";
/// This node's record of the registry definitions it applied from its config file (see
/// [`Admin::apply_configured`]).
pub const APPLIED_REGISTRIES_FILE: &str = "applied-registries.json";

/// Registry definitions (through the store, then a catalog reload), users and tokens.
pub struct Admin {
    pub(super) meta: Arc<dyn Metadata>,
    pub(super) catalog: Arc<Catalog>,
    pub(super) reads: Arc<Reads>,
    /// The upstream index cache, cleared of a registry's files when it is created or deleted.
    pub(super) index: IndexCache,
    /// The hash of `CARGOHOLD_ADMIN_TOKEN`, if set (then none is generated).
    pub(super) env_admin_hash: Option<String>,
}

impl Admin {
    /// Makes sure the admin user exists and an admin token is available: the environment's, or
    /// one generated on first start into `<data_dir>/admin-token` (mode 0600).
    ///
    /// The token is stored before its file is written, so a token file whose token is not in
    /// the store was revoked (or the store was wiped): it is never stored again, and the start
    /// logs how to get a new one. A revoked bootstrap token stays revoked across restarts.
    ///
    /// Several nodes on one store have one admin token: `CARGOHOLD_ADMIN_TOKEN`, set on every
    /// node, its hash stored as token `cluster-admin` by the first node. A node whose variable
    /// holds another token refuses to start. A node without the variable makes no token of its
    /// own when the store already holds an admin token.
    pub async fn bootstrap_admin(&self, data_dir: &Path) -> RegistryResult<AdminToken> {
        if self.meta.get_user(ADMIN_USER).await?.is_none() {
            self.meta.create_user(ADMIN_USER, Some("Administrator".into())).await?;
        }
        if let Some(hash) = &self.env_admin_hash {
            for _ in 0..4 {
                let tokens = self.meta.tokens().await?;
                match tokens.iter().find(|t| t.id == CLUSTER_ADMIN_TOKEN_ID) {
                    Some(t) if t.hash == *hash => return Ok(AdminToken::Env),
                    // One node owns an embedded store: its variable changed, which is how its
                    // admin token is rotated.
                    Some(_) if !self.meta.shared() => {
                        self.meta.delete_token(CLUSTER_ADMIN_TOKEN_ID).await?;
                        tracing::info!("CARGOHOLD_ADMIN_TOKEN changed: the stored admin token is replaced by the new one");
                        continue;
                    }
                    Some(_) => {
                        return Err(RegistryError::Conflict(format!(
                            "CARGOHOLD_ADMIN_TOKEN is not this cluster's admin token: the store holds the hash of another one (token `{CLUSTER_ADMIN_TOKEN_ID}`). Set the same value on every node that shares the store; to change it, revoke the old one (`cargohold token revoke {CLUSTER_ADMIN_TOKEN_ID}`), then restart the nodes with the new value"
                        )))
                    }
                    // The variable holds the secret of a token the store already has under
                    // another id: typically the token this node generated on its first start,
                    // exported for the CLI (`export CARGOHOLD_ADMIN_TOKEN=$(cat …/admin-token)`)
                    // in the shell that then starts the daemon again. An admin token is that
                    // admin token; any other is a mistake the start names.
                    None if tokens.iter().any(|t| t.hash == *hash) => {
                        let t = tokens.iter().find(|t| t.hash == *hash).expect("just found");
                        let admin = t.scopes.iter().any(|s| s == Scope::Admin.as_str());
                        let live = t.expires.is_none_or(|e| e > now_secs());
                        if admin && live && t.registries.is_none() {
                            tracing::info!(token = %t.id, "CARGOHOLD_ADMIN_TOKEN is the stored admin token `{}`", t.id);
                            return Ok(AdminToken::Env);
                        }
                        return Err(RegistryError::Conflict(format!(
                            "CARGOHOLD_ADMIN_TOKEN holds the secret of token `{}` of user `{}`, which is not an unexpired admin token of every registry; set it to an admin token (or unset it to use {})",
                            t.id,
                            t.user,
                            data_dir.join(ADMIN_TOKEN_FILE).display()
                        )));
                    }
                    None => {
                        let stored = self
                            .meta
                            .put_token(&TokenRecord {
                                id: CLUSTER_ADMIN_TOKEN_ID.into(),
                                hash: hash.clone(),
                                user: ADMIN_USER.into(),
                                name: "cluster admin token (CARGOHOLD_ADMIN_TOKEN)".into(),
                                scopes: vec![Scope::Admin.as_str().into()],
                                registries: None,
                                expires: None,
                                created: now_secs(),
                            })
                            .await;
                        match stored {
                            Ok(()) => return Ok(AdminToken::Env),
                            // Another node stored it meanwhile: compare with that one.
                            Err(crate::store::StoreError::Conflict(_)) => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            return Err(RegistryError::Unavailable(
                "cannot store the cluster's admin token: the store kept changing; start again".into(),
            ));
        }
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        let io_err = |e: std::io::Error| {
            RegistryError::Store(crate::store::StoreError::Io(format!(
                "cannot write {}: {e}",
                path.display()
            )))
        };
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => {
                if self.meta.token_by_hash(&hash_token(s.trim())).await?.is_some() {
                    return Ok(AdminToken::File(path));
                }
                tracing::warn!(
                    path = %path.display(),
                    "the bootstrap admin token in this file was revoked; it stays revoked. Use another admin token, set CARGOHOLD_ADMIN_TOKEN, or delete the file to have a new one generated at the next start (if the store then holds no other admin token)"
                );
                Ok(AdminToken::Revoked(path))
            }
            _ => {
                // Another node (or CARGOHOLD_ADMIN_TOKEN elsewhere) gave the store an admin
                // token: a second, competing one would be a secret nobody else knows of.
                let now = now_secs();
                let held =
                    self.meta.tokens().await?.into_iter().any(|t| {
                        t.scopes.iter().any(|s| s == Scope::Admin.as_str()) && t.expires.is_none_or(|e| e > now)
                    });
                if held {
                    tracing::warn!(
                        "the store already holds an admin token (another node's, or CARGOHOLD_ADMIN_TOKEN's); this node made none: set CARGOHOLD_ADMIN_TOKEN to the cluster's admin token on every node"
                    );
                    return Ok(AdminToken::InStore);
                }
                let secret = new_secret();
                let stored = self
                    .meta
                    .put_token(&TokenRecord {
                        id: BOOTSTRAP_TOKEN_ID.into(),
                        hash: hash_token(&secret),
                        user: ADMIN_USER.into(),
                        name: "bootstrap admin token".into(),
                        scopes: vec![Scope::Admin.as_str().into()],
                        registries: None,
                        expires: None,
                        created: now_secs(),
                    })
                    .await;
                match stored {
                    Ok(()) => {}
                    // A node starting at the same moment made it: this one makes none.
                    Err(crate::store::StoreError::Conflict(_)) => return Ok(AdminToken::InStore),
                    Err(e) => return Err(e.into()),
                }
                write_private(&path, &secret).map_err(io_err)?;
                Ok(AdminToken::File(path))
            }
        }
    }

    /// Problems with a spec in the context of the other registries.
    fn check_spec(&self, spec: &RegistrySpec) -> RegistryResult<()> {
        let mut problems: Vec<String> = spec.problems("registry").into_iter().map(|p| p.message).collect();
        let regs = self.catalog.registries();
        // A proxy made `auth_required` must not be merged by a registry readable without a token.
        for hosted in regs
            .values()
            .filter(|r| r.name != spec.name && r.upstreams.contains(&spec.name))
        {
            problems.extend(merge_exposure(hosted, spec));
        }
        for up in &spec.upstreams {
            match regs.get(up) {
                Some(u) if u.kind == RegistryKind::Proxy => problems.extend(merge_exposure(spec, u)),
                Some(_) => problems.push(format!(
                    "upstream `{up}` is a hosted registry; upstreams must be proxy registries"
                )),
                None => problems.push(format!("upstream `{up}` does not exist")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RegistryError::BadRequest(problems.join("; ")))
        }
    }

    /// Says plainly, in the log, what `shadow = "version"` means for a registry that has it.
    pub fn warn_about_shadow_version(&self) {
        for r in self.catalog.registries().values() {
            if r.shadow == Shadow::Version && !r.upstreams.is_empty() {
                tracing::warn!(
                    registry = %r.name,
                    upstreams = %r.upstreams.join(","),
                    "shadow = \"version\": anyone who publishes a crate of the same name to an upstream adds versions to your private crate of that name, and cargo may pick theirs; use shadow = \"crate\" unless every upstream is trusted"
                );
            }
        }
    }

    /// Applies registry definitions from the config file at start, without ever overwriting
    /// what another node or the admin API made. For each registry the file declares:
    ///
    /// - not in the store: created;
    /// - stored as the file says: nothing to do;
    /// - stored differently, as *this node* last applied it from its file (the node keeps that
    ///   record in `<data_dir>/applied-registries.json`): the file changed here since, and
    ///   nobody changed the registry since, so the file's definition is stored;
    /// - stored differently otherwise (another node's file, the admin API, or a node that never
    ///   applied it): the stored definition stays and is served, and the start logs which
    ///   fields differ and how to reconcile.
    ///
    /// The merge access rule is checked across the file's registries *and* those created at
    /// run time: a stored registry readable without a token may not merge a proxy the file
    /// makes `auth_required` (the start fails, saying which and how to fix it).
    pub async fn apply_configured(
        &self,
        specs: impl IntoIterator<Item = RegistrySpec>,
        data_dir: &Path,
    ) -> RegistryResult<()> {
        let specs: Vec<RegistrySpec> = specs.into_iter().collect();
        let record = data_dir.join(APPLIED_REGISTRIES_FILE);
        let mut applied: BTreeMap<String, RegistrySpec> = std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let stored: BTreeMap<String, RegistrySpec> = self
            .meta
            .registries()
            .await?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        // Decide first which of the file's definitions will be stored ...
        let mut writes = Vec::new();
        for spec in specs {
            match stored.get(&spec.name) {
                Some(s) if *s == spec => {}
                None => writes.push(spec.clone()),
                Some(s) if applied.get(&spec.name) == Some(s) => {
                    tracing::info!(registry = %spec.name, "the config file changed this registry; applying it");
                    writes.push(spec.clone());
                }
                Some(s) => {
                    tracing::warn!(
                        registry = %spec.name,
                        differs = %differing_fields(s, &spec).join(","),
                        "this node's config file defines this registry differently from the store (another node's config or the admin API changed it); serving the stored definition. Make the config files agree, or change it for every node with `cargohold registry update`"
                    );
                    continue;
                }
            }
            applied.insert(spec.name.clone(), spec);
        }
        // ... then check the merge access rule on exactly what will be served: the stored
        // definitions with those writes applied.
        let mut served = stored;
        served.extend(writes.iter().map(|s| (s.name.clone(), s.clone())));
        let problems: Vec<String> = served
            .values()
            .flat_map(|h| {
                h.upstreams
                    .iter()
                    .filter_map(|u| served.get(u))
                    .filter_map(|u| merge_exposure(h, u))
            })
            .collect();
        if !problems.is_empty() {
            return Err(RegistryError::BadRequest(format!(
                "{} (registries created at run time or changed through the admin API count too: change them with `cargohold registry update`, or change the config file)",
                problems.join("; ")
            )));
        }
        for spec in &writes {
            self.meta.put_registry_as(spec, None).await?;
        }
        if let Err(e) = write_json_atomically(&record, &applied) {
            tracing::warn!(path = %record.display(), error = %e, "cannot record the registries applied from the config file");
        }
        self.catalog.reload().await
    }

    /// Creates a registry; `actor` (a login) is recorded in its `registry.changed` event.
    pub async fn create_registry(&self, spec: RegistrySpec, actor: &str) -> RegistryResult<Arc<RegistrySpec>> {
        if self.catalog.registries().contains_key(&spec.name) {
            return Err(RegistryError::Conflict(format!(
                "a registry named `{}` already exists",
                spec.name
            )));
        }
        self.check_spec(&spec)?;
        // Whatever an earlier registry of this name left in the index cache is not this one's.
        self.index.clear(&spec.name).await;
        self.meta.put_registry_as(&spec, Some(actor)).await?;
        self.catalog.reload().await?;
        tracing::info!(registry = %spec.name, kind = ?spec.kind, "registry created");
        self.warn_about_shadow_version();
        self.catalog.registry(&spec.name)
    }

    /// Updates some fields of a registry, as `actor`.
    pub async fn update_registry(
        &self,
        name: &str,
        patch: RegistryPatch,
        actor: &str,
    ) -> RegistryResult<Arc<RegistrySpec>> {
        let mut spec = (*self.catalog.registry(name)?).clone();
        macro_rules! apply {
            ($($f:ident),*) => { $( if let Some(v) = patch.$f { spec.$f = v; } )* };
        }
        apply!(
            description,
            labels,
            auth_required,
            offline,
            prune_index,
            index_ttl_secs,
            negative_ttl_secs,
            upstream_timeout_secs,
            upstream_concurrency,
            upstream_deadline_secs,
            upstreams,
            shadow,
            allow_upstream_names,
            allowed_licenses,
            allow_license_file_only,
            advisories,
            advisories_allow
        );
        if patch.upstream.is_some() {
            spec.upstream = patch.upstream;
        }
        if let Some(ca) = patch.ca_file {
            spec.ca_file = (!ca.as_os_str().is_empty()).then_some(ca);
        }
        self.check_spec(&spec)?;
        self.meta.put_registry_as(&spec, Some(actor)).await?;
        self.catalog.reload().await?;
        self.reads.invalidate_registry(name);
        tracing::info!(registry = %name, "registry updated");
        self.warn_about_shadow_version();
        self.catalog.registry(name)
    }

    /// Deletes a registry. A hosted registry with crates needs `force`; a proxy that a hosted
    /// registry lists as upstream cannot be deleted.
    pub async fn delete_registry(&self, name: &str, force: bool, actor: &str) -> RegistryResult<()> {
        let spec = self.catalog.registry(name)?;
        if let Some(user) = self
            .catalog
            .registries()
            .values()
            .find(|r| r.upstreams.iter().any(|u| u == name))
        {
            return Err(RegistryError::Conflict(format!(
                "registry `{name}` is an upstream of `{}`; remove it from that registry's upstreams first",
                user.name
            )));
        }
        if spec.kind == RegistryKind::Hosted && !force {
            let n = self.meta.crate_count(name).await?;
            if n > 0 {
                return Err(RegistryError::Conflict(format!(
                    "registry `{name}` holds {n} crate(s); deleting it deletes them: pass force (CLI: --force) to confirm"
                )));
            }
        }
        self.meta.delete_registry_as(name, Some(actor)).await?;
        self.catalog.reload().await?;
        self.reads.invalidate_registry(name);
        // A deleted proxy's cached index files must not come back under a new registry of the
        // same name (which may have another upstream and other access rules).
        self.index.clear(name).await;
        tracing::info!(registry = %name, "registry deleted");
        Ok(())
    }

    /// Number of crates in a registry (for listings).
    pub async fn crate_count(&self, name: &str) -> RegistryResult<usize> {
        Ok(usize::try_from(self.meta.crate_count(name).await?).unwrap_or(usize::MAX))
    }

    /// Creates a user.
    pub async fn create_user(&self, login: &str, name: Option<String>) -> RegistryResult<Value> {
        check_login(login)?;
        let user = self
            .meta
            .create_user(login, name)
            .await?
            .ok_or_else(|| RegistryError::Conflict(format!("user `{login}` already exists")))?;
        tracing::info!(user = %login, "user created");
        Ok(json!({"id": user.id, "login": user.login, "name": user.name, "created": user.created}))
    }

    /// All users.
    pub async fn list_users(&self) -> RegistryResult<Value> {
        let users = self.meta.users().await?;
        Ok(
            json!({"users": users.iter().map(|u| json!({"id": u.id, "login": u.login, "name": u.name, "created": u.created})).collect::<Vec<_>>()}),
        )
    }

    /// Creates a token; the secret is in the answer and nowhere else.
    pub async fn create_token(&self, req: NewToken) -> RegistryResult<Value> {
        if self.meta.get_user(&req.user).await?.is_none() {
            return Err(RegistryError::NotFound(format!(
                "there is no user `{}`; create it first with `cargohold user add {}`",
                req.user, req.user
            )));
        }
        let scopes = match req.scopes {
            None => Scope::DEFAULT.iter().map(|s| s.as_str().to_owned()).collect(),
            Some(list) if list.is_empty() => {
                return Err(RegistryError::BadRequest("a token needs at least one scope".into()))
            }
            Some(list) => list
                .iter()
                .map(|s| Scope::parse(s.trim()).map(|s| s.as_str().to_owned()))
                .collect::<RegistryResult<Vec<_>>>()?,
        };
        if let Some(regs) = &req.registries {
            if regs.is_empty() {
                return Err(RegistryError::BadRequest(
                    "`registries` is empty, which would allow no registry; leave it out for a token valid on every registry".into(),
                ));
            }
            if scopes.iter().any(|s| s == Scope::Admin.as_str()) {
                return Err(RegistryError::BadRequest(
                    "an `admin` token cannot be limited to registries: admin covers every registry and the admin API. Create it without registries, or without the admin scope".into(),
                ));
            }
            for r in regs {
                self.catalog.registry(r)?;
            }
        }
        let expires = req.expires.as_deref().map(parse_expiry).transpose()?;
        let secret = new_secret();
        let record = TokenRecord {
            id: new_token_id(),
            hash: hash_token(&secret),
            user: req.user,
            name: req.name.unwrap_or_else(|| "token".into()),
            scopes,
            registries: req.registries,
            expires,
            created: now_secs(),
        };
        self.meta.put_token(&record).await?;
        tracing::info!(user = %record.user, token.id = %record.id, scopes = ?record.scopes, "token created");
        let mut out = token_json(&record);
        out["token"] = json!(secret);
        Ok(out)
    }

    /// All tokens (never their secrets), optionally of one user.
    pub async fn list_tokens(&self, user: Option<&str>) -> RegistryResult<Value> {
        let tokens = self.meta.tokens().await?;
        let list: Vec<Value> = tokens
            .iter()
            .filter(|t| user.is_none_or(|u| t.user == u))
            .map(token_json)
            .collect();
        Ok(json!({"tokens": list}))
    }

    /// Revokes a token by id.
    pub async fn revoke_token(&self, id: &str) -> RegistryResult<()> {
        if self.meta.delete_token(id).await? {
            tracing::info!(token.id = %id, "token revoked");
            Ok(())
        } else {
            Err(RegistryError::NotFound(format!("no token with id `{id}`")))
        }
    }
}

/// Writes a private (0600) file atomically: a temp file, fsynced, renamed over `path`, and the
/// directory fsynced; a crash leaves the old file or the new one, never a torn one.
/// The top-level fields in which two definitions differ.
fn differing_fields(a: &RegistrySpec, b: &RegistrySpec) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(a).unwrap_or_default(),
        serde_json::to_value(b).unwrap_or_default(),
    );
    let mut keys: Vec<String> = a
        .as_object()
        .into_iter()
        .chain(b.as_object())
        .flat_map(|o| o.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(k) != b.get(k)).collect()
}

/// Writes `value` as JSON to `path` through a temp file and a rename.
fn write_json_atomically(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}", APPLIED_REGISTRIES_FILE, rand::random::<u32>()));
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{ADMIN_TOKEN_FILE}.{}", rand::random::<u32>()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins() {
        assert!(check_login("alice").is_ok());
        assert!(check_login("a.b-c_9").is_ok());
        assert!(check_login("").is_err());
        assert!(check_login("-a").is_err());
        assert!(check_login("a b").is_err());
    }

    #[test]
    fn expiry_forms() {
        assert!(parse_expiry("30d").unwrap() > now_secs());
        assert_eq!(parse_expiry("2030-01-01T00:00:00Z").unwrap(), 1_893_456_000);
        assert!(parse_expiry("someday").is_err());
    }
}
