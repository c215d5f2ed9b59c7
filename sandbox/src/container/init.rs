//! PID 1 of the container: reaps zombies, forwards signals to the job, and
//! exits with the job's status. When it exits the kernel kills every other
//! process of the pid namespace, so no daemon outlives the job.
//!
//! Two ways to serve: one command ([`supervise`]), or, in a job
//! container, one step after another as the runner asks over the control
//! channel ([`serve`]).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::steps::{Control, Peer, StepReply, StepRequest};
use super::sync::{self, Step, StepError};
use super::{Prepared, forwarded_signals, process};

/// Supervises `job` until it ends, then kills and reaps every other process
/// of the container; returns the status to exit with (the job's code, or
/// 128+N when signal N killed it).
pub(crate) fn supervise(job: Pid) -> i32 {
    let code = wait_for_job(job);
    kill_the_rest();
    code
}

/// Reaps everything that has exited (the job, or orphans re-parented to
/// init) without waiting; `Some` with the status once `job` is among them.
fn reap(job: Pid) -> Option<i32> {
    loop {
        match waitpid(
            None::<Pid>,
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
        ) {
            Ok(WaitStatus::Exited(pid, code)) if pid == job => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == job => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

fn wait_for_job(job: Pid) -> i32 {
    let mut wait_set: SigSet = forwarded_signals();
    wait_set.add(Signal::SIGCHLD);
    loop {
        if let Some(code) = reap(job) {
            return code;
        }
        // The forwarded signals and SIGCHLD are blocked (inherited from the
        // parent), so they queue for us even though PID 1 has no handlers.
        let sig = match wait_set.wait() {
            Ok(sig) => sig,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(job, sig);
        }
    }
}

/// Init of a job container: serves [`super::steps`] requests on `control`
/// until the runner closes it, forking each step (hardened by
/// [`process::exec_job`] as a single command is) and killing every process
/// the step left once it ends, setsid'd daemons included, and the SysV
/// IPC objects it left (a step cannot make a POSIX message queue: the
/// mqueue file system is under no Landlock rule). Returns the status to
/// exit with: the last step's.
pub(crate) fn serve(p: &mut Prepared, control: OwnedFd) -> i32 {
    let control = Control::from_fd(control);
    let mut mask = forwarded_signals();
    mask.add(Signal::SIGCHLD);
    let Ok(mut signals) =
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        return 125;
    };
    // What a step could change in init (and so in every later step, which
    // inherits it from init) without any privilege: lower its rlimits with
    // prlimit, raise its nice value or change its scheduling attributes, or
    // lower its I/O priority (same uid). Checked before each step: a change
    // refuses it, since a step cannot undo it. (Narrowed CPUs each step
    // undoes itself: see `process::prepare_steps`.)
    let inherited = Inherited::now();
    let ready = match process::prepare_steps(p).and_then(|r| Ok((r, Stack::new()?))) {
        Ok(r) => r,
        Err(e) => {
            let _ = control.send(&refused(format!("{}: {}", e.step, e.message)), &[]);
            return 125;
        }
    };

    let mut last = 0;
    loop {
        // Idle: no process but init exists.
        match wait_idle(&control, &mut signals) {
            Idle::Request => {}
            Idle::Closed => return last,
        }
        let (req, fds) = match control.recv::<StepRequest>() {
            Ok(r) => r,
            Err(_) => return last,
        };
        let mut reply = match (fds.into_iter().next(), inherited.changed()) {
            (_, Some(what)) => refused(format!(
                "a previous step changed init's {what}, which every step inherits; the job stops here (a step may change only files in its writable paths)"
            )),
            (None, _) => refused("the step request carried no output fd".into()),
            (Some(out), None) => run_step(p, &ready, &req, out, &mut signals, &control),
        };
        // The step that changed init fails itself (its processes are all
        // gone by now), rather than the next one.
        if reply.error.is_none()
            && let Some(what) = inherited.changed()
        {
            reply = refused(format!(
                "the step changed init's {what}, which every later step would inherit; the job stops here (a step may change only files in its writable paths)"
            ));
        }
        last = reply.exit_code;
        if control.send(&reply, &[]).is_err() {
            return last;
        }
    }
}

fn refused(error: String) -> StepReply {
    StepReply {
        exit_code: 125,
        timed_out: false,
        error: Some(format!("pinfold exec: {error}")),
    }
}

enum Idle {
    Request,
    Closed,
}

fn wait_idle(control: &Control, signals: &mut SignalFd) -> Idle {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let mut fds = [
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return Idle::Closed,
        }
        // Between steps no signal is acted on: the runner ends a job by
        // closing the channel (and killing the container), and a sender
        // cannot be told apart from a process an earlier step left (a
        // queued signal's sender pid and code can be forged, and with
        // RLIMIT_SIGPENDING lowered signals arrive without them).
        while let Ok(Some(_)) = signals.read_signal() {}
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return Idle::Request;
        }
    }
}

