//! Errors of the registry layer. Each variant says which HTTP status class it belongs to;
//! `http::error` is the one place that turns them into responses.

use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// What went wrong serving a registry request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// 404: no such registry, crate, version, user or token.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request is malformed or breaks a rule.
    #[error("{0}")]
    BadRequest(String),
    /// 409: conflicts with what exists (duplicate version, taken name).
    #[error("{0}")]
    Conflict(String),
    /// 401: credentials missing or not valid. `login_url` becomes the `WWW-Authenticate`
    /// challenge cargo uses to tell the user where to get a token.
    #[error("{message}")]
    Unauthorized { message: String, login_url: Option<String> },
    /// 403: valid credentials without the right (scope, registry, ownership).
    #[error("{0}")]
    Forbidden(String),
    /// 405: the operation does not exist on this kind of registry.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 422: well-formed but refused (a damaged bundle, an increment without its base).
    #[error("{0}")]
    Unprocessable(String),
    /// 413: a body or part of it is over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// 503 with `Retry-After`: cannot be decided now (an upstream needed for a check is
    /// unreachable); the message says what to do.
    #[error("{0}")]
    Unavailable(String),
    /// 500: the store failed.
    #[error(transparent)]
    Store(StoreError),
    /// 502/504: the upstream failed and nothing cached could answer.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl From<super::bundle::BundleError> for RegistryError {
    fn from(e: super::bundle::BundleError) -> Self {
        if e.usage {
            RegistryError::BadRequest(e.message)
        } else {
            RegistryError::Unprocessable(e.message)
        }
    }
}

/// Result alias for the registry layer.
pub type RegistryResult<T> = Result<T, RegistryError>;

impl From<StoreError> for RegistryError {
    /// A conflict that outlived the retries of a change is a 503 to retry, not a failure.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(why) => RegistryError::Unavailable(format!(
                "the crate is being changed by other requests right now ({why}); retry in a moment"
            )),
            other => RegistryError::Store(other),
        }
    }
}
