//! The extractors that check tokens: each handler names the kind of token
//! it takes ([`Admin`], [`Registration`], [`Runner`], [`JobToken`]) and gets
//! it checked against the stored hash (see [`crate::token`] for the format).
//! Clients send `Authorization: Bearer <token>`.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::AppState;
use crate::error::ApiError;
use crate::token::hash_token;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <token>".into()))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("malformed Authorization header: use Bearer <token>".into())
        })
}

/// Checks the bearer token against one of the server's own tokens (its
/// SHA-256 in hex): "invalid WHAT token" when it is another.
fn shared_token(parts: &Parts, sha256: &str, what: &str) -> Result<(), ApiError> {
    if hash_token(bearer(parts)?) == sha256 {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(format!("invalid {what} token")))
    }
}

/// The admin token: submit, inspect, cancel, revoke.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        shared_token(parts, &state.tokens.admin_sha256, "admin").map(|()| Admin)
    }
}

/// The registration token: only registers runners.
#[derive(Debug, Clone, Copy)]
pub struct Registration;

impl FromRequestParts<AppState> for Registration {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        shared_token(parts, &state.tokens.registration_sha256, "registration")
            .map(|()| Registration)
    }
}

/// A registered, unrevoked runner.
#[derive(Debug, Clone)]
pub struct Runner {
    /// Its id.
    pub id: u64,
    /// Its labels.
    pub labels: Vec<String>,
}

impl FromRequestParts<AppState> for Runner {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let hash = hash_token(bearer(parts)?);
        match state.store.runner_by_token(&hash).await? {
            None => Err(ApiError::Unauthorized("invalid runner token".into())),
            Some(r) if r.revoked => Err(ApiError::Forbidden(format!(
                "runner {} has been revoked; register again",
                r.id
            ))),
            Some(r) => Ok(Runner {
                id: r.id,
                labels: r.labels,
            }),
        }
    }
}

/// A per-job token: one job, one attempt. The handler must check the job
/// in the path with [`JobToken::for_job`]; whether the attempt still holds
/// the lease is checked by the store inside each write (fencing).
#[derive(Debug, Clone)]
pub struct JobToken {
    /// The job the token was issued for.
    pub job_id: u64,
    /// The attempt (lease) it was issued with.
    pub attempt_id: u64,
    /// Names of the job's secrets (their values are masked in its log).
    pub secrets: Vec<String>,
}

impl JobToken {
    /// Refuses the token when the path names another job.
    pub fn for_job(self, job_id: u64) -> Result<JobToken, ApiError> {
        if self.job_id == job_id {
            Ok(self)
        } else {
            Err(ApiError::Forbidden(format!(
                "this job token is for job {}, not job {job_id}",
                self.job_id
            )))
        }
    }
}

impl FromRequestParts<AppState> for JobToken {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let hash = hash_token(bearer(parts)?);
        match state.store.job_token(&hash).await? {
            None => Err(ApiError::Unauthorized("invalid job token".into())),
            Some(t) if t.runner_revoked => Err(ApiError::Forbidden(
                "the runner holding this job has been revoked".into(),
            )),
            Some(t) => Ok(JobToken {
                job_id: t.job_id,
                attempt_id: t.attempt_id,
                secrets: t.secrets,
            }),
        }
    }
}
