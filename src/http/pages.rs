//! The web interface's handlers: the visitor from the session cookie, CSRF on every form
//! that posts, form bodies, and HTML responses; the pages themselves are rendered by
//! [`crate::web`] from what the registry layer answers (the same access rules as the API:
//! a registry the visitor may not read is a 404, like one that does not exist).
//!
//! Cookies: `cargohold_session` (the session id; HttpOnly, SameSite=Strict, Path=/; named
//! `__Host-cargohold_session` and Secure when the public URL is https) and `cargohold_login` (the login form's CSRF token, the
//! double-submit pattern, as there is no session yet). Every response carries a
//! Content-Security-Policy that allows only our own script and stylesheet.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use serde_json::json;

use super::body::{full, Body};
use super::route::{query_param, Page};
use super::{read_body, ApiError, HttpState};
use crate::cache::{FastHasher, MemCache};
use crate::config::{RegistryKind, RegistrySpec};
use crate::registry::admin::{NewToken, RegistryPatch};
use crate::registry::sessions::{constant_time_eq, random_hex32};
use crate::registry::webhooks::NewHook;
use crate::registry::{CrateView, Principal, RegistryError, RegistryService, Session};
use crate::web::pages::{self as tpl, CrateRow, NewTokenShown, RegistryForm, RegistryRow, SearchHit};
use crate::web::{markdown, Viewer, APP_CSS, APP_JS};

/// The session cookie over plain HTTP.
pub const SESSION_COOKIE: &str = "cargohold_session";
/// The session cookie when the public URL is https: the `__Host-` prefix makes the browser
/// refuse it unless it is `Secure`, for this host only and `Path=/`.
pub const SESSION_COOKIE_TLS: &str = "__Host-cargohold_session";
/// The login form's CSRF cookie.
pub const LOGIN_COOKIE: &str = "cargohold_login";
/// Largest form body accepted.
const MAX_FORM_BYTES: u64 = 64 << 10;
/// Crates per page of a registry page.
const PER_PAGE: usize = 50;
/// Hits per registry on the search page.
const SEARCH_PER_REGISTRY: usize = 50;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// State of the web interface: rendered READMEs by the `.crate`'s SHA-256 (content-addressed,
/// so never stale; a proxied crate's index gives the SHA-256 the cache verified), so a page
/// view does not unpack the crate again.
pub struct PageState {
    readmes: MemCache<String, Arc<str>>,
}

impl Default for PageState {
    fn default() -> Self {
        PageState {
            readmes: moka::sync::Cache::builder()
                .max_capacity(32 << 20)
                .weigher(|k: &String, v: &Arc<str>| u32::try_from(k.len() + v.len() + 64).unwrap_or(u32::MAX))
                .build_with_hasher(FastHasher::default()),
        }
    }
}

/// Who is asking: the session (if its cookie names a live one) and its principal.
struct Visit {
    session_id: Option<String>,
    session: Option<Arc<Session>>,
    who: Option<Principal>,
}

impl Visit {
    fn anonymous() -> Visit {
        Visit {
            session_id: None,
            session: None,
            who: None,
        }
    }

    fn viewer(&self) -> Option<Viewer<'_>> {
        match (&self.session, &self.who) {
            (Some(s), Some(w)) => Some(Viewer {
                user: &w.user,
                admin: w.is_admin(),
                csrf: &s.csrf,
            }),
            _ => None,
        }
    }
}

/// The value of cookie `name` in the request.
pub fn cookie(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

/// A form body (`application/x-www-form-urlencoded`) as pairs, in order.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, key: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    }
    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
    fn checked(&self, key: &str) -> bool {
        self.0.iter().any(|(k, v)| k == key && v == "true")
    }
}

/// Whether browsers reach us over https (TLS here or at a proxy in front).
fn is_https(svc: &RegistryService) -> bool {
    svc.public_url().starts_with("https://")
}

fn secure(svc: &RegistryService) -> &'static str {
    if is_https(svc) {
        "; Secure"
    } else {
        ""
    }
}

fn session_cookie_name(svc: &RegistryService) -> &'static str {
    cookie_name(is_https(svc))
}

fn cookie_name(https: bool) -> &'static str {
    if https {
        SESSION_COOKIE_TLS
    } else {
        SESSION_COOKIE
    }
}

fn session_cookie(svc: &RegistryService, value: &str, max_age: Option<u32>) -> String {
    session_set_cookie(is_https(svc), value, max_age)
}

