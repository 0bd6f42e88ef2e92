//! Validated configuration. `raw` holds what serde reads from TOML (`deny_unknown_fields`);
//! [`Config::from_raw`] turns it into typed values and collects *every* problem, each naming
//! its key. Layers: embedded defaults -> TOML file -> command-line flags.
//! This is a leaf module: it imports nothing from the rest of the crate but `index`.

pub mod env;
pub mod raw;
pub mod store;
pub mod units;

#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::index::license::check_allowed_list;
use crate::index::validate_registry_name;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./cargohold-data";

/// One problem in a configuration, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Configuration that could not be loaded; lists every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {}: {}", p.key, p.message)).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// `hosted` (private crates) or `proxy` (cache of an upstream sparse index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    Hosted,
    Proxy,
}

/// What a download of a proxied crate version that an imported security advisory affects
/// does (`advisories = "off" | "flag" | "deny"`; docs/OPERATIONS.md "Security advisories").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AdvisoryMode {
    /// Nothing is checked.
    Off,
    /// Served, with the `X-Cargohold-Advisory` header and the metric.
    #[default]
    Flag,
    /// Refused with 403 (informational advisories are only flagged).
    Deny,
}

impl AdvisoryMode {
    /// The mode written `s` in the config file, the admin API and the CLI.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "flag" => Ok(Self::Flag),
            "deny" => Ok(Self::Deny),
            other => Err(format!(
                "`{other}` is not an advisories mode; use `off`, `flag` or `deny`"
            )),
        }
    }

    /// The mode as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Flag => "flag",
            Self::Deny => "deny",
        }
    }
}

/// Whether `id` is a RustSec advisory id (`RUSTSEC-YYYY-NNNN`, four or more digits at the end).
pub fn is_advisory_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("RUSTSEC-") else {
        return false;
    };
    let Some((year, n)) = rest.split_once('-') else {
        return false;
    };
    year.len() == 4
        && year.bytes().all(|b| b.is_ascii_digit())
        && (4..=8).contains(&n.len())
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// Most ids `advisories_allow` may list.
pub const MAX_ADVISORIES_ALLOW: usize = 1000;

/// Problems with an `advisories_allow` list.
pub fn check_advisories_allow(ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = ids
        .iter()
        .filter(|id| !is_advisory_id(id))
        .map(|id| {
            format!(
                "`{}` is not a RustSec advisory id (`RUSTSEC-YYYY-NNNN`)",
                id.chars().take(80).collect::<String>()
            )
        })
        .collect();
    if ids.len() > MAX_ADVISORIES_ALLOW {
        out.push(format!("at most {MAX_ADVISORIES_ALLOW} ids"));
    }
    out
}

/// How a hosted registry's own crates combine with its upstreams' (see design.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Shadow {
    #[default]
    Crate,
    Version,
}

/// The longest duration a registry setting may hold (10 years): caches refuse longer
/// time-to-live values at build time, and nothing here needs more.
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;

/// Everything that defines one registry. Stored in the store as JSON, served by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySpec {
    pub name: String,
    pub kind: RegistryKind,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub auth_required: bool,
    /// Proxy: upstream sparse index URL (`None` = crates.io).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Proxy: never contact the upstream.
    #[serde(default)]
    pub offline: bool,
    /// Proxy: serve each index file cut down to the versions whose `.crate` is in the cache.
    #[serde(default)]
    pub prune_index: bool,
    /// Proxy: seconds an index file is fresh.
    #[serde(default = "default_index_ttl")]
    pub index_ttl_secs: u64,
    /// Proxy: seconds an upstream 404 is remembered.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl_secs: u64,
    /// Proxy: seconds to wait for the upstream to connect or to send data.
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_secs: u64,
    /// Proxy: upstream requests (index fetches and crate transfers) in flight at once; more
    /// wait briefly in a bounded queue, then get 503 with `Retry-After`.
    #[serde(default = "default_upstream_concurrency")]
    pub upstream_concurrency: u32,
    /// Proxy: seconds one upstream transfer (all tries, headers and body) may take in total.
    #[serde(default = "default_upstream_deadline")]
    pub upstream_deadline_secs: u64,
    /// Proxy: PEM file of extra root certificates trusted for the upstream, on top of the
    /// platform's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Hosted: proxy registries merged under the local crates, in order.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Hosted: how local and upstream crates combine.
    #[serde(default)]
    pub shadow: Shadow,
    /// Hosted: allow publishing a new name that exists upstream.
    #[serde(default)]
    pub allow_upstream_names: bool,
    /// Hosted: licences a published crate's SPDX `license` must be satisfiable from; empty =
    /// no licence policy (see `index::license`).
    #[serde(default)]
    pub allowed_licenses: Vec<String>,
    /// Hosted, with `allowed_licenses`: accept a crate with a `license_file` but no `license`.
    #[serde(default)]
    pub allow_license_file_only: bool,
    /// Proxy, and hosted with `upstreams` (the proxied crates of its merged view): what a
    /// download of a version an imported advisory affects does.
    #[serde(default)]
    pub advisories: AdvisoryMode,
    /// Advisory ids (`RUSTSEC-…`) this registry ignores.
    #[serde(default)]
    pub advisories_allow: Vec<String>,
}

pub fn default_index_ttl() -> u64 {
    120
}
fn default_upstream_timeout() -> u64 {
    15
}
pub fn default_negative_ttl() -> u64 {
    60
}
fn default_upstream_concurrency() -> u32 {
    32
}

/// Most `upstream_concurrency` accepts.
pub const MAX_UPSTREAM_CONCURRENCY: u64 = 4096;
fn default_upstream_deadline() -> u64 {
    300
}

