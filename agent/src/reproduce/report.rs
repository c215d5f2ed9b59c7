//! The report of `pinfold verify`: the JSON written to `report.json` (and
//! printed by `--json`) and the human summary.
//!
//! [`Report::to_json`] goes through a [`serde_json::Value`], whose objects
//! keep their keys sorted: the report's key order does not depend on the
//! order of the fields below.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::runs::RunResult;
use super::variation::Variation;

/// How the check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Every artifact identical in every run.
    #[serde(rename = "reproducible")]
    Reproducible,
    /// An artifact differs or is missing in a run.
    #[serde(rename = "not reproducible")]
    NotReproducible,
    /// A run failed (a step failed, or pinfold did).
    #[serde(rename = "run failed")]
    RunFailed,
    /// SIGINT/SIGTERM stopped the runs.
    #[serde(rename = "interrupted")]
    Interrupted,
}

impl Outcome {
    /// As the report says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Reproducible => "reproducible",
            Outcome::NotReproducible => "not reproducible",
            Outcome::RunFailed => "run failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// The exit status of `pinfold verify`: 0, 1, 125 or 130.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Reproducible => 0,
            Outcome::NotReproducible => 1,
            Outcome::RunFailed => 125,
            Outcome::Interrupted => 130,
        }
    }
}

/// A variation applied, and how.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// Its `--vary` name.
    pub name: &'static str,
    /// [`Variation::how`].
    pub how: &'static str,
}

/// A variation not applied, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NotApplied {
    /// Its `--vary` name.
    pub name: &'static str,
    /// Not asked for, or what the machine lacks.
    pub why: String,
}

/// The variations of the check.
#[derive(Debug, Clone, Serialize)]
pub struct Variations {
    /// Applied to every run but the control.
    pub applied: Vec<Applied>,
    /// Every other one.
    pub not_applied: Vec<NotApplied>,
}

impl Variations {
    /// The report's view of `applied` and `not_applied`.
    pub(super) fn new<'a>(
        applied: impl IntoIterator<Item = &'a Variation>,
        not_applied: &[(Variation, String)],
    ) -> Variations {
        Variations {
            applied: applied
                .into_iter()
                .map(|v| Applied {
                    name: v.name(),
                    how: v.how(),
                })
                .collect(),
            not_applied: not_applied
                .iter()
                .map(|(v, why)| NotApplied {
                    name: v.name(),
                    why: why.clone(),
                })
                .collect(),
        }
    }
}

/// One artifact across the runs.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactReport {
    /// Its path relative to /workspace.
    pub name: String,
    /// Every run has it with one digest.
    pub identical: bool,
    /// Its sha256 in each run, in run order (null where missing).
    pub sha256: Vec<Option<String>>,
    /// After `--bisect`: the variations that flip it on their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flipped_by: Option<Vec<&'static str>>,
    /// After `--bisect`: the variations whose bisect runs failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bisect_failed_runs: Option<Vec<&'static str>>,
    /// diffoscope's text report on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diffoscope: Option<PathBuf>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The verdict.
    pub verdict: Outcome,
    /// [`Outcome::exit_code`].
    pub exit_code: i32,
    /// The job file.
    pub job: PathBuf,
    /// The image reference.
    pub image: String,
    /// sha256 of the packed source.
    pub source_sha256: Option<String>,
    /// `SOURCE_DATE_EPOCH` of every run.
    pub source_date_epoch: u64,
    /// Runs at once.
    pub runs_at_once: usize,
    /// How long the runs (not the bisect runs) took.
    pub runs_took_ms: u64,
    /// Which variations were applied.
    pub variations: Variations,
    /// Every artifact any run produced, by name.
    pub artifacts: Vec<ArtifactReport>,
    /// The runs, control first.
    pub runs: Vec<RunResult>,
    /// The runs `--bisect` made.
    pub bisect_runs: Vec<RunResult>,
    /// The diffoscope used, or "not installed".
    #[serde(serialize_with = "diffoscope_or_not_installed")]
    pub diffoscope: Option<PathBuf>,
    /// Where the runs' outputs and the report are.
    pub out: PathBuf,
}

fn diffoscope_or_not_installed<S: serde::Serializer>(
    p: &Option<PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => p.serialize(s),
        None => s.serialize_str("not installed"),
    }
}

impl Report {
    /// The report as JSON (keys sorted).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The human summary: failed runs, each artifact, the verdict.
    pub fn write_summary(&self, term: &mut dyn Write, report_file: &Path) {
        let failed = self.runs.iter().filter(|r| !r.succeeded());
        for r in failed.clone() {
            let _ = writeln!(
                term,
                "  {}: {}{} (log: {})",
                r.label,
                r.state,
                r.reason
                    .as_deref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default(),
                r.log.display()
            );
        }
        for x in &self.artifacts {
            let name = &x.name;
            let ds: Vec<String> = x
                .sha256
                .iter()
                .map(|d| {
                    d.as_deref()
                        .map_or("missing".into(), |d| d[..12].to_string())
                })
                .collect();
            if x.identical {
                let _ = writeln!(term, "  identical  {name}  sha256 {}", ds[0]);
                continue;
            }
            let _ = writeln!(
                term,
                "  DIFFERS    {name}  sha256 per run: {}",
                ds.join(" ")
            );
            if let Some(names) = &x.flipped_by {
                let _ = writeln!(
                    term,
                    "             flipped by: {}",
                    if names.is_empty() {
                        "no single variation (nondeterministic, or a combination)".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            }
            if let Some(f) = &x.diffoscope {
                let _ = writeln!(term, "             diffoscope: {}", f.display());
            }
        }
        if self.artifacts.is_empty() && failed.count() == 0 {
            let _ = writeln!(term, "  (the job produced no artifacts)");
        }
        let _ = writeln!(
            term,
            "pinfold verify: {}; report {}",
            self.verdict.as_str(),
            report_file.display()
        );
    }
}
