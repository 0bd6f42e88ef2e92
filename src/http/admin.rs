//! The admin API under `/-/api/v1/`: registries, users, tokens, bundles, hooks, quarantine. Every call needs the
//! `admin` scope, checked before any body is read. Bodies and answers are JSON (but for a
//! bundle, streamed out of `export` and uploaded to `import`); errors use Cargo's envelope like
//! everything else.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use serde_json::json;

use super::route::{query_param, Route};
use super::{json_ok, json_status, read_json, ApiError, HandlerResult};
use crate::config::RegistrySpec;
use crate::registry::admin::{NewToken, RegistryPatch};
use crate::registry::bundle;
use crate::registry::RegistryService;

/// Largest `export` request: the `since` bundle's manifest lists every entry of its chain.
const MAX_EXPORT_REQUEST: u64 = 256 << 20;
/// Most bytes of an advisory database upload (the compact JSON of the public database is
/// well under 1 MiB; `registry::advisories::MAX_ADVISORIES` bounds the count too).
const MAX_ADVISORY_UPLOAD: u64 = 32 << 20;
/// Size of the chunks a bundle streams in.
const CHUNK: usize = 256 << 10;

/// Body of `POST /-/api/v1/registries/{name}/export`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportRequest {
    /// `--crates` lines (`name`, `name@REQ`, `name@=VERSION`); absent: everything.
    #[serde(default)]
    crates: Option<Vec<String>>,
    /// The manifest of the bundle this one builds on (`--since`).
    #[serde(default)]
    since: Option<bundle::Manifest>,
}

/// A `Write` that sends what is written, in chunks, to a response body (blocking; from the
/// thread that writes the bundle). A client that went away fails the write, which stops the
/// export.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// The response streaming a planned bundle: written on a blocking thread as the client reads.
/// A failure halfway (a cached file gone or changed) aborts the body, so the client sees a
/// broken transfer, never a short bundle that looks whole.
fn stream_bundle(plan: bundle::Plan, blobs: Option<bundle::StoreBlobs>) -> Response<super::Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let id = plan.manifest.id.clone();
    let unchanged = plan.summary.unchanged;
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        // A panic must break the transfer off too: a body that simply ends looks whole.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            bundle::write_blocking(&plan, out, blobs.map(|b| (rt, b)), &bundle::silent())
        }))
        .unwrap_or_else(|_| {
            Err(bundle::BundleError {
                usage: false,
                message: "the export failed (a bug: see the daemon's log)".into(),
            })
        })
        .and_then(|mut w| {
            w.flush().map_err(|e| bundle::BundleError {
                usage: false,
                message: e.to_string(),
            })
        });
        match written {
            Ok(()) => {
                tracing::info!(registry = %plan.manifest.registry.name, bundle = %plan.manifest.id, "bundle exported")
            }
            Err(e) => {
                tracing::warn!(registry = %plan.manifest.registry.name, bundle = %plan.manifest.id, error = %e, "bundle export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.message)));
            }
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut resp = Response::new(StreamBody::new(chunks.map_ok(Frame::data)).boxed());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/zstd"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&id) {
        h.insert("x-cargohold-bundle-id", v);
    }
    h.insert("x-cargohold-bundle-unchanged", header::HeaderValue::from(unchanged));
    resp
}

/// The request body as a blocking `Read`, for the thread that reads an uploaded bundle.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Forwards the request body to a [`BodyReader`], refusing more than `cap` bytes (`over` is
/// set) and passing on a body that broke off as an error. Once the reader has stopped (the
/// bundle was refused halfway), the rest is read and dropped, so that the client, still
/// sending, gets the answer rather than a closed connection.
async fn forward_body(
    mut body: Incoming,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    cap: u64,
    over: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Err(e) => {
                let _ = tx
                    .send(Err(std::io::Error::other(format!("the upload broke off: {e}"))))
                    .await;
                return;
            }
        };
        len += data.len() as u64;
        if len > cap {
            over.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = tx
                .send(Err(std::io::Error::other(format!(
                    "the upload is larger than {cap} bytes"
                ))))
                .await;
            return;
        }
        if !tx.is_closed() {
            let _ = tx.send(Ok(data)).await;
        }
    }
}

/// Body of `POST /-/api/v1/users`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    login: String,
    name: Option<String>,
}

async fn registry_json(svc: &RegistryService, spec: &RegistrySpec) -> Result<serde_json::Value, super::ApiError> {
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    v["index"] = json!(svc.index_url(&spec.name));
    v["crates"] = json!(svc.crate_count(&spec.name).await?);
    Ok(v)
}

