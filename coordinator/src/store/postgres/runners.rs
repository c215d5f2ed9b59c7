//! Runners in the PostgreSQL store: registration, lookup by token hash,
//! listing and revocation; the admin-trusted labels are in trust.rs.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use pinfold_api::wire::RunnerInfo;

use super::{PgStore, trust};
use crate::store::rows::{RUNNER_COLS, runner_from_row};
use crate::store::{Result, RunnerStore, StoreError, json};

#[async_trait]
impl RunnerStore for PgStore {
    /// Registers a runner; returns its id.
    async fn create_runner(
        &self,
        name: &str,
        labels: &[String],
        token_sha256: &str,
        now: u64,
    ) -> Result<u64> {
        let labels = json(&labels);
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO runners (name, labels, token_sha256, created_at) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .await?;
        let row = c
            .query_one(&st, &[&name, &labels, &token_sha256, &(now as i64)])
            .await?;
        Ok(row.try_get::<_, i64>(0)? as u64)
    }

    /// The runner with this token hash.
    async fn runner_by_token(&self, token_sha256: &str) -> Result<Option<RunnerInfo>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {RUNNER_COLS} FROM runners WHERE token_sha256 = $1"
            ))
            .await?;
        let row = c.query_opt(&st, &[&token_sha256]).await?;
        row.as_ref().map(runner_from_row).transpose()
    }

    /// All runners, by id.
    async fn list_runners(&self) -> Result<Vec<RunnerInfo>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {RUNNER_COLS} FROM runners ORDER BY id"),
                &[],
            )
            .await?;
        rows.iter().map(runner_from_row).collect()
    }

    /// Revokes a runner.
    async fn revoke_runner(&self, id: u64) -> Result<()> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("UPDATE runners SET revoked = 1 WHERE id = $1")
            .await?;
        let n = c.execute(&st, &[&(id as i64)]).await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no runner {id}")));
        }
        Ok(())
    }

    /// The labels the admin trusts the runner with.
    async fn trusted_labels(&self, runner_id: u64) -> Result<Vec<String>> {
        let c = self.client().await?;
        trust::trusted_labels(&c, runner_id).await
    }

    /// Adds, then removes, admin-trusted labels; returns the runner's set.
    async fn set_trusted_labels(
        &self,
        runner_id: u64,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<Vec<String>> {
        let mut c = self.client().await?;
        trust::set_trusted_labels(&mut c, runner_id, &add, &remove).await
    }
}
