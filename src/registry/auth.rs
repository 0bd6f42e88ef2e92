//! Tokens and scopes: generating secrets, hashing them, and deciding whether a presented
//! `Authorization` header may do an operation on a registry ([`Auth`]). Only SHA-256 hashes
//! are stored.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::admin::ADMIN_USER;
use super::catalog::Catalog;
use super::error::{RegistryError, RegistryResult};
use super::sessions::{Session, Sessions};
use crate::cache::{FastHasher, MemCache};
use crate::config::RegistrySpec;
use crate::store::{now_secs, Metadata, TokenRecord};

/// What a token may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Publish,
    Yank,
    Owners,
    Admin,
}

impl Scope {
    /// All scopes, in display order.
    pub const ALL: [Scope; 5] = [Scope::Read, Scope::Publish, Scope::Yank, Scope::Owners, Scope::Admin];
    /// Scopes a token gets when none are asked for.
    pub const DEFAULT: [Scope; 4] = [Scope::Read, Scope::Publish, Scope::Yank, Scope::Owners];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Publish => "publish",
            Scope::Yank => "yank",
            Scope::Owners => "owners",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> RegistryResult<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            RegistryError::BadRequest(format!(
                "unknown scope `{s}`; scopes are read, publish, yank, owners and admin"
            ))
        })
    }
}

/// Who is calling, as established from a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub scopes: Vec<String>,
    /// `None` = every registry.
    pub registries: Option<Vec<String>>,
}

