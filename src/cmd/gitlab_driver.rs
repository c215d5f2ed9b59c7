//! `pinfold gitlab-driver`: GitLab Runner's Custom executor. The stages and
//! what persists between them: [`pinfold_agent::gitlab`]; installing it:
//! `ci-templates/gitlab/README.md`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinfold_agent::gitlab::{self, StageEnd, StageKind, State};
use pinfold_agent::runner::{RunOptions, StepInputs};
use pinfold_api::JobSpec;
use pinfold_sandbox::ceiling::Ceiling;
use pinfold_sandbox::container::Bind;
use pinfold_sandbox::container::jobfs::{self, JobFs, Sizes};
use pinfold_sandbox::image::{ImageError, ImageRef, PullOptions, Store};

/// Run GitLab CI jobs in pinfold: GitLab Runner's Custom executor.
///
/// Configure each stage in the runner's config.toml `[runners.custom]`:
/// `config_args = ["gitlab-driver", "config"]`, `prepare_args =
/// ["gitlab-driver", "prepare", ...]`, `run_args = ["gitlab-driver",
/// "run"]`, `cleanup_args = ["gitlab-driver", "cleanup"]` (see
/// ci-templates/gitlab/). The runner's operator chooses the policies and
/// whether tags may resolve, on prepare's command line; a job only names
/// its image.
///
/// Exit status (prepare, run, cleanup): 0; $BUILD_FAILURE_EXIT_CODE when the
/// job's script fails, hits a limit, or the job's image is refused;
/// $SYSTEM_FAILURE_EXIT_CODE when pinfold itself fails.
#[derive(Debug, clap::Subcommand)]
#[command(
    after_help = "Environment: PINFOLD_HOME (job directories in $PINFOLD_HOME/gitlab), PINFOLD_POLICY, PINFOLD_GITLAB_TRANSFER_POLICY, PINFOLD_GITLAB_ALLOW_TAG, PINFOLD_GITLAB_ALLOW_LOCAL_IMAGES, PINFOLD_GITLAB_DEFAULT_IMAGE, PINFOLD_GITLAB_RUNNER, RUST_LOG; from gitlab-runner: BUILD_FAILURE_EXIT_CODE, SYSTEM_FAILURE_EXIT_CODE, CUSTOM_ENV_CI_JOB_IMAGE, PINFOLD_GITLAB_JOB (set by config's job_env)."
)]
pub enum Command {
    /// config_exec: print the executor's configuration as JSON (builds_dir,
    /// cache_dir, hostname, driver, and a new job id in job_env).
    Config,
    /// prepare_exec: resolve the job's image (CUSTOM_ENV_CI_JOB_IMAGE) and
    /// start its job file system (writable layer and /builds, kept across
    /// stages).
    Prepare(PrepareArgs),
    /// run_exec: run the stage's SCRIPT in the job's sandbox.
    Run(RunArgs),
    /// cleanup_exec: stop everything the job left and remove it (also
    /// the directories of jobs whose cleanup never ran).
    Cleanup,
    /// The job file system's keeper, started by prepare (internal).
    #[command(hide = true)]
    Keep(KeepArgs),
}

/// prepare's options: the operator's choices for every stage of the job.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// The policy of the stages that run the job's commands (prepare_script,
    /// step_script, after_script, ...): a name or a path.
    #[arg(
        long,
        value_name = "NAME|PATH",
        default_value = "untrusted",
        env = "PINFOLD_POLICY"
    )]
    policy: String,
    /// The policy of the stages that fetch or ship data (get_sources,
    /// restore_cache, download_artifacts, archive_cache*, upload_artifacts*),
    /// e.g. one with network for the GitLab server [default: --policy].
    #[arg(long, value_name = "NAME|PATH", env = "PINFOLD_GITLAB_TRANSFER_POLICY")]
    transfer_policy: Option<String>,
    /// Let a job's image be a tag: it is resolved once, at prepare, and the
    /// digest is logged and used for every stage. Without it a job's image
    /// must be pinned (REPO@sha256:DIGEST).
    #[arg(long, env = "PINFOLD_GITLAB_ALLOW_TAG")]
    allow_tag: bool,
    /// Let a job's image be a local OCI layout or archive on this host
    /// (oci:, oci-archive:, docker-archive:). Without it a job may name only
    /// registry images: a path would let it read the runner's files.
    #[arg(long, env = "PINFOLD_GITLAB_ALLOW_LOCAL_IMAGES")]
    allow_local_images: bool,
    /// The image of jobs that name none (pinned, or a tag with --allow-tag).
    #[arg(long, value_name = "REF", env = "PINFOLD_GITLAB_DEFAULT_IMAGE")]
    default_image: Option<String>,
    /// The gitlab-runner binary, bound read-only at
    /// /usr/local/bin/gitlab-runner into the transfer stages (sources,
    /// cache, artifacts), whose scripts run it by name [default: found in
    /// PATH].
    #[arg(long, value_name = "PATH", env = "PINFOLD_GITLAB_RUNNER")]
    gitlab_runner: Option<PathBuf>,
}

