//! Issue 6 in the PostgreSQL store: `verify: N` jobs. Kept apart from the
//! queue code: small hooks that the queue calls inside its own
//! transactions (the tables are in the schema, mod.rs).
//!
//! A `verify: N` job is a *group*: one jobs row that is never leased (it
//! carries the status, the verdict and a short log) plus N *runs*, each an
//! ordinary jobs row with the same spec, labels and source, leased through
//! the normal queue with its own attempts, log, artifacts and provenance.
//! The one rule added to leasing: a runner never takes a run of a group in
//! which it holds or finished another run. When the last run ends, the
//! group settles: its state, reason and verdict are written in the same
//! transaction that ended that run.
//!
//! Several coordinators may end runs of one group at once, so settling
//! locks the group's row first: the last of them to commit sees every run
//! ended. Locks are taken runs first, then their group, on every path.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use pinfold_api::verdict::Verdict;
use pinfold_api::wire::{JobState, VerifyStatus};
use tokio_postgres::IsolationLevel;

use super::logs::store_log_bytes;
use super::query::{exec, row, row_opt, rows};
use super::{PgStore, enqueue, insert_job};
use crate::store::verify_rules::{self, GROUP_LOG_CAP, ONLINE_MS, RunRow};
use crate::store::{NewJob, Result, StoreError, VerifyStore, json};

/// Whether `runner_id` may lease `job_id`: never a group row, and never a
/// run of a group where this runner holds or finished another run. (Two
/// leases by one runner cannot race past this check: the lease locks the
/// runner's row first, so they take turns.)
pub(super) async fn may_lease(c: &impl GenericClient, job_id: u64, runner_id: u64) -> Result<bool> {
    let r = row(
        c,
        "SELECT EXISTS (SELECT 1 FROM verify_groups WHERE job_id = $1), \
                (SELECT group_id FROM verify_runs WHERE job_id = $1)",
        &[&(job_id as i64)],
    )
    .await?;
    let (is_group, group): (bool, Option<i64>) = (r.try_get(0)?, r.try_get(1)?);
    if is_group {
        return Ok(false);
    }
    let Some(group) = group else { return Ok(true) };
    let taken = row_opt(
        c,
        "SELECT 1 FROM verify_runs v JOIN attempts a ON a.job_id = v.job_id \
             WHERE v.group_id = $1 AND v.job_id != $2 AND a.runner_id = $3 AND a.state != 'lost' \
             LIMIT 1",
        &[&group, &(job_id as i64), &(runner_id as i64)],
    )
    .await?;
    Ok(taken.is_none())
}

/// The group `job_id` is a run of.
pub(super) async fn group_of(c: &impl GenericClient, job_id: u64) -> Result<Option<u64>> {
    let r = row_opt(
        c,
        "SELECT group_id FROM verify_runs WHERE job_id = $1",
        &[&(job_id as i64)],
    )
    .await?;
    Ok(match r {
        Some(r) => Some(r.try_get::<_, i64>(0)? as u64),
        None => None,
    })
}

/// The runs of group `job_id` (job ids in run order), or None for any other job.
pub(super) async fn runs_of(c: &impl GenericClient, job_id: u64) -> Result<Option<Vec<u64>>> {
    let n = row_opt(
        c,
        "SELECT runs FROM verify_groups WHERE job_id = $1",
        &[&(job_id as i64)],
    )
    .await?;
    if n.is_none() {
        return Ok(None);
    }
    let ids = rows(
        c,
        "SELECT job_id FROM verify_runs WHERE group_id = $1 ORDER BY run",
        &[&(job_id as i64)],
    )
    .await?
    .iter()
    .map(|r| Ok(r.try_get::<_, i64>(0)? as u64))
    .collect::<Result<_>>()?;
    Ok(Some(ids))
}

