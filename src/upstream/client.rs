//! The HTTP client for one upstream: pooled reqwest (rustls; HTTP/2 by ALPN where offered),
//! connect and read timeouts, bounded retries with exponential backoff for retryable failures
//! (5xx, 429, connection errors), conditional index requests.

use std::time::Duration;

use bytes::Bytes;
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
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(200),
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

fn map_err(url: &str, e: reqwest::Error) -> UpstreamError {
    let detail = e.to_string();
    if e.is_timeout() {
        UpstreamError::Timeout {
            url: url.to_owned(),
            detail,
        }
    } else if e.is_connect() || e.is_request() {
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
        let http = reqwest::Client::builder()
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

    async fn with_retries<T, F, Fut>(&self, kind: &'static str, mut attempt: F) -> Result<T, UpstreamError>
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
                    tracing::debug!(error = %e, tries, "retrying upstream request");
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
        self.with_retries("index", || async {
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
                    let body = resp.bytes().await.map_err(|e| map_err(&url, e))?;
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
            .with_retries("config", || async {
                let resp = self.http.get(&url).send().await.map_err(|e| map_err(&url, e))?;
                let status = resp.status().as_u16();
                if status != 200 {
                    return Err(UpstreamError::Status {
                        status,
                        url: url.clone(),
                    });
                }
                resp.bytes().await.map_err(|e| map_err(&url, e))
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
        self.with_retries("download", || async {
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
