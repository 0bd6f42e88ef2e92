//! Pure routing: `(method, path, query)` to a [`Route`]. No I/O. Paths are split on `/`
//! (empty segments dropped, so `//api/v1/...` routes like `/api/v1/...`), each segment
//! percent-decoded; `+` stays literal (build metadata in versions).

use hyper::Method;
use percent_encoding::percent_decode_str;

/// Every endpoint cargohold serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    AdminRegistries,
    AdminRegistry {
        name: String,
    },
    AdminUsers,
    AdminTokens,
    AdminToken {
        id: String,
    },
    /// `POST /-/api/v1/registries/{name}/export`: a bundle, streamed.
    AdminExport {
        name: String,
    },
    /// `POST /-/api/v1/import[?registry=NAME]`: a bundle uploaded and imported.
    AdminImport,
    /// `GET / POST /-/api/v1/hooks`.
    AdminHooks,
    /// `DELETE /-/api/v1/hooks/{id}`.
    AdminHook {
        id: String,
    },
    /// `GET /-/api/v1/hooks/{id}/deliveries`.
    AdminHookDeliveries {
        id: String,
    },
    /// `POST /-/api/v1/deliveries/{id}/redeliver`.
    AdminRedeliver {
        id: String,
    },
    /// `GET /-/api/v1/quarantine`: the quarantined `.crate` files.
    AdminQuarantine,
    /// `DELETE /-/api/v1/quarantine/{sha256}`: purge one.
    AdminQuarantined {
        sha: String,
    },
    /// `POST /-/api/v1/quarantine/{sha256}/release`: put one back into the cache.
    AdminQuarantineRelease {
        sha: String,
    },
    /// `GET / PUT /-/api/v1/advisories`: the security advisory database's status, and
    /// replacing it.
    AdminAdvisories,
    ConfigJson {
        reg: String,
    },
    IndexFile {
        reg: String,
        path: String,
    },
    Download {
        reg: String,
        name: String,
        version: String,
    },
    Publish {
        reg: String,
    },
    Yank {
        reg: String,
        name: String,
        version: String,
    },
    Unyank {
        reg: String,
        name: String,
        version: String,
    },
    Owners {
        reg: String,
        name: String,
    },
    Search {
        reg: String,
    },
    Me {
        reg: String,
    },
    /// A page of the web interface (HTML).
    Web(Page),
}

/// The pages of the web interface (`http/pages.rs`). Registry pages live under the registry's
/// root (the `api` of its `config.json`); everything else under `/-/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// `GET /`: the registries the visitor may read, and a search box.
    Home,
    /// `GET /{reg}/` (with the trailing slash).
    Registry { reg: String },
    /// `GET /{reg}/crates/{name}`.
    Crate { reg: String, name: String },
    /// `GET /{reg}/crates/{name}/{version}`.
    CrateVersion { reg: String, name: String, version: String },
    /// `GET /-/search?q=`.
    Search,
    /// `GET, POST /-/login`.
    Login,
    /// `POST /-/logout`.
    Logout,
    /// `GET /-/admin`.
    Admin,
    /// `GET /-/admin/registries/new`: the form.
    AdminRegistryNew,
    /// `POST /-/admin/registries`: create.
    AdminRegistries,
    /// `GET, POST /-/admin/registries/{name}`: the edit form, and saving it.
    AdminRegistry { name: String },
    /// `POST /-/admin/registries/{name}/delete`.
    AdminRegistryDelete { name: String },
    /// `GET, POST /-/admin/users`.
    AdminUsers,
    /// `GET, POST /-/admin/tokens`.
    AdminTokens,
    /// `POST /-/admin/tokens/{id}/revoke`.
    AdminTokenRevoke { id: String },
    /// `GET, POST /-/admin/hooks`: the hooks and the form for a new one, and creating it.
    AdminHooks,
    /// `GET /-/admin/hooks/{id}`: a hook's latest deliveries with their attempts.
    AdminHook { id: String },
    /// `POST /-/admin/hooks/{id}/delete`.
    AdminHookDelete { id: String },
    /// `POST /-/admin/hooks/{id}/redeliver/{delivery}`.
    AdminHookRedeliver { id: String, delivery: String },
    /// `GET /-/admin/quarantine`: the `.crate` files this node quarantined.
    AdminQuarantine,
    /// `POST /-/admin/quarantine/{sha256}/release`.
    AdminQuarantineRelease { sha: String },
    /// `POST /-/admin/quarantine/{sha256}/purge`.
    AdminQuarantinePurge { sha: String },
    /// `GET /-/static/{file}`: the stylesheet and the copy-button script.
    Static { file: String },
}

