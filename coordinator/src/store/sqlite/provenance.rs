//! Runner keys and provenance in the SQLite store: the public key a runner
//! registers (fixed once set) and the signed provenance envelope of each
//! job, stored by the job's current attempt.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::jobs::load_job;
use super::{SqliteStore, exec, row};
use crate::store::{ProvenanceStore, Result, StoreError};

/// Tables of this module (created beside the queue's on open).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runner_keys (
    runner_id INTEGER PRIMARY KEY REFERENCES runners (id),
    public_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS provenance (
    job_id INTEGER PRIMARY KEY REFERENCES jobs (id),
    attempt_id INTEGER NOT NULL,
    runner_id INTEGER NOT NULL,
    envelope TEXT NOT NULL
);
";

#[async_trait]
impl ProvenanceStore for SqliteStore {
    async fn set_runner_key(&self, runner_id: u64, pem: &str) -> Result<String> {
        let pem = pem.to_string();
        self.call(move |c| set_runner_key(c, runner_id, &pem)).await
    }

    async fn runner_key(&self, runner_id: u64) -> Result<Option<String>> {
        self.call(move |c| runner_key(c, runner_id)).await
    }

    async fn attempt_runner(&self, attempt_id: u64) -> Result<u64> {
        self.call(move |c| attempt_runner(c, attempt_id)).await
    }

    async fn put_provenance(
        &self,
        job_id: u64,
        attempt_id: u64,
        runner_id: u64,
        envelope: String,
    ) -> Result<()> {
        self.fenced(job_id, attempt_id, move |tx| {
            put_provenance(tx, job_id, attempt_id, runner_id, &envelope)
        })
        .await
    }

    async fn provenance(&self, job_id: u64) -> Result<Option<(u64, String)>> {
        self.call(move |c| {
            load_job(c, job_id)?;
            provenance(c, job_id)
        })
        .await
    }
}

/// Records a runner's public key (PEM) unless it has one already (a key,
/// once set, is fixed); returns the key the runner has afterwards.
fn set_runner_key(c: &Connection, runner_id: u64, pem: &str) -> Result<String> {
    exec(
        c,
        "INSERT INTO runner_keys (runner_id, public_key) VALUES (?1, ?2) \
         ON CONFLICT (runner_id) DO NOTHING",
        params![runner_id as i64, pem],
    )?;
    runner_key(c, runner_id)?.ok_or_else(|| StoreError::NotFound(format!("no runner {runner_id}")))
}

/// A runner's public key (PEM), if it registered one.
fn runner_key(c: &Connection, runner_id: u64) -> Result<Option<String>> {
    Ok(row(
        c,
        "SELECT public_key FROM runner_keys WHERE runner_id = ?1",
        [runner_id as i64],
        |r| r.get(0),
    )
    .optional()?)
}

/// The runner holding `attempt_id`.
fn attempt_runner(c: &Connection, attempt_id: u64) -> Result<u64> {
    row(
        c,
        "SELECT runner_id FROM attempts WHERE id = ?1",
        [attempt_id as i64],
        |r| r.get::<_, i64>(0),
    )
    .optional()?
    .map(|v| v as u64)
    .ok_or_else(|| StoreError::NotFound(format!("no attempt {attempt_id}")))
}

/// Stores a job's provenance envelope (replacing an earlier one).
fn put_provenance(
    c: &Connection,
    job_id: u64,
    attempt_id: u64,
    runner_id: u64,
    envelope: &str,
) -> Result<()> {
    exec(
        c,
        "INSERT INTO provenance (job_id, attempt_id, runner_id, envelope) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (job_id) DO UPDATE SET attempt_id = excluded.attempt_id, \
         runner_id = excluded.runner_id, envelope = excluded.envelope",
        params![job_id as i64, attempt_id as i64, runner_id as i64, envelope],
    )?;
    Ok(())
}

/// A job's provenance: (runner id, envelope JSON).
fn provenance(c: &Connection, job_id: u64) -> Result<Option<(u64, String)>> {
    Ok(row(
        c,
        "SELECT runner_id, envelope FROM provenance WHERE job_id = ?1",
        [job_id as i64],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
    )
    .optional()?)
}
