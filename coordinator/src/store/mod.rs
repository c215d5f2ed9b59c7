//! Storage behind the handlers: runners, the job queue with leases and
//! attempts, logs, and artifact metadata.
//!
//! Handlers see only the [`Store`] trait: one trait per concern (meta,
//! runners, jobs and leases, logs, artifacts, provenance, verify groups),
//! which a backend implements one file each. Every method that changes a job
//! checks the caller's attempt inside the same transaction (fencing), so a
//! second backend (PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED` for the
//! lease, the same tables) can implement it without touching handlers. Log
//! masking and capping are pure functions in [`pinfold_api::mask`] that a backend
//! calls inside its append transaction.

mod log_append;
pub mod migrate;
mod postgres;
mod rows;
mod sqlite;
mod verify_rules;

pub(crate) use postgres::connect::settings as pg_settings;
pub use postgres::{PgStore, redact};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use axum::body::Bytes;
use pinfold_api::wire::{ArtifactInfo, FinishRequest, JobInfo, JobState, RunnerInfo, VerifyStatus};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL server refused or failed a query. The message
    /// carries the error's causes ([`causes`]), so it is not also given as
    /// the `source`: a caller walking the chain would print the server's
    /// message again, DETAIL lines and all.
    #[error("postgresql: {}", causes(.0))]
    Postgres(tokio_postgres::Error),
    /// The database cannot be reached now (PostgreSQL restarting, the pool
    /// exhausted): the request may be retried.
    #[error("{0} (retry: the database is unavailable)")]
    Unavailable(String),
    /// The store's configuration (`--store`) is not understood.
    #[error("{0}")]
    Config(String),
    /// The database could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// No such job, runner or artifact.
    #[error("{0}")]
    NotFound(String),
    /// The attempt no longer holds the job's lease.
    #[error(
        "stale lease: attempt {attempt_id} no longer holds job {job_id} (it expired or was revoked)"
    )]
    StaleLease {
        /// The job.
        job_id: u64,
        /// The attempt that lost it.
        attempt_id: u64,
    },
    /// The job's state forbids the change (finished, already cancelled...).
    #[error("{0}")]
    Conflict(String),
    /// A log append that does not start at the end of the log.
    #[error("log gap: chunk at {got}, log ends at {expected}")]
    LogGap {
        /// Where the chunk started.
        got: u64,
        /// Where the log ends.
        expected: u64,
    },
    /// Stored data did not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The blocking task running the query died.
    #[error("store task failed: {0}")]
    Task(String),
}

/// Result of a store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres(e)
    }
}

impl StoreError {
    /// Whether the request may succeed if retried: the database was out of
    /// reach (a PostgreSQL restart, a closed connection), not wrong.
    pub fn retryable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            // The connection failed (closed, or an I/O error under it), or
            // the server says it is shutting down or restarting (57P*) or
            // the connection broke (08*).
            StoreError::Postgres(e) => {
                use std::error::Error;
                e.is_closed()
                    || e.source().is_some_and(|s| s.is::<std::io::Error>())
                    || e.code().is_some_and(|c| {
                        let c = c.code();
                        // A deadlock or a serialization failure: the
                        // database undid the transaction; it may be retried.
                        c.starts_with("57P") || c.starts_with("08") || c == "40P01" || c == "40001"
                    })
            }
            _ => false,
        }
    }
}

/// `e` and each error under it, joined with ": ". tokio-postgres says
/// only "db error" or "error performing TLS handshake" and keeps the
/// server's message or the certificate's fault in its source.
///
/// The server's own message is shown without its DETAIL and HINT lines:
/// a DETAIL can quote a row ("Failing row contains ..."), and a row of
/// `jobs` holds a log's held-back bytes, which may begin a secret.
pub(crate) fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let c_s = match c.downcast_ref::<tokio_postgres::error::DbError>() {
            Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
            None => c.to_string(),
        };
        if !s.ends_with(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        next = c.source();
    }
    s
}

/// `s` if it names a PostgreSQL database (`--store`, `server migrate
/// --to`), else why not.
pub fn parse_url(s: &str) -> std::result::Result<String, String> {
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        Ok(s.to_string())
    } else {
        Err("expected a postgres://USER@HOST:PORT/DATABASE URL (without --store, the state is SQLite in $PINFOLD_HOME/coordinator)".into())
    }
}

/// A value as the JSON text the stores keep in a column.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

/// A JSON column's value.
fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{e}: {s}")))
}

