//! The job process: the last steps before execve, in this order.
//!
//! signals restored → rlimits → setsid → umask → chdir + cwd check → close_range →
//! capabilities dropped (bounding, ambient, inheritable, permitted, effective)
//! and securebits locked → no_new_privs → Landlock → seccomp → execve.
//!
//! A job container's step inherits from its init what the init did once
//! for all steps ([`prepare_steps`]): the signal dispositions, the dropped
//! capabilities and the Landlock ruleset, which the step puts in force.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigHandler, SigmaskHow, Signal, signal, sigprocmask};

use super::Prepared;
use super::landlock::{self, Enforcement};
use super::mounts::writable_paths;
use super::sync::{Step, StepError};

type Result<T> = std::result::Result<T, StepError>;

/// Runs the job's setup and execs its command; returns only on failure.
/// `ready`: a job container's step, which inherits what its init did once
/// ([`prepare_steps`]). Reads `p` and changes nothing in it: a step runs
/// in its init's memory until execve.
pub(crate) fn exec_job(p: &Prepared, ready: Option<(&StepsReady, &ExecArgs)>) -> StepError {
    let own;
    let args = match ready {
        Some((_, a)) => a,
        None => {
            own = ExecArgs::new(p);
            &own
        }
    };
    match harden(p, ready.map(|(r, _)| r)) {
        Ok(()) => exec(p, args),
        Err(e) => e,
    }
}

/// What a job container's init does once for all its steps, which each
/// step then inherits instead of doing itself: every signal's disposition
/// back to the default, the capabilities dropped (and checked gone), and
/// the Landlock ruleset made and filled (each step puts it in force).
/// Without it (a single command), the job does all of it.
pub(crate) fn prepare_steps(p: &Prepared) -> Result<StepsReady> {
    reset_dispositions();
    let empty = [
        caps::CapSet::Bounding,
        caps::CapSet::Ambient,
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ]
    .into_iter()
    .all(|set| caps::read(None, set).is_ok_and(|c| c.is_empty()));
    if !empty {
        return Err(StepError::new(
            "drop init's capabilities",
            "some are left after clearing them",
        ));
    }
    let ruleset = landlock::prepare(&landlock_rules(p))
        .map_err(|e| StepError::new("prepare Landlock", e))?
        .into_fd();
    // SAFETY: an all-zero cpu_set_t is a valid empty set; sched_getaffinity
    // writes one into it.
    let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut cpus) };
    Ok(StepsReady { ruleset, cpus })
}

/// What [`prepare_steps`] made.
pub(crate) struct StepsReady {
    /// The Landlock ruleset (`None`: none on this kernel).
    ruleset: Option<std::os::fd::OwnedFd>,
    /// Init's CPUs when the job began, which each step takes.
    cpus: libc::cpu_set_t,
}

fn harden(p: &Prepared, ready: Option<&StepsReady>) -> Result<()> {
    let t = std::time::Instant::now();
    match ready {
        None => reset_dispositions(),
        // Init's CPUs as they were when the job began: a step may have
        // narrowed init's (sched_setaffinity needs no privilege against a
        // process of the same uid), and the host's cpuset may have changed
        // since (best effort: then the kernel keeps what it allows).
        // SAFETY: sched_setaffinity reads one cpu_set_t.
        Some(r) => unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &r.cpus);
        },
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&p.saved_sigmask), None)
        .step("restore the signal mask")?;
    set_rlimits(p)?;
    nix::unistd::setsid().step("setsid")?;
    if let Some(m) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m as libc::mode_t));
    }
    enter_workdir(&p.workdir)?;
    close_inherited_fds()?;
    if ready.is_none() {
        drop_capabilities()?;
    }
    set_no_new_privs()?;
    let enforced = match ready {
        Some(StepsReady {
            ruleset: Some(fd), ..
        }) => landlock::restrict_fd(std::os::fd::AsFd::as_fd(fd)).map(|()| Enforcement::Full),
        Some(StepsReady { ruleset: None, .. }) => Ok(Enforcement::None),
        None => landlock::prepare(&landlock_rules(p)).and_then(landlock::Prepared::restrict),
    };
    match enforced {
        Ok(Enforcement::Full) => {}
        // What this kernel leaves out was decided, and is reported, by
        // the parent (`crate::kernel::assess`).
        Ok(level) => tracing::debug!(
            ?level,
            kernel_abi = landlock::kernel_abi(),
            "Landlock is not fully enforced on this kernel"
        ),
        Err(e) => return Err(StepError::new("apply Landlock", e)),
    }
    tracing::debug!(
        elapsed_us = t.elapsed().as_micros() as u64,
        "job hardened up to seccomp"
    );
    // Seccomp comes last: nothing after it but execve.
    p.filters
        .apply()
        .map_err(|e| StepError::new("apply the seccomp filter", e))?;
    Ok(())
}

