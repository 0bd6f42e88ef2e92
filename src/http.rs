//! HTTP <-> domain translation. `handle` routes a request (pure, `route.rs`), calls the
//! registry layer, and turns results into responses; errors become responses only through
//! `error.rs`. Handlers stay thin: rules live in `registry`.

pub mod admin;
pub mod body;
pub mod error;
pub mod index;
pub mod pages;
pub mod route;

use std::sync::Arc;

use bytes::Bytes;
use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};

use crate::index::name::shorten;
use crate::registry::RegistryService;
use crate::telemetry::METRICS;
use body::{full, Body};
pub use error::ApiError;

use route::{Route, RouteError};

/// The response header saying what the cache did (`HIT`, `MISS`, `REVALIDATED`, `STALE`,
/// `BYPASS`).
pub const X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");
/// Request header asking for an index file as the upstream has it, not pruned (`prune_index`):
/// `warm` sends it, so it can pick versions that are not cached yet.
pub const X_UNPRUNED: header::HeaderName = header::HeaderName::from_static("x-cargohold-unpruned");

/// What handlers need; cloned per connection.
#[derive(Clone)]
pub struct HttpState {
    pub registry: Arc<RegistryService>,
    /// The web interface's caches.
    pub pages: Arc<pages::PageState>,
}

impl HttpState {
    /// The state of a server over `registry`.
    pub fn new(registry: Arc<RegistryService>) -> Self {
        HttpState {
            registry,
            pages: Arc::default(),
        }
    }
}

/// The result of a handler.
pub type HandlerResult = Result<Response<Body>, ApiError>;

/// Whether a request may run past the request timeout: a bundle upload (`POST
/// /-/api/v1/import`) or export (`POST /-/api/v1/registries/{name}/export`, whose planning
/// reads the whole cache) takes as long as the bundle is large; its size cap and the
/// connection's idle timeout bound it instead. Both are admin calls, refused before any work.
pub fn unbounded(req: &Request<Incoming>) -> bool {
    if req.method() != hyper::Method::POST {
        return false;
    }
    let path = req.uri().path().trim_end_matches('/');
    path == "/-/api/v1/import" || (path.starts_with("/-/api/v1/registries/") && path.ends_with("/export"))
}

/// Handles one request and says which route template it matched (for the access log).
/// Also returns the registry label for metrics: a known registry's name, or `-`.
pub async fn handle(state: &HttpState, req: Request<Incoming>) -> (Response<Body>, &'static str, &'static str) {
    match route::route(req.method(), req.uri().path()) {
        Ok(r) => {
            let template = r.template();
            let label = r.registry().map_or("-", |name| state.registry.registry_label(name));
            let resp = dispatch(state, r, req).await.unwrap_or_else(ApiError::into_response);
            (resp, template, label)
        }
        Err(RouteError::NotFound) => (
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no endpoint at `{}`; registry URLs look like /<registry>/index/",
                    shorten(req.uri().path(), 200)
                ),
            )
            .into_response(),
            "unmatched",
            "-",
        ),
        Err(RouteError::MethodNotAllowed(allow)) => {
            let mut e = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "`{}` is not allowed on `{}`; use {allow}",
                    req.method(),
                    shorten(req.uri().path(), 200)
                ),
            );
            e.allow = Some(allow);
            (e.into_response(), "unmatched", "-")
        }
    }
}

