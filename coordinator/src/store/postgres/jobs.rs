//! Jobs in the PostgreSQL store: the queue, leases and their attempts (the
//! fencing every change by a runner goes through), finishing, cancelling
//! and expiry; and the entry points of verify groups, whose rules are in
//! verify.rs.
//!
//! Several coordinators may share the database, so what SQLite got from
//! its single writer comes from row locks here: every change to a job
//! runs in one transaction that first locks the job's row
//! (`SELECT ... FOR UPDATE`), so changes to one job take turns and each
//! sees the one before. A lease takes its job with `FOR UPDATE SKIP
//! LOCKED`: two coordinators never lease one job, and neither waits on
//! the other's candidate. Where a transaction locks several rows it takes
//! them in one order: a runner's row; then jobs that are not verify
//! groups (several only in ascending id, or with `SKIP LOCKED`); then
//! verify groups (several only in ascending id), so that two transactions
//! do not wait on each other.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use pinfold_api::wire::{FinishRequest, JobState};

use super::logs::store_log_bytes;
use super::query::{exec, lock_job, require_active, row, row_opt, rows};
use super::{PgStore, enqueue, insert_job, verify};
use crate::store::rows::{JOB_COLS, job_from_row};
use crate::store::{
    JobFilter, JobStore, JobTokenRecord, LeaseGrant, NewJob, Result, StoreError, StoredJob,
    from_json, json,
};

/// Queued jobs a lease looks at before giving up, as in SQLite: a backlog
/// of jobs this runner may not take stays cheap.
const LEASE_SCAN: usize = 256;

/// One job; NotFound when there is none.
pub(super) async fn load_job(c: &impl GenericClient, id: u64) -> Result<StoredJob> {
    let row = row_opt(
        c,
        &format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"),
        &[&(id as i64)],
    )
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("no job {id}")))?;
    job_from_row(&row)
}

/// Cancels a queued job at once or flags a running one. The caller holds
/// the job's row.
async fn cancel_one(tx: &impl GenericClient, job_id: u64, now: u64) -> Result<JobState> {
    let state = load_job(tx, job_id).await?.info.state;
    Ok(match state {
        JobState::Queued => {
            // A lease holding its queue row has it too (then this waits
            // for that lease to end, which finds the job running).
            exec(
                tx,
                "WITH dequeued AS (DELETE FROM queue WHERE job_id = $1) \
                 UPDATE jobs SET state = 'cancelled', reason = 'cancelled before it started', \
                 finished_at = $2 WHERE id = $1",
                &[&(job_id as i64), &(now as i64)],
            )
            .await?;
            JobState::Cancelled
        }
        JobState::Running => {
            exec(
                tx,
                "UPDATE jobs SET cancel_requested = 1 WHERE id = $1",
                &[&(job_id as i64)],
            )
            .await?;
            JobState::Running
        }
        s => {
            return Err(StoreError::Conflict(format!(
                "job {job_id} already ended ({})",
                s.as_str()
            )));
        }
    })
}

/// The oldest leasable job after `after` whose labels are all in `labels`
/// (a JSON array), its queue row and its job row locked, skipping rows
/// another transaction holds (another lease; a cancel or an expiry holding
/// the job), so a lease never waits on a lock; with the verify group it is
/// a run of, if any, and its next attempt's number. Two statements, each on
/// one table by its primary key, so that the plan cannot turn into a scan
/// of the whole queue: the lease's hot path. None when there
/// is none. Verify groups are never in the queue.
async fn next_candidate(
    c: &impl GenericClient,
    labels: &str,
    after: i64,
) -> Result<Option<Candidate>> {
    let mut after = after;
    loop {
        let q = row_opt(
            c,
            "SELECT job_id FROM queue WHERE job_id > $2 AND labels::jsonb <@ $1::text::jsonb \
             ORDER BY job_id LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&labels, &after],
        )
        .await?;
        let Some(id) = q.map(|r| r.try_get::<_, i64>(0)).transpose()? else {
            return Ok(None);
        };
        let j = row_opt(
            c,
            "SELECT (SELECT v.group_id FROM verify_runs v WHERE v.job_id = jobs.id), attempts + 1 \
             FROM jobs WHERE id = $1 AND state = 'queued' FOR UPDATE SKIP LOCKED",
            &[&id],
        )
        .await?;
        match j {
            Some(j) => {
                return Ok(Some(Candidate {
                    id: id as u64,
                    group: j.try_get(0)?,
                    attempt: j.try_get(1)?,
                }));
            }
            // A cancel or an expiry holds the job: look past it.
            None => after = id,
        }
    }
}

