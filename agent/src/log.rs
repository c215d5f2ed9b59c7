//! The job's output stream: step markers and the steps' interleaved
//! stdout/stderr, with secret values masked before anything leaves the
//! process (also when a value is split across reads: the masker of the
//! coordinator holds back a tail that could begin a secret).
//!
//! pinfold's own lines begin with [`MARKER`] at the start of a line. A job
//! line that begins with it too is written as [`JOB_PREFIX`] followed by the
//! line, so `==> job succeeded` at the start of a line is always pinfold's,
//! in every view of the log (terminal, file, `--raw`, scripts).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pinfold_api::mask::mask;

/// A masked log stream into any writer, with an optional cap on the bytes
/// of step output it takes (the policy's `limits.log_bytes`).
pub struct LogWriter {
    secrets: Vec<Vec<u8>>,
    pending: Vec<u8>,
    out: Box<dyn Write + Send>,
    /// Step output taken so far (before masking).
    output: u64,
    /// The cap on step output; 0: none.
    cap: u64,
    /// Output arrived past the cap and was dropped.
    over: bool,
    /// The job's output is at the start of a line.
    line_start: bool,
    /// Bytes at the start of a job line that may still become [`MARKER`].
    head: Vec<u8>,
}

/// How pinfold's own lines begin.
pub const MARKER: &[u8] = b"==>";
/// What a job line that begins with [`MARKER`] is prefixed with.
pub const JOB_PREFIX: &[u8] = b"job> ";

/// The log shared by the step reader threads and the runner.
pub type SharedLog = Arc<Mutex<LogWriter>>;

impl LogWriter {
    /// A log into `out`, masking `secrets`.
    pub fn new(out: Box<dyn Write + Send>, secrets: impl IntoIterator<Item = String>) -> LogWriter {
        LogWriter {
            secrets: secrets
                .into_iter()
                .filter(|s| !s.is_empty())
                .map(String::into_bytes)
                .collect(),
            pending: Vec::new(),
            out,
            output: 0,
            cap: 0,
            over: false,
            line_start: true,
            head: Vec::new(),
        }
    }

    /// Caps the step output this log takes at `bytes` (0: no cap). Output
    /// past it is dropped and [`LogWriter::over_limit`] turns true; the
    /// runner then stops the job.
    pub fn set_cap(&mut self, bytes: u64) {
        self.cap = bytes;
    }

    /// Whether step output went past the cap.
    pub fn over_limit(&self) -> bool {
        self.over
    }

    /// The cap (0: none).
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Shares it.
    pub fn shared(self) -> SharedLog {
        Arc::new(Mutex::new(self))
    }

    /// Appends step output, up to the cap.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut data = data;
        if self.cap != 0 {
            let room = self.cap.saturating_sub(self.output);
            if (data.len() as u64) > room {
                self.over = true;
                data = &data[..room as usize];
            }
            self.output += data.len() as u64;
        }
        let guarded = self.guard(data);
        self.emit(&guarded)
    }

    /// Prefixes job lines that begin with [`MARKER`] with [`JOB_PREFIX`],
    /// holding back the start of a line until it is known not to be one.
    fn guard(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + JOB_PREFIX.len());
        for &b in data {
            if !self.line_start {
                out.push(b);
                self.line_start = b == b'\n';
                continue;
            }
            self.head.push(b);
            if self.head == MARKER {
                out.extend_from_slice(JOB_PREFIX);
                out.append(&mut self.head);
                self.line_start = false;
            } else if !MARKER.starts_with(&self.head) {
                out.append(&mut self.head);
                self.line_start = b == b'\n';
            }
        }
        out
    }

    fn emit(&mut self, data: &[u8]) -> io::Result<()> {
        if self.secrets.is_empty() {
            // Nothing to mask: no copy on the log's hot path.
            self.out.write_all(data)?;
            return self.out.flush();
        }
        let m = mask(&self.pending, data, &self.secrets, false);
        self.pending = m.pending;
        self.out.write_all(&m.emit)?;
        self.out.flush()
    }

    /// Appends a line of pinfold's own (a marker), after any held-back
    /// bytes, on a line of its own.
    pub fn line(&mut self, text: &str) {
        let mut s = std::mem::take(&mut self.head);
        if !s.is_empty() || !self.line_start {
            s.push(b'\n');
        }
        s.extend_from_slice(text.as_bytes());
        s.push(b'\n');
        self.line_start = true;
        let _ = self.emit(&s);
    }

    /// Releases what the masker holds back; the stream is complete.
    pub fn finish(&mut self) -> io::Result<()> {
        let head = std::mem::take(&mut self.head);
        if !head.is_empty() {
            self.emit(&head)?;
        }
        let m = mask(&self.pending, b"", &self.secrets, true);
        self.pending.clear();
        self.out.write_all(&m.emit)?;
        self.out.flush()
    }
}