fn auth_header(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A JSON 200.
pub fn json_ok(v: &serde_json::Value) -> Response<Body> {
    json_status(StatusCode::OK, v)
}

/// A JSON response with a status.
pub fn json_status(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Reads a whole request body, refusing more than `limit` bytes with a 413.
pub async fn read_body(req: Request<Incoming>, limit: u64) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    // One buffer of the announced size (callers authorise before reading, and the size is
    // under the limit): the body is held once, not as chunks plus a contiguous copy.
    let mut buf = BytesMut::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A 413 that also closes the connection: the rest of the body is never read, so the
/// connection cannot carry another request.
pub(crate) fn too_large(limit: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than the limit of {limit} bytes; ask the registry administrator to raise `limits` in the config"),
    );
    e.close = true;
    e
}

/// Reads a JSON request body of at most 1 MiB.
pub async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>, limit: u64) -> Result<T, ApiError> {
    let body = read_body(req, limit).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn dispatch(state: &HttpState, route: Route, req: Request<Incoming>) -> HandlerResult {
    let svc = &state.registry;
    let auth = auth_header(&req);
    let auth = auth.as_deref();
    match route {
        Route::Healthz => Ok(Response::new(full("ok\n"))),
        Route::Metrics => {
            let crates = &svc.caches().crates;
            METRICS.set_gauge(
                "cargohold_disk_cache_bytes",
                i64::try_from(crates.disk_bytes()).unwrap_or(i64::MAX),
            );
            METRICS.set_gauge(
                "cargohold_disk_cache_files",
                i64::try_from(crates.files()).unwrap_or(i64::MAX),
            );
            METRICS.set_gauge(
                "cargohold_index_disk_cache_bytes",
                i64::try_from(svc.caches().index.disk_bytes()).unwrap_or(i64::MAX),
            );
            let mut r = Response::new(full(METRICS.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(r)
        }
        Route::Readyz => match svc.store().meta.check().await {
            Ok(()) => Ok(Response::new(full("ready\n"))),
            Err(e) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store not ready: {e}"),
            )),
        },
        Route::AdminRegistries
        | Route::AdminRegistry { .. }
        | Route::AdminUsers
        | Route::AdminTokens
        | Route::AdminToken { .. }
        | Route::AdminExport { .. }
        | Route::AdminImport
        | Route::AdminHooks
        | Route::AdminHook { .. }
        | Route::AdminHookDeliveries { .. }
        | Route::AdminRedeliver { .. }
        | Route::AdminQuarantine
        | Route::AdminQuarantined { .. }
        | Route::AdminQuarantineRelease { .. }
        | Route::AdminAdvisories => admin::handle(svc, route, req, auth).await,
        Route::ConfigJson { reg } => index::config_json(svc, &reg, auth).await,
        Route::IndexFile { reg, path } => index::index_file(svc, &reg, &path, &req, auth).await,
        Route::Download { reg, name, version } => index::download(svc, &reg, &name, &version, auth).await,
        Route::Me { reg } => index::me(svc, &reg),
        Route::Publish { reg } => {
            // Authorised before a byte of the body is read; a refusal closes the connection.
            let who = svc.authorize_publish(&reg, auth).await.map_err(refuse_unread)?;
            let body = read_body(req, svc_limits(svc)).await?;
            Ok(json_ok(&svc.publish(&reg, &who, body).await?))
        }
        Route::Yank { reg, name, version } => Ok(json_ok(&svc.set_yanked(&reg, auth, &name, &version, true).await?)),
        Route::Unyank { reg, name, version } => Ok(json_ok(&svc.set_yanked(&reg, auth, &name, &version, false).await?)),
        Route::Owners { reg, name } => {
            let method = req.method().clone();
            if method == hyper::Method::GET {
                return Ok(json_ok(&svc.owners(&reg, auth, &name).await?));
            }
            #[derive(serde::Deserialize)]
            struct Users {
                users: Vec<String>,
            }
            let who = svc.authorize_owners(&reg, auth).await.map_err(refuse_unread)?;
            let users: Users = read_json(req, svc.limits().max_json_bytes).await?;
            let add = method == hyper::Method::PUT;
            Ok(json_ok(&svc.change_owners(&reg, &who, &name, users.users, add).await?))
        }
        Route::Web(page) => Ok(match page {
            route::Page::Login if req.method() == hyper::Method::POST => pages::login_post(state, req).await,
            route::Page::Registry { .. }
            | route::Page::Crate { .. }
            | route::Page::CrateVersion { .. }
            | route::Page::Search => pages::read_page(state, page, req).await,
            page => pages::handle(state, page, req).await,
        }),
        Route::Search { reg } => {
            let (q, per_page, page) = route::search_params(req.uri().query());
            Ok(json_ok(&svc.search(&reg, auth, &q, per_page, page).await?))
        }
    }
}

/// A refusal sent before the request body was read: the connection is closed after it, as the
/// unread body cannot be skipped safely.
fn refuse_unread(e: crate::registry::RegistryError) -> ApiError {
    let mut e = ApiError::from(e);
    e.close = true;
    e
}

fn svc_limits(svc: &RegistryService) -> u64 {
    let l = svc.limits();
    l.max_crate_bytes + l.max_metadata_bytes + 8
}
