//! Runner registration, listing, revocation, and the lease long-poll.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pinfold_api::JobSpec;
use pinfold_api::wire::{
    Lease, LeaseRequest, RegisterRequest, RegisterResponse, RunnerFacts, RunnerInfo, RunnerKey,
    RunnerKeyRequest, TrustRequest, TrustedLabels,
};

use super::Json;
use crate::AppState;
use crate::auth::{Admin, Registration, Runner};
use crate::error::{ApiError, Result};
use crate::token::{JOB_PREFIX, RUNNER_PREFIX, hash_token, new_token};
use pinfold_api::now_ms;

fn check_label(l: &str) -> Result<()> {
    let ok = !l.is_empty()
        && l.len() <= 64
        && l.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'='));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "bad label {l:?}: 1-64 characters of letters, digits and - _ . : ="
        )))
    }
}

fn check_key(pem: &str) -> Result<String> {
    pinfold_api::provenance::parse_public_key(pem)
        .map(|k| pinfold_api::provenance::key_id(&k))
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "public_key: {e}; send the SPKI PEM of an Ed25519 key"
            ))
        })
}

/// `PUT /api/v1/runner/key` (runner token): sets the runner's public key
/// when it registered without one; the same key again is a no-op, another
/// one is refused (409).
pub(super) async fn set_key(
    runner: Runner,
    State(state): State<AppState>,
    Json(req): Json<RunnerKeyRequest>,
) -> Result<Json<RunnerKey>> {
    let keyid = check_key(&req.public_key)?;
    let have = state
        .store
        .set_runner_key(runner.id, &req.public_key)
        .await?;
    let have_id = check_key(&have)?;
    if have_id != keyid {
        return Err(ApiError::Conflict(format!(
            "runner {} already has key {}: a runner's key cannot change; register a new runner for a new key",
            runner.id,
            &have_id[..16]
        )));
    }
    Ok(Json(RunnerKey {
        runner_id: runner.id,
        public_key: have,
        keyid,
    }))
}

/// Checks a label list (shared with job submission).
pub(super) fn check_labels(labels: &[String]) -> Result<()> {
    if labels.len() > 32 {
        return Err(ApiError::BadRequest("at most 32 labels".into()));
    }
    labels.iter().try_for_each(|l| check_label(l))
}

/// `POST /api/v1/runners`: registration token → runner token.
pub(super) async fn register(
    _: Registration,
    State(state): State<AppState>,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>)> {
    if req.name.trim().is_empty() || req.name.len() > 128 {
        return Err(ApiError::BadRequest("runner name: 1-128 characters".into()));
    }
    check_labels(&req.labels)?;
    if let Some(pem) = &req.public_key {
        check_key(pem)?;
    }
    let token = new_token(RUNNER_PREFIX);
    let runner_id = state
        .store
        .create_runner(&req.name, &req.labels, &hash_token(&token), now_ms())
        .await?;
    if let Some(pem) = &req.public_key {
        state.store.set_runner_key(runner_id, pem).await?;
    }
    tracing::info!(runner_id, name = %req.name, labels = ?req.labels, "runner registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse { runner_id, token }),
    ))
}

/// `GET /api/v1/runners` (admin).
pub(super) async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<Vec<RunnerInfo>>> {
    Ok(Json(state.store.list_runners().await?))
}

/// `DELETE /api/v1/runners/{id}` (admin).
pub(super) async fn revoke(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<StatusCode> {
    state.store.revoke_runner(id).await?;
    tracing::info!(runner_id = id, "runner revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/runners/{id}/key` (admin): the runner's registered public key.
pub(super) async fn key(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<RunnerKey>> {
    let pem = state.store.runner_key(id).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "runner {id} registered no public key (unknown runner, or an agent older than provenance)"
        ))
    })?;
    let keyid = pinfold_api::provenance::parse_public_key(&pem)
        .map(|k| pinfold_api::provenance::key_id(&k))
        .map_err(|e| ApiError::Store(crate::store::StoreError::Corrupt(e.to_string())))?;
    Ok(Json(RunnerKey {
        runner_id: id,
        public_key: pem,
        keyid,
    }))
}

