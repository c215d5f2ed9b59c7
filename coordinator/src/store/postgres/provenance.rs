//! Runner keys and provenance in the PostgreSQL store: the public key a
//! runner registers (fixed once set) and the signed provenance envelope of
//! each job, stored by the job's current attempt. The tables are in the
//! schema's first version (postgres/mod.rs).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::PgStore;
use super::jobs::load_job;
use super::query::require_active;
use crate::store::{ProvenanceStore, Result, StoreError};

#[async_trait]
impl ProvenanceStore for PgStore {
    /// Records a runner's public key unless it has one; returns the key it
    /// has afterwards.
    async fn set_runner_key(&self, runner_id: u64, pem: &str) -> Result<String> {
        let c = self.client().await?;
        set_runner_key(&c, runner_id, pem).await
    }

    /// A runner's public key, if it registered one.
    async fn runner_key(&self, runner_id: u64) -> Result<Option<String>> {
        let c = self.client().await?;
        runner_key(&c, runner_id).await
    }

    /// The runner that holds (or held) an attempt.
    async fn attempt_runner(&self, attempt_id: u64) -> Result<u64> {
        let c = self.client().await?;
        attempt_runner(&c, attempt_id).await
    }

    /// Stores the job's provenance envelope, in a transaction fenced by the
    /// attempt.
    async fn put_provenance(
        &self,
        job_id: u64,
        attempt_id: u64,
        runner_id: u64,
        envelope: String,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        require_active(&tx, job_id, attempt_id).await?;
        put_provenance(&tx, job_id, attempt_id, runner_id, &envelope).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A job's provenance: (signing runner, envelope JSON); an unknown job
    /// is an error.
    async fn provenance(&self, job_id: u64) -> Result<Option<(u64, String)>> {
        let c = self.client().await?;
        load_job(&c, job_id).await?;
        provenance(&c, job_id).await
    }
}

/// Records a runner's public key (PEM) unless it has one already (a key,
/// once set, is fixed); returns the key the runner has afterwards.
async fn set_runner_key(c: &impl GenericClient, runner_id: u64, pem: &str) -> Result<String> {
    let st = c
        .prepare_cached(
            "INSERT INTO runner_keys (runner_id, public_key) VALUES ($1, $2) \
             ON CONFLICT (runner_id) DO NOTHING",
        )
        .await?;
    c.execute(&st, &[&(runner_id as i64), &pem]).await?;
    runner_key(c, runner_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no runner {runner_id}")))
}

/// A runner's public key (PEM), if it registered one.
async fn runner_key(c: &impl GenericClient, runner_id: u64) -> Result<Option<String>> {
    let st = c
        .prepare_cached("SELECT public_key FROM runner_keys WHERE runner_id = $1")
        .await?;
    let row = c.query_opt(&st, &[&(runner_id as i64)]).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// The runner holding `attempt_id`.
async fn attempt_runner(c: &impl GenericClient, attempt_id: u64) -> Result<u64> {
    let st = c
        .prepare_cached("SELECT runner_id FROM attempts WHERE id = $1")
        .await?;
    let row = c.query_opt(&st, &[&(attempt_id as i64)]).await?;
    row.map(|r| r.try_get::<_, i64>(0))
        .transpose()?
        .map(|v| v as u64)
        .ok_or_else(|| StoreError::NotFound(format!("no attempt {attempt_id}")))
}

/// Stores a job's provenance envelope (replacing an earlier one).
async fn put_provenance(
    c: &impl GenericClient,
    job_id: u64,
    attempt_id: u64,
    runner_id: u64,
    envelope: &str,
) -> Result<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO provenance (job_id, attempt_id, runner_id, envelope) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id) DO UPDATE SET attempt_id = excluded.attempt_id, \
             runner_id = excluded.runner_id, envelope = excluded.envelope",
        )
        .await?;
    c.execute(
        &st,
        &[
            &(job_id as i64),
            &(attempt_id as i64),
            &(runner_id as i64),
            &envelope,
        ],
    )
    .await?;
    Ok(())
}

/// A job's provenance: (runner id, envelope JSON).
async fn provenance(c: &impl GenericClient, job_id: u64) -> Result<Option<(u64, String)>> {
    let st = c
        .prepare_cached("SELECT runner_id, envelope FROM provenance WHERE job_id = $1")
        .await?;
    let row = c.query_opt(&st, &[&(job_id as i64)]).await?;
    row.map(|r| Ok((r.try_get::<_, i64>(0)? as u64, r.try_get(1)?)))
        .transpose()
}