/// The job's Landlock rules (see [`landlock`]).
fn landlock_rules(p: &Prepared) -> landlock::Rules {
    landlock::Rules {
        writable: writable_paths(p),
        devices: [
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/tty",
            "/dev/pts",
            "/dev/ptmx",
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
        allow_tcp: p.loopback_tcp,
        connect_ports: match p.network {
            crate::policy::NetworkMode::Allowlist => vec![crate::net::proxy::PROXY_ADDR.1],
            _ => Vec::new(),
        },
        min_abi: p.landlock_min_abi,
    }
}

/// Rust ignores SIGPIPE at startup and ignored dispositions survive
/// execve: puts every catchable signal back to the default.
fn reset_dispositions() {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no handler code; the process is
        // single-threaded (the job about to exec, or a job container's
        // init, whose forwarded signals are blocked and read from a
        // signalfd, where a disposition does not matter).
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
}

/// RLIMIT_MEMLOCK of every job (see `set_rlimits`).
pub(crate) const MEMLOCK: u64 = 64 << 10;

fn set_rlimits(p: &Prepared) -> Result<()> {
    let l = &p.limits;
    let fsize = if l.fsize.0 == 0 {
        libc::RLIM_INFINITY
    } else {
        l.fsize.0
    };
    // `pids` caps the whole container; RLIMIT_NPROC, counted per uid in the
    // container's own user namespace, is its kernel-enforced backstop (see
    // `limits`), so a fork bomb cannot outrun the supervisor's poll.
    let nproc = match l.pids {
        0 => l.nproc,
        pids => l.nproc.min(pids),
    };
    // RLIMIT_CPU is per process: a backstop a little above the container-wide
    // `cpu_time`, which the supervisor (or cgroup) enforces and names first.
    let cpu = match l.cpu_time.0 {
        0 => libc::RLIM_INFINITY,
        secs => secs.saturating_add(2),
    };
    for (res, value, name) in [
        (Resource::RLIMIT_CORE, 0, "core"),
        // mlock pins pages the fallback does not charge (file page cache):
        // 64 KiB per process, the kernel's default before systemd 253 raised
        // it to 8 MiB, enough for the secret buffers of gpg or libsodium.
        (Resource::RLIMIT_MEMLOCK, MEMLOCK, "memlock"),
        (Resource::RLIMIT_NOFILE, l.nofile, "nofile"),
        (Resource::RLIMIT_NPROC, nproc, "nproc"),
        (Resource::RLIMIT_FSIZE, fsize, "fsize"),
        (Resource::RLIMIT_CPU, cpu, "cpu"),
    ] {
        // A policy limit is a ceiling: rootless, a hard limit can only go down,
        // so a caller already below it keeps its own (stricter) value.
        let (_, hard) = getrlimit(res)
            .map_err(|e| StepError::new(format!("read the {name} limit"), e.desc()))?;
        let value = value.min(hard);
        setrlimit(res, value, value)
            .map_err(|e| StepError::new(format!("set the {name} limit to {value}"), e.desc()))?;
    }
    Ok(())
}

/// chdir, then make sure the working directory is really inside the new
/// root: a leaked host directory fd would show as "(unreachable)" (the runc
/// CVE-2024-21626 class).
fn enter_workdir(workdir: &Path) -> Result<()> {
    let step = format!("enter the working directory {}", workdir.display());
    nix::unistd::chdir(workdir).map_err(|e| StepError::new(&step, e.desc()))?;
    let cwd = nix::unistd::getcwd().map_err(|e| StepError::new(&step, e.desc()))?;
    if !cwd.is_absolute() || cwd.as_os_str().as_bytes().starts_with(b"(unreachable)") {
        return Err(StepError::new(
            step,
            format!("cwd resolves outside the container: {}", cwd.display()),
        ));
    }
    Ok(())
}

/// Marks every fd above 2 close-on-exec, so the command starts with 0-2 only.
/// (Close-on-exec rather than close: the error pipe must live until execve.)
fn close_inherited_fds() -> Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on fds.
    let rc = unsafe { libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if rc < 0 {
        return Err(StepError::new("close inherited fds", Errno::last().desc()));
    }
    Ok(())
}

/// NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE set, each with its
/// lock bit; KEEP_CAPS left off and locked off.
const SECURE: libc::c_ulong = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80;

/// Locks the root-is-special rules off so no exec can grant capabilities
/// back. Needs CAP_SETPCAP, unless they are locked already (a job
/// container's step inherits them from init, which has no capabilities).
pub(crate) fn lock_securebits() -> std::result::Result<(), Errno> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) } == SECURE as libc::c_int {
        return Ok(());
    }
    // SAFETY: prctl with integer arguments only.
    Errno::result(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, SECURE, 0, 0, 0) }).map(drop)
}

