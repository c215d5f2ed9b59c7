//! Issue 13 point 8 in the SQLite store: the labels the admin trusts a
//! runner with. A runner's own labels (given at registration) route jobs;
//! only these unlock server secrets. A new table, so opening an older
//! database adds it and every runner starts trusted with nothing.

use rusqlite::{Connection, params};

use super::exec;
use crate::store::{Result, StoreError};

/// Tables of this module (created beside the queue's on open).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runner_trusted_labels (
    runner_id INTEGER NOT NULL REFERENCES runners (id),
    label TEXT NOT NULL,
    PRIMARY KEY (runner_id, label)
) WITHOUT ROWID;
";

/// The runner's admin-assigned labels, sorted.
pub(super) fn trusted_labels(c: &Connection, runner_id: u64) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT label FROM runner_trusted_labels WHERE runner_id = ?1 ORDER BY label",
    )?;
    let rows = st.query_map([runner_id as i64], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Adds, then removes, admin-assigned labels; returns the runner's labels after.
pub(super) fn set_trusted_labels(
    c: &mut Connection,
    runner_id: u64,
    add: &[String],
    remove: &[String],
) -> Result<Vec<String>> {
    let tx = c.transaction()?;
    let known: i64 = tx.query_row(
        "SELECT count(*) FROM runners WHERE id = ?1",
        [runner_id as i64],
        |r| r.get(0),
    )?;
    if known == 0 {
        return Err(StoreError::NotFound(format!("no runner {runner_id}")));
    }
    for (sql, labels) in [
        (
            "INSERT OR IGNORE INTO runner_trusted_labels (runner_id, label) VALUES (?1, ?2)",
            add,
        ),
        (
            "DELETE FROM runner_trusted_labels WHERE runner_id = ?1 AND label = ?2",
            remove,
        ),
    ] {
        for l in labels {
            exec(&tx, sql, params![runner_id as i64, l])?;
        }
    }
    let out = trusted_labels(&tx, runner_id)?;
    tx.commit()?;
    Ok(out)
}
