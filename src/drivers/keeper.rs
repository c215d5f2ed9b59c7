//! The *keeper* of a job that another CI system's runner drives one call at
//! a time (`pinfold gitlab-driver`, `pinfold gha-hook`): a detached
//! `pinfold keep-job-fs` that holds the job file system between calls and
//! runs the job's container, and the client each stage uses to run its
//! step there.
//!
//! Each stage is a new process of the CI runner's, so the job container
//! (`agent::runner::JobContainer`, as `pinfold run` uses) cannot be the
//! stage's child: it is the keeper's. A stage connects to `steps.sock` in
//! the job directory and sends one [`Stage`], with its own stdout attached
//! (SCM_RIGHTS; the step writes there directly, nothing is relayed), in the
//! control channel's framing ([`Control`]). The keeper runs the step in its
//! container and answers with a [`StepOutcome`].
//!
//! One container at a time, started for the first stage and kept while
//! the stages ask for the same one (the same policy, binds and image:
//! [`Stage::container`]). A stage that asks for another (GitLab's transfer
//! stages under their own policy, with the `gitlab-runner` binary) ends it
//! and starts its own: two overlays on one writable layer at once would see
//! each other's changes late or never. A failed step ends the container
//! too, as in `pinfold run`, so that its report can name a limit behind the
//! failure; the next stage (after_script) gets a fresh one on the same job
//! file system.
//!
//! The step ends with the stage's process: a stage whose process is told
//! to stop (SIGTERM, SIGINT: the CI runner's cancel) shuts its end of the
//! connection, and the keeper sends the container SIGTERM (init forwards
//! it to the step), waits the stage's `grace`, then kills it; a stage
//! whose process is killed closes it, and the keeper kills the step at
//! once.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use pinfold_agent::runner::{JobContainer, RunOptions, StepEnd, StepInputs, StepPlan};
use pinfold_api::JobSpec;
use pinfold_api::job::EnvName;
use pinfold_sandbox::container::Bind;
use pinfold_sandbox::container::jobfs::{self, JobFs, Sizes};
use pinfold_sandbox::container::limits::EXIT_LIMIT;
use pinfold_sandbox::container::steps::{Control, ControlError, Peer, StepRequest};
use serde::{Deserialize, Serialize};

use super::jobdir::{KEEPER_LOG, KEEPER_PID};

/// The keeper's socket in the job directory.
const SOCKET: &str = "steps.sock";

/// The keeper's arguments (`start` passes them).
#[derive(Debug, clap::Args)]
pub struct KeepArgs {
    dir: PathBuf,
    layer_bytes: u64,
    workspace_bytes: u64,
    /// Seconds after which the keeper ends even if cleanup never comes.
    lifetime_secs: u64,
}

/// One stage's step, as a stage asks the keeper for it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stage {
    /// The job container it runs in ([`pinfold_agent::runner::StepInputs::container`]).
    pub container: StepPlan,
    /// The container's `--report`.
    pub report: PathBuf,
    /// The step.
    pub step: StepRequest,
    /// Between SIGTERM and SIGKILL when the stage is cancelled.
    pub grace_ms: u64,
}

/// How a stage's step ended.
#[derive(Debug, Serialize, Deserialize)]
pub struct StepOutcome {
    /// Its exit code (`None`: killed).
    pub code: Option<i32>,
    /// What `pinfold exec --report` says of it (`outcome`, `exit_code`,
    /// `reason`), if anything could.
    pub report: Option<serde_json::Value>,
    /// The stage was cancelled (its process was told to stop, or died).
    pub cancelled: bool,
}

/// What a driver's stage runs, and under what.
pub struct StageInputs<'a> {
    /// The job's image, pinned.
    pub image: &'a str,
    /// The step's environment.
    pub env: std::collections::BTreeMap<EnvName, String>,
    /// The operator's policy for it (a name or path).
    pub policy: &'a str,
    /// Where the job file system's workspace is mounted (and the workdir).
    pub mount: &'a str,
    /// Host paths bound into the container.
    pub binds: Vec<Bind>,
    /// What the step runs, with `/bin/sh -e -c`.
    pub run: &'a str,
    /// Between SIGTERM and SIGKILL when the stage is cancelled.
    pub grace: Duration,
}