impl Page {
    /// The route template, for logs and metrics.
    pub fn template(&self) -> &'static str {
        match self {
            Page::Home => "/",
            Page::Registry { .. } => "/{reg}/",
            Page::Crate { .. } => "/{reg}/crates/{name}",
            Page::CrateVersion { .. } => "/{reg}/crates/{name}/{version}",
            Page::Search => "/-/search",
            Page::Login => "/-/login",
            Page::Logout => "/-/logout",
            Page::Admin => "/-/admin",
            Page::AdminRegistryNew => "/-/admin/registries/new",
            Page::AdminRegistries => "/-/admin/registries",
            Page::AdminRegistry { .. } => "/-/admin/registries/{name}",
            Page::AdminRegistryDelete { .. } => "/-/admin/registries/{name}/delete",
            Page::AdminUsers => "/-/admin/users",
            Page::AdminTokens => "/-/admin/tokens",
            Page::AdminTokenRevoke { .. } => "/-/admin/tokens/{id}/revoke",
            Page::AdminHooks => "/-/admin/hooks",
            Page::AdminHook { .. } => "/-/admin/hooks/{id}",
            Page::AdminHookDelete { .. } => "/-/admin/hooks/{id}/delete",
            Page::AdminHookRedeliver { .. } => "/-/admin/hooks/{id}/redeliver/{delivery}",
            Page::AdminQuarantine => "/-/admin/quarantine",
            Page::AdminQuarantineRelease { .. } => "/-/admin/quarantine/{sha256}/release",
            Page::AdminQuarantinePurge { .. } => "/-/admin/quarantine/{sha256}/purge",
            Page::Static { .. } => "/-/static/{file}",
        }
    }
}

/// Why no route matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Nothing lives at this path.
    NotFound,
    /// Something lives here, but not for this method; the allowed methods.
    MethodNotAllowed(&'static str),
}

impl Route {
    /// The route template, for logs and metrics (never the raw path).
    pub fn template(&self) -> &'static str {
        match self {
            Route::Healthz => "/-/healthz",
            Route::Readyz => "/-/readyz",
            Route::Metrics => "/-/metrics",
            Route::AdminRegistries => "/-/api/v1/registries",
            Route::AdminRegistry { .. } => "/-/api/v1/registries/{name}",
            Route::AdminUsers => "/-/api/v1/users",
            Route::AdminTokens => "/-/api/v1/tokens",
            Route::AdminToken { .. } => "/-/api/v1/tokens/{id}",
            Route::AdminExport { .. } => "/-/api/v1/registries/{name}/export",
            Route::AdminImport => "/-/api/v1/import",
            Route::AdminHooks => "/-/api/v1/hooks",
            Route::AdminHook { .. } => "/-/api/v1/hooks/{id}",
            Route::AdminHookDeliveries { .. } => "/-/api/v1/hooks/{id}/deliveries",
            Route::AdminRedeliver { .. } => "/-/api/v1/deliveries/{id}/redeliver",
            Route::AdminQuarantine => "/-/api/v1/quarantine",
            Route::AdminQuarantined { .. } => "/-/api/v1/quarantine/{sha256}",
            Route::AdminQuarantineRelease { .. } => "/-/api/v1/quarantine/{sha256}/release",
            Route::AdminAdvisories => "/-/api/v1/advisories",
            Route::ConfigJson { .. } => "/{reg}/index/config.json",
            Route::IndexFile { .. } => "/{reg}/index/{path}",
            Route::Download { .. } => "/{reg}/api/v1/crates/{name}/{version}/download",
            Route::Publish { .. } => "/{reg}/api/v1/crates/new",
            Route::Yank { .. } => "/{reg}/api/v1/crates/{name}/{version}/yank",
            Route::Unyank { .. } => "/{reg}/api/v1/crates/{name}/{version}/unyank",
            Route::Owners { .. } => "/{reg}/api/v1/crates/{name}/owners",
            Route::Search { .. } => "/{reg}/api/v1/crates",
            Route::Me { .. } => "/{reg}/me",
            Route::Web(p) => p.template(),
        }
    }

    /// The registry a route concerns, if any.
    pub fn registry(&self) -> Option<&str> {
        match self {
            Route::ConfigJson { reg }
            | Route::IndexFile { reg, .. }
            | Route::Download { reg, .. }
            | Route::Publish { reg }
            | Route::Yank { reg, .. }
            | Route::Unyank { reg, .. }
            | Route::Owners { reg, .. }
            | Route::Search { reg }
            | Route::Me { reg }
            | Route::Web(Page::Registry { reg } | Page::Crate { reg, .. } | Page::CrateVersion { reg, .. }) => {
                Some(reg)
            }
            _ => None,
        }
    }
}

