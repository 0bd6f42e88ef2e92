//! Blocking raw-HTTP helpers (each call runs its own single-threaded tokio runtime, so do not
//! call them from inside an async context; use [`client`] there).

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

/// A fully-read HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response (status {}) is not JSON ({e}): {}", self.status, self.text()))
    }

    /// A header value as a string (`None` if absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// The `detail`s of a `{"errors":[{"detail":…}]}` body (panics if the body has no such
    /// shape).
    pub fn error_details(&self) -> Vec<String> {
        let v = self.json();
        let errors = v["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("expected an {{\"errors\":[…]}} body (status {}), got {v}", self.status));
        assert!(
            !errors.is_empty(),
            "`errors` is empty in error body (status {}): {v}",
            self.status
        );
        errors
            .iter()
            .map(|e| {
                e["detail"]
                    .as_str()
                    .unwrap_or_else(|| panic!("error entry without a string `detail`: {v}"))
                    .to_owned()
            })
            .collect()
    }
}

/// An HTTP client that never uses a proxy (everything under test is on 127.0.0.1).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build HTTP client")
}

/// Sends one request and reads the whole response. `token` goes into `Authorization` verbatim.
pub async fn send_async(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> reqwest::Result<Resp> {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?.to_vec();
    Ok(Resp { status, headers, body })
}

/// Blocking [`send_async`]; panics on transport errors.
pub fn send(method: Method, url: &str, token: Option<&str>, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Resp {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = client();
    rt.block_on(send_async(&client, method.clone(), url, token, body, headers))
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

/// `GET url`.
pub fn get(url: &str, token: Option<&str>) -> Resp {
    send(Method::GET, url, token, None, &[])
}

/// `PUT url` with a JSON body.
pub fn put_json(url: &str, token: Option<&str>, body: &Value) -> Resp {
    send(
        Method::PUT,
        url,
        token,
        Some(body.to_string().into_bytes()),
        &[("Content-Type", "application/json"), ("Accept", "application/json")],
    )
}

/// `DELETE url` (optionally with a JSON body).
pub fn delete(url: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
    let mut headers = vec![("Accept", "application/json")];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    send(
        Method::DELETE,
        url,
        token,
        body.map(|b| b.to_string().into_bytes()),
        &headers,
    )
}

/// `PUT {api}/api/v1/crates/new` with a ready publish body.
pub fn publish_raw(api: &str, token: Option<&str>, body: Vec<u8>) -> Resp {
    send(
        Method::PUT,
        &format!("{api}/api/v1/crates/new"),
        token,
        Some(body),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Accept", "application/json"),
        ],
    )
}

/// [`publish_raw`], but `None` on a transport error (a daemon killed mid-request).
pub fn try_publish_raw(api: &str, token: Option<&str>, body: Vec<u8>) -> Option<Resp> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = client();
    rt.block_on(send_async(
        &client,
        Method::PUT,
        &format!("{api}/api/v1/crates/new"),
        token,
        Some(body),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Accept", "application/json"),
        ],
    ))
    .ok()
}
