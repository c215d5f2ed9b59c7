//! One reproducibility run and a batch of them: each run is an ordinary
//! [`Job`] with the runner options of its variations, the packed source
//! unpacked into its workspace, its artifacts copied out and its
//! provenance written beside them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pinfold_api::wire::JobState;

use super::settings::Settings;
use super::variation::{self, Variation};
use crate::log::{LogWriter, lock};
use crate::runner::RunError;

/// One run to make.
pub(super) struct Plan {
    /// run-1, run-2, …, bisect/NAME, bisect/NAME-control.
    pub label: String,
    /// The run number the varied values are made for.
    pub k: usize,
    pub vary: BTreeSet<Variation>,
}

/// How a run went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    /// run-1, run-2, …, bisect/NAME, bisect/NAME-control.
    pub label: String,
    /// The variations this run applied.
    pub varied: Vec<Variation>,
    /// The job state it ended in.
    pub state: &'static str,
    /// Why it did not succeed.
    pub reason: Option<String>,
    /// Artifact name → sha256.
    pub artifacts: BTreeMap<String, String>,
    /// Start time.
    pub started_ms: u64,
    /// End time.
    pub finished_ms: u64,
    /// The run's (masked) log.
    pub log: PathBuf,
    /// The run's signed provenance, when it was written.
    pub provenance: Option<PathBuf>,
}

impl RunResult {
    /// The run ended as it should.
    pub fn succeeded(&self) -> bool {
        self.state == JobState::Succeeded.as_str()
    }
}

/// What every run shares: the check's settings and what was prepared once.
pub(super) struct Shared<'a> {
    pub settings: &'a Settings,
    pub work: PathBuf,
    pub source_tar: Option<PathBuf>,
    pub source_digest: Option<String>,
    pub ctx: variation::Context<'a>,
    pub image: String,
}

/// A fresh control and a run varying only `v`, to be started together.
pub(super) fn bisect_pair(v: Variation, attempt: usize) -> Vec<Plan> {
    let suffix = if attempt > 1 {
        format!("-{attempt}")
    } else {
        String::new()
    };
    vec![
        Plan {
            label: format!("bisect/{}{suffix}-control", v.name()),
            k: 1,
            vary: BTreeSet::new(),
        },
        Plan {
            label: format!("bisect/{}{suffix}", v.name()),
            k: 2,
            vary: BTreeSet::from([v]),
        },
    ]
}

/// Runs `plans` with up to `at_once` at the same time; results in plan order.
pub(super) fn execute(s: &Shared<'_>, plans: Vec<Plan>, at_once: usize) -> Vec<RunResult> {
    let t0 = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<RunResult>>> = Mutex::new(vec![None; plans.len()]);
    std::thread::scope(|scope| {
        for _ in 0..at_once.min(plans.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(p) = plans.get(i) else { return };
                    let r = run_one(s, p, t0);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

fn run_one(s: &Shared<'_>, p: &Plan, t0: Instant) -> RunResult {
    let dir = s.work.join(&p.label);
    let out = s.settings.out.join(&p.label);
    let log_path = out.join("log.txt");
    let varied: Vec<Variation> = p.vary.iter().copied().collect();
    let started_ms = pinfold_api::now_ms();
    let failed = |reason: String| RunResult {
        label: p.label.clone(),
        varied: varied.clone(),
        state: JobState::Error.as_str(),
        reason: Some(reason),
        artifacts: BTreeMap::new(),
        started_ms,
        finished_ms: pinfold_api::now_ms(),
        log: log_path.clone(),
        provenance: None,
    };
    if p.vary.contains(&Variation::Time) {
        // The real clock cannot be shifted: start later than the batch's
        // first run (the control) instead.
        let at = t0 + variation::TIME_GAP;
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    }
    let opts = match variation::options(p.k, &p.vary, &s.ctx) {
        Ok(o) => o,
        Err(e) => return failed(e.to_string()),
    };
    let log_file =
        match std::fs::create_dir_all(&out).and_then(|()| std::fs::File::create(&log_path)) {
            Ok(f) => f,
            Err(e) => return failed(format!("{}: {e}", log_path.display())),
        };
    let log = LogWriter::new(Box::new(log_file), s.settings.secrets.values().cloned()).shared();
    let job = s.settings.job(dir.clone());
    let reorder = p.vary.contains(&Variation::DirOrder);
    let mut fill = |ws: &crate::runner::Workspace<'_>| -> Result<(), RunError> {
        let Some(tar) = &s.source_tar else {
            return Ok(());
        };
        let f = std::fs::File::open(tar).map_err(|e| RunError::Source(e.to_string()))?;
        ws.write(|ws| {
            crate::source::unpack(std::io::BufReader::new(f), ws)
                .map_err(|e| RunError::Source(e.to_string()))?;
            if reorder {
                variation::reverse_dir_order(ws).map_err(|e| RunError::Source(e.to_string()))?;
            }
            Ok(())
        })
    };
    let mut deliver = |art: &mut crate::artifacts::Artifact| -> Result<(), String> {
        crate::artifacts::copy_to_dir(&out, art)
    };
    let report = job.run_with(&log, &mut fill, &mut deliver, &opts);
    let _ = lock(&log).finish();
    let finished_ms = pinfold_api::now_ms();
    let mut internal = serde_json::Map::new();
    internal.insert(
        "verify".into(),
        serde_json::json!({ "run": p.label, "varied": varied }),
    );
    let statement = crate::provenance::statement(
        &s.settings.spec_text,
        &s.image,
        s.source_digest.as_deref(),
        &report,
        &crate::provenance::Invocation {
            builder_id: &crate::provenance::local_builder_id(),
            invocation_id: &format!(
                "{}/{}",
                s.work
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                p.label
            ),
            started_ms,
            finished_ms,
        },
        internal,
    );
    let (provenance, mut reason) =
        match crate::provenance::write_local(&s.settings.home, &out, &statement) {
            Ok((file, _)) => (Some(file), report.reason.clone()),
            Err(e) => (None, Some(format!("writing provenance: {e}"))),
        };
    let mut state = report.state.as_str();
    if provenance.is_none() {
        state = JobState::Error.as_str();
    } else if reason.is_none() && report.state != JobState::Succeeded {
        reason = Some(state.to_string());
    }
    if let Err(e) = pinfold_sandbox::fs::remove::remove_tree(&dir) {
        tracing::warn!(%e, "removing a run's directory");
    }
    RunResult {
        label: p.label.clone(),
        varied,
        state,
        reason,
        artifacts: report
            .artifacts
            .into_iter()
            .map(|x| (x.name, x.sha256))
            .collect(),
        started_ms,
        finished_ms,
        log: log_path,
        provenance,
    }
}