impl Stage {
    /// The stage of the job in `dir`: its container (the same for every
    /// stage with the same policy, mount and binds) and its step.
    pub fn new(dir: &Path, s: StageInputs) -> Result<Stage, String> {
        let spec = JobSpec {
            image: pinfold_api::job::ImageRef(s.image.to_string()),
            policy: None,
            network: None,
            limits: Default::default(),
            timeout: None,
            env: s.env,
            secrets: Vec::new(),
            steps: pinfold_api::job::Steps(Vec::new()),
            artifacts: Vec::new(),
            source: None,
            verify: None,
        };
        let report = dir.join("stage.json");
        let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
        let lean = pinfold_agent::runner::lean_exec(&exe);
        let host = crate::env::host();
        let inputs = StepInputs {
            exe: &exe,
            spec: &spec,
            secrets: &Default::default(),
            host: &host,
            policy: s.policy,
            job_fs: &dir.join(jobfs::SOCKET),
            report: &report,
            lean: lean.as_deref(),
        };
        Ok(Stage {
            container: inputs.container(&RunOptions {
                mount: Some(s.mount.into()),
                binds: s.binds,
                ..RunOptions::default()
            }),
            step: inputs.request(s.run, None),
            report,
            grace_ms: s.grace.as_millis() as u64,
        })
    }
}

impl StepOutcome {
    /// Why the sandbox failed the step, in one line: its report's reason,
    /// or why there is none.
    pub fn sandbox_failure(&self) -> String {
        match self.report.as_ref().and_then(|r| r.get("reason")?.as_str()) {
            Some(why) => why.to_string(),
            None if self.cancelled => "cancelled by the runner before the step could end".into(),
            None => "the job container ended without a report: run `pinfold doctor` on this runner"
                .into(),
        }
    }
}

/// Starts the keeper of `dir` in its own session (the runner's kill of the
/// caller's process group must not reach it, and it must not hold the
/// caller's output open, or the runner would wait for it) and waits for
/// its `ready`. It ends by itself after `lifetime` should cleanup never
/// come.
pub fn start(dir: &Path, sizes: Sizes, lifetime: Duration) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let log = std::fs::File::create(dir.join(KEEPER_LOG)).map_err(|e| e.to_string())?;
    let mut c = Process::new(exe);
    c.arg("keep-job-fs")
        .arg(dir)
        .arg(sizes.layer.to_string())
        .arg(sizes.workspace.to_string())
        .arg(lifetime.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        c.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = c.spawn().map_err(|e| format!("starting the keeper: {e}"))?;
    std::fs::write(dir.join(KEEPER_PID), child.id().to_string()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    let out = child.stdout.take().expect("piped");
    let _ = BufReader::new(out).read_line(&mut line);
    if line.trim() == "ready" {
        return Ok(());
    }
    let _ = child.kill();
    let _ = child.wait();
    let why = std::fs::read_to_string(dir.join(KEEPER_LOG)).unwrap_or_default();
    let why = why.lines().last().unwrap_or("it exited").to_string();
    Err(format!("the job file system did not start: {why}"))
}

/// `pinfold keep-job-fs` (hidden): the keeper. Holds the job file system
/// and serves the stages until SIGTERM/SIGINT or its lifetime ends.
pub fn keep(k: KeepArgs) -> i32 {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("pinfold keep-job-fs: {e}");
        1
    };
    let settings = crate::env::settings();
    let mode = match crate::env::host().id_map_mode() {
        Ok(m) => m,
        Err(e) => return fail(&format!("PINFOLD_USERNS: {e}")),
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    if let Err(e) = pinfold_agent::signals::install() {
        return fail(&e);
    }
    let sizes = Sizes {
        layer: k.layer_bytes,
        workspace: k.workspace_bytes,
    };
    let jobfs: JobFs = match JobFs::start(&exe, &k.dir, sizes, mode, &settings) {
        Ok(j) => j,
        Err(e) => return fail(&e),
    };
    let socket = k.dir.join(SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => return fail(&format!("{}: {e}", socket.display())),
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    // Nobody reads stdout again: let the caller's pipe close.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
    let end = Instant::now()
        .checked_add(Duration::from_secs(k.lifetime_secs))
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    let mut held: Option<Held> = None;
    while !pinfold_agent::signals::received() && Instant::now() < end {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(100u16)), Ok(n) if n > 0) {
            continue;
        }
        match listener.accept() {
            Ok((conn, _)) => serve(&mut held, conn, end),
            Err(e) => tracing::warn!(error = %e, "accepting a stage"),
        }
    }
    // Cleanup: the container (and the step, if one runs) goes first, then
    // the job file system under it.
    drop(held);
    drop(jobfs);
    0
}

