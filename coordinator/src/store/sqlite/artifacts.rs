//! Artifact metadata in the SQLite store: name, size and digest per job
//! (the bytes, and uploaded sources, are in the blob store). An upload is
//! recorded only by the job's current attempt.

use async_trait::async_trait;
use pinfold_api::wire::ArtifactInfo;
use rusqlite::params;

use super::jobs::load_job;
use super::{SqliteStore, exec};
use crate::store::{ArtifactStore, Result};

#[async_trait]
impl ArtifactStore for SqliteStore {
    async fn add_artifact(&self, job_id: u64, attempt_id: u64, info: ArtifactInfo) -> Result<()> {
        self.fenced(job_id, attempt_id, move |tx| {
            exec(
                tx,
                "INSERT INTO artifacts (job_id, name, size, sha256) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (job_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256",
                params![job_id as i64, info.name, info.size as i64, info.sha256],
            )?;
            Ok(())
        })
        .await
    }

    async fn artifacts(&self, job_id: u64) -> Result<Vec<ArtifactInfo>> {
        self.lookup(move |c| {
            load_job(c, job_id)?;
            let mut st = c.prepare_cached(
                "SELECT name, size, sha256 FROM artifacts WHERE job_id = ?1 ORDER BY name",
            )?;
            let rows = st.query_map([job_id as i64], |r| {
                Ok(ArtifactInfo {
                    name: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    sha256: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
}