/// The `Set-Cookie` value of the session cookie.
fn session_set_cookie(https: bool, value: &str, max_age: Option<u32>) -> String {
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    let secure = if https { "; Secure" } else { "" };
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict{age}{secure}",
        cookie_name(https)
    )
}

/// Whether a browser says the request comes from another site (`Sec-Fetch-Site`): such a
/// form post is refused whatever it carries. Clients that send no such header (older
/// browsers, scripts) are judged by the CSRF token alone.
fn cross_site(req: &Request<Incoming>) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site") || v.eq_ignore_ascii_case("same-site"))
}

fn refused_cross_site() -> Response<Body> {
    html(
        StatusCode::FORBIDDEN,
        tpl::error(
            None,
            "Refused",
            "this form was sent from another site; open the page here and send it from there",
        ),
    )
}

fn with_headers(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert("content-security-policy", header::HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

/// An HTML response.
fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    with_headers(r)
}

/// A 303 to `location`, setting `cookies`.
fn redirect(location: &str, cookies: &[String]) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = header::HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = header::HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    with_headers(r)
}

fn error_page(visit: &Visit, e: RegistryError) -> Response<Body> {
    let api = ApiError::from(e);
    let title = match api.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::BAD_REQUEST => "Bad request",
        StatusCode::UNAUTHORIZED => "Sign in needed",
        s if s.is_server_error() => "Something failed",
        _ => "Refused",
    };
    html(api.status, tpl::error(visit.viewer(), title, &api.detail))
}

/// A form body that could not be read (too large, broken): the connection is closed when the
/// rest of the body was left unread.
fn body_refused(viewer: Option<Viewer<'_>>, e: &ApiError) -> Response<Body> {
    let mut r = html(e.status, tpl::error(viewer, "Refused", &e.detail));
    if e.close {
        r.headers_mut()
            .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    r
}

fn not_found(visit: &Visit, what: String) -> Response<Body> {
    error_page(visit, RegistryError::NotFound(what))
}

/// Handles a page route. Errors become HTML pages, never Cargo's JSON.
pub async fn handle(state: &HttpState, page: Page, req: Request<Incoming>) -> Response<Body> {
    let svc = &*state.registry;
    if let Page::Static { file } = &page {
        return static_file(file);
    }
    let visit = match visit(svc, &req).await {
        Ok(v) => v,
        Err(e) => return error_page(&Visit::anonymous(), e),
    };
    let post = req.method() == Method::POST;
    let query = req.uri().query().map(str::to_owned);
    if post && cross_site(&req) {
        return refused_cross_site();
    }
    // Every form that posts carries the CSRF token (the login form's is checked in `login`).
    let form = if post {
        match read_body(req, MAX_FORM_BYTES).await {
            Ok(b) => Some(Form(parse_form(&b))),
            Err(e) => return body_refused(visit.viewer(), &e),
        }
    } else {
        None
    };
    match (page, form) {
        (Page::Login, _) => login_form(svc),
        (page, Some(form)) => {
            let Some(session) = &visit.session else {
                return redirect("/-/login", &[]);
            };
            let sent = form.get("csrf");
            if sent.is_empty() || !constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
                return html(
                    StatusCode::FORBIDDEN,
                    tpl::error(
                        visit.viewer(),
                        "Refused",
                        "this form's CSRF token is missing or wrong; reload the page and send the form again",
                    ),
                );
            }
            post_page(svc, &visit, page, form).await
        }
        (page, None) => get_page(state, &visit, page, query.as_deref()).await,
    }
}

async fn visit(svc: &RegistryService, req: &Request<Incoming>) -> Result<Visit, RegistryError> {
    let Some(id) = cookie(req, session_cookie_name(svc)) else {
        return Ok(Visit::anonymous());
    };
    Ok(match svc.session(&id).await? {
        Some((s, who)) => Visit {
            session_id: Some(id),
            session: Some(s),
            who: Some(who),
        },
        None => Visit::anonymous(),
    })
}

fn static_file(file: &str) -> Response<Body> {
    let (body, ctype) = match file {
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        _ => return html(StatusCode::NOT_FOUND, tpl::error(None, "Not found", "no such file")),
    };
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ctype));
    let mut r = with_headers(r);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        // Pages name them with their content's hash (`?v=`), so a cached copy is never stale.
        header::HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    r
}

