//! A job's heartbeat: renews the lease every ttl/3 while the job runs,
//! turns a cancellation in the answer into the job's stop flag, and marks
//! the lease lost when the server refuses it.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use pinfold_client::Client;

use super::retry::Backoff;
use crate::runner::stop;

/// Beats for job `id` until `stop_hb` is set or the lease is lost.
pub(super) fn heartbeat(
    jc: &Client,
    id: u64,
    ttl: Duration,
    flag: &AtomicU8,
    stop_hb: &AtomicBool,
) {
    let mut every = ttl / 3;
    let mut backoff = Backoff::new();
    let mut next = Instant::now() + every;
    while !stop_hb.load(Ordering::SeqCst) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match jc.heartbeat(id) {
            Ok(r) => {
                if r.cancel {
                    let _ = flag.compare_exchange(
                        stop::NONE,
                        stop::CANCELLED,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                every = Duration::from_secs(r.lease_ttl_secs.max(1)) / 3;
                next = Instant::now() + every;
                backoff = Backoff::new();
            }
            Err(e) if matches!(e.status(), Some(403 | 409 | 404)) => {
                tracing::warn!(%e, job = id, "lease lost");
                flag.store(stop::LEASE_LOST, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(%e, job = id, "heartbeat failed; retrying");
                next = Instant::now() + backoff.step().min(every);
            }
        }
    }
}