fn run_step(
    p: &mut Prepared,
    (ready, stack): &(process::StepsReady, Stack),
    req: &StepRequest,
    out: OwnedFd,
    signals: &mut SignalFd,
    control: &Control,
) -> StepReply {
    if req.argv.is_empty() {
        return refused("the step request has no command".into());
    }
    if let Err(e) = p.for_step(req) {
        return refused(format!("{}: {}", e.step, e.message));
    }
    let (err_r, err_w) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return refused(format!("create the step's error pipe: {}", e.desc())),
    };
    let exec = process::ExecArgs::new(p);
    let started = std::time::Instant::now();
    let step = match spawn_step(
        &Spawn {
            p,
            ready,
            exec: &exec,
            out: out.as_raw_fd(),
            err: err_w.as_raw_fd(),
        },
        stack,
    ) {
        Ok(pid) => pid,
        Err(e) => return refused(format!("start the step (clone): {}", e.desc())),
    };
    drop(err_w);
    drop(out);
    let deadline = req
        .timeout_ms
        .map(|ms| started + std::time::Duration::from_millis(ms));
    let (code, timed_out) = match wait_step(step, signals, control, deadline) {
        Waited::Exited(code) => (code, false),
        Waited::TimedOut => (124, true),
        // The runner is gone: so is the job.
        Waited::RunnerGone => {
            kill_the_rest();
            return refused("the runner closed the control channel during the step".into());
        }
    };
    kill_the_rest();
    clear_sysv();
    // Every writer of the error pipe is gone now: this read does not block.
    if let Some(e) = sync::read_error(&err_r) {
        return StepReply {
            exit_code: e.exit_code(),
            timed_out,
            error: Some(format!("pinfold exec: {e}")),
        };
    }
    StepReply {
        exit_code: code,
        timed_out,
        error: None,
    }
}

/// What a step's process starts from (see [`spawn_step`]).
struct Spawn<'a> {
    p: &'a Prepared,
    ready: &'a process::StepsReady,
    exec: &'a process::ExecArgs,
    out: RawFd,
    err: RawFd,
}

/// The stack a step runs on until its execve: mapped once, with a guard
/// page below it.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    const LEN: usize = 1 << 20;
    const GUARD: usize = 1 << 12;

    fn new() -> Result<Stack, StepError> {
        // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(StepError::new("map the steps' stack", Errno::last().desc()));
        }
        // SAFETY: the lowest page of the mapping just made, which nothing uses.
        if unsafe { libc::mprotect(base, Self::GUARD, libc::PROT_NONE) } < 0 {
            return Err(StepError::new(
                "guard the steps' stack",
                Errno::last().desc(),
            ));
        }
        Ok(Stack {
            base,
            len: Self::LEN,
        })
    }
}

