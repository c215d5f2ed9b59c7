//! A job's signed provenance: the runner uploads a DSSE envelope beside the
//! artifacts; the server accepts it only when it verifies with the key the
//! runner registered and attests exactly artifacts the job uploaded.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pinfold_api::provenance::{self, Envelope, ProvenanceError};
use pinfold_api::wire::{ArtifactInfo, ProvenanceStored};

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
    check_subjects(id, &statement, &state.store.artifacts(id).await?)
        .map_err(ApiError::BadRequest)?;
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

/// Every subject must be an artifact the job stored, with that digest: the
/// attestation speaks only of what the server holds. The upload refuses
/// provenance that fails this, and the pages show it as not verified.
fn check_subjects(
    id: u64,
    statement: &provenance::Statement,
    artifacts: &[ArtifactInfo],
) -> std::result::Result<(), String> {
    let by_name: std::collections::HashMap<&str, &ArtifactInfo> =
        artifacts.iter().map(|a| (a.name.as_str(), a)).collect();
    for s in &statement.subject {
        let name = s.name.as_deref().unwrap_or_default();
        let want = s.digest.get("sha256").map(String::as_str).unwrap_or("");
        match by_name.get(name) {
            Some(a) if a.sha256 == want => {}
            Some(a) => {
                return Err(format!(
                    "provenance refused: subject {name:?} has sha256 {want}, the stored artifact {}",
                    a.sha256
                ));
            }
            None => {
                return Err(format!(
                    "provenance refused: subject {name:?} is not an artifact of job {id} (upload it first)"
                ));
            }
        }
    }
    Ok(())
}

/// A stored provenance, checked again as on upload (signature by the
/// signing runner's registered key, subjects against the stored
/// artifacts), and for the pages also: the runner is not revoked, and every
/// artifact the job stored is attested.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    /// The runner that signed it.
    pub runner_id: u64,
    /// The key id of that runner's registered key, when it has one.
    pub keyid: Option<String>,
    /// The subjects it attests, when it verifies; why not otherwise.
    pub verdict: std::result::Result<usize, String>,
}

/// The job's provenance, checked now; `None` when it has none.
pub(crate) async fn check_stored(state: &AppState, id: u64) -> Result<Option<Checked>> {
    let Some((runner_id, text)) = state.store.provenance(id).await? else {
        return Ok(None);
    };
    let key = match state.store.runner_key(runner_id).await? {
        Some(pem) => provenance::parse_public_key(&pem).ok(),
        None => None,
    };
    let revoked = state
        .store
        .list_runners()
        .await?
        .iter()
        .any(|r| r.id == runner_id && r.revoked);
    let artifacts = state.store.artifacts(id).await?;
    let verdict = match &key {
        None => Err(format!("runner {runner_id} has no usable registered key")),
        Some(_) if revoked => Err(format!("runner {runner_id} has been revoked")),
        Some(key) => serde_json::from_str::<Envelope>(&text)
            .map_err(|e| format!("not a DSSE envelope: {e}"))
            .and_then(|env| provenance::verify(&env, key).map_err(|e| e.to_string()))
            .and_then(|st| check_subjects(id, &st, &artifacts).map(|()| st))
            .and_then(|st| {
                let attested: std::collections::HashSet<&str> = st
                    .subject
                    .iter()
                    .filter_map(|s| s.name.as_deref())
                    .collect();
                match artifacts
                    .iter()
                    .find(|a| !attested.contains(a.name.as_str()))
                {
                    Some(a) => Err(format!("artifact {:?} is not attested", a.name)),
                    None if artifacts.is_empty() => Err("it attests no artifact".into()),
                    None => Ok(artifacts.len()),
                }
            }),
    };
    Ok(Some(Checked {
        runner_id,
        keyid: key.as_ref().map(provenance::key_id),
        verdict,
    }))
}