/// `GET /-/login`: the form, with a fresh CSRF token in a cookie and in the form.
fn login_form(svc: &RegistryService) -> Response<Body> {
    let token = random_hex32();
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/-/login; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        secure(svc)
    );
    let mut r = html(StatusCode::OK, tpl::login(None, &token));
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Renders a GET page (`query`: its query string, which carries the notice of a form that
/// redirected here).
async fn get_page(state: &HttpState, visit: &Visit, page: Page, query: Option<&str>) -> Response<Body> {
    let svc = &*state.registry;
    let result = match page {
        Page::Home => Ok(home(svc, visit).await),
        Page::Admin
        | Page::AdminRegistryNew
        | Page::AdminRegistry { .. }
        | Page::AdminUsers
        | Page::AdminTokens
        | Page::AdminHooks
        | Page::AdminHook { .. }
        | Page::AdminQuarantine => match admin_viewer(visit) {
            Err(r) => return r,
            Ok(v) => admin_get(svc, v, page, query).await,
        },
        _ => Err(RegistryError::NotFound("no such page".into())),
    };
    result.unwrap_or_else(|e| error_page(visit, e))
}

/// The viewer of an admin page, or the answer for a visitor who is not an administrator.
#[allow(clippy::result_large_err)] // answered at once, never passed on
fn admin_viewer(visit: &Visit) -> Result<Viewer<'_>, Response<Body>> {
    match visit.viewer() {
        None => Err(redirect("/-/login", &[])),
        Some(v) if !v.admin => Err(html(
            StatusCode::FORBIDDEN,
            tpl::error(
                Some(v),
                "Not allowed",
                "administration needs a token with the admin scope",
            ),
        )),
        Some(v) => Ok(v),
    }
}

async fn registry_rows(
    svc: &RegistryService,
    who: Option<&Principal>,
) -> Result<Vec<(Arc<RegistrySpec>, Option<usize>)>, RegistryError> {
    let mut rows = Vec::new();
    for spec in svc.registries().values() {
        if !svc.may_read(spec, who) {
            continue;
        }
        let crates = if spec.kind == RegistryKind::Hosted {
            Some(svc.crate_count(&spec.name).await?)
        } else {
            None
        };
        rows.push((spec.clone(), crates));
    }
    Ok(rows)
}

async fn home(svc: &RegistryService, visit: &Visit) -> Response<Body> {
    match registry_rows(svc, visit.who.as_ref()).await {
        Ok(rows) => {
            let rows: Vec<RegistryRow<'_>> = rows
                .iter()
                .map(|(spec, crates)| RegistryRow { spec, crates: *crates })
                .collect();
            html(StatusCode::OK, tpl::home(visit.viewer(), &rows))
        }
        Err(e) => error_page(visit, e),
    }
}

