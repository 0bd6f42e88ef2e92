//! Strong ETags for index files and `If-None-Match` matching.

use sha2::{Digest, Sha256};

/// A strong ETag: the quoted hex SHA-256 of the body (visible ASCII, as cargo requires).
pub fn strong_etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// Whether an `If-None-Match` header value matches `etag` (weak comparison, as RFC 9110 asks
/// for `If-None-Match`; `*` matches anything; lists are comma-separated).
pub fn if_none_match(header: &str, etag: &str) -> bool {
    // What cargo sends back: exactly the ETag it was given (checked on every 304).
    if header == etag {
        return true;
    }
    let want = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_quoted_ascii_and_content_bound() {
        let a = strong_etag(b"one");
        assert!(a.starts_with('"') && a.ends_with('"'));
        assert!(a.bytes().all(|b| b.is_ascii_graphic()));
        assert_ne!(a, strong_etag(b"two"));
        assert_eq!(a, strong_etag(b"one"));
    }

    #[test]
    fn matching() {
        let e = strong_etag(b"x");
        assert!(if_none_match(&e, &e));
        assert!(if_none_match(&format!("\"zzz\", W/{e}"), &e));
        assert!(if_none_match("*", &e));
        assert!(!if_none_match("\"zzz\"", &e));
        assert!(!if_none_match("", &e));
    }
}
