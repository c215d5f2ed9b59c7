//! The cloned child: PID 1 of the new pid namespace. Numbered as it runs.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::unistd::{ForkResult, fork, sethostname};

use super::Prepared;
use super::sync::{self, Step, StepError};
use super::{idmap, init, mounts, process};
use crate::net::netns;
use crate::policy::NetworkMode;

/// Never returns: exits with the job's status, or 125 after reporting a failure.
/// `proxy` is the channel the `allowlist` listener is sent over.
pub(crate) fn main(
    mut p: Prepared,
    go: OwnedFd,
    err: OwnedFd,
    status: OwnedFd,
    proxy: Option<OwnedFd>,
    control: Option<OwnedFd>,
) -> ! {
    // 1. If the parent dies, so does the container (and with PID 1, all of it).
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // 1b. The network namespace, made beside the steps below (see
    // `netns::PendingNetns`); in egress mode the clone made it, for pasta.
    let pending_netns = (p.network != NetworkMode::Egress).then(netns::PendingNetns::start);
    // 2. Open the host paths while our credentials are still the caller's.
    let opened = super::HostFds::open(&p);
    // 3. Id maps: write our own single-id maps, after checking the parent
    // is still there (PDEATHSIG covers it from here on); or wait until the
    // parent has written them (EOF: it died first).
    match p.self_map {
        Some((uid, gid)) => {
            if sync::parent_gone(&go) {
                exit(125);
            }
            if let Err(e) = idmap::write_own(uid, gid) {
                sync::report(&err, &e);
                exit(125);
            }
        }
        None => {
            if !sync::wait_for_go(&go) {
                exit(125);
            }
        }
    }
    match opened {
        Ok(fds) => p.fds = fds,
        Err(e) => {
            sync::report(&err, &StepError::new("open host paths", e));
            exit(125);
        }
    }
    drop(go);
    match setup(&p, pending_netns) {
        Ok(()) => {}
        Err(e) => {
            sync::report(&err, &e);
            exit(e.code);
        }
    }
    // 7b. allowlist: the proxy's listener, made here, sent to the parent
    // (SCM_RIGHTS), which serves it; our copy is closed at once.
    if let Some(channel) = proxy {
        let sent = netns::proxy_listener()
            .and_then(|l| sync::send_fds(&channel, &[std::os::fd::AsRawFd::as_raw_fd(&l)]));
        if let Err(e) = sent {
            let e = StepError::new("create the allowlist proxy's socket", e.desc());
            sync::report(&err, &e);
            exit(e.code);
        }
    }
    // 8. The host fds (rootfs layers, bind sources, devices) are
    // mounted now: close them so neither init nor the job holds a host fd.
    drop(std::mem::take(&mut p.fds));
    if let Some(control) = control {
        // 9'. A job container: init forks each step the runner asks for.
        drop(err);
        let (layer_is_tmpfs, workspace) = disks(&p);
        harden_init();
        let code = init::serve(&mut p, control);
        let full = if code == 0 {
            0
        } else {
            super::limits::full_disks(layer_is_tmpfs, workspace.as_deref())
        };
        sync::write_status(&status, code, full);
        exit(code);
    }
    let keep_err = err;
    // SAFETY: fork in a single-threaded process (this child has one thread).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(status);
            // 9. The job: harden and exec.
            let e = process::exec_job(&p, None);
            sync::report(&keep_err, &e);
            exit(e.code);
        }
        Ok(ForkResult::Parent { child }) => {
            drop(keep_err);
            let (layer_is_tmpfs, workspace) = disks(&p);
            drop(p);
            // 10. Init: no capabilities, not dumpable (so /proc/1/exe, which
            // points at the host's pinfold binary, cannot be opened by the job).
            harden_init();
            let code = init::supervise(child);
            // The mounts live until init exits: a failed job may have failed
            // because one of its disks is full.
            let full = if code == 0 {
                0
            } else {
                super::limits::full_disks(layer_is_tmpfs, workspace.as_deref())
            };
            // Every process of the container is dead and reaped: report, so
            // the parent need not wait for the namespaces' teardown.
            sync::write_status(&status, code, full);
            exit(code);
        }
        Err(e) => {
            sync::report(&keep_err, &StepError::new("fork the job", e.desc()));
            exit(125);
        }
    }
}

