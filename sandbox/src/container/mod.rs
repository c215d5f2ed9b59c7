//! A rootless container that runs one command. This file's one job is the
//! container setup sequence: prepare in the parent, clone, release, wait.
//! What a caller gives and gets back is in `spec` ([`ContainerSpec`],
//! [`Outcome`]); how the container reaches the network (the effective
//! mode, the allowlist proxy, pasta, the network namespace) is decided and
//! enforced in [`crate::net`].
//!
//! The setup reads top to bottom in the order it happens:
//!
//! * parent ([`run`]): resolve the policy's seccomp profile and compile it,
//!   decide the effective network mode ([`crate::net::effective`]), open
//!   every host path the child needs (rootfs layers, bind sources, device
//!   nodes) as `O_PATH` fds while still the caller, fetch the job file
//!   system's mounts from its holder ([`jobfs`]) under the runner, clone the
//!   child into new user, mount, pid, ipc, uts and cgroup namespaces (and
//!   net in `egress`), write its id maps ([`idmap`]) and release it (with a
//!   single-id map and no network the child writes its own map and goes on
//!   without waiting), attach pasta in `egress`, serve the `allowlist` proxy
//!   (with the allowlist parsed when the policy was loaded) on the listener
//!   the child sends back, then wait, forwarding signals and enforcing the
//!   timeout;
//! * child, PID 1 of the new pid namespace ([`child`]): start making the
//!   network namespace on a second thread (unless `egress`), become root of
//!   the user namespace, build the rootfs and mounts ([`mounts`]; the job
//!   file system's layer and workspace attached with `move_mount`), pivot_root,
//!   set the hostname, join the network namespace (loopback up), then fork
//!   the job and become its init ([`init`]);
//! * job ([`process`]): rlimits, setsid, chdir + cwd check, close_range,
//!   drop capabilities, no_new_privs, Landlock ([`landlock`]), seccomp
//!   ([`seccomp`]) last, execve.
//!
//! Errors in the child travel back over a pipe and become [`ContainerError::Setup`],
//! which names the step that failed and what to do.

pub mod cgroup;
mod child;
pub mod idmap;
mod init;
pub mod jobfs;
pub mod landlock;
pub mod limits;
pub mod memory;
mod mounts;
mod process;
pub mod report;
mod rootpath;
pub mod seccomp;
mod spec;
pub mod steps;
mod sync;

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::net::{self, netns, pasta, proxy};
use crate::policy::{FilesystemPolicy, Limits, NetworkMode, PolicyError};

pub use idmap::{IdMapMode, IdMapPlan};
pub use spec::{Bind, ContainerSpec, Finished, Outcome};

