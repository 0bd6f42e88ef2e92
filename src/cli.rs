//! The command line: `serve`, `check-config`, `print-config`, and the admin commands
//! (`registry`, `user`, `token`), which talk to a running daemon's admin API.
//! Exit codes: 0 ok, 64 bad usage or config, 1 other failure.

pub mod advisories;
pub mod bundle;
pub mod progress;
pub mod quarantine;
pub mod warm;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

/// Exit code for bad usage or configuration (`EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;
/// Exit code for other failures.
pub const EXIT_FAILURE: i32 = 1;

/// cargohold: a self-hosted Cargo registry.
#[derive(Debug, Parser)]
#[command(name = "cargohold", version, about)]
pub struct Cli {
    /// Base URL of the running daemon, for admin commands.
    #[arg(
        long,
        global = true,
        env = "CARGOHOLD_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Log format for `serve`: `text` or `json`.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the config comes from.
#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// TOML config file; without it the embedded default is used (a `crates-io` proxy and a hosted
    /// registry `local` merged over it).
    #[arg(long, env = "CARGOHOLD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides the file).
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory (overrides the file).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// URL advertised in config.json (overrides the file).
    #[arg(long)]
    pub public_url: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ConfigArgs),
    /// Validate the configuration and list every problem.
    CheckConfig(ConfigArgs),
    /// Print the effective configuration.
    PrintConfig(ConfigArgs),
    /// Manage registries (through the admin API).
    #[command(subcommand)]
    Registry(RegistryCmd),
    /// Manage users (through the admin API).
    #[command(subcommand)]
    User(UserCmd),
    /// Manage API tokens (through the admin API).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Manage webhooks and their deliveries (through the admin API).
    #[command(subcommand)]
    Hook(HookCmd),
    /// Quarantined `.crate` files, taken out of the cache because the upstream index no
    /// longer lists them (through the admin API; `list --data-dir` reads a data directory).
    #[command(subcommand)]
    Quarantine(quarantine::QuarantineCmd),
    /// The security advisory database (RustSec): import it, show its status.
    #[command(subcommand)]
    Advisories(AdvisoriesCmd),
    /// Fill a registry's caches with the crates of lockfiles or a list (through the daemon).
    Warm {
        /// The registry to warm (a proxy, or a hosted registry with upstreams).
        #[arg(long)]
        registry: String,
        /// A Cargo.lock whose registry packages to fetch (repeatable).
        #[arg(long = "lockfile")]
        lockfiles: Vec<PathBuf>,
        /// A file with one crate per line: `name` (newest), `name@REQ` (newest matching a
        /// cargo version requirement) or `name@=VERSION` (exactly).
        #[arg(long = "crates")]
        crates: Option<PathBuf>,
        /// Fetch the index files only, no crate files.
        #[arg(long)]
        index_only: bool,
        /// For names without a version: every version instead of the newest.
        #[arg(long)]
        all_versions: bool,
        /// Downloads in parallel.
        #[arg(long, default_value_t = 8)]
        jobs: usize,
    },
    /// List the stored `.crate` blobs that no version names (left by a crash mid-publish or a
    /// deleted registry); with `--apply`, delete them. Works on the store of the config's data
    /// directory, with the daemon running or not.
    Gc {
        #[command(flatten)]
        config: ConfigArgs,
        /// Delete what is listed.
        #[arg(long)]
        apply: bool,
        /// Leave blobs written more recently than this alone (at least 1m), so a publish in
        /// flight is never raced.
        #[arg(long, default_value = "1h")]
        grace: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a verified bundle (tar + zstd with a manifest) of a proxy registry's cached index
    /// files and `.crate` files (for an air-gapped mirror), or of a hosted registry's crates (a
    /// backup). Streams it from the running daemon (`--server`, with CARGOHOLD_ADMIN_TOKEN) and
    /// verifies it before it gets its name; with `--data-dir` or `--config`, reads a stopped
    /// daemon's data directory instead.
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        /// The registry to export.
        #[arg(long)]
        registry: String,
        /// The bundle file to write.
        #[arg(long)]
        out: PathBuf,
        /// Limit the export to the registry packages of this Cargo.lock (repeatable).
        #[arg(long = "lockfile")]
        lockfiles: Vec<PathBuf>,
        /// Limit the export to a list: one crate per line, `name` (every cached version),
        /// `name@REQ` or `name@=VERSION`.
        #[arg(long = "crates")]
        crates: Option<PathBuf>,
        /// An earlier bundle: leave out what it (and the bundles it builds on) holds, and
        /// record it as this bundle's base.
        #[arg(long)]
        since: Option<PathBuf>,
    },
    /// Copy the embedded store of a data dir (SQLite + blob files) into the PostgreSQL
    /// database and S3 bucket that FILE's [store] names: the step from one node to several.
    /// Stop the daemon first. Idempotent: a second run changes nothing, one cut short
    /// resumes; the result is verified by counts and by hashing every blob read back. A
    /// target that holds other data is refused.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
        /// Config file whose [store] names the target (both `database` and `blobs`); only its
        /// [store] is used, the environment is not read for it.
        #[arg(long = "to-config", value_name = "FILE")]
        to_config: PathBuf,
    },
    /// Verify a bundle completely, then add its content to a registry, all or nothing: uploaded
    /// to the running daemon (`--server`, with CARGOHOLD_ADMIN_TOKEN), which serves it at once;
    /// with `--data-dir` or `--config`, written into a stopped daemon's data directory.
    Import {
        #[command(flatten)]
        config: ConfigArgs,
        /// The bundle file.
        file: PathBuf,
        /// The registry to import into (default: the bundle's source registry name); naming it
        /// also lets a bundle of another upstream into an online proxy.
        #[arg(long)]
        registry: Option<String>,
    },
}

