//! `pinfold-exec`: one command, or a job container's steps, in a hardened
//! rootless container. Built from the sandbox crate alone: no registry
//! client, no async runtime, no coordinator or agent, so the runner's job
//! containers start a small binary. `pinfold exec` is the same code
//! ([`ExecArgs`], [`run`]) behind an image fetch: it pulls a pinned image the
//! store lacks, which this binary leaves to `pinfold image pull` or the
//! runner.
//!
//! The binary's environment is read here ([`env`]), once, and handed to
//! the sandbox library, which reads none.

pub mod env;

use std::path::PathBuf;
use std::time::Duration;

use pinfold_sandbox::ceiling;
use pinfold_sandbox::container::report::ExitReport;
use pinfold_sandbox::container::{self, Bind, ContainerSpec, IdMapMode};
use pinfold_sandbox::image::{ImageError, ImageRecord, LayerLease, Store};

/// The arguments of one run: `pinfold-exec ARGS`, and `pinfold exec ARGS`
/// with its fetch options besides.
///
/// Exit status: the command's own; 128+N when it dies of signal N; 123 when
/// a resource limit of the policy ended it (memory, pids, CPU time, a full
/// writable layer or /tmp; the reason is printed); 124 when --timeout fires;
/// 125 when the sandbox could not be set up; 126/127 when the command cannot
/// be executed / is not found.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment: PINFOLD_HOME, PINFOLD_POLICY_PATH, PINFOLD_ROOT_IDMAP (START:COUNT, when run as root), RUST_LOG."
)]
pub struct ExecArgs {
    /// Directory to use as the container's root file system (never modified).
    #[arg(
        long,
        value_name = "DIR",
        env = "PINFOLD_ROOTFS",
        required_unless_present = "image",
        conflicts_with = "image"
    )]
    rootfs: Option<PathBuf>,
    /// Image to run (name, digest or id in the store; a pinned reference is pulled when missing).
    /// Its cached layers are stacked as the rootfs; its Env and WorkingDir apply.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// Policy: a shipped name (default, untrusted, trusted) or a path to a TOML file.
    #[arg(long, default_value = "default", env = "PINFOLD_POLICY")]
    policy: String,
    /// Mount a host path: SRC:DST[:ro|rw] (read-only unless rw). Repeatable.
    #[arg(long = "bind", value_name = "SRC:DST[:ro|rw]")]
    binds: Vec<String>,
    /// Working directory inside the container (created when missing)
    /// [default: the image's WorkingDir, else /workspace].
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Set an environment variable: K=V, or K to pass the caller's value. Repeatable.
    #[arg(short, long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Container hostname.
    #[arg(long, default_value = "pinfold")]
    hostname: String,
    /// Container NIS domain name [default: the kernel's, "(none)"].
    #[arg(long, value_name = "NAME")]
    domainname: Option<String>,
    /// File mode creation mask of the command, in octal (e.g. 022)
    /// [default: the caller's].
    #[arg(long, value_name = "OCTAL", value_parser = ContainerSpec::parse_umask)]
    umask: Option<u32>,
    /// Give the command its environment in reverse order (to test that a
    /// build does not depend on it).
    #[arg(long)]
    reverse_env: bool,
    /// Kill the whole container after this long (e.g. 30s, 10m, 1h30m); exit 124.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Network mode: none (loopback only), allowlist (an HTTP(S) proxy to the
    /// policy's network.allow hosts) or egress (outbound through pasta).
    /// May only be stricter than the policy's [default: the policy's].
    #[arg(long, value_name = "none|allowlist|egress")]
    network: Option<pinfold_sandbox::policy::NetworkMode>,
    /// Lower one limit of the policy: NAME=VALUE with NAME one of memory,
    /// pids, cpu_time, writable_layer_size, workspace_size, tmp_size (e.g. memory=512M,
    /// cpu_time=5m). May only lower it. Repeatable.
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    limits: Vec<String>,
    /// Take the writable layer and the working directory from the job file
    /// system whose holder listens on SOCKET (the runner starts one per job:
    /// both are policy-sized tmpfs kept across the job's steps) instead of
    /// a throw-away tmpfs layer.
    #[arg(long, value_name = "SOCKET")]
    job_fs: Option<PathBuf>,
    /// User-namespace mapping: auto (a sub-id range when the caller has one,
    /// else the caller alone) or single (the caller alone: the fastest start).
    #[arg(
        long,
        value_name = "auto|single",
        env = "PINFOLD_USERNS",
        default_value = "auto"
    )]
    userns: String,
    /// Write how the run ended as one JSON object to FILE (exit_code,
    /// outcome, limit, reason, limits_mechanism), for scripts and the agent.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Make a job container: instead of running CMD, serve the steps the
    /// runner sends on this inherited socket, each forked by the
    /// container's init and hardened as CMD would be, until the runner
    /// closes it (the runner's protocol; see docs/job-container.md).
    #[arg(long, value_name = "FD", conflicts_with = "timeout")]
    control_fd: Option<i32>,
    /// The command and its arguments (after `--`).
    #[arg(
        required_unless_present = "control_fd",
        conflicts_with = "control_fd",
        trailing_var_arg = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

