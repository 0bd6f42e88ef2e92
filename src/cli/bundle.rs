//! `cargohold export` / `cargohold import`: verified bundles of a registry's content, for
//! carrying a mirror across an air gap (a proxy's cached files) or backing up a hosted
//! registry. The format and the checks are in [`crate::registry::bundle`]; this module runs them
//! in one of two places:
//!
//! - **through a running daemon** (the default; `--server`, or `CARGOHOLD_SERVER`): the bundle
//!   streams out of `POST /-/api/v1/registries/{name}/export` into the file, which is then
//!   verified here before it gets its name; an import uploads the file to `POST
//!   /-/api/v1/import`, and the daemon verifies it completely before anything becomes
//!   visible, then drops its cached copies of what changed. Both need the admin token
//!   (`CARGOHOLD_ADMIN_TOKEN`);
//! - **on a stopped daemon's data directory** (`--data-dir` or `--config`), for a site where no
//!   daemon runs yet, or a backup of a stopped one.

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::progress::Progress as Shown;
use super::{AdminClient, CliError, EXIT_FAILURE, EXIT_USAGE};
use crate::cache::crate_files::CrateFiles;
use crate::cache::index_cache::IndexCache;
use crate::config::{Config, RegistryKind, RegistrySpec};
use crate::registry::bundle::{self as core, Reporter};
pub use crate::registry::bundle::{
    read_manifest, BundleError, Entry, ExportSummary, ImportSummary, Manifest, Source, FORMAT, FORMAT_VERSION,
    MANIFEST, RECORDS,
};

use super::warm::Want;

impl From<BundleError> for CliError {
    fn from(e: BundleError) -> Self {
        CliError {
            code: if e.usage { EXIT_USAGE } else { EXIT_FAILURE },
            message: e.message,
        }
    }
}

fn usage(m: impl Into<String>) -> CliError {
    CliError {
        code: EXIT_USAGE,
        message: m.into(),
    }
}

fn failure(m: impl Into<String>) -> CliError {
    CliError {
        code: EXIT_FAILURE,
        message: m.into(),
    }
}

/// A CLI progress display (bar on a terminal, plain lines otherwise) behind the core's trait.
struct Bar(Mutex<Option<Shown>>);

impl core::Progress for Bar {
    fn item(&self, bytes: u64) {
        if let Some(p) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            p.item(bytes);
        }
    }

    fn finish(&self) {
        if let Some(p) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            p.finish();
        }
    }
}

/// Progress on stderr for every phase.
pub fn reporter() -> Reporter {
    Arc::new(|label, items, bytes| Box::new(Bar(Mutex::new(Some(Shown::new(label, items, bytes))))))
}

/// Options of an export.
pub struct ExportArgs {
    pub registry: String,
    pub out: std::path::PathBuf,
    /// Limit to these crates (`--lockfile` / `--crates`); `None`: everything.
    pub wants: Option<Vec<Want>>,
    /// The previous bundle (`--since`).
    pub since: Option<std::path::PathBuf>,
}

/// The registry `name` as the data directory knows it: from the configuration, else from the
/// store (registries created through the admin API).
async fn find_spec(config: &Config, name: &str) -> Result<RegistrySpec, CliError> {
    if let Some(s) = config.registries.get(name) {
        return Ok(s.clone());
    }
    let store = crate::app::open_store(config)
        .await
        .map_err(|e| failure(format!("{e:#}")))?;
    let found = store.meta.registries().await;
    let _ = store.meta.close().await;
    let mut all = found.map_err(|e| failure(e.to_string()))?;
    match all.iter().position(|s| s.name == name) {
        Some(i) => Ok(all.swap_remove(i)),
        None => Err(usage(format!(
            "there is no registry `{name}` in the configuration or the store of {}",
            config.data_dir.display()
        ))),
    }
}

