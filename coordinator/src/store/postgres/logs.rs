//! Job logs in the PostgreSQL store: the job's row keeps the log's offsets
//! and the bytes held back for masking; the bytes are rows of `log_chunks`,
//! each stored at the log length it starts at, so that every coordinator
//! sharing the database can serve any log. Appends are fenced by the
//! runner's attempt, masked and capped; a chunk and the length that covers
//! it commit together, and reads serve only committed bytes.

use std::borrow::Cow;

use async_trait::async_trait;
use axum::body::Bytes;
use deadpool_postgres::GenericClient;
use pinfold_api::wire::JobState;

use super::PgStore;
use super::query::require_active;
use crate::store::log_append::{self, Append, LogState};
use crate::store::{AppendOutcome, LogRead, LogStore, Result, StoreError};

/// Stores `emit` at the end of the log (one chunk row at `*log_len`),
/// respecting `cap`, and advances `*log_len`; returns whether the log is
/// now truncated. The caller writes `*log_len` back to the job's row in the
/// same transaction: a second chunk at the same offset is refused by the
/// primary key, so two writers that read the same length cannot both
/// store.
pub(super) async fn store_log_bytes(
    c: &impl GenericClient,
    job_id: u64,
    log_len: &mut u64,
    emit: &[u8],
    cap: u64,
) -> Result<bool> {
    let (keep, marker) = log_append::capped(emit, *log_len, cap);
    let chunk: Cow<'_, [u8]> = if marker.is_empty() {
        Cow::Borrowed(keep)
    } else {
        Cow::Owned([keep, &marker[..]].concat())
    };
    if !chunk.is_empty() {
        let data: &[u8] = &chunk;
        let st = c
            .prepare_cached("INSERT INTO log_chunks (job_id, \"offset\", data) VALUES ($1, $2, $3)")
            .await?;
        c.execute(&st, &[&(job_id as i64), &(*log_len as i64), &data])
            .await?;
        *log_len += data.len() as u64;
    }
    Ok(!marker.is_empty())
}

#[async_trait]
impl LogStore for PgStore {
    /// Appends a chunk sent from `offset`, in a transaction fenced by the
    /// attempt that holds the job's row locked: of two coordinators given
    /// the same chunk (a retry), the second sees the first's length and
    /// skips the repeat.
    async fn append_log(
        &self,
        job_id: u64,
        attempt_id: u64,
        offset: u64,
        data: Bytes,
        secrets: Vec<Vec<u8>>,
        cap: u64,
    ) -> Result<AppendOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        require_active(&tx, job_id, attempt_id).await?;
        let row = tx
            .query_one(
                &tx.prepare_cached(
                    "SELECT log_raw_len, log_len, log_pending, log_truncated FROM jobs \
                     WHERE id = $1 FOR UPDATE",
                )
                .await?,
                &[&(job_id as i64)],
            )
            .await?;
        let state = LogState {
            raw_len: row.try_get::<_, i64>(0)? as u64,
            pending: row.try_get(2)?,
            truncated: row.try_get::<_, i64>(3)? != 0,
        };
        let (raw_len, emit, pending) = match log_append::plan(&state, offset, &data, &secrets)? {
            Append::Repeat(done) => {
                tx.commit().await?;
                return Ok(done);
            }
            Append::Store {
                raw_len,
                emit,
                pending,
            } => (raw_len, emit, pending),
        };
        let mut log_len = row.try_get::<_, i64>(1)? as u64;
        let truncated = match emit {
            Some(emit) => store_log_bytes(&tx, job_id, &mut log_len, &emit, cap).await?,
            None => true,
        };
        let pending = if truncated { Vec::new() } else { pending };
        let st = tx
            .prepare_cached(
                "UPDATE jobs SET log_raw_len = $2, log_len = $3, log_pending = $4, \
                 log_truncated = $5 WHERE id = $1",
            )
            .await?;
        tx.execute(
            &st,
            &[
                &(job_id as i64),
                &(raw_len as i64),
                &(log_len as i64),
                &pending,
                &(truncated as i64),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(AppendOutcome {
            offset: raw_len,
            truncated,
        })
    }

    /// Up to `max` committed log bytes from `offset`, assembled from the
    /// chunks that overlap the range.
    async fn read_log(&self, job_id: u64, offset: u64, max: usize) -> Result<LogRead> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT log_len, state FROM jobs WHERE id = $1")
            .await?;
        let row = c
            .query_opt(&st, &[&(job_id as i64)])
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no job {job_id}")))?;
        let len = row.try_get::<_, i64>(0)? as u64;
        let complete = JobState::parse(row.try_get(1)?).is_some_and(JobState::is_terminal);
        // Only bytes up to the committed length are served. Chunks below it
        // were committed with it and never change, so reading them in a
        // second statement sees exactly those bytes.
        let want = len.saturating_sub(offset).min(max as u64);
        let data = if want > 0 {
            read_chunks(&c, job_id, offset, offset + want).await?
        } else {
            Vec::new()
        };
        Ok(LogRead {
            data,
            len,
            complete,
        })
    }
}

/// The log's bytes `start..end` (all below the committed length), from the
/// chunks overlapping the range. The lower bound on `"offset"` (the chunk
/// holding `start` begins at the last chunk offset not past it) only lets
/// the primary key skip the chunks before the range.
async fn read_chunks(c: &impl GenericClient, job_id: u64, start: u64, end: u64) -> Result<Vec<u8>> {
    let st = c
        .prepare_cached(
            "SELECT \"offset\", data FROM log_chunks \
             WHERE job_id = $1 AND \"offset\" < $3 AND \"offset\" + length(data) > $2 \
             AND \"offset\" >= coalesce((SELECT max(\"offset\") FROM log_chunks \
             WHERE job_id = $1 AND \"offset\" <= $2), 0) \
             ORDER BY \"offset\"",
        )
        .await?;
    let rows = c
        .query(&st, &[&(job_id as i64), &(start as i64), &(end as i64)])
        .await?;
    let mut out = Vec::with_capacity((end - start) as usize);
    let mut pos = start;
    for r in &rows {
        let at = r.try_get::<_, i64>(0)? as u64;
        let bytes: &[u8] = r.try_get(1)?;
        if at > pos {
            break;
        }
        let from = (pos - at) as usize;
        if from >= bytes.len() {
            continue;
        }
        let take = (bytes.len() - from).min((end - pos) as usize);
        out.extend_from_slice(&bytes[from..from + take]);
        pos += take as u64;
        if pos == end {
            break;
        }
    }
    if pos < end {
        return Err(StoreError::Corrupt(format!(
            "log of job {job_id}: no stored bytes at {pos} (reading {start}..{end})"
        )));
    }
    Ok(out)
}
