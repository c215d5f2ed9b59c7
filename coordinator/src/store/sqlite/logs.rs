//! Job logs in the SQLite store: SQLite keeps each log's offsets and the
//! bytes held back for masking; the bytes live in one append-only file per
//! job (see [`SqliteStore`]). Appends are fenced by the runner's attempt,
//! masked and capped; reads serve only committed bytes.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use axum::body::Bytes;
use pinfold_api::wire::JobState;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, exec, row};
use crate::store::log_append::{self, Append, LogState};
use crate::store::{AppendOutcome, LogRead, LogStore, Result, StoreError};

fn log_path(logs: &Path, job_id: u64) -> PathBuf {
    logs.join(format!("{job_id}.log"))
}

/// Stores `emit` at the end of the log, respecting `cap`; returns whether
/// the log is now truncated.
pub(super) fn store_log_bytes(
    logs: &Path,
    job_id: u64,
    log_len: &mut u64,
    emit: &[u8],
    cap: u64,
) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let (keep, marker) = log_append::capped(emit, *log_len, cap);
    if !keep.is_empty() || !marker.is_empty() {
        let path = log_path(logs, job_id);
        let io =
            |e: std::io::Error| StoreError::Corrupt(format!("log file {}: {e}", path.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        for part in [keep, &marker[..]] {
            file.write_all_at(part, *log_len).map_err(io)?;
            *log_len += part.len() as u64;
        }
    }
    Ok(!marker.is_empty())
}

#[async_trait]
impl LogStore for SqliteStore {
    async fn append_log(
        &self,
        job_id: u64,
        attempt_id: u64,
        offset: u64,
        data: Bytes,
        secrets: Vec<Vec<u8>>,
        cap: u64,
    ) -> Result<AppendOutcome> {
        let logs = self.logs.clone();
        self.fenced(job_id, attempt_id, move |tx| {
            let (raw_len, log_len, pending, truncated): (i64, i64, Vec<u8>, i64) = row(
                tx,
                "SELECT log_raw_len, log_len, log_pending, log_truncated FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let state = LogState {
                raw_len: raw_len as u64,
                pending: &pending,
                truncated: truncated != 0,
            };
            let (raw_len, emit, pending) = match log_append::plan(&state, offset, &data, &secrets)? {
                Append::Repeat(done) => return Ok(done),
                Append::Store {
                    raw_len,
                    emit,
                    pending,
                } => (raw_len, emit, pending),
            };
            let mut log_len = log_len as u64;
            let truncated = match emit {
                Some(emit) => store_log_bytes(&logs, job_id, &mut log_len, &emit, cap)?,
                None => true,
            };
            let pending = if truncated { Vec::new() } else { pending };
            exec(
                tx,
                "UPDATE jobs SET log_raw_len = ?2, log_len = ?3, log_pending = ?4, log_truncated = ?5 \
                 WHERE id = ?1",
                params![job_id as i64, raw_len as i64, log_len as i64, pending, truncated as i64],
            )?;
            Ok(AppendOutcome {
                offset: raw_len,
                truncated,
            })
        })
        .await
    }

    async fn read_log(&self, job_id: u64, offset: u64, max: usize) -> Result<LogRead> {
        let logs = self.logs.clone();
        self.read(move |c| {
            let tx = c.transaction()?;
            let (len, state): (i64, String) = row(
                &tx,
                "SELECT log_len, state FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("no job {job_id}")))?;
            let complete = JobState::parse(&state).is_some_and(JobState::is_terminal);
            // Only bytes up to the committed length are served.
            let len_u = len as u64;
            let want = len_u.saturating_sub(offset).min(max as u64) as usize;
            let mut data = vec![0u8; want];
            if want > 0 {
                use std::os::unix::fs::FileExt;
                let path = log_path(&logs, job_id);
                let file = std::fs::File::open(&path).map_err(|e| {
                    StoreError::Corrupt(format!("log file {}: {e}", path.display()))
                })?;
                file.read_exact_at(&mut data, offset).map_err(|e| {
                    StoreError::Corrupt(format!("log file {}: {e}", path.display()))
                })?;
            }
            Ok(LogRead {
                data,
                len: len as u64,
                complete,
            })
        })
        .await
    }
}
