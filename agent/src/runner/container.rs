//! The job container: one `pinfold exec --control-fd 3` per job, whose
//! init starts each step the runner asks for
//! ([`pinfold_sandbox::container::steps`]). The namespaces, the overlay
//! (with its warm caches), /tmp and the job's limits live as long as the
//! job; each step is forked by init with its own session, environment and
//! timeout, and hardened (Landlock, seccomp, capabilities) as a single
//! `pinfold exec` command is. When a step ends, init kills every process
//! it left, setsid'd daemons included.
//!
//! The container's own output (what `pinfold exec` prints: a setup
//! failure, the limit that killed it) goes to the job log like each
//! step's.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinfold_sandbox::container::cgroup::{Children, StepCgroup};
use pinfold_sandbox::container::steps::{Control, ControlError, StepReply, StepRequest};

use super::{CONTROL_FD, Job, RunError, StepPlan, stop};
use crate::log::{SharedLog, lock};

/// Capacity asked for the output pipes, and the reads from them.
const PIPE_BYTES: usize = 1 << 20;

/// How a step ended, as the runner saw it.
pub enum StepEnd {
    /// Init replied: the step and everything it started are gone.
    Reply(StepReply),
    /// The container ended during the step (a limit, a setup failure):
    /// [`JobContainer::finish`] has its status and report.
    Gone,
    /// The runner stopped it (stop, its deadline, the log limit): the
    /// container is killed.
    Stopped,
}

/// A running job container. It dies with the thread that started it
/// (PR_SET_PDEATHSIG): start it from a thread that outlives it.
pub struct JobContainer {
    child: Child,
    control: Option<Control>,
    output: Option<Receiver<()>>,
    /// A cgroup of its own, where its exec can enable cgroup v2 limits for
    /// the whole job; dropped (what is left killed, then removed) last.
    _cgroup: Option<Arc<StepCgroup>>,
    status: Option<Option<i32>>,
}

impl JobContainer {
    /// Starts `plan` (from [`super::StepInputs::container`]); the
    /// container's own output goes to `log`.
    pub(super) fn start(
        plan: StepPlan,
        log: &SharedLog,
        cpus: Option<nix::sched::CpuSet>,
    ) -> Result<JobContainer, RunError> {
        let cgroup = match Children::get() {
            Ok(children) => match children.step() {
                Ok(cg) => Some(cg),
                Err(e) => {
                    tracing::warn!(error = %e, "no cgroup for the job container; its limits fall back");
                    None
                }
            },
            Err(_) => None,
        };
        let (r, w) = output_pipe().map_err(RunError::Spawn)?;
        let mut c = JobContainer::spawn(plan, w, cpus, cgroup)?;
        c.output = Some(drain(r, log.clone()));
        Ok(c)
    }

