//! The HTTP client for one upstream: pooled reqwest (rustls trusting the platform's roots and
//! the registry's `ca_file`, see `tls.rs`; HTTP/2 by ALPN where offered; `HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` from the environment, as reqwest reads them),
//! connect and read timeouts, a total deadline per operation, bounded retries with exponential
//! backoff for retryable failures (5xx, 429, connection errors), conditional index requests,
//! and index bodies read under a size cap.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header;

use crate::telemetry::METRICS;

use super::classify::{classify_index_status, Fetched, StatusClass, UpstreamError};

/// Tunables of an upstream client.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// Longest wait for a response (headers) or between body chunks.
    pub read_timeout: Duration,
    /// Retries after the first attempt, for retryable failures.
    pub retries: u32,
    /// First backoff; doubled per retry.
    pub backoff: Duration,
    /// Longest time one index or `config.json` request may take, all tries and the whole body
    /// included (a trickling upstream cannot hold a request open for ever). Downloads are read
    /// by the caller, which applies its own deadline.
    pub deadline: Duration,
    /// Largest index file or `config.json` body accepted.
    pub max_index_bytes: u64,
    /// Extra root certificates (PEM) trusted on top of the platform's.
    pub ca_file: Option<PathBuf>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(200),
            deadline: Duration::from_secs(300),
            max_index_bytes: 20 << 20,
            ca_file: None,
        }
    }
}

/// A client of one upstream sparse index.
#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    /// Index base without `sparse+`, with a trailing slash.
    base: String,
    settings: UpstreamSettings,
    label: String,
}

/// A download response whose body is still to be read.
pub struct DownloadStream {
    pub content_length: Option<u64>,
    pub response: reqwest::Response,
    pub url: String,
}

/// The error's message and its causes, without the URL (the caller shows a redacted one).
fn describe(e: reqwest::Error) -> String {
    let is_body = e.is_body() || e.is_decode();
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    let mut detail = parts.join(": ");
    if !is_body && detail.to_ascii_lowercase().contains("certificate") {
        detail.push_str(
            "; if the upstream (or a TLS-inspecting gateway) uses a private CA, add it to the system trust store, \
             point SSL_CERT_FILE at it, or set the registry's `ca_file`",
        );
    }
    detail
}

/// Whether the failure is a certificate the client does not trust (rustls' verdict, wherever it
/// sits in the chain of causes, io errors wrapping io errors included).
fn untrusted_certificate(e: &reqwest::Error) -> bool {
    fn is_untrusted(e: &(dyn std::error::Error + 'static)) -> bool {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            return is_untrusted(inner);
        }
        e.source().is_some_and(is_untrusted)
    }
    std::error::Error::source(e).is_some_and(is_untrusted)
}

pub(crate) fn map_err(url: &str, e: reqwest::Error) -> UpstreamError {
    let timeout = e.is_timeout();
    let connect = e.is_connect() || e.is_request();
    let untrusted = untrusted_certificate(&e);
    let detail = describe(e);
    if untrusted {
        UpstreamError::Untrusted {
            url: url.to_owned(),
            detail,
        }
    } else if timeout {
        UpstreamError::Timeout {
            url: url.to_owned(),
            detail,
        }
    } else if connect {
        UpstreamError::Connect {
            url: url.to_owned(),
            detail,
        }
    } else {
        UpstreamError::Body {
            url: url.to_owned(),
            detail,
        }
    }
}

/// Most redirects one upstream request follows.
const MAX_REDIRECTS: usize = 5;

/// Whether a request that started at `chain[0]` may follow a redirect to `to`. Index files
/// and `config.json` (under `index_base`) are served to clients as they come, so they follow
/// redirects only within the upstream's own origin: a hostile upstream cannot make the daemon
/// fetch (and cache, and serve) another host's pages. Downloads are checked against the index
/// checksum before anything is kept, so they may follow a redirect to another host (registries
/// send them to object storage), but never from https to http. A refused redirect leaves the
/// 3xx as the answer, which the caller treats as an upstream error.
///
/// URLs are compared parsed (scheme, host, port with defaults filled in, path), never as text:
/// reqwest strips `user:pass@` from what it requests, and `:443` or an upper-case host are the
/// same origin written differently. Without a parsable base every request is held to its origin.
pub(crate) fn redirect_allowed(index_base: Option<&reqwest::Url>, chain: &[reqwest::Url], to: &reqwest::Url) -> bool {
    let Some(first) = chain.first() else { return false };
    if chain.len() > MAX_REDIRECTS || (first.scheme() == "https" && to.scheme() != "https") {
        return false;
    }
    let is_index = index_base.is_none_or(|base| same_origin(base, first) && first.path().starts_with(base.path()));
    !is_index || same_origin(first, to)
}

fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme() && a.host() == b.host() && a.port_or_known_default() == b.port_or_known_default()
}

/// Reads a body of at most `limit` bytes: a larger `Content-Length` is refused before reading,
/// and a body that grows past the limit is dropped as soon as it does (memory stays bounded).
pub async fn read_capped(
    mut resp: reqwest::Response,
    url: &str,
    limit: u64,
    what: &str,
) -> Result<Bytes, UpstreamError> {
    let too_large = |size: String| UpstreamError::Invalid {
        url: url.to_owned(),
        detail: format!(
            "the {what} is {size}, more than the limit of {limit} bytes \
             (`limits.max_upstream_index_size`); it was refused and not cached"
        ),
    };
    let announced = resp.content_length();
    if let Some(len) = announced.filter(|l| *l > limit) {
        return Err(too_large(format!("{len} bytes")));
    }
    let initial = announced.unwrap_or(0).min(1 << 20);
    let mut buf = BytesMut::with_capacity(usize::try_from(initial).unwrap_or(0));
    while let Some(chunk) = resp.chunk().await.map_err(|e| map_err(url, e))? {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large(format!("more than {limit} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn header_string(resp: &reqwest::Response, name: header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl UpstreamClient {
    /// A client for the index at `index_url` (`sparse+` prefix optional).
    /// `label` names the registry in metrics.
    pub fn new(index_url: &str, settings: UpstreamSettings, label: &str) -> Result<Self, UpstreamError> {
        let bare = index_url.strip_prefix("sparse+").unwrap_or(index_url);
        let base = if bare.ends_with('/') {
            bare.to_owned()
        } else {
            format!("{bare}/")
        };
        let tls = super::tls::client_config(settings.ca_file.as_deref()).map_err(UpstreamError::Internal)?;
        let index_base = reqwest::Url::parse(&base).ok();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if redirect_allowed(index_base.as_ref(), attempt.previous(), attempt.url()) {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .user_agent(concat!("cargohold/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| UpstreamError::Internal(format!("cannot build the upstream client: {e}")))?;
        Ok(UpstreamClient {
            http,
            base,
            settings,
            label: label.to_owned(),
        })
    }

    /// The index base URL (no `sparse+`, trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Runs `attempt` with retries, all within the total deadline.
    async fn with_retries<T, F, Fut>(&self, kind: &'static str, url: &str, attempt: F) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, UpstreamError>>,
    {
        let deadline = self.settings.deadline;
        match tokio::time::timeout(deadline, self.retry_loop(kind, attempt)).await {
            Ok(result) => result,
            Err(_) => {
                METRICS.add(
                    "cargohold_upstream_requests_total",
                    &[
                        ("registry", self.label.as_str()),
                        ("kind", kind),
                        ("outcome", "timeout"),
                    ],
                    1,
                );
                Err(UpstreamError::Timeout {
                    url: url.to_owned(),
                    detail: format!(
                        "no complete answer within the total deadline of {}s (`upstream_deadline`)",
                        deadline.as_secs_f64()
                    ),
                })
            }
        }
    }

    async fn retry_loop<T, F, Fut>(&self, kind: &'static str, mut attempt: F) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, UpstreamError>>,
    {
        let mut delay = self.settings.backoff;
        let mut tries = 0;
        loop {
            let start = std::time::Instant::now();
            let result = attempt().await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(UpstreamError::Timeout { .. }) => "timeout",
                Err(UpstreamError::Status { .. }) => "status",
                Err(_) => "error",
            };
            let labels = [("registry", self.label.as_str()), ("kind", kind)];
            METRICS.observe(
                "cargohold_upstream_request_duration_seconds",
                &labels,
                start.elapsed().as_secs_f64(),
            );
            METRICS.add(
                "cargohold_upstream_requests_total",
                &[("registry", self.label.as_str()), ("kind", kind), ("outcome", outcome)],
                1,
            );
            match result {
                Err(e) if e.is_retryable() && tries < self.settings.retries => {
                    tries += 1;
                    tracing::debug!(error = ?e.to_string(), tries, "retrying upstream request");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
    }

    /// `GET {base}{path}` with the given validators.
    pub async fn index_file(
        &self,
        path: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        let url = format!("{}{path}", self.base);
        let limit = self.settings.max_index_bytes;
        self.with_retries("index", &url, || async {
            let mut req = self
                .http
                .get(&url)
                .header("cargo-protocol", "version=1")
                .header(header::ACCEPT, "text/plain");
            if let Some(e) = etag {
                req = req.header(header::IF_NONE_MATCH, e);
            } else if let Some(lm) = last_modified {
                req = req.header(header::IF_MODIFIED_SINCE, lm);
            }
            let resp = req.send().await.map_err(|e| map_err(&url, e))?;
            let status = resp.status().as_u16();
            match classify_index_status(status) {
                StatusClass::Ok => {
                    let etag = header_string(&resp, header::ETAG);
                    let last_modified = header_string(&resp, header::LAST_MODIFIED);
                    let body = read_capped(resp, &url, limit, "index file").await?;
                    Ok(Fetched::Fresh {
                        body,
                        etag,
                        last_modified,
                    })
                }
                StatusClass::NotModified => Ok(Fetched::NotModified),
                StatusClass::NotFound => Ok(Fetched::NotFound),
                StatusClass::Error => Err(UpstreamError::Status {
                    status,
                    url: url.clone(),
                }),
            }
        })
        .await
    }

    /// The upstream's `config.json`, parsed to its `dl` template.
    pub async fn dl_template(&self) -> Result<String, UpstreamError> {
        let url = format!("{}config.json", self.base);
        let body: Bytes = self
            .with_retries("config", &url, || async {
                let resp = self.http.get(&url).send().await.map_err(|e| map_err(&url, e))?;
                let status = resp.status().as_u16();
                if status != 200 {
                    return Err(UpstreamError::Status {
                        status,
                        url: url.clone(),
                    });
                }
                read_capped(resp, &url, self.settings.max_index_bytes, "config.json").await
            })
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| UpstreamError::Invalid {
            url: url.clone(),
            detail: format!("config.json is not JSON: {e}"),
        })?;
        v["dl"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| UpstreamError::Invalid {
                url,
                detail: "config.json has no `dl`".into(),
            })
    }

    /// Starts a download; the body is read by the caller. 200 only; 404 becomes `Ok(None)`.
    pub async fn download(&self, url: &str) -> Result<Option<DownloadStream>, UpstreamError> {
        self.with_retries("download", url, || async {
            let resp = self.http.get(url).send().await.map_err(|e| map_err(url, e))?;
            let status = resp.status().as_u16();
            match status {
                200 => Ok(Some(DownloadStream {
                    content_length: resp.content_length(),
                    response: resp,
                    url: url.to_owned(),
                })),
                404 | 410 | 451 => Ok(None),
                _ => Err(UpstreamError::Status {
                    status,
                    url: url.to_owned(),
                }),
            }
        })
        .await
    }
}

#[cfg(test)]
mod redirect_tests {
    use super::redirect_allowed;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn index_files_stay_on_their_origin_and_downloads_never_downgrade() {
        let base = url("https://index.example/");
        let base = Some(&base);
        let index = [url("https://index.example/3/f/foo")];
        assert!(redirect_allowed(
            base,
            &index,
            &url("https://index.example/elsewhere/foo")
        ));
        assert!(!redirect_allowed(base, &index, &url("https://other.example/foo")));
        assert!(!redirect_allowed(base, &index, &url("https://index.example:8443/foo")));
        assert!(!redirect_allowed(base, &index, &url("http://index.example/foo")));
        let dl = [url("https://dl.example/foo/1.0.0/download")];
        assert!(redirect_allowed(base, &dl, &url("https://bucket.example/abc")));
        assert!(!redirect_allowed(base, &dl, &url("http://bucket.example/abc")));
        let long: Vec<_> = (0..6).map(|i| url(&format!("https://dl.example/{i}"))).collect();
        assert!(!redirect_allowed(base, &long, &url("https://dl.example/x")));
        assert!(!redirect_allowed(base, &[], &url("https://dl.example/x")));
        // Without a parsable base, everything stays on its origin.
        assert!(!redirect_allowed(None, &dl, &url("https://bucket.example/abc")));
    }

    /// The base written with credentials, a default port or upper case is the same origin as
    /// the URL reqwest actually requests (without credentials): still an index request.
    #[test]
    fn the_index_rule_holds_however_the_base_is_written() {
        for base in [
            "http://user:pw@127.0.0.1:8080/index/",
            "https://INDEX.example:443/index/",
            "https://index.example/index/",
        ] {
            let base = url(base);
            let requested = if base.scheme() == "http" {
                url("http://127.0.0.1:8080/index/3/f/foo")
            } else {
                url("https://index.example/index/3/f/foo")
            };
            let elsewhere = url("http://127.0.0.1:9/secret");
            assert!(
                !redirect_allowed(Some(&base), std::slice::from_ref(&requested), &elsewhere),
                "{base}"
            );
        }
    }
}
