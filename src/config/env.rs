//! The environment layer (`CARGOHOLD_<KEY>`, dots as `_`, e.g. `CARGOHOLD_CACHE_MEMORY`) and
//! the provenance of every scalar value (default, file, environment, command line), which
//! `print-config` shows. The environment is read through [`EnvSource`] so tests use a map.

use std::collections::BTreeMap;

use super::raw::{RawCache, RawConfig, RawLimits, RawS3, RawStore, RawTls, Size};

/// Where environment variables come from.
pub trait EnvSource {
    /// The value of `var`, if set.
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn get(&self, var: &str) -> Option<String> {
        BTreeMap::get(self, var).cloned()
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env(String),
    Cli,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("config file"),
            Source::Env(var) => write!(f, "environment ({var})"),
            Source::Cli => f.write_str("command line"),
        }
    }
}

/// Provenance of each scalar key.
pub type Provenance = BTreeMap<String, Source>;

/// Every scalar key (the ones the environment can set).
pub const KEYS: &[&str] = &[
    "listen",
    "public_url",
    "data_dir",
    "shutdown_grace",
    "workers",
    "tls.cert",
    "tls.key",
    "limits.max_crate_size",
    "limits.max_metadata_size",
    "limits.max_unpacked_size",
    "limits.max_json_body",
    "limits.max_upstream_index_size",
    "limits.max_upstream_crate_size",
    "limits.max_connections",
    "limits.header_read_timeout",
    "limits.request_timeout",
    "limits.idle_timeout",
    "cache.memory",
    "cache.disk",
    "cache.index_disk",
    "store.database",
    "store.blobs",
    "store.s3.endpoint",
    "store.s3.region",
    "store.s3.allow_http",
];

/// The environment variable of a key.
pub fn env_var(key: &str) -> String {
    format!("CARGOHOLD_{}", key.replace('.', "_").to_ascii_uppercase())
}

fn size(v: &Option<Size>) -> Option<String> {
    v.as_ref().map(|s| match s {
        Size::Bytes(b) => b.to_string(),
        Size::Text(t) => t.clone(),
    })
}

/// Whether `key` is set in `raw`.
pub fn is_set(raw: &RawConfig, key: &str) -> bool {
    let l = raw.limits.as_ref();
    let c = raw.cache.as_ref();
    let t = raw.tls.as_ref();
    let st = raw.store.as_ref();
    let s3 = st.and_then(|s| s.s3.as_ref());
    match key {
        "listen" => raw.listen.is_some(),
        "public_url" => raw.public_url.is_some(),
        "data_dir" => raw.data_dir.is_some(),
        "shutdown_grace" => raw.shutdown_grace.is_some(),
        "workers" => raw.workers.is_some(),
        "tls.cert" => t.is_some_and(|t| t.cert.is_some()),
        "tls.key" => t.is_some_and(|t| t.key.is_some()),
        "limits.max_crate_size" => l.and_then(|l| size(&l.max_crate_size)).is_some(),
        "limits.max_metadata_size" => l.and_then(|l| size(&l.max_metadata_size)).is_some(),
        "limits.max_unpacked_size" => l.and_then(|l| size(&l.max_unpacked_size)).is_some(),
        "limits.max_json_body" => l.and_then(|l| size(&l.max_json_body)).is_some(),
        "limits.max_upstream_index_size" => l.and_then(|l| size(&l.max_upstream_index_size)).is_some(),
        "limits.max_upstream_crate_size" => l.and_then(|l| size(&l.max_upstream_crate_size)).is_some(),
        "limits.max_connections" => l.is_some_and(|l| l.max_connections.is_some()),
        "limits.header_read_timeout" => l.is_some_and(|l| l.header_read_timeout.is_some()),
        "limits.request_timeout" => l.is_some_and(|l| l.request_timeout.is_some()),
        "limits.idle_timeout" => l.is_some_and(|l| l.idle_timeout.is_some()),
        "cache.memory" => c.and_then(|c| size(&c.memory)).is_some(),
        "cache.disk" => c.and_then(|c| size(&c.disk)).is_some(),
        "cache.index_disk" => c.and_then(|c| size(&c.index_disk)).is_some(),
        "store.database" => st.is_some_and(|s| s.database.is_some()),
        "store.blobs" => st.is_some_and(|s| s.blobs.is_some()),
        "store.s3.endpoint" => s3.is_some_and(|s| s.endpoint.is_some()),
        "store.s3.region" => s3.is_some_and(|s| s.region.is_some()),
        "store.s3.allow_http" => s3.is_some_and(|s| s.allow_http.is_some()),
        _ => false,
    }
}

