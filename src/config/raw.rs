//! The config file exactly as serde reads it: every field optional, unknown keys refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{units, ConfigError};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub shutdown_grace: Option<String>,
    pub workers: Option<u64>,
    pub tls: Option<RawTls>,
    pub limits: Option<RawLimits>,
    pub cache: Option<RawCache>,
    pub store: Option<RawStore>,
    pub webhooks: Option<RawWebhooks>,
    pub registries: Option<BTreeMap<String, RawRegistry>>,
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_crate_size: Option<Size>,
    pub max_metadata_size: Option<Size>,
    pub max_unpacked_size: Option<Size>,
    pub max_json_body: Option<Size>,
    pub max_upstream_index_size: Option<Size>,
    pub max_upstream_crate_size: Option<Size>,
    pub max_connections: Option<u64>,
    pub header_read_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub idle_timeout: Option<String>,
}

/// `[cache]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub memory: Option<Size>,
    pub disk: Option<Size>,
    pub index_disk: Option<Size>,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub database: Option<String>,
    pub blobs: Option<String>,
    pub s3: Option<RawS3>,
}

/// `[webhooks]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    pub allow_private: Option<bool>,
    pub max_attempts: Option<u64>,
    pub retry_base: Option<String>,
    pub timeout: Option<String>,
    pub retention: Option<String>,
}

/// `[store.s3]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: Option<bool>,
}

/// `[registries.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    pub kind: Option<String>,
    pub description: Option<String>,
    pub labels: Option<Vec<String>>,
    pub auth_required: Option<bool>,
    pub upstream: Option<String>,
    pub offline: Option<bool>,
    pub prune_index: Option<bool>,
    pub index_ttl: Option<String>,
    pub negative_ttl: Option<String>,
    pub upstream_timeout: Option<String>,
    pub upstream_concurrency: Option<u64>,
    pub upstream_deadline: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub upstreams: Option<Vec<String>>,
    pub shadow: Option<String>,
    pub allow_upstream_names: Option<bool>,
    pub allowed_licenses: Option<Vec<String>>,
    pub allow_license_file_only: Option<bool>,
    pub advisories: Option<String>,
    pub advisories_allow: Option<Vec<String>>,
}

/// A size written as a number of bytes or a string with a unit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    /// The size in bytes, or a message saying what is wrong.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(b) => Ok(*b),
            Size::Text(t) => units::parse_size(t),
        }
    }
}

impl RawConfig {
    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_str(&text, path)
    }

    /// Parses TOML text; `path` is only used in messages.
    pub fn from_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}
