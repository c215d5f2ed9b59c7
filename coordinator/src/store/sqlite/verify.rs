//! Issue 6 in the SQLite store: `verify: N` jobs. Kept apart from the
//! queue code: new tables only, and small hooks that the queue calls inside
//! its own transactions.
//!
//! A `verify: N` job is a *group*: one jobs row that is never leased (it
//! carries the status, the verdict and a short log) plus N *runs*, each an
//! ordinary jobs row with the same spec, labels and source, leased through
//! the normal queue with its own attempts, log, artifacts and provenance.
//! The one rule added to leasing: a runner never takes a run of a group in
//! which it holds or finished another run. When the last run ends, the
//! group settles: its state, reason and verdict are written in the same
//! transaction that ended that run.

use std::collections::BTreeMap;
use std::path::Path;

use pinfold_api::verdict::Verdict;
use pinfold_api::wire::{JobState, VerifyStatus};
use rusqlite::{Connection, OptionalExtension, params};

use super::logs::store_log_bytes;
use super::{exec, insert_job, json, row};
use crate::store::verify_rules::{self, GROUP_LOG_CAP, ONLINE_MS, RunRow};
use crate::store::{NewJob, Result, StoreError};

/// Tables of this module (created beside the queue's on open).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS verify_groups (
    job_id INTEGER PRIMARY KEY REFERENCES jobs (id),
    runs INTEGER NOT NULL,
    verdict TEXT
);
CREATE TABLE IF NOT EXISTS verify_runs (
    job_id INTEGER PRIMARY KEY REFERENCES jobs (id),
    group_id INTEGER NOT NULL REFERENCES verify_groups (job_id),
    run INTEGER NOT NULL,
    UNIQUE (group_id, run)
);
";