/// The keeper's container, and what it was started for.
struct Held {
    plan: StepPlan,
    report: PathBuf,
    container: JobContainer,
}

/// Serves one stage's connection: runs its step, answers how it ended.
/// The keeper ends at `end` even mid-step.
fn serve(held: &mut Option<Held>, conn: UnixStream, end: Instant) {
    // Only this user's processes reach the socket (the job directory is
    // 0700); a peer that is not this user is refused all the same.
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let me = nix::unistd::geteuid().as_raw();
    if !getsockopt(&conn, PeerCredentials).is_ok_and(|c| c.uid() == me) {
        return;
    }
    // A stage sends its request at once: one that stalls mid-message is
    // dropped, and the keeper serves the next.
    if conn
        .set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| conn.set_write_timeout(Some(Duration::from_secs(5))))
        .is_err()
    {
        return;
    }
    let control = Control::from_fd(OwnedFd::from(conn));
    if !control.readable(Duration::from_secs(5)).unwrap_or(false) {
        return;
    }
    let (stage, mut fds) = match control.recv::<Stage>() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "a stage's request");
            let _ = control.send(&no_outcome(&format!("its request: {e}")), &[]);
            return;
        }
    };
    let Some(output) = fds.pop() else {
        let _ = control.send(&no_outcome("the stage sent no output"), &[]);
        return;
    };
    let grace = Duration::from_millis(stage.grace_ms);
    // When to stop the step: its stage's process died (at once, as the
    // step died with it before), was cancelled (it shuts its end: SIGTERM
    // and the grace), or the keeper must end.
    let stop = || match control.peer() {
        Peer::Closed => Some(Duration::ZERO),
        Peer::ShutWrite => Some(grace),
        Peer::Open => {
            (pinfold_agent::signals::received() || Instant::now() >= end).then_some(grace)
        }
    };
    let outcome = run(held, stage, output, stop);
    let _ = control.send(&outcome, &[]);
}

fn no_outcome(why: &str) -> StepOutcome {
    StepOutcome {
        code: None,
        report: Some(serde_json::json!({"outcome": "error", "reason": why})),
        cancelled: false,
    }
}

