//! A job that another CI system's runner drives one call at a time
//! (`pinfold gitlab-driver`, `pinfold gha-hook`): its directory, the
//! detached *keeper* that holds its job file system between calls, each
//! step's `pinfold exec` child, and removing it all.
//!
//! Each call is a new process, so what the job keeps lives in a directory
//! (0700) under `PINFOLD_HOME`: the caller's state file, `keeper.pid`,
//! `step.pid` while a step runs, the keeper's log and the job file
//! system's socket ([`pinfold_sandbox::container::jobfs`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinfold_agent::hosted;
use pinfold_agent::runner::StepPlan;
use pinfold_sandbox::Settings;
use pinfold_sandbox::container::jobfs::{JobFs, Sizes};
use pinfold_sandbox::image::{ImageError, ImageRef, PullOptions, Store};

/// The keeper's pid file in the job directory.
const KEEPER_PID: &str = "keeper.pid";
/// There from [`create`] until prepare has answered ([`ready`]). A marker
/// of the unfinished rather than of the finished: a directory made before
/// it existed (a job running across an upgrade) counts as prepared.
const PREPARING: &str = "preparing";
/// The running step's `pinfold exec` pid, in the job directory.
const STEP_PID: &str = "step.pid";
/// The keeper's stderr, in the job directory.
const KEEPER_LOG: &str = "keeper.log";

/// The keeper's arguments (`start_keeper` passes them).
#[derive(Debug, clap::Args)]
pub struct KeepArgs {
    dir: PathBuf,
    layer_bytes: u64,
    workspace_bytes: u64,
    /// Seconds after which the keeper ends even if cleanup never comes.
    lifetime_secs: u64,
}

/// Why an image cannot be used: the job's choice, or this host's failure.
#[derive(Debug)]
pub enum ImageRefused {
    /// The job named an image the operator does not allow.
    Job(String),
    /// The store or the registry failed.
    System(String),
}

/// What the operator lets a job's image be.
pub struct ImageRules<'a> {
    /// A tag, resolved once.
    pub allow_tag: bool,
    /// A path on this host (oci:, oci-archive:, docker-archive:).
    pub allow_local: bool,
    /// The operator's flags that allow tags and local images, named in the
    /// refusals (e.g. `gitlab-driver prepare --allow-tag`).
    pub tag_flag: &'a str,
    /// Likewise for local images.
    pub local_flag: &'a str,
    /// How the job names its image, in the refusals (e.g. `image:
    /// REPO@sha256:DIGEST` in .gitlab-ci.yml).
    pub how: &'a str,
}

/// Finds or pulls `image` under `rules`, saying on stdout what it did;
/// returns the pinned reference every step uses.
pub fn resolve_image(
    image: &str,
    rules: &ImageRules,
    settings: &Settings,
) -> Result<String, ImageRefused> {
    let r = ImageRef::parse_pinned(image, rules.allow_tag).map_err(|e| {
        ImageRefused::Job(format!(
            "{e} (for this runner, its operator allows tags with `{}`)",
            rules.tag_flag
        ))
    })?;
    if !r.is_registry() && !rules.allow_local {
        return Err(ImageRefused::Job(format!(
            "the job's image names a file on the runner, not a registry image: write `{}` (local images need the operator's `{}`)",
            rules.how, rules.local_flag
        )));
    }
    if let Some(host) = r.registry_host()
        && !rules.allow_local
        && host_is_local(host)
    {
        return Err(ImageRefused::Job(format!(
            "the job's image is on {host}, an address of this runner's own or private network, which a job may not make the runner reach: use a public registry (local sources need the operator's `{}`)",
            rules.local_flag
        )));
    }
    let system = |e: ImageError| ImageRefused::System(format!("image {image}: {e}"));
    let store = Store::open_default(settings).map_err(system)?;
    let t0 = Instant::now();
    let pinned_already = image.contains("@sha256:");
    // Cached only under this very name: the same digest under another name
    // (a private image the operator pulled, a local one) is not the job's
    // to use without its registry's say; pulling it is cheap when the
    // store has its blobs.
    if pinned_already && store.find_named(&r).map_err(system)?.is_some() {
        println!("==> image {image} (cached)");
        return Ok(image.to_string());
    }
    let opts = PullOptions {
        allow_tag: rules.allow_tag,
        ..PullOptions::default()
    };
    let rec = store.pull(&r, &opts).map_err(system)?;
    if pinned_already {
        println!("==> image {image} (fetched in {:.1?})", t0.elapsed());
        return Ok(image.to_string());
    }
    // The tag, resolved once: names[0] is `docker://HOST/REPO@DIGEST`.
    let pinned = rec
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| format!("{image}@{}", rec.root));
    println!(
        "==> image {image} resolved to {pinned} (the tag is not looked up again for this job)"
    );
    Ok(pinned)
}

