//! Browser sessions of the web interface ([`Sessions`]), owned by [`Auth`](super::auth::Auth).
//!
//! Signing in with a token makes a session: a random id (the cookie's value) mapped, in this
//! process's memory, to the SHA-256 of the token and a per-session CSRF token. The token's
//! secret is never kept. Every request resolves the session's token hash through `Auth` again,
//! so a revoked or expired token ends its sessions at once (a revocation made by another node
//! arrives through the store's change feed, which drops the cached tokens). Signing out deletes
//! the session here.
//!
//! Sessions live in memory: on several nodes behind a load balancer a session is known only on
//! the node that made it (use sticky sessions, or sign in again), and a restart ends them all.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cache::{FastHasher, MemCache};

/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// A session ends this long after signing in, used or not.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Hex SHA-256 of the token signed in with.
    pub token_hash: String,
    /// The token every form of this session carries (compared in constant time).
    pub csrf: String,
}

/// The sessions of this process, by the SHA-256 of their id (a memory dump or a log line of a
/// key does not give a usable cookie).
pub struct Sessions {
    map: MemCache<String, Arc<Session>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            map: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(SESSION_IDLE)
                .time_to_live(SESSION_LIFETIME)
                .build_with_hasher(FastHasher::default()),
        }
    }
}

/// 32 random bytes, hex: a session id or a CSRF token.
pub fn random_hex32() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// Equality that takes the same time wherever the first difference is (CSRF tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// A new session for a token (by hash); returns its id.
    pub fn create(&self, token_hash: String) -> (String, Arc<Session>) {
        let id = random_hex32();
        let s = Arc::new(Session {
            token_hash,
            csrf: random_hex32(),
        });
        self.map.insert(key(&id), s.clone());
        (id, s)
    }

    /// The session of a cookie value, if it is live.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        // A cookie value is ours only if it has the shape we hand out.
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.map.get(&key(id))
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.map.invalidate(&key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_get_remove() {
        let s = Sessions::default();
        let (id, sess) = s.create("h".into());
        assert_eq!(s.get(&id).as_deref(), Some(&*sess));
        assert_ne!(sess.csrf, id);
        assert!(s.get("nope").is_none());
        assert!(s.get(&"g".repeat(64)).is_none());
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn constant_time_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
