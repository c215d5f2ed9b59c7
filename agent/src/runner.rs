//! The runner core shared by `pinfold run` and `pinfold agent`.
//!
//! Given a job, a per-job directory and a log, it resolves the image in the
//! store (pulling or importing the pinned reference when missing), fills
//! the workspace, and runs each step as a child `pinfold exec` (the real
//! binary, `current_exe()`):
//!
//! ```text
//! pinfold exec --image REF --policy P --bind JOBDIR/workspace:/workspace:rw
//!   --workdir /workspace --writable-layer JOBDIR/layer [--env NAME]...
//!   [--timeout T] -- /bin/sh -e -c RUN
//! ```
//!
//! The writable layer keeps rootfs changes across steps; /workspace is a
//! host directory. Values of env entries and secrets travel in the child's
//! environment with the pass-through form `--env NAME`, never on its
//! command line. Names that would change how the host-side `pinfold exec`
//! itself behaves (PATH, HOME, TMPDIR, LD_*, PINFOLD_*, ...) are not put
//! into its environment: for a plain env entry (its value is in the job
//! file anyway) they go as `--env NAME=VALUE`; a secret with such a name is
//! refused. stdout and stderr share one pipe so their order is kept.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinfold_api::JobSpec;
use pinfold_api::wire::{ArtifactInfo, JobState, StepResult};
use pinfold_sandbox::image::{ImageError, ImageRef, PullOptions, Store};

use crate::artifacts::{self, Artifact};
use crate::log::{SharedLog, lock};