/// Enqueues a `verify: runs` job: the group row and its runs, inside the
/// caller's transaction. Returns the group's id.
pub(super) async fn create_group(c: &impl GenericClient, job: &NewJob, runs: u32) -> Result<u64> {
    let group = insert_job(c, job, "queued").await?;
    exec(
        c,
        "INSERT INTO verify_groups (job_id, runs) VALUES ($1, $2)",
        &[&(group as i64), &(runs as i64)],
    )
    .await?;
    let mut ids = Vec::new();
    for run in 1..=runs {
        let id = insert_job(c, job, "queued").await?;
        exec(
            c,
            "INSERT INTO verify_runs (job_id, group_id, run) VALUES ($1, $2, $3)",
            &[&(id as i64), &(group as i64), &(run as i64)],
        )
        .await?;
        enqueue(c, id).await?;
        ids.push(id.to_string());
    }
    let line = format!(
        "==> pinfold: verify: {runs} runs on different runners: jobs {}\n",
        ids.join(", ")
    );
    append_group_log(c, group, line.as_bytes()).await?;
    Ok(group)
}

/// Appends `text` to the group's own log (the caller holds the group's
/// row: it created it, or locked it to settle).
async fn append_group_log(c: &impl GenericClient, group: u64, text: &[u8]) -> Result<()> {
    let len: i64 = row(
        c,
        "SELECT log_len FROM jobs WHERE id = $1",
        &[&(group as i64)],
    )
    .await?
    .try_get(0)?;
    let mut len = len as u64;
    store_log_bytes(c, group, &mut len, text, GROUP_LOG_CAP).await?;
    exec(
        c,
        "UPDATE jobs SET log_len = $2, log_raw_len = $2 WHERE id = $1",
        &[&(group as i64), &(len as i64)],
    )
    .await?;
    Ok(())
}

/// A run was leased: its group is running.
pub(super) async fn run_leased(c: &impl GenericClient, job_id: u64, now: u64) -> Result<()> {
    if let Some(g) = group_of(c, job_id).await? {
        exec(
            c,
            "UPDATE jobs SET state = 'running', started_at = coalesce(started_at, $2) \
             WHERE id = $1 AND state = 'queued'",
            &[&(g as i64), &(now as i64)],
        )
        .await?;
    }
    Ok(())
}

/// The runs of `group`, in run order.
async fn run_rows(c: &impl GenericClient, group: u64) -> Result<Vec<RunRow>> {
    rows(
        c,
        "SELECT v.run, j.id, j.state, j.runner_id, j.reason FROM verify_runs v \
         JOIN jobs j ON j.id = v.job_id WHERE v.group_id = $1 ORDER BY v.run",
        &[&(group as i64)],
    )
    .await?
    .iter()
    .map(|r| {
        let state: String = r.try_get(2)?;
        Ok(RunRow {
            run: r.try_get::<_, i64>(0)? as u32,
            job_id: r.try_get::<_, i64>(1)? as u64,
            state: JobState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?,
            runner_id: r.try_get::<_, Option<i64>>(3)?.map(|v| v as u64),
            reason: r.try_get(4)?,
        })
    })
    .collect()
}

/// Compares the artifacts of runs that all succeeded (the verdict itself
/// is [`pinfold_api::verdict::compare`]).
async fn compare(c: &impl GenericClient, runs: &[RunRow]) -> Result<Verdict> {
    let mut per_run = Vec::new();
    for r in runs {
        let arts: BTreeMap<String, String> = rows(
            c,
            "SELECT name, sha256 FROM artifacts WHERE job_id = $1 ORDER BY name",
            &[&(r.job_id as i64)],
        )
        .await?
        .iter()
        .map(|x| Ok((x.try_get(0)?, x.try_get(1)?)))
        .collect::<Result<_>>()?;
        per_run.push((r.runner_id.unwrap_or(0), arts));
    }
    Ok(verify_rules::verdict(&per_run))
}