/// Whether the writable layer is a policy-sized tmpfs (the stage's or the
/// job file system's), and where the job file system's workspace is: the
/// disks init checks after a failed command.
fn disks(p: &Prepared) -> (bool, Option<std::path::PathBuf>) {
    (
        p.filesystem.rootfs_writable,
        p.job_fs.is_some().then(|| p.workdir.clone()),
    )
}

fn setup(p: &Prepared, pending: Option<netns::PendingNetns>) -> Result<(), StepError> {
    // 4. Become root of the user namespace (gids first, while we may).
    // Raw syscalls change only this thread's credentials; glibc's wrappers
    // would signal the netns thread to change its own and wait until it
    // returns from the kernel, i.e. until the namespace is made, which
    // undoes the overlap. That thread exits before anything is forked, so
    // every process of the container gets this thread's credentials.
    become_root(p.setgroups_allowed)?;
    // 4b. SysV shm of the fresh IPC namespace capped at limits.memory
    // (while /proc/sys is still writable: see `memory::cap_sysv`).
    super::memory::cap_sysv(p.limits.memory.0)
        .step("cap SysV shared memory at limits.memory (/proc/sys/kernel/shmall)")?;
    let t = std::time::Instant::now();
    // 5. Rootfs, mounts, pivot_root.
    mounts::setup(p)?;
    tracing::debug!(elapsed_us = t.elapsed().as_micros() as u64, "mounts ready");
    // 6. Hostname.
    sethostname(&p.hostname).step("set the hostname")?;
    if let Some(d) = &p.domainname {
        // nix has no setdomainname.
        // SAFETY: a valid pointer and length into a live string; the
        // kernel copies it.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } < 0 {
            return Err(StepError::new(
                "set the domain name",
                nix::errno::Errno::last().desc(),
            ));
        }
    }
    // 7. Network: join the namespace made beside the mounts (loopback up);
    // in egress mode, bring loopback up in the clone's namespace, where
    // pasta is attached already, and refuse the host's network, special-use
    // ranges and metadata endpoints by policy-routing rules.
    match pending {
        Some(n) => n
            .enter()
            .step("create the network namespace (loopback up)")?,
        None => netns::loopback_up().step("bring loopback up")?,
    }
    if p.network == NetworkMode::Egress {
        netns::refuse_ranges(&p.egress_refused)
            .step("refuse the host's network and special-use address ranges")?;
    }
    tracing::debug!(elapsed_us = t.elapsed().as_micros() as u64, "network ready");
    Ok(())
}

/// Makes the calling thread root of the user namespace: setresgid, then
/// (where the namespace allows it) an empty group list, then setresuid, each
/// a raw syscall for this thread alone (see `setup`).
fn become_root(drop_groups: bool) -> Result<(), StepError> {
    // SAFETY: setresgid takes three integer ids and touches no memory.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresgid, 0u32, 0u32, 0u32) })
        .step("become root in the user namespace (setresgid)")?;
    if drop_groups {
        // SAFETY: setgroups with a zero count reads no memory.
        Errno::result(unsafe {
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>())
        })
        .step("drop supplementary groups")?;
    }
    // SAFETY: setresuid takes three integer ids and touches no memory.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresuid, 0u32, 0u32, 0u32) })
        .step("become root in the user namespace (setresuid)")?;
    // The kernel clears the parent-death signal when the effective uid
    // changes, which it does when pinfold runs as real root (host 0 → an
    // unprivileged range): arm it again, or a killed runner would leave the
    // container running.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    Ok(())
}

fn harden_init() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let _ = nix::unistd::setsid();
    // While init still holds CAP_SETPCAP: a job container's steps are
    // forked from it and inherit the locked bits (see `process`).
    let _ = process::lock_securebits();
    for set in [
        caps::CapSet::Bounding,
        caps::CapSet::Ambient,
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        let _ = caps::clear(None, set);
    }
    let _ = process::set_no_new_privs();
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit skips atexit handlers and stdio flushing that belong to the
    // parent's copy of the process state.
    unsafe { libc::_exit(code) }
}
