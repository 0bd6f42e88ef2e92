//! Pure classification of upstream answers, the way cargo reads them: 200 fresh, 304 not
//! modified, 404/410/451 not found, anything else an error that says whose fault it is and
//! whether retrying may help.

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The upstream answered badly or not at all.
    Upstream,
    /// The upstream did not answer in time.
    Timeout,
    /// Something on our side.
    Internal,
    /// Too many requests to the upstream are in progress: try again shortly.
    Busy,
}

/// `url` as it may be shown (errors, logs, response bodies): any `user:password@` is replaced
/// by `***@`. The one place upstream URLs are made safe to show.
pub fn redact(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]).into(),
        None => url.into(),
    }
}

/// Why an upstream request failed. URLs are kept as requested and redacted when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream answered HTTP {status} for {}", redact(.url))]
    Status { status: u16, url: String },
    #[error("upstream did not answer in time ({}): {detail}", redact(.url))]
    Timeout { url: String, detail: String },
    #[error("cannot reach upstream ({}): {detail}", redact(.url))]
    Connect { url: String, detail: String },
    /// The upstream's certificate is not trusted (retrying cannot help).
    #[error("the upstream's TLS certificate is not trusted ({}): {detail}", redact(.url))]
    Untrusted { url: String, detail: String },
    #[error("upstream transfer failed ({}): {detail}", redact(.url))]
    Body { url: String, detail: String },
    #[error("upstream sent invalid data ({}): {detail}", redact(.url))]
    Invalid { url: String, detail: String },
    #[error("{0}")]
    Internal(String),
    /// The proxy's cap on concurrent upstream requests (`upstream_concurrency`) is reached and
    /// its queue is full or the wait ran out.
    #[error("too many requests to the upstream of `{registry}` are in progress; retry in {retry_after_secs} s")]
    Busy { registry: String, retry_after_secs: u32 },
}

impl UpstreamError {
    /// Whether a retry may succeed (5xx, 429, connection and timeout failures).
    pub fn is_retryable(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => *status >= 500 || *status == 429,
            UpstreamError::Timeout { .. } | UpstreamError::Connect { .. } | UpstreamError::Body { .. } => true,
            UpstreamError::Invalid { .. }
            | UpstreamError::Untrusted { .. }
            | UpstreamError::Internal(_)
            | UpstreamError::Busy { .. } => false,
        }
    }

    /// Whose fault it is (drives 502 vs 504).
    pub fn fault(&self) -> Fault {
        match self {
            UpstreamError::Timeout { .. } => Fault::Timeout,
            UpstreamError::Internal(_) => Fault::Internal,
            UpstreamError::Busy { .. } => Fault::Busy,
            _ => Fault::Upstream,
        }
    }
}

/// What an index request yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A new body with the upstream's validators.
    Fresh {
        body: bytes::Bytes,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    /// The cached copy is still current.
    NotModified,
    /// The upstream has no such file.
    NotFound,
}

/// The outcome class of a status code for index requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Ok,
    NotModified,
    NotFound,
    Error,
}

/// Classifies an index response status as cargo does.
pub fn classify_index_status(status: u16) -> StatusClass {
    match status {
        200 => StatusClass::Ok,
        304 => StatusClass::NotModified,
        404 | 410 | 451 => StatusClass::NotFound,
        _ => StatusClass::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        for (s, c) in [
            (200, StatusClass::Ok),
            (304, StatusClass::NotModified),
            (404, StatusClass::NotFound),
            (410, StatusClass::NotFound),
            (451, StatusClass::NotFound),
            (401, StatusClass::Error),
            (403, StatusClass::Error),
            (429, StatusClass::Error),
            (500, StatusClass::Error),
            (503, StatusClass::Error),
        ] {
            assert_eq!(classify_index_status(s), c, "{s}");
        }
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact("https://u:secret@h.example/index/"),
            "https://***@h.example/index/"
        );
        assert_eq!(redact("http://token@h.example:8/a@b"), "http://***@h.example:8/a@b");
        assert_eq!(redact("https://h.example/a@b?c@d"), "https://h.example/a@b?c@d");
        assert_eq!(redact("not a url"), "not a url");
        let e = UpstreamError::Status {
            status: 500,
            url: "https://u:secret@h.example/x".into(),
        };
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn retryability_and_fault() {
        let st = |status| UpstreamError::Status {
            status,
            url: String::new(),
        };
        assert!(st(500).is_retryable() && st(503).is_retryable() && st(429).is_retryable());
        assert!(!st(403).is_retryable());
        let t = UpstreamError::Timeout {
            url: String::new(),
            detail: String::new(),
        };
        assert!(t.is_retryable());
        assert_eq!(t.fault(), Fault::Timeout);
        assert_eq!(st(502).fault(), Fault::Upstream);
        let untrusted = UpstreamError::Untrusted {
            url: String::new(),
            detail: String::new(),
        };
        assert!(
            !untrusted.is_retryable(),
            "a certificate does not become trusted by retrying"
        );
        assert_eq!(untrusted.fault(), Fault::Upstream);
    }
}