fn parse_env(items: &[String]) -> Result<Vec<(String, String)>, String> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => std::env::var(item).map(|v| (item.clone(), v)).map_err(|_| {
                format!("--env {item}: not set in the caller's environment; write {item}=VALUE")
            }),
        })
        .collect()
}

/// Finds an image in the store (`pinfold exec` fetches it when missing).
pub type Resolve<'a> = &'a dyn Fn(&Store, &str) -> Result<ImageRecord, ImageError>;

/// The spec, and the lease on the image's layers to hold while it runs.
fn build(a: ExecArgs, resolve: Resolve<'_>) -> Result<(ContainerSpec, Option<LayerLease>), String> {
    let settings = env::settings();
    let policy = ceiling::load_with_limits(&a.policy, &a.limits, &settings.policy_dirs())
        .map_err(|e| e.to_string())?;
    let binds = a
        .binds
        .iter()
        .map(|b| Bind::parse(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let (layers, image_env, image_workdir, lease) = match (&a.rootfs, &a.image) {
        (Some(rootfs), _) => {
            if !rootfs.is_dir() {
                return Err(format!(
                    "--rootfs {}: not a directory; give an unpacked root file system",
                    rootfs.display()
                ));
            }
            (vec![rootfs.clone()], Vec::new(), None, None)
        }
        (None, Some(image)) => {
            // Fetched first when missing; the lease keeps `image gc` off
            // the layers while the command runs.
            let store = Store::open_default(&settings).map_err(|e| e.to_string())?;
            let rec = resolve(&store, image).map_err(|e| e.to_string())?;
            let i = store.runtime(&rec).map_err(|e| e.to_string())?;
            (i.layers, i.env, i.workdir, Some(i.lease))
        }
        (None, None) => return Err("give --rootfs DIR or --image REF".into()),
    };
    let mut spec = ContainerSpec::new(layers, policy, a.command);
    spec.parent_only_fds = lease.as_ref().map(LayerLease::fds).unwrap_or_default();
    spec.binds = binds;
    if let Some(w) = a.workdir.or(image_workdir) {
        spec.workdir = w;
    }
    // The image's Env first: later entries win, so --env overrides it.
    spec.env = image_env;
    spec.env.extend(parse_env(&a.env)?);
    spec.hostname = a.hostname;
    spec.domainname = a.domainname;
    spec.umask = a.umask;
    spec.reverse_env = a.reverse_env;
    spec.timeout = a.timeout;
    spec.job_fs = a.job_fs;
    spec.network = a.network;
    spec.control = match a.control_fd {
        Some(fd) => Some(control_fd(fd)?),
        None => None,
    };
    spec.idmap = IdMapMode::parse(&a.userns).map_err(|e| e.to_string())?;
    spec.settings = settings;
    Ok((spec, lease))
}

/// `--control-fd FD`: an inherited unix socket, made close-on-exec here
/// (it is init's alone; see `ContainerSpec::control`).
fn control_fd(fd: i32) -> Result<i32, String> {
    use std::os::fd::BorrowedFd;
    let bad = |why: &str| format!("--control-fd {fd}: {why}; the runner passes the socket it made");
    if fd < 3 {
        return Err(bad("not one of the standard streams"));
    }
    // SAFETY: only borrowed for the two checks below; the fd stays open
    // and is handed on by number.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    match nix::sys::stat::fstat(b) {
        Ok(st)
            if nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
                & nix::sys::stat::SFlag::S_IFMT
                == nix::sys::stat::SFlag::S_IFSOCK => {}
        Ok(_) => return Err(bad("not a socket")),
        Err(_) => return Err(bad("not open")),
    }
    nix::fcntl::fcntl(
        b,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| bad(e.desc()))?;
    Ok(fd)
}

/// Runs `a`, finding its image with `resolve`; returns the exit status.
pub fn run(a: ExecArgs, resolve: Resolve<'_>) -> i32 {
    let timeout = a.timeout;
    let report = a.report.clone();
    let Ok((spec, _lease)) = build(a, resolve).map_err(|e| eprintln!("pinfold exec: {e}")) else {
        return 125;
    };
    let result = container::run_reporting(&spec);
    let ended = ExitReport::new(&result, timeout);
    match &result {
        Ok(done) => {
            tracing::info!(mechanism = %done.limits, "resource limits were enforced by {}", done.limits.name())
        }
        Err(e) => eprintln!("pinfold exec: {e}"),
    }
    match (ended.limit, &ended.reason) {
        (Some("wall_time"), Some(r)) => eprintln!("pinfold exec: {r}"),
        (Some(_), Some(r)) => eprintln!("pinfold: {r}"),
        _ => {}
    }
    if let Some(path) = report
        && let Err(e) = std::fs::write(&path, format!("{}\n", ended.json))
    {
        eprintln!(
            "pinfold exec: cannot write --report {}: {e}",
            path.display()
        );
    }
    ended.exit_code
}