fn decode(seg: &str) -> String {
    percent_decode_str(seg).decode_utf8_lossy().into_owned()
}

fn method_is(m: &Method, allowed: &[Method], names: &'static str) -> Result<(), RouteError> {
    if allowed.contains(m) || (*m == Method::HEAD && allowed.contains(&Method::GET)) {
        Ok(())
    } else {
        Err(RouteError::MethodNotAllowed(names))
    }
}

/// More segments than any route has (a download URL has 7); longer paths are not found.
const MAX_SEGMENTS: usize = 16;

/// Matches a request to a route. Paths without `%` (nearly all) are split without allocating.
pub fn route(method: &Method, path: &str) -> Result<Route, RouteError> {
    // The two pages whose path is defined by its slashes: `/` and `/{reg}/` (a registry's
    // root; without the slash it stays not found, as before the web interface).
    if let Some(inner) = path
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix('/').or(Some(p).filter(|p| p.is_empty())))
    {
        if inner.is_empty() {
            return method_is(method, &[Method::GET], "GET").map(|()| Route::Web(Page::Home));
        }
        if !inner.contains('/') && inner != "-" {
            return method_is(method, &[Method::GET], "GET")
                .map(|()| Route::Web(Page::Registry { reg: decode(inner) }));
        }
    }
    if path.contains('%') {
        let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(decode).collect();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        return route_segments(method, &s);
    }
    let mut buf = [""; MAX_SEGMENTS];
    let mut n = 0;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let slot = buf.get_mut(n).ok_or(RouteError::NotFound)?;
        *slot = seg;
        n += 1;
    }
    route_segments(method, &buf[..n])
}