/// What a per-job token grants.
#[derive(Debug, Clone)]
pub struct JobTokenRecord {
    /// The job.
    pub job_id: u64,
    /// The attempt the token was issued with.
    pub attempt_id: u64,
    /// The runner holding the attempt was revoked.
    pub runner_revoked: bool,
    /// Names of the job's secrets.
    pub secrets: Vec<String>,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The job file as submitted.
    pub spec_yaml: String,
    /// The validated spec as JSON (what leases carry).
    pub spec_json: String,
    /// The image, for listings.
    pub image: String,
    /// Labels a runner needs.
    pub labels: Vec<String>,
    /// Names of the secrets the job uses.
    pub secrets: Vec<String>,
    /// The source tar's digest.
    pub source_sha256: Option<String>,
    /// Attempts before "runner lost".
    pub max_attempts: u32,
    /// Submit time (ms).
    pub created_at: u64,
}

/// Which jobs [`JobStore::list_jobs`] returns.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs that need this runner label.
    pub label: Option<String>,
    /// Only jobs with an id below this (the next page of a listing).
    pub before: Option<u64>,
    /// At most this many.
    pub limit: u32,
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// What clients see.
    pub info: JobInfo,
    /// The validated spec as JSON.
    pub spec_json: String,
    /// Names of the secrets the job uses.
    pub secrets: Vec<String>,
}

/// A lease just granted.
#[derive(Debug, Clone)]
pub struct LeaseGrant {
    /// The job, now running.
    pub job: StoredJob,
    /// The attempt's id.
    pub attempt_id: u64,
    /// The attempt's number (1-based).
    pub attempt: u32,
    /// Bytes of log already received from earlier attempts.
    pub log_offset: u64,
    /// The job file as submitted (the agent records it in the provenance).
    pub spec_yaml: String,
}

/// Result of a log append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Bytes received so far (where the next chunk starts).
    pub offset: u64,
    /// The log hit its cap.
    pub truncated: bool,
}

/// A slice of a stored log.
#[derive(Debug, Clone)]
pub struct LogRead {
    /// The bytes from the requested offset.
    pub data: Vec<u8>,
    /// Stored length of the log.
    pub len: u64,
    /// The job is finished: the log will not grow.
    pub complete: bool,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Jobs per state.
    pub jobs: Vec<(JobState, u64)>,
    /// Active leases.
    pub leases: u64,
    /// Stored log bytes over all jobs.
    pub log_bytes: u64,
    /// Registered, unrevoked runners.
    pub runners: u64,
    /// Attempts that ended by lease expiry.
    pub leases_expired: u64,
}

/// The coordinator's storage: every concern below, as one trait object
/// for the handlers.
pub trait Store:
    MetaStore + RunnerStore + JobStore + LogStore + ArtifactStore + ProvenanceStore + VerifyStore
{
}

impl<T> Store for T where
    T: MetaStore
        + RunnerStore
        + JobStore
        + LogStore
        + ArtifactStore
        + ProvenanceStore
        + VerifyStore
{
}

/// Server settings and figures.
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// A server setting.
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;
    /// Sets a server setting.
    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;
    /// Sets a server setting unless it is set; returns the value it has
    /// afterwards (another coordinator's, when it set it first).
    async fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<String>;
    /// Removes every setting whose key begins with `prefix`; returns how many.
    async fn delete_meta_prefix(&self, prefix: &str) -> Result<u64>;
    /// Figures for `/metrics`.
    async fn counts(&self) -> Result<Counts>;
}

/// Runners: registration, token lookup, revocation, admin-trusted labels.
#[async_trait]
pub trait RunnerStore: Send + Sync {
    /// Registers a runner; returns its id.
    async fn create_runner(
        &self,
        name: &str,
        labels: &[String],
        token_sha256: &str,
        now: u64,
    ) -> Result<u64>;
    /// The runner with this token hash.
    async fn runner_by_token(&self, token_sha256: &str) -> Result<Option<RunnerInfo>>;
    /// All runners.
    async fn list_runners(&self) -> Result<Vec<RunnerInfo>>;
    /// Revokes a runner; its leases stop renewing and its job tokens stop working.
    async fn revoke_runner(&self, id: u64) -> Result<()>;
    /// The labels the admin trusts the runner with (they unlock secrets;
    /// its own registration labels only route jobs).
    async fn trusted_labels(&self, runner_id: u64) -> Result<Vec<String>>;
    /// Adds, then removes, admin-trusted labels; returns the runner's set.
    async fn set_trusted_labels(
        &self,
        runner_id: u64,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<Vec<String>>;
}

/// The job queue: jobs, leases and their attempts.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Enqueues a job; returns its id.
    async fn create_job(&self, job: NewJob) -> Result<u64>;
    /// One job.
    async fn job(&self, id: u64) -> Result<StoredJob>;
    /// Jobs, newest first, that pass `filter`.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<StoredJob>>;
    /// Leases the oldest queued job whose labels the runner has, creating an
    /// attempt with this job-token hash that expires at `expires`.
    async fn lease(
        &self,
        runner_id: u64,
        runner_labels: &[String],
        token_sha256: &str,
        now: u64,
        expires: u64,
    ) -> Result<Option<LeaseGrant>>;
    /// What this job-token hash grants.
    async fn job_token(&self, token_sha256: &str) -> Result<Option<JobTokenRecord>>;
    /// Renews a lease; returns whether a cancel was requested.
    async fn heartbeat(&self, job_id: u64, attempt_id: u64, expires: u64) -> Result<bool>;
    /// Ends the attempt and the job. Repeating the same finish is a no-op.
    async fn finish(
        &self,
        job_id: u64,
        attempt_id: u64,
        req: FinishRequest,
        cap: u64,
        now: u64,
    ) -> Result<JobState>;
    /// Cancels a queued job at once, or flags a running one for its runner.
    async fn cancel(&self, job_id: u64, now: u64) -> Result<JobState>;
    /// Requeues (or fails, past their maximum) jobs whose lease expired
    /// before `now`; returns how many.
    async fn expire_leases(&self, now: u64) -> Result<usize>;
    /// Pushes every active lease's expiry to at least `until`.
    async fn extend_leases(&self, until: u64) -> Result<()>;
}

