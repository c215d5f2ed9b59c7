//! Log shipping: tails the job's masked spool file and appends it to the
//! job's log at the coordinator by byte offset, from the lease's
//! `log_offset`, up to [`SHIP_WINDOW`] appends in flight. A transport
//! error resends the same chunk with backoff (the server skips bytes it
//! already has), a 409 resumes at the server's `expected_offset`, a 413
//! halves the chunk; memory stays bounded whatever the log size. Past the
//! drain's cutoff nothing is resent: what the server did not take is
//! dropped and shipping ends with the error.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use pinfold_api::wire::LogAppendResponse;
use pinfold_client::ClientError;

use super::retry::{Backoff, Cutoff};
use crate::log::SpoolReader;
use crate::runner::stop;

/// One append to the job's log: the bytes `data` at offset `at` (for the
/// agent, [`pinfold_client::Client::append_log`] with the job's token).
pub(super) type Append<'a> =
    dyn Fn(u64, &[u8]) -> Result<LogAppendResponse, ClientError> + Sync + 'a;

/// Appends in flight at once. The server orders them: an append that
/// arrives ahead of the log's end waits there for the ones before it.
const SHIP_WINDOW: usize = 3;
/// Largest append (the server takes up to 4 MiB; a 413 halves it). 1 MiB
/// keeps the agent's buffers (window + 1 of them) to 4 MiB whatever the
/// log; the server ingests 1 MiB appends at over 200 MB/s.
const SHIP_CHUNK: usize = 1 << 20;
/// Smallest append the halving goes down to.
const SHIP_CHUNK_MIN: usize = 64 << 10;
/// How long one append is retried through transport errors (server down).
const SHIP_PATIENCE: Duration = Duration::from_secs(600);

/// What became of one append.
enum Sent {
    /// Stored; the answer.
    Stored(LogAppendResponse),
    /// Refused: the log ends elsewhere; resume there.
    Gap(u64),
    /// Refused as too large for this server.
    TooLarge,
    /// Refused for good (stale lease, revoked, patience exhausted, the
    /// drain's cutoff passed).
    Failed(ClientError),
}

/// Appends one chunk at `at`, retrying transport errors with backoff until
/// `cutoff` passes (the server skips bytes it already has, so a resend
/// never duplicates).
fn send_chunk(
    append: &Append<'_>,
    id: u64,
    at: u64,
    data: &[u8],
    flag: &AtomicU8,
    stop_all: &AtomicBool,
    cutoff: &Cutoff,
) -> Sent {
    let first = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match append(at, data) {
            Ok(r) => return Sent::Stored(r),
            Err(ClientError::Http {
                expected_offset: Some(e),
                ..
            }) => return Sent::Gap(e),
            Err(e) if e.status() == Some(413) && data.len() > SHIP_CHUNK_MIN => {
                return Sent::TooLarge;
            }
            Err(e)
                if e.retryable()
                    && first.elapsed() < SHIP_PATIENCE
                    && flag.load(Ordering::SeqCst) != stop::LEASE_LOST
                    && !stop_all.load(Ordering::SeqCst)
                    && !cutoff.passed() =>
            {
                tracing::debug!(%e, job = id, at, "log append failed; resending");
                backoff.sleep(cutoff);
            }
            Err(e) => {
                if matches!(e.status(), Some(403 | 409)) {
                    flag.store(stop::LEASE_LOST, Ordering::SeqCst);
                }
                return Sent::Failed(e);
            }
        }
    }
}

