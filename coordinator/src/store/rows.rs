//! Decoding the rows both stores read the same way: a job and a runner.
//! The two databases hand rows out through different types (rusqlite's
//! `Row`, tokio-postgres's `Row`), so each store implements [`Columns`]
//! (read one column by index) and the decoders are written once here over
//! it. Both schemas keep the same columns with the same meaning (integers
//! as 64-bit, JSON lists as text). A leaf: it uses no store module.

use pinfold_api::wire::{JobInfo, JobState, RunnerInfo, StepResult};

use super::{Result, StoreError, StoredJob, from_json};

/// A column type both databases decode (integers as i64, text, and
/// either as NULL-able `Option`).
pub(super) trait Value:
    rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>
{
}

impl<T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>> Value for T {}

/// One result row, read by column index.
pub(super) trait Columns {
    /// Column `i`.
    fn col<T: Value>(&self, i: usize) -> Result<T>;
}

impl Columns for rusqlite::Row<'_> {
    fn col<T: Value>(&self, i: usize) -> Result<T> {
        Ok(self.get(i)?)
    }
}

impl Columns for tokio_postgres::Row {
    fn col<T: Value>(&self, i: usize) -> Result<T> {
        Ok(self.try_get(i)?)
    }
}

/// The columns [`job_from_row`] reads, in its order.
pub(super) const JOB_COLS: &str = "id, spec_json, image, labels, secrets, source_sha256, state, \
     reason, steps, attempts, runner_id, cancel_requested, created_at, started_at, finished_at, \
     log_len";

/// A job from a row of [`JOB_COLS`].
pub(super) fn job_from_row(r: &impl Columns) -> Result<StoredJob> {
    let state = r.col::<String>(6)?;
    let info = JobInfo {
        id: r.col::<i64>(0)? as u64,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?,
        reason: r.col(7)?,
        labels: from_json(&r.col::<String>(3)?)?,
        attempts: r.col::<i64>(9)? as u32,
        runner_id: opt_u64(r.col(10)?),
        cancel_requested: r.col::<i64>(11)? != 0,
        created_at: r.col::<i64>(12)? as u64,
        started_at: opt_u64(r.col(13)?),
        finished_at: opt_u64(r.col(14)?),
        steps: from_json::<Vec<StepResult>>(&r.col::<String>(8)?)?,
        log_bytes: r.col::<i64>(15)? as u64,
        image: r.col(2)?,
        source_sha256: r.col(5)?,
        verify: None,
        verify_of: None,
    };
    Ok(StoredJob {
        info,
        spec_json: r.col(1)?,
        secrets: from_json(&r.col::<String>(4)?)?,
    })
}

/// The columns [`runner_from_row`] reads, in its order.
pub(super) const RUNNER_COLS: &str = "id, name, labels, created_at, last_seen, revoked";

/// A runner from a row of [`RUNNER_COLS`].
pub(super) fn runner_from_row(r: &impl Columns) -> Result<RunnerInfo> {
    Ok(RunnerInfo {
        id: r.col::<i64>(0)? as u64,
        name: r.col(1)?,
        labels: from_json(&r.col::<String>(2)?)?,
        created_at: r.col::<i64>(3)? as u64,
        last_seen: opt_u64(r.col(4)?),
        revoked: r.col::<i64>(5)? != 0,
    })
}

/// A nullable id or time as stored (both databases keep them as i64).
pub(super) fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|v| v as u64)
}