/// Whether a registry host is this machine or a private network's:
/// `localhost`, or an address that is not public (loopback, private,
/// link-local, metadata). A name that resolves to one is not caught here.
fn host_is_local(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| pinfold_sandbox::net::ranges::refused(ip, false))
}

/// Creates the job directory `dir` afresh (0700): what an earlier attempt
/// of the same job left (a retried prepare) is stopped and removed first.
pub fn create(dir: &Path, settings: &Settings) -> Result<(), String> {
    if dir.exists() {
        remove(dir, settings)?;
    }
    let parent = dir.parent().expect("a job directory has a parent");
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            format!(
                "{}: {e} (is another prepare of this job running?)",
                dir.display()
            )
        })?;
    std::fs::write(dir.join(PREPARING), b"").map_err(|e| format!("{}: {e}", dir.display()))
}

/// Starts the keeper of `dir`'s job file system in its own session (the
/// runner's kill of the caller's process group must not reach it, and it
/// must not hold the caller's output open, or the runner would wait for
/// it) and waits for its `ready`. It ends by itself after `lifetime`
/// should cleanup never come.
pub fn start_keeper(dir: &Path, sizes: Sizes, lifetime: Duration) -> Result<(), String> {
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
/// until SIGTERM/SIGINT or its lifetime ends.
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
    let sizes = Sizes {
        layer: k.layer_bytes,
        workspace: k.workspace_bytes,
    };
    let jobfs: JobFs = match JobFs::start(&exe, &k.dir, sizes, mode, &settings) {
        Ok(j) => j,
        Err(e) => return fail(&e),
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
    wait_for_stop(Duration::from_secs(k.lifetime_secs));
    drop(jobfs);
    0
}

/// Blocks until SIGTERM or SIGINT arrives, or `lifetime` has passed: at
/// once, so that cleanup does not wait on a polling interval. Blocks both
/// signals first (after the holder is started: a child inherits the mask).
fn wait_for_stop(lifetime: Duration) {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    if set.thread_block().is_err() {
        std::thread::sleep(lifetime);
        return;
    }
    let end = Instant::now()
        .checked_add(lifetime)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let ts = nix::libc::timespec {
            tv_sec: left.as_secs().min(i64::MAX as u64) as nix::libc::time_t,
            tv_nsec: left.subsec_nanos() as nix::libc::c_long,
        };
        // SAFETY: sigtimedwait(2) with a valid set, no siginfo out-pointer
        // and a timeout on the stack; it only reads them.
        let r = unsafe { nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
        if r > 0 {
            return;
        }
        // EAGAIN (timeout: the loop checks) or EINTR: wait again.
    }
}

/// How a step's `pinfold exec` ended.
pub struct StepOutcome {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its `--report`, if it wrote one.
    pub report: Option<serde_json::Value>,
    /// The runner cancelled it (SIGTERM or SIGINT to this process).
    pub cancelled: bool,
}

impl StepOutcome {
    /// Why the sandbox failed the step, in one line: its report's reason,
    /// or why there is none.
    pub fn sandbox_failure(&self) -> String {
        match self.report.as_ref().and_then(|r| r.get("reason")?.as_str()) {
            Some(why) => why.to_string(),
            None if self.cancelled => {
                "cancelled by the runner before pinfold exec could report".into()
            }
            None => {
                "pinfold exec ended without a report: run `pinfold doctor` on this runner".into()
            }
        }
    }
}

/// Runs one step's `pinfold exec` (its `--report` is `report`) with this
/// process's stdout and stderr, recorded in `dir` while it runs so that
/// cleanup can stop it. SIGTERM or SIGINT to this process (the runner's
/// cancel) is passed on as SIGTERM, then SIGKILL after `grace`; the step
/// dies with this process however it ends.
pub fn run_step(
    plan: StepPlan,
    dir: &Path,
    report: &Path,
    grace: Duration,
) -> Result<StepOutcome, String> {
    let _ = std::fs::remove_file(report);
    pinfold_agent::signals::install().map_err(|e| e.to_string())?;
    let mut c = Process::new(&plan.program);
    c.env_clear()
        .envs(plan.env)
        .args(plan.args)
        .stdin(Stdio::null());
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory of the parent.
    unsafe {
        c.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let mut child = c
        .spawn()
        .map_err(|e| format!("starting pinfold exec: {e}"))?;
    let pid_file = dir.join(STEP_PID);
    let _ = std::fs::write(&pid_file, child.id().to_string());
    let status = wait_or_stop(&mut child, grace);
    let _ = std::fs::remove_file(&pid_file);
    let report = std::fs::read(report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Ok(StepOutcome {
        code: status.and_then(|s| s.code()),
        report,
        cancelled: pinfold_agent::signals::received(),
    })
}

/// Waits for the step (blocking, so its end is seen at once); a thread
/// passes SIGTERM/SIGINT on as SIGTERM, then SIGKILL after `grace`.
fn wait_or_stop(child: &mut std::process::Child, grace: Duration) -> Option<ExitStatus> {
    use std::sync::mpsc::{RecvTimeoutError, channel};
    let pid = Pid::from_raw(child.id() as i32);
    // Dropping `done` wakes the watcher at once when the step ends.
    let (done, ended) = channel::<()>();
    let watcher = std::thread::spawn(move || {
        // Whether the step ended within `d`.
        let ended_within = |d| !matches!(ended.recv_timeout(d), Err(RecvTimeoutError::Timeout));
        while !pinfold_agent::signals::received() {
            if ended_within(Duration::from_millis(20)) {
                return;
            }
        }
        let _ = kill(pid, Signal::SIGTERM);
        if !ended_within(grace) {
            // Not reaped yet (`done` is dropped only after the wait), so
            // the pid is still the step's.
            let _ = kill(pid, Signal::SIGKILL);
        }
    });
    let status = child.wait().ok();
    drop(done);
    let _ = watcher.join();
    status
}

/// Marks `dir` as prepared: its runner has (or is about to have) what it
/// needs to call cleanup. Until then a sweep may take it, keeper and all.
pub fn ready(dir: &Path) -> Result<(), String> {
    std::fs::remove_file(dir.join(PREPARING)).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Removes `dir`, then the job directories beside it whose cleanup never
/// came: a runner killed mid-job (the keeper is gone, so nothing else will
/// remove them), or a prepare killed before it answered (never [`ready`],
/// so the runner cannot name it to cleanup). A directory younger than ten
/// minutes may be a prepare still running, and is left; only names
/// [`hosted::is_id`] accepts are looked at.
pub fn remove_and_sweep(dir: &Path, settings: &Settings) -> Result<(), String> {
    remove(dir, settings)?;
    if let Some(parent) = dir.parent()
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        for e in entries.flatten() {
            let p = e.path();
            if !e.file_name().to_str().is_some_and(hosted::is_id) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > Duration::from_secs(600)));
            let abandoned = p.join(PREPARING).exists() || alive(&p, KEEPER_PID).is_none();
            if p != dir && old && abandoned {
                tracing::info!(dir = %p.display(), "removing a job directory left behind");
                let _ = remove(&p, settings);
            }
        }
    }
    Ok(())
}

/// The process in `dir/pid_file`, if it is still running and is this job's
/// (its command line names `dir`: a pid reused by another process is left
/// alone).
fn alive(dir: &Path, pid_file: &str) -> Option<Pid> {
    let pid: i32 = std::fs::read_to_string(dir.join(pid_file))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = dir.as_os_str().as_encoded_bytes();
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg.starts_with(needle));
    ours.then(|| Pid::from_raw(pid))
}

