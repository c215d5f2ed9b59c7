//! What a caller gives [`super::run`] and what it gets back: the spec of
//! one container ([`ContainerSpec`], with its [`Bind`]s) and how the
//! command ended ([`Outcome`], [`Finished`]).

use std::path::PathBuf;
use std::time::Duration;

use super::{ContainerError, IdMapMode, Result, limits};
use crate::policy::{NetworkMode, Policy};

/// A host path mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bind {
    /// Host path (file or directory).
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub dest: PathBuf,
    /// Whether the job may write through the bind.
    pub writable: bool,
}

impl Bind {
    /// The `--bind` argument that [`Bind::parse`] reads back:
    /// `SRC:DST:ro` or `SRC:DST:rw`.
    pub fn to_arg(&self) -> std::ffi::OsString {
        let mut spec = self.source.clone().into_os_string();
        spec.push(":");
        spec.push(&self.dest);
        spec.push(if self.writable { ":rw" } else { ":ro" });
        spec
    }

    /// Parses `SRC:DST[:ro|rw]` (read-only unless `rw`).
    pub fn parse(s: &str) -> Result<Bind> {
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dst, mode) = match parts.as_slice() {
            [src, dst] => (*src, *dst, "ro"),
            [src, dst, mode] => (*src, *dst, *mode),
            _ => {
                return Err(ContainerError::Spec(format!(
                    "bad --bind {s:?}: write SRC:DST, SRC:DST:ro or SRC:DST:rw"
                )));
            }
        };
        let writable = match mode {
            "ro" => false,
            "rw" => true,
            other => {
                return Err(ContainerError::Spec(format!(
                    "bad --bind {s:?}: mode {other:?} is neither ro nor rw"
                )));
            }
        };
        if src.is_empty() || !dst.starts_with('/') {
            return Err(ContainerError::Spec(format!(
                "bad --bind {s:?}: the source must be non-empty and the destination absolute"
            )));
        }
        Ok(Bind {
            source: PathBuf::from(src),
            dest: PathBuf::from(dst),
            writable,
        })
    }
}

/// Everything needed to run one command in a container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Read-only rootfs layers, topmost first. A plain `--rootfs DIR` is one layer.
    pub layers: Vec<PathBuf>,
    /// The policy in force.
    pub policy: Policy,
    /// Host paths to mount in.
    pub binds: Vec<Bind>,
    /// Working directory inside the container (created when missing).
    pub workdir: PathBuf,
    /// Environment of the command, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Container hostname.
    pub hostname: String,
    /// NIS domain name of the container's UTS namespace (`None`: the
    /// kernel's default, "(none)").
    pub domainname: Option<String>,
    /// The job's file mode creation mask (`None`: the caller's).
    pub umask: Option<u32>,
    /// Hand the command its environment in reverse order (PATH, HOME, … last):
    /// a build must not depend on the order of `environ`.
    pub reverse_env: bool,
    /// Wall-clock limit for the whole container.
    pub timeout: Option<Duration>,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// How to map ids (normally [`IdMapMode::Auto`]).
    pub idmap: IdMapMode,
    /// The network mode asked for; `None` takes the policy's. A mode more
    /// open than the policy's is refused (the stricter wins, see
    /// [`crate::net::effective`]).
    pub network: Option<NetworkMode>,
    /// The socket of a job file system's holder ([`super::jobfs`]): its
    /// policy-sized writable layer and workspace, kept across a job's steps,
    /// become this run's writable layer and working directory. `None`: a
    /// private tmpfs layer, thrown away with the container.
    pub job_fs: Option<PathBuf>,
    /// Fds the caller keeps open for the container's life (an image's
    /// [`crate::image::LayerLease`]). The child closes its copies at once,
    /// so neither init nor the job holds them.
    pub parent_only_fds: Vec<std::os::fd::RawFd>,
    /// A job container: init serves the steps the runner sends on this
    /// fd ([`super::steps`]) instead of running `argv`, which may be
    /// empty. The fd goes to init alone: this process closes its copy.
    pub control: Option<std::os::fd::RawFd>,
    /// What the caller read from its environment: `TERM` (handed on to the
    /// command), the id map settings, the policy search directories and
    /// the seccomp cache's home.
    pub settings: crate::Settings,
}

impl ContainerSpec {
    /// Parses a umask given as octal text (`022`), up to 0777.
    pub fn parse_umask(s: &str) -> std::result::Result<u32, String> {
        u32::from_str_radix(s, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| format!("{s:?} is not an octal mode from 000 to 777"))
    }

    /// A spec with pinfold's defaults: workdir `/workspace`, hostname `pinfold`.
    pub fn new(layers: Vec<PathBuf>, policy: Policy, argv: Vec<String>) -> Self {
        Self {
            layers,
            policy,
            binds: Vec::new(),
            workdir: PathBuf::from("/workspace"),
            env: Vec::new(),
            hostname: "pinfold".to_owned(),
            domainname: None,
            umask: None,
            reverse_env: false,
            timeout: None,
            argv,
            idmap: IdMapMode::Auto,
            job_fs: None,
            network: None,
            parent_only_fds: Vec::new(),
            control: None,
            settings: crate::Settings::default(),
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
    /// The timeout fired and every process of the container was killed.
    TimedOut,
    /// A resource limit ended the run (see [`limits`]): the container was
    /// killed, or its command failed with the named disk full.
    LimitExceeded(limits::Breach),
}

impl Outcome {
    /// The exit status contract of `pinfold exec`: the code, 128+N for
    /// signal N, 124 for a timeout, 123 ([`limits::EXIT_LIMIT`]) for a
    /// resource limit.
    pub fn exit_code(&self) -> i32 {
        match *self {
            Outcome::Exited(c) => c,
            Outcome::Signaled(s) => 128 + s,
            Outcome::TimedOut => 124,
            Outcome::LimitExceeded(_) => limits::EXIT_LIMIT,
        }
    }
}

/// How a run ended and which mechanism enforced its resource limits.
#[derive(Debug, Clone)]
pub struct Finished {
    /// How the command ended.
    pub outcome: Outcome,
    /// What enforced memory, pids and CPU time.
    pub limits: super::cgroup::Mechanism,
    /// The protections this kernel lacks and what stood in for them.
    pub degraded: Vec<crate::kernel::Degradation>,
}
