//! The SQLite store: one file, WAL mode, used from `spawn_blocking` so
//! queries never block the async workers.
//!
//! One writer connection behind a mutex serializes every change (which
//! SQLite does anyway, and which makes a lease go to exactly one runner);
//! lookups that only read (token checks, job status, log reads) go to a
//! few reader connections, which in WAL mode see the last commit without
//! waiting for the writer.
//!
//! `synchronous = NORMAL` in WAL mode: a commit is in the WAL (the OS page
//! cache) when the call returns, so a killed server (SIGKILL, panic) loses
//! nothing; only a power loss or kernel crash can drop the last commits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Bytes;
use pinfold_api::mask;
use pinfold_api::wire::{ArtifactInfo, FinishRequest, JobInfo, JobState, StepResult, VerifyStatus};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{
    AppendOutcome, Counts, JobTokenRecord, LeaseGrant, LogRead, NewJob, Result, RunnerRecord,
    Store, StoreError, StoredJob,
};

mod trust;
mod verify;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runners (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_seen INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    spec_yaml TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    image TEXT NOT NULL,
    labels TEXT NOT NULL,
    secrets TEXT NOT NULL,
    source_sha256 TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    steps TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    current_attempt INTEGER,
    runner_id INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    log_raw_len INTEGER NOT NULL DEFAULT 0,
    log_len INTEGER NOT NULL DEFAULT 0,
    log_pending BLOB NOT NULL DEFAULT x'',
    log_truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    runner_id INTEGER NOT NULL REFERENCES runners (id),
    number INTEGER NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    lease_expires INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_state ON attempts (state, lease_expires);
CREATE TABLE IF NOT EXISTS log_chunks (
    job_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
);
";

const JOB_COLS: &str = "id, spec_json, image, labels, secrets, source_sha256, state, reason, \
     steps, attempts, runner_id, cancel_requested, created_at, started_at, finished_at, log_len";

/// The SQLite implementation of [`Store`].
///
/// Job metadata and log offsets live in SQLite; log bytes live in one
/// append-only file per job under `logs/` beside the database, written at
/// the offset SQLite records. SQLite's row is the commit point: bytes past
/// `log_len` in a file (a crash between the write and the commit) are never
/// served and are overwritten by the next append. Keeping megabytes of log
/// out of SQLite's WAL avoids writing every byte twice.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<[Mutex<Connection>]>,
    next_reader: Arc<AtomicUsize>,
    logs: Arc<PathBuf>,
}

/// Reader connections: the CPUs a 2-core coordinator has, more cost memory
/// for nothing (each has its own page cache).
const READERS: usize = 2;

/// Prepared statements kept per connection (the hot paths use ~20).
const STATEMENT_CACHE: usize = 64;

fn log_path(logs: &Path, job_id: u64) -> PathBuf {
    logs.join(format!("{job_id}.log"))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{e}: {s}")))
}

/// `execute` through the connection's prepared-statement cache.
pub(super) fn exec(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

/// Inserts a job row in `state`; returns its id. Plain jobs and verify
/// groups (the group row and its runs) alike.
pub(super) fn insert_job(c: &Connection, job: &NewJob, state: &str) -> Result<u64> {
    exec(
        c,
        "INSERT INTO jobs (spec_yaml, spec_json, image, labels, secrets, source_sha256, \
         state, max_attempts, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            job.spec_yaml,
            job.spec_json,
            job.image,
            json(&job.labels),
            json(&job.secrets),
            job.source_sha256,
            state,
            job.max_attempts as i64,
            job.created_at as i64
        ],
    )?;
    Ok(c.last_insert_rowid() as u64)
}