/// `cargohold advisories ...`: through the running daemon (`--server`, with
/// CARGOHOLD_ADMIN_TOKEN), or with `--data-dir` / `--config` on the store directly.
#[derive(Debug, Subcommand)]
pub enum AdvisoriesCmd {
    /// Replace the advisory database with a RustSec advisory-db checkout (DIR) or an archive
    /// of one (FILE: .tar.gz, .tgz, .tar.zst, .tar). Withdrawn advisories are left out; one
    /// malformed file fails the import, which then changes nothing.
    Import {
        #[command(flatten)]
        config: ConfigArgs,
        /// The checkout or archive.
        source: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The database's date (newest advisory, import time), counts, and each registry's mode.
    Status {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Registry settings shared by create and update.
#[derive(Debug, Args, Clone, Default)]
pub struct RegistryFields {
    /// Free-text description.
    #[arg(long)]
    pub description: Option<String>,
    /// Label `key` or `key=value` (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Proxy: upstream sparse index URL (default crates.io).
    #[arg(long)]
    pub upstream: Option<String>,
    /// Hosted: proxy registries merged under the local crates (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub upstreams: Option<Vec<String>>,
    /// Hosted: `crate` or `version`.
    #[arg(long)]
    pub shadow: Option<String>,
    /// Hosted: allow publishing new names that exist upstream.
    #[arg(long)]
    pub allow_upstream_names: Option<bool>,
    /// Proxy: never contact the upstream.
    #[arg(long)]
    pub offline: Option<bool>,
    /// Proxy: serve each index file cut down to the versions whose `.crate` is cached.
    #[arg(long)]
    pub prune_index: Option<bool>,
    /// Proxy: PEM file (a path on the daemon's host) of extra roots trusted for the upstream;
    /// `""` removes it.
    #[arg(long)]
    pub ca_file: Option<String>,
    /// Hosted: SPDX licences a published crate's `license` must be satisfiable from
    /// (comma-separated, e.g. `MIT,Apache-2.0`); `""` removes the policy.
    #[arg(long, value_delimiter = ',')]
    pub allowed_licenses: Option<Vec<String>>,
    /// Hosted, with --allowed-licenses: accept a crate with a `license-file` but no `license`.
    #[arg(long)]
    pub allow_license_file_only: Option<bool>,
    /// Proxy, or hosted with upstreams: `off`, `flag` or `deny` for versions an imported
    /// security advisory affects.
    #[arg(long)]
    pub advisories: Option<String>,
    /// Advisory ids this registry ignores (comma-separated, e.g. `RUSTSEC-2024-0001`); `""`
    /// empties the list.
    #[arg(long, value_delimiter = ',')]
    pub advisories_allow: Option<Vec<String>>,
}

/// `cargohold registry ...`
#[derive(Debug, Subcommand)]
pub enum RegistryCmd {
    /// Create a registry.
    Create {
        name: String,
        /// `hosted` or `proxy`.
        #[arg(long)]
        kind: String,
        /// Reads need a token with the `read` scope.
        #[arg(long)]
        auth_required: bool,
        #[command(flatten)]
        fields: RegistryFields,
    },
    /// List registries.
    List,
    /// Show one registry.
    Show { name: String },
    /// Change settings of a registry.
    Update {
        name: String,
        /// `true` or `false`.
        #[arg(long)]
        auth_required: Option<bool>,
        #[command(flatten)]
        fields: RegistryFields,
    },
    /// Delete a registry (a hosted registry with crates needs --force).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

/// `cargohold user ...`
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Add {
        login: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List users.
    List,
}

/// `cargohold token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; prints the secret (shown once) on stdout.
    Create {
        #[arg(long)]
        user: String,
        /// Scopes, comma-separated: read, publish, yank, owners, admin (default: all but admin).
        #[arg(long, value_delimiter = ',')]
        scope: Option<Vec<String>>,
        /// Limit the token to a registry (repeatable).
        #[arg(long = "registry")]
        registries: Vec<String>,
        /// Expiry: a duration (`90d`) or a date (`2027-01-31T00:00:00Z`).
        #[arg(long)]
        expires: Option<String>,
        /// A label for listings.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

/// `cargohold hook ...`
#[derive(Debug, Subcommand)]
pub enum HookCmd {
    /// Create a hook; deliveries are signed with the secret read from --secret-file.
    Create {
        #[arg(long)]
        url: String,
        /// A file holding the signing secret (its surrounding whitespace is dropped).
        #[arg(long)]
        secret_file: PathBuf,
        /// Only this registry's events (default: every registry).
        #[arg(long)]
        registry: Option<String>,
        /// Events, comma-separated (default: all): crate.published, crate.yanked,
        /// crate.unyanked, crate.owners_changed, registry.changed.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// List hooks (never their secrets).
    List,
    /// Delete a hook and its deliveries.
    Delete { id: String },
    /// Show a hook's latest deliveries and their attempts.
    Deliveries { id: String },
    /// Send a delivery again (same delivery id).
    Redeliver { delivery: String },
}

/// A failed CLI command: message and exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    fn usage(m: impl Into<String>) -> Self {
        CliError {
            code: EXIT_USAGE,
            message: m.into(),
        }
    }
    fn failure(m: impl Into<String>) -> Self {
        CliError {
            code: EXIT_FAILURE,
            message: m.into(),
        }
    }
}

/// `cargohold migrate --to-config FILE`: copies the embedded store of `source` into the shared
/// store FILE names (see [`crate::store::migrate::copy_store`]) and prints what it did.
pub async fn migrate(source: &crate::config::Config, to_config: &std::path::Path) -> Result<(), CliError> {
    use crate::config::{Config, Overrides};
    if !source.store.is_embedded() {
        return Err(CliError::usage(
            "the source must be an embedded store (SQLite and blob files under data_dir), but its config names a [store]; run migrate with the config of the single node",
        ));
    }
    let store_dir = source.data_dir.join("store");
    if !store_dir.join("registry.db").is_file() {
        return Err(CliError::usage(format!(
            "there is no store in {}; pass the node's --data-dir or --config",
            store_dir.display()
        )));
    }
    let target = Config::load(Some(to_config), &Overrides::default())
        .map_err(|e| CliError::usage(format!("{}: {e}", to_config.display())))?;
    let (Some(db), Some(s3)) = (&target.store.database, &target.store.s3) else {
        return Err(CliError::usage(format!(
            "{} must name the target in [store]: both database = \"postgres://...\" and blobs = \"s3://BUCKET/PREFIX\"",
            to_config.display()
        )));
    };
    let from = crate::app::open_store_beside_daemon(source)
        .await
        .map_err(|e| CliError::failure(format!("{e:#}")))?;
    // Nothing of the target is local but the spool of uploads, kept beside the source.
    let scratch = source.data_dir.join("migrate-scratch");
    let to = crate::store::PrivateStore::open(&target.store, &scratch, &crate::config::env::ProcessEnv, false)
        .await
        .map_err(|e| CliError::failure(format!("{}: {e}", crate::app::describe_store(&target))))?;
    eprintln!(
        "copying the store in {} to {} and {}",
        store_dir.display(),
        db.redacted(),
        s3.url()
    );
    let mut sent = 0u64;
    let done = crate::store::migrate::copy_store(&from, &to, &mut |_| {
        sent += 1;
        if sent % 500 == 0 {
            eprintln!("  {sent} blobs sent");
        }
    })
    .await;
    let _ = from.meta.close().await;
    let _ = to.meta.close().await;
    let _ = std::fs::remove_dir_all(&scratch);
    let done = done.map_err(|e| CliError::failure(format!("migration failed: {e}")))?;
    println!(
        "blobs: {} named by versions; {} sent ({} bytes), {} already in {}",
        done.blobs,
        done.blobs_copied,
        done.bytes_copied,
        done.blobs - done.blobs_copied - done.missing_blobs,
        s3.url()
    );
    if done.missing_blobs > 0 {
        println!(
            "warning: {} version(s) have no blob in the source; they were carried over as they were",
            done.missing_blobs
        );
    }
    println!(
        "metadata: {}",
        if done.imported {
            "imported in one transaction"
        } else {
            "imported by an earlier run; nothing changed"
        }
    );
    let c = done.counts;
    println!(
        "verified: {} registries, {} crates, {} versions, {} owners, {} users, {} tokens on both sides; every blob read back matches its SHA-256",
        c.registries, c.crates, c.versions, c.owners, c.users, c.tokens
    );
    println!("next: start the nodes with the [store] of {}", to_config.display());
    Ok(())
}

/// Client of the admin API.
pub struct AdminClient {
    server: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// Token from `CARGOHOLD_ADMIN_TOKEN`, else from `./cargohold-data/admin-token`.
    pub fn from_env(server: &str) -> Result<Self, CliError> {
        let token = std::env::var("CARGOHOLD_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| {
                let p = PathBuf::from(crate::config::DEFAULT_DATA_DIR).join(crate::registry::admin::ADMIN_TOKEN_FILE);
                std::fs::read_to_string(p).ok()
            })
            .map(|t| t.trim().to_owned())
            .ok_or_else(|| {
                CliError::usage(
                    "no admin token: set CARGOHOLD_ADMIN_TOKEN (the daemon wrote one to <data_dir>/admin-token on first start)",
                )
            })?;
        // The same trust as the daemon's upstream client: the platform's store (a daemon whose
        // certificate comes from a company CA is trusted wherever curl would trust it).
        let tls = crate::upstream::tls::client_config(None).map_err(CliError::failure)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| CliError::failure(e.to_string()))?;
        Ok(AdminClient {
            server: server.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// A request to `/-/api/v1/{path}` with the admin token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/-/api/v1/{path}", self.server);
        self.http.request(method, &url).header("Authorization", &self.token)
    }

    /// Sends a request, with an error that says what to do when the daemon is unreachable.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        req.send().await.map_err(|e| {
            CliError::failure(format!(
                "cannot reach cargohold at {}: {e}; is `cargohold serve` running? (set --server or CARGOHOLD_SERVER)",
                self.server
            ))
        })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}/-/api/v1/{path}", self.server);
        let mut req = self.http.request(method, &url).header("Authorization", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            CliError::failure(format!(
                "cannot reach cargohold at {}: {e}; is `cargohold serve` running? (set --server or CARGOHOLD_SERVER)",
                self.server
            ))
        })?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let detail = error_detail(status, &value);
        Err(
            if status.is_client_error() && status.as_u16() != 401 && status.as_u16() != 403 {
                CliError::usage(detail)
            } else {
                CliError::failure(detail)
            },
        )
    }
}

