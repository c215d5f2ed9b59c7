//! Jobs in the SQLite store: the queue, leases and their attempts (the
//! fencing every change by a runner goes through), finishing, cancelling
//! and expiry; and the entry points of verify groups, whose rules are in
//! verify.rs.

use async_trait::async_trait;
use pinfold_api::wire::{FinishRequest, JobState, VerifyStatus};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::logs::store_log_bytes;
use super::{SqliteStore, exec, from_json, insert_job, json, row, verify};
use crate::store::rows::{JOB_COLS, job_from_row};
use crate::store::{
    JobFilter, JobStore, JobTokenRecord, LeaseGrant, NewJob, Result, StoreError, StoredJob,
    VerifyStore,
};

pub(super) fn load_job(conn: &Connection, id: u64) -> Result<StoredJob> {
    let mut st = conn.prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))?;
    st.query_and_then([id as i64], |r| job_from_row(r))?
        .next()
        .unwrap_or_else(|| Err(StoreError::NotFound(format!("no job {id}"))))
}

/// Checks that `attempt_id` is the job's current, active attempt.
fn check_attempt(conn: &Connection, job_id: u64, attempt_id: u64) -> Result<String> {
    let state: Option<String> = row(
        conn,
        "SELECT a.state FROM attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE a.id = ?1 AND a.job_id = ?2 AND j.current_attempt = a.id",
        [attempt_id as i64, job_id as i64],
        |r| r.get(0),
    )
    .optional()?;
    match state.as_deref() {
        Some("active") => Ok("active".into()),
        Some("finished") => Ok("finished".into()),
        _ => Err(StoreError::StaleLease { job_id, attempt_id }),
    }
}

fn require_active(conn: &Connection, job_id: u64, attempt_id: u64) -> Result<()> {
    match check_attempt(conn, job_id, attempt_id)?.as_str() {
        "active" => Ok(()),
        _ => Err(StoreError::Conflict(format!(
            "job {job_id} is already finished"
        ))),
    }
}

