//! The routes, one module per resource.

pub(crate) mod artifacts;
pub(crate) mod jobs;
pub(crate) mod logs;
mod meta;
pub(crate) mod provenance;
pub(crate) mod runners;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::AppState;
use crate::error::ApiError;

/// `axum::Json` whose rejections are [`ApiError`]s (JSON bodies).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

pub(crate) fn router(state: AppState) -> Router {
    let json_limit = state.config.max_json_bytes;
    // Log chunks are read whole, up to their own limit; uploads stream and
    // count their bytes themselves (BlobStore::put).
    let log_limit = state.config.max_log_chunk;
    let api = Router::new()
        .route("/runners", post(runners::register).get(runners::list))
        .route("/runners/{id}", axum::routing::delete(runners::revoke))
        .route(
            "/viewer-tokens",
            post(meta::viewer_token).delete(meta::revoke_viewer_tokens),
        )
        .route("/runners/{id}/key", get(runners::key))
        .route("/runners/{id}/labels", post(runners::trust))
        .route("/runner/lease", post(runners::lease))
        .route("/runner/key", put(runners::set_key))
        .route("/runner/facts", put(runners::set_facts))
        .route("/sources/{sha256}", put(artifacts::put_source))
        .route("/jobs", post(jobs::submit).get(jobs::list))
        .route("/jobs/{id}", get(jobs::status))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/heartbeat", post(jobs::heartbeat))
        .route("/jobs/{id}/finish", post(jobs::finish))
        .route("/jobs/{id}/source", get(artifacts::get_source))
        .route(
            "/jobs/{id}/log",
            get(logs::read)
                .post(logs::append)
                .layer(DefaultBodyLimit::max(log_limit)),
        )
        .route("/jobs/{id}/artifacts", get(artifacts::list))
        .route(
            "/jobs/{id}/provenance",
            get(provenance::download).put(provenance::upload),
        )
        .route(
            "/jobs/{id}/artifacts/{*name}",
            get(artifacts::download).put(artifacts::upload),
        );
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/metrics", get(meta::metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_announced_oversize,
        ))
        .with_state(state)
}

/// Refuses a body whose Content-Length is over the endpoint's limit before
/// any of it is read. The size limits inside the handlers still count the
/// bytes; this only makes the refusal reach the client: hyper sends no
/// `100 Continue`, so a client that asked for one (the pinfold client does
/// for large bodies, curl does past 1 MiB) gets the 413 instead of a broken
/// pipe halfway through its upload.
async fn refuse_announced_oversize(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = announced {
        let path = req.uri().path();
        let c = &state.config;
        let (limit, what) = if path.starts_with("/api/v1/sources/") {
            (c.max_source_bytes, "source tar")
        } else if path.starts_with("/api/v1/jobs/") && path.contains("/artifacts/") {
            (c.max_artifact_bytes, "artifact")
        } else if path.starts_with("/api/v1/jobs/") && path.ends_with("/log") {
            (c.max_log_chunk as u64, "log chunk (send smaller chunks)")
        } else {
            (c.max_json_bytes as u64, "request body")
        };
        if len > limit {
            return ApiError::TooLarge(format!(
                "{what} of {len} bytes is over the limit of {limit} bytes"
            ))
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint (see docs/protocol.md)".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::Rejected(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint".into(),
    )
}
