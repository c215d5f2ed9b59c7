//! Wake-ups between coordinators that share a PostgreSQL database: a job
//! submitted through one wakes the runners long-polling another, and a log
//! appended through one wakes the followers of another, at once, through
//! PostgreSQL's `LISTEN`/`NOTIFY` rather than by polling the tables.
//!
//! Each coordinator keeps one connection of its own for it. What its
//! handlers signal ([`Events::queue_changed`], [`Events::log_changed`]) it
//! sends as `NOTIFY pinfold_queue` / `pinfold_log` (a burst coalesced into
//! one of each); what arrives, its own included, wakes its local waiters
//! ([`Events::wake`]). The connection is remade, with backoff, whenever it
//! fails (a PostgreSQL restart); the waiters also wake then, so a wake-up
//! lost meanwhile costs one more look at the queue, never a stuck runner.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::Events;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A job became leasable.
    Queue,
    /// A log grew or a job ended.
    Log,
}

impl Kind {
    fn channel(self) -> &'static str {
        match self {
            Kind::Queue => "pinfold_queue",
            Kind::Log => "pinfold_log",
        }
    }
}

/// Starts the relay for `url` on the current runtime; returns what the
/// handlers' events are sent through.
/// The relay holds `events` weakly: `events` holds the sender, and the
/// relay ends when the coordinator's state (and so the sender) is dropped.
pub(crate) fn spawn(url: String, events: &Arc<Events>) -> mpsc::UnboundedSender<Kind> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Kind>();
    let events = Arc::downgrade(events);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let connected = Instant::now();
            match run(&url, &events, &mut rx).await {
                // The coordinator is stopping (every sender is gone).
                None => return,
                Some(why) => tracing::warn!(error = %why, "postgresql wake-up relay: reconnecting"),
            }
            // Whatever was missed: every waiter looks again.
            let Some(e) = events.upgrade() else { return };
            e.wake(Kind::Queue);
            e.wake(Kind::Log);
            drop(e);
            // A connection that lived a while starts the backoff afresh.
            if connected.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    tx
}

/// One connection's life: LISTEN, then relay both ways until it fails
/// (`Some`: why) or the coordinator stops (`None`).
async fn run(
    url: &str,
    events: &Weak<Events>,
    rx: &mut mpsc::UnboundedReceiver<Kind>,
) -> Option<String> {
    match relay(url, events, rx).await {
        Ok(true) => None,
        Ok(false) => Some("the connection ended".into()),
        Err(e) => Some(e.to_string()),
    }
}

/// [`run`]'s body: `Ok(true)` when the coordinator stops, `Ok(false)` when
/// the connection ended without an error.
async fn relay(
    url: &str,
    events: &Weak<Events>,
    rx: &mut mpsc::UnboundedReceiver<Kind>,
) -> Result<bool, crate::store::StoreError> {
    // The store's own settings (TLS, timeouts, keepalives): a half-open
    // connection would silently stop the wake-ups; keepalives find it, and
    // the relay connects again.
    let (config, tls) = crate::store::pg_settings(url)?;
    let (client, mut conn) = config.connect(tls).await?;
    let (note_tx, mut notes) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = note_tx.send(n.channel().to_string());
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client
        .batch_execute("LISTEN pinfold_queue; LISTEN pinfold_log")
        .await?;
    loop {
        tokio::select! {
            sent = rx.recv() => {
                let Some(first) = sent else { return Ok(true) };
                // A burst (a log's appends) is one NOTIFY of each kind.
                let (mut queue, mut log) = (first == Kind::Queue, first == Kind::Log);
                while let Ok(k) = rx.try_recv() {
                    queue |= k == Kind::Queue;
                    log |= k == Kind::Log;
                }
                for (on, kind) in [(queue, Kind::Queue), (log, Kind::Log)] {
                    if on {
                        client.execute("SELECT pg_notify($1, '')", &[&kind.channel()]).await?;
                    }
                }
            }
            note = notes.recv() => match note.as_deref() {
                Some(ch @ ("pinfold_queue" | "pinfold_log")) => {
                    let Some(e) = events.upgrade() else { return Ok(true) };
                    e.wake(if ch == "pinfold_queue" { Kind::Queue } else { Kind::Log });
                }
                Some(_) => {}
                // The connection ended: its error, if it had one.
                None => {
                    driver.await.unwrap_or(Ok(()))?;
                    return Ok(false);
                }
            },
        }
    }
}
