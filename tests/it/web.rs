//! The web interface (issue 14): the seed's whole flow driven in a real headless chromium
//! (sign in, create a registry with a description and labels over the upstream proxy,
//! generate a token and read its snippet, real `cargo publish` with that snippet as the
//! credentials, the crate page with its rendered README), a hostile README rendered inert, a
//! form without its CSRF token refused, an anonymous visitor shown nothing of an
//! `auth_required` registry, and basic accessibility of every page visited. The same
//! access and CSRF rules are also checked over plain HTTP, so they run without a browser too.

use std::path::PathBuf;

use reqwest::Method;

use crate::support::browser::Browser;
use crate::support::cargo::CargoEnv;
use crate::support::daemon::Daemon;
use crate::support::fake_upstream::{FakeUpstream, Package};
use crate::support::http::{self, Resp};
use crate::support::package::simple_publish;

/// A proxy `cio` of the fake upstream, and `vault`, a hosted registry that needs a token to read.
fn daemon(up: &FakeUpstream) -> Daemon {
    Daemon::start_with_config(&format!(
        "[registries.cio]\nkind = \"proxy\"\nupstream = \"{}\"\n\n[registries.vault]\nkind = \"hosted\"\nauth_required = true\ndescription = \"the vault\"\n",
        up.index_url()
    ))
}

/// Publishes `hiddencrate` to `vault` over the API.
fn fill_vault(d: &Daemon) {
    let token = d.user_token("vaulter", &["read", "publish"]);
    let (body, _) = simple_publish("hiddencrate", "0.3.0");
    let r = http::publish_raw(&d.api_url("vault"), Some(&token), body);
    assert_eq!(r.status, 200, "{}", r.text());
}

fn readme_project(env: &CargoEnv, name: &str, readme: &str) -> PathBuf {
    env.project(
        name,
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\ndescription = \"The {name} crate\"\nlicense = \"MIT\"\nreadme = \"README.md\"\n"
        ),
        &[("src/lib.rs", "pub fn f() -> u32 {\n    1\n}\n"), ("README.md", readme)],
    )
}

const HOSTILE_README: &str = r#"# Evil

<script>document.title = "pwned-by-script";</script>

<img src="/nothing.png" onerror="document.title='pwned-by-onerror'">

<a href="javascript:document.title='pwned-by-link'" id="jslink">click me</a>

[markdown link](javascript:document.title='pwned-by-md')

<p onclick="document.title='pwned-by-click'" id="clicky">press</p>

<iframe src="javascript:parent.document.title='pwned-by-iframe'"></iframe>
"#;