fn route_segments(method: &Method, s: &[&str]) -> Result<Route, RouteError> {
    let get = |r: Route| method_is(method, &[Method::GET], "GET").map(|()| r);
    let owned = |x: &str| x.to_owned();
    match s {
        ["-", "healthz"] => get(Route::Healthz),
        ["-", "readyz"] => get(Route::Readyz),
        ["-", "metrics"] => get(Route::Metrics),
        ["-", "api", "v1", "registries"] => {
            method_is(method, &[Method::GET, Method::POST], "GET, POST").map(|()| Route::AdminRegistries)
        }
        ["-", "api", "v1", "registries", name] => method_is(
            method,
            &[Method::GET, Method::PATCH, Method::DELETE],
            "GET, PATCH, DELETE",
        )
        .map(|()| Route::AdminRegistry { name: owned(name) }),
        ["-", "api", "v1", "registries", name, "export"] => {
            method_is(method, &[Method::POST], "POST").map(|()| Route::AdminExport { name: owned(name) })
        }
        ["-", "api", "v1", "import"] => method_is(method, &[Method::POST], "POST").map(|()| Route::AdminImport),
        ["-", "api", "v1", "hooks"] => {
            method_is(method, &[Method::GET, Method::POST], "GET, POST").map(|()| Route::AdminHooks)
        }
        ["-", "api", "v1", "hooks", id] => {
            method_is(method, &[Method::DELETE], "DELETE").map(|()| Route::AdminHook { id: owned(id) })
        }
        ["-", "api", "v1", "hooks", id, "deliveries"] => {
            method_is(method, &[Method::GET], "GET").map(|()| Route::AdminHookDeliveries { id: owned(id) })
        }
        ["-", "api", "v1", "deliveries", id, "redeliver"] => {
            method_is(method, &[Method::POST], "POST").map(|()| Route::AdminRedeliver { id: owned(id) })
        }
        ["-", "api", "v1", "quarantine"] => get(Route::AdminQuarantine),
        ["-", "api", "v1", "quarantine", sha] => {
            method_is(method, &[Method::DELETE], "DELETE").map(|()| Route::AdminQuarantined { sha: owned(sha) })
        }
        ["-", "api", "v1", "quarantine", sha, "release"] => {
            method_is(method, &[Method::POST], "POST").map(|()| Route::AdminQuarantineRelease { sha: owned(sha) })
        }
        ["-", "api", "v1", "advisories"] => {
            method_is(method, &[Method::GET, Method::PUT], "GET, PUT").map(|()| Route::AdminAdvisories)
        }
        ["-", "api", "v1", "users"] => {
            method_is(method, &[Method::GET, Method::POST], "GET, POST").map(|()| Route::AdminUsers)
        }
        ["-", "api", "v1", "tokens"] => {
            method_is(method, &[Method::GET, Method::POST], "GET, POST").map(|()| Route::AdminTokens)
        }
        ["-", "api", "v1", "tokens", id] => {
            method_is(method, &[Method::DELETE], "DELETE").map(|()| Route::AdminToken { id: owned(id) })
        }
        ["-", "search"] => get(Route::Web(Page::Search)),
        ["-", "login"] => {
            method_is(method, &[Method::GET, Method::POST], "GET, POST").map(|()| Route::Web(Page::Login))
        }
        ["-", "logout"] => method_is(method, &[Method::POST], "POST").map(|()| Route::Web(Page::Logout)),
        ["-", "admin"] => get(Route::Web(Page::Admin)),
        ["-", "admin", "registries"] => {
            method_is(method, &[Method::POST], "POST").map(|()| Route::Web(Page::AdminRegistries))
        }
        ["-", "admin", "registries", "new"] => get(Route::Web(Page::AdminRegistryNew)),
        ["-", "admin", "registries", name] => method_is(method, &[Method::GET, Method::POST], "GET, POST")
            .map(|()| Route::Web(Page::AdminRegistry { name: owned(name) })),
        ["-", "admin", "registries", name, "delete"] => method_is(method, &[Method::POST], "POST")
            .map(|()| Route::Web(Page::AdminRegistryDelete { name: owned(name) })),
        ["-", "admin", "users"] => {
            method_is(method, &[Method::GET, Method::POST], "GET, POST").map(|()| Route::Web(Page::AdminUsers))
        }
        ["-", "admin", "tokens"] => {
            method_is(method, &[Method::GET, Method::POST], "GET, POST").map(|()| Route::Web(Page::AdminTokens))
        }
        ["-", "admin", "tokens", id, "revoke"] => {
            method_is(method, &[Method::POST], "POST").map(|()| Route::Web(Page::AdminTokenRevoke { id: owned(id) }))
        }
        ["-", "admin", "hooks"] => {
            method_is(method, &[Method::GET, Method::POST], "GET, POST").map(|()| Route::Web(Page::AdminHooks))
        }
        ["-", "admin", "hooks", id] => get(Route::Web(Page::AdminHook { id: owned(id) })),
        ["-", "admin", "hooks", id, "delete"] => {
            method_is(method, &[Method::POST], "POST").map(|()| Route::Web(Page::AdminHookDelete { id: owned(id) }))
        }
        ["-", "admin", "hooks", id, "redeliver", delivery] => method_is(method, &[Method::POST], "POST").map(|()| {
            Route::Web(Page::AdminHookRedeliver {
                id: owned(id),
                delivery: owned(delivery),
            })
        }),
        ["-", "admin", "quarantine"] => get(Route::Web(Page::AdminQuarantine)),
        ["-", "admin", "quarantine", sha, "release"] => method_is(method, &[Method::POST], "POST")
            .map(|()| Route::Web(Page::AdminQuarantineRelease { sha: owned(sha) })),
        ["-", "admin", "quarantine", sha, "purge"] => method_is(method, &[Method::POST], "POST")
            .map(|()| Route::Web(Page::AdminQuarantinePurge { sha: owned(sha) })),
        ["-", "static", file] => get(Route::Web(Page::Static { file: owned(file) })),
        ["-", ..] => Err(RouteError::NotFound),
        [reg, "crates", name] => get(Route::Web(Page::Crate {
            reg: owned(reg),
            name: owned(name),
        })),
        [reg, "crates", name, version] => get(Route::Web(Page::CrateVersion {
            reg: owned(reg),
            name: owned(name),
            version: owned(version),
        })),
        [reg, "index", "config.json"] => get(Route::ConfigJson { reg: owned(reg) }),
        [reg, "index", rest @ ..] if !rest.is_empty() => get(Route::IndexFile {
            reg: owned(reg),
            path: rest.join("/"),
        }),
        [reg, "me"] => get(Route::Me { reg: owned(reg) }),
        [reg, "api", "v1", "crates"] => get(Route::Search { reg: owned(reg) }),
        [reg, "api", "v1", "crates", "new"] => {
            method_is(method, &[Method::PUT], "PUT").map(|()| Route::Publish { reg: owned(reg) })
        }
        [reg, "api", "v1", "crates", name, "owners"] => {
            method_is(method, &[Method::GET, Method::PUT, Method::DELETE], "GET, PUT, DELETE").map(|()| Route::Owners {
                reg: owned(reg),
                name: owned(name),
            })
        }
        [reg, "api", "v1", "crates", name, version, "download"] => get(Route::Download {
            reg: owned(reg),
            name: owned(name),
            version: owned(version),
        }),
        [reg, "api", "v1", "crates", name, version, "yank"] => {
            method_is(method, &[Method::DELETE], "DELETE").map(|()| Route::Yank {
                reg: owned(reg),
                name: owned(name),
                version: owned(version),
            })
        }
        [reg, "api", "v1", "crates", name, version, "unyank"] => {
            method_is(method, &[Method::PUT], "PUT").map(|()| Route::Unyank {
                reg: owned(reg),
                name: owned(name),
                version: owned(version),
            })
        }
        _ => Err(RouteError::NotFound),
    }
}