/// Why a hosted registry may not merge `upstream`, if it may not: a registry readable without
/// a token must not merge an `auth_required` proxy, or anonymous clients would read the proxy
/// through it.
pub fn merge_exposure(hosted: &RegistrySpec, upstream: &RegistrySpec) -> Option<String> {
    (!hosted.auth_required && upstream.auth_required).then(|| {
        format!(
            "`{h}` is readable without a token but merges `{u}`, which has `auth_required = true`: anonymous clients would read `{u}` through `{h}`. Set `auth_required = true` on `{h}`, or remove `{u}` from its upstreams",
            h = hosted.name,
            u = upstream.name
        )
    })
}

impl RegistrySpec {
    /// A registry of `kind` with every other field at its default.
    pub fn new(name: &str, kind: RegistryKind) -> Self {
        RegistrySpec {
            name: name.to_owned(),
            kind,
            description: String::new(),
            labels: Vec::new(),
            auth_required: false,
            upstream: None,
            offline: false,
            prune_index: false,
            index_ttl_secs: default_index_ttl(),
            negative_ttl_secs: default_negative_ttl(),
            upstream_timeout_secs: default_upstream_timeout(),
            upstream_concurrency: default_upstream_concurrency(),
            upstream_deadline_secs: default_upstream_deadline(),
            ca_file: None,
            upstreams: Vec::new(),
            shadow: Shadow::Crate,
            allow_upstream_names: false,
            allowed_licenses: Vec::new(),
            allow_license_file_only: false,
            advisories: AdvisoryMode::default(),
            advisories_allow: Vec::new(),
        }
    }

    /// The spec in config-file form (only the keys that apply to its kind).
    pub fn to_raw(&self) -> raw::RawRegistry {
        let hosted = self.kind == RegistryKind::Hosted;
        raw::RawRegistry {
            kind: Some(if hosted { "hosted" } else { "proxy" }.into()),
            description: Some(self.description.clone()),
            labels: Some(self.labels.clone()),
            auth_required: Some(self.auth_required),
            upstream: if hosted { None } else { self.upstream.clone() },
            offline: (!hosted).then_some(self.offline),
            prune_index: (!hosted).then_some(self.prune_index),
            index_ttl: (!hosted).then(|| format!("{}s", self.index_ttl_secs)),
            negative_ttl: (!hosted).then(|| format!("{}s", self.negative_ttl_secs)),
            upstream_timeout: (!hosted).then(|| format!("{}s", self.upstream_timeout_secs)),
            upstream_concurrency: (!hosted).then_some(u64::from(self.upstream_concurrency)),
            upstream_deadline: (!hosted).then(|| format!("{}s", self.upstream_deadline_secs)),
            ca_file: if hosted { None } else { self.ca_file.clone() },
            upstreams: hosted.then(|| self.upstreams.clone()),
            shadow: hosted.then(|| {
                if self.shadow == Shadow::Crate {
                    "crate"
                } else {
                    "version"
                }
                .into()
            }),
            allow_upstream_names: hosted.then_some(self.allow_upstream_names),
            allowed_licenses: (hosted && !self.allowed_licenses.is_empty()).then(|| self.allowed_licenses.clone()),
            allow_license_file_only: (hosted && self.allow_license_file_only).then_some(true),
            advisories: (self.advisories != AdvisoryMode::default()).then(|| self.advisories.as_str().into()),
            advisories_allow: (!self.advisories_allow.is_empty()).then(|| self.advisories_allow.clone()),
        }
    }

    /// Problems with this spec on its own (name rule, labels, fields that don't fit the kind).
    /// `key` prefixes each problem's key (e.g. `registries.local`).
    pub fn problems(&self, key: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut p = |k: &str, m: String| {
            out.push(Problem {
                key: format!("{key}.{k}"),
                message: m,
            })
        };
        if let Err(e) = validate_registry_name(&self.name) {
            p("name", e);
        }
        for label in &self.labels {
            if let Err(e) = check_label(label) {
                p("labels", e);
            }
        }
        for message in check_advisories_allow(&self.advisories_allow) {
            p("advisories_allow", message);
        }
        match self.kind {
            RegistryKind::Hosted => {
                if self.upstream.is_some() {
                    p("upstream", "only proxy registries have an `upstream`; a hosted registry lists proxy registries in `upstreams`".into());
                }
                if self.offline {
                    p("offline", "only proxy registries can be `offline`".into());
                }
                if self.prune_index {
                    p(
                        "prune_index",
                        "only proxy registries can `prune_index` (a merged view shows the pruned files of the proxies it merges)".into(),
                    );
                }
                if self.ca_file.is_some() {
                    p(
                        "ca_file",
                        "only proxy registries have a `ca_file` (it is trusted for their upstream)".into(),
                    );
                }
                for message in check_allowed_list(&self.allowed_licenses) {
                    p("allowed_licenses", message);
                }
            }
            RegistryKind::Proxy => {
                if !self.upstreams.is_empty() {
                    p(
                        "upstreams",
                        "only hosted registries have `upstreams`; a proxy has one `upstream` URL".into(),
                    );
                }
                if let Some(u) = &self.upstream {
                    if let Err(e) = check_upstream_url(u) {
                        p("upstream", e);
                    }
                }
                if self.upstream_concurrency == 0 || u64::from(self.upstream_concurrency) > MAX_UPSTREAM_CONCURRENCY {
                    p(
                        "upstream_concurrency",
                        format!(
                            "{} is not between 1 and {MAX_UPSTREAM_CONCURRENCY}",
                            self.upstream_concurrency
                        ),
                    );
                }
                if let Some(f) = &self.ca_file {
                    if let Err(e) = check_ca_file(f) {
                        p("ca_file", e);
                    }
                }
                if self.upstream_deadline_secs == 0 {
                    p("upstream_deadline", "must be at least 1s".into());
                }
                for (field, secs) in [
                    ("index_ttl", self.index_ttl_secs),
                    ("negative_ttl", self.negative_ttl_secs),
                    ("upstream_timeout", self.upstream_timeout_secs),
                    ("upstream_deadline", self.upstream_deadline_secs),
                ] {
                    if secs > MAX_DURATION_SECS {
                        p(
                            field,
                            format!("{secs}s is more than the 10 years (315360000s) a duration may be"),
                        );
                    }
                }
                if !self.allowed_licenses.is_empty() {
                    p("allowed_licenses", PROXY_LICENSE_RULE.into());
                }
                if self.allow_license_file_only {
                    p("allow_license_file_only", PROXY_LICENSE_RULE.into());
                }
            }
        }
        out
    }
}

