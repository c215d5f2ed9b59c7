//! Job submission, inspection and cancellation (admin), and the runner's
//! heartbeat and finish (job token).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use pinfold_api::JobSpec;
use pinfold_api::wire::{
    FinishRequest, HeartbeatResponse, JobInfo, JobList, JobState, SubmitRequest, SubmitResponse,
};
use serde::Deserialize;

use super::Json;
use crate::AppState;
use crate::auth::{Admin, JobToken};
use crate::error::{ApiError, Result};
use crate::store::{JobFilter, NewJob};
use pinfold_api::now_ms;

/// `POST /api/v1/jobs`: validate the job file and enqueue it.
pub(super) async fn submit(
    _: Admin,
    State(state): State<AppState>,
    Json(req): Json<SubmitRequest>,
) -> Result<(StatusCode, Json<SubmitResponse>)> {
    let spec = JobSpec::from_yaml(&req.spec).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    super::runners::check_labels(&req.labels)?;
    if let Some(sha) = &req.source_sha256 {
        if !pinfold_api::is_sha256_hex(sha) {
            return Err(ApiError::BadRequest(format!(
                "source_sha256 {sha:?}: expected 64 lowercase hex digits"
            )));
        }
        if !state.blobs.contains(sha).await? {
            return Err(ApiError::BadRequest(format!(
                "source {sha} was not uploaded: PUT /api/v1/sources/{sha} first"
            )));
        }
    }
    let job = NewJob {
        spec_json: serde_json::to_string(&spec).expect("a JobSpec serializes"),
        spec_yaml: req.spec,
        image: spec.image.to_string(),
        labels: req.labels,
        secrets: spec.secrets.iter().map(|s| s.to_string()).collect(),
        source_sha256: req.source_sha256,
        max_attempts: state.config.max_attempts,
        created_at: now_ms(),
    };
    let job_id = match spec.verify {
        Some(n) => state.store.create_verify_job(job, n.0).await?,
        None => state.store.create_job(job).await?,
    };
    tracing::info!(job_id, "job submitted");
    state.events.queue_changed();
    Ok((StatusCode::CREATED, Json(SubmitResponse { job_id })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    label: Option<String>,
    before: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/v1/jobs?state=&label=&before=&limit=`: newest first.
pub(super) async fn list(
    _: Admin,
    State(state): State<AppState>,
    q: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobList>> {
    let Query(q) = q?;
    let filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown state {s:?}: queued, running, succeeded, failed, timed_out, cancelled or error"
            ))
        })?),
    };
    let jobs = state
        .store
        .list_jobs(&JobFilter {
            state: filter,
            label: q.label,
            before: q.before,
            limit: q.limit.unwrap_or(100).clamp(1, 1000),
        })
        .await?;
    Ok(Json(JobList {
        jobs: jobs.into_iter().map(|j| j.info).collect(),
    }))
}

/// `GET /api/v1/jobs/{id}`.
pub(super) async fn status(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<JobInfo>> {
    Ok(Json(info(&state, id).await?))
}

/// A job as clients see it, with its verify runs or group.
pub(crate) async fn info(state: &AppState, id: u64) -> Result<JobInfo> {
    let mut info = state.store.job(id).await?.info;
    (info.verify, info.verify_of) = state.store.verify_status(id, now_ms()).await?;
    Ok(info)
}

/// `POST /api/v1/jobs/{id}/cancel`.
pub(super) async fn cancel(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<JobInfo>> {
    let after = state.store.cancel(id, now_ms()).await?;
    tracing::info!(job_id = id, state = after.as_str(), "cancel requested");
    state.events.log_changed();
    Ok(Json(info(&state, id).await?))
}

/// `POST /api/v1/jobs/{id}/heartbeat`: renew the lease, learn of a cancel.
pub(super) async fn heartbeat(
    token: JobToken,
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<HeartbeatResponse>> {
    let t = token.for_job(id)?;
    let ttl = state.config.lease_ttl;
    let cancel = state
        .store
        .heartbeat(id, t.attempt_id, now_ms() + ttl.as_millis() as u64)
        .await?;
    Ok(Json(HeartbeatResponse {
        lease_ttl_secs: ttl.as_secs().max(1),
        cancel,
    }))
}

/// `POST /api/v1/jobs/{id}/finish`: the job's outcome; ends the lease.
pub(super) async fn finish(
    token: JobToken,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Json(req): Json<FinishRequest>,
) -> Result<Json<JobInfo>> {
    let t = token.for_job(id)?;
    if req.steps.len() > 1000 {
        return Err(ApiError::BadRequest("at most 1000 step results".into()));
    }
    let s = state
        .store
        .finish(id, t.attempt_id, req, state.config.max_log_bytes, now_ms())
        .await?;
    tracing::info!(job_id = id, state = s.as_str(), "job finished");
    state.events.log_changed();
    Ok(Json(info(&state, id).await?))
}