#[test]
fn seed_flow_hostile_readme_csrf_and_anonymous_in_a_real_browser() {
    let Some(b) = Browser::start() else { return };
    let up = FakeUpstream::start_blocking();
    up.add_crate(&Package::new("upthing", "1.0.0").file("README.md", "# Upthing\n\nFrom *upstream*.\n"));
    let d = daemon(&up);
    fill_vault(&d);

    // 1. Sign in with the admin token.
    b.goto(&d.url("/"));
    b.check_accessible();
    b.goto(&d.url("/-/login"));
    b.check_accessible();
    b.fill("#token", d.admin_token());
    b.submit("form[action='/-/login'] button[type=submit]");
    assert!(b.url().ends_with("/-/admin"), "after sign-in: {}", b.url());
    b.check_accessible();
    assert!(b.body_text().contains("vault"), "an administrator sees every registry");

    // 2. Create a registry: first with a name against the rule (the browser's own pattern
    //    check removed, so the server's answer shows), then properly, attaching the proxy.
    b.goto(&d.url("/-/admin/registries/new"));
    b.check_accessible();
    assert!(
        b.text_of("#name-rule").contains("lowercase letter"),
        "the name rule is explained"
    );
    b.script("document.getElementById('name').removeAttribute('pattern'); return null;");
    b.fill("#name", "Bad Name");
    b.submit("form.stack button[type=submit]");
    assert!(
        b.text_of(".error").contains("invalid registry name"),
        "{}",
        b.body_text()
    );
    b.check_accessible();
    b.fill("#name", "team");
    b.fill("#description", "Crates of the team");
    b.fill("#labels", "internal, rust");
    b.click("#up-cio");
    b.submit("form.stack button[type=submit]");
    assert!(b.url().ends_with("/team/"), "after creating: {}", b.url());
    b.check_accessible();
    let page = b.body_text();
    for want in [
        "Crates of the team",
        "internal",
        "rust",
        "Setup Client",
        "replace-with = \"team\"",
        "cio",
    ] {
        assert!(page.contains(want), "registry page lacks {want:?}: {page}");
    }
    let merged_config = b.text_of("#snippet-0");
    assert!(merged_config.contains(&d.index_url("team")), "{merged_config}");

    // Edit it: the stored values are in the form; a new description is saved.
    b.goto(&d.url("/-/admin/registries/team"));
    b.check_accessible();
    assert!(b.try_find("#up-cio:checked").is_some(), "the attached proxy is checked");
    b.fill("#description", "Crates of the platform team");
    b.submit("form.stack button[type=submit]");
    assert!(
        b.body_text().contains("Crates of the platform team"),
        "{}",
        b.body_text()
    );

    // The proxy's page: cache figures and reachability.
    b.goto(&d.url("/cio/"));
    b.check_accessible();
    let page = b.body_text();
    assert!(page.contains("Reachable now") && page.contains("yes"), "{page}");
    assert!(
        page.contains("Index files cached") && page.contains("Hit ratio"),
        "{page}"
    );

    // 3. A user and a token for it, limited to `team`; the snippet is shown once.
    b.goto(&d.url("/-/admin/users"));
    b.check_accessible();
    b.fill("#login", "carol");
    b.submit("form[action='/-/admin/users'] button[type=submit]");
    assert!(b.body_text().contains("User carol added."), "{}", b.body_text());
    b.goto(&d.url("/-/admin/tokens"));
    b.check_accessible();
    b.script("document.getElementById('user').value = 'carol'; return null;");
    b.fill("#tname", "laptop");
    b.click("#reg-team");
    b.fill("#expires", "30d");
    b.submit("form[action='/-/admin/tokens'] button[type=submit]");
    b.check_accessible();
    let secret = b.text_of("#token-secret");
    assert!(secret.starts_with("chd_"), "{secret}");
    let snippet = b.text_of("#token-snippet-0");
    assert_eq!(
        snippet.trim(),
        format!("[registries.team]\ntoken = \"Bearer {secret}\"")
    );
    b.goto(&d.url("/-/admin/tokens"));
    assert!(!b.body_text().contains(&secret), "the secret is shown only once");
    assert!(b.body_text().contains("laptop"));

    // 4. Real cargo publish with the snippet as the credentials file.
    let mut env = CargoEnv::bare();
    env.add_registry("team", &d.index_url("team"))
        .with_credential_provider();
    std::fs::write(env.home().join("credentials.toml"), format!("{snippet}\n")).unwrap();
    let dir = readme_project(&env, "webdemo", "# Web demo\n\nHello from **webdemo**.\n");
    env.must_succeed(&dir, &["publish", "--registry", "team", "--allow-dirty"]);

    // 5. The crate page: the rendered README and the version.
    b.goto(&d.url("/team/crates/webdemo"));
    b.check_accessible();
    assert_eq!(b.text_of("h1"), "webdemo 0.1.0");
    assert_eq!(b.text_of(".readme h1"), "Web demo");
    assert_eq!(b.text_of(".readme strong"), "webdemo");
    let page = b.body_text();
    assert!(page.contains("cargo add webdemo@0.1.0 --registry team"), "{page}");
    assert!(
        page.contains("by carol") && page.contains("The webdemo crate"),
        "{page}"
    );
    // The merged registry's recommended layout, pasted as is: the private crate by
    // `registry = "team"`, the public one through crates.io replaced by `team`.
    let merged_env = CargoEnv::bare();
    std::fs::write(
        merged_env.config_path(),
        format!("{merged_config}\n\n[net]\nretry = 0\n"),
    )
    .unwrap();
    let app = merged_env.project(
        "consumer",
        "[package]\nname = \"consumer\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\nwebdemo = { version = \"0.1\", registry = \"team\" }\nupthing = \"1\"\n",
        &[("src/lib.rs", "")],
    );
    merged_env.must_succeed(&app, &["fetch"]);
    let lock = std::fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains("name = \"webdemo\"") && lock.contains("name = \"upthing\""),
        "{lock}"
    );
    b.goto(&d.url("/team/crates/webdemo/0.1.0"));
    assert_eq!(b.text_of("h1"), "webdemo 0.1.0");
    // The upstream's crate through the merged view, and search across registries.
    b.goto(&d.url("/team/crates/upthing"));
    assert_eq!(b.text_of("h1"), "upthing 1.0.0");
    // Its README too, as cargo's fetch above put its .crate in the cache.
    assert_eq!(b.text_of(".readme h1"), "Upthing");
    // A public crate comes through crates.io replaced by the merged view: no `--registry`.
    assert_eq!(b.text_of("#add-line"), "cargo add upthing@1.0.0");
    b.goto(&d.url("/-/search?q=webdemo"));
    b.check_accessible();
    assert!(b.text_of("main table").contains("webdemo"));

    // Hostile README: every trick is inert in the browser.
    let dir = readme_project(&env, "webevil", HOSTILE_README);
    env.must_succeed(&dir, &["publish", "--registry", "team", "--allow-dirty"]);
    b.goto(&d.url("/team/crates/webevil"));
    std::thread::sleep(std::time::Duration::from_millis(300)); // let a broken image fire
    assert_eq!(b.title(), "webevil 0.1.0 · cargohold");
    assert_eq!(b.text_of(".readme h1"), "Evil");
    // Clicking what had a `javascript:` link or an `onclick` does nothing either.
    for css in [".readme a", ".readme p"] {
        if b.try_find(css).is_some() {
            b.click(css);
        }
    }
    assert_eq!(b.title(), "webevil 0.1.0 · cargohold", "a README script ran");
    let left = b.script(
        r#"
        const r = document.querySelector('.readme');
        const bad = [];
        for (const el of r.querySelectorAll('*')) {
          if (['SCRIPT', 'IFRAME', 'OBJECT', 'EMBED', 'STYLE', 'FORM'].includes(el.tagName)) bad.push(el.tagName);
          for (const a of el.attributes) {
            if (a.name.startsWith('on')) bad.push(a.name);
            if (/^\s*javascript:/i.test(a.value)) bad.push(a.value);
          }
        }
        return bad;
        "#,
    );
    assert_eq!(left, serde_json::json!([]), "hostile markup left in the README");

    // A form without its CSRF token is refused (the hidden field removed in the page).
    b.goto(&d.url("/-/admin/users"));
    b.script("document.querySelectorAll('form[action=\"/-/admin/users\"] input[name=csrf]').forEach(e => e.remove()); return null;");
    b.fill("#login", "mallory");
    b.submit("form[action='/-/admin/users'] button[type=submit]");
    assert!(
        b.body_text().contains("CSRF token is missing or wrong"),
        "{}",
        b.body_text()
    );
    b.goto(&d.url("/-/admin/users"));
    assert!(!b.body_text().contains("mallory"), "the refused form changed nothing");

    // Sign out: the session ends, and an anonymous visitor sees nothing of `vault`.
    b.goto(&d.url("/"));
    b.submit("header form[action='/-/logout'] button");
    assert!(
        b.try_find("a[href='/-/login']").is_some(),
        "signed out: {}",
        b.body_text()
    );
    for path in [
        "/",
        "/-/search?q=hidden",
        "/-/search?q=vault",
        "/vault/",
        "/vault/crates/hiddencrate",
    ] {
        b.goto(&d.url(path));
        b.check_accessible();
        let page = b.body_text();
        assert!(
            !page.contains("hiddencrate") && !page.contains("the vault"),
            "{path} reveals the auth_required registry: {page}"
        );
    }
    b.goto(&d.url("/-/admin"));
    assert!(b.url().ends_with("/-/login"), "admin pages need a session: {}", b.url());
}