fn drop_capabilities() -> Result<()> {
    let step = "drop capabilities";
    lock_securebits().map_err(|e| StepError::new(step, format!("securebits: {}", e.desc())))?;
    caps::clear(None, caps::CapSet::Bounding).map_err(|e| StepError::new(step, e))?;
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| StepError::new(step, e))?;
    caps::clear(None, caps::CapSet::Inheritable).map_err(|e| StepError::new(step, e))?;
    caps::clear(None, caps::CapSet::Effective).map_err(|e| StepError::new(step, e))?;
    caps::clear(None, caps::CapSet::Permitted).map_err(|e| StepError::new(step, e))?;
    Ok(())
}

pub(crate) fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(StepError::new("set no_new_privs", Errno::last().desc()));
    }
    Ok(())
}

/// What execve is given, made before the job's last steps: the paths to
/// try (a PATH search over the container's PATH: execvpe would use ours)
/// and the NULL-terminated argv and envp arrays, pointing into a
/// [`Prepared`] that must outlive it. A job container's init makes it
/// before starting the step, so that the step, which runs in init's
/// memory, allocates nothing that its execve would leave behind there.
pub(crate) struct ExecArgs {
    candidates: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecArgs {
    pub(crate) fn new(p: &Prepared) -> ExecArgs {
        let cmd = p.argv[0].as_bytes();
        let candidates: Vec<CString> = if cmd.contains(&b'/') {
            vec![p.argv[0].clone()]
        } else {
            p.search_path
                .iter()
                .filter(|d| !d.is_empty())
                .filter_map(|d| {
                    let mut v = d.as_bytes().to_vec();
                    v.push(b'/');
                    v.extend_from_slice(cmd);
                    CString::new(v).ok()
                })
                .collect()
        };
        let array = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        ExecArgs {
            candidates,
            argv: array(&p.argv),
            envp: array(&p.env),
        }
    }
}

/// execve over `a`'s candidates. ENOENT everywhere → 127; found but not
/// executable → 126.
fn exec(p: &Prepared, a: &ExecArgs) -> StepError {
    let mut denied = None;
    for c in &a.candidates {
        // SAFETY: `c`, and every pointer of the NULL-terminated arrays,
        // point into C strings that live in `a` and `p` for this call.
        unsafe { libc::execve(c.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr()) };
        match Errno::last() {
            Errno::ENOENT | Errno::ENOTDIR => continue,
            e @ (Errno::EACCES | Errno::EPERM) => denied = Some((c, e)),
            e => {
                return StepError::new(format!("execute {}", c.to_string_lossy()), e.desc())
                    .code(126);
            }
        }
    }
    let name = p.argv[0].to_string_lossy().into_owned();
    match denied {
        Some((c, e)) => StepError::new(format!("execute {}", c.to_string_lossy()), e.desc())
            .hint("the file is not executable in the container")
            .code(126),
        None => StepError::new(format!("execute {name}"), "command not found")
            .hint("check the command exists in the rootfs and the container's PATH")
            .code(127),
    }
}
