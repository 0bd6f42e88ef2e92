//! The page templates. Each takes what the handler got from the registry layer and returns
//! the whole document; maud escapes every interpolated value.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::setup::{self, Snippet};
use super::Viewer;
use crate::config::{RegistryKind, RegistrySpec, Shadow};
use crate::index::name::REGISTRY_NAME_RULE;
use crate::registry::advisories::Note;
use crate::registry::{client_registry_name, CrateView, ProxyStatus, VersionView};

/// Characters escaped in a path segment of our URLs (names and versions are checked before
/// they get here, but a version's `+` and anything odd stay unambiguous).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// A path segment, percent-encoded.
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The URL of a crate page.
pub fn crate_url(reg: &str, name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("/{}/crates/{}/{}", seg(reg), seg(name), seg(v)),
        None => format!("/{}/crates/{}", seg(reg), seg(name)),
    }
}

fn kind_name(spec: &RegistrySpec) -> &'static str {
    match spec.kind {
        RegistryKind::Proxy => "proxy",
        RegistryKind::Hosted if !spec.upstreams.is_empty() => "hosted (merged)",
        RegistryKind::Hosted => "hosted",
    }
}

/// The whole document around a page's content.
fn layout(title: &str, viewer: Option<Viewer<'_>>, content: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cargohold" }
                link rel="stylesheet" href={ "/-/static/app.css?v=" (super::asset_version()) };
                script src={ "/-/static/app.js?v=" (super::asset_version()) } defer {}
            }
            body {
                header {
                    nav aria-label="Main" {
                        a.brand href="/" { "cargohold" }
                        form role="search" action="/-/search" method="get" {
                            label.visually-hidden for="nav-q" { "Search crates" }
                            input #nav-q type="search" name="q" placeholder="Search crates";
                            button type="submit" { "Search" }
                        }
                        div.who {
                            @if let Some(v) = viewer {
                                span { "Signed in as " strong { (v.user) } }
                                @if v.admin { a href="/-/admin" { "Administration" } }
                                form.inline method="post" action="/-/logout" {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    button type="submit" { "Sign out" }
                                }
                            } @else {
                                a href="/-/login" { "Sign in" }
                            }
                        }
                    }
                }
                main { (content) }
            }
        }
    }
    .into_string()
}

fn labels(spec: &RegistrySpec) -> Markup {
    html! { @for l in &spec.labels { span.label { (l) } } }
}

fn snippet_block(id: &str, s: &Snippet) -> Markup {
    html! {
        h3 { code { (s.file) } }
        div.snippet {
            pre #(id) { code { (s.text) } }
            button type="button" data-copy=(id) hidden { "Copy" }
        }
    }
}

/// A registry in the home page's list.
#[derive(Debug, Clone)]
pub struct RegistryRow<'a> {
    pub spec: &'a RegistrySpec,
    /// Crates published here (`None` for a proxy: it holds only what it cached).
    pub crates: Option<usize>,
}

