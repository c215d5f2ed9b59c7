//! [`Settings`]: what a check needs, the environment already read by the
//! binary, and the [`Job`] each run (and the image probe) executes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

use pinfold_api::JobSpec;
use pinfold_sandbox::ceiling::Ceiling;

use super::variation::Variation;
use crate::runner::{HostEnv, Job};

/// What a check needs, the environment already read.
pub struct Settings {
    /// The job file (as named in the report).
    pub job_file: PathBuf,
    /// Its text (for the provenance).
    pub spec_text: String,
    /// The job, parsed.
    pub spec: JobSpec,
    /// The runner's policy ceiling.
    pub ceiling: Arc<Ceiling>,
    /// The job's secrets, name → value.
    pub secrets: BTreeMap<String, String>,
    /// The `pinfold` binary the steps are run with.
    pub exe: PathBuf,
    /// The state directory (image store, runner key).
    pub home: PathBuf,
    /// Where each run's outputs and the report go.
    pub out: PathBuf,
    /// Also write the report here.
    pub report: Option<PathBuf>,
    /// The directory copied in as /workspace.
    pub source: Option<PathBuf>,
    /// How many runs (at least 2: run 1 is the control).
    pub runs: usize,
    /// The variations asked for.
    pub vary: BTreeSet<Variation>,
    /// Bisect the artifacts that differ.
    pub bisect: bool,
    /// Runs at once (None: the CPUs available).
    pub jobs: Option<usize>,
    /// Between SIGTERM and SIGKILL when a step is interrupted.
    pub grace: Duration,
    /// Set by SIGINT/SIGTERM ([`crate::signals::stop_flag`]).
    pub stop: Arc<AtomicU8>,
    /// The runner's own environment, as the binary read it.
    pub host: HostEnv,
    /// The tmpfs `dir_order` is checked on.
    pub tmpfs: PathBuf,
    /// diffoscope, when installed.
    pub diffoscope: Option<PathBuf>,
    /// When the check started (names the default output directory and is
    /// the default `SOURCE_DATE_EPOCH`).
    pub started_ms: u64,
    /// What the binary read from the environment, for the runs' steps and
    /// the image store.
    pub sandbox: pinfold_sandbox::Settings,
}

impl Settings {
    /// The job a run (or the image probe) executes in `dir`.
    pub(super) fn job(&self, dir: PathBuf) -> Job {
        Job {
            spec: self.spec.clone(),
            ceiling: self.ceiling.clone(),
            dir,
            secrets: self.secrets.clone(),
            exe: self.exe.clone(),
            lean: crate::runner::lean_exec(&self.exe),
            stop: self.stop.clone(),
            grace: self.grace,
            settings: self.sandbox.clone(),
            host: self.host.clone(),
            // `pinfold verify` runs the caller's own job file.
            allow_local_images: true,
        }
    }
}
