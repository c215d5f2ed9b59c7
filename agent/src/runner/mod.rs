//! The runner core shared by `pinfold run` and `pinfold agent`.
//!
//! Given a job, a per-job directory and a log, it resolves the image in the
//! store (pulling or importing the pinned reference when missing), fills
//! the workspace, and runs each step as a child `pinfold exec` (the real
//! binary, `current_exe()`):
//!
//! ```text
//! pinfold exec --image REF --policy P --job-fs JOBDIR/jobfs.sock
//!   --workdir /workspace [--env NAME]...
//!   [--network N] [--limit NAME=VALUE]... [--timeout T]
//!   --report JOBDIR/step.json -- /bin/sh -e -c RUN
//! ```
//!
//! P is never the job's to choose: the runner's operator gives the
//! [`Ceiling`] (the policies it allows), the job picks one of them by name
//! and may only narrow it (`network:`, `limits:`). A job asking for more
//! fails before its first step with one line naming the ceiling.
//!
//! The report names the resource limit that ended a step (exit 123) and the
//! mechanism that enforced it; the runner itself enforces the policy's
//! `limits.log_bytes` on the job's output.
//!
//! The writable layer (rootfs changes) and /workspace are the job file
//! system ([`pinfold_sandbox::container::jobfs`]): two tmpfs of the
//! policy's `filesystem.writable_layer_size` and `workspace_size`, held for
//! the job's life by a holder process and attached by each step, so a job
//! cannot fill the host's disk. Values of env entries and secrets travel in the child's
//! environment with the pass-through form `--env NAME`, never on its
//! command line. Names that would change how the host-side `pinfold exec`
//! itself behaves (PATH, HOME, TMPDIR, LD_*, PINFOLD_*, ...) are not put
//! into its environment: for a plain env entry (its value is in the job
//! file anyway) they go as `--env NAME=VALUE`; a secret with such a name is
//! refused. stdout and stderr share one pipe so their order is kept.
//!
//! What each step's child gets (arguments, environment) is planned, pure,
//! in `plan`, and what a step's end means for the job in `outcome`; this
//! module prepares the job and runs the plan. It reads
//! no environment: the binary hands the runner's own in [`Job::host`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use pinfold_api::wire::{ArtifactInfo, JobState, StepResult};
use pinfold_api::{JobSpec, now_ms};
use pinfold_sandbox::ceiling::{Ceiling, Chosen};
use pinfold_sandbox::container::cgroup::Children;
use pinfold_sandbox::container::jobfs::{JobFs, JobFsError, Sizes};
use pinfold_sandbox::container::limits::EXIT_LIMIT;
use pinfold_sandbox::image::{ImageError, ImageRef, PullOptions, Store};

mod container;
mod outcome;
mod plan;

pub use container::{JobContainer, StepEnd};

pub use plan::{
    CONTROL_FD, HostEnv, PASS_ENV, RunOptions, StepInputs, StepPlan, reserved_name, step_timeout,
};

pub use outcome::{job_end, step_end, stop};

use crate::artifacts::{self, Artifact};
use crate::log::{SharedLog, lock};