/// `POST /api/v1/runner/lease`: the oldest queued job this runner can take,
/// waiting up to `wait_secs` for one; 204 when none came.
pub(super) async fn lease(
    runner: Runner,
    State(state): State<AppState>,
    Json(req): Json<LeaseRequest>,
) -> Result<Response> {
    let wait = Duration::from_secs(req.wait_secs).min(state.config.max_long_poll);
    let deadline = tokio::time::Instant::now() + wait;
    let mut queue = state.events.queue.subscribe();
    let mut shutdown = state.events.shutdown.subscribe();
    let ttl = state.config.lease_ttl;
    loop {
        queue.borrow_and_update();
        let token = new_token(JOB_PREFIX);
        let now = now_ms();
        let grant = state
            .store
            .lease(
                runner.id,
                &runner.labels,
                &hash_token(&token),
                now,
                now + ttl.as_millis() as u64,
            )
            .await?;
        if let Some(g) = grant {
            // Other leases may have passed over rows this one held until
            // it committed (a shared database's queue rows, verify runs it
            // refused): they look again.
            state.events.queue_changed();
            let spec: JobSpec = serde_json::from_str(&g.job.spec_json)
                .map_err(|e| ApiError::Store(crate::store::StoreError::Corrupt(e.to_string())))?;
            // Only secrets scoped to this runner's id or to a label the
            // admin trusts it with; its own labels unlock nothing.
            let trusted = if g.job.secrets.is_empty() {
                Vec::new()
            } else {
                state
                    .store
                    .trusted_labels(runner.id)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(%e, runner_id = runner.id, "trusted labels unreadable: no secrets");
                        Vec::new()
                    })
            };
            let secrets = g
                .job
                .secrets
                .iter()
                .filter(|n| state.config.secret_may_go(n, runner.id, &trusted))
                .filter_map(|n| state.secrets.get(n).map(|v| (n.clone(), v.clone())))
                .collect();
            tracing::info!(
                job_id = g.job.info.id,
                attempt = g.attempt,
                runner_id = runner.id,
                "job leased"
            );
            let lease = Lease {
                job_id: g.job.info.id,
                attempt_id: g.attempt_id,
                attempt: g.attempt,
                lease_ttl_secs: ttl.as_secs().max(1),
                job_token: token,
                spec,
                source_sha256: g.job.info.source_sha256,
                secrets,
                log_offset: g.log_offset,
                spec_yaml: g.spec_yaml,
            };
            return Ok(Json(lease).into_response());
        }
        if *shutdown.borrow() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            changed = queue.changed() => { if changed.is_err() { break; } }
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/runners/{id}/labels` (admin): adds and removes the labels
/// the admin trusts the runner with; answers the set after.
pub(super) async fn trust(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Json(req): Json<TrustRequest>,
) -> Result<Json<TrustedLabels>> {
    check_labels(&req.add)?;
    check_labels(&req.remove)?;
    let trusted_labels = state
        .store
        .set_trusted_labels(id, req.add, req.remove)
        .await?;
    tracing::info!(runner_id = id, labels = ?trusted_labels, "trusted labels set");
    Ok(Json(TrustedLabels {
        runner_id: id,
        trusted_labels,
    }))
}

/// The meta key a runner's facts are kept under.
pub(crate) fn facts_key(runner_id: u64) -> String {
    format!("runner_facts:{runner_id}")
}

/// `PUT /api/v1/runner/facts` (runner token): what the runner's host
/// enforces, as its agent found at start; replaces what it said before.
pub(super) async fn set_facts(
    runner: Runner,
    State(state): State<AppState>,
    Json(facts): Json<RunnerFacts>,
) -> Result<StatusCode> {
    let short = |s: &str, max: usize| s.chars().count() <= max;
    if !short(&facts.version, 200)
        || !short(&facts.kernel, 200)
        || !short(&facts.limits, 500)
        || facts.policies.len() > 64
        || !facts.policies.iter().all(|p| short(p, 100))
    {
        return Err(ApiError::BadRequest(
            "runner facts too long: version and kernel up to 200 characters, limits 500, \
             at most 64 policies of 100"
                .into(),
        ));
    }
    let text = serde_json::to_string(&facts).expect("facts serialize");
    state.store.set_meta(&facts_key(runner.id), &text).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A runner's facts, if its agent sent them.
pub(crate) async fn facts(state: &AppState, runner_id: u64) -> Result<Option<RunnerFacts>> {
    Ok(state
        .store
        .get_meta(&facts_key(runner_id))
        .await?
        .and_then(|t| serde_json::from_str(&t).ok()))
}
