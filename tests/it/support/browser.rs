//! A real headless browser for the web interface's tests: Debian's `chromium` driven by
//! `chromedriver` over the W3C WebDriver protocol (plain JSON over HTTP on loopback, spoken
//! here with reqwest, already a dependency). chromedriver is started on a free loopback port
//! and killed (by its own child handle) when the [`Browser`] drops; chromium runs headless
//! with a fresh profile and every flag that keeps it off the network.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where Debian installs the driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Where Debian installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The element key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One chromedriver with one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// A found element.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless chromium, or `None` (having printed
    /// "skipped: chromedriver not found") when the machine has no chromedriver.
    pub fn start() -> Option<Browser> {
        if !Path::new(CHROMEDRIVER).exists() {
            eprintln!("skipped: chromedriver not found");
            return None;
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            l.local_addr().expect("local addr").port()
        };
        let mut cmd = Command::new(CHROMEDRIVER);
        super::daemon::scrub_env(&mut cmd);
        let driver = cmd
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let http = reqwest::Client::builder().no_proxy().build().expect("http client");
        let profile = tempfile::Builder::new()
            .prefix("cargohold-chromium-")
            .tempdir()
            .expect("profile dir");
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            rt,
            http,
            _profile: profile,
        };
        // Liveness guard while the driver starts, not a speed assertion.
        let started = Instant::now();
        loop {
            if let Ok(v) = b.call(reqwest::Method::GET, "/status", None) {
                if v["ready"].as_bool() == Some(true) {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let binary = if Path::new(CHROMIUM).exists() {
            CHROMIUM
        } else {
            "chromium"
        };
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--no-proxy-server",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([format!("--user-data-dir={}", b._profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": binary, "args": args},
        }}});
        let v = b
            .call(reqwest::Method::POST, "/session", Some(caps))
            .expect("create a browser session");
        b.session = v["sessionId"].as_str().expect("session id").to_owned();
        Some(b)
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let mut req = self.http.request(method, &url);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let v: Value = resp.json().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(v["value"].clone())
            } else {
                Err(format!("{status}: {}", v["value"]))
            }
        })
    }

    fn session_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let p = format!("/session/{}{path}", self.session);
        self.call(method, &p, body)
            .unwrap_or_else(|e| panic!("WebDriver {p} failed: {e}"))
    }

    /// Opens a URL and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.session_call(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    /// The URL shown.
    pub fn url(&self) -> String {
        self.session_call(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `document.title`.
    pub fn title(&self) -> String {
        self.session_call(reqwest::Method::GET, "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs a script (its `return` value is the answer).
    pub fn script(&self, script: &str) -> Value {
        self.session_call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The first element matching a CSS selector, or `None`.
    pub fn try_find(&self, css: &str) -> Option<Element> {
        let p = format!("/session/{}/element", self.session);
        self.call(
            reqwest::Method::POST,
            &p,
            Some(json!({"using": "css selector", "value": css})),
        )
        .map_err(|e| {
            if std::env::var_os("CARGOHOLD_TEST_LOG").is_some() {
                eprintln!("find {css}: {e}");
            }
        })
        .ok()
        .and_then(|v| {
            if std::env::var_os("CARGOHOLD_TEST_LOG").is_some() {
                eprintln!("find {css}: {v}");
            }
            v[ELEMENT].as_str().map(|s| Element(s.to_owned()))
        })
    }

    /// The first element matching a CSS selector; panics with the page's text without one.
    pub fn find(&self, css: &str) -> Element {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no `{css}` on {}: {}", self.url(), self.body_text()))
    }

    /// The rendered text of an element.
    pub fn text(&self, e: &Element) -> String {
        self.session_call(reqwest::Method::GET, &format!("/element/{}/text", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The text of the first element matching `css`.
    pub fn text_of(&self, css: &str) -> String {
        let e = self.find(css);
        self.text(&e)
    }

    /// The whole page's visible text.
    pub fn body_text(&self) -> String {
        self.try_find("body").map(|b| self.text(&b)).unwrap_or_default()
    }

    /// Clicks an element (that does not load another page: see [`submit`](Self::submit)).
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.session_call(
            reqwest::Method::POST,
            &format!("/element/{}/click", e.0),
            Some(json!({})),
        );
    }

    /// Clicks a button that loads another page, and waits until that page has loaded.
    pub fn submit(&self, css: &str) {
        self.script("window.__cargohold_old_page = true; return null;");
        self.click(css);
        let started = Instant::now();
        loop {
            let v = self.call(
                reqwest::Method::POST,
                &format!("/session/{}/execute/sync", self.session),
                Some(json!({"script": "return !window.__cargohold_old_page && document.readyState === 'complete';", "args": []})),
            );
            if v.as_ref().ok().and_then(Value::as_bool) == Some(true) {
                return;
            }
            // A liveness guard for a page that never comes, not a speed assertion.
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no new page after clicking `{css}`"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clears a field and types into it.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.session_call(
            reqwest::Method::POST,
            &format!("/element/{}/clear", e.0),
            Some(json!({})),
        );
        self.session_call(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    /// Basic accessibility of the page shown: a non-empty title, an `h1`, headings, and a label
    /// for every visible form control. Panics saying what is missing.
    pub fn check_accessible(&self) {
        let what = self.url();
        assert!(!self.title().trim().is_empty(), "{what}: the page has no title");
        let report = self.script(
            r#"
            const problems = [];
            if (!document.querySelector('h1')) problems.push('no h1');
            if (document.documentElement.lang === '') problems.push('no lang on html');
            for (const el of document.querySelectorAll('input, select, textarea')) {
              if (el.type === 'hidden') continue;
              const byFor = el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]');
              const wrapped = el.closest('label');
              const aria = el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
              if (!byFor && !wrapped && !aria) problems.push('unlabelled ' + el.outerHTML);
            }
            for (const b of document.querySelectorAll('button')) {
              if (!b.textContent.trim() && !b.getAttribute('aria-label')) problems.push('button without text');
            }
            return problems;
            "#,
        );
        let problems: Vec<String> = report
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        assert!(problems.is_empty(), "{what}: accessibility problems: {problems:?}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let p = format!("/session/{}", self.session);
            let _ = self.call(reqwest::Method::DELETE, &p, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