/// run's arguments, as gitlab-runner passes them.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The stage's script (written by gitlab-runner on the host).
    script: PathBuf,
    /// The stage's name (get_sources, step_script, after_script, ...).
    stage: String,
    /// Between SIGTERM and SIGKILL when gitlab-runner cancels the stage.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

/// The keeper's arguments (prepare passes them).
#[derive(Debug, clap::Args)]
pub struct KeepArgs {
    dir: PathBuf,
    layer_bytes: u64,
    workspace_bytes: u64,
    /// Seconds after which the keeper ends even if cleanup never comes.
    lifetime_secs: u64,
}

/// A failed stage: which of GitLab's two codes, and the line saying why.
struct Fail(StageEnd, String);

/// GitLab's exit codes, from the environment gitlab-runner gives the stages.
#[derive(Clone, Copy)]
struct Codes {
    build: i32,
    system: i32,
}

impl Codes {
    fn from_env() -> Result<Codes, String> {
        let get = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<i32>().ok())
                .ok_or_else(|| {
                    format!("{name} is not set: run `pinfold gitlab-driver` from gitlab-runner's [runners.custom], which sets it")
                })
        };
        Ok(Codes {
            build: get("BUILD_FAILURE_EXIT_CODE")?,
            system: get("SYSTEM_FAILURE_EXIT_CODE")?,
        })
    }

    fn of(self, end: StageEnd) -> i32 {
        match end {
            StageEnd::Success => 0,
            StageEnd::BuildFailure => self.build,
            StageEnd::SystemFailure => self.system,
        }
    }
}

/// Runs the subcommand; returns the exit status.
pub fn run(c: Command) -> i32 {
    let what = match &c {
        Command::Config => "config",
        Command::Prepare(_) => "prepare",
        Command::Run(_) => "run",
        Command::Cleanup => "cleanup",
        Command::Keep(_) => "keep",
    };
    if let Command::Config = c {
        return config();
    }
    if let Command::Keep(k) = c {
        return keep(&k);
    }
    let codes = match Codes::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pinfold gitlab-driver {what}: {e}");
            return 2;
        }
    };
    let result = match c {
        Command::Prepare(a) => prepare(&a),
        Command::Run(a) => run_stage(&a),
        Command::Cleanup => cleanup(),
        Command::Config | Command::Keep(_) => unreachable!("handled above"),
    };
    match result {
        Ok(end) => codes.of(end),
        Err(Fail(end, why)) => {
            eprintln!("pinfold gitlab-driver {what}: {why}");
            codes.of(end)
        }
    }
}

fn system(why: impl std::fmt::Display) -> Fail {
    Fail(StageEnd::SystemFailure, why.to_string())
}

fn home() -> Result<PathBuf, Fail> {
    crate::env::settings()
        .home
        .clone()
        .ok_or_else(|| system("cannot find a state directory: set PINFOLD_HOME"))
}

fn job_dir() -> Result<PathBuf, Fail> {
    let id = std::env::var(gitlab::JOB_VAR).ok();
    gitlab::job_dir(&home()?, id.as_deref()).map_err(system)
}

fn config() -> i32 {
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let out =
        gitlab::ConfigOutput::new(&gitlab::new_job_id(), &hostname, env!("CARGO_PKG_VERSION"));
    if super::print_json("gitlab-driver config", &out) {
        0
    } else {
        1
    }
}

