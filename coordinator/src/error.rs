//! The one error type of the HTTP API: every failure, extractor rejections
//! included, becomes a status and a JSON body `{"error": "..."}`.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pinfold_api::wire::ErrorBody;

use crate::blobs::BlobError;
use crate::store::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// No token, or an unknown one.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token that may not do this (revoked runner, other job's token).
    #[error("{0}")]
    Forbidden(String),
    /// No such job, runner, artifact or route.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the job's state (stale lease, finished job).
    #[error("{0}")]
    Conflict(String),
    /// A log append does not start where the log ends.
    #[error("log chunk starts at {got} but the log has {expected} bytes: resend from {expected}")]
    LogGap {
        /// Where the chunk started.
        got: u64,
        /// Where it must start.
        expected: u64,
    },
    /// A body over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// An extractor refused the request with this status.
    #[error("{1}")]
    Rejected(StatusCode, String),
    /// The store failed.
    #[error("store: {0}")]
    Store(StoreError),
    /// The blob store failed.
    #[error("blob store: {0}")]
    Blob(BlobError),
}

/// Result of a handler.
pub type Result<T> = std::result::Result<T, ApiError>;

impl ApiError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::LogGap { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Rejected(s, _) => *s,
            // The database is restarting or out of reach: clients retry.
            ApiError::Store(e) if e.retryable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Blob(e) => match e {
                BlobError::DigestMismatch { .. } | BlobError::BadDigest(_) => {
                    StatusCode::BAD_REQUEST
                }
                BlobError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                BlobError::Body(_) => StatusCode::BAD_REQUEST,
                BlobError::Io { .. } | BlobError::Missing(_) => StatusCode::INTERNAL_SERVER_ERROR,
                BlobError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::StaleLease { .. } | StoreError::Conflict(_) => {
                ApiError::Conflict(e.to_string())
            }
            StoreError::LogGap { got, expected } => ApiError::LogGap { got, expected },
            e => ApiError::Store(e),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        ApiError::Blob(e)
    }
}

macro_rules! from_rejection {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(r: $t) -> Self {
                ApiError::Rejected(r.status(), r.body_text())
            }
        }
    )*};
}
from_rejection!(JsonRejection, QueryRejection, PathRejection, BytesRejection);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(err = %self, "request failed");
        } else {
            tracing::debug!(err = %self, %status, "request refused");
        }
        let body = ErrorBody {
            expected_offset: match &self {
                ApiError::LogGap { expected, .. } => Some(*expected),
                _ => None,
            },
            error: match &self {
                // Do not leak paths or SQL to clients; the log has the details.
                ApiError::Store(e) if e.retryable() => {
                    "the coordinator's database is unavailable: retry".into()
                }
                ApiError::Store(_) => "internal error in the coordinator's store".into(),
                ApiError::Blob(BlobError::Io { .. } | BlobError::Missing(_)) => {
                    "internal error in the coordinator's blob store".into()
                }
                ApiError::Blob(BlobError::Database(_)) => {
                    "the coordinator's database is unavailable: retry".into()
                }
                e => e.to_string(),
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        resp
    }
}
