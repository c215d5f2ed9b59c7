//! The SQLite store's connections: opening (schema and settings), the
//! writer and the readers, and the query helpers every concern file uses;
//! plus server settings and `/metrics` figures. The concerns: jobs.rs (the
//! queue, leases, attempts), logs.rs, artifacts.rs, provenance.rs (runner
//! keys, signed provenance), runners.rs and trust.rs, verify.rs (groups).
//!
//! One database file, WAL mode, used from `spawn_blocking` so queries
//! never block the async workers.
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
use pinfold_api::wire::JobState;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Counts, MetaStore, NewJob, Result, StoreError, from_json, json};

mod artifacts;
mod jobs;
mod logs;
mod provenance;
mod runners;
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

/// The SQLite implementation of [`Store`](super::Store).
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
        conn.execute_batch(provenance::SCHEMA).map_err(open)?;
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
impl MetaStore for SqliteStore {
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

    async fn delete_meta_prefix(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_string();
        self.call(move |c| {
            let n = c.execute(
                "DELETE FROM meta WHERE substr(key, 1, length(?1)) = ?1",
                [prefix],
            )?;
            Ok(n as u64)
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

    async fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<String> {
        let (key, value) = (key.to_string(), value.to_string());
        self.call(move |c| {
            exec(
                c,
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                [&key, &value],
            )?;
            Ok(row(
                c,
                "SELECT value FROM meta WHERE key = ?1",
                [&key],
                |r| r.get(0),
            )?)
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
}