/// `query_row` through the connection's prepared-statement cache.
pub(super) fn row<T>(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(p, f)
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|v| v as u64)
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(StoredJob, String, String, String, String)> {
    let info = JobInfo {
        id: row.get::<_, i64>(0)? as u64,
        state: JobState::Queued,
        reason: row.get(7)?,
        labels: Vec::new(),
        attempts: row.get::<_, i64>(9)? as u32,
        runner_id: opt_u64(row.get(10)?),
        cancel_requested: row.get::<_, i64>(11)? != 0,
        created_at: row.get::<_, i64>(12)? as u64,
        started_at: opt_u64(row.get(13)?),
        finished_at: opt_u64(row.get(14)?),
        steps: Vec::new(),
        log_bytes: row.get::<_, i64>(15)? as u64,
        image: row.get(2)?,
        source_sha256: row.get(5)?,
        verify: None,
        verify_of: None,
    };
    let rec = StoredJob {
        info,
        spec_json: row.get(1)?,
        secrets: Vec::new(),
    };
    Ok((rec, row.get(3)?, row.get(4)?, row.get(6)?, row.get(8)?))
}

fn finish_job_row(
    (mut rec, labels, secrets, state, steps): (StoredJob, String, String, String, String),
) -> Result<StoredJob> {
    rec.info.labels = from_json(&labels)?;
    rec.secrets = from_json(&secrets)?;
    rec.info.steps = from_json::<Vec<StepResult>>(&steps)?;
    rec.info.state = JobState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?;
    Ok(rec)
}

fn load_job(conn: &Connection, id: u64) -> Result<StoredJob> {
    let row = row(
        conn,
        &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
        [id as i64],
        job_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("no job {id}")))?;
    finish_job_row(row)
}

/// Checks that `attempt_id` is the job's current, active attempt.
fn check_attempt(conn: &Connection, job_id: u64, attempt_id: u64) -> Result<String> {
    let state: Option<String> = row(
        conn,
        "SELECT a.state FROM attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE a.id = ?1 AND a.job_id = ?2 AND j.current_attempt = a.id",
        [attempt_id as i64, job_id as i64],
        |r| r.get(0),
    )
    .optional()?;
    match state.as_deref() {
        Some("active") => Ok("active".into()),
        Some("finished") => Ok("finished".into()),
        _ => Err(StoreError::StaleLease { job_id, attempt_id }),
    }
}

fn require_active(conn: &Connection, job_id: u64, attempt_id: u64) -> Result<()> {
    match check_attempt(conn, job_id, attempt_id)?.as_str() {
        "active" => Ok(()),
        _ => Err(StoreError::Conflict(format!(
            "job {job_id} is already finished"
        ))),
    }
}

/// Cancels a queued job at once or flags a running one.
fn cancel_one(tx: &Connection, job_id: u64, now: u64) -> Result<JobState> {
    let state = load_job(tx, job_id)?.info.state;
    Ok(match state {
        JobState::Queued => {
            exec(
                tx,
                "UPDATE jobs SET state = 'cancelled', reason = 'cancelled before it started', \
                 finished_at = ?2 WHERE id = ?1",
                params![job_id as i64, now as i64],
            )?;
            JobState::Cancelled
        }
        JobState::Running => {
            exec(
                tx,
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
                [job_id as i64],
            )?;
            JobState::Running
        }
        s => {
            return Err(StoreError::Conflict(format!(
                "job {job_id} already ended ({})",
                s.as_str()
            )));
        }
    })
}