/// Why a proxy cannot have a licence policy.
const PROXY_LICENSE_RULE: &str = "only hosted registries have a licence policy (it is checked on publish); a proxy serves its upstream's crates as they are";

/// A label is `key` or `key=value`; the key is non-empty and has no spaces or `=`.
pub fn check_label(label: &str) -> Result<(), String> {
    let key = label.split('=').next().unwrap_or("");
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        Err(format!(
            "invalid label `{label}`: a label is `key` or `key=value` with a non-empty key without spaces"
        ))
    } else {
        Ok(())
    }
}

/// An upstream is an absolute http(s) URL of a sparse index, optionally with `sparse+`.
pub fn check_upstream_url(url: &str) -> Result<(), String> {
    let bare = url.strip_prefix("sparse+").unwrap_or(url);
    if (bare.starts_with("http://") || bare.starts_with("https://")) && bare.len() > "https://".len() {
        Ok(())
    } else {
        Err(format!(
            "invalid upstream `{url}`: expected a sparse index URL such as `sparse+https://host/index/`"
        ))
    }
}

/// A `ca_file` must be readable and hold at least one PEM certificate; returns how many.
pub fn check_ca_file(path: &Path) -> Result<usize, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the `ca_file` `{}`: {e}", path.display()))?;
    // Each certificate is added to a root store, as the upstream client will: a block that
    // decodes as PEM but is no usable certificate is refused here, not at the first request
    // (or at a restart, which would then fail).
    let mut store = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("the `ca_file` `{}` is not valid PEM: {e}", path.display()))?;
        store
            .add(cert)
            .map_err(|e| format!("the `ca_file` `{}` holds an unusable certificate: {e}", path.display()))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!(
            "the `ca_file` `{}` holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`)",
            path.display()
        ));
    }
    Ok(n)
}

/// TLS certificate and key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Size limits on what clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest `.crate` accepted on publish.
    pub max_crate_bytes: u64,
    /// Largest publish metadata JSON.
    pub max_metadata_bytes: u64,
    /// Largest unpacked size of a published crate.
    pub max_unpacked_bytes: u64,
    /// Largest JSON request body (admin API, owners).
    pub max_json_bytes: u64,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: u64,
    /// Time a client has to send its request headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// Time a handler has to produce a response (streamed bodies may take longer).
    pub request_timeout: Duration,
    /// Time a connection may sit idle between requests before it is closed.
    pub idle_timeout: Duration,
    /// Largest index file (or `config.json`) accepted from an upstream.
    pub max_upstream_index_bytes: u64,
    /// Largest `.crate` accepted from an upstream (the effective cap is the larger of this and
    /// `max_crate_bytes`).
    pub max_upstream_crate_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_crate_bytes: 10 << 20,
            max_metadata_bytes: 1 << 20,
            max_unpacked_bytes: 512 << 20,
            max_json_bytes: 1 << 20,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            max_upstream_index_bytes: 20 << 20,
            max_upstream_crate_bytes: 256 << 20,
        }
    }
}

/// Cache budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheConfig {
    /// Bytes of index files and rendered views kept in memory.
    pub memory_bytes: u64,
    /// Bytes of proxied `.crate` files kept on disk.
    pub disk_bytes: u64,
    /// Bytes of cached upstream index files kept on disk.
    pub index_disk_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_bytes: 256 << 20,
            disk_bytes: 50 << 30,
            index_disk_bytes: 1 << 30,
        }
    }
}

/// Most edge worker threads `workers` accepts.
pub const MAX_WORKERS: u64 = 1024;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub listen: SocketAddr,
    /// What `config.json` advertises; `None` means `http://<bound address>`.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub tls: Option<TlsConfig>,
    pub limits: Limits,
    pub cache: CacheConfig,
    pub shutdown_grace: Duration,
    /// Edge worker threads serving connections (`workers = 0` or unset: one per CPU core).
    pub workers: usize,
    /// Where the private store lives (`[store]`).
    pub store: store::StoreConfig,
    /// Webhook deliveries (`[webhooks]`).
    pub webhooks: WebhooksConfig,
    /// Registries declared in the file (or the embedded default), by name.
    pub registries: BTreeMap<String, RegistrySpec>,
}

/// `[webhooks]`: how deliveries are made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhooksConfig {
    /// Hooks may target loopback, private and link-local addresses (tests, labs).
    pub allow_private: bool,
    /// Attempts of a delivery before it is marked failed.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles (with jitter), capped at an hour.
    pub retry_base: Duration,
    /// Timeout of one delivery request.
    pub timeout: Duration,
    /// How long finished deliveries (with their attempts) and fanned-out events are kept.
    pub retention: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_private: false,
            max_attempts: 8,
            retry_base: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Most attempts `[webhooks] max_attempts` takes.
const MAX_WEBHOOK_ATTEMPTS: u64 = 100;

/// Values from the command line, applied over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub public_url: Option<String>,
}

