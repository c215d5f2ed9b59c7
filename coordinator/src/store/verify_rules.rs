//! The rules of `verify: N` groups that need no database, shared by both
//! stores (their `verify.rs` read and write the rows): what a group whose
//! runs have all ended becomes, and what its status says while runs wait.

use std::collections::BTreeMap;

use pinfold_api::verdict::Verdict;
use pinfold_api::wire::{JobState, VerifyRun, VerifyStatus};

use super::{Result, from_json};

/// A runner counts as online for the waiting message when it asked for a
/// lease this recently (agents long-poll at most 30 s at a time) or holds
/// a lease (a busy agent does not poll).
pub(super) const ONLINE_MS: u64 = 60_000;

/// The group log is a few lines; this caps it all the same.
pub(super) const GROUP_LOG_CAP: u64 = 1 << 20;

/// One run of a group, as the rules need it.
pub(super) struct RunRow {
    /// Its number in the group (1-based).
    pub run: u32,
    /// Its job.
    pub job_id: u64,
    /// Its job's state.
    pub state: JobState,
    /// The runner that ran (or runs) it.
    pub runner_id: Option<u64>,
    /// Why it ended as it did.
    pub reason: Option<String>,
}

/// The verdict over the runs' artifacts, each run's as name → sha256.
pub(super) fn verdict(per_run: &[(u64, BTreeMap<String, String>)]) -> Verdict {
    pinfold_api::verdict::compare(per_run.iter().map(|(runner, arts)| (*runner, arts)))
}

/// What a settled group becomes.
pub(super) struct Outcome {
    /// Its state.
    pub state: JobState,
    /// Its reason.
    pub reason: String,
    /// Its verdict (when every run succeeded).
    pub verdict: Option<Verdict>,
    /// The lines appended to its log.
    pub log: String,
}

/// The outcome of a group whose runs have all ended when one of them did
/// not succeed: no verdict. None when every run succeeded (then compare
/// their artifacts and ask [`judged`]).
pub(super) fn failed(runs: &[RunRow]) -> Option<Outcome> {
    let bad = runs.iter().find(|r| r.state != JobState::Succeeded)?;
    let reason = format!(
        "run {} (job {}) {}{}: no verdict",
        bad.run,
        bad.job_id,
        bad.state.as_str(),
        bad.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    Some(Outcome {
        state: bad.state,
        log: format!("==> verify: {reason}\n"),
        reason,
        verdict: None,
    })
}

/// The outcome of a group whose runs all succeeded, from the verdict over
/// their artifacts.
pub(super) fn judged(runs: &[RunRow], v: Verdict) -> Outcome {
    let mut log = String::new();
    let runners: Vec<String> = runs
        .iter()
        .map(|r| r.runner_id.unwrap_or(0).to_string())
        .collect();
    for a in &v.artifacts {
        let digests: Vec<String> = a
            .by_runner
            .iter()
            .map(|(r, d)| format!("runner {r} {}", short(d)))
            .collect();
        log.push_str(&format!(
            "==> verify: {} {}: {}\n",
            a.name,
            if a.identical { "identical" } else { "DIFFERS" },
            digests.join(", ")
        ));
    }
    let reason = if v.reproducible {
        format!(
            "reproducible: {} artifacts identical on runners {}",
            v.artifacts.len(),
            runners.join(", ")
        )
    } else if v.artifacts.is_empty() {
        "not reproducible: nothing to compare, the runs uploaded no artifacts".into()
    } else {
        format!(
            "not reproducible: {} differ between runners {}",
            v.differing.join(", "),
            runners.join(", ")
        )
    };
    log.push_str(&format!("==> verify: {reason}\n"));
    Outcome {
        state: if v.reproducible {
            JobState::Succeeded
        } else {
            JobState::Failed
        },
        reason,
        verdict: Some(v),
        log,
    }
}

/// A digest shortened for the group log ("missing" when a run lacks it).
fn short(d: &Option<String>) -> String {
    d.as_deref()
        .map_or("missing".into(), |d| d[..12.min(d.len())].to_string())
}

/// How many of a group's runs wait for a runner, when any does and the
/// group has not ended (then say why: [`waiting`]).
pub(super) fn queued(runs: &[RunRow], terminal: bool) -> Option<usize> {
    let queued = runs.iter().filter(|r| r.state == JobState::Queued).count();
    (queued > 0 && !terminal).then_some(queued)
}

/// Why `queued` of a group's `n` runs wait, when `online` runners with
/// every label in `need` are online.
pub(super) fn waiting(queued: usize, n: u32, need: &[String], online: usize) -> String {
    let with = if need.is_empty() {
        String::new()
    } else {
        format!(" with labels {}", need.join(","))
    };
    if online < n as usize {
        format!(
            "{queued} of {n} runs wait for a runner that has not run this job: \
             {n} different runners{with} are needed, {online} online"
        )
    } else {
        format!("{queued} of {n} runs queued for a free runner")
    }
}

/// The group's status: it has `n` runs and its jobs need the labels
/// `need` (a JSON list); `waiting` is, when [`queued`] says runs wait,
/// how many and the label lists (JSON) of the runners online; `verdict`
/// is the stored verdict (JSON) once the group has one.
pub(super) fn status(
    n: u32,
    runs: &[RunRow],
    need: &str,
    waiting: Option<(usize, Vec<String>)>,
    verdict: Option<String>,
) -> Result<VerifyStatus> {
    let need: Vec<String> = from_json(need)?;
    let waiting = match waiting {
        None => None,
        Some((queued, online)) => {
            let lists = online
                .iter()
                .map(|l| from_json::<Vec<String>>(l))
                .collect::<Result<Vec<_>>>()?;
            Some(self::waiting(queued, n, &need, with_labels(&lists, &need)))
        }
    };
    Ok(VerifyStatus {
        runs: n,
        run_jobs: runs
            .iter()
            .map(|r| VerifyRun {
                run: r.run,
                job_id: r.job_id,
                state: r.state,
                runner_id: r.runner_id,
            })
            .collect(),
        waiting,
        verdict: verdict.map(|v| from_json(&v)).transpose()?,
    })
}

/// Of runners' label lists, how many have every label in `need`.
fn with_labels(lists: &[Vec<String>], need: &[String]) -> usize {
    lists
        .iter()
        .filter(|have| need.iter().all(|l| have.contains(l)))
        .count()
}