/// Cancels a queued job at once or flags a running one.
fn cancel_one(tx: &Connection, job_id: u64, now: u64) -> Result<JobState> {
    let state = load_job(tx, job_id)?.info.state;
    Ok(match state {
        JobState::Queued => {
            exec(
                tx,
                "UPDATE jobs SET state = 'cancelled', reason = 'cancelled before it started', \
                 finished_at = ?2 WHERE id = ?1",
                params![job_id as i64, now as i64],
            )?;
            JobState::Cancelled
        }
        JobState::Running => {
            exec(
                tx,
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
                [job_id as i64],
            )?;
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

impl SqliteStore {
    /// Runs `f` in a write transaction that first checks that `attempt_id`
    /// is the job's current, active attempt (fencing); commits what `f` did
    /// when it returns `Ok`.
    pub(super) async fn fenced<R, F>(&self, job_id: u64, attempt_id: u64, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_active(&tx, job_id, attempt_id)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, job: NewJob) -> Result<u64> {
        self.call(move |c| insert_job(c, &job, "queued")).await
    }

    async fn job(&self, id: u64) -> Result<StoredJob> {
        self.lookup(move |c| load_job(c, id)).await
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<StoredJob>> {
        let f = filter.clone();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {JOB_COLS} FROM jobs WHERE (?1 IS NULL OR state = ?1) \
                 AND (?2 IS NULL OR EXISTS (SELECT 1 FROM json_each(jobs.labels) WHERE value = ?2)) \
                 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
            ))?;
            let params = params![
                f.state.map(JobState::as_str),
                f.label,
                f.before.map(|b| b as i64),
                f.limit as i64
            ];
            st.query_and_then(params, |r| job_from_row(r))?.collect()
        })
        .await
    }

    async fn lease(
        &self,
        runner_id: u64,
        runner_labels: &[String],
        token_sha256: &str,
        now: u64,
        expires: u64,
    ) -> Result<Option<LeaseGrant>> {
        let labels = runner_labels.to_vec();
        let hash = token_sha256.to_string();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            exec(
                &tx,
                "UPDATE runners SET last_seen = ?1 WHERE id = ?2",
                params![now as i64, runner_id as i64],
            )?;
            // Oldest first; skip jobs needing labels this runner lacks. The
            // scan is bounded so a backlog of unmatched jobs stays cheap.
            // Rows are read one at a time: the first fit ends the scan.
            let mut chosen = None;
            {
                let mut st = tx.prepare_cached(
                    "SELECT id, labels FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 256",
                )?;
                let mut rows = st.query([])?;
                while let Some(r) = rows.next()? {
                    let id = r.get::<_, i64>(0)? as u64;
                    let text = r.get_ref(1)?.as_str();
                    let need: Vec<String> =
                        from_json(text.map_err(|e| StoreError::Corrupt(e.to_string()))?)?;
                    if need.iter().all(|l| labels.contains(l)) && verify::may_lease(&tx, id, runner_id)? {
                        chosen = Some(id);
                        break;
                    }
                }
            }
            let Some(job_id) = chosen else {
                tx.commit()?;
                return Ok(None);
            };
            let number: i64 = row(
                &tx,
                "SELECT attempts + 1 FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| r.get(0),
            )?;
            exec(
                &tx,
                "INSERT INTO attempts (job_id, runner_id, number, token_sha256, state, lease_expires, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6)",
                params![job_id as i64, runner_id as i64, number, hash, expires as i64, now as i64],
            )?;
            let attempt_id = tx.last_insert_rowid() as u64;
            exec(
                &tx,
                "UPDATE jobs SET state = 'running', attempts = ?2, current_attempt = ?3, runner_id = ?4, \
                 started_at = coalesce(started_at, ?5) WHERE id = ?1",
                params![job_id as i64, number, attempt_id as i64, runner_id as i64, now as i64],
            )?;
            verify::run_leased(&tx, job_id, now)?;
            let job = load_job(&tx, job_id)?;
            let (log_offset, spec_yaml): (i64, String) = tx.query_row(
                "SELECT log_raw_len, spec_yaml FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.commit()?;
            Ok(Some(LeaseGrant {
                job,
                attempt_id,
                attempt: number as u32,
                log_offset: log_offset as u64,
                spec_yaml,
            }))
        })
        .await
    }

    async fn job_token(&self, token_sha256: &str) -> Result<Option<JobTokenRecord>> {
        let hash = token_sha256.to_string();
        self.lookup(move |c| {
            let row: Option<(i64, i64, i64, String)> = row(
                c,
                "SELECT a.job_id, a.id, r.revoked, j.secrets FROM attempts a \
                     JOIN runners r ON r.id = a.runner_id JOIN jobs j ON j.id = a.job_id \
                     WHERE a.token_sha256 = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
            row.map(|(job_id, attempt_id, revoked, secrets)| {
                Ok(JobTokenRecord {
                    job_id: job_id as u64,
                    attempt_id: attempt_id as u64,
                    runner_revoked: revoked != 0,
                    secrets: from_json(&secrets)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn heartbeat(&self, job_id: u64, attempt_id: u64, expires: u64) -> Result<bool> {
        self.fenced(job_id, attempt_id, move |tx| {
            exec(
                tx,
                "UPDATE attempts SET lease_expires = max(lease_expires, ?2) WHERE id = ?1",
                params![attempt_id as i64, expires as i64],
            )?;
            let cancel: i64 = row(
                tx,
                "SELECT cancel_requested FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| r.get(0),
            )?;
            Ok(cancel != 0)
        })
        .await
    }

    async fn finish(
        &self,
        job_id: u64,
        attempt_id: u64,
        req: FinishRequest,
        cap: u64,
        now: u64,
    ) -> Result<JobState> {
        let logs = self.logs.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if check_attempt(&tx, job_id, attempt_id)? == "finished" {
                // A retried finish (its answer was lost): report what stands.
                return Ok(load_job(&tx, job_id)?.info.state);
            }
            if !req.state.is_terminal() {
                return Err(StoreError::Conflict(format!(
                    "finish needs a final state, not {}",
                    req.state.as_str()
                )));
            }
            // Release the bytes held back for masking: the log is complete.
            let (log_len, pending, truncated): (i64, Vec<u8>, i64) = row(
                &tx,
                "SELECT log_len, log_pending, log_truncated FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let mut log_len = log_len as u64;
            if truncated == 0 && !pending.is_empty() {
                store_log_bytes(&logs, job_id, &mut log_len, &pending, cap)?;
            }
            exec(
                &tx,
                "UPDATE attempts SET state = 'finished' WHERE id = ?1",
                [attempt_id as i64],
            )?;
            exec(
                &tx,
                "UPDATE jobs SET state = ?2, reason = ?3, steps = ?4, finished_at = ?5, log_len = ?6, \
                 log_pending = x'', cancel_requested = 0 WHERE id = ?1",
                params![
                    job_id as i64,
                    req.state.as_str(),
                    req.reason,
                    json(&req.steps),
                    now as i64,
                    log_len as i64
                ],
            )?;
            verify::settle(&tx, &logs, job_id, now)?;
            tx.commit()?;
            Ok(req.state)
        })
        .await
    }

    async fn cancel(&self, job_id: u64, now: u64) -> Result<JobState> {
        let logs = self.logs.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let after = match verify::runs_of(&tx, job_id)? {
                // A verify group: cancel each run that has not ended; the
                // group settles as its last run ends.
                Some(runs) => {
                    let state = load_job(&tx, job_id)?.info.state;
                    if state.is_terminal() {
                        return Err(StoreError::Conflict(format!(
                            "job {job_id} already ended ({})",
                            state.as_str()
                        )));
                    }
                    exec(
                        &tx,
                        "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
                        [job_id as i64],
                    )?;
                    for run in runs {
                        if !load_job(&tx, run)?.info.state.is_terminal() {
                            cancel_one(&tx, run, now)?;
                            verify::settle(&tx, &logs, run, now)?;
                        }
                    }
                    load_job(&tx, job_id)?.info.state
                }
                None => {
                    let after = cancel_one(&tx, job_id, now)?;
                    verify::settle(&tx, &logs, job_id, now)?;
                    after
                }
            };
            tx.commit()?;
            Ok(after)
        })
        .await
    }

    async fn expire_leases(&self, now: u64) -> Result<usize> {
        let logs = self.logs.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let expired: Vec<(i64, i64, i64, i64, i64)> = {
                let mut st = tx.prepare_cached(
                    "SELECT a.id, a.job_id, j.attempts, j.max_attempts, j.cancel_requested \
                     FROM attempts a JOIN jobs j ON j.id = a.job_id \
                     WHERE a.state = 'active' AND a.lease_expires < ?1",
                )?;
                st.query_map([now as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<_>>()?
            };
            for &(attempt_id, job_id, attempts, max_attempts, cancel) in &expired {
                exec(&tx, "UPDATE attempts SET state = 'lost' WHERE id = ?1", [attempt_id])?;
                let (state, reason) = if cancel != 0 {
                    ("cancelled", Some("cancelled; the runner was lost before it confirmed".to_string()))
                } else if attempts >= max_attempts {
                    ("error", Some(format!("runner lost ({attempts} attempts, each lease expired)")))
                } else {
                    ("queued", None)
                };
                if state == "queued" {
                    exec(
                        &tx,
                        "UPDATE jobs SET state = 'queued', current_attempt = NULL WHERE id = ?1",
                        [job_id],
                    )?;
                } else {
                    exec(
                        &tx,
                        "UPDATE jobs SET state = ?2, reason = ?3, finished_at = ?4, cancel_requested = 0 \
                         WHERE id = ?1",
                        params![job_id, state, reason, now as i64],
                    )?;
                    verify::settle(&tx, &logs, job_id as u64, now)?;
                }
            }
            tx.commit()?;
            Ok(expired.len())
        })
        .await
    }

    async fn extend_leases(&self, until: u64) -> Result<()> {
        self.call(move |c| {
            exec(
                c,
                "UPDATE attempts SET lease_expires = max(lease_expires, ?1) WHERE state = 'active'",
                [until as i64],
            )?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl VerifyStore for SqliteStore {
    async fn create_verify_job(&self, job: NewJob, runs: u32) -> Result<u64> {
        let logs = self.logs.clone();
        self.call(move |c| verify::create_group(c, &logs, job, runs))
            .await
    }

    async fn verify_status(
        &self,
        job_id: u64,
        now: u64,
    ) -> Result<(Option<VerifyStatus>, Option<u64>)> {
        self.call(move |c| {
            Ok((
                verify::status(c, job_id, now)?,
                verify::group_of(c, job_id)?,
            ))
        })
        .await
    }
}