/// Job logs.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Appends `data`, sent from byte `offset`, to the job's log: a repeat
    /// of received bytes is skipped, a gap is refused, `secrets` are masked
    /// and at most `cap` bytes are stored.
    async fn append_log(
        &self,
        job_id: u64,
        attempt_id: u64,
        offset: u64,
        data: Bytes,
        secrets: Vec<Vec<u8>>,
        cap: u64,
    ) -> Result<AppendOutcome>;
    /// Up to `max` stored log bytes from `offset`.
    async fn read_log(&self, job_id: u64, offset: u64, max: usize) -> Result<LogRead>;
}

/// Artifact metadata (the bytes are in the blob store).
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Records an uploaded artifact (replacing one of the same name).
    async fn add_artifact(&self, job_id: u64, attempt_id: u64, info: ArtifactInfo) -> Result<()>;
    /// A job's artifacts, by name.
    async fn artifacts(&self, job_id: u64) -> Result<Vec<ArtifactInfo>>;
}

/// Issue 6: runner keys and the provenance they sign.
#[async_trait]
pub trait ProvenanceStore: Send + Sync {
    /// Records a runner's public key (SPKI PEM) unless it has one (a key,
    /// once set, is fixed); returns the key the runner has afterwards.
    async fn set_runner_key(&self, runner_id: u64, pem: &str) -> Result<String>;
    /// A runner's public key, if it registered one.
    async fn runner_key(&self, runner_id: u64) -> Result<Option<String>>;
    /// The runner that holds (or held) an attempt.
    async fn attempt_runner(&self, attempt_id: u64) -> Result<u64>;
    /// Stores the job's provenance envelope (verified by the caller),
    /// fenced like an artifact upload.
    async fn put_provenance(
        &self,
        job_id: u64,
        attempt_id: u64,
        runner_id: u64,
        envelope: String,
    ) -> Result<()>;
    /// A job's provenance: (signing runner, envelope JSON).
    async fn provenance(&self, job_id: u64) -> Result<Option<(u64, String)>>;
}

/// Issue 6: `verify: N` jobs.
#[async_trait]
pub trait VerifyStore: Send + Sync {
    /// Enqueues a `verify: runs` job: a group that is never leased and
    /// `runs` ordinary jobs, each leased by a different runner. Returns the
    /// group's id.
    async fn create_verify_job(&self, job: NewJob, runs: u32) -> Result<u64>;
    /// For a group: its runs, why they wait, the verdict. For a run: its
    /// group's id. `now` dates the "runners online" count.
    async fn verify_status(
        &self,
        job_id: u64,
        now: u64,
    ) -> Result<(Option<VerifyStatus>, Option<u64>)>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PostgreSQL error's message names its causes, and it is the end of
    /// the chain: a caller printing every source shows each cause once.
    #[tokio::test]
    async fn a_postgres_error_says_its_causes_once() {
        let refused = tokio_postgres::connect(
            "host=127.0.0.1 port=1 user=pinfold connect_timeout=5",
            tokio_postgres::NoTls,
        )
        .await
        .err()
        .expect("nothing listens on port 1");
        let e = StoreError::from(refused);
        let text = e.to_string();
        assert!(text.contains("refused"), "{text}");
        assert!(std::error::Error::source(&e).is_none(), "{text}");
    }
}
