//! The one place where errors become HTTP responses, always in Cargo's envelope
//! `{"errors":[{"detail":"..."}]}`.

use hyper::{header, Response, StatusCode};
use serde_json::json;

use super::body::{full, Body};
use crate::registry::RegistryError;
use crate::upstream::{Fault, UpstreamError};

/// An error ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// `WWW-Authenticate` challenge (401 only).
    pub challenge: Option<String>,
    /// `Allow` header (405 only).
    pub allow: Option<&'static str>,
    /// `x-cache` header (index and download errors).
    pub x_cache: Option<&'static str>,
    /// Close the connection after answering (the request body was left unread).
    pub close: bool,
    /// `Retry-After` seconds (503 only).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            challenge: None,
            allow: None,
            x_cache: None,
            close: false,
            retry_after: None,
        }
    }

    /// The response.
    pub fn into_response(self) -> Response<Body> {
        let body = json!({"errors": [{"detail": self.detail}]}).to_string();
        let mut resp = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8");
        if let Some(c) = self.challenge {
            resp = resp.header(header::WWW_AUTHENTICATE, c);
        }
        if let Some(a) = self.allow {
            resp = resp.header(header::ALLOW, a);
        }
        if let Some(x) = self.x_cache {
            resp = resp.header(super::X_CACHE, x);
        }
        if self.close {
            resp = resp.header(header::CONNECTION, "close");
        }
        if let Some(secs) = self.retry_after {
            resp = resp.header(header::RETRY_AFTER, secs);
        }
        resp.body(full(body))
            .unwrap_or_else(|_| Response::new(full("internal error")))
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RegistryError::Conflict(_) => StatusCode::CONFLICT,
            RegistryError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            RegistryError::Forbidden(_) => StatusCode::FORBIDDEN,
            RegistryError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            RegistryError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RegistryError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RegistryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RegistryError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RegistryError::Upstream(u) => match u.fault() {
                Fault::Timeout => StatusCode::GATEWAY_TIMEOUT,
                Fault::Busy => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
        };
        let detail = match &e {
            RegistryError::Store(inner) => {
                tracing::error!(error = %inner, "storage failure");
                "internal storage error; the operation was not applied (see the server log)".to_owned()
            }
            RegistryError::Upstream(UpstreamError::Internal(m)) => m.clone(),
            RegistryError::Upstream(u @ UpstreamError::Busy { .. }) => u.to_string(),
            RegistryError::Upstream(u) => format!("{u}; nothing cached can answer this request, try again later"),
            other => other.to_string(),
        };
        let allow = matches!(e, RegistryError::MethodNotAllowed(_)).then_some("GET, HEAD");
        let retry_after = match &e {
            RegistryError::Upstream(UpstreamError::Busy { retry_after_secs, .. }) => Some(*retry_after_secs),
            RegistryError::Unavailable(_) => Some(UNAVAILABLE_RETRY_SECS),
            _ => None,
        };
        let challenge = match e {
            RegistryError::Unauthorized {
                login_url: Some(url), ..
            } => Some(format!("Cargo login_url=\"{url}\"")),
            _ => None,
        };
        ApiError {
            status,
            detail,
            challenge,
            allow,
            x_cache: None,
            close: false,
            retry_after,
        }
    }
}

/// `Retry-After` of a 503 whose cause (an unreachable upstream) has no known end.
const UNAVAILABLE_RETRY_SECS: u32 = 30;