/// Called whenever a job may have ended: when it is a run and every run of
/// its group has ended, writes the group's state, reason and verdict.
///
/// The group's row is locked before the runs are read: of two
/// transactions ending the last two runs at once, the second waits for
/// the first and then sees both runs ended (each statement reads what was
/// committed before it started).
pub(super) async fn settle(c: &impl GenericClient, job_id: u64, now: u64) -> Result<()> {
    match group_of(c, job_id).await? {
        Some(group) => settle_group(c, group, now).await,
        None => Ok(()),
    }
}

/// [`settle`] for the group `group`, already known.
pub(super) async fn settle_group(c: &impl GenericClient, group: u64, now: u64) -> Result<()> {
    let gstate: String = row(
        c,
        "SELECT state FROM jobs WHERE id = $1 FOR UPDATE",
        &[&(group as i64)],
    )
    .await?
    .try_get(0)?;
    if JobState::parse(&gstate).is_some_and(JobState::is_terminal) {
        return Ok(());
    }
    let runs = run_rows(c, group).await?;
    if !runs.iter().all(|r| r.state.is_terminal()) {
        return Ok(());
    }
    let out = match verify_rules::failed(&runs) {
        Some(out) => out,
        None => verify_rules::judged(&runs, compare(c, &runs).await?),
    };
    append_group_log(c, group, out.log.as_bytes()).await?;
    exec(
        c,
        "UPDATE jobs SET state = $2, reason = $3, finished_at = $4, cancel_requested = 0 \
         WHERE id = $1",
        &[
            &(group as i64),
            &out.state.as_str(),
            &out.reason,
            &(now as i64),
        ],
    )
    .await?;
    exec(
        c,
        "UPDATE verify_groups SET verdict = $2 WHERE job_id = $1",
        &[&(group as i64), &out.verdict.as_ref().map(json)],
    )
    .await?;
    Ok(())
}

/// The verify status of group `job_id` (None for any other job). `now`
/// dates the "runners online" count of the waiting message.
pub(super) async fn status(
    c: &impl GenericClient,
    job_id: u64,
    now: u64,
) -> Result<Option<VerifyStatus>> {
    let Some(r) = row_opt(
        c,
        "SELECT g.runs, g.verdict, j.labels, j.state FROM verify_groups g \
             JOIN jobs j ON j.id = g.job_id WHERE g.job_id = $1",
        &[&(job_id as i64)],
    )
    .await?
    else {
        return Ok(None);
    };
    let (n, verdict, labels, state): (i64, Option<String>, String, String) =
        (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
    let runs = run_rows(c, job_id).await?;
    let terminal = JobState::parse(&state).is_some_and(JobState::is_terminal);
    let waiting = match verify_rules::queued(&runs, terminal) {
        None => None,
        Some(queued) => {
            let online = rows(
                c,
                "SELECT labels FROM runners WHERE revoked = 0 AND (last_seen >= $1 \
             OR id IN (SELECT runner_id FROM attempts WHERE state = 'active'))",
                &[&(now.saturating_sub(ONLINE_MS) as i64)],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<Vec<String>, _>>()?;
            Some((queued, online))
        }
    };
    verify_rules::status(n as u32, &runs, &labels, waiting, verdict).map(Some)
}

#[async_trait]
impl VerifyStore for PgStore {
    /// Enqueues a `verify: runs` job (the group and its runs) in one
    /// transaction; returns the group's id.
    async fn create_verify_job(&self, job: NewJob, runs: u32) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let group = create_group(&tx, &job, runs).await?;
        tx.commit().await?;
        Ok(group)
    }

    /// The group's status and the group a run belongs to, read from one
    /// snapshot (as SQLite's single writer read them).
    async fn verify_status(
        &self,
        job_id: u64,
        now: u64,
    ) -> Result<(Option<VerifyStatus>, Option<u64>)> {
        let mut c = self.client().await?;
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let out = (
            status(&tx, job_id, now).await?,
            group_of(&tx, job_id).await?,
        );
        tx.commit().await?;
        Ok(out)
    }
}
