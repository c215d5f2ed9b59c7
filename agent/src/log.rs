//! The job's output stream: step markers and the steps' interleaved
//! stdout/stderr, with secret values masked before anything leaves the
//! process (also when a value is split across reads: the masker of the
//! coordinator holds back a tail that could begin a secret).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pinfold_coordinator::mask::mask;

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
}

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
        self.emit(data)
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

    /// Appends a line of pinfold's own (a marker), after any held-back bytes.
    pub fn line(&mut self, text: &str) {
        let mut s = String::with_capacity(text.len() + 2);
        s.push_str(text);
        s.push('\n');
        let _ = self.emit(s.as_bytes());
    }

    /// Releases what the masker holds back; the stream is complete.
    pub fn finish(&mut self) -> io::Result<()> {
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

    struct Sink(Arc<Mutex<Vec<u8>>>);
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
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut w = LogWriter::new(Box::new(Sink(buf.clone())), []);
        w.set_cap(10);
        w.write(b"12345").unwrap();
        assert!(!w.over_limit());
        w.write(b"67890abc").unwrap();
        assert!(w.over_limit());
        w.write(b"more").unwrap();
        // pinfold's own lines still go through.
        w.line("==> stopped");
        w.finish().unwrap();
        assert_eq!(
            String::from_utf8(buf.lock().unwrap().clone()).unwrap(),
            "1234567890==> stopped\n"
        );
    }

    #[test]
    fn masks_secrets_split_across_writes() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut w = LogWriter::new(Box::new(Sink(buf.clone())), ["hunter2".to_string()]);
        for part in ["key=hun", "te", "r2 and hunt", "ing\n"] {
            w.write(part.as_bytes()).unwrap();
        }
        w.line("==> done");
        w.write(b"tail hun").unwrap();
        w.finish().unwrap();
        assert_eq!(
            String::from_utf8(buf.lock().unwrap().clone()).unwrap(),
            "key=*** and hunting\n==> done\ntail hun"
        );
    }
}
