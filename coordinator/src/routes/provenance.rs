//! A job's signed provenance: the runner uploads a DSSE envelope beside the
//! artifacts; the server accepts it only when it verifies with the key the
//! runner registered and attests exactly artifacts the job uploaded.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pinfold_api::provenance::{self, Envelope, ProvenanceError};
use pinfold_api::wire::ProvenanceStored;

use super::Json;
use crate::AppState;
use crate::auth::{Admin, JobToken};
use crate::error::{ApiError, Result};

/// `PUT /api/v1/jobs/{id}/provenance` (job token): a DSSE envelope (JSON,
/// within the JSON body limit).
pub(super) async fn upload(
    token: JobToken,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<(StatusCode, Json<ProvenanceStored>)> {
    let t = token.for_job(id)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("provenance: not UTF-8 JSON".into()))?;
    let envelope: Envelope = serde_json::from_str(text)
        .map_err(|e| ApiError::BadRequest(format!("provenance: not a DSSE envelope: {e}")))?;
    let runner_id = state.store.attempt_runner(t.attempt_id).await?;
    let pem = state.store.runner_key(runner_id).await?.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "runner {runner_id} registered no public key, so its provenance cannot be checked: \
             register the agent again (remove its runner token file)"
        ))
    })?;
    let key = provenance::parse_public_key(&pem)
        .map_err(|e| ApiError::Store(crate::store::StoreError::Corrupt(e.to_string())))?;
    let statement = provenance::verify(&envelope, &key).map_err(|e| match e {
        ProvenanceError::BadSignature => ApiError::Forbidden(format!(
            "provenance refused: its signature does not verify with runner {runner_id}'s registered key"
        )),
        e => ApiError::BadRequest(format!("provenance refused: {e}")),
    })?;
    // Every subject must be an artifact this job stored, with that digest:
    // the attestation speaks only of what the server holds.
    let artifacts = state.store.artifacts(id).await?;
    for s in &statement.subject {
        let name = s.name.as_deref().unwrap_or_default();
        let want = s.digest.get("sha256").map(String::as_str).unwrap_or("");
        match artifacts.iter().find(|a| a.name == name) {
            Some(a) if a.sha256 == want => {}
            Some(a) => {
                return Err(ApiError::BadRequest(format!(
                    "provenance refused: subject {name:?} has sha256 {want}, the stored artifact {}",
                    a.sha256
                )));
            }
            None => {
                return Err(ApiError::BadRequest(format!(
                    "provenance refused: subject {name:?} is not an artifact of job {id} (upload it first)"
                )));
            }
        }
    }
    state
        .store
        .put_provenance(id, t.attempt_id, runner_id, text.to_owned())
        .await?;
    tracing::info!(job_id = id, runner_id, "provenance stored");
    Ok((
        StatusCode::CREATED,
        Json(ProvenanceStored {
            runner_id,
            keyid: provenance::key_id(&key),
            subjects: statement.subject.len(),
        }),
    ))
}

/// `GET /api/v1/jobs/{id}/provenance` (admin): the envelope as uploaded,
/// with the signing runner in `x-pinfold-runner-id`.
pub(super) async fn download(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Response> {
    let (runner_id, envelope) = state.store.provenance(id).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "job {id} has no provenance (no artifacts, not finished, or run by an agent without a key)"
        ))
    })?;
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                HeaderName::from_static("x-pinfold-runner-id"),
                HeaderValue::from(runner_id),
            ),
        ],
        envelope,
    )
        .into_response())
}
