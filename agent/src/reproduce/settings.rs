//! [`Settings`]: what a check needs, the environment already read by the
//! binary, and the [`Job`] each run (and the image probe) executes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;

use pinfold_api::JobSpec;

use super::variation::Variation;
use crate::runner::{Job, Runtime};

/// What a check needs, the environment already read.
pub struct Settings {
    /// The job file (as named in the report).
    pub job_file: PathBuf,
    /// Its text (for the provenance).
    pub spec_text: String,
    /// The job, parsed.
    pub spec: JobSpec,
    /// The job's secrets, name → value.
    pub secrets: BTreeMap<String, String>,
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
    /// Set by SIGINT/SIGTERM ([`crate::signals::stop_flag`]).
    pub stop: Arc<AtomicU8>,
    /// The tmpfs `dir_order` is checked on.
    pub tmpfs: PathBuf,
    /// diffoscope, when installed.
    pub diffoscope: Option<PathBuf>,
    /// When the check started (names the default output directory and is
    /// the default `SOURCE_DATE_EPOCH`).
    pub started_ms: u64,
    /// How the runs' steps run: the runner's policy ceiling, the `pinfold`
    /// binary, the grace between SIGTERM and SIGKILL, what the binary read
    /// from the environment (the image store too).
    pub rt: Runtime,
}

impl Settings {
    /// The job a run (or the image probe) executes in `dir`.
    pub(super) fn job(&self, dir: PathBuf) -> Job {
        Job {
            spec: self.spec.clone(),
            dir,
            secrets: self.secrets.clone(),
            stop: self.stop.clone(),
            rt: self.rt.clone(),
        }
    }
}
