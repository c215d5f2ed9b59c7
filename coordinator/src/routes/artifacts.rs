//! Sources (admin uploads them before submitting; the job's runner fetches
//! them) and artifacts (the runner uploads; admins list and download).

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pinfold_api::wire::{ArtifactInfo, ArtifactList};
use serde::Deserialize;

use super::Json;
use crate::AppState;
use crate::auth::{Admin, JobToken};
use crate::blobs::BlobError;
use crate::error::{ApiError, Result};

/// Refuses early when the client announces a body over `limit`.
fn check_length(headers: &HeaderMap, limit: u64) -> Result<()> {
    let len = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match len {
        Some(n) if n > limit => Err(BlobError::TooLarge { limit }.into()),
        _ => Ok(()),
    }
}

fn octet_response(size: u64, sha256: &str, body: Body) -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (CONTENT_LENGTH, HeaderValue::from(size)),
            (
                axum::http::HeaderName::from_static("x-pinfold-sha256"),
                HeaderValue::from_str(sha256).expect("hex is a valid header value"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `PUT /api/v1/sources/{sha256}`: a source tar, verified against its digest.
pub(super) async fn put_source(
    _: Admin,
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ArtifactInfo>)> {
    let limit = state.config.max_source_bytes;
    check_length(&headers, limit)?;
    let size = state.blobs.put(&sha256, body, limit).await?;
    Ok((
        StatusCode::CREATED,
        Json(ArtifactInfo {
            name: "source.tar".into(),
            size,
            sha256,
        }),
    ))
}

/// `GET /api/v1/jobs/{id}/source` (job token): the job's source tar.
pub(super) async fn get_source(
    token: JobToken,
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Response> {
    token.for_job(id)?;
    let job = state.store.job(id).await?;
    let sha = job
        .info
        .source_sha256
        .ok_or_else(|| ApiError::NotFound(format!("job {id} was submitted without a source")))?;
    let (size, body) = state.blobs.open_body(&sha).await?;
    Ok(octet_response(size, &sha, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadQuery {
    sha256: String,
}

/// The agent refuses these names too, but a runner may be hostile: the
/// server checks again (`pinfold_api::wire::check_artifact_name`).
fn check_name(name: &str) -> Result<()> {
    pinfold_api::wire::check_artifact_name(name).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// `PUT /api/v1/jobs/{id}/artifacts/{name}?sha256=HEX` (job token): stream
/// the file; the server verifies the digest and stores it content-addressed.
pub(super) async fn upload(
    token: JobToken,
    State(state): State<AppState>,
    Path((id, name)): Path<(u64, String)>,
    q: std::result::Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ArtifactInfo>)> {
    let t = token.for_job(id)?;
    let Query(q) = q?;
    check_name(&name)?;
    let limit = state.config.max_artifact_bytes;
    check_length(&headers, limit)?;
    // Fence before taking the bytes (and again when recording): a stale
    // attempt must not fill the disk. Uploading also counts as a sign of
    // life, so a long upload does not lose the lease.
    let ttl = state.config.lease_ttl.as_millis() as u64;
    state
        .store
        .heartbeat(id, t.attempt_id, pinfold_api::now_ms() + ttl)
        .await?;
    let size = state.blobs.put(&q.sha256, body, limit).await?;
    let info = ArtifactInfo {
        name,
        size,
        sha256: q.sha256,
    };
    state
        .store
        .add_artifact(id, t.attempt_id, info.clone())
        .await?;
    tracing::info!(job_id = id, name = %info.name, size, "artifact stored");
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /api/v1/jobs/{id}/artifacts`.
pub(super) async fn list(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<ArtifactList>> {
    Ok(Json(ArtifactList {
        artifacts: state.store.artifacts(id).await?,
    }))
}

/// `GET /api/v1/jobs/{id}/artifacts/{name}`: the content, with its digest
/// in `x-pinfold-sha256`.
pub(super) async fn download(
    _: Admin,
    State(state): State<AppState>,
    Path((id, name)): Path<(u64, String)>,
) -> Result<Response> {
    artifact(&state, id, &name).await
}

/// An artifact's bytes, with its size and sha256 in the headers (the API's
/// download and the pages').
pub(crate) async fn artifact(state: &AppState, id: u64, name: &str) -> Result<Response> {
    let info = state
        .store
        .artifacts(id)
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("job {id} has no artifact {name:?}")))?;
    let (size, body) = state.blobs.open_body(&info.sha256).await?;
    Ok(octet_response(size, &info.sha256, body))
}
