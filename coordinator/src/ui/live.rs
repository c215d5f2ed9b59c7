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

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::IntoResponse;
use futures_util::FutureExt;
use pinfold_api::wire::JobState;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout};

use super::job::{WINDOW, begins_line};
use super::log::{Line, Start, render};
use super::session::Signed;
use super::{Page, UiError};
use crate::AppState;
use crate::error::ApiError;

/// How often the browser is pinged, and re-read when the log is quiet.
const PING: Duration = Duration::from_secs(15);
/// A browser that answers no ping for this long is gone.
const GONE: Duration = Duration::from_secs(45);
/// How long one message may take to leave before the browser counts as gone.
const SEND: Duration = Duration::from_secs(10);
/// Lines in one message at most.
const MESSAGE_LINES: usize = 2000;
/// Live follows one sign-in may have open (the dashboard's bench opens 50
/// tabs in one browser).
const MAX_FOLLOWS: usize = 64;

#[derive(Debug, Deserialize)]
pub(super) struct LiveQuery {
    /// `OFFSET:LINE[:1|0]` to start from (the page's `data-next`; the last
    /// part says whether OFFSET starts a line).
    from: Option<String>,
}

/// One message of lines.
#[derive(Serialize)]
struct Batch<'a> {
    at: String,
    lines: &'a [Line],
}

/// Whether a handshake's `Origin` names the host it was sent to (or the
/// one a proxy in front says it was, `X-Forwarded-Host`).
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let origin = headers.get(ORIGIN).and_then(|o| o.to_str().ok());
    let Some((_, origin_host)) = origin.and_then(|o| o.split_once("://")) else {
        return false;
    };
    [HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .any(|host| origin_host.eq_ignore_ascii_case(host.trim()))
}

/// `GET /ui/jobs/{id}/log/live` (WebSocket).
pub(super) async fn follow(
    signed: Signed,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    Query(q): Query<LiveQuery>,
    ws: WebSocketUpgrade,
) -> Page {
    if !same_origin(&headers) {
        return Err(UiError::CrossOrigin);
    }
    let follows = signed.session.follows.clone();
    if follows.load(Ordering::SeqCst) >= MAX_FOLLOWS {
        return Err(UiError::TooManyFollows(MAX_FOLLOWS));
    }
    state.store.job(id).await?;
    let bad = || ApiError::BadRequest("from must be OFFSET:LINE[:1|0]".into());
    let from = match q.from.as_deref() {
        None => Start {
            offset: 0,
            line: 1,
            line_start: true,
        },
        Some(f) => {
            let mut parts = f.split(':');
            let offset: u64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            let line: u64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            let line_start = match parts.next() {
                Some("1") => true,
                Some("0") => false,
                None => begins_line(&state, id, offset).await?,
                Some(_) => return Err(bad().into()),
            };
            Start {
                offset,
                line,
                line_start,
            }
        }
    };
    Ok(ws
        .on_upgrade(move |socket| async move {
            follows.fetch_add(1, Ordering::SeqCst);
            stream(socket, state, id, from, signed.id).await;
            follows.fetch_sub(1, Ordering::SeqCst);
        })
        .into_response())
}

/// Whether what the browser sent is a keepalive (the page sends nothing
/// else: anything other than a pong or ping, or the socket's end, ends it).
fn keepalive(m: Option<Result<Message, axum::Error>>) -> bool {
    matches!(m, Some(Ok(Message::Pong(_) | Message::Ping(_))))
}

async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(timeout(SEND, socket.send(msg)).await, Ok(Ok(())))
}

async fn stream(mut socket: WebSocket, state: AppState, id: u64, mut from: Start, session: String) {
    let mut log = state.events.log.subscribe();
    let mut shutdown = state.events.shutdown.subscribe();
    let mut heard = Instant::now();
    let mut next_ping = Instant::now() + PING;
    loop {
        // What the browser sent meanwhile.
        while let Some(m) = socket.recv().now_or_never() {
            if !keepalive(m) {
                return;
            }
            heard = Instant::now();
        }
        // Signed out (or the session ran out), or gone quiet: stop.
        if state.sessions.get(&session).is_none() || heard.elapsed() > GONE {
            let _ = send(&mut socket, Message::Close(None)).await;
            return;
        }
        if Instant::now() >= next_ping {
            next_ping = Instant::now() + PING;
            if !send(&mut socket, Message::Ping(Vec::new().into())).await {
                return;
            }
        }
        log.borrow_and_update();
        let r = match state.store.read_log(id, from.offset, WINDOW as usize).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job_id = id, %e, "live log: read failed");
                return;
            }
        };
        let complete = r.complete && from.offset + r.data.len() as u64 >= r.len;
        let out = render(&r.data, from, complete, MESSAGE_LINES);
        if !out.lines.is_empty() {
            from = Start {
                offset: from.offset + out.used as u64,
                line: out.next_line,
                line_start: out.at_line_start,
            };
            let batch = Batch {
                at: format!(
                    "{}:{}:{}",
                    from.offset,
                    from.line,
                    u8::from(from.line_start)
                ),
                lines: &out.lines,
            };
            let text = serde_json::to_string(&batch).expect("lines serialize");
            if !send(&mut socket, Message::Text(text.into())).await {
                return;
            }
            continue;
        }
        if complete {
            let st = state.store.job(id).await.map(|j| j.info.state);
            let msg = serde_json::json!({ "end": st.map_or("ended", JobState::as_str) });
            let _ = send(&mut socket, Message::Text(msg.to_string().into())).await;
            let _ = send(&mut socket, Message::Close(None)).await;
            return;
        }
        if *shutdown.borrow() {
            let _ = send(&mut socket, Message::Close(None)).await;
            return;
        }
        tokio::select! {
            _ = log.changed() => {}
            _ = shutdown.changed() => {}
            m = socket.recv() => {
                if !keepalive(m) {
                    return;
                }
                heard = Instant::now();
            }
            _ = tokio::time::sleep_until(next_ping) => {}
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
        let mut proxied = HeaderMap::new();
        proxied.insert(HOST, "127.0.0.1:8080".parse().unwrap());
        proxied.insert("x-forwarded-host", "ci.example".parse().unwrap());
        proxied.insert(ORIGIN, "https://ci.example".parse().unwrap());
        assert!(same_origin(&proxied));
    }
}
