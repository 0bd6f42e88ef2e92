//! Webhooks (issue 13): a local receiver on 127.0.0.1 checks every delivery's signature; a
//! receiver answering 500 twice then 200 gets the event with three attempts logged; hooks to
//! private addresses are refused without `allow_private`; an event committed before a
//! `kill -9` is delivered after the restart; a hanging receiver does not hold up publishes.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::daemon::Daemon;
use crate::support::ports::HeldPort;
use crate::support::{http, package};

pub(crate) const SECRET: &str = "correct horse battery staple";

/// Hosted `local` only, deliveries to loopback allowed, short backoffs.
fn config(max_attempts: u32) -> String {
    format!(
        "[registries.local]\nkind = \"hosted\"\n\n[webhooks]\nallow_private = true\nretry_base = \"50ms\"\nmax_attempts = {max_attempts}\n"
    )
}

/// What the receiver does with the next request.
#[derive(Clone, Copy)]
pub(crate) enum Answer {
    Status(u16),
    /// Reads the request, then holds the connection until released.
    Hang,
}

#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Vec<u8>,
}

/// A small HTTP/1.1 receiver on 127.0.0.1 recording every request.
pub(crate) struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    release: Arc<Mutex<Option<mpsc::Sender<()>>>>,
    /// Requests read and not answered yet.
    holding: Arc<AtomicUsize>,
}

impl Receiver {
    pub(crate) fn start(script: &[Answer]) -> Receiver {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    fn start_on(listener: TcpListener, script: &[Answer]) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let holding = Arc::new(AtomicUsize::new(0));
        let (g, s, h) = (got.clone(), script.clone(), holding.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (g, s, rx, h) = (g.clone(), s.clone(), rx.clone(), h.clone());
                std::thread::spawn(move || serve(conn, &g, &s, &rx, &h));
            }
        });
        Receiver {
            port,
            got,
            release: Arc::new(Mutex::new(Some(tx))),
            holding,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (generously) until `n` requests arrived.
    pub(crate) fn wait_for(&self, n: usize, d: &Daemon) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} of {n} deliveries\n{}",
                got.len(),
                d.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lets hanging requests go (they then answer 200).
    fn release(&self) {
        self.release.lock().unwrap().take();
    }
}

