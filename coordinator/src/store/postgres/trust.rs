//! Issue 13 point 8 in the PostgreSQL store: the labels the admin trusts a
//! runner with. A runner's own labels (given at registration) route jobs;
//! only these unlock server secrets. The table is in the schema's first
//! version, so every runner starts trusted with nothing.

use deadpool_postgres::GenericClient;

use crate::store::{Result, StoreError};

/// The runner's admin-assigned labels, sorted.
pub(super) async fn trusted_labels(c: &impl GenericClient, runner_id: u64) -> Result<Vec<String>> {
    let st = c
        .prepare_cached(
            "SELECT label FROM runner_trusted_labels WHERE runner_id = $1 ORDER BY label",
        )
        .await?;
    let rows = c.query(&st, &[&(runner_id as i64)]).await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?)
}

/// Adds, then removes, admin-assigned labels; returns the runner's labels
/// after. One transaction: the check, the changes and the read.
pub(super) async fn set_trusted_labels(
    c: &mut impl GenericClient,
    runner_id: u64,
    add: &[String],
    remove: &[String],
) -> Result<Vec<String>> {
    let tx = c.transaction().await?;
    let known: i64 = tx
        .query_one(
            &tx.prepare_cached("SELECT count(*) FROM runners WHERE id = $1")
                .await?,
            &[&(runner_id as i64)],
        )
        .await?
        .try_get(0)?;
    if known == 0 {
        return Err(StoreError::NotFound(format!("no runner {runner_id}")));
    }
    for (sql, labels) in [
        (
            "INSERT INTO runner_trusted_labels (runner_id, label) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
            add,
        ),
        (
            "DELETE FROM runner_trusted_labels WHERE runner_id = $1 AND label = $2",
            remove,
        ),
    ] {
        let st = tx.prepare_cached(sql).await?;
        for l in labels {
            tx.execute(&st, &[&(runner_id as i64), l]).await?;
        }
    }
    let out = trusted_labels(&tx, runner_id).await?;
    tx.commit().await?;
    Ok(out)
}