/// A job a lease may take (see [`next_candidate`]).
struct Candidate {
    id: u64,
    /// The verify group it is a run of.
    group: Option<i64>,
    /// The number its attempt would have.
    attempt: i64,
}

#[async_trait]
impl JobStore for PgStore {
    /// Enqueues a job; returns its id.
    async fn create_job(&self, job: NewJob) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let id = insert_job(&tx, &job, "queued").await?;
        enqueue(&tx, id).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// One job.
    async fn job(&self, id: u64) -> Result<StoredJob> {
        let c = self.client().await?;
        load_job(&c, id).await
    }

    /// Jobs, newest first, that pass `filter`.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<StoredJob>> {
        let c = self.client().await?;
        let rows = rows(
            &c,
            &format!(
                "SELECT {JOB_COLS} FROM jobs WHERE ($1::text IS NULL OR state = $1::text) \
                 AND ($2::text IS NULL OR labels::jsonb ? $2::text) \
                 AND ($3::bigint IS NULL OR id < $3::bigint) ORDER BY id DESC LIMIT $4"
            ),
            &[
                &filter.state.map(JobState::as_str),
                &filter.label.as_deref(),
                &filter.before.map(|b| b as i64),
                &(filter.limit as i64),
            ],
        )
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Leases the oldest queued job this runner may take, in one
    /// transaction: the runner's row is locked first (two leases by one
    /// runner take turns, so the verify rule sees the other's attempt),
    /// then candidates one at a time, oldest first, skipping rows another
    /// coordinator holds. Only the job taken (and any the verify rule
    /// refused) stays locked, so a lease running beside this one gets the
    /// next free job rather than nothing.
    async fn lease(
        &self,
        runner_id: u64,
        runner_labels: &[String],
        token_sha256: &str,
        now: u64,
        expires: u64,
    ) -> Result<Option<LeaseGrant>> {
        let labels = json(&runner_labels);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "UPDATE runners SET last_seen = $1 WHERE id = $2",
            &[&(now as i64), &(runner_id as i64)],
        )
        .await?;
        // Oldest first; jobs needing labels this runner lacks are left out
        // by the query. The scan is bounded so a backlog of jobs the verify
        // rule refuses stays cheap; the first fit ends it.
        let mut chosen = None;
        let mut after = 0i64;
        for _ in 0..LEASE_SCAN {
            let Some(cand) = next_candidate(&tx, &labels, after).await? else {
                break;
            };
            // Only a verify run needs the verify rule's look.
            if cand.group.is_none() || verify::may_lease(&tx, cand.id, runner_id).await? {
                chosen = Some(cand);
                break;
            }
            after = cand.id as i64;
        }
        let Some(Candidate {
            id: job_id,
            group,
            attempt: number,
        }) = chosen
        else {
            tx.commit().await?;
            return Ok(None);
        };
        // The job leaves the queue, its attempt is made and the job's row
        // points at it, in one statement (one round trip): the updated row
        // is the job the grant carries.
        let r = row(
            &tx,
            &format!(
                "WITH dequeued AS (DELETE FROM queue WHERE job_id = $1), \
                 attempt AS (INSERT INTO attempts (job_id, runner_id, number, token_sha256, \
                 state, lease_expires, created_at) VALUES ($1, $2, $3, $4, 'active', $5, $6) \
                 RETURNING id) \
                 UPDATE jobs SET state = 'running', attempts = $3, \
                 current_attempt = (SELECT id FROM attempt), runner_id = $2, \
                 started_at = coalesce(started_at, $6) WHERE id = $1 \
                 RETURNING {JOB_COLS}, current_attempt, log_raw_len, spec_yaml"
            ),
            &[
                &(job_id as i64),
                &(runner_id as i64),
                &number,
                &token_sha256,
                &(expires as i64),
                &(now as i64),
            ],
        )
        .await?;
        let job = job_from_row(&r)?;
        let (attempt_id, log_offset, spec_yaml): (i64, i64, String) =
            (r.try_get(16)?, r.try_get(17)?, r.try_get(18)?);
        if group.is_some() {
            verify::run_leased(&tx, job_id, now).await?;
        }
        tx.commit().await?;
        Ok(Some(LeaseGrant {
            job,
            attempt_id: attempt_id as u64,
            attempt: number as u32,
            log_offset: log_offset as u64,
            spec_yaml,
        }))
    }

    /// What this job-token hash grants.
    async fn job_token(&self, token_sha256: &str) -> Result<Option<JobTokenRecord>> {
        let c = self.client().await?;
        let Some(r) = row_opt(
            &c,
            "SELECT a.job_id, a.id, r.revoked, j.secrets FROM attempts a \
                 JOIN runners r ON r.id = a.runner_id JOIN jobs j ON j.id = a.job_id \
                 WHERE a.token_sha256 = $1",
            &[&token_sha256],
        )
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(JobTokenRecord {
            job_id: r.try_get::<_, i64>(0)? as u64,
            attempt_id: r.try_get::<_, i64>(1)? as u64,
            runner_revoked: r.try_get::<_, i64>(2)? != 0,
            secrets: from_json(r.try_get(3)?)?,
        }))
    }

    /// Renews a lease, fenced by the attempt; returns whether a cancel was
    /// requested.
    async fn heartbeat(&self, job_id: u64, attempt_id: u64, expires: u64) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        require_active(&tx, job_id, attempt_id).await?;
        // The renewal and the cancel flag in one statement (the job's row
        // is locked: the flag read is the one that stands).
        let cancel: i64 = row(
            &tx,
            "UPDATE attempts SET lease_expires = greatest(lease_expires, $2) WHERE id = $1 \
             RETURNING (SELECT cancel_requested FROM jobs WHERE id = $3)",
            &[&(attempt_id as i64), &(expires as i64), &(job_id as i64)],
        )
        .await?
        .try_get(0)?;
        tx.commit().await?;
        Ok(cancel != 0)
    }

    /// Ends the attempt and the job, with the bytes held back for masking
    /// released to the log. Repeating the same finish is a no-op.
    async fn finish(
        &self,
        job_id: u64,
        attempt_id: u64,
        req: FinishRequest,
        cap: u64,
        now: u64,
    ) -> Result<JobState> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        lock_job(&tx, job_id).await?;
        // The attempt check (as `check_attempt`), the log's state and the
        // verify group, in one statement after the lock.
        let r = row_opt(
            &tx,
            "SELECT a.state, j.log_len, j.log_pending, j.log_truncated, \
             (SELECT v.group_id FROM verify_runs v WHERE v.job_id = j.id) \
             FROM attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE a.id = $1 AND a.job_id = $2 AND j.current_attempt = a.id",
            &[&(attempt_id as i64), &(job_id as i64)],
        )
        .await?
        .ok_or(StoreError::StaleLease { job_id, attempt_id })?;
        match r.try_get::<_, &str>(0)? {
            "active" => {}
            // A retried finish (its answer was lost): report what stands.
            "finished" => return Ok(load_job(&tx, job_id).await?.info.state),
            _ => return Err(StoreError::StaleLease { job_id, attempt_id }),
        }
        if !req.state.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "finish needs a final state, not {}",
                req.state.as_str()
            )));
        }
        let (log_len, pending, truncated, group): (i64, &[u8], i64, Option<i64>) =
            (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?);
        // Release the bytes held back for masking: the log is complete.
        let mut log_len = log_len as u64;
        if truncated == 0 && !pending.is_empty() {
            store_log_bytes(&tx, job_id, &mut log_len, pending, cap).await?;
        }
        exec(
            &tx,
            "WITH attempt AS (UPDATE attempts SET state = 'finished' WHERE id = $7) \
             UPDATE jobs SET state = $2, reason = $3, steps = $4, finished_at = $5, log_len = $6, \
             log_pending = ''::bytea, cancel_requested = 0 WHERE id = $1",
            &[
                &(job_id as i64),
                &req.state.as_str(),
                &req.reason,
                &json(&req.steps),
                &(now as i64),
                &(log_len as i64),
                &(attempt_id as i64),
            ],
        )
        .await?;
        if let Some(group) = group {
            verify::settle_group(&tx, group as u64, now).await?;
        }
        tx.commit().await?;
        Ok(req.state)
    }

    /// Cancels a queued job at once, or flags a running one for its
    /// runner; for a verify group, each of its runs that has not ended.
    async fn cancel(&self, job_id: u64, now: u64) -> Result<JobState> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let after = match verify::runs_of(&tx, job_id).await? {
            // A verify group: cancel each run that has not ended; the
            // group settles as its last run ends.
            Some(runs) => {
                // The runs' rows, then the group's: the order settling
                // takes them in.
                let ids: Vec<i64> = runs.iter().map(|&r| r as i64).collect();
                rows(
                    &tx,
                    "SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                    &[&ids],
                )
                .await?;
                lock_job(&tx, job_id).await?;
                let state = load_job(&tx, job_id).await?.info.state;
                if state.is_terminal() {
                    return Err(StoreError::Conflict(format!(
                        "job {job_id} already ended ({})",
                        state.as_str()
                    )));
                }
                exec(
                    &tx,
                    "UPDATE jobs SET cancel_requested = 1 WHERE id = $1",
                    &[&(job_id as i64)],
                )
                .await?;
                for run in runs {
                    if !load_job(&tx, run).await?.info.state.is_terminal() {
                        cancel_one(&tx, run, now).await?;
                        verify::settle(&tx, run, now).await?;
                    }
                }
                load_job(&tx, job_id).await?.info.state
            }
            None => {
                lock_job(&tx, job_id).await?;
                let after = cancel_one(&tx, job_id, now).await?;
                verify::settle(&tx, job_id, now).await?;
                after
            }
        };
        tx.commit().await?;
        Ok(after)
    }

    /// Requeues (or fails, past their maximum) jobs whose lease expired
    /// before `now`, in one transaction; returns how many. Each coordinator
    /// runs this: the attempts and jobs it takes are locked with `SKIP
    /// LOCKED`, so two reapers share out the expired leases instead of
    /// both ending one, and a lease being renewed or finished right now is
    /// left to that change (if it committed first, the lease is re-read and
    /// no longer expired).
    async fn expire_leases(&self, now: u64) -> Result<usize> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let expired = rows(
            &tx,
            "SELECT a.id, a.job_id, j.attempts, j.max_attempts, j.cancel_requested \
             FROM attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE a.state = 'active' AND a.lease_expires < $1 \
             ORDER BY j.id FOR UPDATE OF a, j SKIP LOCKED",
            &[&(now as i64)],
        )
        .await?;
        // Verify groups to settle, each by one of its runs that ended here:
        // settled after the loop, in ascending group id, so groups are
        // locked in one order. (The outcome is the same as settling after
        // each run: a group settles once all its runs have ended.)
        let mut ended: BTreeMap<u64, u64> = BTreeMap::new();
        for r in &expired {
            let (attempt_id, job_id, attempts, max_attempts, cancel): (i64, i64, i64, i64, i64) = (
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            );
            exec(
                &tx,
                "UPDATE attempts SET state = 'lost' WHERE id = $1",
                &[&attempt_id],
            )
            .await?;
            let (state, reason) = if cancel != 0 {
                (
                    "cancelled",
                    Some("cancelled; the runner was lost before it confirmed".to_string()),
                )
            } else if attempts >= max_attempts {
                (
                    "error",
                    Some(format!(
                        "runner lost ({attempts} attempts, each lease expired)"
                    )),
                )
            } else {
                ("queued", None)
            };
            if state == "queued" {
                exec(
                    &tx,
                    "UPDATE jobs SET state = 'queued', current_attempt = NULL WHERE id = $1",
                    &[&job_id],
                )
                .await?;
                enqueue(&tx, job_id as u64).await?;
            } else {
                exec(
                    &tx,
                    "UPDATE jobs SET state = $2, reason = $3, finished_at = $4, \
                     cancel_requested = 0 WHERE id = $1",
                    &[&job_id, &state, &reason, &(now as i64)],
                )
                .await?;
                if let Some(group) = verify::group_of(&tx, job_id as u64).await? {
                    ended.entry(group).or_insert(job_id as u64);
                }
            }
        }
        for run in ended.into_values() {
            verify::settle(&tx, run, now).await?;
        }
        tx.commit().await?;
        Ok(expired.len())
    }

    /// Pushes every active lease's expiry to at least `until`. The
    /// attempts are locked in id order first, so two coordinators doing
    /// this at once (both starting) take turns rather than deadlock.
    async fn extend_leases(&self, until: u64) -> Result<()> {
        let c = self.client().await?;
        exec(
            &c,
            "UPDATE attempts SET lease_expires = greatest(lease_expires, $1) \
             WHERE id IN (SELECT id FROM attempts WHERE state = 'active' ORDER BY id FOR UPDATE) \
             AND state = 'active'",
            &[&(until as i64)],
        )
        .await?;
        Ok(())
    }
}