impl Config {
    /// The embedded default: a proxy `crates-io` of crates.io, and a hosted registry `local`
    /// that lists it as its upstream (the merged view).
    pub fn embedded_default() -> raw::RawConfig {
        let mut registries = BTreeMap::new();
        registries.insert(
            "crates-io".to_owned(),
            raw::RawRegistry {
                kind: Some("proxy".into()),
                description: Some("Caching proxy of crates.io".into()),
                ..Default::default()
            },
        );
        registries.insert(
            "local".to_owned(),
            raw::RawRegistry {
                kind: Some("hosted".into()),
                description: Some("Private crates, merged over crates-io".into()),
                upstreams: Some(vec!["crates-io".into()]),
                ..Default::default()
            },
        );
        raw::RawConfig {
            registries: Some(registries),
            ..Default::default()
        }
    }

    /// Loads the file (or the embedded default when `path` is `None`) and applies `overrides`,
    /// ignoring the environment.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let empty = BTreeMap::<String, String>::new();
        Self::load_layered(path, overrides, &empty).map(|(c, _)| c)
    }

    /// The full layering: embedded defaults -> file -> `CARGOHOLD_*` environment -> command
    /// line. Returns the config and where each scalar value came from.
    pub fn load_layered(
        path: Option<&Path>,
        overrides: &Overrides,
        env: &dyn env::EnvSource,
    ) -> Result<(Config, env::Provenance), ConfigError> {
        let mut raw = match path {
            None => Self::embedded_default(),
            Some(p) => raw::RawConfig::from_file(p)?,
        };
        let mut prov = env::file_provenance(&raw, path.is_some());
        prov.insert(
            "registries".into(),
            if path.is_some() {
                env::Source::File
            } else {
                env::Source::Default
            },
        );
        let env_problems = env::apply_env(&mut raw, env, &mut prov);
        for (key, value) in [
            ("listen", overrides.listen.clone()),
            ("data_dir", overrides.data_dir.as_ref().map(|p| p.display().to_string())),
            ("public_url", overrides.public_url.clone()),
        ] {
            if let Some(v) = value {
                prov.insert(key.to_owned(), env::Source::Cli);
                let _ = env::set(&mut raw, key, v);
            }
        }
        let result = Config::from_raw(raw, &Overrides::default());
        let mut problems: Vec<Problem> = env_problems
            .into_iter()
            .map(|(key, message)| Problem { key, message })
            .collect();
        match result {
            Ok(c) if problems.is_empty() => Ok((c, prov)),
            Ok(_) => Err(ConfigError::Invalid(problems)),
            Err(ConfigError::Invalid(more)) => {
                problems.extend(more);
                Err(ConfigError::Invalid(problems))
            }
            Err(e) => Err(e),
        }
    }

    /// The effective configuration as annotated TOML: each scalar with its source. The text
    /// is itself a valid config file.
    pub fn describe(&self, prov: &env::Provenance) -> String {
        fn kv(out: &mut String, prov: &env::Provenance, key: &str, value: String) {
            let src = prov.get(key).cloned().unwrap_or(env::Source::Default);
            let short = key.rsplit('.').next().unwrap_or(key);
            out.push_str(&format!("{:<44} # {src}\n", format!("{short} = {value}")));
        }
        let mut out = String::new();
        let o = &mut out;
        kv(o, prov, "listen", format!("{:?}", self.listen.to_string()));
        match &self.public_url {
            Some(u) => kv(o, prov, "public_url", format!("{u:?}")),
            None => o.push_str("# public_url is unset: config.json advertises http://<bound address>\n"),
        }
        kv(
            o,
            prov,
            "data_dir",
            format!("{:?}", self.data_dir.display().to_string()),
        );
        kv(
            o,
            prov,
            "shutdown_grace",
            format!("\"{}ms\"", self.shutdown_grace.as_millis()),
        );
        kv(o, prov, "workers", self.workers.to_string());
        o.push_str("\n[limits]\n");
        let l = &self.limits;
        kv(o, prov, "limits.max_crate_size", l.max_crate_bytes.to_string());
        kv(o, prov, "limits.max_metadata_size", l.max_metadata_bytes.to_string());
        kv(o, prov, "limits.max_unpacked_size", l.max_unpacked_bytes.to_string());
        kv(o, prov, "limits.max_json_body", l.max_json_bytes.to_string());
        kv(o, prov, "limits.max_connections", l.max_connections.to_string());
        kv(
            o,
            prov,
            "limits.max_upstream_index_size",
            l.max_upstream_index_bytes.to_string(),
        );
        kv(
            o,
            prov,
            "limits.max_upstream_crate_size",
            l.max_upstream_crate_bytes.to_string(),
        );
        kv(
            o,
            prov,
            "limits.header_read_timeout",
            format!("\"{}ms\"", l.header_read_timeout.as_millis()),
        );
        kv(
            o,
            prov,
            "limits.request_timeout",
            format!("\"{}ms\"", l.request_timeout.as_millis()),
        );
        kv(
            o,
            prov,
            "limits.idle_timeout",
            format!("\"{}ms\"", l.idle_timeout.as_millis()),
        );
        o.push_str("\n[cache]\n");
        kv(o, prov, "cache.memory", self.cache.memory_bytes.to_string());
        kv(o, prov, "cache.disk", self.cache.disk_bytes.to_string());
        kv(o, prov, "cache.index_disk", self.cache.index_disk_bytes.to_string());
        o.push_str("\n[store]\n");
        match &self.store.database {
            Some(db) => kv(o, prov, "store.database", format!("{:?}", db.redacted())),
            None => o.push_str("# database is unset: SQLite at <data_dir>/store/registry.db\n"),
        }
        match &self.store.s3 {
            Some(s3) => {
                kv(o, prov, "store.blobs", format!("{:?}", s3.url()));
                o.push_str("\n[store.s3]\n");
                if let Some(e) = &s3.endpoint {
                    kv(o, prov, "store.s3.endpoint", format!("{e:?}"));
                }
                kv(o, prov, "store.s3.region", format!("{:?}", s3.region));
                kv(o, prov, "store.s3.allow_http", s3.allow_http.to_string());
                o.push_str("# credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment\n");
            }
            None => o.push_str("# blobs is unset: files under <data_dir>/store/blobs\n"),
        }
        o.push_str("\n[webhooks]\n");
        let w = &self.webhooks;
        kv(o, prov, "webhooks.allow_private", w.allow_private.to_string());
        kv(o, prov, "webhooks.max_attempts", w.max_attempts.to_string());
        kv(
            o,
            prov,
            "webhooks.retry_base",
            format!("\"{}ms\"", w.retry_base.as_millis()),
        );
        kv(o, prov, "webhooks.timeout", format!("\"{}ms\"", w.timeout.as_millis()));
        kv(o, prov, "webhooks.retention", format!("\"{}s\"", w.retention.as_secs()));
        if let Some(tls) = &self.tls {
            o.push_str("\n[tls]\n");
            kv(o, prov, "tls.cert", format!("{:?}", tls.cert.display().to_string()));
            kv(o, prov, "tls.key", format!("{:?}", tls.key.display().to_string()));
        }
        let reg_src = prov.get("registries").cloned().unwrap_or(env::Source::Default);
        for spec in self.registries.values() {
            out.push_str(&format!(
                "\n[registries.{}]   # {}\n",
                spec.name,
                if reg_src == env::Source::File {
                    "config file"
                } else {
                    "embedded default"
                }
            ));
            out.push_str(&toml::to_string(&spec.to_raw()).unwrap_or_default());
        }
        out
    }

    /// Validates, collecting every problem.
    pub fn from_raw(raw: raw::RawConfig, ov: &Overrides) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(Problem {
                key: key.to_owned(),
                message,
            })
        };

        let listen_s = ov
            .listen
            .clone()
            .or(raw.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_s.parse::<SocketAddr>().unwrap_or_else(|_| {
            problem("listen", format!("`{listen_s}` is not an address like 127.0.0.1:8080"));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let public_url = ov.public_url.clone().or(raw.public_url);
        if let Some(u) = &public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                problem("public_url", format!("`{u}` must start with http:// or https://"));
            }
        }
        let data_dir = ov
            .data_dir
            .clone()
            .or(raw.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        let tls = raw.tls.and_then(|t| match (t.cert, t.key) {
            (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
            (c, k) => {
                if c.is_none() {
                    problem("tls.cert", "missing: [tls] needs both `cert` and `key`".into());
                }
                if k.is_none() {
                    problem("tls.key", "missing: [tls] needs both `cert` and `key`".into());
                }
                None
            }
        });

        let mut limits = Limits::default();
        if let Some(l) = raw.limits {
            let mut size = |key: &str, v: Option<raw::Size>, into: &mut u64| {
                if let Some(v) = v {
                    match v.bytes() {
                        Ok(0) => problem(key, "must be greater than zero".into()),
                        Ok(b) => *into = b,
                        Err(e) => problem(key, e),
                    }
                }
            };
            size("limits.max_crate_size", l.max_crate_size, &mut limits.max_crate_bytes);
            size(
                "limits.max_metadata_size",
                l.max_metadata_size,
                &mut limits.max_metadata_bytes,
            );
            size(
                "limits.max_unpacked_size",
                l.max_unpacked_size,
                &mut limits.max_unpacked_bytes,
            );
            size("limits.max_json_body", l.max_json_body, &mut limits.max_json_bytes);
            size(
                "limits.max_upstream_index_size",
                l.max_upstream_index_size,
                &mut limits.max_upstream_index_bytes,
            );
            size(
                "limits.max_upstream_crate_size",
                l.max_upstream_crate_size,
                &mut limits.max_upstream_crate_bytes,
            );
            match l.max_connections {
                Some(0) => problem("limits.max_connections", "must be greater than zero".into()),
                Some(n) => limits.max_connections = n,
                None => {}
            }
            for (key, v, into) in [
                (
                    "limits.header_read_timeout",
                    l.header_read_timeout,
                    &mut limits.header_read_timeout,
                ),
                ("limits.request_timeout", l.request_timeout, &mut limits.request_timeout),
                ("limits.idle_timeout", l.idle_timeout, &mut limits.idle_timeout),
            ] {
                if let Some(v) = v {
                    match units::parse_duration(&v) {
                        Ok(d) if d.is_zero() => problem(key, "must be greater than zero".into()),
                        Ok(d) => *into = d,
                        Err(e) => problem(key, e),
                    }
                }
            }
            if limits.max_crate_bytes > u64::from(u32::MAX) {
                problem(
                    "limits.max_crate_size",
                    "must be below 4GiB (the publish frame uses 32-bit lengths)".into(),
                );
            }
        }
        let mut cache = CacheConfig::default();
        if let Some(c) = raw.cache {
            for (key, v, into) in [
                ("cache.memory", c.memory, &mut cache.memory_bytes),
                ("cache.disk", c.disk, &mut cache.disk_bytes),
                ("cache.index_disk", c.index_disk, &mut cache.index_disk_bytes),
            ] {
                if let Some(v) = v {
                    match v.bytes() {
                        Ok(b) => *into = b,
                        Err(e) => problem(key, e),
                    }
                }
            }
        }
        let store = store::validate(raw.store, &mut problem);
        let mut webhooks = WebhooksConfig::default();
        if let Some(w) = raw.webhooks {
            webhooks.allow_private = w.allow_private.unwrap_or(false);
            match w.max_attempts {
                None => {}
                Some(n @ 1..=MAX_WEBHOOK_ATTEMPTS) => webhooks.max_attempts = n as u32,
                Some(n) => problem(
                    "webhooks.max_attempts",
                    format!("{n} is out of range: 1 to {MAX_WEBHOOK_ATTEMPTS}"),
                ),
            }
            for (key, value, slot) in [
                ("webhooks.retry_base", w.retry_base, &mut webhooks.retry_base),
                ("webhooks.timeout", w.timeout, &mut webhooks.timeout),
                ("webhooks.retention", w.retention, &mut webhooks.retention),
            ] {
                if let Some(v) = value {
                    match units::parse_duration(&v) {
                        Ok(d) if !d.is_zero() => *slot = d,
                        Ok(_) => problem(key, "must be more than 0".into()),
                        Err(e) => problem(key, e),
                    }
                }
            }
        }
        let mut shutdown_grace = Duration::from_secs(30);
        if let Some(g) = raw.shutdown_grace {
            match units::parse_duration(&g) {
                Ok(d) => shutdown_grace = d,
                Err(e) => problem("shutdown_grace", e),
            }
        }

        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let workers = match raw.workers {
            None | Some(0) => cores,
            Some(n) if n <= MAX_WORKERS => usize::try_from(n).unwrap_or(cores),
            Some(n) => {
                problem(
                    "workers",
                    format!("{n} worker threads is more than the limit of {MAX_WORKERS}; use about one per CPU core (0 = one per core)"),
                );
                cores
            }
        };

        let mut registries = BTreeMap::new();
        for (name, r) in raw.registries.unwrap_or_default() {
            let key = format!("registries.{name}");
            let kind = match r.kind.as_deref() {
                Some("hosted") => RegistryKind::Hosted,
                Some("proxy") => RegistryKind::Proxy,
                Some(other) => {
                    problem(
                        &format!("{key}.kind"),
                        format!("`{other}` is not a registry kind; use `hosted` or `proxy`"),
                    );
                    continue;
                }
                None => {
                    problem(
                        &format!("{key}.kind"),
                        "missing: set `kind = \"hosted\"` or `kind = \"proxy\"`".into(),
                    );
                    continue;
                }
            };
            let mut spec = RegistrySpec::new(&name, kind);
            spec.description = r.description.unwrap_or_default();
            spec.labels = r.labels.unwrap_or_default();
            spec.auth_required = r.auth_required.unwrap_or(false);
            spec.upstream = r.upstream;
            spec.ca_file = r.ca_file;
            spec.offline = r.offline.unwrap_or(false);
            spec.prune_index = r.prune_index.unwrap_or(false);
            spec.upstreams = r.upstreams.unwrap_or_default();
            spec.allow_upstream_names = r.allow_upstream_names.unwrap_or(false);
            match r.advisories.as_deref().map(AdvisoryMode::parse) {
                None => {}
                Some(Ok(m)) => spec.advisories = m,
                Some(Err(e)) => problem(&format!("{key}.advisories"), e),
            }
            spec.advisories_allow = r.advisories_allow.unwrap_or_default();
            if kind == RegistryKind::Proxy {
                // Named even when set to its no-op value: the key means nothing on a proxy.
                for (k, set) in [
                    ("allowed_licenses", r.allowed_licenses.is_some()),
                    ("allow_license_file_only", r.allow_license_file_only.is_some()),
                ] {
                    if set {
                        problem(&format!("{key}.{k}"), PROXY_LICENSE_RULE.into());
                    }
                }
            } else {
                spec.allowed_licenses = r.allowed_licenses.unwrap_or_default();
                spec.allow_license_file_only = r.allow_license_file_only.unwrap_or(false);
            }
            if let Some(n) = r.upstream_concurrency {
                match u32::try_from(n) {
                    Ok(v) if (1..=MAX_UPSTREAM_CONCURRENCY).contains(&n) => spec.upstream_concurrency = v,
                    _ => problem(
                        &format!("{key}.upstream_concurrency"),
                        format!("{n} is not between 1 and {MAX_UPSTREAM_CONCURRENCY}"),
                    ),
                }
            }
            match r.shadow.as_deref() {
                None | Some("crate") => spec.shadow = Shadow::Crate,
                Some("version") => spec.shadow = Shadow::Version,
                Some(other) => problem(
                    &format!("{key}.shadow"),
                    format!("`{other}` is not a shadow mode; use `crate` or `version`"),
                ),
            }
            for (k, v, into) in [
                ("index_ttl", r.index_ttl, &mut spec.index_ttl_secs),
                ("negative_ttl", r.negative_ttl, &mut spec.negative_ttl_secs),
                ("upstream_timeout", r.upstream_timeout, &mut spec.upstream_timeout_secs),
                (
                    "upstream_deadline",
                    r.upstream_deadline,
                    &mut spec.upstream_deadline_secs,
                ),
            ] {
                if let Some(v) = v {
                    match units::parse_duration(&v) {
                        Ok(d) => *into = d.as_secs(),
                        Err(e) => problem(&format!("{key}.{k}"), e),
                    }
                }
            }
            for p in spec.problems(&key) {
                problem(&p.key, p.message);
            }
            registries.insert(name, spec);
        }
        for spec in registries.values() {
            for up in &spec.upstreams {
                match registries.get(up) {
                    Some(u) if u.kind == RegistryKind::Proxy => {
                        if let Some(message) = merge_exposure(spec, u) {
                            problems.push(Problem {
                                key: format!("registries.{}.upstreams", spec.name),
                                message,
                            });
                        }
                    }
                    Some(_) => problems.push(Problem {
                        key: format!("registries.{}.upstreams", spec.name),
                        message: format!("`{up}` is a hosted registry; upstreams must be proxy registries"),
                    }),
                    None => problems.push(Problem {
                        key: format!("registries.{}.upstreams", spec.name),
                        message: format!("no registry named `{up}` is declared"),
                    }),
                }
            }
        }

        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Config {
            listen,
            public_url,
            data_dir,
            tls,
            limits,
            cache,
            shutdown_grace,
            workers,
            store,
            webhooks,
            registries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        let raw = raw::RawConfig::from_str(s, Path::new("test.toml"))?;
        Config::from_raw(raw, &Overrides::default())
    }

    #[test]
    fn advisory_modes_and_allow_lists_are_checked() {
        let c = parse(
            "[registries.p]\nkind = \"proxy\"\nadvisories = \"deny\"\nadvisories_allow = [\"RUSTSEC-2024-0001\"]\n[registries.q]\nkind = \"proxy\"\n",
        )
        .unwrap();
        assert_eq!(c.registries["p"].advisories, AdvisoryMode::Deny);
        assert_eq!(c.registries["p"].advisories_allow, ["RUSTSEC-2024-0001"]);
        assert_eq!(c.registries["q"].advisories, AdvisoryMode::Flag, "flag is the default");
        let raw = c.registries["p"].to_raw();
        assert_eq!(raw.advisories.as_deref(), Some("deny"));
        let e = parse("[registries.p]\nkind = \"proxy\"\nadvisories = \"block\"\nadvisories_allow = [\"CVE-1\"]\n")
            .unwrap_err();
        let ConfigError::Invalid(problems) = e else {
            panic!("{e}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["registries.p.advisories", "registries.p.advisories_allow"],
            "{problems:?}"
        );
        assert!(problems[0].message.contains("`block`") && problems[0].message.contains("`deny`"));
        assert!(problems[1].message.contains("`CVE-1`"));
        // Stored specs of earlier releases (no such fields) read as the default.
        let old: RegistrySpec = serde_json::from_str(r#"{"name":"p","kind":"proxy"}"#).unwrap();
        assert_eq!((old.advisories, old.advisories_allow.len()), (AdvisoryMode::Flag, 0));
    }

    #[test]
    fn embedded_default_has_local() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.registries["local"].kind, RegistryKind::Hosted);
        assert_eq!(c.registries["local"].upstreams, vec!["crates-io"]);
        assert_eq!(c.registries["crates-io"].kind, RegistryKind::Proxy);
        assert_eq!(
            c.registries["crates-io"].upstream, None,
            "the crates.io URL comes from a library constant"
        );
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
listen = "0.0.0.0:9000"
public_url = "https://cargo.example"
data_dir = "/var/lib/cargohold"
[limits]
max_crate_size = "20MiB"
[cache]
memory = "512MiB"
disk = "50GiB"
[registries.crates-io]
kind = "proxy"
index_ttl = "2m"
[registries.local]
kind = "hosted"
description = "Private crates"
labels = ["team=platform"]
upstreams = ["crates-io"]
shadow = "crate"
auth_required = false
"#,
        )
        .unwrap();
        assert_eq!(c.limits.max_crate_bytes, 20 << 20);
        assert_eq!(c.cache.memory_bytes, 512 << 20);
        assert_eq!(c.registries["crates-io"].index_ttl_secs, 120);
        assert_eq!(c.registries["local"].upstreams, vec!["crates-io"]);
    }

    #[test]
    fn described_config_parses_back_to_the_same() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        let prov = env::file_provenance(&Config::embedded_default(), false);
        let text = c.describe(&prov);
        let again = Config::from_raw(
            raw::RawConfig::from_str(&text, Path::new("x")).unwrap(),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn prune_index_is_a_proxy_setting_that_round_trips() {
        let c = parse("[registries.m]\nkind = \"proxy\"\noffline = true\nprune_index = true\n").unwrap();
        assert!(c.registries["m"].prune_index && c.registries["m"].offline);
        assert!(!parse("[registries.m]\nkind = \"proxy\"\n").unwrap().registries["m"].prune_index);
        let prov = env::file_provenance(&Config::embedded_default(), false);
        let again = parse(&c.describe(&prov)).unwrap();
        assert!(again.registries["m"].prune_index, "print-config keeps it");
        let e = parse("[registries.h]\nkind = \"hosted\"\nprune_index = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("registries.h.prune_index"), "{e}");
        // A spec stored before the setting existed reads as verbatim.
        let old: RegistrySpec = serde_json::from_str(r#"{"name":"m","kind":"proxy"}"#).unwrap();
        assert!(!old.prune_index);
    }

    #[test]
    fn licence_policy_is_a_hosted_setting_checked_entry_by_entry() {
        let c = parse(
            "[registries.h]\nkind = \"hosted\"\nallowed_licenses = [\"MIT\", \"Apache-2.0 WITH LLVM-exception\"]\nallow_license_file_only = true\n",
        )
        .unwrap();
        assert_eq!(
            c.registries["h"].allowed_licenses,
            ["MIT", "Apache-2.0 WITH LLVM-exception"]
        );
        assert!(c.registries["h"].allow_license_file_only);
        let prov = env::file_provenance(&Config::embedded_default(), false);
        let again = parse(&c.describe(&prov)).unwrap();
        assert_eq!(again.registries["h"], c.registries["h"], "print-config keeps it");
        // Each bad entry is named, under the key.
        let e = parse("[registries.h]\nkind = \"hosted\"\nallowed_licenses = [\"MIT\", \"Apache 2\", \"Nope-1.0\"]\n")
            .unwrap_err();
        let ConfigError::Invalid(problems) = e else {
            panic!("{e}")
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().all(|p| p.key == "registries.h.allowed_licenses"),
            "{problems:?}"
        );
        assert!(problems[0].message.contains("`Apache 2`"), "{problems:?}");
        assert!(problems[1].message.contains("`Nope-1.0`"), "{problems:?}");
        // A proxy with either key, even at its no-op value, names the key.
        for (k, v) in [("allowed_licenses", "[]"), ("allow_license_file_only", "false")] {
            let e = parse(&format!("[registries.p]\nkind = \"proxy\"\n{k} = {v}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("registries.p.{k}")) && e.contains("only hosted"),
                "{e}"
            );
        }
        // A spec stored before the policy existed loads without one.
        let old: RegistrySpec = serde_json::from_str(r#"{"name":"h","kind":"hosted"}"#).unwrap();
        assert!(old.allowed_licenses.is_empty() && !old.allow_license_file_only);
    }

    #[test]
    fn webhooks_settings_are_validated() {
        let c = parse("").unwrap();
        assert_eq!(c.webhooks, WebhooksConfig::default());
        assert!(!c.webhooks.allow_private);
        let c = parse(
            "[webhooks]\nallow_private = true\nmax_attempts = 3\nretry_base = \"50ms\"\ntimeout = \"2s\"\nretention = \"7d\"\n",
        )
        .unwrap();
        assert_eq!(
            c.webhooks,
            WebhooksConfig {
                allow_private: true,
                max_attempts: 3,
                retry_base: Duration::from_millis(50),
                timeout: Duration::from_secs(2),
                retention: Duration::from_secs(7 * 24 * 3600),
            }
        );
        let e = parse("[webhooks]\nmax_attempts = 0\nretry_base = \"soon\"\ntimeout = \"0s\"\nretention = \"0s\"\n")
            .unwrap_err()
            .to_string();
        for key in [
            "webhooks.max_attempts",
            "webhooks.retry_base",
            "webhooks.timeout",
            "webhooks.retention",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
        assert!(
            parse("[webhooks]\nallow_privat = true\n").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn a_shared_store_prints_without_its_password_and_reads_back() {
        let c = parse(
            "[store]\ndatabase = \"postgres://app:hunter2@db/cargohold\"\nblobs = \"s3://crates/prod\"\n[store.s3]\nendpoint = \"http://127.0.0.1:7480\"\nallow_http = true\n",
        )
        .unwrap();
        assert_eq!(
            c.store.database.as_ref().unwrap().expose(),
            "postgres://app:hunter2@db/cargohold"
        );
        assert_eq!(c.store.s3.as_ref().unwrap().bucket, "crates");
        let prov = env::file_provenance(&Config::embedded_default(), false);
        let text = c.describe(&prov);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!format!("{c:?}").contains("hunter2"));
        let again = parse(&text).unwrap();
        assert_eq!(again.store.s3, c.store.s3);
        assert_eq!(
            again.store.database.unwrap().expose(),
            "postgres://app:***@db/cargohold"
        );
        // The embedded default says where it is.
        let text = parse("").unwrap().describe(&prov);
        assert!(text.contains("SQLite at <data_dir>/store/registry.db"), "{text}");
        // Unknown keys in [store] and [store.s3] are named.
        for bad in ["[store]\ndatabse = \"x\"\n", "[store.s3]\nbukket = \"x\"\n"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("databse") || e.contains("bukket"), "{e}");
        }
        // The environment sets them too (a Secret in Kubernetes).
        let env: BTreeMap<String, String> = [
            ("CARGOHOLD_STORE_DATABASE".to_owned(), "postgres://db/x".to_owned()),
            ("CARGOHOLD_STORE_S3_ALLOW_HTTP".to_owned(), "maybe".to_owned()),
        ]
        .into();
        let e = Config::load_layered(None, &Overrides::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("store.s3.allow_http") && e.contains("CARGOHOLD_STORE_S3_ALLOW_HTTP"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("listen = \"127.0.0.1:1\"\nlisten_port = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_port"), "{e}");
        let e = parse("[registries.a]\nkind = \"hosted\"\ncolour = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn workers_default_to_one_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(parse("").unwrap().workers, cores);
        assert_eq!(parse("workers = 0").unwrap().workers, cores);
        assert_eq!(parse("workers = 3").unwrap().workers, 3);
    }

    #[test]
    fn every_problem_is_listed() {
        let e = parse(
            r#"
listen = "nowhere"
workers = 100000
[limits]
max_crate_size = "ten"
[registries.Bad]
kind = "hosted"
[registries.p]
kind = "proxy"
upstreams = ["x"]
upstream_concurrency = 0
[registries.h]
kind = "hosted"
upstreams = ["missing"]
shadow = "maybe"
[registries.k]
kind = "warehouse"
"#,
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = e else {
            panic!("{e}")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "listen",
            "workers",
            "limits.max_crate_size",
            "registries.Bad.name",
            "registries.p.upstreams",
            "registries.p.upstream_concurrency",
            "registries.h.upstreams",
            "registries.h.shadow",
            "registries.k.kind",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn ca_file_and_upstream_limits_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing\n").unwrap();
        // Decodes as PEM, but is no certificate: refused at load, not at first use.
        let bogus = dir.path().join("bogus.pem");
        std::fs::write(&bogus, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        for (path, want) in [
            (dir.path().join("missing.pem"), "cannot read"),
            (empty, "holds no certificate"),
            (bogus, "unusable certificate"),
        ] {
            let e = parse(&format!(
                "[registries.p]\nkind = \"proxy\"\nca_file = {:?}\n",
                path.to_str().unwrap()
            ))
            .unwrap_err();
            let ConfigError::Invalid(problems) = e else {
                panic!("{e}")
            };
            assert!(
                problems
                    .iter()
                    .any(|p| p.key == "registries.p.ca_file" && p.message.contains(want)),
                "{problems:?}"
            );
        }
        let e = parse("[registries.h]\nkind = \"hosted\"\nca_file = \"x.pem\"\n").unwrap_err();
        assert!(e.to_string().contains("registries.h.ca_file"), "{e}");
        let c = parse(
            "[limits]\nmax_upstream_index_size = \"1MiB\"\nmax_upstream_crate_size = \"2MiB\"\n\
             [registries.p]\nkind = \"proxy\"\nupstream_deadline = \"90s\"\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_upstream_index_bytes, 1 << 20);
        assert_eq!(c.limits.max_upstream_crate_bytes, 2 << 20);
        assert_eq!(c.registries["p"].upstream_deadline_secs, 90);
        assert_eq!(Limits::default().max_upstream_index_bytes, 20 << 20);
        assert!(parse("[registries.p]\nkind = \"proxy\"\nupstream_deadline = \"0s\"\n").is_err());
    }
}
