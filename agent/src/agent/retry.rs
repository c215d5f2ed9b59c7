//! Waiting between retries of requests the coordinator did not answer:
//! a jittered exponential [`Backoff`], [`retry`] until a deadline, and the
//! drain's [`Cutoff`], past which nothing is retried any more.

use std::sync::{Arc, OnceLock};
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

    /// Sleeps the next wait, or until `cutoff` passes if that is sooner.
    pub(super) fn sleep(&mut self, cutoff: &Cutoff) {
        cutoff.sleep(self.step());
    }
}

/// The drain deadline: unset while the agent runs, set once when SIGTERM
/// or SIGINT arrives (then + `--drain`). Past it, running jobs are
/// cancelled and no request is retried: what the coordinator does not take
/// at the first try is dropped, so the agent exits whatever the network does.
#[derive(Clone, Default)]
pub(super) struct Cutoff(Arc<OnceLock<Instant>>);

impl Cutoff {
    /// Sets the deadline (the first call wins).
    pub(super) fn set(&self, at: Instant) {
        let _ = self.0.set(at);
    }

    /// The deadline, once set.
    pub(super) fn at(&self) -> Option<Instant> {
        self.0.get().copied()
    }

    /// True once the deadline is set and past.
    pub(super) fn passed(&self) -> bool {
        self.at().is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps `d`, or until the deadline passes if that is sooner (it may
    /// be set meanwhile: looked at every 50 ms).
    pub(super) fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= until || self.passed() {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }
}

/// Calls `f` until it succeeds, the server answers with an error that is
/// not [`ClientError::retryable`], `patience` runs out or `cutoff` passes
/// (no answer, or a 502-504 from a coordinator whose database restarts or
/// a load balancer whose backend died, is retried with backoff; past the
/// cutoff `f` is called once, not retried).
pub(super) fn retry<T>(
    patience: Duration,
    cutoff: &Cutoff,
    mut f: impl FnMut() -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let start = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match f() {
            Err(e) if e.retryable() && start.elapsed() < patience && !cutoff.passed() => {
                tracing::debug!(%e, "retrying");
                backoff.sleep(cutoff);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Result<(), ClientError> {
        Err(ClientError::Io(std::io::Error::other("connection refused")))
    }

    #[test]
    fn past_the_cutoff_a_request_is_tried_once_and_not_retried() {
        let cutoff = Cutoff::default();
        cutoff.set(Instant::now());
        let mut calls = 0;
        let t0 = Instant::now();
        assert!(
            retry(Duration::from_secs(600), &cutoff, || {
                calls += 1;
                refused()
            })
            .is_err()
        );
        assert_eq!(calls, 1);
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_cutoff_set_while_retrying_ends_the_retries_at_the_deadline() {
        let cutoff = Cutoff::default();
        let later = cutoff.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            later.set(Instant::now() + Duration::from_millis(200));
        });
        let t0 = Instant::now();
        assert!(retry(Duration::from_secs(600), &cutoff, refused).is_err());
        setter.join().unwrap();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn without_a_cutoff_transport_errors_are_retried_for_the_patience() {
        let mut calls = 0;
        let out = retry(Duration::from_millis(400), &Cutoff::default(), || {
            calls += 1;
            refused()
        });
        assert!(out.is_err());
        assert!(calls > 1, "{calls}");
    }
}