/// Dispatches an admin route.
pub async fn handle(
    svc: &Arc<RegistryService>,
    route: Route,
    req: Request<Incoming>,
    auth: Option<&str>,
) -> HandlerResult {
    // Refused before the body is read, so the connection closes after the answer.
    let admin = svc.require_admin(auth).await.map_err(|e| {
        let mut e = ApiError::from(e);
        e.close = true;
        e
    })?;
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_owned);
    match (route, method) {
        (Route::AdminRegistries, Method::GET) => {
            let mut list = Vec::new();
            for spec in svc.registries().values() {
                list.push(registry_json(svc, spec).await?);
            }
            Ok(json_ok(&json!({ "registries": list })))
        }
        (Route::AdminRegistries, _) => {
            let spec: RegistrySpec = read_json(req, svc.limits().max_json_bytes).await?;
            let created = svc.create_registry(spec, &admin.user).await?;
            Ok(json_status(StatusCode::CREATED, &registry_json(svc, &created).await?))
        }
        (Route::AdminRegistry { name }, Method::GET) => Ok(json_ok(&registry_json(svc, &*svc.registry(&name)?).await?)),
        (Route::AdminRegistry { name }, Method::PATCH) => {
            let patch: RegistryPatch = read_json(req, svc.limits().max_json_bytes).await?;
            let spec = svc.update_registry(&name, patch, &admin.user).await?;
            Ok(json_ok(&registry_json(svc, &spec).await?))
        }
        (Route::AdminRegistry { name }, _) => {
            let force = query_param(query.as_deref(), "force").is_some_and(|v| v == "true" || v == "1");
            svc.delete_registry(&name, force, &admin.user).await?;
            Ok(json_ok(
                &json!({"ok": true, "msg": format!("registry `{name}` deleted")}),
            ))
        }
        (Route::AdminHooks, Method::GET) => Ok(json_ok(&svc.list_hooks().await?)),
        (Route::AdminHooks, _) => {
            let new: crate::registry::webhooks::NewHook = read_json(req, svc.limits().max_json_bytes).await?;
            Ok(json_status(StatusCode::CREATED, &svc.create_hook(&admin, new).await?))
        }
        (Route::AdminHook { id }, _) => {
            svc.delete_hook(&id).await?;
            Ok(json_ok(&json!({"ok": true, "msg": format!("hook `{id}` deleted")})))
        }
        (Route::AdminHookDeliveries { id }, _) => Ok(json_ok(&svc.hook_deliveries(&id).await?)),
        (Route::AdminRedeliver { id }, _) => {
            svc.redeliver(&id).await?;
            Ok(json_ok(
                &json!({"ok": true, "msg": format!("delivery `{id}` queued again")}),
            ))
        }
        (Route::AdminQuarantine, _) => Ok(json_ok(&svc.quarantine_list())),
        (Route::AdminQuarantined { sha }, _) => {
            svc.purge_quarantined(&sha).await?;
            Ok(json_ok(
                &json!({"ok": true, "msg": format!("quarantined file {sha} purged")}),
            ))
        }
        (Route::AdminQuarantineRelease { sha }, _) => {
            svc.release_quarantined(&sha).await?;
            Ok(json_ok(
                &json!({"ok": true, "msg": format!("quarantined file {sha} released into the cache")}),
            ))
        }
        (Route::AdminAdvisories, Method::GET) => Ok(json_ok(&svc.advisories_status())),
        (Route::AdminAdvisories, _) => {
            let upload: crate::registry::advisories::AdvisoryUpload = read_json(req, MAX_ADVISORY_UPLOAD).await?;
            Ok(json_ok(&svc.import_advisories(upload).await?))
        }
        (Route::AdminUsers, Method::GET) => Ok(json_ok(&svc.list_users().await?)),
        (Route::AdminUsers, _) => {
            let u: NewUser = read_json(req, svc.limits().max_json_bytes).await?;
            Ok(json_status(
                StatusCode::CREATED,
                &svc.create_user(&u.login, u.name).await?,
            ))
        }
        (Route::AdminTokens, Method::GET) => {
            let user = query_param(query.as_deref(), "user");
            Ok(json_ok(&svc.list_tokens(user.as_deref()).await?))
        }
        (Route::AdminTokens, _) => {
            let t: NewToken = read_json(req, svc.limits().max_json_bytes).await?;
            Ok(json_status(StatusCode::CREATED, &svc.create_token(t).await?))
        }
        (Route::AdminExport { name }, _) => {
            let r: ExportRequest = read_json(req, MAX_EXPORT_REQUEST).await?;
            let wants = match r.crates {
                Some(lines) => Some(
                    crate::index::wants::from_list(&lines.join("\n"))
                        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("`crates`: {e}")))?,
                ),
                None => None,
            };
            let (plan, blobs) = svc.plan_export(&name, wants, r.since).await?;
            Ok(stream_bundle(plan, blobs))
        }
        (Route::AdminImport, _) => {
            let registry = query_param(query.as_deref(), "registry");
            if let Some(r) = &registry {
                // Before the upload: a wrong name is refused at once.
                svc.registry(r).map_err(|e| {
                    let mut e = ApiError::from(e);
                    e.close = true;
                    e
                })?;
            }
            let cap = svc.bundle_upload_limit();
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > cap) {
                return Err(super::too_large(cap));
            }
            // The bundle is read once, as it arrives: verified and staged on a blocking thread
            // while the body streams in; in tasks of their own, so a client that goes away
            // mid-import cannot cut a commit short.
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
            tokio::spawn(forward_body(req.into_body(), tx, cap, over.clone()));
            let svc = svc.clone();
            let imported = tokio::spawn(async move {
                let reader = BodyReader {
                    rx,
                    current: Bytes::new(),
                };
                let upload = bundle::Upload::start(reader, bundle::silent()).await?;
                svc.import_bundle(upload, registry.as_deref()).await
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the import failed: {e}")))?;
            if over.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(super::too_large(cap));
            }
            let summary = imported?;
            Ok(json_ok(&serde_json::to_value(&summary).unwrap_or_default()))
        }
        (Route::AdminToken { id }, _) => {
            svc.revoke_token(&id).await?;
            Ok(json_ok(&json!({"ok": true, "msg": format!("token `{id}` revoked")})))
        }
        _ => Ok(json_status(
            StatusCode::NOT_FOUND,
            &json!({"errors": [{"detail": "no such admin endpoint"}]}),
        )),
    }
}