/// Runs `stage` in the held container (starting one for it when there is
/// none, the one there is has ended, or it was started for another plan)
/// until `stop` gives a grace.
fn run(
    held: &mut Option<Held>,
    stage: Stage,
    output: OwnedFd,
    stop: impl Fn() -> Option<Duration>,
) -> StepOutcome {
    let grace = Duration::from_millis(stage.grace_ms);
    if stop().is_some() {
        // Cancelled (or dead) while it waited for the keeper.
        return StepOutcome {
            code: None,
            report: None,
            cancelled: true,
        };
    }
    if let Some(mut h) = held.take() {
        if h.plan == stage.container && h.container.running() {
            *held = Some(h);
        } else {
            h.container.finish(grace);
        }
    }
    if held.is_none() {
        let _ = std::fs::remove_file(&stage.report);
        // The container's own output (a setup failure, the limit that
        // killed it) goes to the keeper's log (its stderr); its report
        // reaches the stage.
        let log = match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => return no_outcome(&format!("the keeper's log: {e}")),
        };
        match JobContainer::spawn(stage.container.clone(), log, None, None) {
            Ok(container) => {
                *held = Some(Held {
                    plan: stage.container,
                    report: stage.report,
                    container,
                })
            }
            Err(e) => return no_outcome(&format!("starting the job container: {e}")),
        }
    }
    let h = held.as_mut().expect("started above");
    let ended = h.container.step_into(&stage.step, output, stop);
    let report = |h: &Held| {
        std::fs::read(&h.report)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    };
    let outcome = match ended {
        Ok(StepEnd::Reply(r)) if r.exit_code == 0 && r.error.is_none() => {
            return StepOutcome {
                code: Some(0),
                report: Some(serde_json::json!({"outcome": "exited", "exit_code": 0})),
                cancelled: false,
            };
        }
        Ok(StepEnd::Reply(r)) => {
            // A failed step ends the container, whose report then names a
            // limit behind the failure (a full disk; under cgroup v2 an OOM
            // kill or a refused fork).
            let status = h.container.finish(grace);
            let report = match &r.error {
                // Init failed the step: it changed what every later step
                // would inherit (the job's doing), named in the job's log.
                Some(e) => Some(
                    serde_json::json!({"outcome": "refused", "exit_code": r.exit_code, "reason": e}),
                ),
                None => report(h),
            };
            let code = if status == Some(EXIT_LIMIT) {
                EXIT_LIMIT
            } else {
                r.exit_code
            };
            StepOutcome {
                code: Some(code),
                report: report
                    .or_else(|| Some(serde_json::json!({"outcome": "exited", "exit_code": code}))),
                cancelled: false,
            }
        }
        Ok(StepEnd::Gone) => {
            let code = h.container.finish(grace);
            StepOutcome {
                code,
                report: report(h),
                cancelled: false,
            }
        }
        Ok(StepEnd::Stopped) => StepOutcome {
            code: None,
            report: report(h),
            cancelled: true,
        },
        Err(e) => no_outcome(&format!("the job container: {e}")),
    };
    *held = None;
    outcome
}

/// Runs `stage` in the keeper of `dir`, the step writing to this process's
/// stdout. SIGTERM or SIGINT to this process (the runner's cancel) makes
/// the keeper stop the step (SIGTERM, the stage's grace, SIGKILL); if this
/// process dies, the keeper kills the step at once.
pub fn run_step(dir: &Path, stage: &Stage) -> Result<StepOutcome, String> {
    pinfold_agent::signals::install().map_err(|e| e.to_string())?;
    let log = dir.join(KEEPER_LOG);
    let log = log.display();
    let keeper = |e: ControlError| match e {
        ControlError::Closed => format!("the job's keeper ended during the stage: see {log}"),
        e => format!("the job's keeper: {e} (see {log})"),
    };
    let conn = UnixStream::connect(dir.join(SOCKET)).map_err(|e| {
        format!("the job's keeper does not answer ({e}): prepare must run first, and if it did, see {log}")
    })?;
    let control = Control::from_fd(OwnedFd::from(conn.try_clone().map_err(|e| e.to_string())?));
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    control
        .send(stage, &[std::os::fd::AsRawFd::as_raw_fd(&stdout)])
        .map_err(keeper)?;
    drop(stdout);
    let mut cancelled = None;
    loop {
        match control.readable(Duration::from_millis(20)) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(keeper(e)),
        }
        if cancelled.is_none() && pinfold_agent::signals::received() {
            let _ = conn.shutdown(std::net::Shutdown::Write);
            cancelled = Some(Instant::now());
        }
        // The keeper stops it within its grace and a second.
        if cancelled.is_some_and(|t| {
            t.elapsed() > Duration::from_millis(stage.grace_ms) + Duration::from_secs(15)
        }) {
            return Err(format!(
                "the job's keeper did not stop the step in time: cleanup will (see {log})"
            ));
        }
    }
    match control.recv::<StepOutcome>() {
        Ok((mut o, _)) => {
            o.cancelled |= cancelled.is_some();
            // The limit that ended the step, or why init failed it, in the
            // job's log (the container's own output is the keeper's; the
            // sandbox's own failure is the caller's to report).
            if let Some(r) = &o.report
                && r["outcome"] != "error"
                && let Some(why) = r["reason"].as_str()
            {
                println!("==> pinfold: {why}");
            }
            Ok(o)
        }
        Err(ControlError::Closed) if cancelled.is_some() => Ok(StepOutcome {
            code: None,
            report: None,
            cancelled: true,
        }),
        Err(e) => Err(keeper(e)),
    }
}
