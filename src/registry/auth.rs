//! Tokens and scopes: generating secrets, hashing them, and deciding whether a presented
//! `Authorization` header may do an operation on a registry. Only SHA-256 hashes are stored.

use sha2::{Digest, Sha256};

use super::error::{RegistryError, RegistryResult};
use crate::store::{now_secs, TokenRecord};

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