    /// Starts `plan` (from [`super::StepInputs::container`]) with its own
    /// output (`pinfold exec`'s, not the steps') going to `output`, in
    /// `cgroup` if given (else `pinfold exec` picks its own mechanism).
    pub fn spawn(
        plan: StepPlan,
        output: OwnedFd,
        cpus: Option<nix::sched::CpuSet>,
        cgroup: Option<StepCgroup>,
    ) -> Result<JobContainer, RunError> {
        let spawn = |e: std::io::Error| RunError::Spawn(e);
        let (ours, theirs) = Control::pair().map_err(|e| spawn(std::io::Error::other(e)))?;
        let w = output;
        let w2 = w.try_clone().map_err(spawn)?;
        let mut cmd = Command::new(plan.program);
        cmd.env_clear()
            .envs(plan.env)
            .args(plan.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(w))
            .stderr(Stdio::from(w2));
        let theirs_fd = theirs.as_raw_fd();
        let cgroup = cgroup.map(Arc::new);
        let step_cg = cgroup.clone();
        // SAFETY: prctl(PR_SET_PDEATHSIG), dup2, sched_setaffinity and one
        // write(2) to a descriptor opened before the fork (entering the
        // cgroup) are async-signal-safe and touch no memory of the parent.
        // The container dies with the thread that started it (the job's
        // thread, alive until the container is reaped).
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                if let Some(cg) = &step_cg {
                    cg.enter()?;
                }
                if let Some(set) = &cpus {
                    nix::sched::sched_setaffinity(Pid::from_raw(0), set)
                        .map_err(std::io::Error::from)?;
                }
                // dup2 clears close-on-exec on the copy; when the socket
                // is fd 3 already (this process's 0-2 were closed), there
                // is no copy: clear it on the fd itself.
                if theirs_fd == CONTROL_FD {
                    if libc::fcntl(CONTROL_FD, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_fd, CONTROL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        drop(cmd); // closes our copies of the pipe's write end
        drop(theirs);
        let child = spawned.map_err(spawn)?;
        Ok(JobContainer {
            child,
            control: Some(ours),
            output: None,
            _cgroup: cgroup,
            status: None,
        })
    }

    /// Runs one step; its output goes to `log`.
    pub(super) fn step(
        &mut self,
        job: &Job,
        log: &SharedLog,
        req: &StepRequest,
    ) -> Result<StepEnd, RunError> {
        let (r, w) = output_pipe().map_err(RunError::Spawn)?;
        let done = drain(r, log.clone());
        let stop =
            || (job.stopped() != stop::NONE || lock(log).over_limit()).then_some(job.rt.grace);
        let end = self.step_into(req, w, stop);
        if done.recv_timeout(Duration::from_secs(5)).is_err() {
            lock(log).line("==> pinfold: the step's output did not close; moving on");
        }
        end
    }

    /// Runs one step whose stdout and stderr are `output`. When `stop`
    /// gives a grace (it is polled every 20 ms), the step is stopped and
    /// the container killed: SIGTERM to the step, that grace, SIGKILL.
    pub fn step_into(
        &mut self,
        req: &StepRequest,
        output: OwnedFd,
        stop: impl Fn() -> Option<Duration>,
    ) -> Result<StepEnd, RunError> {
        let Some(control) = &self.control else {
            return Ok(StepEnd::Gone);
        };
        let started = control.start(req, output.as_fd());
        drop(output);
        match started {
            Ok(()) => self.wait_reply(req, stop),
            Err(ControlError::Closed) => Ok(StepEnd::Gone),
            Err(e) => Err(RunError::Spawn(std::io::Error::other(e))),
        }
    }

    fn wait_reply(
        &mut self,
        req: &StepRequest,
        stop: impl Fn() -> Option<Duration>,
    ) -> Result<StepEnd, RunError> {
        // Init enforces the step's timeout itself (exit 124); this watchdog
        // only catches a container that does not come back.
        let hard = req
            .timeout_ms
            .map(|t| Instant::now() + Duration::from_millis(t) + Duration::from_secs(10));
        loop {
            let Some(control) = &self.control else {
                return Ok(StepEnd::Gone);
            };
            match control.reply(Duration::from_millis(20)) {
                Ok(Some(reply)) => return Ok(StepEnd::Reply(reply)),
                Ok(None) => {}
                Err(ControlError::Closed) => return Ok(StepEnd::Gone),
                Err(e) => return Err(RunError::Spawn(std::io::Error::other(e))),
            }
            if let Some(grace) = stop() {
                self.kill(grace);
                return Ok(StepEnd::Stopped);
            }
            if hard.is_some_and(|h| Instant::now() >= h) {
                self.kill(Duration::ZERO);
                return Ok(StepEnd::Stopped);
            }
        }
    }

    /// Ends the container (closing the control channel ends its init) and
    /// returns `pinfold exec`'s exit status, once it has written its
    /// report; `None` when it was killed.
    pub fn finish(&mut self, grace: Duration) -> Option<i32> {
        if let Some(s) = self.status {
            return s;
        }
        drop(self.control.take());
        let until = Instant::now() + Duration::from_secs(30);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
                _ => {
                    terminate(&mut self.child, grace);
                    break None;
                }
            }
        };
        if let Some(rx) = self.output.take() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
        use std::os::unix::process::ExitStatusExt;
        let code = status.and_then(|s| s.code().or_else(|| s.signal().map(|n| 128 + n)));
        self.status = Some(code);
        code
    }

    /// Whether the container is still running (it may end between steps:
    /// a limit, a kill from outside).
    pub fn running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM with the channel still open (exec passes it to init, init to
    /// the running step), up to `grace` for the step to end, then the
    /// channel closed (init kills what is left and exits) and SIGKILL for a
    /// container that does not end.
    fn kill(&mut self, grace: Duration) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if !grace.is_zero() && self.control.is_some() {
            let _ = kill(pid, Signal::SIGTERM);
            let until = Instant::now() + grace;
            while let Some(control) = &self.control
                && Instant::now() < until
            {
                // A reply (the step ended) or the end of the container.
                if !matches!(control.reply(Duration::from_millis(20)), Ok(None)) {
                    break;
                }
            }
        }
        drop(self.control.take());
        terminate(&mut self.child, Duration::from_secs(1).min(grace));
        self.status = Some(None);
    }
}

impl Drop for JobContainer {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill(Duration::ZERO);
        }
    }
}

/// A close-on-exec pipe of [`PIPE_BYTES`] where the kernel allows it (1
/// MiB, the unprivileged maximum by default, instead of 64 KiB: a chatty
/// step blocks less and the reader gets its output in fewer, larger reads).
fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let _ = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32));
    Ok((r, w))
}

/// Copies `r` into `log` on a thread until EOF, then says so.
fn drain(r: OwnedFd, log: SharedLog) -> Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut f = File::from(r);
        let mut buf = vec![0u8; PIPE_BYTES];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if lock(&log).write(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    rx
}

/// SIGTERM, `grace`, then SIGKILL; reaped.
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
    let _ = child.wait();
}
