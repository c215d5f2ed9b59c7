//! Job logs: the runner appends by byte offset; admins read or follow.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pinfold_api::wire::LogAppendResponse;
use serde::Deserialize;

use super::Json;
use crate::AppState;
use crate::auth::{Admin, JobToken};
use crate::error::{ApiError, Result};
use crate::store::StoreError;

/// Header: the offset just past the returned bytes.
pub const NEXT_OFFSET: HeaderName = HeaderName::from_static("x-pinfold-log-offset");
/// Header: "true" when the job has ended and the returned bytes reach the end.
pub const COMPLETE: HeaderName = HeaderName::from_static("x-pinfold-log-complete");

const READ_MAX: usize = 4 << 20;

/// How long an append past the log's end waits for the appends before it.
const GAP_WAIT: Duration = Duration::from_secs(2);
/// How many chunks past the end an append may be and still wait.
const GAP_CHUNKS: u64 = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppendQuery {
    offset: u64,
}

/// `POST /api/v1/jobs/{id}/log?offset=N`: raw bytes that start at byte N of
/// what the runner has produced.
pub(super) async fn append(
    token: JobToken,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    q: std::result::Result<Query<AppendQuery>, QueryRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<LogAppendResponse>> {
    let t = token.for_job(id)?;
    let Query(q) = q?;
    let data = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "log chunk over the limit of {} bytes: send smaller chunks",
                state.config.max_log_chunk
            ))
        } else {
            r.into()
        }
    })?;
    let secrets: Vec<Vec<u8>> = t
        .secrets
        .iter()
        .filter_map(|n| state.secrets.get(n))
        .map(|v| v.as_bytes().to_vec())
        .collect();
    // Agents pipeline appends over several connections, so a chunk can
    // arrive before the ones ahead of it: a chunk at most a few chunks past
    // the end waits (a while) for the log to reach its offset; a gap that
    // stays, or a farther one, is refused with the offset to resume from.
    let deadline = tokio::time::Instant::now() + GAP_WAIT;
    let near = GAP_CHUNKS * state.config.max_log_chunk as u64;
    let mut grown = state.events.log.subscribe();
    let out = loop {
        grown.borrow_and_update();
        let res = state
            .store
            .append_log(
                id,
                t.attempt_id,
                q.offset,
                data.clone(),
                secrets.clone(),
                state.config.max_log_bytes,
            )
            .await;
        match res {
            Err(StoreError::LogGap { got, expected })
                if got - expected <= near && tokio::time::Instant::now() < deadline =>
            {
                tokio::select! {
                    _ = grown.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            other => break other?,
        }
    };
    state.events.log_changed();
    Ok(Json(LogAppendResponse {
        offset: out.offset,
        truncated: out.truncated,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    follow: bool,
}

/// `GET /api/v1/jobs/{id}/log?offset=N[&follow=true]`: the stored log from
/// byte N. Without follow, up to 4 MiB with [`NEXT_OFFSET`] and [`COMPLETE`]
/// headers. With follow, a chunked stream that delivers new bytes as they
/// arrive and ends when the job has ended and everything was sent.
pub(super) async fn read(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    q: std::result::Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(q) = q?;
    let first = state.store.read_log(id, q.offset, READ_MAX).await?;
    let octets = [(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    )];
    if !q.follow {
        let next = q.offset + first.data.len() as u64;
        let complete = first.complete && next >= first.len;
        let headers = [
            (NEXT_OFFSET, HeaderValue::from(next)),
            (
                COMPLETE,
                HeaderValue::from_static(if complete { "true" } else { "false" }),
            ),
        ];
        return Ok((octets, headers, first.data).into_response());
    }
    let rest = stream_from(
        state,
        id,
        q.offset + first.data.len() as u64,
        true,
        (!first.data.is_empty()).then_some(first.data),
    );
    Ok((octets, Body::from_stream(rest)).into_response())
}

/// The stored log from `offset` as a stream of chunks (`first`, already
/// read, goes out first). With `follow`, it waits for new bytes and ends
/// when the job has ended and everything was sent (or the server stops);
/// without, it ends at the log's current end.
pub(crate) fn stream_from(
    state: AppState,
    id: u64,
    offset: u64,
    follow: bool,
    first: Option<Vec<u8>>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    struct Follow {
        state: AppState,
        id: u64,
        offset: u64,
        follow: bool,
        first: Option<Vec<u8>>,
        log: tokio::sync::watch::Receiver<u64>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    }
    let f = Follow {
        log: state.events.log.subscribe(),
        shutdown: state.events.shutdown.subscribe(),
        offset,
        follow,
        first,
        state,
        id,
    };
    futures_util::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        if let Some(data) = f.first.take() {
            return Some((Ok::<_, std::io::Error>(Bytes::from(data)), Some(f)));
        }
        loop {
            f.log.borrow_and_update();
            let read = match f.state.store.read_log(f.id, f.offset, READ_MAX).await {
                Ok(r) => r,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
            };
            if !read.data.is_empty() {
                f.offset += read.data.len() as u64;
                return Some((Ok(Bytes::from(read.data)), Some(f)));
            }
            if !f.follow || read.complete || *f.shutdown.borrow() {
                return None;
            }
            // Re-check now and then even without a wake-up (another
            // coordinator process may share the database one day).
            tokio::select! {
                _ = f.log.changed() => {}
                _ = f.shutdown.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    })
}