/// What a failed admin API answer says: the first `detail` of Cargo's JSON error body, else the
/// status.
pub(crate) fn error_detail(status: reqwest::StatusCode, body: &Value) -> String {
    body["errors"][0]["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| status.to_string())
}

fn fields_json(f: &RegistryFields, out: &mut serde_json::Map<String, Value>) {
    if let Some(d) = &f.description {
        out.insert("description".into(), json!(d));
    }
    if !f.labels.is_empty() {
        out.insert("labels".into(), json!(f.labels));
    }
    if let Some(u) = &f.upstream {
        out.insert("upstream".into(), json!(u));
    }
    if let Some(u) = &f.upstreams {
        out.insert("upstreams".into(), json!(u));
    }
    if let Some(s) = &f.shadow {
        out.insert("shadow".into(), json!(s));
    }
    if let Some(a) = f.allow_upstream_names {
        out.insert("allow_upstream_names".into(), json!(a));
    }
    if let Some(o) = f.offline {
        out.insert("offline".into(), json!(o));
    }
    if let Some(p) = f.prune_index {
        out.insert("prune_index".into(), json!(p));
    }
    if let Some(c) = &f.ca_file {
        out.insert("ca_file".into(), json!(c));
    }
    if let Some(l) = &f.allowed_licenses {
        let list: Vec<&str> = l.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        out.insert("allowed_licenses".into(), json!(list));
    }
    if let Some(a) = f.allow_license_file_only {
        out.insert("allow_license_file_only".into(), json!(a));
    }
    if let Some(m) = &f.advisories {
        out.insert("advisories".into(), json!(m));
    }
    if let Some(l) = &f.advisories_allow {
        let list: Vec<&str> = l.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        out.insert("advisories_allow".into(), json!(list));
    }
}

fn print_registry_line(r: &Value) {
    let labels = r["labels"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    println!(
        "{:<20} {:<7} {:>6} crates  auth_required={:<5} labels=[{}]  {}",
        r["name"].as_str().unwrap_or(""),
        r["kind"].as_str().unwrap_or(""),
        r["crates"],
        r["auth_required"],
        labels,
        r["description"].as_str().unwrap_or("")
    );
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Runs an admin command.
pub async fn run_admin(server: &str, command: Command) -> Result<(), CliError> {
    let client = AdminClient::from_env(server)?;
    use reqwest::Method as M;
    match command {
        Command::Registry(cmd) => match cmd {
            RegistryCmd::Create {
                name,
                kind,
                auth_required,
                fields,
            } => {
                if kind != "hosted" && kind != "proxy" {
                    return Err(CliError::usage(format!(
                        "--kind must be `hosted` or `proxy`, not `{kind}`"
                    )));
                }
                let mut body = serde_json::Map::new();
                body.insert("name".into(), json!(name));
                body.insert("kind".into(), json!(kind));
                body.insert("auth_required".into(), json!(auth_required));
                fields_json(&fields, &mut body);
                let r = client.call(M::POST, "registries", Some(Value::Object(body))).await?;
                println!(
                    "created registry `{name}`; index URL: {}",
                    r["index"].as_str().unwrap_or("")
                );
            }
            RegistryCmd::List => {
                let r = client.call(M::GET, "registries", None).await?;
                for reg in r["registries"].as_array().into_iter().flatten() {
                    print_registry_line(reg);
                }
            }
            RegistryCmd::Show { name } => println!(
                "{}",
                pretty(&client.call(M::GET, &format!("registries/{name}"), None).await?)
            ),
            RegistryCmd::Update {
                name,
                auth_required,
                fields,
            } => {
                let mut body = serde_json::Map::new();
                if let Some(a) = auth_required {
                    body.insert("auth_required".into(), json!(a));
                }
                fields_json(&fields, &mut body);
                if body.is_empty() {
                    return Err(CliError::usage(
                        "nothing to update: pass at least one setting (see --help)",
                    ));
                }
                let r = client
                    .call(M::PATCH, &format!("registries/{name}"), Some(Value::Object(body)))
                    .await?;
                println!("{}", pretty(&r));
            }
            RegistryCmd::Delete { name, force } => {
                let path = format!("registries/{name}{}", if force { "?force=true" } else { "" });
                let r = client.call(M::DELETE, &path, None).await?;
                println!("{}", r["msg"].as_str().unwrap_or("deleted"));
            }
        },
        Command::User(cmd) => match cmd {
            UserCmd::Add { login, name } => {
                let r = client
                    .call(M::POST, "users", Some(json!({"login": login, "name": name})))
                    .await?;
                println!("created user `{login}` (id {})", r["id"]);
            }
            UserCmd::List => {
                let r = client.call(M::GET, "users", None).await?;
                for u in r["users"].as_array().into_iter().flatten() {
                    println!(
                        "{:>6}  {:<24} {}",
                        u["id"],
                        u["login"].as_str().unwrap_or(""),
                        u["name"].as_str().unwrap_or("")
                    );
                }
            }
        },
        Command::Token(cmd) => match cmd {
            TokenCmd::Create {
                user,
                scope,
                registries,
                expires,
                name,
            } => {
                let body = json!({"user": user, "scopes": scope, "registries": if registries.is_empty() { None } else { Some(registries) }, "expires": expires, "name": name});
                let r = client.call(M::POST, "tokens", Some(body)).await?;
                eprintln!(
                    "created token {} for `{user}` with scopes {}; it is shown only once:",
                    r["id"].as_str().unwrap_or(""),
                    r["scopes"]
                );
                println!("{}", r["token"].as_str().unwrap_or(""));
            }
            TokenCmd::List { user } => {
                let path = match user {
                    Some(u) => format!("tokens?user={u}"),
                    None => "tokens".into(),
                };
                let r = client.call(M::GET, &path, None).await?;
                for t in r["tokens"].as_array().into_iter().flatten() {
                    println!(
                        "{}  user={:<16} scopes={} registries={} expires={} name={}",
                        t["id"].as_str().unwrap_or(""),
                        t["user"].as_str().unwrap_or(""),
                        t["scopes"],
                        t["registries"],
                        t["expires"],
                        t["name"].as_str().unwrap_or("")
                    );
                }
            }
            TokenCmd::Revoke { id } => {
                let r = client.call(M::DELETE, &format!("tokens/{id}"), None).await?;
                println!("{}", r["msg"].as_str().unwrap_or("revoked"));
            }
        },
        Command::Hook(cmd) => match cmd {
            HookCmd::Create {
                url,
                secret_file,
                registry,
                events,
            } => {
                let secret = std::fs::read_to_string(&secret_file).map_err(|e| {
                    CliError::usage(format!("cannot read the secret file {}: {e}", secret_file.display()))
                })?;
                let body = json!({"url": url, "secret": secret.trim(), "registry": registry, "events": events});
                let r = client.call(M::POST, "hooks", Some(body)).await?;
                println!("{}", r["id"].as_str().unwrap_or(""));
                eprintln!("created hook for {}", r["url"].as_str().unwrap_or(""));
            }
            HookCmd::List => {
                let r = client.call(M::GET, "hooks", None).await?;
                for h in r["hooks"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}  registry={} events={}",
                        h["id"].as_str().unwrap_or(""),
                        h["url"].as_str().unwrap_or(""),
                        h["registry"].as_str().unwrap_or("*"),
                        h["events"]
                    );
                }
            }
            HookCmd::Delete { id } => {
                let r = client.call(M::DELETE, &format!("hooks/{id}"), None).await?;
                println!("{}", r["msg"].as_str().unwrap_or("deleted"));
            }
            HookCmd::Deliveries { id } => {
                let r = client.call(M::GET, &format!("hooks/{id}/deliveries"), None).await?;
                for d in r["deliveries"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}  {}  attempts={} last_status={} last_error={}",
                        d["id"].as_str().unwrap_or(""),
                        d["event"].as_str().unwrap_or(""),
                        d["state"].as_str().unwrap_or(""),
                        d["attempts"],
                        d["last_status"],
                        d["last_error"].as_str().unwrap_or("-")
                    );
                    for a in d["attempt_log"].as_array().into_iter().flatten() {
                        println!(
                            "    attempt {} at={} status={} {}ms {}",
                            a["n"],
                            a["at"],
                            a["status"],
                            a["millis"],
                            a["error"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            HookCmd::Redeliver { delivery } => {
                let r = client
                    .call(M::POST, &format!("deliveries/{delivery}/redeliver"), None)
                    .await?;
                println!("{}", r["msg"].as_str().unwrap_or("queued"));
            }
        },
        Command::Quarantine(cmd) => quarantine::run(&client, cmd).await?,
        Command::Serve(_)
        | Command::CheckConfig(_)
        | Command::PrintConfig(_)
        | Command::Warm { .. }
        | Command::Gc { .. }
        | Command::Export { .. }
        | Command::Migrate { .. }
        | Command::Import { .. }
        | Command::Advisories(_) => {}
    }
    Ok(())
}

/// Runs `cargohold warm`. The token (for auth-required registries) comes from
/// `CARGOHOLD_TOKEN`, else `CARGOHOLD_ADMIN_TOKEN`.
pub async fn run_warm(server: &str, command: Command) -> Result<(), CliError> {
    let Command::Warm {
        registry,
        lockfiles,
        crates,
        all_versions,
        jobs,
        index_only,
    } = command
    else {
        return Ok(());
    };
    let wants = warm::wants(&lockfiles, crates.as_ref())?;
    let token = ["CARGOHOLD_TOKEN", "CARGOHOLD_ADMIN_TOKEN"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|t| !t.trim().is_empty()));
    warm::run(warm::WarmArgs {
        server: server.to_owned(),
        registry,
        token,
        wants,
        all_versions,
        jobs,
        index_only,
    })
    .await
}

/// Shortest grace period `gc` accepts.
pub const MIN_GC_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Parses `--grace` (`1h`, `30m`, ...); at least [`MIN_GC_GRACE`].
pub fn parse_grace(text: &str) -> Result<std::time::Duration, CliError> {
    let grace = humantime::parse_duration(text.trim())
        .map_err(|e| CliError::usage(format!("--grace `{text}` is not a duration like 1h or 30m: {e}")))?;
    if grace < MIN_GC_GRACE {
        return Err(CliError::usage(format!(
            "--grace must be at least 1m: a shorter one could collect the blob of a publish in flight (got `{text}`)"
        )));
    }
    Ok(grace)
}

/// Prints a gc report for people.
pub fn print_gc_report(r: &crate::store::gc::GcReport, grace: &str, apply: bool) {
    println!(
        "blobs: {} ({} referenced by a version, {} unreferenced but younger than {grace})",
        r.blobs, r.referenced, r.young
    );
    println!("garbage: {} blob(s), {}", r.garbage.len(), human_bytes(r.garbage_bytes));
    for g in &r.garbage {
        println!(
            "  {}  {:>10} bytes  written {}",
            g.sha256,
            g.len,
            format_unix(g.modified)
        );
    }
    if apply {
        println!("deleted: {} blob(s), {}", r.deleted, human_bytes(r.deleted_bytes));
    } else if !r.garbage.is_empty() {
        println!("nothing deleted; run again with --apply to delete them");
    }
}

fn format_unix(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {} ({n} bytes)", UNITS[unit])
}