/// Locks the shared log, surviving a poisoned lock (a panicked reader
/// thread must not take the job's log down with it).
pub fn lock(log: &SharedLog) -> std::sync::MutexGuard<'_, LogWriter> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// A spool file the agent's shipper tails: bytes are on disk before they
/// are counted in `written`, so memory stays bounded whatever the log size.
pub struct Spool {
    file: File,
    /// Bytes written so far.
    pub written: Arc<AtomicU64>,
    /// Set once the stream is complete.
    pub done: Arc<AtomicBool>,
}

impl Spool {
    /// Creates the spool file at `path`.
    pub fn create(path: &Path) -> io::Result<Spool> {
        Ok(Spool {
            file: File::options()
                .create_new(true)
                .read(true)
                .append(true)
                .open(path)?,
            written: Arc::new(AtomicU64::new(0)),
            done: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A reader of the spool (for the shipper).
    pub fn reader(&self) -> io::Result<SpoolReader> {
        Ok(SpoolReader {
            file: self.file.try_clone()?,
            written: self.written.clone(),
            done: self.done.clone(),
        })
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The read side of a [`Spool`].
pub struct SpoolReader {
    file: File,
    /// Bytes written so far.
    pub written: Arc<AtomicU64>,
    /// The stream is complete.
    pub done: Arc<AtomicBool>,
}

impl SpoolReader {
    /// Reads up to `buf.len()` bytes at `pos`, never past what was counted.
    pub fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.written.load(Ordering::SeqCst).saturating_sub(pos);
        let want = (buf.len() as u64).min(avail) as usize;
        if want == 0 {
            return Ok(0);
        }
        self.file.read_at(&mut buf[..want], pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer into a buffer the test reads back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Sink {
        /// A [`LogWriter`] masking `secrets` into a new sink, and the sink.
        fn log_writer(secrets: impl IntoIterator<Item = String>) -> (Sink, LogWriter) {
            let sink = Sink::default();
            (sink.clone(), LogWriter::new(Box::new(sink), secrets))
        }

        /// What was written, as text.
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_past_the_cap_is_dropped_and_flagged() {
        let (buf, mut w) = Sink::log_writer([]);
        w.set_cap(10);
        w.write(b"12345").unwrap();
        assert!(!w.over_limit());
        w.write(b"67890abc").unwrap();
        assert!(w.over_limit());
        w.write(b"more").unwrap();
        // pinfold's own lines still go through.
        w.line("==> stopped");
        w.finish().unwrap();
        assert_eq!(buf.text(), "1234567890\n==> stopped\n");
    }

    #[test]
    fn masks_secrets_split_across_writes() {
        let (buf, mut w) = Sink::log_writer(["hunter2".to_string()]);
        for part in ["key=hun", "te", "r2 and hunt", "ing\n"] {
            w.write(part.as_bytes()).unwrap();
        }
        w.line("==> done");
        w.write(b"tail hun").unwrap();
        w.finish().unwrap();
        assert_eq!(buf.text(), "key=*** and hunting\n==> done\ntail hun");
    }

    #[test]
    fn job_lines_cannot_begin_with_the_marker() {
        let (buf, mut w) = Sink::log_writer([]);
        // A fake status line, split byte by byte, then one in a single write.
        for b in b"==> job succeeded\n" {
            w.write(&[*b]).unwrap();
        }
        w.write(b"ok\n==> step 2/2: x\n=== RUN T\n= =>\nmid ==> x\n==")
            .unwrap();
        w.line("==> job failed");
        w.write(b"==").unwrap();
        w.finish().unwrap();
        let got = buf.text();
        assert_eq!(
            got,
            "job> ==> job succeeded\nok\njob> ==> step 2/2: x\n=== RUN T\n= =>\nmid ==> x\n==\n==> job failed\n=="
        );
        let ours: Vec<_> = got.lines().filter(|l| l.starts_with("==>")).collect();
        assert_eq!(ours, ["==> job failed"]);
    }
}