/// The value of query parameter `key`, percent-decoded (`+` as space, as in forms).
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The parameters of a search (`GET /api/v1/crates?q=&per_page=&page=`): `q` (empty when
/// absent), `per_page` (10) and `page` (1) when absent or not a number. Total on any query.
pub fn search_params(query: Option<&str>) -> (String, usize, usize) {
    let q = query_param(query, "q").unwrap_or_default();
    let per_page = query_param(query, "per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let page = query_param(query, "page").and_then(|v| v.parse().ok()).unwrap_or(1);
    (q, per_page, page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn registry_routes() {
        assert_eq!(
            route(&Method::GET, "/local/index/config.json"),
            Ok(Route::ConfigJson { reg: "local".into() })
        );
        assert_eq!(
            route(&Method::GET, "/local/index/ac/me/acme-core"),
            Ok(Route::IndexFile {
                reg: "local".into(),
                path: "ac/me/acme-core".into()
            })
        );
        assert_eq!(
            route(&Method::GET, "/local/api/v1/crates/foo/1.0.0+b.5/download"),
            Ok(Route::Download {
                reg: "local".into(),
                name: "foo".into(),
                version: "1.0.0+b.5".into()
            })
        );
        assert_eq!(
            route(&Method::GET, "/local/api/v1/crates/foo/1.0.0%2Bb/download"),
            Ok(Route::Download {
                reg: "local".into(),
                name: "foo".into(),
                version: "1.0.0+b".into()
            })
        );
        assert_eq!(
            route(&Method::PUT, "/local//api/v1/crates/new"),
            Ok(Route::Publish { reg: "local".into() })
        );
        assert_eq!(
            route(&Method::DELETE, "/local/api/v1/crates/foo/1.0.0/yank"),
            Ok(Route::Yank {
                reg: "local".into(),
                name: "foo".into(),
                version: "1.0.0".into()
            })
        );
        assert_eq!(
            route(&Method::GET, "/local/api/v1/crates/new"),
            Err(RouteError::MethodNotAllowed("PUT"))
        );
        assert_eq!(
            route(&Method::POST, "/local/api/v1/crates/foo/1.0.0/yank"),
            Err(RouteError::MethodNotAllowed("DELETE"))
        );
        assert_eq!(route(&Method::POST, "/-/api/v1/import"), Ok(Route::AdminImport));
        assert_eq!(route(&Method::PUT, "/-/api/v1/advisories"), Ok(Route::AdminAdvisories));
        assert_eq!(route(&Method::GET, "/-/api/v1/advisories"), Ok(Route::AdminAdvisories));
        assert!(route(&Method::DELETE, "/-/api/v1/advisories").is_err());
        assert_eq!(
            route(&Method::GET, "/-/api/v1/import"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        assert_eq!(
            route(&Method::POST, "/-/api/v1/registries/mirror/export"),
            Ok(Route::AdminExport { name: "mirror".into() })
        );
        assert_eq!(route(&Method::GET, "/local/other"), Err(RouteError::NotFound));
        assert_eq!(route(&Method::GET, "/-/nothing"), Err(RouteError::NotFound));
        assert_eq!(route(&Method::HEAD, "/-/healthz"), Ok(Route::Healthz));
    }

    #[test]
    fn quarantine_routes() {
        let sha = "a".repeat(64);
        assert_eq!(route(&Method::GET, "/-/api/v1/quarantine"), Ok(Route::AdminQuarantine));
        assert_eq!(
            route(&Method::POST, "/-/api/v1/quarantine"),
            Err(RouteError::MethodNotAllowed("GET"))
        );
        assert_eq!(
            route(&Method::DELETE, &format!("/-/api/v1/quarantine/{sha}")),
            Ok(Route::AdminQuarantined { sha: sha.clone() })
        );
        assert_eq!(
            route(&Method::GET, &format!("/-/api/v1/quarantine/{sha}")),
            Err(RouteError::MethodNotAllowed("DELETE"))
        );
        assert_eq!(
            route(&Method::POST, &format!("/-/api/v1/quarantine/{sha}/release")),
            Ok(Route::AdminQuarantineRelease { sha })
        );
        assert_eq!(
            route(&Method::POST, "/-/api/v1/quarantine/..%2F..%2Fx/release"),
            Ok(Route::AdminQuarantineRelease { sha: "../../x".into() }),
            "decoded here, refused as not a SHA-256 by the registry layer"
        );
    }

    #[test]
    fn page_routes() {
        let page = |m: Method, p: &str| route(&m, p);
        assert_eq!(page(Method::GET, "/"), Ok(Route::Web(Page::Home)));
        assert_eq!(
            page(Method::GET, "/local/"),
            Ok(Route::Web(Page::Registry { reg: "local".into() }))
        );
        // Without the slash, and `//x`, nothing lives there (as before the web interface).
        assert_eq!(page(Method::GET, "/local"), Err(RouteError::NotFound));
        assert_eq!(page(Method::GET, "//nothing"), Err(RouteError::NotFound));
        assert_eq!(page(Method::GET, "/-/"), Err(RouteError::NotFound));
        assert_eq!(page(Method::POST, "/"), Err(RouteError::MethodNotAllowed("GET")));
        assert_eq!(
            page(Method::GET, "/local/crates/foo/1.0.0"),
            Ok(Route::Web(Page::CrateVersion {
                reg: "local".into(),
                name: "foo".into(),
                version: "1.0.0".into()
            }))
        );
        assert_eq!(
            page(Method::GET, "/local/crates/foo"),
            Ok(Route::Web(Page::Crate {
                reg: "local".into(),
                name: "foo".into()
            }))
        );
        assert_eq!(page(Method::GET, "/-/search"), Ok(Route::Web(Page::Search)));
        assert_eq!(page(Method::POST, "/-/login"), Ok(Route::Web(Page::Login)));
        assert_eq!(
            page(Method::GET, "/-/logout"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        assert_eq!(
            page(Method::POST, "/-/admin/tokens/abc/revoke"),
            Ok(Route::Web(Page::AdminTokenRevoke { id: "abc".into() }))
        );
        assert_eq!(
            page(Method::GET, "/-/admin/registries/new"),
            Ok(Route::Web(Page::AdminRegistryNew))
        );
        assert_eq!(
            page(Method::GET, "/-/admin/registries/x"),
            Ok(Route::Web(Page::AdminRegistry { name: "x".into() }))
        );
        // Cargo's routes are unchanged.
        assert_eq!(page(Method::GET, "/local/me"), Ok(Route::Me { reg: "local".into() }));
        assert_eq!(
            page(Method::GET, "/local/api/v1/crates"),
            Ok(Route::Search { reg: "local".into() })
        );
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("q=serde%2Djson&per_page=5"), "q").as_deref(),
            Some("serde-json")
        );
        assert_eq!(query_param(Some("q=a+b"), "q").as_deref(), Some("a b"));
        assert_eq!(query_param(Some("q=x"), "per_page"), None);
        assert_eq!(query_param(None, "q"), None);
    }

    #[test]
    fn search_parameters() {
        assert_eq!(search_params(None), (String::new(), 10, 1));
        assert_eq!(search_params(Some("q=serde&per_page=5&page=3")), ("serde".into(), 5, 3));
        assert_eq!(
            search_params(Some("per_page=-1&page=99999999999999999999999")),
            (String::new(), 10, 1)
        );
        assert_eq!(search_params(Some("q=%FF%C3&page")), ("\u{fffd}\u{fffd}".into(), 10, 1));
    }

    /// Any text, arbitrary bytes decoded lossily, or a route-shaped path with hostile segments.
    fn any_path() -> impl Strategy<Value = String> {
        let seg = prop_oneof![
            Just("local".to_owned()),
            Just("index".to_owned()),
            Just("api".to_owned()),
            Just("v1".to_owned()),
            Just("crates".to_owned()),
            Just("-".to_owned()),
            "[a-z0-9.+-]{0,6}",
            "(%[0-9A-Fa-f]{2}|%|[a-z./?#\\\\]){0,6}",
        ];
        prop_oneof![
            any::<String>(),
            proptest::collection::vec(any::<u8>(), 0..120).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            proptest::collection::vec(seg, 0..10).prop_map(|s| format!("/{}", s.join("/"))),
        ]
    }

    fn any_method() -> impl Strategy<Value = Method> {
        prop_oneof![
            Just(Method::GET),
            Just(Method::HEAD),
            Just(Method::PUT),
            Just(Method::POST),
            Just(Method::DELETE),
            Just(Method::PATCH),
            Just(Method::OPTIONS),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn never_panics(path in any_path(), method in any_method()) {
            let _ = route(&method, &path);
            let _ = query_param(Some(&path), "q");
            let _ = search_params(Some(&path));
            if let Ok(Route::IndexFile { path, .. }) = route(&method, &path) {
                let _ = crate::index::name::name_from_index_path(&path);
            }
        }

        /// The request headers the daemon parses itself.
        #[test]
        fn header_values_never_panic(v in any_path()) {
            let etag = crate::index::etag::strong_etag(v.as_bytes());
            let _ = crate::index::etag::if_none_match(&v, &etag);
            let _ = crate::index::etag::if_none_match(&etag, &v);
            let _ = crate::index::gzip::accepts_gzip(&v);
            let _ = crate::index::gzip::gzip_etag(&v);
            let _ = crate::registry::auth::secret_from_header(&v);
            let _ = crate::registry::Scope::parse(&v);
        }

        /// Whole request targets (path and query string) as hyper parses them.
        #[test]
        fn request_targets_never_panic(path in any_path(), query in any_path()) {
            let target = format!("{path}?{query}");
            if let Ok(uri) = target.parse::<hyper::Uri>() {
                let _ = route(&Method::GET, uri.path());
                let (q, per_page, page) = search_params(uri.query());
                let _ = (q.len(), per_page, page);
            }
        }

        /// The allocation-free split and the decoding one agree on every path without `%`.
        #[test]
        fn fast_split_matches_decoding_split(segs in proptest::collection::vec("[a-z0-9.+-]{0,6}", 0..20)) {
            let path = format!("/{}", segs.join("/"));
            // `/` and `/{reg}/` are routed by their slashes before the split.
            prop_assume!(!path.ends_with('/'));
            let decoded: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(decode).collect();
            let s: Vec<&str> = decoded.iter().map(String::as_str).collect();
            let slow = if s.len() > MAX_SEGMENTS { Err(RouteError::NotFound) } else { route_segments(&Method::GET, &s) };
            prop_assert_eq!(route(&Method::GET, &path), slow);
        }
    }
}