/// Errors from setting up or running a container.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // variant fields are described by the messages
pub enum ContainerError {
    /// The policy or its seccomp profile could not be loaded.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The seccomp profile could not be compiled.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// The spec is unusable (bad path, bad argument).
    #[error("{0}")]
    Spec(String),
    /// A host path the container needs could not be opened.
    #[error("cannot open {what} {path}: {source}")]
    OpenHostPath {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    /// The id maps could not be planned or written.
    #[error(transparent)]
    IdMap(#[from] idmap::IdMapError),
    /// The job file system could not be fetched.
    #[error(transparent)]
    JobFs(#[from] jobfs::JobFsError),
    /// The policy does not run on this kernel.
    #[error(transparent)]
    Kernel(#[from] crate::kernel::Refusal),
    /// pasta could not be attached (network mode `egress`).
    #[error(transparent)]
    Pasta(#[from] net::PastaError),
    /// A step in the parent failed.
    #[error("{step}: {source}{}", hint_suffix(.hint))]
    Parent {
        step: &'static str,
        #[source]
        source: Errno,
        hint: Option<&'static str>,
    },
    /// A step inside the child failed; `code` is the exit status to report
    /// (125 setup, 126 not executable, 127 not found).
    #[error("{step}: {message}{}", hint_suffix(.hint))]
    Setup {
        step: String,
        message: String,
        hint: Option<String>,
        code: i32,
    },
}

fn hint_suffix<S: AsRef<str>>(hint: &Option<S>) -> String {
    match hint {
        Some(h) => format!(" ({})", h.as_ref()),
        None => String::new(),
    }
}

impl ContainerError {
    /// The exit status `pinfold exec` reports for this error: 126 when the
    /// command exists but cannot be executed, 127 when it does not exist, 125
    /// for every failure of the sandbox itself (the docker/podman contract).
    pub fn exit_code(&self) -> i32 {
        match self {
            ContainerError::Setup { code, .. } => *code,
            _ => 125,
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, ContainerError>;

/// What the parent prepares for the child before cloning: all host resources
/// are opened here, as the caller, so the child never resolves a host path.
pub(crate) struct Prepared {
    /// Opened by the child (see [`HostFds::open`]).
    pub fds: HostFds,
    /// Rootfs layers, absolute, topmost first.
    pub layers: Vec<PathBuf>,
    /// The job file system's mounts, fetched before the clone.
    pub job_fs: Option<jobfs::Mounts>,
    /// Each bind with whether its source is a directory (same order as `fds.binds`).
    pub binds: Vec<(Bind, bool)>,
    /// The parts of the policy the child applies. Not the whole policy:
    /// its network mode is the ceiling, and the child sees only `network`.
    pub filesystem: FilesystemPolicy,
    pub limits: Limits,
    pub landlock_min_abi: u32,
    pub loopback_tcp: bool,
    pub workdir: PathBuf,
    pub hostname: String,
    pub domainname: Option<String>,
    pub umask: Option<u32>,
    pub env: Vec<CString>,
    /// `env` before it became C strings: a job container's steps add theirs.
    pub env_pairs: Vec<(String, String)>,
    pub reverse_env: bool,
    pub argv: Vec<CString>,
    pub search_path: Vec<String>,
    pub filters: seccomp::Filters,
    pub setgroups_allowed: bool,
    /// The caller's (uid, gid) when the child writes its own single-id maps
    /// (see [`run_blocked`]); `None` when the parent writes them.
    pub self_map: Option<(u32, u32)>,
    pub saved_sigmask: SigSet,
    /// The effective network mode ([`net::effective`]): the only one.
    pub network: NetworkMode,
    /// `egress`: the prefixes the child refuses, read from the host by the
    /// parent before the clone (see [`netns::egress_refusals`]).
    pub egress_refused: Vec<crate::net::ranges::Net>,
}

/// Host paths the child opens right after clone, before its id maps exist:
/// its credentials are still the caller's then (same uid, same groups), so the
/// caller's permissions decide. Closed once mounted.
#[derive(Default)]
pub(crate) struct HostFds {
    pub layers: Vec<OwnedFd>,
    pub binds: Vec<OwnedFd>,
    pub dev_nodes: Vec<(&'static str, OwnedFd)>,
}

impl HostFds {
    pub(crate) fn open(p: &Prepared) -> Result<HostFds> {
        Ok(HostFds {
            layers: p
                .layers
                .iter()
                .map(|l| open_path("rootfs", l, true))
                .collect::<Result<_>>()?,
            binds: p
                .binds
                .iter()
                .map(|(b, _)| open_path("bind source", &b.source, false))
                .collect::<Result<_>>()?,
            dev_nodes: DEV_NODES
                .iter()
                .map(|n| Ok((*n, open_path("device", &Path::new("/dev").join(n), false)?)))
                .collect::<Result<_>>()?,
        })
    }
}

/// Device nodes bound from the host into the container's /dev.
pub(crate) const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Signals the parent forwards to the container (and its init to the job).
pub(crate) fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

fn open_path(what: &'static str, path: &Path, dir: bool) -> Result<OwnedFd> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    open(path, flags, Mode::empty()).map_err(|source| ContainerError::OpenHostPath {
        what,
        path: path.to_owned(),
        source,
    })
}

fn to_cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| ContainerError::Spec(format!("{what} {s:?} contains a NUL byte")))
}

/// The default PATH inside the container (the one docker uses).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn prepare(spec: &ContainerSpec, saved_sigmask: SigSet) -> Result<Prepared> {
    if spec.argv.is_empty() && spec.control.is_none() {
        return Err(ContainerError::Spec(
            "no command given: put it after `--`".into(),
        ));
    }
    if spec.layers.is_empty() {
        return Err(ContainerError::Spec("no rootfs given".into()));
    }
    if !spec.workdir.is_absolute() {
        return Err(ContainerError::Spec(format!(
            "the working directory {} must be absolute",
            spec.workdir.display()
        )));
    }
    if spec.hostname.is_empty()
        || spec.hostname.len() > 64
        || !spec
            .hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(ContainerError::Spec(format!(
            "bad hostname {:?}: use up to 64 letters, digits, '-' and '.'",
            spec.hostname
        )));
    }
    if let Some(d) = &spec.domainname
        && (d.is_empty()
            || d.len() > 64
            || !d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(ContainerError::Spec(format!(
            "bad domain name {d:?}: use up to 64 letters, digits, '-' and '.'"
        )));
    }
    if let Some(m) = spec.umask
        && m > 0o777
    {
        return Err(ContainerError::Spec(format!(
            "bad umask {m:o}: give an octal mode up to 0777"
        )));
    }
    let network = net::effective(spec.policy.network.mode, spec.network)
        .map_err(|e| ContainerError::Spec(format!("{e}: choose a policy that allows it")))?;
    let t = Instant::now();
    let filters = seccomp::Filters::for_policy(&spec.policy, &spec.settings)?;
    tracing::debug!(elapsed_us = t.elapsed().as_micros() as u64, profile = %filters.profile, "seccomp filters ready");
    // Check every host path now, as the caller, for a clear early error. The
    // child opens them again itself: overlayfs and bind mounts need fds that
    // belong to the child's own mount namespace.
    let mut layers = Vec::new();
    for l in &spec.layers {
        drop(open_path("rootfs", l, true)?);
        layers.push(
            std::path::absolute(l)
                .map_err(|e| ContainerError::Spec(format!("rootfs {}: {e}", l.display())))?,
        );
    }
    let job_fs = match &spec.job_fs {
        Some(socket) => Some(jobfs::fetch(socket, &spec.policy.filesystem)?),
        None => None,
    };
    let mut binds = Vec::new();
    for b in &spec.binds {
        let fd = open_path("bind source", &b.source, false)?;
        let is_dir = nix::sys::stat::fstat(&fd)
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(|source| ContainerError::OpenHostPath {
                what: "bind source",
                path: b.source.clone(),
                source,
            })?;
        let mut b = b.clone();
        b.source = std::path::absolute(&b.source).map_err(|e| {
            ContainerError::Spec(format!("bind source {}: {e}", b.source.display()))
        })?;
        binds.push((b, is_dir));
    }
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), "/root".into()),
        ("HOSTNAME".into(), spec.hostname.clone()),
    ];
    if let Some(term) = &spec.settings.term {
        env.push(("TERM".into(), term.clone()));
    }
    if network == NetworkMode::Allowlist {
        env.extend(proxy::job_env());
    }
    push_env(&mut env, &spec.env)?;
    let (env_c, search_path) = finish_env(&env, spec.reverse_env)?;
    let argv = spec
        .argv
        .iter()
        .map(|a| to_cstring("argument", a))
        .collect::<Result<Vec<_>>>()?;
    let egress_refused = if network == NetworkMode::Egress {
        netns::egress_refusals_now(spec.policy.network.allow_private)
            .map_err(|e| ContainerError::Spec(format!("network mode egress: {e}")))?
    } else {
        Vec::new()
    };
    Ok(Prepared {
        fds: HostFds::default(),
        layers,
        job_fs,
        binds,
        filesystem: spec.policy.filesystem.clone(),
        limits: spec.policy.limits.clone(),
        landlock_min_abi: spec.policy.kernel.landlock_abi,
        loopback_tcp: spec.policy.network.loopback_tcp,
        workdir: spec.workdir.clone(),
        hostname: spec.hostname.clone(),
        domainname: spec.domainname.clone(),
        umask: spec.umask,
        env: env_c,
        env_pairs: env,
        reverse_env: spec.reverse_env,
        argv,
        search_path,
        filters,
        setgroups_allowed: false,
        self_map: None,
        saved_sigmask,
        network,
        egress_refused,
    })
}

