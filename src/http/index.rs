//! Read side of a registry: `config.json`, index files (strong ETag, 304), `.crate` downloads
//! (streamed from disk, never `Content-Encoding`), and the `/me` page.

use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use tokio_util::io::ReaderStream;

use super::body::{empty, full};
use super::error::ApiError;
use super::HandlerResult;
use crate::cache::crate_files::FillFailure;
use crate::cache::CacheStatus;
use crate::index::etag::if_none_match;
use crate::index::gzip::{accepts_gzip, gzip_etag, MIN_GZIP_BYTES};
use crate::index::name::{name_from_index_path, shorten};
use crate::registry::{client_registry_name, Download, RegistryService};
use bytes::Bytes;
use futures_util::TryStreamExt;
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderValue};

use super::{X_CACHE, X_UNPRUNED};

fn fill_error(f: FillFailure) -> ApiError {
    let status = match &f {
        FillFailure::NotFound(_) => StatusCode::NOT_FOUND,
        FillFailure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        FillFailure::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        FillFailure::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        FillFailure::Upstream(_) | FillFailure::Checksum(_) => StatusCode::BAD_GATEWAY,
    };
    let busy = matches!(f, FillFailure::Busy(_));
    let mut e = ApiError::new(status, f.to_string());
    e.retry_after = busy.then_some(crate::upstream::cached::BUSY_RETRY_AFTER_SECS);
    e.x_cache = Some(CacheStatus::Miss.as_str());
    e
}

/// `GET /{reg}/index/config.json`.
pub async fn config_json(svc: &RegistryService, reg: &str, auth: Option<&str>) -> HandlerResult {
    let spec = svc.registry(reg)?;
    svc.authorize_read(&spec, auth).await?;
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(full(svc.config_json(&spec)))
        .map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}"))
}

/// `GET /{reg}/index/{path}`.
pub async fn index_file(
    svc: &RegistryService,
    reg: &str,
    path: &str,
    req: &Request<Incoming>,
    auth: Option<&str>,
) -> HandlerResult {
    let spec = svc.registry(reg)?;
    svc.authorize_read(&spec, auth).await?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no crate at index path `{}` in registry `{reg}`", shorten(path, 200)),
        )
    };
    let name = name_from_index_path(path).ok_or_else(not_found)?;
    // Only a pruned proxy or a merged view (over one, maybe) looks at the header.
    let unpruned = (spec.prune_index || !spec.upstreams.is_empty()) && req.headers().contains_key(X_UNPRUNED);
    let answer = if unpruned {
        svc.index_file_unpruned(&spec, name).await?
    } else {
        svc.index_file(&spec, name).await?
    };
    let x_cache = answer.status.as_str();
    let file = answer.file.ok_or_else(|| {
        let mut e = not_found();
        e.x_cache = Some(x_cache);
        e
    })?;
    let headers = req.headers();
    let gzip = file.body().len() >= MIN_GZIP_BYTES
        && headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(accepts_gzip);
    // The gzip representation has its own strong ETag; either validator proves the client's
    // copy current, since both stand for the same file.
    let gz_etag = gzip.then(|| gzip_etag(file.etag()));
    let etag = gz_etag.as_deref().unwrap_or(file.etag());
    let inm = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    let not_modified = inm.is_some_and(|v| if_none_match(v, file.etag()) || if_none_match(v, &gzip_etag(file.etag())));
    // Built field by field with pre-validated values: this runs on every hit and 304.
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, None)
    } else if gzip {
        file.prepare_gzip().await;
        (StatusCode::OK, Some(file.gzip().clone()))
    } else {
        (StatusCode::OK, Some(file.body().clone()))
    };
    let len = body.as_ref().map(Bytes::len);
    let mut resp = Response::new(body.map_or_else(empty, full));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(etag).map_err(internal)?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(X_CACHE, HeaderValue::from_static(x_cache));
    if let Some(len) = len {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(resp)
}

/// `GET /{reg}/api/v1/crates/{name}/{version}/download`.
pub async fn download(
    svc: &RegistryService,
    reg: &str,
    name: &str,
    version: &str,
    auth: Option<&str>,
) -> HandlerResult {
    let spec = svc.registry(reg)?;
    svc.authorize_read(&spec, auth).await?;
    let (download, advisory) = svc.download(&spec, name, version).await?;
    let (body, len, x_cache) = match download {
        // The memory-tier hit, the hot one.
        Download::Bytes { bytes, status } => {
            let len = bytes.len() as u64;
            (full(bytes), Some(len), status.as_str())
        }
        Download::File { path, status } => {
            let file = tokio::fs::File::open(&path).await.map_err(internal)?;
            let len = file.metadata().await.map_err(internal)?.len();
            let stream = TryStreamExt::map_ok(ReaderStream::with_capacity(file, 256 * 1024), Frame::data);
            (StreamBody::new(stream).boxed(), Some(len), status.as_str())
        }
        Download::Blob { blob, status } => {
            let stream = TryStreamExt::map_ok(ReaderStream::with_capacity(blob.reader, 256 * 1024), Frame::data);
            (StreamBody::new(stream).boxed(), Some(blob.len), status.as_str())
        }
        Download::Stream(mut reader) => {
            let len = reader.headers().await.map_err(fill_error)?;
            let stream = TryStreamExt::map_ok(reader.into_stream(), Frame::data);
            (StreamBody::new(stream).boxed(), len, CacheStatus::Miss.as_str())
        }
    };
    let mut resp = Response::new(body);
    crate_headers(resp.headers_mut(), len, x_cache);
    if let Some(ids) = advisory {
        // Ids were checked on import (`RUSTSEC-YYYY-NNNN`), so always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&ids) {
            resp.headers_mut().insert(X_CARGOHOLD_ADVISORY, v);
        }
    }
    Ok(resp)
}

/// The ids of the security advisories that flag a download (`advisories = "flag"`).
pub const X_CARGOHOLD_ADVISORY: &str = "x-cargohold-advisory";

/// The headers of a `.crate` response, from pre-validated values (never `Content-Encoding`:
/// the file already is gzip and cargo checks its bytes).
fn crate_headers(h: &mut HeaderMap, len: Option<u64>, x_cache: &'static str) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    h.insert(X_CACHE, HeaderValue::from_static(x_cache));
}

/// `GET /{reg}/me`: how to get a token (what `cargo login` points users at).
pub fn me(svc: &RegistryService, reg: &str) -> HandlerResult {
    let spec = svc.registry(reg)?;
    let index = svc.index_url(&spec.name);
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>cargohold: token for {reg}</title>\n\
<h1>Getting a token for registry <code>{reg}</code></h1>\n\
<p>Tokens are issued by a cargohold administrator. Ask them to run:</p>\n\
<pre>cargohold user add YOUR_LOGIN\ncargohold token create --user YOUR_LOGIN --registry {reg} --scope read,publish,yank,owners</pre>\n\
<p>Then paste the token into <code>cargo login --registry {client}</code>, with this in <code>~/.cargo/config.toml</code>:</p>\n\
<pre>[registries.{client}]\nindex = \"{index}\"\n{cred}</pre>\n",
        client = client_registry_name(&spec.name),
        cred = if spec.auth_required { "\n[registry]\nglobal-credential-providers = [\"cargo:token\"]\n" } else { "" }
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(full(page))
        .map_err(internal)
}
