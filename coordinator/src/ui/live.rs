//! A running job's log, live, over a WebSocket: `GET
//! /ui/jobs/{id}/log/live?from=OFFSET:LINE`.
//!
//! A WebSocket, not server-sent events: over HTTP/1.1 a browser keeps at
//! most six connections to one server, and each EventSource holds one for
//! as long as it follows, so a seventh tab of the dashboard would hang
//! (MDN documents the limit for EventSource). WebSockets are not counted
//! against that pool.
//!
//! Each message is JSON: `{"at": "OFFSET:LINE", "lines": [Line...]}` with
//! complete lines only (rendered as on the page, [`super::log`]), `at` just
//! past them, so the page reconnects from its last `at` after a drop, with no
//! gap and no repeat; `{"end": "STATE"}` when the job has ended and every
//! line was sent, then the server closes. The handshake must come from this
//! server's own pages (its `Origin` is the `Host` it was sent to): the
//! session cookie is `SameSite=Strict`, and this check holds as well for a
//! browser that does not send it.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::IntoResponse;
use pinfold_api::wire::JobState;
use serde::Deserialize;

use super::job::CHUNK;
use super::log::render;
use super::session::Signed;
use super::{Page, UiError};
use crate::AppState;
use crate::error::ApiError;

/// How often an idle follow re-reads the log and pings the browser.
const IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
pub(super) struct LiveQuery {
    /// `OFFSET:LINE` to start from (the page's `data-next`).
    from: Option<String>,
}

/// Whether a handshake's `Origin` names the host it was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let origin = headers.get(ORIGIN).and_then(|o| o.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// `GET /ui/jobs/{id}/log/live` (WebSocket).
pub(super) async fn follow(
    _: Signed,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    Query(q): Query<LiveQuery>,
    ws: WebSocketUpgrade,
) -> Page {
    if !same_origin(&headers) {
        return Err(UiError::CrossOrigin);
    }
    state.store.job(id).await?;
    let (offset, line) = match q.from.as_deref() {
        None => (0, 1),
        Some(f) => f
            .split_once(':')
            .and_then(|(o, n)| Some((o.parse().ok()?, n.parse().ok()?)))
            .ok_or_else(|| ApiError::BadRequest("from must be OFFSET:LINE".into()))?,
    };
    Ok(ws
        .on_upgrade(move |socket| stream(socket, state, id, offset, line))
        .into_response())
}

async fn stream(mut socket: WebSocket, state: AppState, id: u64, mut offset: u64, mut line: u64) {
    let mut log = state.events.log.subscribe();
    let mut shutdown = state.events.shutdown.subscribe();
    loop {
        log.borrow_and_update();
        let r = match state.store.read_log(id, offset, CHUNK).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job_id = id, %e, "live log: read failed");
                return;
            }
        };
        let complete = r.complete && offset + r.data.len() as u64 >= r.len;
        let out = render(&r.data, offset, line, complete);
        if !out.lines.is_empty() {
            offset += out.used as u64;
            line = out.next_line;
            let msg = serde_json::json!({ "at": format!("{offset}:{line}"), "lines": out.lines });
            if socket
                .send(Message::Text(msg.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        if complete {
            let st = state.store.job(id).await.map(|j| j.info.state);
            let msg = serde_json::json!({ "end": st.map_or("ended", JobState::as_str) });
            let _ = socket.send(Message::Text(msg.to_string().into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        if *shutdown.borrow() {
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        tokio::select! {
            _ = log.changed() => {}
            _ = shutdown.changed() => {}
            // The page sends nothing: anything but a pong is the end.
            m = socket.recv() => match m {
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => {}
                _ => return,
            },
            _ = tokio::time::sleep(IDLE) => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_servers_own_pages_may_follow() {
        let h = |host: &str, origin: Option<&str>| {
            let mut m = HeaderMap::new();
            m.insert(HOST, host.parse().unwrap());
            if let Some(o) = origin {
                m.insert(ORIGIN, o.parse().unwrap());
            }
            same_origin(&m)
        };
        assert!(h("127.0.0.1:8080", Some("http://127.0.0.1:8080")));
        assert!(h("ci.example:443", Some("https://ci.example:443")));
        assert!(!h("127.0.0.1:8080", Some("http://evil.example")));
        assert!(!h(
            "127.0.0.1:8080",
            Some("http://127.0.0.1:8080.evil.example")
        ));
        assert!(!h("127.0.0.1:8080", None));
    }
}