// --- the same rules over plain HTTP (no browser needed) ---

fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

fn cookie_value(set_cookie: &[String], name: &str) -> Option<String> {
    set_cookie.iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// One request that does not follow redirects (a 303 is what the test looks at).
fn send(method: Method, url: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Resp {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    rt.block_on(http::send_async(
        &client,
        method,
        url,
        None,
        body.map(|b| b.as_bytes().to_vec()),
        headers,
    ))
    .unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn form(url: &str, cookie: &str, body: &str) -> Resp {
    send(
        Method::POST,
        url,
        Some(body),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie),
        ],
    )
}

fn page(url: &str, cookie: &str) -> Resp {
    send(Method::GET, url, None, &[("Cookie", cookie)])
}

/// Signs the browser in to `d`'s web interface with the admin token.
fn browser_sign_in(b: &Browser, d: &Daemon) {
    b.goto(&d.url("/-/login"));
    b.fill("#token", d.admin_token());
    b.submit("form[action='/-/login'] button[type=submit]");
}

/// Signs in with `token`; returns the session cookie (`name=value`).
fn sign_in(d: &Daemon, token: &str) -> String {
    let login = http::get(&d.url("/-/login"), None);
    assert_eq!(login.status, 200);
    let login_cookie = cookie_value(&set_cookies(&login), "cargohold_login").expect("login cookie");
    let csrf = csrf_in(&login.text());
    assert_eq!(csrf, login_cookie);
    let r = form(
        &d.url("/-/login"),
        &format!("cargohold_login={login_cookie}"),
        &format!("csrf={csrf}&token={token}"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let cookies = set_cookies(&r);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("cargohold_session="))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "plain http: no Secure flag ({session})");
    format!(
        "cargohold_session={}",
        cookie_value(&cookies, "cargohold_session").unwrap()
    )
}

#[test]
fn sessions_and_csrf_over_http() {
    let up = FakeUpstream::start_blocking();
    let d = daemon(&up);
    // The login form's own CSRF: without the cookie, or with another value, refused.
    let login = http::get(&d.url("/-/login"), None);
    let csrf = csrf_in(&login.text());
    let r = form(
        &d.url("/-/login"),
        "",
        &format!("csrf={csrf}&token={}", d.admin_token()),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // Another value: the first hex digit changed (always a different one).
    let flipped = if csrf.starts_with('0') { '1' } else { '0' };
    let r = form(
        &d.url("/-/login"),
        &format!("cargohold_login={csrf}"),
        &format!("csrf={flipped}{}&token={}", &csrf[1..], d.admin_token()),
    );
    assert_eq!(r.status, 403);
    // A wrong token is a page saying so, not a session.
    let r = form(
        &d.url("/-/login"),
        &format!("cargohold_login={csrf}"),
        &format!("csrf={csrf}&token=chd_nope"),
    );
    assert_eq!(r.status, 401);
    assert!(r.text().contains("not valid") && cookie_value(&set_cookies(&r), "cargohold_session").is_none());

    let session = sign_in(&d, d.admin_token());
    let users = page(&d.url("/-/admin/users"), &session);
    assert_eq!(users.status, 200);
    assert!(users
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    let csrf = csrf_in(&users.text());
    // Without the CSRF token, with a wrong one, and from no session at all: refused.
    for (cookie, body) in [
        (session.as_str(), "login=eve".to_owned()),
        (session.as_str(), format!("login=eve&csrf={}", "0".repeat(64))),
        ("", format!("login=eve&csrf={csrf}")),
    ] {
        let r = form(&d.url("/-/admin/users"), cookie, &body);
        assert!(r.status == 403 || r.status == 303, "{body}: {} {}", r.status, r.text());
    }
    // A browser saying the form comes from another site is refused even with the token.
    let r = send(
        Method::POST,
        &d.url("/-/admin/users"),
        Some(&format!("login=eve&csrf={csrf}")),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", session.as_str()),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    );
    assert_eq!(r.status, 403);
    assert!(!page(&d.url("/-/admin/users"), &session).text().contains("eve"));
    let r = form(&d.url("/-/admin/users"), &session, &format!("login=eve&csrf={csrf}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("User eve added."));
    // A form body over 64 KiB is refused before it is parsed.
    let big = format!("csrf={csrf}&login={}", "a".repeat(100 << 10));
    let r = form(&d.url("/-/admin/users"), &session, &big);
    assert_eq!(r.status, 413, "{}", r.text());
    // A bad login is explained, with the rule.
    let r = form(&d.url("/-/admin/users"), &session, &format!("login=-x&csrf={csrf}"));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invalid login"));

    // A token through the form, shown once with its snippet; then revoked through the form.
    let r = form(
        &d.url("/-/admin/tokens"),
        &session,
        &format!("csrf={csrf}&user=eve&name=ci&scopes=read&scopes=publish&registries=cio&expires=7d"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let text = r.text();
    let secret_at = text.find("chd_").expect("the secret is shown");
    let secret: String = text[secret_at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert!(
        text.contains(&format!("[registries.cio]\ntoken = &quot;Bearer {secret}&quot;")),
        "{text}"
    );
    let list = http::get(&d.url("/-/api/v1/tokens?user=eve"), Some(d.admin_token())).json();
    assert_eq!(list["tokens"][0]["scopes"], serde_json::json!(["read", "publish"]));
    assert_eq!(list["tokens"][0]["registries"], serde_json::json!(["cio"]));
    assert!(list["tokens"][0]["expires"].as_u64().is_some());
    assert!(
        !page(&d.url("/-/admin/tokens"), &session).text().contains(&secret),
        "shown once"
    );
    let id = list["tokens"][0]["id"].as_str().unwrap().to_owned();
    let r = form(&d.url(&format!("/-/admin/tokens/{id}/revoke")), &session, "");
    assert_eq!(r.status, 403, "revoking needs the CSRF token too");
    let r = form(
        &d.url(&format!("/-/admin/tokens/{id}/revoke")),
        &session,
        &format!("csrf={csrf}"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let list = http::get(&d.url("/-/api/v1/tokens?user=eve"), Some(d.admin_token())).json();
    assert_eq!(list["tokens"], serde_json::json!([]));
    // A bad expiry is explained, and nothing is created.
    let r = form(
        &d.url("/-/admin/tokens"),
        &session,
        &format!("csrf={csrf}&user=eve&scopes=read&expires=someday"),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("neither a duration"), "{}", r.text());

    // A registry through the form (the admin API's rules): a bad name is refused and explained.
    let r = form(
        &d.url("/-/admin/registries"),
        &session,
        &format!("csrf={csrf}&name=Bad&kind=hosted"),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invalid registry name"), "{}", r.text());
    let r = form(
        &d.url("/-/admin/registries"),
        &session,
        &format!("csrf={csrf}&name=web&kind=hosted&description=Web+things&labels=a%2Cb&upstreams=cio"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let spec = http::get(&d.url("/-/api/v1/registries/web"), Some(d.admin_token())).json();
    assert_eq!(spec["description"], "Web things");
    assert_eq!(spec["labels"], serde_json::json!(["a", "b"]));
    assert_eq!(spec["upstreams"], serde_json::json!(["cio"]));
    assert_eq!(spec["advisories"], "flag", "the default");
    // The advisory mode and allow list through the edit form; a bad mode is explained.
    let r = form(
        &d.url("/-/admin/registries/web"),
        &session,
        &format!("csrf={csrf}&kind=hosted&description=Web+things&labels=a%2Cb&upstreams=cio&advisories=deny&advisories_allow=RUSTSEC-2024-0001%2C+RUSTSEC-2024-0002"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let spec = http::get(&d.url("/-/api/v1/registries/web"), Some(d.admin_token())).json();
    assert_eq!(spec["advisories"], "deny");
    assert_eq!(
        spec["advisories_allow"],
        serde_json::json!(["RUSTSEC-2024-0001", "RUSTSEC-2024-0002"])
    );
    let edit = page(&d.url("/-/admin/registries/web"), &session).text();
    assert!(edit.contains("<option value=\"deny\" selected>"), "{edit}");
    for bad in ["advisories=block", "advisories=deny&advisories_allow=CVE-1"] {
        let r = form(
            &d.url("/-/admin/registries/web"),
            &session,
            &format!("csrf={csrf}&kind=hosted&description=Web+things&upstreams=cio&{bad}"),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }

    // The hosted policy fields: merge rule, upstream names, licences.
    let r = form(
        &d.url("/-/admin/registries/web"),
        &session,
        &format!("csrf={csrf}&kind=hosted&upstreams=cio&hosted_fields=1&shadow=version&allow_upstream_names=true&allowed_licenses=MIT%2C+Apache-2.0&allow_license_file_only=true"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let spec = http::get(&d.url("/-/api/v1/registries/web"), Some(d.admin_token())).json();
    assert_eq!(
        (
            &spec["shadow"],
            &spec["allow_upstream_names"],
            &spec["allowed_licenses"],
            &spec["allow_license_file_only"]
        ),
        (
            &serde_json::json!("version"),
            &serde_json::json!(true),
            &serde_json::json!(["MIT", "Apache-2.0"]),
            &serde_json::json!(true)
        )
    );
    let edit = page(&d.url("/-/admin/registries/web"), &session).text();
    assert!(edit.contains("value=\"MIT, Apache-2.0\""), "{edit}");
    let r = form(
        &d.url("/-/admin/registries/web"),
        &session,
        &format!("csrf={csrf}&kind=hosted&upstreams=cio&hosted_fields=1&allowed_licenses=Not-A-Licence"),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let spec = http::get(&d.url("/-/api/v1/registries/web"), Some(d.admin_token())).json();
    assert_eq!(
        spec["allowed_licenses"],
        serde_json::json!(["MIT", "Apache-2.0"]),
        "unchanged"
    );

    // The proxy cache fields; a number that is not one is explained and changes nothing.
    let r = form(
        &d.url("/-/admin/registries"),
        &session,
        &format!("csrf={csrf}&name=webproxy&kind=proxy&upstream={}&offline=true&prune_index=true&index_ttl_secs=30&negative_ttl_secs=", up.index_url().replace('+', "%2B")),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let spec = http::get(&d.url("/-/api/v1/registries/webproxy"), Some(d.admin_token())).json();
    assert_eq!(
        (&spec["offline"], &spec["prune_index"], &spec["index_ttl_secs"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!(30)
        )
    );
    let default_negative = spec["negative_ttl_secs"].clone();
    for bad in ["index_ttl_secs=-1", "negative_ttl_secs=soon", "index_ttl_secs=1.5"] {
        let r = form(
            &d.url("/-/admin/registries/webproxy"),
            &session,
            &format!("csrf={csrf}&kind=proxy&proxy_fields=1&{bad}"),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.text().contains("whole number of seconds"), "{}", r.text());
    }
    // "Forever" is refused, not stored (a time-to-live over 1000 years made the caches panic
    // at every reload and start).
    let r = form(
        &d.url("/-/admin/registries/webproxy"),
        &session,
        &format!("csrf={csrf}&kind=proxy&proxy_fields=1&index_ttl_secs=99999999999"),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("10 years"), "{}", r.text());
    assert_eq!(
        http::get(&d.url("/-/api/v1/registries/webproxy"), Some(d.admin_token())).json()["index_ttl_secs"],
        30
    );
    // A form without the proxy fieldset (one loaded before an upgrade) leaves them alone.
    let r = form(
        &d.url("/-/admin/registries/webproxy"),
        &session,
        &format!("csrf={csrf}&kind=proxy&description=old+form"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let spec = http::get(&d.url("/-/api/v1/registries/webproxy"), Some(d.admin_token())).json();
    assert_eq!(
        (&spec["offline"], &spec["index_ttl_secs"], &spec["description"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(30),
            &serde_json::json!("old form")
        )
    );
    let r = form(
        &d.url("/-/admin/registries/webproxy"),
        &session,
        &format!("csrf={csrf}&kind=proxy&proxy_fields=1&index_ttl_secs=60&negative_ttl_secs=5"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let spec = http::get(&d.url("/-/api/v1/registries/webproxy"), Some(d.admin_token())).json();
    assert_eq!(
        (&spec["offline"], &spec["index_ttl_secs"], &spec["negative_ttl_secs"]),
        (&serde_json::json!(false), &serde_json::json!(60), &serde_json::json!(5)),
        "unchecked is off"
    );
    // Emptied boxes go back to the defaults.
    let r = form(
        &d.url("/-/admin/registries/webproxy"),
        &session,
        &format!("csrf={csrf}&kind=proxy&proxy_fields=1&index_ttl_secs=&negative_ttl_secs="),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let spec = http::get(&d.url("/-/api/v1/registries/webproxy"), Some(d.admin_token())).json();
    assert_eq!(spec["negative_ttl_secs"], default_negative, "{spec}");
    assert_ne!(spec["index_ttl_secs"], 60, "{spec}");
    let r = form(
        &d.url("/-/admin/registries/webproxy/delete"),
        &session,
        &format!("csrf={csrf}"),
    );
    assert_eq!(r.status, 303, "{}", r.text());

    // Deleting: a hosted registry holding crates needs the confirmation; an empty one goes.
    let (body, _) = simple_publish("webthing", "0.1.0");
    let token = d.user_token("pub", &["publish"]);
    assert_eq!(http::publish_raw(&d.api_url("web"), Some(&token), body).status, 200);
    let r = form(
        &d.url("/-/admin/registries/web/delete"),
        &session,
        &format!("csrf={csrf}"),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("holds 1 crate"), "{}", r.text());
    let r = form(
        &d.url("/-/admin/registries/web/delete"),
        &session,
        &format!("csrf={csrf}&force=true"),
    );
    // Answered with a redirect to the admin page saying so: reloading it deletes nothing.
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").as_deref(), Some("/-/admin?deleted=web"));
    let r = page(&d.url("/-/admin?deleted=web"), &session);
    assert!(r.text().contains("Registry web deleted."), "{}", r.text());
    // The notice shows only what the form puts there, never a link author's text.
    let r = page(&d.url("/-/admin?deleted=%3Cb%3Ephish%20here"), &session);
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("phish"), "{}", r.text());
    assert_eq!(
        http::get(&d.url("/-/api/v1/registries/web"), Some(d.admin_token())).status,
        404
    );

    // Signing out ends the session on the server: the old cookie no longer works.
    let r = form(&d.url("/-/logout"), &session, &format!("csrf={csrf}"));
    assert_eq!(r.status, 303);
    let r = page(&d.url("/-/admin"), &session);
    assert_eq!((r.status, r.header("location").as_deref()), (303, Some("/-/login")));

    // A revoked token ends its sessions.
    let token = d.user_token("dora", &["read"]);
    let session = sign_in(&d, &token);
    assert!(page(&d.url("/"), &session).text().contains("Signed in as"));
    let list = http::get(&d.url("/-/api/v1/tokens?user=dora"), Some(d.admin_token())).json();
    let id = list["tokens"][0]["id"].as_str().unwrap().to_owned();
    let r = http::delete(&d.url(&format!("/-/api/v1/tokens/{id}")), Some(d.admin_token()), None);
    assert_eq!(r.status, 200);
    assert!(!page(&d.url("/"), &session).text().contains("Signed in as"));
    // A user who is not an administrator gets no admin page.
    let token = d.user_token("erin", &["read"]);
    let session = sign_in(&d, &token);
    assert_eq!(page(&d.url("/-/admin"), &session).status, 403);
}

#[test]
fn anonymous_visitors_see_nothing_of_an_auth_required_registry() {
    let up = FakeUpstream::start_blocking();
    let d = daemon(&up);
    fill_vault(&d);
    for path in [
        "/",
        "/vault/",
        "/vault/crates/hiddencrate",
        "/vault/crates/hiddencrate/0.3.0",
        "/-/search?q=hidden",
        "/-/search?q=vault",
        "/nothing-here/",
    ] {
        let r = http::get(&d.url(path), None);
        let text = r.text();
        assert!(
            !text.contains("hiddencrate") && !text.contains("the vault"),
            "{path} reveals the registry: {text}"
        );
        if path.starts_with("/vault") || path.starts_with("/nothing") {
            assert_eq!(r.status, 404, "{path}");
        }
    }
    // The same 404 text for a registry that exists and one that does not.
    let a = http::get(&d.url("/vault/"), None).text();
    let b = http::get(&d.url("/nothing/"), None).text();
    assert_eq!(a.replace("vault", "X"), b.replace("nothing", "X"));
    // A token limited to another registry does not open it either; one with `read` does.
    let other = d.user_token_for("olga", &["read"], "cio");
    let session = sign_in(&d, &other);
    assert_eq!(page(&d.url("/vault/"), &session).status, 404);
    let reader = d.user_token_for("rita", &["read"], "vault");
    let session = sign_in(&d, &reader);
    let r = page(&d.url("/vault/"), &session);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("hiddencrate"));
    assert!(page(&d.url("/-/search?q=hidden"), &session)
        .text()
        .contains("hiddencrate"));
    // The crate page follows every change at once (its cached view is invalidated with the
    // index file): a new version, then a yank.
    let crate_page = |s: &str| page(&d.url("/vault/crates/hiddencrate"), s).text();
    assert!(crate_page(&session).contains("<h1>hiddencrate 0.3.0</h1>"));
    let token = d.user_token("vaulter", &["read", "publish", "yank"]);
    let (body, _) = simple_publish("hiddencrate", "0.4.0");
    assert_eq!(http::publish_raw(&d.api_url("vault"), Some(&token), body).status, 200);
    assert!(crate_page(&session).contains("<h1>hiddencrate 0.4.0</h1>"));
    let r = http::delete(
        &d.url("/vault/api/v1/crates/hiddencrate/0.4.0/yank"),
        Some(&token),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = crate_page(&session);
    assert!(
        text.contains("<h1>hiddencrate 0.3.0</h1>") && text.contains("yanked"),
        "{text}"
    );
    let home = page(&d.url("/"), &session).text();
    assert!(home.contains("the vault"), "{home}");
    // Cargo's own routes are untouched by the pages.
    let r = http::get(&d.url("/vault"), None);
    assert_eq!(r.status, 404);
    assert!(r.error_details()[0].contains("no endpoint"));
}

/// The webhooks admin page: a hook created through the form (secret never shown again), a bad
/// URL refused with the server's reason, the deliveries of a publish with their failed
/// attempts (the receiver is down), a redelivery, and the hook deleted.
#[test]
fn webhooks_are_managed_from_the_admin_pages_in_a_real_browser() {
    let Some(b) = Browser::start() else { return };
    let d = Daemon::start_with_config(
        "[registries.local]\nkind = \"hosted\"\n\n[webhooks]\nallow_private = true\nretry_base = \"1h\"\nmax_attempts = 2\n",
    );
    // A port held but not listening: every attempt fails to connect.
    let dead = crate::support::ports::HeldPort::new();
    let url = format!("http://127.0.0.1:{}/hook", dead.port());

    browser_sign_in(&b, &d);
    b.click("a[href='/-/admin/hooks']");
    assert!(b.url().ends_with("/-/admin/hooks"), "{}", b.url());
    b.check_accessible();
    assert!(b.body_text().contains("No hooks yet."), "{}", b.body_text());

    // The browser's own URL check removed, so the server's answer shows.
    b.script("document.getElementById('hook-url').type = 'text'; return null;");
    b.fill("#hook-url", "ftp://example.invalid/x");
    b.fill("#hook-secret", "web-secret-value");
    b.submit("form.stack button[type=submit]");
    assert!(b.text_of(".error").contains("only http and https"), "{}", b.body_text());
    b.check_accessible();

    b.fill("#hook-url", &url);
    b.fill("#hook-secret", "web-secret-value");
    b.click("#event-crate-published");
    b.submit("form.stack button[type=submit]");
    let page = b.body_text();
    assert!(page.contains("created") && page.contains(&url), "{page}");
    assert!(
        page.contains("crate.published") && !page.contains("web-secret-value"),
        "{page}"
    );
    b.check_accessible();
    // The form answered with a redirect: reloading the page shows the hook, and makes no
    // second one.
    assert!(b.url().contains("/-/admin/hooks?created="), "{}", b.url());
    b.goto(&b.url());
    assert_eq!(b.body_text().matches(url.as_str()).count(), 1, "{}", b.body_text());

    let token = d.user_token("alice", &[]);
    let (body, _) = simple_publish("hooked-web", "1.0.0");
    assert_eq!(http::publish_raw(&d.api_url("local"), Some(&token), body).status, 200);

    // The hook's page: the delivery, its failed attempt and the connection error.
    b.click("table a[href^='/-/admin/hooks/']");
    b.check_accessible();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !b.body_text().contains("crate.published")
        || b.text_of("td.state").is_empty()
        || !b.body_text().contains("error")
    {
        assert!(std::time::Instant::now() < deadline, "{}", b.body_text());
        std::thread::sleep(std::time::Duration::from_millis(200));
        b.goto(&b.url());
    }
    assert_eq!(
        b.text_of("td.state"),
        "pending",
        "one attempt of two failed: {}",
        b.body_text()
    );
    b.submit("td form button[type=submit]");
    assert!(b.body_text().contains("will be sent again"), "{}", b.body_text());
    assert!(b.url().contains("?redelivered="), "{}", b.url());
    b.check_accessible();

    b.goto(&d.url("/-/admin/hooks"));
    b.submit("td form button[type=submit]");
    assert!(
        b.body_text().contains("deleted") && b.body_text().contains("No hooks yet."),
        "{}",
        b.body_text()
    );
}

/// The quarantine admin page (issue 13's takedowns, on the web): two crates taken down
/// upstream are listed with their removal; one is released (served again once the upstream
/// lists it again), the other purged; each form answers with a redirect saying what it did.
#[test]
fn quarantined_files_are_released_and_purged_from_the_admin_page_in_a_real_browser() {
    let Some(b) = Browser::start() else { return };
    let up = FakeUpstream::start_blocking();
    let back = Package::new("comes-back", "1.0.0");
    let gone = Package::new("gone-for-good", "2.0.0");
    up.add_crate(&back);
    up.add_crate(&gone);
    let d = Daemon::start_with_config(&format!(
        "[registries.crates-io]\nkind = \"proxy\"\nupstream = \"{}\"\nindex_ttl = \"1s\"\nnegative_ttl = \"1s\"\n",
        up.index_url()
    ));
    let download = |p: &Package| {
        http::get(
            &d.url(&format!("/crates-io/api/v1/crates/{}/{}/download", p.name(), p.vers())),
            None,
        )
    };
    for p in [&back, &gone] {
        assert_eq!(download(p).body, p.crate_bytes());
        up.remove_crate(p.name());
    }
    let listed = || -> Vec<serde_json::Value> {
        let out = d.admin_ok(&["quarantine", "list", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["quarantine"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    // Each index file revalidated after `index_ttl` finds its crate gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while listed().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", d.log_tail());
        std::thread::sleep(std::time::Duration::from_millis(300));
        for p in [&back, &gone] {
            http::get(
                &d.url(&format!("/crates-io/index/{}", crate::support::index_path(p.name()))),
                None,
            );
        }
    }

    browser_sign_in(&b, &d);
    b.submit("a[href='/-/admin/quarantine']");
    assert!(b.url().ends_with("/-/admin/quarantine"), "{}", b.url());
    b.check_accessible();
    let page = b.body_text();
    for p in [&back, &gone] {
        assert!(page.contains(p.name()) && page.contains(p.vers()), "{page}");
    }
    assert!(page.contains("crate_removed"), "{page}");

    // Released: the upstream lists it again, and it is served from the cache it went back to.
    up.add_crate(&back);
    b.submit(&format!(
        "button[aria-label='Release the file of {} {}']",
        back.name(),
        back.vers()
    ));
    assert!(b.url().contains("?released="), "{}", b.url());
    assert!(b.text_of(".notice").contains("released"), "{}", b.body_text());
    assert!(!b.body_text().contains(back.name()), "{}", b.body_text());
    b.check_accessible();
    // Once the cached 404 of its index file expires (`negative_ttl`), the file is listed
    // again and the download comes from the cache the release put it back into.
    let hits = up.download_hits();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = download(&back);
        if r.status == 200 {
            assert_eq!(r.body, back.crate_bytes());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{} {}", r.status, r.text());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(up.download_hits(), hits, "served from the cache, not fetched again");

    // Purged: the file and its record are gone.
    b.submit(&format!(
        "button[aria-label='Purge the file of {} {}']",
        gone.name(),
        gone.vers()
    ));
    assert!(b.text_of(".notice").contains("purged"), "{}", b.body_text());
    assert!(b.body_text().contains("Nothing is quarantined."), "{}", b.body_text());
    assert!(listed().is_empty());
    assert!(!d
        .data_dir()
        .join(format!("cache/crates/quarantine/{}.crate", gone.cksum()))
        .exists());
}