fn prepare(a: &PrepareArgs) -> Result<StageEnd, Fail> {
    let dir = job_dir()?;
    let settings = crate::env::settings();
    // Both policies must load: an operator's error is a system failure.
    let transfer = a
        .transfer_policy
        .clone()
        .unwrap_or_else(|| a.policy.clone());
    let ceiling = Ceiling::new(
        &a.policy,
        std::slice::from_ref(&transfer),
        &settings.policy_dirs(),
    )
    .map_err(|e| system(format!("--policy/--transfer-policy: {e}")))?;
    let script = ceiling
        .choose(None, None, &Default::default())
        .map_err(system)?;
    // The transfer policy is the ceiling's last (its only one when both are the same).
    let last = ceiling.names().last().map(|n| n.to_string());
    let fetch = ceiling
        .choose(last.as_deref(), None, &Default::default())
        .map_err(system)?;
    let image = image_of_job(a)?;
    println!(
        "==> pinfold {}: preparing the job's sandbox",
        env!("CARGO_PKG_VERSION")
    );
    let pinned = resolve(&image, a.allow_tag, a.allow_local_images, &settings)?;
    let runner_binary = a
        .gitlab_runner
        .clone()
        .or_else(|| settings.which("gitlab-runner", "/usr/local/bin:/usr/bin:/bin"));
    // The job file system is shared by both policies' stages: each exec
    // refuses one larger than its policy allows, so take the smaller sizes.
    let (s, f) = (&script.policy.filesystem, &fetch.policy.filesystem);
    let sizes = Sizes {
        layer: s.writable_layer_size.0.min(f.writable_layer_size.0),
        workspace: s.workspace_size.0.min(f.workspace_size.0),
    };
    // gitlab-runner retries config and prepare after a system failure (3
    // times): what an earlier attempt of this job left goes first.
    if dir.exists() {
        remove_job(&dir, &settings).map_err(system)?;
    }
    let parent = dir.parent().expect("a job directory has a parent");
    std::fs::create_dir_all(parent).map_err(|e| system(format!("{}: {e}", parent.display())))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            system(format!(
                "{}: {e} (is another prepare of this job running?)",
                dir.display()
            ))
        })?;
    State {
        image: pinned,
        policy: script.reference.clone(),
        transfer_policy: fetch.reference.clone(),
        runner_binary,
    }
    .save(&dir)
    .map_err(system)?;
    start_keeper(&dir, sizes)?;
    println!(
        "==> sandbox ready: policy {} (transfer stages: {})",
        script.reference, fetch.reference
    );
    Ok(StageEnd::Success)
}