/// Stops the job's step and keeper (SIGTERM, then SIGKILL after 5 s) and
/// removes its directory.
pub fn remove(dir: &Path, settings: &Settings) -> Result<(), String> {
    for file in [STEP_PID, KEEPER_PID] {
        if let Some(pid) = alive(dir, file) {
            let _ = kill(pid, Signal::SIGTERM);
            let t = Instant::now();
            while alive(dir, file).is_some() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if alive(dir, file).is_some() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
    if !dir.exists() {
        return Ok(());
    }
    // The keeper's holder may take a moment to let go of its mounts.
    let mut last = String::new();
    for _ in 0..50 {
        match pinfold_sandbox::image::owner::remove_run_dir(dir, settings) {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("removing {}: {last}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::host_is_local;

    #[test]
    fn registries_on_this_machine_or_a_private_network_are_local() {
        for h in [
            "localhost",
            "localhost:5000",
            "reg.localhost",
            "127.0.0.1:5000",
            "10.1.2.3",
            "192.168.0.1:443",
            "169.254.169.254",
            "[::1]:5000",
            "[::1]",
            "0.0.0.0",
        ] {
            assert!(host_is_local(h), "{h}");
        }
        for h in [
            "docker.io",
            "ghcr.io",
            "8.8.8.8:5000",
            "registry.example.com:5000",
        ] {
            assert!(!host_is_local(h), "{h}");
        }
    }
}
