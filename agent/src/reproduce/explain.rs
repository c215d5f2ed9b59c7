//! Explaining the artifacts that differ: bisecting over the variations
//! (which one flips an artifact) and diffoscope's account of the bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::report::ArtifactReport;
use super::runs::{RunResult, Shared, bisect_pair, execute};
use super::variation::Variation;

/// Bisects the differing artifacts over the `applied` variations, one at a
/// time, and records in each what flips it; returns the runs it made.
///
/// Each single-variation run is made together with a fresh control (a pair
/// started at the same moment), so an artifact that embeds the time is not
/// blamed on the variation that happened to run later; a flip of an
/// artifact that the time flips too is confirmed by a second pair.
pub(super) fn bisect(
    shared: &Shared<'_>,
    applied: &BTreeSet<Variation>,
    artifacts: &mut [ArtifactReport],
) -> Vec<RunResult> {
    let mut bisect_runs = Vec::new();
    let diff_names: Vec<String> = artifacts
        .iter()
        .filter(|a| !a.identical)
        .map(|a| a.name.clone())
        .collect();
    let mut flips: BTreeMap<Variation, BTreeSet<String>> = BTreeMap::new();
    let mut broken: BTreeSet<Variation> = BTreeSet::new();
    let mut pair = |v: Variation, attempt: usize| -> Option<BTreeSet<String>> {
        let runs = execute(shared, bisect_pair(v, attempt), 2);
        let flipped = (runs.iter().all(RunResult::succeeded)).then(|| {
            diff_names
                .iter()
                .filter(|n| runs[0].artifacts.get(*n) != runs[1].artifacts.get(*n))
                .cloned()
                .collect()
        });
        bisect_runs.extend(runs);
        flipped
    };
    for &v in applied {
        match pair(v, 1) {
            Some(f) => {
                flips.insert(v, f);
            }
            None => {
                broken.insert(v);
            }
        }
    }
    let by_time = flips.get(&Variation::Time).cloned().unwrap_or_default();
    for &v in applied {
        let suspect = v != Variation::Time
            && flips
                .get(&v)
                .is_some_and(|f| f.iter().any(|n| by_time.contains(n)));
        if suspect {
            match pair(v, 2) {
                Some(again) => {
                    if let Some(f) = flips.get_mut(&v) {
                        f.retain(|n| !by_time.contains(n) || again.contains(n));
                    }
                }
                None => {
                    broken.insert(v);
                }
            }
        }
    }
    for a in artifacts.iter_mut().filter(|a| !a.identical) {
        a.flipped_by = Some(
            flips
                .iter()
                .filter(|(_, f)| f.contains(&a.name))
                .map(|(v, _)| v.name())
                .collect(),
        );
        if !broken.is_empty() {
            a.bisect_failed_runs = Some(broken.iter().map(|v| v.name()).collect());
        }
    }
    bisect_runs
}

/// Runs diffoscope (`tool`) on each differing artifact present in the
/// control and in the first run that differs from it; its text report goes
/// to `out/diffoscope/NAME.txt`.
pub(super) fn diffoscope(
    tool: &Path,
    out: &Path,
    results: &[RunResult],
    artifacts: &mut [ArtifactReport],
) {
    for a in artifacts.iter_mut().filter(|a| !a.identical) {
        let name = a.name.clone();
        let Some(c) = results[0].artifacts.get(&name) else {
            continue;
        };
        let Some(other) = results
            .iter()
            .find(|r| r.artifacts.get(&name).is_some_and(|d| d != c))
        else {
            continue;
        };
        let file = out
            .join("diffoscope")
            .join(format!("{}.txt", name.replace('/', "_")));
        let _ = std::fs::create_dir_all(out.join("diffoscope"));
        let ran = std::process::Command::new(tool)
            .arg("--text")
            .arg(&file)
            .arg(out.join(&results[0].label).join(&name))
            .arg(out.join(&other.label).join(&name))
            .stdout(std::process::Stdio::null())
            .status();
        match ran {
            Ok(s) if s.code().is_some_and(|c| c <= 1) => a.diffoscope = Some(file),
            Ok(s) => tracing::warn!(%s, "diffoscope failed"),
            Err(e) => tracing::warn!(%e, "running diffoscope"),
        }
    }
}