/// `/`: the registries the visitor may read.
pub fn home(viewer: Option<Viewer<'_>>, rows: &[RegistryRow<'_>]) -> String {
    layout(
        "Registries",
        viewer,
        html! {
            h1 { "Registries" }
            form role="search" action="/-/search" method="get" {
                label for="home-q" { "Search crates in every registry you may read" }
                " "
                input #home-q type="search" name="q";
                button type="submit" { "Search" }
            }
            @if rows.is_empty() {
                p { "No registry to show. "
                    @if viewer.is_none() { "Private registries appear after you " a href="/-/login" { "sign in" } "." } }
            } @else {
                table {
                    thead { tr { th { "Registry" } th { "Kind" } th { "Description" } th { "Labels" } th { "Crates" } } }
                    tbody {
                        @for r in rows {
                            tr {
                                td { a href={ "/" (seg(&r.spec.name)) "/" } { (r.spec.name) } }
                                td { (kind_name(r.spec)) }
                                td { (r.spec.description) }
                                td { (labels(r.spec)) }
                                td { @match r.crates { Some(n) => (n), None => span.muted { "cache" } } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A crate in a list (registry page, search).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateRow {
    pub name: String,
    pub max_version: Option<String>,
    pub description: Option<String>,
    /// Security advisories affecting `max_version` (id, title).
    pub advisories: Vec<(String, String)>,
}

impl CrateRow {
    /// The rows of a search answer (`{"crates":[{"name","max_version","description"}]}`).
    pub fn from_search(v: &Value) -> Vec<CrateRow> {
        v["crates"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| {
                        Some(CrateRow {
                            name: c["name"].as_str()?.to_owned(),
                            max_version: c["max_version"].as_str().map(str::to_owned),
                            description: c["description"].as_str().map(str::to_owned),
                            advisories: c["advisories"]
                                .as_array()
                                .map(|l| {
                                    l.iter()
                                        .filter_map(|a| {
                                            Some((a["id"].as_str()?.to_owned(), a["title"].as_str()?.to_owned()))
                                        })
                                        .collect()
                                })
                                .unwrap_or_default(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The ids of the advisories of a listed version, each with its title on hover.
fn advisory_marks(list: &[(String, String)]) -> Markup {
    html! { @for (id, title) in list { " " span.advisory title=(title) { (id) } } }
}

fn crate_table(reg: &str, rows: &[CrateRow]) -> Markup {
    html! {
        table {
            thead { tr { th { "Crate" } th { "Version" } th { "Description" } } }
            tbody {
                @for c in rows {
                    tr {
                        td { a href=(crate_url(reg, &c.name, None)) { (c.name) } }
                        td { @if let Some(v) = &c.max_version { (v) } (advisory_marks(&c.advisories)) }
                        td { @if let Some(d) = &c.description { (d) } }
                    }
                }
            }
        }
    }
}

/// What a registry page shows.
pub struct RegistryPage<'a> {
    pub spec: &'a RegistrySpec,
    pub index_url: &'a str,
    pub crates: &'a [CrateRow],
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
    pub q: &'a str,
    pub proxy: Option<&'a ProxyStatus>,
}

/// `/{reg}/`: Setup Client, cache figures of a proxy, the crates (paged).
pub fn registry(viewer: Option<Viewer<'_>>, p: &RegistryPage<'_>) -> String {
    let spec = p.spec;
    let name = &spec.name;
    let client = client_registry_name(name);
    let snippets = setup::snippets(spec, p.index_url);
    let pages = p.total.div_ceil(p.per_page.max(1)).max(1);
    let base = format!("/{}/", seg(name));
    let q_enc = utf8_percent_encode(p.q, NON_ALPHANUMERIC).to_string();
    layout(
        name,
        viewer,
        html! {
            h1 { "Registry " (name) }
            p { span.label { (kind_name(spec)) } (labels(spec)) @if spec.auth_required { span.label { "token needed to read" } } }
            @if !spec.description.is_empty() { p { (spec.description) } }
            @if !spec.upstreams.is_empty() {
                p { "Merges the proxies " @for (i, u) in spec.upstreams.iter().enumerate() {
                    @if i > 0 { ", " } a href={ "/" (seg(u)) "/" } { (u) } }
                    " under its own crates (a local crate "
                    @if spec.shadow == Shadow::Crate { "hides every upstream version of its name" } @else { "adds its versions to the upstream ones" }
                    ")." }
            }
            section aria-labelledby="setup" {
                h2 #setup { "Setup Client" }
                @match spec.kind {
                    RegistryKind::Proxy => p { "Replace crates.io with this proxy: cargo then fetches every public crate through it." },
                    RegistryKind::Hosted if !spec.upstreams.is_empty() => {
                        p { "Recommended: replace crates.io with " code { (client) } ", and name it with "
                            code { "--registry " (client) } " only for private crates. " (setup::MERGED_WHY) }
                    }
                    RegistryKind::Hosted => p { "Add the registry and its token, then publish with "
                        code { "cargo publish --registry " (client) } "." },
                }
                @for (i, s) in snippets.iter().enumerate() {
                    (snippet_block(&format!("snippet-{i}"), s))
                }
                @if spec.kind == RegistryKind::Hosted {
                    p.hint { "Replace " code { "<token>" } " with a token of yours; an administrator creates them under Administration → Tokens." }
                }
            }
            @if let Some(ps) = p.proxy {
                section aria-labelledby="cache" {
                    h2 #cache { "Cache" }
                    table {
                        tbody {
                            tr { th scope="row" { "Upstream" } td { code { (ps.upstream_url) } } }
                            tr { th scope="row" { "Reachable now" } td {
                                @match &ps.reachable { Ok(()) => "yes", Err(e) => span.yanked { "no: " (e) } } } }
                            tr { th scope="row" { "Index files cached" } td { (ps.index_files) } }
                            tr { th scope="row" { "Crate files cached (all proxies)" } td { (ps.crate_files) " files, " (human_bytes(ps.crate_bytes)) } }
                            tr { th scope="row" { "Hit ratio since start" } td {
                                @if ps.lookups == 0 { "no lookups yet" } @else {
                                    (format!("{:.1} %", ps.hits as f64 * 100.0 / ps.lookups as f64)) " (" (ps.hits) " of " (ps.lookups) " lookups)" } } }
                        }
                    }
                }
            }
            section aria-labelledby="crates" {
                h2 #crates { "Crates" }
                form role="search" method="get" action=(base) {
                    label for="reg-q" { "Filter crates of " (name) } " "
                    input #reg-q type="search" name="q" value=(p.q);
                    button type="submit" { "Filter" }
                }
                @if spec.kind == RegistryKind::Proxy { p.hint { "A proxy lists the crates it has cached." } }
                @if p.crates.is_empty() { p { "No crates." } } @else {
                    p.muted { (p.total) @if p.total == 1 { " crate" } @else { " crates" } ", page " (p.page) " of " (pages) }
                    (crate_table(name, p.crates))
                    nav aria-label="Pages" {
                        @if p.page > 1 { a rel="prev" href={ (base) "?q=" (q_enc) "&page=" (p.page - 1) } { "Previous page" } " " }
                        @if p.page < pages { a rel="next" href={ (base) "?q=" (q_enc) "&page=" (p.page + 1) } { "Next page" } }
                    }
                }
            }
        },
    )
}

/// Bytes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `/{reg}/crates/{name}[/{version}]`: one version of a crate, every version, its README.
pub fn crate_page(
    viewer: Option<Viewer<'_>>,
    spec: &RegistrySpec,
    view: &CrateView,
    sel: &VersionView,
    readme_html: Option<&str>,
) -> String {
    crate_page_with_advisories(viewer, spec, view, sel, readme_html, &Default::default())
}

/// [`crate_page`] with the security advisories of each version (by version string): the
/// selected version's are shown above everything, with their ids and titles, and each
/// affected version is marked in the versions table.
pub fn crate_page_with_advisories(
    viewer: Option<Viewer<'_>>,
    spec: &RegistrySpec,
    view: &CrateView,
    sel: &VersionView,
    readme_html: Option<&str>,
    advisories: &std::collections::HashMap<String, Vec<Note>>,
) -> String {
    let reg = &spec.name;
    let none = Vec::new();
    let sel_notes = advisories.get(&sel.line.vers).unwrap_or(&none);
    let line = &sel.line;
    // Crates that come through crates.io's replacement need no `--registry`.
    let add = if spec.kind == RegistryKind::Proxy || (!view.local && !spec.upstreams.is_empty()) {
        format!("cargo add {}@{}", view.name, line.vers)
    } else {
        format!(
            "cargo add {}@{} --registry {}",
            view.name,
            line.vers,
            client_registry_name(reg)
        )
    };
    let link_deps = spec.kind == RegistryKind::Proxy || !spec.upstreams.is_empty();
    layout(
        &format!("{} {}", view.name, line.vers),
        viewer,
        html! {
            p.muted { a href={ "/" (seg(reg)) "/" } { (reg) } " / crates" }
            h1 { (view.name) " " (line.vers) @if line.yanked { " " span.yanked { "(yanked)" } } }
            @if let Some(d) = &view.description { p { (d) } }
            @for n in sel_notes {
                p.advisory role="alert" {
                    strong { @if n.informational.is_some() { "Advisory " } @else { "Security advisory " } (n.id) }
                    ": " (n.title)
                    @if let Some(k) = &n.informational { " " span.label { (k) } }
                }
            }
            div.snippet {
                pre #add-line { code { (add) } }
                button type="button" data-copy="add-line" hidden { "Copy" }
            }
            div.grid {
                div {
                    section.readme aria-labelledby="readme" {
                        h2 #readme { "README" }
                        @match readme_html {
                            Some(h) => div { (PreEscaped(h)) },
                            None => p.muted { @if view.local { "This version has no README." } @else { "No README: a proxied crate's README shows once its .crate is in the cache (after a first download)." } },
                        }
                    }
                }
                aside {
                    section aria-labelledby="meta" {
                        h2 #meta { "About this version" }
                        p { "Published " @match &line.pubtime { Some(t) => (t), None => "(time unknown)" }
                            @if let Some(by) = &sel.published_by { " by " (by) } }
                        @if let Some(rv) = &line.rust_version { p { "Rust " (rv) } }
                        @if !view.owners.is_empty() {
                            h3 { "Owners" }
                            ul { @for o in &view.owners { li { (o) } } }
                        }
                        @if !view.keywords.is_empty() { p { @for k in &view.keywords { span.label { (k) } } } }
                    }
                    section aria-labelledby="deps" {
                        h2 #deps { "Dependencies" }
                        @if line.deps.is_empty() { p.muted { "None." } } @else {
                            ul {
                                @for d in &line.deps {
                                    @let real = d.package.as_deref().unwrap_or(&d.name);
                                    li {
                                        @if d.registry.is_none() || link_deps {
                                            a href=(crate_url(reg, real, None)) { (real) }
                                        } @else { (real) }
                                        " " code { (d.req) }
                                        @if d.kind != "normal" { " " span.label { (d.kind) } }
                                        @if d.optional { " " span.label { "optional" } }
                                        @if let Some(t) = &d.target { " " span.muted { (t) } }
                                    }
                                }
                            }
                        }
                    }
                    section aria-labelledby="features" {
                        h2 #features { "Features" }
                        @if line.features.is_empty() { p.muted { "None." } } @else {
                            ul { @for (f, on) in &line.features { li { code { (f) } @if !on.is_empty() { " = " (on.join(", ")) } } } }
                        }
                    }
                }
            }
            section aria-labelledby="versions" {
                h2 #versions { "Versions (" (view.versions.len()) ")" }
                table {
                    thead { tr { th { "Version" } th { "Published" } th { "By" } th { "Status" } } }
                    tbody {
                        @for v in &view.versions {
                            tr {
                                td { a href=(crate_url(reg, &view.name, Some(&v.line.vers))) { (v.line.vers) } }
                                td { @if let Some(t) = &v.line.pubtime { (t) } }
                                td { @if let Some(b) = &v.published_by { (b) } }
                                td {
                                    @if v.line.yanked { span.yanked { "yanked" } }
                                    @for n in advisories.get(&v.line.vers).unwrap_or(&none) {
                                        " " span.advisory title=(n.title) { (n.id) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A search hit across registries.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub registry: String,
    pub krate: CrateRow,
}

/// `/-/search?q=`.
pub fn search(viewer: Option<Viewer<'_>>, q: &str, hits: &[SearchHit], error: Option<&str>) -> String {
    layout(
        "Search",
        viewer,
        html! {
            h1 { "Search" }
            form role="search" action="/-/search" method="get" {
                label for="search-q" { "Crate name, description or keyword" } " "
                input #search-q type="search" name="q" value=(q);
                button type="submit" { "Search" }
            }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if !q.is_empty() {
                h2 { (hits.len()) " results for " q { (q) } }
                @if !hits.is_empty() {
                    table {
                        thead { tr { th { "Crate" } th { "Registry" } th { "Version" } th { "Description" } } }
                        tbody {
                            @for h in hits {
                                tr {
                                    td { a href=(crate_url(&h.registry, &h.krate.name, None)) { (h.krate.name) } }
                                    td { a href={ "/" (seg(&h.registry)) "/" } { (h.registry) } }
                                    td { @if let Some(v) = &h.krate.max_version { (v) } (advisory_marks(&h.krate.advisories)) }
                                    td { @if let Some(d) = &h.krate.description { (d) } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `/-/login`. `csrf` is the login form's token (a cookie holds the same value).
pub fn login(error: Option<&str>, csrf: &str) -> String {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            p { "Sign in with a token: the administrator's, or one an administrator made for you. "
                "The token is checked and then forgotten; the session ends when you sign out, after 8 hours without use, or when the token is revoked." }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.stack method="post" action="/-/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required;
                p { button type="submit" { "Sign in" } }
            }
        },
    )
}

/// An error page (404, 403, 400 ...).
pub fn error(viewer: Option<Viewer<'_>>, title: &str, message: &str) -> String {
    layout(
        title,
        viewer,
        html! {
            h1 { (title) }
            p { (message) }
            p { a href="/" { "All registries" } }
        },
    )
}

fn admin_nav() -> Markup {
    html! {
        nav aria-label="Administration" {
            p { a href="/-/admin" { "Registries" } " · " a href="/-/admin/registries/new" { "New registry" } " · "
                a href="/-/admin/users" { "Users" } " · " a href="/-/admin/tokens" { "Tokens" } " · "
                a href="/-/admin/hooks" { "Webhooks" } " · " a href="/-/admin/quarantine" { "Quarantine" } }
        }
    }
}

fn csrf_field(v: Viewer<'_>) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf); }
}

/// `/-/admin`: every registry, with links to edit them.
pub fn admin(v: Viewer<'_>, rows: &[RegistryRow<'_>], notice: Option<&str>) -> String {
    layout(
        "Administration",
        Some(v),
        html! {
            h1 { "Administration" }
            (admin_nav())
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            h2 { "Registries" }
            table {
                thead { tr { th { "Registry" } th { "Kind" } th { "Description" } th { "Labels" } th { "Crates" } th { "Access" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href={ "/-/admin/registries/" (seg(&r.spec.name)) } { (r.spec.name) } }
                            td { (kind_name(r.spec)) }
                            td { (r.spec.description) }
                            td { (labels(r.spec)) }
                            td { @if let Some(n) = r.crates { (n) } }
                            td { @if r.spec.auth_required { "token" } @else { "anyone" } }
                        }
                    }
                }
            }
            p { a href="/-/admin/registries/new" { "Create a registry" } }
        },
    )
}

/// The values of the registry form (from a stored registry, or as posted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryForm {
    pub name: String,
    pub kind: String,
    pub description: String,
    /// Comma-separated.
    pub labels: String,
    pub auth_required: bool,
    /// Proxy: the upstream index URL (empty: crates.io).
    pub upstream: String,
    /// Hosted: the proxies merged.
    pub upstreams: Vec<String>,
    /// `off`, `flag` or `deny` (empty: the default).
    pub advisories: String,
    /// Comma-separated advisory ids.
    pub advisories_allow: String,
    /// Proxy: never contact the upstream.
    pub offline: bool,
    /// Proxy: serve index files cut down to the cached versions.
    pub prune_index: bool,
    /// Proxy: seconds (empty: the default).
    pub index_ttl_secs: String,
    /// Proxy: seconds (empty: the default).
    pub negative_ttl_secs: String,
    /// Hosted: `crate` or `version` (empty: the default).
    pub shadow: String,
    /// Hosted: publishing new names that exist upstream.
    pub allow_upstream_names: bool,
    /// Hosted: comma-separated SPDX ids (empty: no licence policy).
    pub allowed_licenses: String,
    /// Hosted: a `license_file` alone passes the licence policy.
    pub allow_license_file_only: bool,
}

impl RegistryForm {
    /// The form of a stored registry.
    pub fn of(spec: &RegistrySpec) -> Self {
        RegistryForm {
            name: spec.name.clone(),
            kind: match spec.kind {
                RegistryKind::Hosted => "hosted".into(),
                RegistryKind::Proxy => "proxy".into(),
            },
            description: spec.description.clone(),
            labels: spec.labels.join(", "),
            auth_required: spec.auth_required,
            upstream: spec.upstream.clone().unwrap_or_default(),
            upstreams: spec.upstreams.clone(),
            advisories: spec.advisories.as_str().into(),
            advisories_allow: spec.advisories_allow.join(", "),
            offline: spec.offline,
            prune_index: spec.prune_index,
            index_ttl_secs: spec.index_ttl_secs.to_string(),
            negative_ttl_secs: spec.negative_ttl_secs.to_string(),
            shadow: match spec.shadow {
                crate::config::Shadow::Crate => "crate".into(),
                crate::config::Shadow::Version => "version".into(),
            },
            allow_upstream_names: spec.allow_upstream_names,
            allowed_licenses: spec.allowed_licenses.join(", "),
            allow_license_file_only: spec.allow_license_file_only,
        }
    }
}

/// `/-/admin/registries/new` and `/-/admin/registries/{name}`: create or edit a registry.
/// `editing` is the stored registry's name; `proxies` are those a hosted registry may merge.
pub fn registry_form(
    v: Viewer<'_>,
    editing: Option<&str>,
    f: &RegistryForm,
    proxies: &[String],
    error: Option<&str>,
) -> String {
    let title = match editing {
        Some(n) => format!("Registry {n}"),
        None => "New registry".to_owned(),
    };
    let action = match editing {
        Some(n) => format!("/-/admin/registries/{}", seg(n)),
        None => "/-/admin/registries".to_owned(),
    };
    layout(
        &title,
        Some(v),
        html! {
            h1 { (title) }
            (admin_nav())
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.stack method="post" action=(action) {
                (csrf_field(v))
                label for="name" { "Name" }
                @if editing.is_some() {
                    input #name type="text" name="name" value=(f.name) readonly aria-describedby="name-rule";
                } @else {
                    input #name type="text" name="name" value=(f.name) required pattern="[a-z][a-z0-9_.\\-]{0,63}" aria-describedby="name-rule";
                }
                p.hint #name-rule { "Rule: " (REGISTRY_NAME_RULE) ". It is part of every URL of the registry and cannot be changed later." }
                label for="kind" { "Kind" }
                select #kind name="kind" disabled[editing.is_some()] aria-describedby="kind-hint" {
                    option value="hosted" selected[f.kind != "proxy"] { "hosted: crates published here" }
                    option value="proxy" selected[f.kind == "proxy"] { "proxy: a cache of an upstream index (crates.io by default)" }
                }
                @if editing.is_some() { input type="hidden" name="kind" value=(f.kind); }
                p.hint #kind-hint { "A hosted registry may merge proxies below (Configure Upstream); a proxy has an upstream URL." }
                label for="description" { "Description" }
                input #description type="text" name="description" value=(f.description) maxlength="500";
                label for="labels" { "Labels" }
                input #labels type="text" name="labels" value=(f.labels) aria-describedby="labels-hint";
                p.hint #labels-hint { "Separated by commas, e.g. team-a, internal." }
                fieldset {
                    legend { "Access" }
                    input #auth_required type="checkbox" name="auth_required" value="true" checked[f.auth_required];
                    label for="auth_required" { "Reading needs a token (auth_required)" }
                }
                fieldset {
                    legend { "Configure Upstream (hosted): proxies merged under the local crates" }
                    // Says the hosted rules below are in this form (a form without them, such
                    // as one loaded before an upgrade, leaves them as they are).
                    input type="hidden" name="hosted_fields" value="1";
                    @if proxies.is_empty() { p.hint { "No proxy registry exists yet; create one of kind proxy first." } }
                    @for p in proxies {
                        @let id = format!("up-{p}");
                        input #(id) type="checkbox" name="upstreams" value=(p) checked[f.upstreams.contains(p)];
                        label for=(id) { (p) }
                    }
                    label for="shadow" { "When a crate is both local and upstream" }
                    select #shadow name="shadow" {
                        option value="crate" selected[f.shadow != "version"] { "crate: the local crate hides the upstream one (safe)" }
                        option value="version" selected[f.shadow == "version"] { "version: versions of both are listed (trust every upstream)" }
                    }
                    input #allow_upstream_names type="checkbox" name="allow_upstream_names" value="true" checked[f.allow_upstream_names];
                    label for="allow_upstream_names" { "Allow publishing new crates whose name exists upstream" }
                }
                fieldset {
                    legend { "Licence policy (hosted)" }
                    label for="allowed_licenses" { "Allowed licences" }
                    input #allowed_licenses type="text" name="allowed_licenses" value=(f.allowed_licenses) aria-describedby="licenses-hint";
                    p.hint #licenses-hint { "SPDX ids separated by commas, e.g. MIT, Apache-2.0; empty: any licence." }
                    input #allow_license_file_only type="checkbox" name="allow_license_file_only" value="true" checked[f.allow_license_file_only];
                    label for="allow_license_file_only" { "Accept a licence file without an SPDX expression" }
                }
                label for="upstream" { "Upstream index URL (proxy)" }
                input #upstream type="text" name="upstream" value=(f.upstream) placeholder="empty: crates.io" aria-describedby="upstream-hint";
                p.hint #upstream-hint { "A sparse index URL such as sparse+https://host/index/; empty for crates.io." }
                fieldset {
                    legend { "Proxy cache" }
                    input type="hidden" name="proxy_fields" value="1";
                    input #offline type="checkbox" name="offline" value="true" checked[f.offline];
                    label for="offline" { "Offline: never contact the upstream (air-gapped; serve what is cached)" }
                    input #prune_index type="checkbox" name="prune_index" value="true" checked[f.prune_index];
                    label for="prune_index" { "Serve index files cut down to the versions whose .crate is cached" }
                    label for="index_ttl_secs" { "Index files fresh for (seconds)" }
                    input #index_ttl_secs type="number" min="0" name="index_ttl_secs" value=(f.index_ttl_secs) placeholder="empty: the default";
                    label for="negative_ttl_secs" { "Upstream 404s remembered for (seconds)" }
                    input #negative_ttl_secs type="number" min="0" name="negative_ttl_secs" value=(f.negative_ttl_secs) placeholder="empty: the default";
                }
                fieldset {
                    legend { "Security advisories (proxied crates; see docs/OPERATIONS.md)" }
                    label for="advisories" { "Versions an imported advisory affects" }
                    select #advisories name="advisories" {
                        @let m = if f.advisories.is_empty() { "flag" } else { f.advisories.as_str() };
                        option value="flag" selected[m == "flag"] { "flag: serve them, with a header and a metric" }
                        option value="deny" selected[m == "deny"] { "deny: refuse them (403)" }
                        option value="off" selected[m == "off"] { "off: do not check" }
                    }
                    label for="advisories_allow" { "Allowed advisories" }
                    input #advisories_allow type="text" name="advisories_allow" value=(f.advisories_allow) aria-describedby="allow-hint";
                    p.hint #allow-hint { "Advisory ids this registry ignores, separated by commas, e.g. RUSTSEC-2024-0001." }
                }
                p { button type="submit" { @if editing.is_some() { "Save" } @else { "Create registry" } } }
            }
            @if let Some(n) = editing {
                h2 { "Delete" }
                form.stack method="post" action={ "/-/admin/registries/" (seg(n)) "/delete" } {
                    (csrf_field(v))
                    input #force type="checkbox" name="force" value="true";
                    label for="force" { "Also delete its crates (a hosted registry with crates needs this)" }
                    p { button type="submit" { "Delete registry " (n) } }
                }
            }
        },
    )
}

/// `/-/admin/users`.
pub fn users(v: Viewer<'_>, users: &Value, notice: Option<&str>, error: Option<&str>) -> String {
    let empty = Vec::new();
    let list = users["users"].as_array().unwrap_or(&empty);
    layout(
        "Users",
        Some(v),
        html! {
            h1 { "Users" }
            (admin_nav())
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            table {
                thead { tr { th { "Login" } th { "Name" } th { "Id" } } }
                tbody { @for u in list { tr { td { (u["login"].as_str().unwrap_or("")) } td { (u["name"].as_str().unwrap_or("")) } td { (u["id"]) } } } }
            }
            h2 { "Add a user" }
            form.stack method="post" action="/-/admin/users" {
                (csrf_field(v))
                label for="login" { "Login" }
                input #login type="text" name="login" required aria-describedby="login-rule";
                p.hint #login-rule { "Rule: " (crate::registry::admin::LOGIN_RULE) "." }
                label for="fullname" { "Name (optional)" }
                input #fullname type="text" name="name";
                p { button type="submit" { "Add user" } }
            }
        },
    )
}

/// A token just made: shown once.
#[derive(Debug, Clone)]
pub struct NewTokenShown {
    pub secret: String,
    pub user: String,
    /// The registries to show a `credentials.toml` snippet for.
    pub registries: Vec<String>,
}

/// `/-/admin/tokens`: the tokens (never their secrets), the form, and a new token once.
pub fn tokens(
    v: Viewer<'_>,
    tokens: &Value,
    users: &[String],
    registries: &[String],
    created: Option<&NewTokenShown>,
    error: Option<&str>,
) -> String {
    let empty = Vec::new();
    let list = tokens["tokens"].as_array().unwrap_or(&empty);
    let list_of = |v: &Value| -> String {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "all".into())
    };
    layout(
        "Tokens",
        Some(v),
        html! {
            h1 { "Tokens" }
            (admin_nav())
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if let Some(t) = created {
                section.notice aria-labelledby="new-token" {
                    h2 #new-token { "New token for " (t.user) }
                    p { strong { "Copy it now: it is shown this once and cannot be read again." } }
                    div.snippet {
                        pre #token-secret { code { (t.secret) } }
                        button type="button" data-copy="token-secret" hidden { "Copy" }
                    }
                    @for (i, r) in t.registries.iter().enumerate() {
                        @let s = setup::credentials(r, &t.secret);
                        (snippet_block(&format!("token-snippet-{i}"), &s))
                    }
                }
            }
            h2 { "Tokens" }
            table {
                thead { tr { th { "Id" } th { "User" } th { "Name" } th { "Scopes" } th { "Registries" } th { "Expires" } th { "Revoke" } } }
                tbody {
                    @for t in list {
                        @let id = t["id"].as_str().unwrap_or("");
                        tr {
                            td { code { (id) } }
                            td { (t["user"].as_str().unwrap_or("")) }
                            td { (t["name"].as_str().unwrap_or("")) }
                            td { (list_of(&t["scopes"])) }
                            td { (list_of(&t["registries"])) }
                            td { @match t["expires"].as_u64() { Some(e) => (humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(e))), None => "never" } }
                            td {
                                form.inline method="post" action={ "/-/admin/tokens/" (seg(id)) "/revoke" } {
                                    (csrf_field(v))
                                    button type="submit" aria-label={ "Revoke token " (id) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Generate a token" }
            form.stack method="post" action="/-/admin/tokens" {
                (csrf_field(v))
                label for="user" { "User" }
                select #user name="user" required { @for u in users { option value=(u) { (u) } } }
                label for="tname" { "Name" }
                input #tname type="text" name="name" placeholder="e.g. ci" ;
                fieldset {
                    legend { "Scopes" }
                    @for s in ["read", "publish", "yank", "owners", "admin"] {
                        @let id = format!("scope-{s}");
                        input #(id) type="checkbox" name="scopes" value=(s) checked[s != "admin"];
                        label for=(id) { (s) }
                    }
                }
                fieldset {
                    legend { "Registries (none checked: every registry)" }
                    @for r in registries {
                        @let id = format!("reg-{r}");
                        input #(id) type="checkbox" name="registries" value=(r);
                        label for=(id) { (r) }
                    }
                }
                label for="expires" { "Expires" }
                input #expires type="text" name="expires" placeholder="e.g. 90d or 2027-01-31T00:00:00Z; empty: never" aria-describedby="expires-hint";
                p.hint #expires-hint { "A duration from now (90d) or a date (RFC 3339)." }
                p { button type="submit" { "Generate token" } }
            }
        },
    )
}

/// `/-/admin/quarantine`: the `.crate` files this node quarantined after their upstream took
/// the version down, one row per removal that named each, with release and purge.
pub fn quarantine(v: Viewer<'_>, list: &Value, notice: Option<&str>) -> String {
    let empty = Vec::new();
    let rows = list["quarantine"].as_array().unwrap_or(&empty);
    layout(
        "Quarantine",
        Some(v),
        html! {
            h1 { "Quarantine" }
            (admin_nav())
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            p { "Cached " code { ".crate" } " files of versions their upstream index no longer lists (docs/OPERATIONS.md, \"Upstream takedowns\"). They stay on this node and are never served. Release a file only once you know the removal was a mistake (an upstream that wrongly answered 404); purge deletes it." }
            table {
                thead { tr { th { "Registry" } th { "Crate" } th { "Version" } th { "Reason" } th { "Removed" } th { "Size" } th { "SHA-256" } th { "File" } } }
                tbody {
                    @for r in rows {
                        @let sha = r["cksum"].as_str().unwrap_or("");
                        @let what = format!("{} {}", r["crate"].as_str().unwrap_or(""), r["version"].as_str().unwrap_or(""));
                        tr {
                            td { (r["registry"].as_str().unwrap_or("")) }
                            td { (r["crate"].as_str().unwrap_or("")) }
                            td { (r["version"].as_str().unwrap_or("")) }
                            td { (r["reason"].as_str().unwrap_or("")) }
                            td { (secs(&r["removed_at"])) }
                            td { (human_bytes(r["size"].as_u64().unwrap_or(0))) }
                            td { code title=(sha) { (sha.get(..12).unwrap_or(sha)) "…" } }
                            td {
                                form.inline method="post" action={ "/-/admin/quarantine/" (seg(sha)) "/release" } {
                                    (csrf_field(v))
                                    button type="submit" aria-label={ "Release the file of " (what) } { "Release" }
                                }
                                " "
                                form.inline method="post" action={ "/-/admin/quarantine/" (seg(sha)) "/purge" } {
                                    (csrf_field(v))
                                    button type="submit" aria-label={ "Purge the file of " (what) } { "Purge" }
                                }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "Nothing is quarantined." } }
        },
    )
}

/// A unix-seconds field of a JSON record as RFC 3339, or "—".
fn secs(v: &Value) -> String {
    match v.as_u64() {
        Some(s) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)).to_string()
        }
        None => "—".into(),
    }
}

/// A unix-milliseconds field of a JSON record as RFC 3339, or "—".
fn millis(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
        }
        None => "—".into(),
    }
}

/// `/-/admin/hooks`: every hook (never its secret), and the form for a new one.
pub fn hooks(v: Viewer<'_>, hooks: &Value, registries: &[String], notice: Option<&str>, error: Option<&str>) -> String {
    let empty = Vec::new();
    let list = hooks["hooks"].as_array().unwrap_or(&empty);
    layout(
        "Webhooks",
        Some(v),
        html! {
            h1 { "Webhooks" }
            (admin_nav())
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            p { "Signed, durable deliveries of registry events (docs/API.md, \"Webhook events\", shows how a receiver checks the signature)." }
            table {
                thead { tr { th { "Id" } th { "URL" } th { "Registry" } th { "Events" } th { "Created" } th { "Delete" } } }
                tbody {
                    @for h in list {
                        @let id = h["id"].as_str().unwrap_or("");
                        @let events = h["events"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default();
                        tr {
                            td { a href={ "/-/admin/hooks/" (seg(id)) } { code { (id) } } }
                            td { (h["url"].as_str().unwrap_or("")) }
                            td { (h["registry"].as_str().unwrap_or("every registry")) }
                            td { @if events.is_empty() { "every event" } @else { (events) } }
                            td { (millis(&h["created"])) " by " (h["created_by"].as_str().unwrap_or("")) }
                            td {
                                form.inline method="post" action={ "/-/admin/hooks/" (seg(id)) "/delete" } {
                                    (csrf_field(v))
                                    button type="submit" aria-label={ "Delete hook " (id) } { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
            @if list.is_empty() { p { "No hooks yet." } }
            h2 { "New hook" }
            form.stack method="post" action="/-/admin/hooks" {
                (csrf_field(v))
                label for="hook-url" { "URL" }
                input #hook-url type="url" name="url" required placeholder="https://ci.example/cargohold";
                label for="hook-secret" { "Secret" }
                input #hook-secret type="password" name="secret" required autocomplete="off" aria-describedby="hook-secret-hint";
                p.hint #hook-secret-hint { "Signs every delivery (HMAC-SHA256); give the receiver the same. It is never shown again." }
                label for="hook-registry" { "Registry" }
                select #hook-registry name="registry" {
                    option value="" { "every registry" }
                    @for r in registries { option value=(r) { (r) } }
                }
                fieldset {
                    legend { "Events (none checked: every event)" }
                    @for e in crate::registry::webhooks::HOOK_EVENTS {
                        @let id = format!("event-{}", e.replace('.', "-"));
                        input #(id) type="checkbox" name="events" value=(e);
                        label for=(id) { (e) }
                    }
                }
                p { button type="submit" { "Create hook" } }
            }
        },
    )
}

/// `/-/admin/hooks/{id}`: a hook's latest deliveries, each with its attempts.
pub fn hook(v: Viewer<'_>, hook: &Value, deliveries: &Value, notice: Option<&str>) -> String {
    let empty = Vec::new();
    let list = deliveries["deliveries"].as_array().unwrap_or(&empty);
    let id = hook["id"].as_str().unwrap_or("");
    layout(
        "Webhook deliveries",
        Some(v),
        html! {
            h1 { "Deliveries of hook " code { (id) } }
            (admin_nav())
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            p { "To " (hook["url"].as_str().unwrap_or("")) ". The newest first." }
            @if list.is_empty() { p { "No deliveries yet." } }
            table {
                thead { tr { th { "Delivery" } th { "Event" } th { "State" } th { "Attempts" } th { "Last status" } th { "Last error" } th { "Created" } th { "Again" } } }
                tbody {
                    @for d in list {
                        @let did = d["id"].as_str().unwrap_or("");
                        tr {
                            td { code { (did) } }
                            td { (d["event"].as_str().unwrap_or("")) }
                            td.state { (d["state"].as_str().unwrap_or("")) }
                            td {
                                details {
                                    summary { (d["attempts"].as_u64().unwrap_or(0)) }
                                    ul {
                                        @for a in d["attempt_log"].as_array().unwrap_or(&empty) {
                                            li {
                                                "#" (a["n"].as_u64().unwrap_or(0)) " at " (millis(&a["at"])) ": "
                                                @match a["status"].as_u64() { Some(s) => (s), None => "no answer" }
                                                " in " (a["millis"].as_u64().unwrap_or(0)) " ms"
                                                @if let Some(e) = a["error"].as_str() { " — " (e) }
                                            }
                                        }
                                    }
                                }
                            }
                            td { @match d["last_status"].as_u64() { Some(s) => (s), None => "—" } }
                            td { (d["last_error"].as_str().unwrap_or("")) }
                            td { (millis(&d["created"])) }
                            td {
                                form.inline method="post" action={ "/-/admin/hooks/" (seg(id)) "/redeliver/" (seg(did)) } {
                                    (csrf_field(v))
                                    button type="submit" aria-label={ "Send delivery " (did) " again" } { "Redeliver" }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::IndexLine;

    fn line(vers: &str, yanked: bool) -> IndexLine {
        serde_json::from_value(serde_json::json!({
            "name": "demo", "vers": vers, "cksum": "0".repeat(64), "yanked": yanked, "links": null, "v": 2,
            "features": {"<script>f</script>": ["\"><img src=x onerror=alert(1)>"]},
            "deps": [{"name": "<b>dep</b>", "req": "^1", "features": [], "optional": false, "default_features": true,
                      "target": null, "kind": "normal", "registry": null, "package": null}],
            "pubtime": "2026-12-05T04:00:00Z"
        }))
        .unwrap()
    }

    fn hostile_view() -> CrateView {
        CrateView {
            name: "demo".into(),
            description: Some("<script>alert('d')</script>".into()),
            keywords: vec!["<i>k</i>".into()],
            owners: vec!["<svg onload=alert(2)>".into()],
            versions: vec![
                VersionView {
                    line: line("1.1.0", true),
                    published_by: Some("<u>eve</u>".into()),
                },
                VersionView {
                    line: line("1.0.0+b.1", false),
                    published_by: None,
                },
            ],
            local: true,
        }
    }

    #[test]
    fn publisher_text_is_escaped_everywhere() {
        let spec: RegistrySpec = serde_json::from_value(serde_json::json!({
            "name": "local", "kind": "hosted", "description": "<script>x</script>", "labels": ["<b>l</b>"]
        }))
        .unwrap();
        let view = hostile_view();
        let page = crate_page(None, &spec, &view, view.default_version().unwrap(), Some("<p>ok</p>"));
        for bad in ["<script>", "<img", "<svg", "<b>", "<i>k", "<u>"] {
            assert!(!page.contains(bad), "`{bad}` unescaped in the crate page");
        }
        assert!(
            page.contains("&lt;script&gt;alert('d')&lt;/script&gt;")
                || page.contains("&lt;script&gt;alert(&#39;d&#39;)")
        );
        // The default version is the newest not yanked; yanked ones are marked; `+` is encoded.
        assert!(page.contains("<h1>demo 1.0.0+b.1</h1>"), "{page}");
        assert!(page.contains("/local/crates/demo/1.0.0%2Bb.1"));
        assert!(page.contains("class=\"yanked\""));
        assert!(page.contains("cargo add demo@1.0.0+b.1 --registry local"));
        assert!(page.contains("<p>ok</p>"), "the sanitised README is embedded as HTML");
        let rows = [RegistryRow {
            spec: &spec,
            crates: Some(1),
        }];
        let home = home(None, &rows);
        assert!(!home.contains("<script>x") && !home.contains("<b>l"));
        assert!(home.contains("<title>Registries · cargohold</title>") && home.contains("<h1>"));
    }

    #[test]
    fn segments_and_sizes() {
        assert_eq!(seg("a+b/c"), "a%2Bb%2Fc");
        assert_eq!(crate_url("r", "n", Some("1.0.0+x")), "/r/crates/n/1.0.0%2Bx");
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