/// The job's image: CUSTOM_ENV_CI_JOB_IMAGE, or the operator's default.
fn image_of_job(a: &PrepareArgs) -> Result<String, Fail> {
    std::env::var("CUSTOM_ENV_CI_JOB_IMAGE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| a.default_image.clone())
        .map(|s| s.trim().to_string())
        .ok_or_else(|| {
            Fail(
                StageEnd::BuildFailure,
                "the job names no image: set `image: REPO@sha256:DIGEST` in .gitlab-ci.yml (or the runner's operator sets --default-image)".into(),
            )
        })
}

/// Finds or pulls `image`; returns the pinned reference every stage uses.
fn resolve(
    image: &str,
    allow_tag: bool,
    allow_local: bool,
    settings: &pinfold_sandbox::Settings,
) -> Result<String, Fail> {
    let r = ImageRef::parse_pinned(image, allow_tag).map_err(|e| {
        Fail(
            StageEnd::BuildFailure,
            format!("{e} (for this runner, its operator allows tags with `gitlab-driver prepare --allow-tag`)"),
        )
    })?;
    if !r.is_registry() && !allow_local {
        return Err(Fail(
            StageEnd::BuildFailure,
            "the job's image names a file on the runner, not a registry image: write `image: REPO@sha256:DIGEST` (local images need the operator's `gitlab-driver prepare --allow-local-images`)".into(),
        ));
    }
    let store = Store::open_default(settings).map_err(system)?;
    let image_err = |e: ImageError| system(format!("image {image}: {e}"));
    let t0 = Instant::now();
    let pinned_already = image.contains("@sha256:");
    if pinned_already {
        match store.find(image) {
            Ok(_) => {
                println!("==> image {image} (cached)");
                return Ok(image.to_string());
            }
            Err(ImageError::NotFound(_)) => {}
            Err(e) => return Err(image_err(e)),
        }
    }
    let opts = PullOptions {
        allow_tag,
        ..PullOptions::default()
    };
    let rec = store.pull(&r, &opts).map_err(image_err)?;
    let pinned = if pinned_already {
        image.to_string()
    } else {
        // The tag, resolved once: names[0] is `docker://HOST/REPO@DIGEST`.
        rec.names
            .first()
            .cloned()
            .unwrap_or_else(|| format!("{image}@{}", rec.root))
    };
    if pinned_already {
        println!("==> image {image} (fetched in {:.1?})", t0.elapsed());
    } else {
        println!(
            "==> image {image} resolved to {pinned} (the tag is not looked up again for this job)"
        );
    }
    Ok(pinned)
}

/// Starts the keeper in its own session (gitlab-runner's kill of prepare's
/// process group must not reach it, and it must not hold prepare's output
/// open, or gitlab-runner would wait for it) and waits for its `ready`.
fn start_keeper(dir: &Path, sizes: Sizes) -> Result<(), Fail> {
    let exe =
        std::env::current_exe().map_err(|e| system(format!("cannot find my own binary: {e}")))?;
    let log = std::fs::File::create(dir.join("keeper.log")).map_err(system)?;
    // The keeper ends by itself after a day, or the job's own timeout and
    // an hour, should cleanup never come.
    // The job's own value, bounded: at most a week, and an hour on top.
    let lifetime = std::env::var("CUSTOM_ENV_CI_JOB_TIMEOUT")
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(86_400, |t| t.min(7 * 86_400) + 3_600);
    let mut c = Process::new(exe);
    c.args(["gitlab-driver", "keep"])
        .arg(dir)
        .arg(sizes.layer.to_string())
        .arg(sizes.workspace.to_string())
        .arg(lifetime.to_string())
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
    let mut child = c
        .spawn()
        .map_err(|e| system(format!("starting the keeper: {e}")))?;
    std::fs::write(dir.join(gitlab::KEEPER_PID), child.id().to_string()).map_err(system)?;
    let mut line = String::new();
    let out = child.stdout.take().expect("piped");
    let _ = BufReader::new(out).read_line(&mut line);
    if line.trim() == "ready" {
        return Ok(());
    }
    let _ = child.kill();
    let _ = child.wait();
    let why = std::fs::read_to_string(dir.join("keeper.log")).unwrap_or_default();
    let why = why.lines().last().unwrap_or("it exited").to_string();
    Err(system(format!("the job file system did not start: {why}")))
}

fn keep(k: &KeepArgs) -> i32 {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("pinfold gitlab-driver keep: {e}");
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
    // Nobody reads stdout again: let prepare's pipe close.
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

fn run_stage(a: &RunArgs) -> Result<StageEnd, Fail> {
    let dir = job_dir()?;
    let state = State::load(&dir).map_err(system)?;
    let kind = gitlab::stage_kind(&a.stage);
    let script = std::fs::canonicalize(&a.script)
        .map_err(|e| system(format!("the stage's script {}: {e}", a.script.display())))?;
    let mut binds = vec![Bind {
        source: script,
        dest: gitlab::SCRIPT.into(),
        writable: false,
    }];
    if let (StageKind::Transfer, Some(b)) = (kind, &state.runner_binary) {
        binds.push(Bind {
            source: b.clone(),
            dest: gitlab::RUNNER_BINARY.into(),
            writable: false,
        });
    }
    let spec = JobSpec {
        image: pinfold_api::job::ImageRef(state.image.clone()),
        policy: None,
        network: None,
        limits: Default::default(),
        timeout: None,
        env: Default::default(),
        secrets: Vec::new(),
        steps: pinfold_api::job::Steps(Vec::new()),
        artifacts: Vec::new(),
        source: None,
        verify: None,
    };
    let report = dir.join("stage.json");
    let _ = std::fs::remove_file(&report);
    let exe =
        std::env::current_exe().map_err(|e| system(format!("cannot find my own binary: {e}")))?;
    let host = crate::env::host();
    let plan = StepInputs {
        exe: &exe,
        spec: &spec,
        secrets: &Default::default(),
        host: &host,
        policy: state.policy_for(kind),
        job_fs: &dir.join(jobfs::SOCKET),
        report: &report,
    }
    .plan(
        &gitlab::shell_command(),
        None,
        &RunOptions {
            mount: Some(gitlab::BUILDS_DIR.into()),
            binds,
            ..RunOptions::default()
        },
    );
    pinfold_agent::signals::install().map_err(system)?;
    let mut c = Process::new(&plan.program);
    c.env_clear()
        .envs(plan.env)
        .args(plan.args)
        .stdin(Stdio::null());
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory of the parent: the stage dies with this process, however
    // gitlab-runner ends it.
    unsafe {
        c.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let mut child = c
        .spawn()
        .map_err(|e| system(format!("starting pinfold exec: {e}")))?;
    let pid_file = dir.join(gitlab::STAGE_PID);
    let _ = std::fs::write(&pid_file, child.id().to_string());
    let status = wait_or_stop(&mut child, a.grace);
    let _ = std::fs::remove_file(&pid_file);
    let report: Option<serde_json::Value> = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let code = status.and_then(|s| s.code());
    let end = gitlab::stage_end(code, report.as_ref());
    if end == StageEnd::BuildFailure
        && let (Some(file), Some(code)) = (std::env::var_os("BUILD_EXIT_CODE_FILE"), code)
    {
        // The script's own code, which gitlab-runner reads when the driver
        // exits with BUILD_FAILURE_EXIT_CODE (`allow_failure: exit_codes`).
        let _ = std::fs::write(file, format!("{code}\n"));
    }
    if end == StageEnd::SystemFailure {
        let why = report
            .as_ref()
            .and_then(|r| r.get("reason")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "pinfold exec ended without a report".into());
        return Err(system(format!("stage {}: {why}", a.stage)));
    }
    Ok(end)
}

/// Waits for the stage (blocking, so its end is seen at once); a thread
/// passes SIGTERM/SIGINT (gitlab-runner's cancel or timeout) on as SIGTERM,
/// then SIGKILL after `grace`.
fn wait_or_stop(child: &mut std::process::Child, grace: Duration) -> Option<ExitStatus> {
    use std::sync::mpsc::{RecvTimeoutError, channel};
    let pid = Pid::from_raw(child.id() as i32);
    // Dropping `done` wakes the watcher at once when the stage ends.
    let (done, ended) = channel::<()>();
    let watcher = std::thread::spawn(move || {
        // Whether the stage ended within `d`.
        let ended_within = |d| !matches!(ended.recv_timeout(d), Err(RecvTimeoutError::Timeout));
        while !pinfold_agent::signals::received() {
            if ended_within(Duration::from_millis(20)) {
                return;
            }
        }
        let _ = kill(pid, Signal::SIGTERM);
        if !ended_within(grace) {
            // Not reaped yet (`done` is dropped only after the wait), so
            // the pid is still the stage's.
            let _ = kill(pid, Signal::SIGKILL);
        }
    });
    let status = child.wait().ok();
    drop(done);
    let _ = watcher.join();
    status
}

fn cleanup() -> Result<StageEnd, Fail> {
    let dir = job_dir()?;
    let settings = crate::env::settings();
    remove_job(&dir, &settings).map_err(system)?;
    // Jobs whose cleanup never came (a runner killed mid-job): their keeper
    // is gone, so nothing else will remove them. A directory younger than
    // ten minutes may be a prepare still starting its keeper.
    if let Some(parent) = dir.parent()
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        for e in entries.flatten() {
            let p = e.path();
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > Duration::from_secs(600)));
            if p != dir && old && alive(&p, gitlab::KEEPER_PID).is_none() {
                tracing::info!(dir = %p.display(), "removing a job directory left behind");
                let _ = remove_job(&p, &settings);
            }
        }
    }
    Ok(StageEnd::Success)
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

/// Stops the job's stage and keeper (SIGTERM, then SIGKILL after 5 s) and
/// removes its directory.
fn remove_job(dir: &Path, settings: &pinfold_sandbox::Settings) -> Result<(), String> {
    for file in [gitlab::STAGE_PID, gitlab::KEEPER_PID] {
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