/// Opens a proxy's caches in the data directory (refused while the daemon runs: the index
/// cache's database is locked). The index cache goes first: opening the crate cache empties
/// its temp directory, which a running daemon's downloads use.
fn open_caches(config: &Config) -> Result<(IndexCache, Arc<CrateFiles>), CliError> {
    let cache_dir = config.data_dir.join("cache");
    let index = IndexCache::open(&cache_dir, 16 << 20, config.cache.index_disk_bytes).map_err(|e| {
        if e.0.contains("lock") || e.0.contains("WouldBlock") || e.0.contains("Resource temporarily") {
            failure(format!(
                "{}; is the daemon running on {}? stop it first, or leave out --data-dir/--config to go through it (--server)",
                e.0,
                config.data_dir.display()
            ))
        } else {
            failure(e.0)
        }
    })?;
    let crates = CrateFiles::open(&cache_dir.join("crates"), config.cache.disk_bytes)
        .map_err(|e| failure(format!("cannot open the crate cache in {}: {e}", cache_dir.display())))?;
    Ok((index, crates))
}

/// Writes a bundle of a registry of a stopped daemon's data directory.
pub async fn export(config: &Config, args: ExportArgs) -> Result<ExportSummary, CliError> {
    let spec = find_spec(config, &args.registry).await?;
    let prev = match &args.since {
        Some(p) => Some(read_manifest(p)?),
        None => None,
    };
    if spec.kind == RegistryKind::Hosted {
        let store = crate::app::open_store(config)
            .await
            .map_err(|e| failure(format!("{e:#}")))?;
        let result = async {
            let entries = core::hosted_plan(&store, &spec, args.wants.as_deref()).await?;
            let plan = core::plan(&spec, entries, prev)?;
            core::write_file(plan, &args.out, Some(store.blobs.clone()), reporter()).await
        }
        .await;
        let _ = store.meta.close().await;
        return Ok(result?);
    }
    let (index, crates) = open_caches(config)?;
    let entries = core::proxy_plan(&index, &crates, &spec, args.wants.as_deref()).await?;
    drop(index);
    let plan = core::plan(&spec, entries, prev)?;
    Ok(core::write_file(plan, &args.out, None, reporter()).await?)
}

/// Verifies a bundle completely, then adds its content to a registry of a stopped daemon's
/// data directory, all at once.
pub async fn import(config: &Config, file: &Path, registry: Option<&str>) -> Result<ImportSummary, CliError> {
    let manifest = read_manifest(file)?;
    let reg = registry.unwrap_or(&manifest.registry.name).to_owned();
    let spec = find_spec(config, &reg).await?;
    let label = file.display().to_string();
    core::check_target(&manifest, &spec, registry.is_some(), &label)?;
    if spec.kind == RegistryKind::Hosted {
        let store = crate::app::open_store(config)
            .await
            .map_err(|e| failure(format!("{e:#}")))?;
        // Under the blob store's temp directory: the daemon empties it when it opens the
        // store, so an import that was killed leaves nothing behind for long.
        let staging = config.data_dir.join("store/blobs/tmp");
        let input = core::Input::File(file);
        let max = config.limits.max_crate_bytes;
        let result = core::import_hosted(&store, &staging, max, input, &label, &manifest, &reg, &reporter()).await;
        let _ = store.meta.close().await;
        return Ok(result?);
    }
    let (index, crates) = open_caches(config)?;
    Ok(core::import_proxy(
        &index,
        &crates,
        config.limits.max_upstream_index_bytes,
        core::Input::File(file),
        &label,
        &manifest,
        &reg,
        &reporter(),
    )
    .await?)
}

/// The error of a failed admin API answer: a 400 is the request's fault (usage), anything
/// else (a refused bundle, 422; no token, 401) a failure.
async fn api_error(resp: reqwest::Response) -> CliError {
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    let detail = super::error_detail(status, &value);
    if status == reqwest::StatusCode::BAD_REQUEST || status == reqwest::StatusCode::NOT_FOUND {
        usage(detail)
    } else {
        failure(detail)
    }
}

