//! Job output on a terminal: control characters shown escaped
//! ([`pinfold_api::escape`]), unless `--raw`.

use std::io::{self, IsTerminal, Write};

use pinfold_api::escape::Escaper;

/// A writer that escapes what passes through it. Dropping it (or
/// [`Escaping::finish`]) writes any held-back bytes of an unfinished UTF-8
/// sequence, escaped.
pub struct Escaping<W: Write> {
    inner: W,
    escaper: Escaper,
    buf: Vec<u8>,
}

impl<W: Write> Escaping<W> {
    /// Escapes into `inner`.
    pub fn new(inner: W) -> Self {
        Escaping {
            inner,
            escaper: Escaper::default(),
            buf: Vec::new(),
        }
    }

    /// Writes the held-back bytes; the stream is complete.
    pub fn finish(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.escaper.finish(&mut self.buf);
        self.inner.write_all(&self.buf)?;
        self.inner.flush()
    }
}

impl<W: Write> Write for Escaping<W> {
    /// Counts the bytes taken, not the (longer) escaped bytes written.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.clear();
        self.escaper.push(data, &mut self.buf);
        self.inner.write_all(&self.buf)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for Escaping<W> {
    fn drop(&mut self) {
        if self.escaper.has_pending() {
            let _ = self.finish();
        }
    }
}

/// The writer job output goes to: `out` escaped when `terminal` is a
/// terminal and `raw` is off, else `out` as it is.
pub fn job_output<W: Write + Send + 'static>(
    out: W,
    terminal: &impl IsTerminal,
    raw: bool,
) -> Box<dyn Write + Send> {
    if !raw && terminal.is_terminal() {
        Box::new(Escaping::new(out))
    } else {
        Box::new(out)
    }
}