/// Whether `runner_id` may lease `job_id`: never a group row, and never a
/// run of a group where this runner holds or finished another run.
pub(super) fn may_lease(c: &Connection, job_id: u64, runner_id: u64) -> Result<bool> {
    let (is_group, group): (Option<i64>, Option<i64>) = row(
        c,
        "SELECT (SELECT 1 FROM verify_groups WHERE job_id = ?1), \
                (SELECT group_id FROM verify_runs WHERE job_id = ?1)",
        [job_id as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if is_group.is_some() {
        return Ok(false);
    }
    let Some(group) = group else { return Ok(true) };
    let taken: Option<i64> = row(
        c,
        "SELECT 1 FROM verify_runs v JOIN attempts a ON a.job_id = v.job_id \
             WHERE v.group_id = ?1 AND v.job_id != ?2 AND a.runner_id = ?3 AND a.state != 'lost' \
             LIMIT 1",
        params![group, job_id as i64, runner_id as i64],
        |r| r.get(0),
    )
    .optional()?;
    Ok(taken.is_none())
}

/// The group `job_id` is a run of.
pub(super) fn group_of(c: &Connection, job_id: u64) -> Result<Option<u64>> {
    Ok(row(
        c,
        "SELECT group_id FROM verify_runs WHERE job_id = ?1",
        [job_id as i64],
        |r| r.get::<_, i64>(0),
    )
    .optional()?
    .map(|g| g as u64))
}

/// The runs of group `job_id` (job ids in run order), or None for any other job.
pub(super) fn runs_of(c: &Connection, job_id: u64) -> Result<Option<Vec<u64>>> {
    let n: Option<i64> = row(
        c,
        "SELECT runs FROM verify_groups WHERE job_id = ?1",
        [job_id as i64],
        |r| r.get(0),
    )
    .optional()?;
    if n.is_none() {
        return Ok(None);
    }
    let mut st =
        c.prepare_cached("SELECT job_id FROM verify_runs WHERE group_id = ?1 ORDER BY run")?;
    let ids = st
        .query_map([job_id as i64], |r| r.get::<_, i64>(0))?
        .map(|r| r.map(|v| v as u64))
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(ids))
}

/// Enqueues a `verify: runs` job: the group row and its runs, in one
/// transaction. Returns the group's id.
pub(super) fn create_group(c: &mut Connection, logs: &Path, job: NewJob, runs: u32) -> Result<u64> {
    let tx = c.transaction()?;
    let insert = |state: &str| insert_job(&tx, &job, state);
    let group = insert("queued")?;
    exec(
        &tx,
        "INSERT INTO verify_groups (job_id, runs) VALUES (?1, ?2)",
        params![group as i64, runs as i64],
    )?;
    let mut ids = Vec::new();
    for run in 1..=runs {
        let id = insert("queued")?;
        exec(
            &tx,
            "INSERT INTO verify_runs (job_id, group_id, run) VALUES (?1, ?2, ?3)",
            params![id as i64, group as i64, run as i64],
        )?;
        ids.push(id.to_string());
    }
    let line = format!(
        "==> pinfold: verify: {runs} runs on different runners: jobs {}\n",
        ids.join(", ")
    );
    append_group_log(&tx, logs, group, line.as_bytes())?;
    tx.commit()?;
    Ok(group)
}

fn append_group_log(c: &Connection, logs: &Path, group: u64, text: &[u8]) -> Result<()> {
    let len: i64 = row(
        c,
        "SELECT log_len FROM jobs WHERE id = ?1",
        [group as i64],
        |r| r.get(0),
    )?;
    let mut len = len as u64;
    store_log_bytes(logs, group, &mut len, text, GROUP_LOG_CAP)?;
    exec(
        c,
        "UPDATE jobs SET log_len = ?2, log_raw_len = ?2 WHERE id = ?1",
        params![group as i64, len as i64],
    )?;
    Ok(())
}

/// A run was leased: its group is running.
pub(super) fn run_leased(c: &Connection, job_id: u64, now: u64) -> Result<()> {
    if let Some(g) = group_of(c, job_id)? {
        exec(
            c,
            "UPDATE jobs SET state = 'running', started_at = coalesce(started_at, ?2) \
             WHERE id = ?1 AND state = 'queued'",
            params![g as i64, now as i64],
        )?;
    }
    Ok(())
}

fn run_rows(c: &Connection, group: u64) -> Result<Vec<RunRow>> {
    let mut st = c.prepare_cached(
        "SELECT v.run, j.id, j.state, j.runner_id, j.reason FROM verify_runs v \
         JOIN jobs j ON j.id = v.job_id WHERE v.group_id = ?1 ORDER BY v.run",
    )?;
    let rows = st.query_map([group as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    rows.map(|r| {
        let (run, job_id, state, runner_id, reason) = r?;
        Ok(RunRow {
            run: run as u32,
            job_id: job_id as u64,
            state: JobState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?,
            runner_id: runner_id.map(|v| v as u64),
            reason,
        })
    })
    .collect()
}

/// Compares the artifacts of runs that all succeeded (the verdict itself
/// is [`pinfold_api::verdict::compare`]).
fn compare(c: &Connection, runs: &[RunRow]) -> Result<Verdict> {
    let mut per_run = Vec::new();
    for r in runs {
        let mut st =
            c.prepare_cached("SELECT name, sha256 FROM artifacts WHERE job_id = ?1 ORDER BY name")?;
        let arts: BTreeMap<String, String> = st
            .query_map([r.job_id as i64], |x| Ok((x.get(0)?, x.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        per_run.push((r.runner_id.unwrap_or(0), arts));
    }
    Ok(verify_rules::verdict(&per_run))
}

/// Called whenever a job may have ended: when it is a run and every run of
/// its group has ended, writes the group's state, reason and verdict.
pub(super) fn settle(c: &Connection, logs: &Path, job_id: u64, now: u64) -> Result<()> {
    let Some(group) = group_of(c, job_id)? else {
        return Ok(());
    };
    let gstate: String = row(
        c,
        "SELECT state FROM jobs WHERE id = ?1",
        [group as i64],
        |r| r.get(0),
    )?;
    if JobState::parse(&gstate).is_some_and(JobState::is_terminal) {
        return Ok(());
    }
    let runs = run_rows(c, group)?;
    if !runs.iter().all(|r| r.state.is_terminal()) {
        return Ok(());
    }
    let out = match verify_rules::failed(&runs) {
        Some(out) => out,
        None => verify_rules::judged(&runs, compare(c, &runs)?),
    };
    append_group_log(c, logs, group, out.log.as_bytes())?;
    exec(
        c,
        "UPDATE jobs SET state = ?2, reason = ?3, finished_at = ?4, cancel_requested = 0 \
         WHERE id = ?1",
        params![group as i64, out.state.as_str(), out.reason, now as i64],
    )?;
    exec(
        c,
        "UPDATE verify_groups SET verdict = ?2 WHERE job_id = ?1",
        params![group as i64, out.verdict.as_ref().map(json)],
    )?;
    Ok(())
}

/// The verify status of group `job_id` (None for any other job). `now`
/// dates the "runners online" count of the waiting message.
pub(super) fn status(c: &Connection, job_id: u64, now: u64) -> Result<Option<VerifyStatus>> {
    let row: Option<(i64, Option<String>, String, String)> = row(
        c,
        "SELECT g.runs, g.verdict, j.labels, j.state FROM verify_groups g \
             JOIN jobs j ON j.id = g.job_id WHERE g.job_id = ?1",
        [job_id as i64],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()?;
    let Some((n, verdict, labels, state)) = row else {
        return Ok(None);
    };
    let runs = run_rows(c, job_id)?;
    let terminal = JobState::parse(&state).is_some_and(JobState::is_terminal);
    let waiting = match verify_rules::queued(&runs, terminal) {
        None => None,
        Some(queued) => {
            let mut st = c.prepare_cached(
                "SELECT labels FROM runners WHERE revoked = 0 AND (last_seen >= ?1 \
             OR id IN (SELECT runner_id FROM attempts WHERE state = 'active'))",
            )?;
            let online = st
                .query_map([now.saturating_sub(ONLINE_MS) as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Some((queued, online))
        }
    };
    verify_rules::status(n as u32, &runs, &labels, waiting, verdict).map(Some)
}
