//! Runners in the SQLite store: registration, lookup by token hash,
//! listing and revocation; the admin-trusted labels are in trust.rs.

use async_trait::async_trait;
use pinfold_api::wire::RunnerInfo;
use rusqlite::params;

use super::{SqliteStore, exec, json, trust};
use crate::store::rows::{RUNNER_COLS, runner_from_row};
use crate::store::{Result, RunnerStore, StoreError};

#[async_trait]
impl RunnerStore for SqliteStore {
    async fn create_runner(
        &self,
        name: &str,
        labels: &[String],
        token_sha256: &str,
        now: u64,
    ) -> Result<u64> {
        let (name, labels, hash) = (name.to_string(), json(&labels), token_sha256.to_string());
        self.call(move |c| {
            exec(
                c,
                "INSERT INTO runners (name, labels, token_sha256, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, labels, hash, now as i64],
            )?;
            Ok(c.last_insert_rowid() as u64)
        })
        .await
    }

    async fn runner_by_token(&self, token_sha256: &str) -> Result<Option<RunnerInfo>> {
        let hash = token_sha256.to_string();
        self.lookup(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {RUNNER_COLS} FROM runners WHERE token_sha256 = ?1"
            ))?;
            st.query_and_then([hash], |r| runner_from_row(r))?
                .next()
                .transpose()
        })
        .await
    }

    async fn list_runners(&self) -> Result<Vec<RunnerInfo>> {
        self.read(|c| {
            let mut st = c.prepare(&format!("SELECT {RUNNER_COLS} FROM runners ORDER BY id"))?;
            st.query_and_then([], |r| runner_from_row(r))?.collect()
        })
        .await
    }

    async fn revoke_runner(&self, id: u64) -> Result<()> {
        self.call(move |c| {
            let n = exec(
                c,
                "UPDATE runners SET revoked = 1 WHERE id = ?1",
                [id as i64],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("no runner {id}")));
            }
            Ok(())
        })
        .await
    }

    async fn trusted_labels(&self, runner_id: u64) -> Result<Vec<String>> {
        self.read(move |c| trust::trusted_labels(c, runner_id))
            .await
    }

    async fn set_trusted_labels(
        &self,
        runner_id: u64,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<Vec<String>> {
        self.call(move |c| trust::set_trusted_labels(c, runner_id, &add, &remove))
            .await
    }
}