/// Stores `emit` at the end of the log, respecting `cap`; returns whether
/// the log is now truncated.
fn store_log_bytes(
    logs: &Path,
    job_id: u64,
    log_len: &mut u64,
    emit: &[u8],
    cap: u64,
) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let room = cap.saturating_sub(*log_len);
    let (keep, marker) = if emit.len() as u64 > room {
        (&emit[..room as usize], mask::truncation_marker(cap))
    } else {
        (emit, Vec::new())
    };
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

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let open = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open)?;
        conn.execute_batch(SCHEMA).map_err(open)?;
        conn.execute_batch(verify::SCHEMA).map_err(open)?;
        conn.execute_batch(trust::SCHEMA).map_err(open)?;
        // Plans must not depend on bound values: without this SQLite marks
        // joins whose plan looked at a parameter (the token and attempt
        // lookups, the verify-group check) to be re-prepared whenever that
        // parameter changes, i.e. on every call, which undid the statement
        // cache on the lease/finish path (7% of the server's CPU).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(open)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let readers = (0..READERS)
            .map(|_| {
                let r = Connection::open(path).map_err(open)?;
                r.pragma_update(None, "query_only", "ON").map_err(open)?;
                r.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(open)?;
                r.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
                    .map_err(open)?;
                r.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                Ok(Mutex::new(r))
            })
            .collect::<Result<Vec<_>>>()?;
        let logs = path.parent().unwrap_or(Path::new(".")).join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", logs.display())))?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            readers: readers.into(),
            next_reader: Arc::new(AtomicUsize::new(0)),
            logs: Arc::new(logs),
        })
    }

    /// Runs `f` on the writer connection.
    async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another query poisons the mutex but leaves the
            // connection usable (transactions roll back on drop).
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f`, a point lookup by key, on a reader connection: with one
    /// free, right here. An indexed lookup in WAL mode never waits for the
    /// writer and takes microseconds, less than handing it to a blocking
    /// thread and back (two thread wake-ups, which dominated dispatch).
    /// Else like [`Self::read`].
    async fn lookup<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        if let Some(mut c) = self.readers.iter().find_map(|r| r.try_lock().ok()) {
            return f(&mut c);
        }
        self.read(f).await
    }

    /// Runs `f`, which only reads, on a blocking thread with a reader
    /// connection: a free one, or the next in turn.
    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let readers = self.readers.clone();
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let n = readers.len();
            let mut c = (0..n)
                .find_map(|i| readers[(first + i) % n].try_lock().ok())
                .unwrap_or_else(|| readers[first % n].lock().unwrap_or_else(|p| p.into_inner()));
            f(&mut c)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.lookup(move |c| {
            Ok(row(c, "SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
        })
        .await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.call(move |c| {
            exec(
                c,
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )?;
            Ok(())
        })
        .await
    }

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

    async fn runner_by_token(&self, token_sha256: &str) -> Result<Option<RunnerRecord>> {
        let hash = token_sha256.to_string();
        self.lookup(move |c| {
            let row = row(
                c,
                "SELECT id, name, labels, created_at, last_seen, revoked FROM runners \
                     WHERE token_sha256 = ?1",
                [hash],
                runner_from_row,
            )
            .optional()?;
            row.map(finish_runner_row).transpose()
        })
        .await
    }

    async fn list_runners(&self) -> Result<Vec<RunnerRecord>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, name, labels, created_at, last_seen, revoked FROM runners ORDER BY id",
            )?;
            let rows = st.query_map([], runner_from_row)?;
            rows.map(|r| finish_runner_row(r?)).collect()
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

    async fn create_job(&self, job: NewJob) -> Result<u64> {
        self.call(move |c| insert_job(c, &job, "queued")).await
    }

    async fn job(&self, id: u64) -> Result<StoredJob> {
        self.lookup(move |c| load_job(c, id)).await
    }

    async fn list_jobs(&self, state: Option<JobState>, limit: u32) -> Result<Vec<StoredJob>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {JOB_COLS} FROM jobs WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = st.query_map(params![state.map(JobState::as_str), limit as i64], job_from_row)?;
            rows.map(|r| finish_job_row(r?)).collect()
        })
        .await
    }

    async fn lease(
        &self,
        runner_id: u64,
        runner_labels: &[String],
        token_sha256: &str,
        now: u64,
        expires: u64,
    ) -> Result<Option<LeaseGrant>> {
        let labels = runner_labels.to_vec();
        let hash = token_sha256.to_string();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            exec(
                &tx,
                "UPDATE runners SET last_seen = ?1 WHERE id = ?2",
                params![now as i64, runner_id as i64],
            )?;
            // Oldest first; skip jobs needing labels this runner lacks. The
            // scan is bounded so a backlog of unmatched jobs stays cheap.
            // Rows are read one at a time: the first fit ends the scan.
            let mut chosen = None;
            {
                let mut st = tx.prepare_cached(
                    "SELECT id, labels FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 256",
                )?;
                let mut rows = st.query([])?;
                while let Some(r) = rows.next()? {
                    let id = r.get::<_, i64>(0)? as u64;
                    let text = r.get_ref(1)?.as_str();
                    let need: Vec<String> =
                        from_json(text.map_err(|e| StoreError::Corrupt(e.to_string()))?)?;
                    if need.iter().all(|l| labels.contains(l)) && verify::may_lease(&tx, id, runner_id)? {
                        chosen = Some(id);
                        break;
                    }
                }
            }
            let Some(job_id) = chosen else {
                tx.commit()?;
                return Ok(None);
            };
            let number: i64 = row(
                &tx,
                "SELECT attempts + 1 FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| r.get(0),
            )?;
            exec(
                &tx,
                "INSERT INTO attempts (job_id, runner_id, number, token_sha256, state, lease_expires, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6)",
                params![job_id as i64, runner_id as i64, number, hash, expires as i64, now as i64],
            )?;
            let attempt_id = tx.last_insert_rowid() as u64;
            exec(
                &tx,
                "UPDATE jobs SET state = 'running', attempts = ?2, current_attempt = ?3, runner_id = ?4, \
                 started_at = coalesce(started_at, ?5) WHERE id = ?1",
                params![job_id as i64, number, attempt_id as i64, runner_id as i64, now as i64],
            )?;
            verify::run_leased(&tx, job_id, now)?;
            let job = load_job(&tx, job_id)?;
            let (log_offset, spec_yaml): (i64, String) = tx.query_row(
                "SELECT log_raw_len, spec_yaml FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.commit()?;
            Ok(Some(LeaseGrant {
                job,
                attempt_id,
                attempt: number as u32,
                log_offset: log_offset as u64,
                spec_yaml,
            }))
        })
        .await
    }

    async fn job_token(&self, token_sha256: &str) -> Result<Option<JobTokenRecord>> {
        let hash = token_sha256.to_string();
        self.lookup(move |c| {
            let row: Option<(i64, i64, i64, String)> = row(
                c,
                "SELECT a.job_id, a.id, r.revoked, j.secrets FROM attempts a \
                     JOIN runners r ON r.id = a.runner_id JOIN jobs j ON j.id = a.job_id \
                     WHERE a.token_sha256 = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
            row.map(|(job_id, attempt_id, revoked, secrets)| {
                Ok(JobTokenRecord {
                    job_id: job_id as u64,
                    attempt_id: attempt_id as u64,
                    runner_revoked: revoked != 0,
                    secrets: from_json(&secrets)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn heartbeat(&self, job_id: u64, attempt_id: u64, expires: u64) -> Result<bool> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_active(&tx, job_id, attempt_id)?;
            exec(
                &tx,
                "UPDATE attempts SET lease_expires = max(lease_expires, ?2) WHERE id = ?1",
                params![attempt_id as i64, expires as i64],
            )?;
            let cancel: i64 = row(
                &tx,
                "SELECT cancel_requested FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(cancel != 0)
        })
        .await
    }

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
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_active(&tx, job_id, attempt_id)?;
            let (raw_len, log_len, pending, truncated): (i64, i64, Vec<u8>, i64) = row(
                &tx,
                "SELECT log_raw_len, log_len, log_pending, log_truncated FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let (raw_len, mut log_len) = (raw_len as u64, log_len as u64);
            if offset > raw_len {
                return Err(StoreError::LogGap {
                    got: offset,
                    expected: raw_len,
                });
            }
            // Bytes the server already has (a retried chunk) are skipped.
            let skip = (raw_len - offset) as usize;
            if skip >= data.len() {
                return Ok(AppendOutcome {
                    offset: raw_len,
                    truncated: truncated != 0,
                });
            }
            let new = &data[skip..];
            let new_raw = raw_len + new.len() as u64;
            let mut now_truncated = truncated != 0;
            let mut pending_out = Vec::new();
            if !now_truncated && secrets.is_empty() && pending.is_empty() {
                // Nothing to mask: the bytes go to the file as they came.
                now_truncated = store_log_bytes(&logs, job_id, &mut log_len, new, cap)?;
            } else if !now_truncated {
                let m = mask::mask(&pending, new, &secrets, false);
                now_truncated = store_log_bytes(&logs, job_id, &mut log_len, &m.emit, cap)?;
                if !now_truncated {
                    pending_out = m.pending;
                }
            }
            exec(
                &tx,
                "UPDATE jobs SET log_raw_len = ?2, log_len = ?3, log_pending = ?4, log_truncated = ?5 \
                 WHERE id = ?1",
                params![job_id as i64, new_raw as i64, log_len as i64, pending_out, now_truncated as i64],
            )?;
            tx.commit()?;
            Ok(AppendOutcome {
                offset: new_raw,
                truncated: now_truncated,
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

    async fn finish(
        &self,
        job_id: u64,
        attempt_id: u64,
        req: FinishRequest,
        cap: u64,
        now: u64,
    ) -> Result<JobState> {
        let logs = self.logs.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if check_attempt(&tx, job_id, attempt_id)? == "finished" {
                // A retried finish (its answer was lost): report what stands.
                return Ok(load_job(&tx, job_id)?.info.state);
            }
            if !req.state.is_terminal() {
                return Err(StoreError::Conflict(format!(
                    "finish needs a final state, not {}",
                    req.state.as_str()
                )));
            }
            // Release the bytes held back for masking: the log is complete.
            let (log_len, pending, truncated): (i64, Vec<u8>, i64) = row(
                &tx,
                "SELECT log_len, log_pending, log_truncated FROM jobs WHERE id = ?1",
                [job_id as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let mut log_len = log_len as u64;
            if truncated == 0 && !pending.is_empty() {
                store_log_bytes(&logs, job_id, &mut log_len, &pending, cap)?;
            }
            exec(
                &tx,
                "UPDATE attempts SET state = 'finished' WHERE id = ?1",
                [attempt_id as i64],
            )?;
            exec(
                &tx,
                "UPDATE jobs SET state = ?2, reason = ?3, steps = ?4, finished_at = ?5, log_len = ?6, \
                 log_pending = x'', cancel_requested = 0 WHERE id = ?1",
                params![
                    job_id as i64,
                    req.state.as_str(),
                    req.reason,
                    json(&req.steps),
                    now as i64,
                    log_len as i64
                ],
            )?;
            verify::settle(&tx, &logs, job_id, now)?;
            tx.commit()?;
            Ok(req.state)
        })
        .await
    }

    async fn cancel(&self, job_id: u64, now: u64) -> Result<JobState> {
        let logs = self.logs.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let after = match verify::runs_of(&tx, job_id)? {
                // A verify group: cancel each run that has not ended; the
                // group settles as its last run ends.
                Some(runs) => {
                    let state = load_job(&tx, job_id)?.info.state;
                    if state.is_terminal() {
                        return Err(StoreError::Conflict(format!(
                            "job {job_id} already ended ({})",
                            state.as_str()
                        )));
                    }
                    exec(
                        &tx,
                        "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
                        [job_id as i64],
                    )?;
                    for run in runs {
                        if !load_job(&tx, run)?.info.state.is_terminal() {
                            cancel_one(&tx, run, now)?;
                            verify::settle(&tx, &logs, run, now)?;
                        }
                    }
                    load_job(&tx, job_id)?.info.state
                }
                None => {
                    let after = cancel_one(&tx, job_id, now)?;
                    verify::settle(&tx, &logs, job_id, now)?;
                    after
                }
            };
            tx.commit()?;
            Ok(after)
        })
        .await
    }

    async fn expire_leases(&self, now: u64) -> Result<usize> {
        let logs = self.logs.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let expired: Vec<(i64, i64, i64, i64, i64)> = {
                let mut st = tx.prepare_cached(
                    "SELECT a.id, a.job_id, j.attempts, j.max_attempts, j.cancel_requested \
                     FROM attempts a JOIN jobs j ON j.id = a.job_id \
                     WHERE a.state = 'active' AND a.lease_expires < ?1",
                )?;
                st.query_map([now as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<_>>()?
            };
            for &(attempt_id, job_id, attempts, max_attempts, cancel) in &expired {
                exec(&tx, "UPDATE attempts SET state = 'lost' WHERE id = ?1", [attempt_id])?;
                let (state, reason) = if cancel != 0 {
                    ("cancelled", Some("cancelled; the runner was lost before it confirmed".to_string()))
                } else if attempts >= max_attempts {
                    ("error", Some(format!("runner lost ({attempts} attempts, each lease expired)")))
                } else {
                    ("queued", None)
                };
                if state == "queued" {
                    exec(
                        &tx,
                        "UPDATE jobs SET state = 'queued', current_attempt = NULL WHERE id = ?1",
                        [job_id],
                    )?;
                } else {
                    exec(
                        &tx,
                        "UPDATE jobs SET state = ?2, reason = ?3, finished_at = ?4, cancel_requested = 0 \
                         WHERE id = ?1",
                        params![job_id, state, reason, now as i64],
                    )?;
                    verify::settle(&tx, &logs, job_id as u64, now)?;
                }
            }
            tx.commit()?;
            Ok(expired.len())
        })
        .await
    }

    async fn extend_leases(&self, until: u64) -> Result<()> {
        self.call(move |c| {
            exec(
                c,
                "UPDATE attempts SET lease_expires = max(lease_expires, ?1) WHERE state = 'active'",
                [until as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn add_artifact(&self, job_id: u64, attempt_id: u64, info: ArtifactInfo) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_active(&tx, job_id, attempt_id)?;
            exec(
                &tx,
                "INSERT INTO artifacts (job_id, name, size, sha256) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (job_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256",
                params![job_id as i64, info.name, info.size as i64, info.sha256],
            )?;
            tx.commit()?;
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

    async fn counts(&self) -> Result<Counts> {
        self.read(|c| {
            let mut counts = Counts::default();
            {
                let mut st = c.prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state")?;
                let rows =
                    st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                for row in rows {
                    let (state, n) = row?;
                    if let Some(s) = JobState::parse(&state) {
                        counts.jobs.push((s, n as u64));
                    }
                }
            }
            counts.leases = row(
                c,
                "SELECT count(*) FROM attempts WHERE state = 'active'",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64;
            counts.leases_expired = row(
                c,
                "SELECT count(*) FROM attempts WHERE state = 'lost'",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64;
            counts.log_bytes = row(c, "SELECT coalesce(sum(log_len), 0) FROM jobs", [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
            counts.runners = row(
                c,
                "SELECT count(*) FROM runners WHERE revoked = 0",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64;
            Ok(counts)
        })
        .await
    }

    async fn set_runner_key(&self, runner_id: u64, pem: &str) -> Result<String> {
        let pem = pem.to_string();
        self.call(move |c| verify::set_runner_key(c, runner_id, &pem))
            .await
    }

    async fn runner_key(&self, runner_id: u64) -> Result<Option<String>> {
        self.call(move |c| verify::runner_key(c, runner_id)).await
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

    async fn attempt_runner(&self, attempt_id: u64) -> Result<u64> {
        self.call(move |c| verify::attempt_runner(c, attempt_id))
            .await
    }

    async fn put_provenance(
        &self,
        job_id: u64,
        attempt_id: u64,
        runner_id: u64,
        envelope: String,
    ) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_active(&tx, job_id, attempt_id)?;
            verify::put_provenance(&tx, job_id, attempt_id, runner_id, &envelope)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn provenance(&self, job_id: u64) -> Result<Option<(u64, String)>> {
        self.call(move |c| {
            load_job(c, job_id)?;
            verify::provenance(c, job_id)
        })
        .await
    }

    async fn create_verify_job(&self, job: NewJob, runs: u32) -> Result<u64> {
        let logs = self.logs.clone();
        self.call(move |c| verify::create_group(c, &logs, job, runs))
            .await
    }

    async fn verify_status(
        &self,
        job_id: u64,
        now: u64,
    ) -> Result<(Option<VerifyStatus>, Option<u64>)> {
        self.call(move |c| {
            Ok((
                verify::status(c, job_id, now)?,
                verify::group_of(c, job_id)?,
            ))
        })
        .await
    }
}

fn runner_from_row(r: &Row<'_>) -> rusqlite::Result<(RunnerRecord, String)> {
    Ok((
        RunnerRecord {
            id: r.get::<_, i64>(0)? as u64,
            name: r.get(1)?,
            labels: Vec::new(),
            created_at: r.get::<_, i64>(3)? as u64,
            last_seen: opt_u64(r.get(4)?),
            revoked: r.get::<_, i64>(5)? != 0,
        },
        r.get(2)?,
    ))
}

fn finish_runner_row((mut rec, labels): (RunnerRecord, String)) -> Result<RunnerRecord> {
    rec.labels = from_json(&labels)?;
    Ok(rec)
}
