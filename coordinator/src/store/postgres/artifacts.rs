//! Artifact metadata in the PostgreSQL store: name, size and digest per job
//! (the bytes, and uploaded sources, are in the blob store). An upload is
//! recorded only by the job's current attempt.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use pinfold_api::wire::ArtifactInfo;

use super::PgStore;
use super::jobs::load_job;
use super::query::require_active;
use crate::store::{ArtifactStore, Result};

#[async_trait]
impl ArtifactStore for PgStore {
    /// Records an uploaded artifact (replacing one of the same name), in a
    /// transaction fenced by the attempt.
    async fn add_artifact(&self, job_id: u64, attempt_id: u64, info: ArtifactInfo) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        require_active(&tx, job_id, attempt_id).await?;
        let st = tx
            .prepare_cached(
                "INSERT INTO artifacts (job_id, name, size, sha256) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (job_id, name) DO UPDATE SET size = excluded.size, \
                 sha256 = excluded.sha256",
            )
            .await?;
        tx.execute(
            &st,
            &[
                &(job_id as i64),
                &info.name,
                &(info.size as i64),
                &info.sha256,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A job's artifacts, by name; an unknown job is an error.
    async fn artifacts(&self, job_id: u64) -> Result<Vec<ArtifactInfo>> {
        let c = self.client().await?;
        load_job(&c, job_id).await?;
        let st = c
            .prepare_cached(
                "SELECT name, size, sha256 FROM artifacts WHERE job_id = $1 ORDER BY name",
            )
            .await?;
        let rows = c.query(&st, &[&(job_id as i64)]).await?;
        rows.iter()
            .map(|r| {
                Ok(ArtifactInfo {
                    name: r.try_get(0)?,
                    size: r.try_get::<_, i64>(1)? as u64,
                    sha256: r.try_get(2)?,
                })
            })
            .collect()
    }
}