/// Errors that end a job as `error` (pinfold failed, not the job).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The image could not be resolved.
    #[error("image {image}: {source}")]
    Image {
        /// The reference.
        image: String,
        /// The cause.
        #[source]
        source: ImageError,
    },
    /// The per-job directory could not be prepared.
    #[error("preparing {path}: {source}")]
    Dir {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The job file system could not be started.
    #[error(transparent)]
    JobFs(#[from] JobFsError),
    /// The runner's own settings are unusable (e.g. `PINFOLD_USERNS`).
    #[error("runner configuration: {0}")]
    Config(String),
    /// The source could not be fetched or unpacked.
    #[error("source: {0}")]
    Source(String),
    /// A secret the job names has no value, or has a reserved name.
    #[error("secret {0}")]
    Secret(String),
    /// Spawning `pinfold exec` failed.
    #[error("starting pinfold exec: {0}")]
    Spawn(std::io::Error),
    /// Artifacts could not be collected.
    #[error("artifacts: {0}")]
    Artifacts(#[from] artifacts::ArtifactError),
}

/// How this machine runs jobs: the same for every job of one `pinfold
/// agent`, `run` or `verify`, from the binary's flags and environment.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The policies the runner's operator allows.
    pub ceiling: Arc<Ceiling>,
    /// The pinfold binary to run steps with.
    pub exe: PathBuf,
    /// The lean `pinfold-exec` to run the job container with, when
    /// installed ([`lean_exec`]); `None`: `exe exec`.
    pub lean: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when stopping a step.
    pub grace: Duration,
    /// What the binary read from its environment for the sandbox (the
    /// image store, the job file system's id map).
    pub settings: pinfold_sandbox::Settings,
    /// The runner's own environment, as the binary read it.
    pub host: HostEnv,
    /// Whether a job may name a local image (an `oci:`, `oci-archive:`
    /// or `docker-archive:` path): the operator's choice (`pinfold agent
    /// --allow-local-images`); `pinfold run` and `verify` run the caller's
    /// own job file.
    pub allow_local_images: bool,
}

impl Runtime {
    /// The runtime of the binary `exe` (the lean `pinfold-exec` beside it
    /// found once).
    pub fn new(
        ceiling: Arc<Ceiling>,
        exe: PathBuf,
        grace: Duration,
        settings: pinfold_sandbox::Settings,
        host: HostEnv,
        allow_local_images: bool,
    ) -> Runtime {
        Runtime {
            ceiling,
            lean: lean_exec(&exe),
            exe,
            grace,
            settings,
            host,
            allow_local_images,
        }
    }
}

/// One job to run.
pub struct Job {
    /// The job.
    pub spec: JobSpec,
    /// Per-job directory (workspace/ and layer/ are created inside).
    pub dir: PathBuf,
    /// Secret values by name.
    pub secrets: BTreeMap<String, String>,
    /// Set (to a [`stop`] reason) to stop the job.
    pub stop: Arc<AtomicU8>,
    /// How this machine runs it.
    pub rt: Runtime,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Report {
    /// The outcome.
    pub state: JobState,
    /// Why, unless it succeeded.
    pub reason: Option<String>,
    /// Per-step results, in order.
    pub steps: Vec<StepResult>,
    /// Artifacts delivered.
    pub artifacts: Vec<ArtifactInfo>,
}

/// Where artifacts go: a directory (`pinfold run`) or the coordinator.
pub type Deliver<'a> = dyn FnMut(&mut Artifact) -> Result<(), String> + 'a;

impl Job {
    fn stopped(&self) -> u8 {
        self.stop.load(Ordering::SeqCst)
    }

    /// Creates the per-job directory and starts the job file system for
    /// the chosen policy: an empty workspace and layer (with `o.files` in
    /// the layer).
    pub fn prepare_dir(&self, chosen: &Chosen, o: &RunOptions) -> Result<JobFs, RunError> {
        // Before this process starts its first child: a delegated cgroup is
        // prepared so that each step gets a cgroup of its own (once per
        // process; where it cannot be, each step's exec decides alone).
        if let Err(why) = Children::get() {
            tracing::debug!(why, "steps run in this process's cgroup");
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| RunError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        let fs = &chosen.policy.filesystem;
        let sizes = Sizes {
            layer: fs.writable_layer_size.0,
            workspace: fs.workspace_size.0,
        };
        // The steps' own mapping, so every id a step writes exists on the
        // job file system.
        let mode = self
            .rt
            .host
            .id_map_mode()
            .map_err(|e| RunError::Config(format!("PINFOLD_USERNS: {e}")))?;
        let jobfs = JobFs::start(&self.rt.exe, &self.dir, sizes, mode, &self.rt.settings)?;
        jobfs.write_layer_upper(|layer| write_files(layer, &o.files))?;
        Ok(jobfs)
    }

    /// Runs the whole job: image, source (`fill` puts it into the empty
    /// workspace), steps, artifacts (`deliver`).
    pub fn run(
        &self,
        log: &SharedLog,
        fill: &mut dyn FnMut(&Workspace<'_>) -> Result<(), RunError>,
        deliver: &mut Deliver<'_>,
    ) -> Report {
        self.run_with(log, fill, deliver, &RunOptions::default())
    }

    /// [`Job::run`], differing from a plain run as `o` says.
    pub fn run_with(
        &self,
        log: &SharedLog,
        fill: &mut dyn FnMut(&Workspace<'_>) -> Result<(), RunError>,
        deliver: &mut Deliver<'_>,
        o: &RunOptions,
    ) -> Report {
        let started = Instant::now();
        let deadline = self.spec.timeout.map(|t| started + t.0);
        let mut steps: Vec<StepResult> = self
            .spec
            .steps
            .0
            .iter()
            .map(|s| StepResult {
                name: s.name.0.clone(),
                exit_code: None,
                started_at: None,
                finished_at: None,
            })
            .collect();
        let fail = |state, reason: String, steps: Vec<StepResult>| {
            lock(log).line(&format!("==> pinfold: {reason}"));
            Report {
                state,
                reason: Some(reason),
                steps,
                artifacts: Vec::new(),
            }
        };
        if let Err(e) = self.check_secrets() {
            return fail(JobState::Error, e.to_string(), steps);
        }
        let chosen = match self.choose() {
            Ok(c) => c,
            Err(e) => return fail(JobState::Error, e.to_string(), steps),
        };
        let log_cap = chosen.policy.limits.log_bytes.0;
        lock(log).set_cap(log_cap);
        let jobfs = match self.prepare_dir(&chosen, o) {
            Ok(j) => j,
            Err(e) => return fail(JobState::Error, e.to_string(), steps),
        };
        let ws = jobfs.workspace();
        if let Err(e) = self.resolve_image(log) {
            return fail(JobState::Error, e.to_string(), steps);
        }
        if let Err(e) = fill(&Workspace(&jobfs)) {
            return fail(JobState::Error, e.to_string(), steps);
        }
        let n = steps.len();
        let mut end: Option<(JobState, String)> = None;
        let socket = jobfs.socket();
        let report_path = self.report_path();
        let inputs = self.inputs(&chosen, &socket, &report_path);
        let mut ctr = match self.start_container(log, &inputs, o) {
            Ok(c) => c,
            Err(e) => return fail(JobState::Error, e.to_string(), steps),
        };
        for (i, step) in self.spec.steps.0.iter().enumerate() {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining.is_some_and(|r| r.is_zero()) {
                end = Some((JobState::TimedOut, "job timeout reached".into()));
                break;
            }
            if self.stopped() != stop::NONE {
                break;
            }
            let timeout = step_timeout(step.timeout.map(|t| t.0), remaining);
            lock(log).line(&format!("==> step {}/{n}: {}", i + 1, step.name));
            steps[i].started_at = Some(now_ms());
            let t0 = Instant::now();
            let ended = match ctr.step(self, log, &inputs.request(&step.run.0, timeout)) {
                Ok(e) => e,
                Err(e) => {
                    steps[i].finished_at = Some(now_ms());
                    return fail(JobState::Error, e.to_string(), steps);
                }
            };
            // A failed step ends the job, and so the container: its
            // report then names a limit that explains the failure (one
            // that killed the container, a full disk, under cgroup v2 an
            // OOM kill or a refused fork).
            let code = match ended {
                StepEnd::Reply(r) if r.exit_code == 0 => Some(0),
                StepEnd::Reply(r) => {
                    if let Some(e) = &r.error {
                        lock(log).line(e);
                    }
                    // A limit that explains the failure makes it the
                    // step's status, as `pinfold exec` reports one (123).
                    match ctr.finish(self.rt.grace) {
                        Some(EXIT_LIMIT) => Some(EXIT_LIMIT),
                        _ => Some(r.exit_code),
                    }
                }
                StepEnd::Gone => Some(ctr.finish(self.rt.grace).unwrap_or(125)),
                StepEnd::Stopped => None,
            };
            steps[i].finished_at = Some(now_ms());
            steps[i].exit_code = code;
            let took = humantime_secs(t0.elapsed());
            let shown = code.map_or("killed".to_string(), |c| format!("exit {c}"));
            lock(log).line(&format!(
                "==> step {}/{n}: {} finished: {shown} ({took})",
                i + 1,
                step.name
            ));
            if self.stopped() != stop::NONE {
                break;
            }
            if lock(log).over_limit() {
                end = Some((
                    JobState::Failed,
                    format!(
                        "step {}: log limit {} exceeded (policy limits.log_bytes); raise it in the policy or make the build quieter",
                        step.name,
                        pinfold_sandbox::policy::ByteSize(log_cap)
                    ),
                ));
                break;
            }
            let report = (code != Some(0)).then(|| self.step_report()).flatten();
            let limit_reason = report
                .as_ref()
                .filter(|r| r["outcome"] == "limit_exceeded")
                .and_then(|r| r["reason"].as_str());
            let time_up = deadline.is_some_and(|d| Instant::now() >= d);
            end = step_end(&step.name.0, code, limit_reason, time_up);
            if end.is_some() {
                break;
            }
        }
        ctr.finish(self.rt.grace);
        if let Some(m) = self
            .step_report()
            .as_ref()
            .and_then(|r| r["limits_detail"].as_str())
        {
            lock(log).line(&format!("==> limits enforced by {m}"));
        }
        let (state, reason) = job_end(self.stopped(), end);
        // Artifacts of failed jobs matter too (test reports); not when the
        // lease is gone.
        let mut delivered = Vec::new();
        if self.stopped() != stop::LEASE_LOST {
            let budget = chosen.policy.filesystem.workspace_size.0;
            match artifacts::collect(&ws, &self.patterns(), budget) {
                Ok(c) => {
                    let mut w = lock(log);
                    for p in &c.unmatched {
                        w.line(&format!("==> artifact pattern {p}: no file matched"));
                    }
                    for r in &c.refused {
                        w.line(&format!("==> artifact {r}"));
                    }
                    drop(w);
                    for mut a in c.artifacts {
                        match deliver(&mut a) {
                            Ok(()) => {
                                lock(log).line(&format!(
                                    "==> artifact {} ({} bytes, sha256 {})",
                                    a.name, a.size, a.sha256
                                ));
                                delivered.push(ArtifactInfo {
                                    name: a.name,
                                    size: a.size,
                                    sha256: a.sha256,
                                });
                            }
                            Err(e) => lock(log).line(&format!("==> artifact {}: {e}", a.name)),
                        }
                    }
                }
                Err(e) => lock(log).line(&format!("==> pinfold: {e}")),
            }
        }
        lock(log).line(&format!(
            "==> job {} ({}){}",
            state.as_str(),
            humantime_secs(started.elapsed()),
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
        Report {
            state,
            reason,
            steps,
            artifacts: delivered,
        }
    }

    fn patterns(&self) -> Vec<String> {
        self.spec.artifacts.iter().map(|p| p.0.clone()).collect()
    }

    fn check_secrets(&self) -> Result<(), RunError> {
        for s in &self.spec.secrets {
            if reserved_name(s.as_str()) {
                return Err(RunError::Secret(format!(
                    "{s}: this name is reserved (it would change how pinfold itself runs)"
                )));
            }
            if !self.secrets.contains_key(s.as_str()) {
                return Err(RunError::Secret(format!(
                    "{s} is not offered by this runner: the server did not hand it to this runner and its operator did not offer it (`pinfold agent --secret {s}`, or PINFOLD_SECRET_{s} for `pinfold run`)"
                )));
            }
        }
        Ok(())
    }

    /// Finds the job's image in the store, pulling it when missing.
    pub fn resolve_image(&self, log: &SharedLog) -> Result<(), RunError> {
        let image = self.spec.image.as_str();
        let local = ImageRef::parse(image).map_or(true, |r| !r.is_registry());
        if local && !self.rt.allow_local_images {
            return Err(RunError::Config(
                "the job's image names a file on the runner, not a registry image: write `image: REPO@sha256:DIGEST` (local images need the operator's `pinfold agent --allow-local-images`)".into(),
            ));
        }
        let err = |source| RunError::Image {
            image: image.to_string(),
            source,
        };
        let store = Store::open_default(&self.rt.settings).map_err(err)?;
        let t0 = Instant::now();
        match store.find(image) {
            Ok(_) => lock(log).line(&format!("==> image {image} (cached)")),
            Err(ImageError::NotFound(_)) => {
                let r = ImageRef::parse_pinned(image, false).map_err(|e| err(e.into()))?;
                store.pull(&r, &PullOptions::default()).map_err(err)?;
                lock(log).line(&format!(
                    "==> image {image} (fetched in {})",
                    humantime_secs(t0.elapsed())
                ));
            }
            Err(e) => return Err(err(e)),
        }
        Ok(())
    }

    fn report_path(&self) -> PathBuf {
        self.dir.join("container.json")
    }

    /// What the job container's `pinfold exec --report` wrote when it
    /// ended, if anything.
    fn step_report(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.report_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The policy this job runs under: one the runner allows, narrowed as
    /// the job asks.
    pub fn choose(&self) -> Result<Chosen, pinfold_sandbox::ceiling::CeilingError> {
        self.rt.ceiling.choose(
            self.spec.policy.as_ref().map(|p| p.as_str()),
            self.spec.network,
            &self.spec.limits,
        )
    }

    /// What every step of this job shares (see [`plan`]).
    fn inputs<'a>(
        &'a self,
        chosen: &'a Chosen,
        socket: &'a Path,
        report: &'a Path,
    ) -> StepInputs<'a> {
        StepInputs {
            exe: &self.rt.exe,
            spec: &self.spec,
            secrets: &self.secrets,
            host: &self.rt.host,
            policy: &chosen.reference,
            job_fs: socket,
            report,
            lean: self.rt.lean.as_deref(),
        }
    }

    /// Starts the job container (see [`container`]).
    fn start_container(
        &self,
        log: &SharedLog,
        inputs: &StepInputs<'_>,
        o: &RunOptions,
    ) -> Result<JobContainer, RunError> {
        let _ = std::fs::remove_file(inputs.report);
        let plan = inputs.container(o);
        let cpus = match o.cpus {
            Some(n) => Some(first_cpus(n).map_err(|e| RunError::Spawn(e.into()))?),
            None => None,
        };
        JobContainer::start(plan, log, cpus)
    }
}

/// `pinfold-exec` beside the pinfold binary `exe`, if it is there (the
/// Debian package and `cargo install` put both in one directory).
pub fn lean_exec(exe: &Path) -> Option<PathBuf> {
    let lean = exe.with_file_name("pinfold-exec");
    lean.is_file().then_some(lean)
}

/// The job's empty workspace, as the `fill` of [`Job::run`] gets it.
pub struct Workspace<'a>(&'a JobFs);

impl Workspace<'_> {
    /// Runs `f`, which writes into the workspace at the path it is given,
    /// as the workspace's owner (see [`JobFs::write_workspace`]): only what
    /// writes into it, never what reads the caller's own files (the owner
    /// may not read them when the runner is root).
    pub fn write<T>(&self, f: impl FnOnce(&Path) -> T) -> T {
        self.0.write_workspace(f)
    }
}

/// Writes `files` (paths relative to `layer`) into the writable layer.
fn write_files(layer: &Path, files: &[(PathBuf, String)]) -> Result<(), RunError> {
    for (rel, content) in files {
        let path = layer.join(rel);
        let dir_err = |source| RunError::Dir {
            path: path.clone(),
            source,
        };
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(dir_err)?;
        }
        std::fs::write(&path, content).map_err(dir_err)?;
    }
    Ok(())
}

/// The first `n` CPUs of this process's affinity mask.
fn first_cpus(n: usize) -> nix::Result<nix::sched::CpuSet> {
    let mine = nix::sched::sched_getaffinity(Pid::from_raw(0))?;
    let mut set = nix::sched::CpuSet::new();
    let mut taken = 0;
    for cpu in 0..nix::sched::CpuSet::count() {
        if taken == n {
            break;
        }
        if mine.is_set(cpu)? {
            set.set(cpu)?;
            taken += 1;
        }
    }
    Ok(set)
}

/// CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> usize {
    nix::sched::sched_getaffinity(Pid::from_raw(0))
        .map(|s| {
            (0..nix::sched::CpuSet::count())
                .filter(|c| s.is_set(*c).unwrap_or(false))
                .count()
        })
        .unwrap_or(1)
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