/// Removes a partial download however the export ends, unless it was renamed.
struct Partial(std::path::PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes a bundle of a registry of the running daemon at `server`: streamed from its admin
/// API into `<out>.partial`, verified completely here, then renamed to `out`.
pub async fn export_via(server: &str, args: ExportArgs) -> Result<ExportSummary, CliError> {
    let client = AdminClient::from_env(server)?;
    let prev = match &args.since {
        Some(p) => Some(read_manifest(p)?),
        None => None,
    };
    let body = json!({
        "crates": args.wants.as_ref().map(|ws| ws.iter().map(Want::to_line).collect::<Vec<_>>()),
        "since": prev,
    });
    let resp = client
        .send(
            client
                .request(reqwest::Method::POST, &format!("registries/{}/export", args.registry))
                .json(&body),
        )
        .await?;
    if !resp.status().is_success() {
        return Err(api_error(resp).await);
    }
    let unchanged: usize = resp
        .headers()
        .get("x-cargohold-bundle-unchanged")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut partial = args.out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = Partial(partial.into());
    let io = |e: std::io::Error| failure(format!("cannot write {}: {e}", partial.0.display()));
    let mut file = tokio::fs::File::create(&partial.0).await.map_err(io)?;
    let shown = Shown::new("download", None, None);
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            failure(format!(
                "the export broke off: {e}; the daemon's log says why; no bundle was written"
            ))
        })?;
        file.write_all(&chunk).await.map_err(io)?;
        shown.item(chunk.len() as u64);
    }
    shown.finish();
    file.sync_all().await.map_err(io)?;
    drop(file);
    let manifest = read_manifest(&partial.0)?;
    core::verify(&partial.0, &manifest, &reporter()).await?;
    let file_bytes = std::fs::metadata(&partial.0).map_err(io)?.len();
    std::fs::rename(&partial.0, &args.out).map_err(|e| failure(format!("cannot write {}: {e}", args.out.display())))?;
    std::mem::forget(partial);
    Ok(ExportSummary {
        id: manifest.id.clone(),
        base: manifest.base.clone(),
        index_files: manifest.entries.iter().filter(|e| e.index.is_some()).count(),
        crate_files: manifest.entries.iter().filter(|e| e.krate.is_some()).count(),
        bytes: manifest.entries.iter().map(|e| e.size).sum(),
        file_bytes,
        unchanged,
    })
}

/// Imports a bundle into a registry of the running daemon at `server`: the file is uploaded
/// (after a check that the token and the registry are good, so a refusal does not wait for
/// the upload), and the daemon verifies all of it before anything becomes visible.
pub async fn import_via(server: &str, file: &Path, registry: Option<&str>) -> Result<ImportSummary, CliError> {
    let client = AdminClient::from_env(server)?;
    let manifest = read_manifest(file)?;
    let reg = registry.unwrap_or(&manifest.registry.name);
    let check = client
        .send(client.request(reqwest::Method::GET, &format!("registries/{reg}")))
        .await?;
    if !check.status().is_success() {
        return Err(api_error(check).await);
    }
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| usage(format!("cannot open {}: {e}", file.display())))?;
    let len = f
        .metadata()
        .await
        .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?
        .len();
    let shown = Arc::new(Shown::new("upload", None, Some(len)));
    let counted = shown.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 << 10).inspect(move |chunk| {
        if let Ok(c) = chunk {
            counted.item(c.len() as u64);
        }
    });
    let path = match registry {
        Some(r) => format!("import?registry={r}"),
        None => "import".to_owned(),
    };
    let resp = client
        .send(
            client
                .request(reqwest::Method::POST, &path)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .header(reqwest::header::CONTENT_TYPE, "application/zstd")
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await?;
    if let Ok(s) = Arc::try_unwrap(shown) {
        s.finish();
    }
    if !resp.status().is_success() {
        let e = api_error(resp).await;
        return Err(CliError {
            message: e.message.replace("the bundle", &file.display().to_string()),
            ..e
        });
    }
    resp.json::<ImportSummary>()
        .await
        .map_err(|e| failure(format!("the daemon's answer is not an import summary: {e}")))
}
