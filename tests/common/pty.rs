//! Running a command with its stdout on a pseudo-terminal, as a person at a
//! terminal would see it.

use std::fs::File;
use std::io::Read;
use std::process::{Command, Stdio};

/// Runs `cmd` with stdout on a fresh pty (stdin null, stderr piped);
/// returns its exit code, every byte the terminal received (the pty turns
/// `\n` into `\r\n`) and its stderr.
pub fn run_on_pty(mut cmd: Command) -> (i32, Vec<u8>, String) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut child = cmd
        .stdout(Stdio::from(pty.slave))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn on a pty");
    // Our copy of the slave must close, or reading the master never ends.
    drop(cmd);
    let mut master = File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last holder of the slave is gone.
        while let Ok(n @ 1..) = master.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let code = child.wait().expect("wait").code().unwrap_or(-1);
    (code, reader.join().expect("pty reader"), err)
}

/// What a terminal shows as text: `\r\n` back to `\n`.
pub fn text(seen: &[u8]) -> String {
    String::from_utf8_lossy(seen).replace("\r\n", "\n")
}