/// Errors that end a job as `error` (pinfold failed, not the job).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The image could not be resolved.
    #[error("image {image}: {source}")]
    Image {
        /// The reference.
        image: String,
        /// The cause.
        #[source]
        source: ImageError,
    },
    /// The per-job directory could not be prepared.
    #[error("preparing {path}: {source}")]
    Dir {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The source could not be fetched or unpacked.
    #[error("source: {0}")]
    Source(String),
    /// A secret the job names has no value, or has a reserved name.
    #[error("secret {0}")]
    Secret(String),
    /// Spawning `pinfold exec` failed.
    #[error("starting pinfold exec: {0}")]
    Spawn(std::io::Error),
    /// Artifacts could not be collected.
    #[error("artifacts: {0}")]
    Artifacts(#[from] artifacts::ArtifactError),
}

/// Why a job is being stopped (0: it is not).
pub mod stop {
    /// Not stopped.
    pub const NONE: u8 = 0;
    /// A user cancelled it.
    pub const CANCELLED: u8 = 1;
    /// The agent is shutting down and the drain time is over.
    pub const SHUTDOWN: u8 = 2;
    /// The lease was lost (stale or revoked): nothing more may be written.
    pub const LEASE_LOST: u8 = 3;
}

/// One job to run.
pub struct Job {
    /// The job.
    pub spec: JobSpec,
    /// Per-job directory (workspace/ and layer/ are created inside).
    pub dir: PathBuf,
    /// Secret values by name.
    pub secrets: BTreeMap<String, String>,
    /// The pinfold binary to run steps with.
    pub exe: PathBuf,
    /// Set (to a [`stop`] reason) to stop the job.
    pub stop: Arc<AtomicU8>,
    /// Between SIGTERM and SIGKILL when stopping a step.
    pub grace: Duration,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Report {
    /// The outcome.
    pub state: JobState,
    /// Why, unless it succeeded.
    pub reason: Option<String>,
    /// Per-step results, in order.
    pub steps: Vec<StepResult>,
    /// Artifacts delivered.
    pub artifacts: Vec<ArtifactInfo>,
}

/// Where artifacts go: a directory (`pinfold run`) or the coordinator.
pub type Deliver<'a> = dyn FnMut(&mut Artifact) -> Result<(), String> + 'a;

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Environment names that change how the host-side `pinfold exec` (or the
/// dynamic loader under it) behaves.
pub fn reserved_name(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "TMPDIR",
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
        "REGISTRY_AUTH_FILE",
        "GLIBC_TUNABLES",
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "MALLOC_TRACE",
        "HOSTALIASES",
        "RES_OPTIONS",
        "LOCALDOMAIN",
        "TZDIR",
    ];
    EXACT.contains(&name)
        || ["PINFOLD_", "LD_", "RUST_", "CARGO_", "MALLOC_"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// What of the caller's environment the `pinfold exec` child keeps.
const PASS_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "PINFOLD_HOME",
    "XDG_DATA_HOME",
    "PINFOLD_POLICY_PATH",
    "PINFOLD_ROOT_IDMAP",
    "PINFOLD_USERNS",
    "PINFOLD_PLATFORM",
    "REGISTRY_AUTH_FILE",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "RUST_LOG",
];

impl Job {
    fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    fn stopped(&self) -> u8 {
        self.stop.load(Ordering::SeqCst)
    }

    /// Creates the per-job directory with an empty workspace and layer.
    pub fn prepare_dir(&self) -> Result<PathBuf, RunError> {
        for d in [self.workspace(), self.dir.join("layer")] {
            std::fs::create_dir_all(&d).map_err(|source| RunError::Dir { path: d, source })?;
        }
        Ok(self.workspace())
    }

    /// Runs the whole job: image, source (`fill` puts it into the empty
    /// workspace), steps, artifacts (`deliver`).
    pub fn run(
        &self,
        log: &SharedLog,
        fill: &mut dyn FnMut(&Path) -> Result<(), RunError>,
        deliver: &mut Deliver<'_>,
    ) -> Report {
        let started = Instant::now();
        let deadline = self.spec.timeout.map(|t| started + t.0);
        let mut steps: Vec<StepResult> = self
            .spec
            .steps
            .0
            .iter()
            .map(|s| StepResult {
                name: s.name.0.clone(),
                exit_code: None,
                started_at: None,
                finished_at: None,
            })
            .collect();
        let fail = |state, reason: String, steps: Vec<StepResult>| {
            lock(log).line(&format!("==> pinfold: {reason}"));
            Report {
                state,
                reason: Some(reason),
                steps,
                artifacts: Vec::new(),
            }
        };
        if let Err(e) = self.check_secrets() {
            return fail(JobState::Error, e.to_string(), steps);
        }
        let ws = match self.prepare_dir() {
            Ok(ws) => ws,
            Err(e) => return fail(JobState::Error, e.to_string(), steps),
        };
        if let Err(e) = self.resolve_image(log) {
            return fail(JobState::Error, e.to_string(), steps);
        }
        if let Err(e) = fill(&ws) {
            return fail(JobState::Error, e.to_string(), steps);
        }
        let n = steps.len();
        let mut end: Option<(JobState, String)> = None;
        for (i, step) in self.spec.steps.0.iter().enumerate() {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining.is_some_and(|r| r.is_zero()) {
                end = Some((JobState::TimedOut, "job timeout reached".into()));
                break;
            }
            if self.stopped() != stop::NONE {
                break;
            }
            let timeout = match (step.timeout.map(|t| t.0), remaining) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            lock(log).line(&format!("==> step {}/{n}: {}", i + 1, step.name));
            steps[i].started_at = Some(now_ms());
            let t0 = Instant::now();
            let code = match self.run_step(log, &step.run.0, timeout) {
                Ok(c) => c,
                Err(e) => {
                    steps[i].finished_at = Some(now_ms());
                    return fail(JobState::Error, e.to_string(), steps);
                }
            };
            steps[i].finished_at = Some(now_ms());
            steps[i].exit_code = code;
            let took = humantime_secs(t0.elapsed());
            let shown = code.map_or("killed".to_string(), |c| format!("exit {c}"));
            lock(log).line(&format!(
                "==> step {}/{n}: {} finished: {shown} ({took})",
                i + 1,
                step.name
            ));
            if self.stopped() != stop::NONE {
                break;
            }
            match code {
                Some(0) => {}
                Some(124) => {
                    let job_hit = deadline.is_some_and(|d| Instant::now() >= d);
                    let why = if job_hit {
                        "job timeout reached".to_string()
                    } else {
                        format!("step {} timed out", step.name)
                    };
                    end = Some((JobState::TimedOut, why));
                    break;
                }
                Some(125) => {
                    end = Some((
                        JobState::Error,
                        format!("step {}: the sandbox failed (exit 125)", step.name),
                    ));
                    break;
                }
                Some(c) => {
                    end = Some((JobState::Failed, format!("step {} exited {c}", step.name)));
                    break;
                }
                None => {
                    end = Some((JobState::Failed, format!("step {} was killed", step.name)));
                    break;
                }
            }
        }
        let (state, reason) = match self.stopped() {
            stop::CANCELLED => (JobState::Cancelled, Some("cancelled".to_string())),
            stop::SHUTDOWN => (
                JobState::Cancelled,
                Some("the agent shut down before the job finished".to_string()),
            ),
            stop::LEASE_LOST => (JobState::Error, Some("lease lost".to_string())),
            _ => match end {
                Some((s, r)) => (s, Some(r)),
                None => (JobState::Succeeded, None),
            },
        };
        // Artifacts of failed jobs matter too (test reports); not when the
        // lease is gone.
        let mut delivered = Vec::new();
        if self.stopped() != stop::LEASE_LOST {
            match artifacts::collect(&ws, &self.patterns()) {
                Ok(c) => {
                    let mut w = lock(log);
                    for p in &c.unmatched {
                        w.line(&format!("==> artifact pattern {p}: no file matched"));
                    }
                    for r in &c.refused {
                        w.line(&format!("==> artifact {r}"));
                    }
                    drop(w);
                    for mut a in c.artifacts {
                        match deliver(&mut a) {
                            Ok(()) => {
                                lock(log).line(&format!(
                                    "==> artifact {} ({} bytes, sha256 {})",
                                    a.name, a.size, a.sha256
                                ));
                                delivered.push(ArtifactInfo {
                                    name: a.name,
                                    size: a.size,
                                    sha256: a.sha256,
                                });
                            }
                            Err(e) => lock(log).line(&format!("==> artifact {}: {e}", a.name)),
                        }
                    }
                }
                Err(e) => lock(log).line(&format!("==> pinfold: {e}")),
            }
        }
        lock(log).line(&format!(
            "==> job {} ({}){}",
            state.as_str(),
            humantime_secs(started.elapsed()),
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
        Report {
            state,
            reason,
            steps,
            artifacts: delivered,
        }
    }

    fn patterns(&self) -> Vec<String> {
        self.spec.artifacts.iter().map(|p| p.0.clone()).collect()
    }

    fn check_secrets(&self) -> Result<(), RunError> {
        for s in &self.spec.secrets {
            if reserved_name(s.as_str()) {
                return Err(RunError::Secret(format!(
                    "{s}: this name is reserved (it would change how pinfold itself runs)"
                )));
            }
            if !self.secrets.contains_key(s.as_str()) {
                return Err(RunError::Secret(format!("{s}: no value was given")));
            }
        }
        Ok(())
    }

    fn resolve_image(&self, log: &SharedLog) -> Result<(), RunError> {
        let image = self.spec.image.as_str();
        let err = |source| RunError::Image {
            image: image.to_string(),
            source,
        };
        let store = Store::open_default().map_err(err)?;
        let t0 = Instant::now();
        match store.find(image) {
            Ok(_) => lock(log).line(&format!("==> image {image} (cached)")),
            Err(ImageError::NotFound(_)) => {
                let r = ImageRef::parse_pinned(image, false).map_err(|e| err(e.into()))?;
                store.pull(&r, &PullOptions::default()).map_err(err)?;
                lock(log).line(&format!(
                    "==> image {image} (fetched in {})",
                    humantime_secs(t0.elapsed())
                ));
            }
            Err(e) => return Err(err(e)),
        }
        Ok(())
    }

    fn command(&self, run: &str, timeout: Option<Duration>) -> Command {
        let mut c = Command::new(&self.exe);
        c.env_clear();
        for k in PASS_ENV {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.arg("exec")
            .arg("--image")
            .arg(self.spec.image.as_str())
            .arg("--policy")
            .arg(self.spec.policy.as_str())
            .arg("--bind")
            .arg(format!("{}:/workspace:rw", self.workspace().display()))
            .arg("--workdir")
            .arg("/workspace")
            .arg("--writable-layer")
            .arg(self.dir.join("layer"));
        if let Some(n) = self.spec.network {
            c.arg("--network").arg(n.as_str());
        }
        for (k, v) in &self.spec.env {
            if reserved_name(k.as_str()) {
                c.arg("--env").arg(format!("{k}={v}"));
            } else {
                c.env(k.as_str(), v).arg("--env").arg(k.as_str());
            }
        }
        for k in &self.spec.secrets {
            if let Some(v) = self.secrets.get(k.as_str()) {
                c.env(k.as_str(), v).arg("--env").arg(k.as_str());
            }
        }
        if let Some(t) = timeout {
            c.arg("--timeout")
                .arg(format!("{}ms", t.as_millis().max(1)));
        }
        c.arg("--").args(["/bin/sh", "-e", "-c", run]);
        c
    }

    /// Runs one step; `None` when pinfold killed it (stop).
    fn run_step(
        &self,
        log: &SharedLog,
        run: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<i32>, RunError> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| RunError::Spawn(std::io::Error::from(e)))?;
        // A 1 MiB pipe (the unprivileged maximum by default) instead of
        // 64 KiB: a chatty step blocks less and the reader below gets the
        // output in fewer, larger reads. Best effort: 64 KiB still works.
        let _ = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32));
        let w2 = w.try_clone().map_err(RunError::Spawn)?;
        let mut cmd = self.command(run, timeout);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(w))
            .stderr(Stdio::from(w2));
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches
        // no memory of the parent; the step dies with the thread that
        // started it (the job's thread, alive until the step is reaped).
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let spawned = cmd.spawn();
        drop(cmd); // closes our copies of the pipe's write end
        let mut child = spawned.map_err(RunError::Spawn)?;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let reader_log = log.clone();
        std::thread::spawn(move || {
            let mut f = File::from(r);
            let mut buf = vec![0u8; PIPE_BYTES];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if lock(&reader_log).write(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
        // exec enforces `timeout` itself (exit 124); this watchdog only
        // catches an exec that does not come back.
        let hard = timeout.map(|t| Instant::now() + t + Duration::from_secs(10));
        let status = loop {
            if let Some(s) = child.try_wait().map_err(RunError::Spawn)? {
                break Some(s);
            }
            if self.stopped() != stop::NONE || hard.is_some_and(|h| Instant::now() >= h) {
                terminate(&mut child, self.grace);
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if rx.recv_timeout(Duration::from_secs(5)).is_err() {
            lock(log).line("==> pinfold: the step's output did not close; moving on");
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(status.and_then(|s| s.code().or_else(|| s.signal().map(|n| 128 + n))))
    }
}

/// Capacity asked for the steps' output pipe, and the reads from it.
const PIPE_BYTES: usize = 1 << 20;

/// SIGTERM (exec forwards it into the container), `grace`, then SIGKILL.
fn terminate(child: &mut Child, grace: Duration) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_steer_the_host_side_are_reserved() {
        for n in [
            "PATH",
            "LD_PRELOAD",
            "PINFOLD_HOME",
            "GLIBC_TUNABLES",
            "TMPDIR",
        ] {
            assert!(reserved_name(n), "{n}");
        }
        for n in ["GREETING", "DEPLOY_KEY", "CI", "PATHS"] {
            assert!(!reserved_name(n), "{n}");
        }
    }
}