impl Principal {
    /// Whether the principal holds `scope` (admin holds all).
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| s == scope.as_str() || s == Scope::Admin.as_str())
    }

    /// Whether the principal is an administrator.
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == Scope::Admin.as_str())
    }

    /// Checks `scope` on `registry`; 403 with a message saying what is missing.
    pub fn require(&self, scope: Scope, registry: Option<&str>) -> RegistryResult<()> {
        if !self.has_scope(scope) {
            return Err(RegistryError::Forbidden(format!(
                "this token does not have the `{}` scope; create one with `cargohold token create --user {} --scope {}`",
                scope.as_str(),
                self.user,
                scope.as_str()
            )));
        }
        if let (Some(reg), Some(allowed)) = (registry, &self.registries) {
            if !allowed.iter().any(|r| r == reg) && !self.is_admin() {
                return Err(RegistryError::Forbidden(format!(
                    "this token is limited to registries {}; it cannot be used on `{reg}`",
                    allowed.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// The hex SHA-256 of a token secret (what the store keeps).
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random token secret: `chd_` and 40 alphanumerics (visible ASCII, as cargo requires).
pub fn new_secret() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!("chd_{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 40))
}

/// A new public token id.
pub fn new_token_id() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// The secret in an `Authorization` header: the whole value, or what follows `Bearer `.
pub fn secret_from_header(value: &str) -> &str {
    let v = value.trim();
    match v.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => v,
    }
}

/// Turns a stored token into a principal, refusing expired ones.
pub fn principal_of(token: TokenRecord) -> Option<Principal> {
    if token.expires.is_some_and(|e| e <= now_secs()) {
        return None;
    }
    Some(Principal {
        user: token.user,
        scopes: token.scopes,
        registries: token.registries,
    })
}

/// Who may do what: resolves `Authorization` headers to principals (token hashes in the
/// metadata store, or the environment's admin token) and checks them against the registries
/// of the catalog. Every check that needs no request body lives here, so a write is refused
/// before its body is read.
pub struct Auth {
    meta: Arc<dyn Metadata>,
    catalog: Arc<Catalog>,
    /// Hash of the admin token given by the environment, if any.
    env_admin_hash: Option<String>,
    /// Tokens found in the store, by hash, for [`TOKEN_CACHE_TTL`]: an authenticated request
    /// (every read of an `auth_required` registry) costs no database query. Only tokens that
    /// exist are kept (an unknown one is asked for again, so a new token works at once);
    /// expiry is checked on every use; a revocation here empties it at once.
    tokens: MemCache<String, TokenRecord>,
    /// Bumped by every revocation before the cache is emptied: a lookup that read the store
    /// before a revocation drops what it cached if the counter moved meanwhile, so a revoked
    /// token can never be put back after the revocation returned.
    token_epoch: std::sync::atomic::AtomicU64,
    /// Signed-in browsers of the web interface.
    sessions: Sessions,
}

/// How long a token read from the store is trusted without asking again: the longest a
/// revocation made through another process sharing the store takes to apply here.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl Auth {
    pub fn new(meta: Arc<dyn Metadata>, catalog: Arc<Catalog>, env_admin_hash: Option<String>) -> Self {
        Auth {
            meta,
            catalog,
            env_admin_hash,
            tokens: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TOKEN_CACHE_TTL)
                .build_with_hasher(FastHasher::default()),
            token_epoch: std::sync::atomic::AtomicU64::new(0),
            sessions: Sessions::default(),
        }
    }

    /// Forgets every cached token (after a revocation).
    pub fn forget_tokens(&self) {
        self.token_epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.tokens.invalidate_all();
    }

    async fn token(&self, hash: &str) -> RegistryResult<Option<TokenRecord>> {
        use std::sync::atomic::Ordering;
        if let Some(t) = self.tokens.get(hash) {
            return Ok(Some(t));
        }
        let seen = self.token_epoch.load(Ordering::SeqCst);
        let found = self.meta.token_by_hash(hash).await?;
        if let Some(t) = &found {
            self.tokens.insert(hash.to_owned(), t.clone());
            // A revocation that ran during the query may have missed this insert; it bumped
            // the counter first, so the insert is undone here (and a later one sees no token).
            if self.token_epoch.load(Ordering::SeqCst) != seen {
                self.tokens.invalidate(hash);
            }
        }
        Ok(found)
    }

    /// The principal of a token by the hash of its secret: the environment's admin token, or a
    /// stored token that has not expired. `None` for anything else.
    pub async fn principal_by_hash(&self, hash: &str) -> RegistryResult<Option<Principal>> {
        if self.env_admin_hash.as_deref() == Some(hash) {
            return Ok(Some(Principal {
                user: ADMIN_USER.into(),
                scopes: vec!["admin".into()],
                registries: None,
            }));
        }
        Ok(self.token(hash).await?.and_then(principal_of))
    }

    /// Resolves an `Authorization` header to a principal. `Ok(None)` when there is no header.
    /// An unknown, revoked or expired token is a 401.
    pub async fn authenticate(
        &self,
        registry: Option<&str>,
        header: Option<&str>,
    ) -> RegistryResult<Option<Principal>> {
        let Some(header) = header else { return Ok(None) };
        let hash = hash_token(secret_from_header(header));
        match self.principal_by_hash(&hash).await? {
            Some(p) => Ok(Some(p)),
            None => Err(RegistryError::Unauthorized {
                message: "the token is not valid: it is unknown, revoked or expired; get a new one (see the registry's /me page)".into(),
                login_url: registry.map(|r| format!("{}/me", self.catalog.registry_root(r))),
            }),
        }
    }

    /// Signs a browser in with a token secret: a new session, or a 401 for a token that is
    /// unknown, revoked or expired.
    pub async fn sign_in(&self, secret: &str) -> RegistryResult<(String, Arc<Session>, Principal)> {
        let hash = hash_token(secret_from_header(secret));
        let who = self
            .principal_by_hash(&hash)
            .await?
            .ok_or_else(|| RegistryError::Unauthorized {
                message: "that token is not valid: it is unknown, revoked or expired".into(),
                login_url: None,
            })?;
        let (id, session) = self.sessions.create(hash);
        tracing::info!(user = %who.user, "signed in to the web interface");
        Ok((id, session, who))
    }

    /// The live session of a cookie value and its principal. A session whose token was
    /// revoked or expired meanwhile is ended here.
    pub async fn session(&self, id: &str) -> RegistryResult<Option<(Arc<Session>, Principal)>> {
        let Some(session) = self.sessions.get(id) else {
            return Ok(None);
        };
        match self.principal_by_hash(&session.token_hash).await? {
            Some(who) => Ok(Some((session, who))),
            None => {
                self.sessions.remove(id);
                Ok(None)
            }
        }
    }

    /// Ends a session.
    pub fn sign_out(&self, id: &str) {
        self.sessions.remove(id);
    }

    /// Like [`authenticate`](Self::authenticate) but a missing header is a 401 too.
    pub async fn require_principal(&self, registry: &str, header: Option<&str>) -> RegistryResult<Principal> {
        self.authenticate(Some(registry), header).await?.ok_or_else(|| {
            let me = format!("{}/me", self.catalog.registry_root(registry));
            RegistryError::Unauthorized {
                message: format!("this request needs a token; run `cargo login --registry {registry}` (see {me})"),
                login_url: Some(me),
            }
        })
    }

    /// The checks of a write (`scope` on a hosted `registry`) that need no request body: the
    /// registry exists and is hosted, the token is valid and holds `scope` for it.
    pub async fn authorize_write(
        &self,
        registry: &str,
        header: Option<&str>,
        scope: Scope,
        what: &str,
    ) -> RegistryResult<Principal> {
        self.catalog.hosted(registry, what)?;
        let who = self.require_principal(registry, header).await?;
        who.require(scope, Some(registry))?;
        Ok(who)
    }

    /// Enforces read access: free unless the registry is `auth_required`, then a token with
    /// `read` scope for this registry. A hosted registry that merges `auth_required` proxies
    /// also needs `read` on each of them: a merged view never shows a client what the client
    /// could not read from the proxy itself (a token limited to some registries does not
    /// reach others through it, and anonymous clients never see a private proxy).
    pub async fn authorize_read(&self, reg: &RegistrySpec, header: Option<&str>) -> RegistryResult<()> {
        if self.read_is_free(reg) {
            return Ok(());
        }
        let who = self.require_principal(&reg.name, header).await?;
        self.read_allowed(reg, &who)
    }

    /// Whether reading `reg` needs no token at all.
    fn read_is_free(&self, reg: &RegistrySpec) -> bool {
        !reg.auth_required && self.catalog.guarded_upstreams(reg).is_empty()
    }

    /// The checks of [`authorize_read`](Self::authorize_read) for a known principal.
    fn read_allowed(&self, reg: &RegistrySpec, who: &Principal) -> RegistryResult<()> {
        if reg.auth_required {
            who.require(Scope::Read, Some(&reg.name))?;
        }
        for up in &self.catalog.guarded_upstreams(reg) {
            who.require(Scope::Read, Some(up)).map_err(|e| {
                RegistryError::Forbidden(format!(
                    "registry `{}` merges `{up}`, which needs a token with `read` on `{up}`: {e}",
                    reg.name
                ))
            })?;
        }
        Ok(())
    }

    /// Whether a visitor (`None`: anonymous) may read `reg`: the same rule as
    /// [`authorize_read`](Self::authorize_read), for the web interface.
    pub fn may_read(&self, reg: &RegistrySpec, who: Option<&Principal>) -> bool {
        self.read_is_free(reg) || who.is_some_and(|w| self.read_allowed(reg, w).is_ok())
    }

    /// Resolves the header and requires the admin scope.
    pub async fn require_admin(&self, header: Option<&str>) -> RegistryResult<Principal> {
        let who = self
            .authenticate(None, header)
            .await?
            .ok_or_else(|| RegistryError::Unauthorized {
                message:
                    "the admin API needs an admin token (set CARGOHOLD_ADMIN_TOKEN, or read <data_dir>/admin-token)"
                        .into(),
                login_url: None,
            })?;
        who.require(Scope::Admin, None)?;
        Ok(who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms() {
        assert_eq!(secret_from_header("abc"), "abc");
        assert_eq!(secret_from_header("Bearer abc"), "abc");
        assert_eq!(secret_from_header("bearer  abc "), "abc");
    }

    #[test]
    fn secrets_are_visible_ascii_and_distinct() {
        let a = new_secret();
        assert!(a.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert_ne!(a, new_secret());
        assert_eq!(hash_token(&a).len(), 64);
    }

    #[test]
    fn scopes_and_registries() {
        let p = Principal {
            user: "a".into(),
            scopes: vec!["read".into()],
            registries: Some(vec!["x".into()]),
        };
        assert!(p.require(Scope::Read, Some("x")).is_ok());
        assert!(matches!(
            p.require(Scope::Publish, Some("x")),
            Err(RegistryError::Forbidden(_))
        ));
        assert!(matches!(
            p.require(Scope::Read, Some("y")),
            Err(RegistryError::Forbidden(_))
        ));
        let admin = Principal {
            user: "r".into(),
            scopes: vec!["admin".into()],
            registries: None,
        };
        assert!(admin.require(Scope::Yank, Some("y")).is_ok());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = TokenRecord {
            id: "i".into(),
            hash: "h".into(),
            user: "u".into(),
            name: "n".into(),
            scopes: vec![],
            registries: None,
            expires: Some(1),
            created: 0,
        };
        assert!(principal_of(t.clone()).is_none());
        assert!(principal_of(TokenRecord { expires: None, ..t }).is_some());
    }
}
