//! Waiting between retries of requests the coordinator did not answer:
//! a jittered exponential [`Backoff`] and [`retry`] until a deadline.

use std::time::{Duration, Instant};

use pinfold_client::ClientError;

/// Exponential backoff between retries of a request the server did not
/// answer: 100 ms doubling to 5 s, each wait jittered down by up to a half
/// so agents cut off together do not come back in step.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(super) fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The next wait (and doubles the one after).
    pub(super) fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        // Jitter from the clock's nanoseconds: no need for a random source.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0);
        d - d.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }

    pub(super) fn sleep(&mut self) {
        std::thread::sleep(self.step());
    }
}

/// Calls `f` until it succeeds, the server answers with an error, or
/// `deadline` passes (transport errors are retried with backoff).
pub(super) fn retry<T>(
    deadline: Duration,
    mut f: impl FnMut() -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let start = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match f() {
            Err(e @ (ClientError::Transport(_) | ClientError::Io(_)))
                if start.elapsed() < deadline =>
            {
                tracing::debug!(%e, "retrying");
                backoff.sleep();
            }
            other => return other,
        }
    }
}