/// Sets `extra` on top of `env` (a later entry wins, in its place).
fn push_env(env: &mut Vec<(String, String)>, extra: &[(String, String)]) -> Result<()> {
    for (k, v) in extra {
        if k.is_empty() || k.contains('=') {
            return Err(ContainerError::Spec(format!(
                "bad environment variable name {k:?}"
            )));
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    Ok(())
}

/// The command's environment as execve takes it, and the PATH its
/// command is looked up on.
fn finish_env(env: &[(String, String)], reverse: bool) -> Result<(Vec<CString>, Vec<String>)> {
    let search_path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut env = env
        .iter()
        .map(|(k, v)| {
            // Named, never quoted: a value may be a secret.
            CString::new(format!("{k}={v}")).map_err(|_| {
                ContainerError::Spec(format!(
                    "environment variable {k:?} contains a NUL byte: remove it from the name or value"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if reverse {
        env.reverse();
    }
    Ok((env, search_path))
}

impl Prepared {
    /// A job container's step (in the forked step, before
    /// [`process::exec_job`]): its command, and its environment on top of
    /// the container's.
    pub(crate) fn for_step(
        &mut self,
        req: &steps::StepRequest,
    ) -> std::result::Result<(), sync::StepError> {
        let bad = |e: ContainerError| sync::StepError::new("start the step", e);
        let mut env = self.env_pairs.clone();
        push_env(&mut env, &req.env).map_err(bad)?;
        (self.env, self.search_path) = finish_env(&env, self.reverse_env).map_err(bad)?;
        self.argv = req
            .argv
            .iter()
            .map(|a| to_cstring("argument", a))
            .collect::<Result<_>>()
            .map_err(bad)?;
        Ok(())
    }
}

fn threads_in_process() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Runs the spec's command in a new container and reports how it ended.
///
/// Must be called from a single-threaded process: it forks, and blocks
/// signals in the calling thread while the container runs.
pub fn run(spec: &ContainerSpec) -> Result<Outcome> {
    run_reporting(spec).map(|r| r.outcome)
}

/// [`run`], also saying which mechanism enforced the resource limits.
pub fn run_reporting(spec: &ContainerSpec) -> Result<Finished> {
    if threads_in_process() > 1 {
        return Err(ContainerError::Spec(
            "container::run needs a single-threaded process; spawn `pinfold exec` instead".into(),
        ));
    }
    let started = Instant::now();
    // Block the signals we forward (and SIGCHLD) before the child exists, so
    // none is lost between clone and the wait loop. The child inherits the
    // mask; its init waits for them with sigwaitinfo and the job restores it.
    let mut blocked = forwarded_signals();
    blocked.add(Signal::SIGCHLD);
    // SIGIO: the status pipe has data (see `wait_loop`).
    blocked.add(Signal::SIGIO);
    let mut saved = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut saved)).map_err(|source| {
        ContainerError::Parent {
            step: "block signals",
            source,
            hint: None,
        }
    })?;
    let result = run_blocked(spec, saved, &blocked, started);
    // Drain what arrived for the container and restore the caller's mask.
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: sigtimedwait with a valid set pointer, a null info pointer and a
    // zero timeout only dequeues pending signals; it touches no other memory.
    while unsafe { libc::sigtimedwait(blocked.as_ref(), std::ptr::null_mut(), &zero) } > 0 {}
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&saved), None);
    result
}

fn run_blocked(
    spec: &ContainerSpec,
    saved: SigSet,
    blocked: &SigSet,
    started: Instant,
) -> Result<Finished> {
    let mut prepared = prepare(spec, saved)?;
    let network = prepared.network;
    // What this kernel lacks: a floor refuses here, before anything is
    // cloned; a degradation is reported with what stands in for it.
    let degraded = crate::kernel::assess(
        &spec.policy.kernel,
        &spec.policy.setup(network),
        &crate::kernel::KernelFeatures::probe(),
    )?;
    for d in &degraded {
        // `-v`: one line each, before the job's own output.
        tracing::info!("degraded: {d}");
    }
    // Parsed when the policy was loaded; only `allowlist` serves it.
    let allowlist =
        (network == NetworkMode::Allowlist).then(|| spec.policy.network.allowlist().clone());
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "prepared"
    );
    // limits.require_cgroup: refused before anything is cloned (and again
    // below, should the cgroup set-up fail).
    if let Some(refusal) = limits::refuse_fallback(&spec.policy, &cgroup::detect()) {
        return Err(ContainerError::Spec(refusal));
    }
    let plan = idmap::plan(spec.idmap, &spec.settings)?;
    prepared.setgroups_allowed = plan.setgroups_allowed();
    // A single-id map may be written by the child itself (as bubblewrap
    // does): the parent then has nothing to do between clone and the
    // child's setup, and the child need not wait for it, which saves a
    // round trip between the two processes on every start. Sub-id maps need
    // the setuid helpers and root's maps need the parent's capabilities;
    // egress needs pasta attached first: those keep the go pipe.
    // So does a delegated cgroup v2 for the limits: the watcher must move
    // the child into its cgroup before the child forks.
    prepared.self_map = match (&plan, network) {
        (IdMapPlan::Single { uid, gid }, NetworkMode::None)
            if !matches!(cgroup::detect(), cgroup::Mechanism::Cgroup(_)) =>
        {
            Some((*uid, *gid))
        }
        _ => None,
    };
    let self_map = prepared.self_map.is_some();
    tracing::debug!(mode = %plan, self_map, "user namespace id mapping");

    let (go_read, go_write) = sync::pipe("sync pipe")?;
    let (err_read, err_write) = sync::pipe("error pipe")?;
    let (status_read, status_write) = sync::status_pipe()?;
    let (proxy_parent, proxy_child) = match allowlist {
        Some(_) => {
            let (a, b) = sync::socket_pair("allowlist proxy channel")?;
            (Some(a), Some(b))
        }
        None => (None, None),
    };

    // The network namespace comes from the clone only in egress mode (pasta
    // attaches to it before the release); otherwise the child makes it on a
    // second thread while it builds its mounts (`netns::PendingNetns`).
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP
        | if network == NetworkMode::Egress {
            libc::CLONE_NEWNET
        } else {
            0
        };
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves like
    // fork(2): the child gets a copy of this address space and continues here.
    // The process is single-threaded (checked in `run`), so no lock held by
    // another thread is copied in a locked state.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if ret < 0 {
        let errno = Errno::last();
        return Err(ContainerError::Parent {
            step: "create namespaces (clone)",
            source: errno,
            hint: Some(userns_hint(errno)),
        });
    }
    if ret == 0 {
        for &fd in &spec.parent_only_fds {
            // SAFETY: closes this child's copy of an fd the parent owns; the
            // child never uses it (the parent's copy stays open).
            unsafe { libc::close(fd) };
        }
        drop(go_write);
        drop(err_read);
        drop(status_read);
        drop(proxy_parent);
        // SAFETY: the caller handed this fd over for the container's init
        // (`ContainerSpec::control`); only the child's copy is owned here.
        let control = spec
            .control
            .map(|fd| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        child::main(
            prepared,
            go_read,
            err_write,
            status_write,
            proxy_child,
            control,
        );
    }
    if let Some(fd) = spec.control {
        // SAFETY: closes this process's copy of the fd handed to init, so
        // the runner sees the channel close when init is gone.
        unsafe { libc::close(fd) };
    }
    let child = Pid::from_raw(ret as i32);
    drop(go_read);
    drop(err_write);
    drop(status_write);
    drop(proxy_child);
    drop(prepared);

    // Kill the child if anything below fails: it is waiting on the go pipe.
    let guard = KillGuard(Some(child));
    tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "cloned");
    // Under cgroup v2 the child must be in its cgroup before it forks
    // anything, so a self-written map is off then (see above) and the
    // watcher starts before the release.
    let mut watch = limits::Watcher::start(&spec.policy, child, memory::tmpfs_paths(spec));
    if let Some(refusal) = limits::refuse_fallback(&spec.policy, watch.mechanism()) {
        return Err(ContainerError::Spec(refusal));
    }
    let mut pasta = None;
    if !self_map {
        idmap::apply(&plan, child)?;
        if network == NetworkMode::Egress {
            pasta = Some(pasta::start(child)?);
        }
        sync::release(&go_write)?;
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "container released"
        );
    }
    // allowlist: the child sends the proxy's listener once its network is
    // up; nothing arrives when its setup failed (the error pipe says why).
    // The process turns multi-threaded here, after the clone.
    let proxy = match (proxy_parent, allowlist) {
        (Some(channel), Some(allow)) => {
            match sync::recv_fds(&channel).map(|f| f.into_iter().next()) {
                Ok(Some(listener)) => Some(
                    proxy::start(listener, allow, spec.policy.source.to_string()).map_err(|e| {
                        ContainerError::Spec(format!("start the allowlist proxy: {e}"))
                    })?,
                ),
                Ok(None) => None,
                Err(source) => {
                    return Err(ContainerError::Parent {
                        step: "receive the allowlist proxy's socket",
                        source,
                        hint: None,
                    });
                }
            }
        }
        _ => None,
    };
    // With a self-written map the child polls the go pipe once to learn
    // that this process is still alive: keep the write end open until the
    // container is gone.
    let deadline = spec.timeout.map(|t| started + t);
    let outcome = wait_loop(child, blocked, deadline, &status_read, &mut watch);
    drop(go_write);
    std::mem::forget(guard);
    if let Some(p) = pasta {
        p.stop();
    }
    if let Some(p) = proxy {
        p.stop();
    }
    // Every process of the container is gone now (init reports only then),
    // so every write end of the error pipe is closed: this read does not
    // block. Reading it only now spares this process a wake-up at the
    // job's execve, and keeps the timeout in force during the job's setup.
    let setup_error = sync::read_error(&err_read);
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        ok = setup_error.is_none(),
        "container ended"
    );
    if let Some(err) = setup_error {
        return Err(err);
    }
    let outcome = match outcome? {
        o @ (Outcome::Exited(_) | Outcome::Signaled(_)) => match watch.after(o.exit_code()) {
            Some(breach) => Outcome::LimitExceeded(breach),
            None => o,
        },
        o => o,
    };
    Ok(Finished {
        outcome,
        limits: watch.mechanism().clone(),
        degraded,
    })
}

