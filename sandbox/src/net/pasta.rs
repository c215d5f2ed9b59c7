//! `egress` networking: pasta (Debian's `passt`) attached to the container's
//! network namespace by the parent, before the child is released.
//!
//! pasta runs as the caller, joins the container's user and network
//! namespaces, creates a tap interface configured like the host's
//! (`--config-net`, IPv4 only), and carries the job's TCP/UDP through
//! ordinary host sockets. Options: no port forwarding in either direction,
//! the gateway address NOT mapped to the host (`--no-map-gw`: the host's own
//! loopback services stay out of reach), DNS forwarded from 169.254.1.1 to
//! the host's resolver. It daemonizes once the interface is up, which is how
//! the parent knows it may release the child; it is stopped when the
//! container ends.

use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Errors from attaching pasta (the container reports them as its own).
#[derive(Debug, thiserror::Error)]
pub enum PastaError {
    /// pasta's pid-file directory could not be made.
    #[error("egress: temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    /// pasta could not be started.
    #[error(
        "network mode egress needs pasta: {0} (apt-get install passt, or use network mode none)"
    )]
    Spawn(#[source] std::io::Error),
    /// pasta exited before its interface was up.
    #[error("network mode egress: pasta failed ({status}): {stderr} (run `pinfold doctor`)")]
    Failed {
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its stderr, on one line.
        stderr: String,
    },
    /// pasta did not configure its interface in time.
    #[error("network mode egress: pasta did not come up within 10s")]
    Timeout,
}

/// A running pasta, our child: killed with us (PDEATHSIG) if pinfold dies.
pub(crate) struct Pasta {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// Attaches pasta to the namespaces of `child`; returns once its interface
/// is configured (pasta writes its pid file only then).
pub(crate) fn start(child: Pid) -> Result<Pasta, PastaError> {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::Builder::new()
        .prefix("pinfold-pasta-")
        .tempdir()
        .map_err(PastaError::TempDir)?;
    let pid_file = dir.path().join("pid");
    let dns = super::netns::DNS_FORWARD.map(|b| b.to_string()).join(".");
    let mut cmd = Command::new("pasta");
    cmd.args([
        "--config-net",
        "-4",
        "--no-map-gw",
        "--quiet",
        "--foreground",
    ])
    .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
    .args(["--dns-forward", &dns])
    .arg("--pid")
    .arg(&pid_file)
    .arg(child.as_raw().to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut proc = cmd.spawn().map_err(PastaError::Spawn)?;
    let started = std::time::Instant::now();
    loop {
        if std::fs::metadata(&pid_file).is_ok_and(|m| m.len() > 0) {
            tracing::debug!(
                pid = proc.id(),
                "pasta attached to the container's network namespace"
            );
            return Ok(Pasta {
                child: proc,
                _dir: dir,
            });
        }
        if let Ok(Some(status)) = proc.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = proc.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(PastaError::Failed {
                status,
                stderr: err.trim().replace('\n', "; "),
            });
        }
        if started.elapsed() > std::time::Duration::from_secs(10) {
            let _ = proc.kill();
            let _ = proc.wait();
            return Err(PastaError::Timeout);
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

impl Pasta {
    /// Stops pasta and reaps it, so nothing of the container outlives `pinfold exec`.
    pub(crate) fn stop(mut self) {
        // SIGKILL: pasta keeps no state worth flushing, and ignores SIGTERM in the foreground.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