/// Appends the spool to the job's log from `start` until the stream is
/// complete and shipped: chunks of up to [`SHIP_CHUNK`] read from the spool
/// (memory stays bounded), [`SHIP_WINDOW`] of them in flight so the network
/// and the server work while the next chunk is read. A refused chunk (409
/// with the server's `expected_offset`) lets the window drain, then shipping
/// resumes at the server's offset. Past `cutoff`, the first append the
/// server does not take ends shipping with its error.
pub(super) fn ship(
    append: &Append<'_>,
    id: u64,
    start: u64,
    r: &SpoolReader,
    flag: &AtomicU8,
    cutoff: &Cutoff,
) -> Result<u64, ClientError> {
    let stop_all = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Vec<u8>, Sent)>();
    std::thread::scope(|s| {
        let mut chunk = SHIP_CHUNK;
        let mut sent = 0u64; // spool bytes handed to appends
        let mut in_flight = 0usize;
        let mut free: Vec<Vec<u8>> = Vec::new();
        let mut truncated = false;
        let mut resync: Option<u64> = None;
        let mut failure: Option<ClientError> = None;
        loop {
            let lost = flag.load(Ordering::SeqCst) == stop::LEASE_LOST;
            let complete = r.done.load(Ordering::SeqCst);
            let written = r.written.load(Ordering::SeqCst);
            if truncated {
                // The server keeps no more; acknowledge the rest locally.
                sent = sent.max(written);
            }
            while failure.is_none() && resync.is_none() && !lost && in_flight < SHIP_WINDOW {
                // With appends in flight, only a full chunk goes next: a
                // step printing slower than the server takes it gets one
                // append at a time, each carrying what piled up meanwhile,
                // not a stream of small ones.
                let backlog = r.written.load(Ordering::SeqCst).saturating_sub(sent);
                if in_flight > 0 && backlog < chunk as u64 && !complete {
                    break;
                }
                let mut buf = free.pop().unwrap_or_default();
                buf.resize(chunk, 0);
                let n = match r.read_at(sent, &mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        failure = Some(e.into());
                        stop_all.store(true, Ordering::SeqCst);
                        break;
                    }
                };
                if n == 0 {
                    free.push(buf);
                    break;
                }
                buf.truncate(n);
                let at = start + sent;
                sent += n as u64;
                in_flight += 1;
                let (tx, stop_all) = (tx.clone(), &stop_all);
                s.spawn(move || {
                    let out = send_chunk(append, id, at, &buf, flag, stop_all, cutoff);
                    let _ = tx.send((at, buf, out));
                });
            }
            if in_flight == 0 {
                if let Some(e) = failure.take() {
                    return Err(e);
                }
                if lost {
                    return Ok(start + sent);
                }
                if let Some(at) = resync.take() {
                    sent = at.saturating_sub(start);
                    continue;
                }
                if complete && written <= sent {
                    return Ok(start + sent);
                }
            }
            let wait = Duration::from_millis(20);
            let answer = if in_flight > 0 {
                rx.recv_timeout(wait).ok()
            } else {
                std::thread::sleep(wait);
                None
            };
            let Some((at, buf, out)) = answer else {
                continue;
            };
            in_flight -= 1;
            free.push(buf);
            match out {
                Sent::Stored(resp) => {
                    truncated |= resp.truncated;
                    // The server may already have had more (a resend after
                    // a resync): carry on from its end.
                    if resync.is_none() {
                        sent = sent.max(resp.offset.saturating_sub(start));
                    }
                }
                Sent::Gap(e) => resync = Some(resync.map_or(e, |r| r.min(e))),
                Sent::TooLarge => {
                    chunk = (chunk / 2).max(SHIP_CHUNK_MIN);
                    tracing::info!(
                        chunk,
                        job = id,
                        "log chunk too large for the server; halving"
                    );
                    resync = Some(resync.map_or(at, |r| r.min(at)));
                }
                Sent::Failed(e) => {
                    stop_all.store(true, Ordering::SeqCst);
                    failure.get_or_insert(e);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Condvar, Mutex};

    use super::*;
    use crate::log::Spool;

    /// What the fake coordinator does to one append before storing it.
    enum Fault {
        /// Stores it, then the answer is lost (a transport error).
        LoseAnswer,
        /// Holds it this long before looking at the log's end.
        Delay(Duration),
        /// Refuses it: the lease is gone.
        LeaseGone,
    }

    /// One append as the fake saw it: offset, length, and what it got
    /// (the log's new end, or the refusal's status).
    type Call = (u64, usize, Result<u64, u16>);

    /// A job log as the coordinator keeps it: an append ahead of the end
    /// waits a moment for the ones before it, then is refused with the
    /// end (409, `expected_offset`); bytes it already has are skipped.
    struct FakeLog {
        log: Mutex<Vec<u8>>,
        grew: Condvar,
        /// Largest body taken (413 above).
        max_body: usize,
        /// Faults, each for the first append at its offset (by offset, not
        /// by arrival: the window's appends arrive in any order).
        faults: Mutex<Vec<(u64, Fault)>>,
        /// Each append, as it arrived.
        calls: Mutex<Vec<Call>>,
    }

    fn refused(status: u16, expected_offset: Option<u64>) -> ClientError {
        ClientError::Http {
            status,
            error: "refused".into(),
            expected_offset,
        }
    }

    impl FakeLog {
        fn new(held: &[u8], faults: Vec<(u64, Fault)>) -> FakeLog {
            FakeLog {
                log: Mutex::new(held.to_vec()),
                grew: Condvar::new(),
                max_body: 4 << 20,
                faults: Mutex::new(faults),
                calls: Mutex::new(Vec::new()),
            }
        }

        fn append(&self, at: u64, data: &[u8]) -> Result<LogAppendResponse, ClientError> {
            let fault = {
                let mut faults = self.faults.lock().unwrap();
                let i = faults.iter().position(|(o, _)| *o == at);
                i.map(|i| faults.remove(i).1)
            };
            let out = self.store(at, data, &fault);
            let seen = match &out {
                Ok(r) => Ok(r.offset),
                Err(e) => Err(e.status().unwrap_or(0)),
            };
            self.calls.lock().unwrap().push((at, data.len(), seen));
            match (fault, out) {
                (Some(Fault::LoseAnswer), Ok(_)) => {
                    Err(ClientError::Io(std::io::Error::other("connection reset")))
                }
                (_, out) => out,
            }
        }

        fn store(
            &self,
            at: u64,
            data: &[u8],
            fault: &Option<Fault>,
        ) -> Result<LogAppendResponse, ClientError> {
            match fault {
                Some(Fault::Delay(d)) => std::thread::sleep(*d),
                Some(Fault::LeaseGone) => return Err(refused(409, None)),
                _ => {}
            }
            if data.len() > self.max_body {
                return Err(refused(413, None));
            }
            let log = self.log.lock().unwrap();
            let (mut log, _) = self
                .grew
                .wait_timeout_while(log, Duration::from_millis(100), |l| (l.len() as u64) < at)
                .unwrap();
            let end = log.len() as u64;
            if end < at {
                return Err(refused(409, Some(end)));
            }
            let skip = ((end - at) as usize).min(data.len());
            log.extend_from_slice(&data[skip..]);
            self.grew.notify_all();
            Ok(LogAppendResponse {
                offset: log.len() as u64,
                truncated: false,
            })
        }

        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
    }

    /// A complete spool holding `bytes` (in a temporary directory).
    fn spool(bytes: &[u8]) -> (tempfile::TempDir, SpoolReader) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::create(&dir.path().join("log")).unwrap();
        s.write_all(bytes).unwrap();
        let r = s.reader().unwrap();
        r.done.store(true, Ordering::SeqCst);
        (dir, r)
    }

    /// Bytes no two positions of which a shifted copy would match.
    fn output(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    fn ship_to(server: &FakeLog, start: u64, r: &SpoolReader) -> (Result<u64, ClientError>, u8) {
        let flag = AtomicU8::new(stop::NONE);
        let append = |at: u64, data: &[u8]| server.append(at, data);
        let out = ship(&append, 7, start, r, &flag, &Cutoff::default());
        (out, flag.load(Ordering::SeqCst))
    }

    #[test]
    fn chunks_start_at_the_leases_offset_and_meet_without_gap_or_overlap() {
        let earlier = b"==> pinfold: job 7 on runner a\nthe first attempt's output\n";
        let server = FakeLog::new(earlier, Vec::new());
        let out = output(SHIP_CHUNK * 2 + SHIP_CHUNK / 3);
        let (_dir, r) = spool(&out);
        let start = earlier.len() as u64;
        let (shipped, flag) = ship_to(&server, start, &r);
        let end = start + out.len() as u64;
        assert_eq!(shipped.unwrap(), end);
        assert_eq!(flag, stop::NONE);
        let mut calls = server.calls();
        calls.sort_by_key(|c| c.0);
        let mut next = start;
        for (at, len, got) in &calls {
            assert_eq!(*at, next, "each chunk begins where the last ended");
            assert!(*len <= SHIP_CHUNK);
            next += *len as u64;
            assert_eq!(*got, Ok(next));
        }
        assert_eq!(next, end);
        let log = server.log.lock().unwrap();
        assert_eq!(&log[..earlier.len()], earlier);
        assert!(log[earlier.len()..] == out[..], "the spool, byte for byte");
    }

    #[test]
    fn a_refused_gap_resumes_at_the_servers_expected_offset() {
        // The first chunk is held up past the server's wait (whichever of
        // the window's appends reaches the server first): the two behind
        // it are refused with the log's end, the lease's offset.
        let start = 5;
        let server = FakeLog::new(
            b"12345",
            vec![(start, Fault::Delay(Duration::from_secs(1)))],
        );
        let out = output(SHIP_CHUNK * 3);
        let (_dir, r) = spool(&out);
        let (shipped, _) = ship_to(&server, start, &r);
        assert_eq!(shipped.unwrap(), start + out.len() as u64);
        let calls = server.calls();
        let gaps: Vec<_> = calls.iter().take_while(|c| c.2 == Err(409)).collect();
        assert_eq!(gaps.len(), 2, "{calls:?}");
        assert_eq!(
            calls[2],
            (start, SHIP_CHUNK, Ok(start + SHIP_CHUNK as u64)),
            "the held-up chunk"
        );
        // The resumed window's appends may reach the server in any order;
        // the lowest of them is where the shipper resumed.
        let resumed = calls[3..].iter().map(|c| c.0).min();
        assert_eq!(
            resumed,
            Some(start),
            "resumed at expected_offset: {calls:?}"
        );
        let log = server.log.lock().unwrap();
        assert!(log[..5] == *b"12345" && log[5..] == out[..]);
    }

    #[test]
    fn a_resend_after_a_lost_answer_never_duplicates_bytes() {
        let server = FakeLog::new(b"", vec![(0, Fault::LoseAnswer)]);
        let out = output(1000);
        let (_dir, r) = spool(&out);
        let (shipped, _) = ship_to(&server, 0, &r);
        assert_eq!(shipped.unwrap(), 1000);
        let calls = server.calls();
        assert_eq!(calls[0], (0, 1000, Ok(1000)), "stored, answer lost");
        assert_eq!(calls[1], (0, 1000, Ok(1000)), "the same chunk again");
        assert!(*server.log.lock().unwrap() == out);
    }

    #[test]
    fn a_chunk_too_large_is_halved_and_resent_from_its_own_offset() {
        let mut server = FakeLog::new(b"", Vec::new());
        server.max_body = 300 << 10;
        let out = output(SHIP_CHUNK + 12345);
        let (_dir, r) = spool(&out);
        let (shipped, _) = ship_to(&server, 0, &r);
        assert_eq!(shipped.unwrap(), out.len() as u64);
        let calls = server.calls();
        assert_eq!(calls[0], (0, SHIP_CHUNK, Err(413)));
        for (at, len, got) in &calls {
            if got.is_ok() {
                assert!(*len <= server.max_body, "{at}+{len}");
            }
        }
        assert!(*server.log.lock().unwrap() == out);
    }

    #[test]
    fn past_the_drain_cutoff_an_unanswered_append_is_dropped_not_resent() {
        let (_dir, r) = spool(&output(SHIP_CHUNK * 2));
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let append = |_: u64, _: &[u8]| {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ClientError::Io(std::io::Error::other("connection refused")))
        };
        let cutoff = Cutoff::default();
        cutoff.set(Instant::now());
        let flag = AtomicU8::new(stop::NONE);
        let t0 = Instant::now();
        assert!(ship(&append, 7, 0, &r, &flag, &cutoff).is_err());
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        let n = calls.load(Ordering::SeqCst);
        assert!((1..=SHIP_WINDOW).contains(&n), "one try per chunk: {n}");
    }

    #[test]
    fn a_refusal_without_an_offset_means_the_lease_is_lost() {
        let server = FakeLog::new(b"", vec![(0, Fault::LeaseGone)]);
        let (_dir, r) = spool(b"hello\n");
        let (shipped, flag) = ship_to(&server, 0, &r);
        assert_eq!(shipped.unwrap_err().status(), Some(409));
        assert_eq!(flag, stop::LEASE_LOST);
        assert_eq!(server.calls().len(), 1, "nothing more is sent");
        assert!(server.log.lock().unwrap().is_empty());
    }
}