fn serve(
    conn: TcpStream,
    got: &Mutex<Vec<Received>>,
    script: &Mutex<VecDeque<Answer>>,
    release: &Mutex<mpsc::Receiver<()>>,
    holding: &AtomicUsize,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut headers = BTreeMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        got.lock().unwrap().push(Received { headers, body });
        let answer = script.lock().unwrap().pop_front().unwrap_or(Answer::Status(200));
        let status = match answer {
            Answer::Status(s) => s,
            Answer::Hang => {
                // Blocks until the sender is dropped (released).
                holding.fetch_add(1, Ordering::SeqCst);
                let _ = release.lock().unwrap().recv();
                holding.fetch_sub(1, Ordering::SeqCst);
                200
            }
        };
        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Checks a delivery as a receiver must: the signature over `"<timestamp>.<body>"`.
pub(crate) fn verify(r: &Received) -> Value {
    let ts = &r.headers["x-cargohold-timestamp"];
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&r.body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.headers["x-cargohold-signature-256"], want, "signature of {r:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts: u64 = ts.parse().unwrap();
    assert!(
        ts.abs_diff(now) < 300,
        "timestamp {ts} is within the replay window of {now}"
    );
    assert_eq!(r.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.headers["x-cargohold-event"], body["event"].as_str().unwrap());
    assert_eq!(r.headers["x-cargohold-delivery"].len(), 32);
    body
}

pub(crate) fn create_hook(d: &Daemon, url: &str, extra: &[&str]) -> String {
    let secret = d.scratch_dir().join("hook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let mut args = vec![
        "hook",
        "create",
        "--url",
        url,
        "--secret-file",
        secret.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let id = d.admin_ok(&args);
    assert_eq!(id.len(), 32, "`hook create` prints the id: {id:?}");
    id
}

fn publish(d: &Daemon, token: &str, name: &str, vers: &str) {
    let (body, _) = package::simple_publish(name, vers);
    let r = http::publish_raw(&d.api_url("local"), Some(token), body);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn deliveries_are_signed_and_retried_until_the_receiver_accepts() {
    let rx = Receiver::start(&[Answer::Status(500), Answer::Status(500)]);
    let d = Daemon::start_with_config(&config(8));
    let hook = create_hook(&d, &rx.url(), &["--registry", "local", "--events", "crate.published"]);
    let listed = d.admin_ok(&["hook", "list"]);
    assert!(listed.contains(&hook) && !listed.contains(SECRET), "{listed}");
    let api = http::get(&d.url("/-/api/v1/hooks"), Some(d.admin_token()));
    assert!(
        !api.text().contains(SECRET),
        "the API never shows a secret: {}",
        api.text()
    );

    let token = d.user_token("alice", &[]);
    publish(&d, &token, "hooked-one", "1.0.0");
    let got = rx.wait_for(3, &d);
    let bodies: Vec<Value> = got.iter().map(verify).collect();
    let ids: Vec<_> = got.iter().map(|r| r.headers["x-cargohold-delivery"].clone()).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "retries keep the delivery id: {ids:?}"
    );
    let b = &bodies[0];
    assert_eq!(
        (
            &b["schema"],
            &b["event"],
            &b["registry"],
            &b["crate"],
            &b["version"],
            &b["actor"]
        ),
        (
            &json!(1),
            &json!("crate.published"),
            &json!("local"),
            &json!("hooked-one"),
            &json!("1.0.0"),
            &json!("alice")
        )
    );
    // Three attempts logged: 500, 500, 200.
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = d.admin_ok(&["hook", "deliveries", &hook]);
        if log.contains("delivered") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        log.contains("crate.published  delivered  attempts=3 last_status=200"),
        "{log}"
    );
    let statuses: Vec<_> = log
        .lines()
        .filter(|l| l.trim_start().starts_with("attempt "))
        .filter_map(|l| {
            l.split("status=")
                .nth(1)
                .map(|s| s.split(' ').next().unwrap().to_owned())
        })
        .collect();
    assert_eq!(statuses, ["500", "500", "200"], "{log}");

    // A redelivery is the same delivery (same id) again: receivers deduplicate on it.
    let delivery = log.split_whitespace().next().unwrap().to_owned();
    assert_eq!(ids[0], delivery);
    d.admin_ok(&["hook", "redeliver", &delivery]);
    let got = rx.wait_for(4, &d);
    verify(&got[3]);
    assert_eq!(got[3].headers["x-cargohold-delivery"], delivery);
    let out = d.admin(&["hook", "redeliver", "0123456789abcdef0123456789abcdef"]);
    assert!(!out.status.success());
    d.admin_ok(&["hook", "delete", &hook]);
    assert!(!d.admin_ok(&["hook", "list"]).contains(&hook));
}

#[test]
fn registry_changes_name_the_administrator_who_made_them() {
    let rx = Receiver::start(&[]);
    let d = Daemon::start_with_config(&config(3));
    create_hook(&d, &rx.url(), &["--events", "registry.changed"]);
    d.admin_ok(&["registry", "create", "team", "--kind", "hosted"]);
    // The registries of the config file, recorded at the start, may reach the hook first
    // (if the worker's first look comes after the hook was made).
    let b = (1..=4)
        .find_map(|n| {
            rx.wait_for(n, &d)
                .iter()
                .map(verify)
                .find(|b| b["registry"] == json!("team"))
        })
        .expect("the event of `team`");
    assert_eq!(
        (&b["event"], &b["registry"], &b["actor"]),
        (&json!("registry.changed"), &json!("team"), &json!("admin")),
        "the admin token acts as `admin`"
    );
}

#[test]
fn ended_deliveries_are_pruned_after_the_retention() {
    let rx = Receiver::start(&[]);
    let d = Daemon::start_with_config(&format!("{}retention = \"1s\"\n", config(3)));
    let hook = create_hook(&d, &rx.url(), &["--events", "crate.published"]);
    let token = d.user_token("alice", &[]);
    publish(&d, &token, "pruned-one", "1.0.0");
    rx.wait_for(1, &d);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = false;
    loop {
        let log = d.admin_ok(&["hook", "deliveries", &hook]);
        seen |= log.contains("delivered");
        if seen && !log.contains("crate.published") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the delivered delivery was never pruned:\n{log}\n{}",
            d.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.log_tail().contains("pruned"), "{}", d.log_tail());
}

#[test]
fn hooks_to_private_addresses_and_bad_hooks_are_refused() {
    let d = Daemon::start_with_config("[registries.local]\nkind = \"hosted\"\n");
    let secret = d.scratch_dir().join("s");
    std::fs::write(&secret, SECRET).unwrap();
    for url in [
        "http://127.0.0.1:9/x",
        "http://localhost:9/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest",
        "http://[::ffff:127.0.0.1]/x",
    ] {
        let out = d.admin(&[
            "hook",
            "create",
            "--url",
            url,
            "--secret-file",
            secret.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url} was accepted");
        assert!(err.contains("allow_private"), "{url}: {err}");
    }
    let api = d.url("/-/api/v1/hooks");
    let post = |body: Value| {
        http::send(
            reqwest::Method::POST,
            &api,
            Some(d.admin_token()),
            Some(body.to_string().into_bytes()),
            &[("Content-Type", "application/json")],
        )
    };
    for (body, status, says) in [
        (
            json!({"url": "ftp://192.0.2.1/x", "secret": "s"}),
            400,
            "http and https",
        ),
        (json!({"url": "not a url", "secret": "s"}), 400, "hook URL"),
        (json!({"url": "http://192.0.2.1/x", "secret": " "}), 400, "secret"),
        (
            json!({"url": "http://192.0.2.1/x", "secret": "s", "events": ["crate.exploded"]}),
            400,
            "unknown event",
        ),
        (
            json!({"url": "http://192.0.2.1/x", "secret": "s", "registry": "nope"}),
            404,
            "nope",
        ),
        (
            json!({"url": "http://u:p@192.0.2.1/x", "secret": "s"}),
            400,
            "credentials",
        ),
        (
            json!({"url": "http://192.0.2.1/x", "secret": "s", "colour": 1}),
            400,
            "colour",
        ),
    ] {
        let r = post(body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let details = r.error_details().join(" ");
        assert!(details.contains(says), "{body}: {details}");
    }
    // Without the admin token: refused.
    let r = http::get(&api, None);
    assert!(r.status == 401 || r.status == 403, "{}", r.status);
    assert_eq!(
        http::delete(&d.url("/-/api/v1/hooks/nope"), Some(d.admin_token()), None).status,
        404
    );
    assert_eq!(
        http::get(&d.url("/-/api/v1/hooks/nope/deliveries"), Some(d.admin_token())).status,
        404
    );
    assert!(d.admin_ok(&["hook", "list"]).is_empty());
}

#[test]
fn an_event_committed_before_a_kill_9_is_delivered_after_the_restart() {
    // The receiver's port, held but closed for now: deliveries fail (connection refused).
    let held = HeldPort::new();
    let url = format!("http://127.0.0.1:{}/hook", held.port());
    let mut d = Daemon::start_with_config(&config(100));
    let hook = create_hook(&d, &url, &["--events", "crate.published"]);
    let token = d.user_token("bob", &[]);
    publish(&d, &token, "durable-one", "1.0.0");
    d.kill9();
    d.restart();
    let rx = Receiver::start_on(held.listen(), &[]);
    let got = rx.wait_for(1, &d);
    let body = verify(&got[0]);
    assert_eq!(
        (&body["event"], &body["crate"]),
        (&json!("crate.published"), &json!("durable-one"))
    );
    let log = d.admin_ok(&["hook", "deliveries", &hook]);
    assert!(log.contains("crate.published"), "{log}");
}

#[test]
fn a_hanging_receiver_does_not_hold_up_publishes() {
    let rx = Receiver::start(&[Answer::Hang]);
    // The delivery's own timeout well beyond the test: the connection stays held.
    let d = Daemon::start_with_config(&format!("{}timeout = \"600s\"\n", config(8)));
    create_hook(&d, &rx.url(), &["--events", "crate.published"]);
    let token = d.user_token("carol", &[]);
    publish(&d, &token, "hang-zero", "1.0.0");
    // The receiver now holds the first delivery's connection, unanswered.
    rx.wait_for(1, &d);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rx.holding.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the receiver never held a delivery");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 1..=5 {
        publish(&d, &token, "hang-zero", &format!("1.0.{i}"));
        assert_eq!(
            rx.holding.load(Ordering::SeqCst),
            1,
            "publish {i} answered 200 while the receiver still holds the first delivery"
        );
    }
    rx.release();
    rx.wait_for(6, &d).iter().for_each(|r| {
        verify(r);
    });
}
