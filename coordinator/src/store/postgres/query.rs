//! The PostgreSQL store's query helpers (through each connection's
//! prepared-statement cache) and its fencing: the job-row lock and the
//! attempt check every change to a job starts with. A leaf: every concern
//! file uses it, it uses none of them.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::store::{Result, StoreError};

/// `query` through the connection's prepared-statement cache.
pub(super) async fn rows(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, p).await?)
}

/// `query_one` through the connection's prepared-statement cache: exactly
/// one row, else an error.
pub(super) async fn row(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Row> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_one(&st, p).await?)
}

/// `query_opt` through the connection's prepared-statement cache: at most
/// one row.
pub(super) async fn row_opt(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&st, p).await?)
}

/// `execute` through the connection's prepared-statement cache; returns
/// the rows changed.
pub(super) async fn exec(
    c: &impl GenericClient,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, p).await?)
}

/// Locks the job's row until the transaction ends, waiting for any other
/// transaction that holds it; a job that does not exist locks nothing
/// (the caller's next read reports it).
pub(super) async fn lock_job(c: &impl GenericClient, job_id: u64) -> Result<()> {
    row_opt(
        c,
        "SELECT id FROM jobs WHERE id = $1 FOR UPDATE",
        &[&(job_id as i64)],
    )
    .await?;
    Ok(())
}

/// Checks that `attempt_id` is the job's current attempt; returns its
/// state ("active" or "finished"). The caller holds the job's row.
pub(super) async fn check_attempt(
    c: &impl GenericClient,
    job_id: u64,
    attempt_id: u64,
) -> Result<String> {
    let state: Option<String> = match row_opt(
        c,
        "SELECT a.state FROM attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE a.id = $1 AND a.job_id = $2 AND j.current_attempt = a.id",
        &[&(attempt_id as i64), &(job_id as i64)],
    )
    .await?
    {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    };
    match state.as_deref() {
        Some("active") => Ok("active".into()),
        Some("finished") => Ok("finished".into()),
        _ => Err(StoreError::StaleLease { job_id, attempt_id }),
    }
}

/// Fencing: locks the job's row (so that every change to the job, from any
/// coordinator, takes turns), then checks that `attempt_id` is the job's
/// current, active attempt. Call it first in the transaction that makes
/// the change.
pub(super) async fn require_active(
    c: &impl GenericClient,
    job_id: u64,
    attempt_id: u64,
) -> Result<()> {
    lock_job(c, job_id).await?;
    match check_attempt(c, job_id, attempt_id).await?.as_str() {
        "active" => Ok(()),
        _ => Err(StoreError::Conflict(format!(
            "job {job_id} is already finished"
        ))),
    }
}
