//! `[store]`: where the private store lives. Unset, it is embedded under `data_dir` (SQLite and
//! blob files); `database = "postgres://..."` and `blobs = "s3://BUCKET/PREFIX"` move it to
//! shared engines so several nodes can serve one store. Credentials never appear here: the S3
//! keys come from the environment (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`), and a
//! database password, if the URL carries one, is redacted wherever the URL is shown.

use serde::{Serialize, Serializer};

use super::raw::RawStore;

/// Region when `[store.s3] region` is unset.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// A database URL. Shown (Debug, Serialize, print-config) with its password redacted; the
/// real text only through [`DatabaseUrl::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL as written, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// An S3-compatible bucket for the blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Endpoint of a non-AWS engine (`http(s)://host:port`); `None`: AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// Whether a plain `http://` endpoint is accepted.
    pub allow_http: bool,
}

impl S3Config {
    /// `s3://BUCKET/PREFIX`, as written in `blobs`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// The validated `[store]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreConfig {
    /// PostgreSQL; `None`: SQLite at `<data_dir>/store/registry.db`.
    pub database: Option<DatabaseUrl>,
    /// An S3 bucket; `None`: files under `<data_dir>/store/blobs`.
    pub s3: Option<S3Config>,
}

impl StoreConfig {
    /// Whether both halves are the embedded default.
    pub fn is_embedded(&self) -> bool {
        self.database.is_none() && self.s3.is_none()
    }
}

/// `url` with any password replaced by `***` (for errors and logs): the password of the
/// user-info part, and a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && !url[scheme + 3..at].contains('/') => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