/// Starts a step the way posix_spawn does: clone(CLONE_VM | CLONE_VFORK)
/// onto a stack of its own, so the step shares init's memory until its
/// execve and init waits until then. No page table is copied and no page
/// copied on write, which a fork of init paid on every step (about 0.3 ms
/// of the ~1 ms a step took to start). Hand-written: neither nix nor
/// std start a child that runs Rust code before execve without a fork.
/// What the step runs ([`step_main`], [`process::exec_job`]) only reads
/// what it shares.
fn spawn_step(s: &Spawn<'_>, stack: &Stack) -> Result<Pid, Errno> {
    // SAFETY: the stack is ours and unused (init runs one step at a time,
    // and CLONE_VFORK keeps init stopped until the step has exec'd or
    // exited, so `s` outlives the step's use of it). Init is
    // single-threaded: no lock is held by another thread while the step
    // runs in its memory.
    let pid = unsafe {
        libc::clone(
            step_main,
            stack.base.cast::<u8>().add(stack.len).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (s as *const Spawn<'_>).cast_mut().cast(),
        )
    };
    if pid < 0 {
        return Err(Errno::last());
    }
    Ok(Pid::from_raw(pid))
}

extern "C" fn step_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Spawn` that `spawn_step` passed, alive in
    // init's frame until this process execs or exits (CLONE_VFORK).
    let s = unsafe { &*(arg as *const Spawn<'_>) };
    let e = match step_io(s.out) {
        Ok(()) => process::exec_job(s.p, Some((s.ready, s.exec))),
        Err(e) => e,
    };
    // SAFETY: the error pipe's write end, open in this process until execve.
    sync::report(unsafe { std::os::fd::BorrowedFd::borrow_raw(s.err) }, &e);
    // SAFETY: _exit skips the atexit handlers and stdio of init's image.
    unsafe { libc::_exit(e.code) }
}

/// The step's stdin is the container's /dev/null; stdout and stderr, the
/// runner's pipe.
fn step_io(out: RawFd) -> Result<(), StepError> {
    use std::os::fd::AsRawFd;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty())
        .step("open /dev/null for the step's stdin")?;
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (out.as_raw_fd(), 1),
        (out.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 onto the standard fds of this (forked, single-threaded) child.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(StepError::new(
                "attach the step's output",
                Errno::last().desc(),
            ));
        }
    }
    Ok(())
}

/// How waiting for a step ended.
enum Waited {
    /// Its first process ended with this status.
    Exited(i32),
    /// Its deadline passed first.
    TimedOut,
    /// The runner closed the control channel (it died, or stops the job).
    RunnerGone,
}

/// Waits for the step's first process, forwarding the signals the runner
/// sends to it; gives up at `deadline` or when the runner hangs up.
fn wait_step(
    step: Pid,
    signals: &mut SignalFd,
    control: &Control,
    deadline: Option<std::time::Instant>,
) -> Waited {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // The peer closed its end (nix names no POLLRDHUP).
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    loop {
        if let Some(code) = reap(step) {
            return Waited::Exited(code);
        }
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Waited::TimedOut;
                }
                PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(control.as_fd(), rdhup),
        ];
        if let Err(Errno::EINTR) | Ok(_) = poll(&mut fds, wait) {}
        if control.peer() != Peer::Open {
            return Waited::RunnerGone;
        }
        while let Ok(Some(info)) = signals.read_signal() {
            if info.ssi_signo as i32 != libc::SIGCHLD {
                // SAFETY: kill(2) with a pid we started and a signal number the kernel gave us.
                unsafe { libc::kill(step.as_raw(), info.ssi_signo as i32) };
            }
        }
    }
}

/// Kills and reaps every process of the container but init. Every other
/// process of the namespace descends from init (orphans are re-parented
/// to it), so no child left means nobody left. kill(-1) walks every
/// process of the host, not just this namespace's, so it is only paid when
/// there is something to kill; from PID 1 it reaches every other process
/// of the pid namespace: double-forked, setsid'd daemons included.
fn kill_the_rest() {
    if let Err(Errno::ECHILD) = waitpid(
        None::<Pid>,
        Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
    ) {
        return;
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => return,
        }
    }
}

/// Removes the SysV shared memory segments, message queues and semaphore
/// sets the step made: they outlive their processes, and the next step
/// must start with the IPC namespace as empty as the first did. Init
/// needs no capability for it: their creator's uid is its own.
fn clear_sysv() {
    for (file, kind) in [("shm", 0), ("msg", 1), ("sem", 2)] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/sysvipc/{file}")) else {
            continue;
        };
        // key, id, perms, ...: the id is the second column.
        for id in text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<i32>().ok())
        {
            // SAFETY: IPC_RMID with a null buffer reads and writes no memory.
            unsafe {
                match kind {
                    0 => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                    1 => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                    _ => libc::semctl(id, 0, libc::IPC_RMID),
                }
            };
        }
    }
}

/// What every step inherits from init and a step could change in it
/// without privilege (see [`serve`]).
#[derive(PartialEq)]
struct Inherited {
    rlimits: Vec<(u64, u64)>,
    nice: i32,
    policy: i32,
    attr: [u8; 128],
    ioprio: i64,
}

impl Inherited {
    fn now() -> Inherited {
        // The 16 limits Linux has had since 2.6.25 (RLIMIT_RTTIME).
        let rlimits = (0..16)
            .map(|r| {
                let mut l = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: getrlimit writes one rlimit into `l`.
                unsafe { libc::getrlimit(r as _, &mut l) };
                (l.rlim_cur, l.rlim_max)
            })
            .collect();
        // SAFETY: these read the calling process's own attributes and
        // write only into the buffers passed.
        unsafe {
            // The whole sched_attr (policy, flags, nice, priority, the
            // custom slice, utilisation clamps): sched_setattr on another
            // process of the same uid needs no privilege either.
            let mut attr = [0u8; 128];
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                attr.as_mut_ptr(),
                attr.len() as libc::c_uint,
                0,
            );
            Inherited {
                rlimits,
                nice: libc::getpriority(libc::PRIO_PROCESS, 0),
                policy: libc::sched_getscheduler(0),
                attr,
                // IOPRIO_WHO_PROCESS, this process.
                ioprio: libc::syscall(libc::SYS_ioprio_get, 1, 0),
            }
        }
    }

    /// What differs from now, named; `None` when nothing does.
    fn changed(&self) -> Option<&'static str> {
        let now = Inherited::now();
        if now.rlimits != self.rlimits {
            Some("resource limits (prlimit)")
        } else if now.nice != self.nice || now.policy != self.policy || now.attr != self.attr {
            Some("scheduling priority (setpriority, sched_setscheduler, sched_setattr)")
        } else if now.ioprio != self.ioprio {
            Some("I/O priority (ioprio_set)")
        } else {
            None
        }
    }
}