/// Sets `key` in `raw` from text. A number that does not parse is kept as text so that
/// validation reports it with the key's name.
pub fn set(raw: &mut RawConfig, key: &str, value: String) -> Result<(), String> {
    let limits = || RawLimits::default();
    match key {
        "listen" => raw.listen = Some(value),
        "public_url" => raw.public_url = Some(value),
        "data_dir" => raw.data_dir = Some(value.into()),
        "shutdown_grace" => raw.shutdown_grace = Some(value),
        "workers" => {
            raw.workers = Some(
                value
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{value}` is not a whole number"))?,
            );
        }
        "tls.cert" => raw.tls.get_or_insert_with(RawTls::default).cert = Some(value.into()),
        "tls.key" => raw.tls.get_or_insert_with(RawTls::default).key = Some(value.into()),
        "limits.max_crate_size" => raw.limits.get_or_insert_with(limits).max_crate_size = Some(Size::Text(value)),
        "limits.max_metadata_size" => raw.limits.get_or_insert_with(limits).max_metadata_size = Some(Size::Text(value)),
        "limits.max_unpacked_size" => raw.limits.get_or_insert_with(limits).max_unpacked_size = Some(Size::Text(value)),
        "limits.max_json_body" => raw.limits.get_or_insert_with(limits).max_json_body = Some(Size::Text(value)),
        "limits.max_upstream_index_size" => {
            raw.limits.get_or_insert_with(limits).max_upstream_index_size = Some(Size::Text(value));
        }
        "limits.max_upstream_crate_size" => {
            raw.limits.get_or_insert_with(limits).max_upstream_crate_size = Some(Size::Text(value));
        }
        "limits.max_connections" => {
            let n = value
                .trim()
                .parse()
                .map_err(|_| format!("`{value}` is not a whole number"))?;
            raw.limits.get_or_insert_with(limits).max_connections = Some(n);
        }
        "limits.header_read_timeout" => raw.limits.get_or_insert_with(limits).header_read_timeout = Some(value),
        "limits.request_timeout" => raw.limits.get_or_insert_with(limits).request_timeout = Some(value),
        "limits.idle_timeout" => raw.limits.get_or_insert_with(limits).idle_timeout = Some(value),
        "cache.memory" => raw.cache.get_or_insert_with(RawCache::default).memory = Some(Size::Text(value)),
        "cache.disk" => raw.cache.get_or_insert_with(RawCache::default).disk = Some(Size::Text(value)),
        "cache.index_disk" => raw.cache.get_or_insert_with(RawCache::default).index_disk = Some(Size::Text(value)),
        "store.database" => raw.store.get_or_insert_with(RawStore::default).database = Some(value),
        "store.blobs" => raw.store.get_or_insert_with(RawStore::default).blobs = Some(value),
        "store.s3.endpoint" => store_s3(raw).endpoint = Some(value),
        "store.s3.region" => store_s3(raw).region = Some(value),
        "store.s3.allow_http" => {
            store_s3(raw).allow_http = Some(match value.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(format!("`{value}` is not true or false")),
            });
        }
        other => return Err(format!("`{other}` is not a configuration key")),
    }
    Ok(())
}

fn store_s3(raw: &mut RawConfig) -> &mut RawS3 {
    raw.store
        .get_or_insert_with(RawStore::default)
        .s3
        .get_or_insert_with(RawS3::default)
}

/// Provenance after the file: every key is `File` if set there, else `Default`.
pub fn file_provenance(raw: &RawConfig, from_file: bool) -> Provenance {
    KEYS.iter()
        .map(|k| {
            (
                (*k).to_owned(),
                if from_file && is_set(raw, k) {
                    Source::File
                } else {
                    Source::Default
                },
            )
        })
        .collect()
}

/// Applies `CARGOHOLD_*` variables; returns problems (key, message).
pub fn apply_env(raw: &mut RawConfig, env: &dyn EnvSource, prov: &mut Provenance) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for key in KEYS {
        let var = env_var(key);
        if let Some(v) = env.get(&var) {
            match set(raw, key, v) {
                Ok(()) => {
                    prov.insert((*key).to_owned(), Source::Env(var));
                }
                Err(e) => problems.push(((*key).to_owned(), format!("{e} (from {var})"))),
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert_eq!(env_var("cache.memory"), "CARGOHOLD_CACHE_MEMORY");
        assert_eq!(env_var("limits.max_crate_size"), "CARGOHOLD_LIMITS_MAX_CRATE_SIZE");
    }

    #[test]
    fn every_key_round_trips() {
        for key in KEYS {
            let mut raw = RawConfig::default();
            assert!(!is_set(&raw, key));
            set(&mut raw, key, "1".into()).unwrap();
            assert!(is_set(&raw, key), "{key}");
        }
    }

    #[test]
    fn env_overrides_and_records_the_source() {
        let mut raw = RawConfig {
            listen: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        let mut prov = file_provenance(&raw, true);
        let env: BTreeMap<String, String> = [
            ("CARGOHOLD_LISTEN".to_owned(), "127.0.0.1:2".to_owned()),
            ("CARGOHOLD_LIMITS_MAX_CONNECTIONS".to_owned(), "many".to_owned()),
        ]
        .into();
        let problems = apply_env(&mut raw, &env, &mut prov);
        assert_eq!(raw.listen.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(prov["listen"], Source::Env("CARGOHOLD_LISTEN".into()));
        assert_eq!(prov["data_dir"], Source::Default);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].1.contains("CARGOHOLD_LIMITS_MAX_CONNECTIONS"));
    }
}