/// Whether `name` follows the S3 bucket naming rules: 3-63 lowercase letters, digits, dots
/// and hyphens, starting and ending with a letter or digit.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&name.len()) {
        return Err(format!("bucket `{name}` must be 3 to 63 characters long"));
    }
    if !name.bytes().all(ok_char) || !edge(name.as_bytes().first()) || !edge(name.as_bytes().last()) {
        return Err(format!(
            "bucket `{name}` may hold only lowercase letters, digits, dots and hyphens, and must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// Validates `[store]`; every problem goes to `problem` with its key.
pub fn validate(raw: Option<RawStore>, problem: &mut dyn FnMut(&str, String)) -> StoreConfig {
    let Some(raw) = raw else {
        return StoreConfig::default();
    };
    let database = raw.database.and_then(|d| {
        let shown = redact_url(&d);
        let rest = d
            .strip_prefix("postgres://")
            .or_else(|| d.strip_prefix("postgresql://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !rest.starts_with('?') => Some(DatabaseUrl(d)),
            Some(_) => {
                problem(
                    "store.database",
                    format!("`{shown}` names no host (postgres://USER@HOST/DATABASE)"),
                );
                None
            }
            None => {
                problem(
                    "store.database",
                    format!("`{shown}` must be a postgres:// URL (leave it unset for SQLite under data_dir)"),
                );
                None
            }
        }
    });
    let s3_raw = raw.s3.unwrap_or_default();
    let s3 = match raw.blobs {
        None => {
            for (key, set) in [
                ("store.s3.endpoint", s3_raw.endpoint.is_some()),
                ("store.s3.region", s3_raw.region.is_some()),
                ("store.s3.allow_http", s3_raw.allow_http.is_some()),
            ] {
                if set {
                    problem(
                        key,
                        "only applies with blobs = \"s3://BUCKET/PREFIX\" in [store]".into(),
                    );
                }
            }
            None
        }
        Some(url) => parse_s3(&url, s3_raw, problem),
    };
    StoreConfig { database, s3 }
}

fn parse_s3(url: &str, raw: super::raw::RawS3, problem: &mut dyn FnMut(&str, String)) -> Option<S3Config> {
    let Some(rest) = url.strip_prefix("s3://") else {
        problem(
            "store.blobs",
            format!("`{url}` must be an s3://BUCKET/PREFIX URL (leave it unset for files under data_dir)"),
        );
        return None;
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_end_matches('/');
    let mut ok = true;
    if let Err(e) = check_bucket_name(bucket) {
        problem("store.blobs", e);
        ok = false;
    }
    if !prefix.is_empty()
        && !prefix.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        })
    {
        problem(
            "store.blobs",
            format!("prefix `{prefix}` must be `/`-separated names of letters, digits, `.`, `-` and `_`"),
        );
        ok = false;
    }
    let allow_http = raw.allow_http.unwrap_or(false);
    if let Some(e) = &raw.endpoint {
        let host = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://"));
        match host {
            None => {
                problem(
                    "store.s3.endpoint",
                    format!("`{e}` must start with http:// or https://"),
                );
                ok = false;
            }
            Some(h) if h.is_empty() || h.starts_with('/') || h.contains('@') => {
                problem(
                    "store.s3.endpoint",
                    format!("`{e}` must name a host (http(s)://HOST:PORT), without credentials"),
                );
                ok = false;
            }
            Some(_) if e.starts_with("http://") && !allow_http => {
                problem(
                    "store.s3.endpoint",
                    format!("`{e}` is plain http; set `allow_http = true` in [store.s3] to allow it"),
                );
                ok = false;
            }
            Some(_) => {}
        }
    }
    let region = raw.region.unwrap_or_else(|| DEFAULT_S3_REGION.to_owned());
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problem(
            "store.s3.region",
            format!("`{region}` is not a region name (letters, digits, `-`)"),
        );
        ok = false;
    }
    ok.then(|| S3Config {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        endpoint: raw.endpoint.map(|e| e.trim_end_matches('/').to_owned()),
        region,
        allow_http,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawS3;

    fn check(raw: RawStore) -> (StoreConfig, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let c = validate(Some(raw), &mut |k, m| problems.push((k.to_owned(), m)));
        (c, problems)
    }

    #[test]
    fn passwords_are_redacted_wherever_the_url_is_shown() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_url("sqlite:///a@b"), "sqlite:///a@b");
        assert_eq!(
            redact_url("postgres://db/x?user=u&password=hunter2&sslmode=require"),
            "postgres://db/x?user=u&password=***&sslmode=require"
        );
        let (c, p) = check(RawStore {
            database: Some("postgres://u:hunter2@db/x".into()),
            ..Default::default()
        });
        assert!(p.is_empty(), "{p:?}");
        let db = c.database.unwrap();
        assert_eq!(db.expose(), "postgres://u:hunter2@db/x");
        assert!(!format!("{db:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&db).unwrap().contains("hunter2"));
        let (_, p) = check(RawStore {
            database: Some("mysql://u:hunter2@db/x".into()),
            ..Default::default()
        });
        assert_eq!(p[0].0, "store.database");
        assert!(!p[0].1.contains("hunter2"), "{p:?}");
    }

    #[test]
    fn s3_urls_and_settings_are_checked_with_their_keys() {
        let (c, p) = check(RawStore {
            blobs: Some("s3://my-bucket/cargo/prod/".into()),
            s3: Some(RawS3 {
                endpoint: Some("http://127.0.0.1:7480/".into()),
                region: None,
                allow_http: Some(true),
            }),
            ..Default::default()
        });
        assert!(p.is_empty(), "{p:?}");
        let s3 = c.s3.unwrap();
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("my-bucket", "cargo/prod"));
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:7480"));
        assert_eq!(s3.region, DEFAULT_S3_REGION);
        assert_eq!(s3.url(), "s3://my-bucket/cargo/prod");

        for (blobs, endpoint, allow_http, key) in [
            ("file:///x", None, None, "store.blobs"),
            ("s3://AB", None, None, "store.blobs"),
            ("s3://bucket/../x", None, None, "store.blobs"),
            ("s3://bucket//x", None, None, "store.blobs"),
            ("s3://bucket", Some("ftp://x"), None, "store.s3.endpoint"),
            ("s3://bucket", Some("http://127.0.0.1:1"), None, "store.s3.endpoint"),
            ("s3://bucket", Some("https://k:s@host"), None, "store.s3.endpoint"),
        ] {
            let (c, p) = check(RawStore {
                blobs: Some(blobs.into()),
                s3: Some(RawS3 {
                    endpoint: endpoint.map(Into::into),
                    region: None,
                    allow_http,
                }),
                ..Default::default()
            });
            assert!(c.s3.is_none(), "{blobs} {endpoint:?}");
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].0, key, "{p:?}");
        }
        // [store.s3] without an s3 blobs URL is a mistake, named by its key.
        let (_, p) = check(RawStore {
            s3: Some(RawS3 {
                region: Some("eu-west-1".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(p[0].0, "store.s3.region");
    }
}
