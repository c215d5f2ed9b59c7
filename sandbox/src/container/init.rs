//! PID 1 of the container: reaps zombies, forwards signals to the job, and
//! exits with the job's status. When it exits the kernel kills every other
//! process of the pid namespace, so no daemon outlives the job.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::forwarded_signals;

/// Supervises `job` until it ends, then kills and reaps every other process
/// of the container; returns the status to exit with (the job's code, or
/// 128+N when signal N killed it).
pub(crate) fn supervise(job: Pid) -> i32 {
    let code = wait_for_job(job);
    // Every other process of the namespace descends from init (orphans are
    // re-parented to it), so no child left means nobody left. kill(-1) walks
    // every process of the host, not just this namespace's, so it is only
    // paid when there is something to kill.
    if let Err(Errno::ECHILD) = waitpid(
        None::<Pid>,
        Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
    ) {
        return code;
    }
    // kill(-1) from PID 1 reaches every other process of the pid namespace:
    // double-forked, setsid'd daemons included.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            Err(Errno::ECHILD) => return code,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => return code,
        }
    }
}

fn wait_for_job(job: Pid) -> i32 {
    let mut wait_set: SigSet = forwarded_signals();
    wait_set.add(Signal::SIGCHLD);
    loop {
        // Reap everything that has exited: the job, or orphans re-parented to us.
        loop {
            match waitpid(
                None::<Pid>,
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Ok(WaitStatus::Exited(pid, code)) if pid == job => return code,
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == job => return 128 + sig as i32,
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
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
