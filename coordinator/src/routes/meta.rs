//! Server-wide: `/healthz`, `/metrics`, and the dashboard's viewer tokens.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use pinfold_api::wire::JobState;

use super::Json;
use crate::AppState;
use crate::auth::Admin;
use crate::error::Result;
use crate::token::{hash_token, new_token};
use crate::ui::session::{Role, VIEWER_KEY_PREFIX, VIEWER_PREFIX, viewer_key};

/// `POST /api/v1/viewer-tokens` (admin): mints a read-only token for the
/// web pages. Only its hash is stored; the token is shown once.
pub(super) async fn viewer_token(
    _: Admin,
    State(state): State<AppState>,
) -> Result<(axum::http::StatusCode, Json<pinfold_api::wire::ViewerToken>)> {
    let token = new_token(VIEWER_PREFIX);
    state
        .store
        .set_meta(
            &viewer_key(&hash_token(&token)),
            &pinfold_api::now_ms().to_string(),
        )
        .await?;
    tracing::info!("viewer token minted");
    Ok((
        axum::http::StatusCode::CREATED,
        Json(pinfold_api::wire::ViewerToken { token }),
    ))
}

/// Liveness and store reachability.
pub(super) async fn healthz(State(state): State<AppState>) -> Result<&'static str> {
    state.store.get_meta("admin_token_sha256").await?;
    Ok("ok\n")
}

/// `DELETE /api/v1/viewer-tokens` (admin): revokes every viewer token and
/// signs out every viewer now (there is no list of them to pick from: only
/// hashes are kept).
pub(super) async fn revoke_viewer_tokens(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<pinfold_api::wire::ViewerTokensRevoked>> {
    let revoked = state.store.delete_meta_prefix(VIEWER_KEY_PREFIX).await?;
    let sessions = state.sessions.end_role(Role::Viewer) as u64;
    tracing::info!(revoked, sessions, "viewer tokens revoked");
    Ok(Json(pinfold_api::wire::ViewerTokensRevoked {
        revoked,
        sessions,
    }))
}

/// Name, type and help of each metric, in the order `/metrics` writes them.
const METRICS: [(&str, &str, &str); 6] = [
    ("pinfold_queue_depth", "gauge", "Jobs waiting for a runner."),
    ("pinfold_leases_active", "gauge", "Jobs leased to a runner."),
    (
        "pinfold_leases_expired_total",
        "counter",
        "Leases that ran out without a heartbeat (runner lost).",
    ),
    (
        "pinfold_jobs_finished_total",
        "counter",
        "Finished jobs by outcome.",
    ),
    (
        "pinfold_log_bytes_total",
        "counter",
        "Log bytes stored (after masking and truncation).",
    ),
    (
        "pinfold_runners",
        "gauge",
        "Registered runners that are not revoked.",
    ),
];

/// Prometheus text exposition. Every figure is read from the store at
/// scrape time, so they are exact across restarts and across several
/// coordinators sharing one database; a metrics registry crate would only
/// add a copy of numbers the store already holds.
pub(super) async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let c = state.store.counts().await?;
    let count = |s: JobState| {
        c.jobs
            .iter()
            .find(|(st, _)| *st == s)
            .map_or(0, |(_, n)| *n)
    };
    let one = |v: u64| vec![(String::new(), v)];
    let outcomes: Vec<(String, u64)> = [
        JobState::Succeeded,
        JobState::Failed,
        JobState::TimedOut,
        JobState::Cancelled,
        JobState::Error,
    ]
    .into_iter()
    .map(|s| (format!("{{outcome=\"{}\"}}", s.as_str()), count(s)))
    .collect();
    // In the order of METRICS.
    let values = [
        one(count(JobState::Queued)),
        one(c.leases),
        one(c.leases_expired),
        outcomes,
        one(c.log_bytes),
        one(c.runners),
    ];
    let mut out = String::new();
    for ((name, kind, help), lines) in METRICS.iter().zip(values) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    }
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