struct KillGuard(Option<Pid>);

impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

fn userns_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM | Errno::EACCES => {
            "unprivileged user namespaces are refused: check `sysctl kernel.apparmor_restrict_unprivileged_userns` (set 0) and that no seccomp/LSM policy of the caller blocks them"
        }
        Errno::ENOSPC => {
            "the user namespace limit is reached: check `sysctl user.max_user_namespaces` (0 disables them)"
        }
        Errno::EINVAL => "the kernel lacks one of the namespaces pinfold needs",
        _ => "check that the kernel allows unprivileged user namespaces",
    }
}

/// Waits for the container's init, forwarding signals and enforcing the deadline.
///
/// Init reports the job's status on the status pipe once every process of
/// the container is dead and reaped, then exits; the kernel's teardown of
/// the namespaces (unmounting every mount, the network namespace) then runs
/// in init's exit, and nobody needs to wait for it. A pipe write raises
/// SIGIO here (O_ASYNC), which wakes the sigtimedwait below.
fn wait_loop(
    child: Pid,
    blocked: &SigSet,
    deadline: Option<Instant>,
    status: &OwnedFd,
    watch: &mut limits::Watcher,
) -> Result<Outcome> {
    loop {
        if let Some((code, full)) = sync::read_status(status) {
            watch.set_full_disks(full);
            // Reap init if it is already gone; otherwise it is left to the
            // end of this process (`pinfold exec` exits right away).
            let _ = waitpid(child, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL));
            return Ok(Outcome::Exited(code));
        }
        match waitpid(child, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Outcome::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Outcome::Signaled(sig as i32)),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(source) => {
                return Err(ContainerError::Parent {
                    step: "wait for the container",
                    source,
                    hint: None,
                });
            }
        }
        if let Some(breach) = watch.poll() {
            tracing::debug!(?breach, "resource limit crossed: killing the container");
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, Some(WaitPidFlag::__WALL));
            return Ok(Outcome::LimitExceeded(breach));
        }
        let timeout = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    // Killing PID 1 of the pid namespace kills every process in
                    // it, setsid'd daemons included.
                    let _ = kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, Some(WaitPidFlag::__WALL));
                    return Ok(Outcome::TimedOut);
                }
                d - now
            }
            None => Duration::from_secs(3600),
        };
        let timeout = match watch.next_check() {
            Some(n) => timeout.min(n.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `blocked` is a valid sigset, the info pointer may be null, and
        // `ts` lives across the call.
        let sig = unsafe { libc::sigtimedwait(blocked.as_ref(), std::ptr::null_mut(), &ts) };
        if sig > 0 && sig != libc::SIGCHLD && sig != libc::SIGIO {
            tracing::debug!(signal = sig, "forwarding signal to the container");
            // SAFETY: kill(2) with a pid we own and a signal number the kernel gave us.
            unsafe { libc::kill(child.as_raw(), sig) };
        }
    }
}