/// The read pages that take a query string: registry, crate, search.
pub async fn read_page(state: &HttpState, page: Page, req: Request<Incoming>) -> Response<Body> {
    let svc = &*state.registry;
    let visit = match visit(svc, &req).await {
        Ok(v) => v,
        Err(e) => return error_page(&Visit::anonymous(), e),
    };
    let query = req.uri().query();
    let q = query_param(query, "q").unwrap_or_default();
    let result = match page {
        Page::Registry { reg } => {
            let page_no = query_param(query, "page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(1)
                .clamp(1, 1_000_000);
            registry_page(svc, &visit, &reg, &q, page_no).await
        }
        Page::Crate { reg, name } => crate_page(state, &visit, &reg, &name, None).await,
        Page::CrateVersion { reg, name, version } => crate_page(state, &visit, &reg, &name, Some(&version)).await,
        Page::Search => search_page(svc, &visit, &q).await,
        _ => Err(RegistryError::NotFound("no such page".into())),
    };
    result.unwrap_or_else(|e| error_page(&visit, e))
}

async fn registry_page(
    svc: &RegistryService,
    visit: &Visit,
    reg: &str,
    q: &str,
    page: usize,
) -> Result<Response<Body>, RegistryError> {
    let who = visit.who.as_ref();
    let spec = svc.readable(reg, who)?;
    let found = svc.search_as(reg, who, q, PER_PAGE, page).await?;
    let crates = CrateRow::from_search(&found);
    let total = usize::try_from(found["meta"]["total"].as_u64().unwrap_or(0)).unwrap_or(0);
    let proxy = if spec.kind == RegistryKind::Proxy {
        Some(svc.proxy_status(reg, who).await?)
    } else {
        None
    };
    let index_url = svc.index_url(reg);
    let p = tpl::RegistryPage {
        spec: &spec,
        index_url: &index_url,
        crates: &crates,
        total,
        page,
        per_page: PER_PAGE,
        q,
        proxy: proxy.as_ref(),
    };
    Ok(html(StatusCode::OK, tpl::registry(visit.viewer(), &p)))
}

async fn crate_page(
    state: &HttpState,
    visit: &Visit,
    reg: &str,
    name: &str,
    version: Option<&str>,
) -> Result<Response<Body>, RegistryError> {
    let svc = &*state.registry;
    let who = visit.who.as_ref();
    let spec = svc.readable(reg, who)?;
    let Some(view) = svc.crate_view(reg, who, name).await? else {
        return Ok(not_found(visit, format!("no crate named `{name}` in registry `{reg}`")));
    };
    let sel = match version {
        Some(v) => view.versions.iter().find(|x| x.line.vers == v),
        None => view.default_version(),
    };
    let Some(sel) = sel else {
        return Ok(not_found(
            visit,
            format!("crate `{}` has no version `{}`", view.name, version.unwrap_or("")),
        ));
    };
    let readme = readme_html(state, &view, sel).await?;
    let advisories = svc.advisory_notes(&spec, &view);
    Ok(html(
        StatusCode::OK,
        tpl::crate_page_with_advisories(visit.viewer(), &spec, &view, sel, readme.as_deref(), &advisories),
    ))
}

/// The rendered README of a version, from the cache or rendered once.
async fn readme_html(
    state: &HttpState,
    view: &CrateView,
    sel: &crate::registry::VersionView,
) -> Result<Option<Arc<str>>, RegistryError> {
    let key = sel.line.cksum.clone();
    if let Some(h) = state.pages.readmes.get(&key) {
        return Ok((!h.is_empty()).then_some(h));
    }
    let md = state.registry.readme(view, sel).await?;
    let rendered: Arc<str> = match md {
        Some(md) => tokio::task::spawn_blocking(move || markdown::render(&md))
            .await
            .unwrap_or_default()
            .into(),
        // A proxied crate's README appears once its `.crate` is cached: not remembered as none.
        None if !view.local => return Ok(None),
        None => Arc::from(""),
    };
    state.pages.readmes.insert(key, rendered.clone());
    Ok((!rendered.is_empty()).then_some(rendered))
}

async fn search_page(svc: &RegistryService, visit: &Visit, q: &str) -> Result<Response<Body>, RegistryError> {
    let who = visit.who.as_ref();
    let mut hits = Vec::new();
    let mut error = None;
    if !q.trim().is_empty() {
        for spec in svc.registries().values() {
            if !svc.may_read(spec, who) {
                continue;
            }
            match svc.search_as(&spec.name, who, q, SEARCH_PER_REGISTRY, 1).await {
                Ok(found) => hits.extend(CrateRow::from_search(&found).into_iter().map(|krate| SearchHit {
                    registry: spec.name.clone(),
                    krate,
                })),
                Err(e @ RegistryError::BadRequest(_)) => {
                    error = Some(e.to_string());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(html(status, tpl::search(visit.viewer(), q, &hits, error.as_deref())))
}

fn proxies(svc: &RegistryService) -> Vec<String> {
    svc.registries()
        .values()
        .filter(|r| r.kind == RegistryKind::Proxy)
        .map(|r| r.name.clone())
        .collect()
}

/// The notice a form that redirected to this page asked for (`?created=ID` …), if its value
/// has the shape the form puts there (an id, a checksum, a registry name): a link can make
/// the page show such a value in a fixed sentence, never free text of its author's choosing.
fn notice(query: Option<&str>, page: &Page) -> Option<String> {
    // Ids are 32 lowercase hex digits, checksums 64.
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let is_id = |s: &String| hex(s, 32);
    let is_sha = |s: &String| hex(s, 64);
    let param = |k: &str| query_param(query, k).filter(|v| !v.is_empty());
    match page {
        Page::Admin => param("deleted")
            .filter(|n| crate::index::name::validate_registry_name(n).is_ok())
            .map(|n| format!("Registry {n} deleted.")),
        Page::AdminHooks => {
            if let Some(id) = param("created").filter(is_id) {
                Some(format!("Hook {id} created."))
            } else {
                param("deleted").filter(is_id).map(|id| format!("Hook {id} deleted."))
            }
        }
        Page::AdminHook { .. } => param("redelivered")
            .filter(is_id)
            .map(|id| format!("Delivery {id} will be sent again.")),
        Page::AdminQuarantine => {
            if let Some(sha) = param("released").filter(is_sha) {
                Some(format!(
                    "File {sha} released into the cache: served again wherever an index lists it."
                ))
            } else {
                param("purged").filter(is_sha).map(|sha| format!("File {sha} purged."))
            }
        }
        _ => None,
    }
}

async fn admin_get(
    svc: &RegistryService,
    v: Viewer<'_>,
    page: Page,
    query: Option<&str>,
) -> Result<Response<Body>, RegistryError> {
    let notice = notice(query, &page);
    let notice = notice.as_deref();
    match page {
        Page::Admin => admin_home(svc, v, notice).await,
        Page::AdminRegistryNew => Ok(html(
            StatusCode::OK,
            tpl::registry_form(v, None, &RegistryForm::default(), &proxies(svc), None),
        )),
        Page::AdminRegistry { name } => {
            let spec = svc.registry(&name)?;
            Ok(html(
                StatusCode::OK,
                tpl::registry_form(v, Some(&name), &RegistryForm::of(&spec), &proxies(svc), None),
            ))
        }
        Page::AdminUsers => Ok(html(
            StatusCode::OK,
            tpl::users(v, &svc.list_users().await?, None, None),
        )),
        Page::AdminTokens => tokens_page(svc, v, StatusCode::OK, None, None).await,
        Page::AdminHooks => hooks_page(svc, v, StatusCode::OK, notice, None).await,
        Page::AdminHook { id } => hook_page(svc, v, &id, notice).await,
        Page::AdminQuarantine => Ok(html(StatusCode::OK, tpl::quarantine(v, &svc.quarantine_list(), notice))),
        _ => Err(RegistryError::NotFound("no such page".into())),
    }
}

async fn admin_home(
    svc: &RegistryService,
    v: Viewer<'_>,
    notice: Option<&str>,
) -> Result<Response<Body>, RegistryError> {
    // An administrator reads every registry.
    let all: Vec<(Arc<RegistrySpec>, Option<usize>)> = {
        let mut out = Vec::new();
        for spec in svc.registries().values() {
            let n = if spec.kind == RegistryKind::Hosted {
                Some(svc.crate_count(&spec.name).await?)
            } else {
                None
            };
            out.push((spec.clone(), n));
        }
        out
    };
    let rows: Vec<RegistryRow<'_>> = all
        .iter()
        .map(|(spec, crates)| RegistryRow { spec, crates: *crates })
        .collect();
    Ok(html(StatusCode::OK, tpl::admin(v, &rows, notice)))
}

async fn hooks_page(
    svc: &RegistryService,
    v: Viewer<'_>,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response<Body>, RegistryError> {
    let hooks = svc.list_hooks().await?;
    let registries: Vec<String> = svc.registries().keys().cloned().collect();
    Ok(html(status, tpl::hooks(v, &hooks, &registries, notice, error)))
}

async fn hook_page(
    svc: &RegistryService,
    v: Viewer<'_>,
    id: &str,
    notice: Option<&str>,
) -> Result<Response<Body>, RegistryError> {
    let deliveries = svc.hook_deliveries(id).await?;
    let hooks = svc.list_hooks().await?;
    let hook = hooks["hooks"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["id"] == id))
        .cloned()
        .unwrap_or_default();
    Ok(html(StatusCode::OK, tpl::hook(v, &hook, &deliveries, notice)))
}

async fn tokens_page(
    svc: &RegistryService,
    v: Viewer<'_>,
    status: StatusCode,
    created: Option<&NewTokenShown>,
    error: Option<&str>,
) -> Result<Response<Body>, RegistryError> {
    let tokens = svc.list_tokens(None).await?;
    let users: Vec<String> = svc.list_users().await?["users"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u["login"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let registries: Vec<String> = svc.registries().keys().cloned().collect();
    Ok(html(
        status,
        tpl::tokens(v, &tokens, &users, &registries, created, error),
    ))
}

/// The form of a new registry as the spec the admin API takes (the same JSON, so the same
/// defaults and the same checks).
fn spec_from_form(form: &Form) -> Result<RegistrySpec, RegistryError> {
    let kind = form.get("kind");
    let mut v = json!({
        "name": form.get("name"),
        "kind": if kind == "proxy" { "proxy" } else { "hosted" },
        "description": form.get("description"),
        "labels": labels(&form.get("labels")),
        "auth_required": form.checked("auth_required"),
        "advisories_allow": labels(&form.get("advisories_allow")),
    });
    let mode = form.get("advisories");
    if !mode.is_empty() {
        v["advisories"] = json!(mode);
    }
    if kind == "proxy" {
        let up = form.get("upstream");
        if !up.is_empty() {
            v["upstream"] = json!(up);
        }
        v["offline"] = json!(form.checked("offline"));
        v["prune_index"] = json!(form.checked("prune_index"));
        for field in ["index_ttl_secs", "negative_ttl_secs"] {
            if let Some(secs) = seconds(form, field)? {
                v[field] = json!(secs);
            }
        }
    } else {
        v["upstreams"] = json!(form.all("upstreams"));
        v["shadow"] = json!(if form.get("shadow") == "version" {
            "version"
        } else {
            "crate"
        });
        v["allow_upstream_names"] = json!(form.checked("allow_upstream_names"));
        v["allowed_licenses"] = json!(labels(&form.get("allowed_licenses")));
        v["allow_license_file_only"] = json!(form.checked("allow_license_file_only"));
    }
    serde_json::from_value(v).map_err(|e| RegistryError::BadRequest(format!("invalid registry: {e}")))
}

/// A number-of-seconds field of the registry form: `None` when left empty (the default).
fn seconds(form: &Form, field: &str) -> Result<Option<u64>, RegistryError> {
    let text = form.get(field);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u64>().map(Some).map_err(|_| {
        RegistryError::BadRequest(format!(
            "`{field}` must be a whole number of seconds (0 or more), not `{text}`"
        ))
    })
}

fn labels(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn post_page(svc: &RegistryService, visit: &Visit, page: Page, form: Form) -> Response<Body> {
    if let Page::Logout = page {
        if let Some(id) = &visit.session_id {
            svc.sign_out(id);
        }
        return redirect("/", &[session_cookie(svc, "", Some(0))]);
    }
    let v = match admin_viewer(visit) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let result = match page {
        Page::AdminRegistries => {
            let f = form_values(&form);
            match spec_from_form(&form) {
                Ok(spec) => match svc.create_registry(spec, v.user).await {
                    Ok(created) => Ok(redirect(&format!("/{}/", tpl::seg(&created.name)), &[])),
                    Err(e) => Ok(form_error(svc, v, None, &f, e)),
                },
                Err(e) => Ok(form_error(svc, v, None, &f, e)),
            }
        }
        Page::AdminRegistry { name } => {
            let f = form_values(&form);
            let spec = match svc.registry(&name) {
                Ok(s) => s,
                Err(e) => return error_page(visit, e),
            };
            let mut patch = RegistryPatch {
                description: Some(form.get("description")),
                labels: Some(labels(&form.get("labels"))),
                auth_required: Some(form.checked("auth_required")),
                advisories_allow: Some(labels(&form.get("advisories_allow"))),
                ..RegistryPatch::default()
            };
            let mode = form.get("advisories");
            if !mode.is_empty() {
                match crate::config::AdvisoryMode::parse(&mode) {
                    Ok(m) => patch.advisories = Some(m),
                    Err(e) => return form_error(svc, v, Some(&name), &f, RegistryError::BadRequest(e)),
                }
            }
            // The checkboxes and settings of a fieldset are set only when the form has that
            // fieldset (its hidden marker): a form without them (loaded before an upgrade, or
            // a script's) leaves them as they are instead of turning them off.
            if spec.kind == RegistryKind::Proxy {
                let up = form.get("upstream");
                patch.upstream = (!up.is_empty()).then_some(up);
                if form.get("proxy_fields") == "1" {
                    patch.offline = Some(form.checked("offline"));
                    patch.prune_index = Some(form.checked("prune_index"));
                    // An emptied box goes back to the default, as its placeholder says.
                    match (seconds(&form, "index_ttl_secs"), seconds(&form, "negative_ttl_secs")) {
                        (Ok(index), Ok(negative)) => {
                            patch.index_ttl_secs = Some(index.unwrap_or_else(crate::config::default_index_ttl));
                            patch.negative_ttl_secs =
                                Some(negative.unwrap_or_else(crate::config::default_negative_ttl));
                        }
                        (Err(e), _) | (_, Err(e)) => return form_error(svc, v, Some(&name), &f, e),
                    }
                }
            } else {
                patch.upstreams = Some(form.all("upstreams"));
                if form.get("hosted_fields") == "1" {
                    patch.shadow = Some(if form.get("shadow") == "version" {
                        crate::config::Shadow::Version
                    } else {
                        crate::config::Shadow::Crate
                    });
                    patch.allow_upstream_names = Some(form.checked("allow_upstream_names"));
                    patch.allowed_licenses = Some(labels(&form.get("allowed_licenses")));
                    patch.allow_license_file_only = Some(form.checked("allow_license_file_only"));
                }
            }
            match svc.update_registry(&name, patch, v.user).await {
                Ok(_) => Ok(redirect(&format!("/{}/", tpl::seg(&name)), &[])),
                Err(e) => Ok(form_error(svc, v, Some(&name), &f, e)),
            }
        }
        // Each form that changes something answers with a redirect to a page that shows it
        // (the notice in the query): reloading that page does not send the form again.
        Page::AdminRegistryDelete { name } => match svc.delete_registry(&name, form.checked("force"), v.user).await {
            Ok(()) => Ok(redirect(&format!("/-/admin?deleted={}", tpl::seg(&name)), &[])),
            Err(e) => Err(e),
        },
        Page::AdminUsers => {
            let login = form.get("login");
            let name = Some(form.get("name")).filter(|n| !n.is_empty());
            match svc.create_user(&login, name).await {
                Ok(_) => svc.list_users().await.map(|u| {
                    html(
                        StatusCode::OK,
                        tpl::users(v, &u, Some(&format!("User {login} added.")), None),
                    )
                }),
                Err(e) => {
                    let api = ApiError::from(e);
                    svc.list_users()
                        .await
                        .map(|u| html(api.status, tpl::users(v, &u, None, Some(&api.detail))))
                }
            }
        }
        Page::AdminTokens => {
            let scopes = form.all("scopes");
            let registries = form.all("registries");
            let req = NewToken {
                user: form.get("user"),
                name: Some(form.get("name")).filter(|n| !n.is_empty()),
                scopes: Some(scopes),
                registries: (!registries.is_empty()).then(|| registries.clone()),
                expires: Some(form.get("expires")).filter(|e| !e.is_empty()),
            };
            let user = req.user.clone();
            match svc.create_token(req).await {
                Ok(t) => {
                    // Snippets for the registries it is limited to; for a token of every
                    // registry, those where cargo sends a token (hosted, or auth_required).
                    let registries = if registries.is_empty() {
                        svc.registries()
                            .values()
                            .filter(|r| r.kind == RegistryKind::Hosted || r.auth_required)
                            .map(|r| r.name.clone())
                            .collect()
                    } else {
                        registries
                    };
                    let shown = NewTokenShown {
                        secret: t["token"].as_str().unwrap_or_default().to_owned(),
                        user,
                        registries,
                    };
                    tokens_page(svc, v, StatusCode::CREATED, Some(&shown), None).await
                }
                Err(e) => {
                    let api = ApiError::from(e);
                    tokens_page(svc, v, api.status, None, Some(&api.detail)).await
                }
            }
        }
        Page::AdminHooks => {
            let who = Principal {
                user: v.user.to_owned(),
                scopes: vec!["admin".into()],
                registries: None,
            };
            let registry = Some(form.get("registry")).filter(|r| !r.is_empty());
            let new = NewHook {
                url: form.get("url"),
                secret: form.get("secret"),
                registry,
                events: form.all("events"),
            };
            match svc.create_hook(&who, new).await {
                Ok(h) => Ok(redirect(
                    &format!(
                        "/-/admin/hooks?created={}",
                        tpl::seg(h["id"].as_str().unwrap_or_default())
                    ),
                    &[],
                )),
                Err(e) => {
                    let api = ApiError::from(e);
                    hooks_page(svc, v, api.status, None, Some(&api.detail)).await
                }
            }
        }
        Page::AdminHookDelete { id } => match svc.delete_hook(&id).await {
            Ok(()) => Ok(redirect(&format!("/-/admin/hooks?deleted={}", tpl::seg(&id)), &[])),
            Err(e) => Err(e),
        },
        Page::AdminHookRedeliver { id, delivery } => match svc.redeliver(&delivery).await {
            Ok(()) => Ok(redirect(
                &format!("/-/admin/hooks/{}?redelivered={}", tpl::seg(&id), tpl::seg(&delivery)),
                &[],
            )),
            Err(e) => Err(e),
        },
        Page::AdminQuarantineRelease { sha } => match svc.release_quarantined(&sha).await {
            Ok(()) => Ok(redirect(
                &format!("/-/admin/quarantine?released={}", tpl::seg(&sha)),
                &[],
            )),
            Err(e) => Err(e),
        },
        Page::AdminQuarantinePurge { sha } => match svc.purge_quarantined(&sha).await {
            Ok(()) => Ok(redirect(&format!("/-/admin/quarantine?purged={}", tpl::seg(&sha)), &[])),
            Err(e) => Err(e),
        },
        Page::AdminTokenRevoke { id } => match svc.revoke_token(&id).await {
            Ok(()) => Ok(redirect("/-/admin/tokens", &[])),
            Err(e) => Err(e),
        },
        _ => Err(RegistryError::NotFound("no such form".into())),
    };
    result.unwrap_or_else(|e| error_page(visit, e))
}

fn form_values(form: &Form) -> RegistryForm {
    RegistryForm {
        name: form.get("name"),
        kind: form.get("kind"),
        description: form.get("description"),
        labels: form.get("labels"),
        auth_required: form.checked("auth_required"),
        upstream: form.get("upstream"),
        upstreams: form.all("upstreams"),
        advisories: form.get("advisories"),
        advisories_allow: form.get("advisories_allow"),
        offline: form.checked("offline"),
        prune_index: form.checked("prune_index"),
        index_ttl_secs: form.get("index_ttl_secs"),
        negative_ttl_secs: form.get("negative_ttl_secs"),
        shadow: form.get("shadow"),
        allow_upstream_names: form.checked("allow_upstream_names"),
        allowed_licenses: form.get("allowed_licenses"),
        allow_license_file_only: form.checked("allow_license_file_only"),
    }
}

fn form_error(
    svc: &RegistryService,
    v: Viewer<'_>,
    editing: Option<&str>,
    f: &RegistryForm,
    e: RegistryError,
) -> Response<Body> {
    let api = ApiError::from(e);
    html(
        api.status,
        tpl::registry_form(v, editing, f, &proxies(svc), Some(&api.detail)),
    )
}

/// `POST /-/login`: the login form's CSRF token (cookie and field equal), then the token.
pub async fn login_post(state: &HttpState, req: Request<Incoming>) -> Response<Body> {
    let svc = &*state.registry;
    if cross_site(&req) {
        return refused_cross_site();
    }
    let cookie_token = cookie(&req, LOGIN_COOKIE).unwrap_or_default();
    let form = match read_body(req, MAX_FORM_BYTES).await {
        Ok(b) => Form(parse_form(&b)),
        Err(e) => return body_refused(None, &e),
    };
    let sent = form.get("csrf");
    if cookie_token.is_empty() || !constant_time_eq(sent.as_bytes(), cookie_token.as_bytes()) {
        return html(
            StatusCode::FORBIDDEN,
            tpl::error(
                None,
                "Refused",
                "this form's CSRF token is missing or wrong; open the sign-in page again and send the form from there",
            ),
        );
    }
    let secret = form.get("token");
    if secret.is_empty() {
        return html(StatusCode::BAD_REQUEST, tpl::login(Some("Enter a token."), &sent));
    }
    match svc.sign_in(&secret).await {
        Ok((id, _, who)) => {
            let to = if who.is_admin() { "/-/admin" } else { "/" };
            redirect(
                to,
                &[
                    session_cookie(svc, &id, None),
                    format!("{LOGIN_COOKIE}=; Path=/-/login; HttpOnly; SameSite=Strict; Max-Age=0"),
                ],
            )
        }
        Err(e) => {
            let api = ApiError::from(e);
            html(api.status, tpl::login(Some(&api.detail), &sent))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let f = parse_form(b"a=1&b=x+y%21&c&scopes=read&scopes=publish&&d=%FF");
        assert_eq!(f[0], ("a".into(), "1".into()));
        assert_eq!(f[1], ("b".into(), "x y!".into()));
        assert_eq!(f[2], ("c".into(), String::new()));
        let form = Form(f);
        assert_eq!(form.all("scopes"), vec!["read", "publish"]);
        assert_eq!(form.get("d"), "\u{fffd}");
        assert_eq!(form.get("missing"), "");
        assert_eq!(labels(" a, b,,c "), vec!["a", "b", "c"]);
    }

    #[test]
    fn session_cookies() {
        assert_eq!(
            session_set_cookie(false, "abc", None),
            "cargohold_session=abc; Path=/; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            session_set_cookie(true, "abc", Some(0)),
            "__Host-cargohold_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
        );
    }

    #[test]
    fn specs_from_forms() {
        let f = Form(parse_form(
            b"name=team&kind=hosted&description=Ours&labels=a%2C+b&upstreams=cio&auth_required=true",
        ));
        let s = spec_from_form(&f).unwrap();
        assert_eq!((s.name.as_str(), s.kind), ("team", RegistryKind::Hosted));
        assert_eq!(s.labels, vec!["a", "b"]);
        assert_eq!(s.upstreams, vec!["cio"]);
        assert!(s.auth_required);
        let f = Form(parse_form(
            b"name=p&kind=proxy&upstream=sparse%2Bhttp%3A%2F%2F127.0.0.1%3A1%2F",
        ));
        let s = spec_from_form(&f).unwrap();
        assert_eq!(s.upstream.as_deref(), Some("sparse+http://127.0.0.1:1/"));
    }
}
