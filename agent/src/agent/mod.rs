//! The runner agent: registers with a coordinator once, long-polls for
//! leases and runs each job with the [`runner`](crate::runner) core.
//!
//! Per job, besides the job's own threads: a heartbeat at ttl/3
//! (cancellation arrives in its answer), and a log shipper that tails the
//! job's masked spool file and appends it by byte offset from the lease's
//! `log_offset`, up to three appends in flight (a transport error resends
//! the same chunk with backoff, a 409 resumes at the server's
//! `expected_offset`), so memory stays bounded whatever the log size.
//! Artifacts are uploaded with their sha256, then the job's
//! in-toto/SLSA provenance signed with the runner key (its public half was
//! sent at registration); the finish carries the state, the per-step exit
//! codes and timings.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinfold_api::provenance::{self, SigningKey};
use pinfold_api::wire::{FinishRequest, JobState, Lease, LogAppendResponse};
use pinfold_client::{Client, ClientError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::log::{LogWriter, Spool, SpoolReader, lock};
use crate::runner::{Job, RunError, stop};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Registering failed.
    #[error("registering with {server}: {source}")]
    Register {
        /// The server.
        server: String,
        /// The cause.
        #[source]
        source: ClientError,
    },
    /// The stored runner token could not be read or written.
    #[error("runner token at {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server refused the runner (revoked or unknown token).
    #[error("the server refused this runner: {0}")]
    Refused(ClientError),
    /// The runner's signing key could not be read or made.
    #[error("runner key: {0}")]
    Key(#[from] pinfold_api::provenance::ProvenanceError),
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Coordinator URL.
    pub server: String,
    /// Registration token (used once, when no runner token is stored).
    pub registration_token: Option<String>,
    /// Runner name.
    pub name: String,
    /// Labels offered.
    pub labels: Vec<String>,
    /// Local secrets the operator lets jobs have (`--secret NAME`), name →
    /// value: the binary reads them (`PINFOLD_SECRET_<NAME>`), never this crate.
    pub secrets: BTreeMap<String, String>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Exit after one job.
    pub ephemeral: bool,
    /// How long running jobs may go on after SIGTERM before they are cancelled.
    pub drain: Duration,
    /// Between SIGTERM and SIGKILL when a step is stopped.
    pub grace: Duration,
    /// `$PINFOLD_HOME`.
    pub home: PathBuf,
    /// The pinfold binary.
    pub exe: PathBuf,
    /// The policies jobs may run under (`--policy`, `--allow-policy`).
    pub ceiling: Arc<pinfold_sandbox::ceiling::Ceiling>,
    /// How long one request may take before it is given up and retried
    /// (long-polls get their wait on top).
    pub request_timeout: Duration,
}

#[derive(Serialize, Deserialize)]
struct StoredToken {
    server: String,
    runner_id: u64,
    token: String,
}

/// The file the runner token for `server` is kept in: one per server.
pub fn token_path(home: &Path, server: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(server.trim_end_matches('/').as_bytes()));
    home.join("agent").join(format!("runner-{}.json", &h[..16]))
}

fn runner_token(cfg: &Config, key: &SigningKey, fresh: bool) -> Result<StoredToken, AgentError> {
    let path = token_path(&cfg.home, &cfg.server);
    let terr = |source| AgentError::Token {
        path: path.clone(),
        source,
    };
    if !fresh {
        match std::fs::read(&path) {
            Ok(b) => {
                let t: StoredToken = serde_json::from_slice(&b)
                    .map_err(|e| terr(std::io::Error::other(e.to_string())))?;
                return Ok(t);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(terr(e)),
        }
    }
    let reg = Client::new(
        &cfg.server,
        cfg.registration_token.clone(),
        cfg.request_timeout,
    );
    let public = provenance::public_key_pem(&key.verifying_key())?;
    let r = reg
        .register_with_key(&cfg.name, &cfg.labels, Some(&public))
        .map_err(|source| AgentError::Register {
            server: cfg.server.clone(),
            source,
        })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(terr)?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(terr)?;
    let stored = StoredToken {
        server: cfg.server.clone(),
        runner_id: r.runner_id,
        token: r.token,
    };
    let body =
        serde_json::to_vec(&stored).map_err(|e| terr(std::io::Error::other(e.to_string())))?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .map_err(terr)?;
    std::fs::rename(&tmp, &path).map_err(terr)?;
    tracing::info!(runner_id = stored.runner_id, "registered");
    Ok(stored)
}

/// Makes sure the server holds this runner's key: a runner registered by an
/// older agent has none and sets it now; a different one (the key file was
/// replaced) means its provenance will be refused, which is only warned
/// about here (jobs still run; each job's log says it).
fn ensure_key(client: &Client, key: &SigningKey) {
    let Ok(pem) = provenance::public_key_pem(&key.verifying_key()) else {
        return;
    };
    match client.set_runner_key(&pem) {
        Ok(_) => {}
        Err(e) if e.status() == Some(409) => tracing::warn!(
            %e,
            "the server holds another key for this runner: its provenance will be refused; \
             remove the runner token file to register again"
        ),
        Err(e) => tracing::warn!(%e, "could not check the runner's registered key"),
    }
}

struct Shared {
    cfg: Config,
    client: Mutex<Client>,
    /// Signs each job's provenance.
    key: SigningKey,
    /// This runner's id at the server (changes if it registers again).
    runner_id: AtomicU64,
    /// A 401 made us register again once (the server forgot the runner).
    reregistered: AtomicBool,
    /// SIGTERM/SIGINT seen: take no more jobs.
    draining: AtomicBool,
    /// Stop flags of running jobs.
    running: Mutex<Vec<Arc<AtomicU8>>>,
    jobs_done: AtomicUsize,
    fatal: Mutex<Option<AgentError>>,
}

/// Runs the agent until `shutdown()` says so (then drains) or, with
/// `ephemeral`, after one job.
pub fn run(mut cfg: Config, shutdown: &dyn Fn() -> bool) -> Result<(), AgentError> {
    if cfg.ephemeral {
        cfg.concurrency = 1;
    }
    cfg.concurrency = cfg.concurrency.max(1);
    let key = crate::provenance::runner_key(&cfg.home)?;
    let stored = runner_token(&cfg, &key, false)?;
    let base = Client::new(&cfg.server, None, cfg.request_timeout);
    ensure_key(&base.with_token(&stored.token), &key);
    let sh = Arc::new(Shared {
        client: Mutex::new(base.with_token(&stored.token)),
        key,
        runner_id: AtomicU64::new(stored.runner_id),
        reregistered: AtomicBool::new(false),
        cfg,
        draining: AtomicBool::new(false),
        running: Mutex::new(Vec::new()),
        jobs_done: AtomicUsize::new(0),
        fatal: Mutex::new(None),
    });
    let workers: Vec<_> = (0..sh.cfg.concurrency)
        .map(|_| {
            let sh = sh.clone();
            std::thread::spawn(move || worker(&sh))
        })
        .collect();
    let mut drain_deadline = None;
    loop {
        if workers.iter().all(|w| w.is_finished()) {
            break;
        }
        if drain_deadline.is_none() && shutdown() {
            tracing::info!("shutting down: no new jobs; draining running ones");
            sh.draining.store(true, Ordering::SeqCst);
            drain_deadline = Some(Instant::now() + sh.cfg.drain);
        }
        if let Some(d) = drain_deadline
            && Instant::now() >= d
        {
            for s in lock_vec(&sh.running).iter() {
                let _ = s.compare_exchange(
                    stop::NONE,
                    stop::SHUTDOWN,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for w in workers {
        let _ = w.join();
    }
    match sh.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn lock_vec<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn worker(sh: &Shared) {
    let mut backoff = Backoff::new();
    loop {
        if sh.draining.load(Ordering::SeqCst) {
            return;
        }
        if sh.cfg.ephemeral && sh.jobs_done.load(Ordering::SeqCst) > 0 {
            sh.draining.store(true, Ordering::SeqCst);
            return;
        }
        let client = lock_vec(&sh.client).clone();
        let answer = client.lease(5);
        if answer.is_ok() {
            backoff = Backoff::new();
        }
        match answer {
            Ok(Some(lease)) => {
                let flag = Arc::new(AtomicU8::new(stop::NONE));
                lock_vec(&sh.running).push(flag.clone());
                run_job(sh, lease, flag.clone());
                lock_vec(&sh.running).retain(|f| !Arc::ptr_eq(f, &flag));
                sh.jobs_done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(None) => {}
            Err(e)
                if e.status() == Some(401)
                    && sh.cfg.registration_token.is_some()
                    && !sh.reregistered.swap(true, Ordering::SeqCst) =>
            {
                tracing::warn!(%e, "the server does not know this runner; registering again");
                match runner_token(&sh.cfg, &sh.key, true) {
                    Ok(t) => {
                        sh.runner_id.store(t.runner_id, Ordering::SeqCst);
                        let mut c = lock_vec(&sh.client);
                        *c = c.with_token(&t.token);
                    }
                    Err(e) => {
                        *lock_vec(&sh.fatal) = Some(e);
                        sh.draining.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
            Err(e) if matches!(e.status(), Some(401 | 403)) => {
                tracing::error!(%e, "runner refused");
                *lock_vec(&sh.fatal) = Some(AgentError::Refused(e));
                sh.draining.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(%e, "lease failed; retrying");
                backoff.sleep();
                continue;
            }
        }
    }
}

/// Exponential backoff between retries of a request the server did not
/// answer: 100 ms doubling to 5 s, each wait jittered down by up to a half
/// so agents cut off together do not come back in step.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The next wait (and doubles the one after).
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        // Jitter from the clock's nanoseconds: no need for a random source.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0);
        d - d.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }

    fn sleep(&mut self) {
        std::thread::sleep(self.step());
    }
}

/// Calls `f` until it succeeds, the server answers with an error, or
/// `deadline` passes (transport errors are retried with backoff).
fn retry<T>(
    deadline: Duration,
    mut f: impl FnMut() -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let start = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match f() {
            Err(e @ (ClientError::Transport(_) | ClientError::Io(_)))
                if start.elapsed() < deadline =>
            {
                tracing::debug!(%e, "retrying");
                backoff.sleep();
            }
            other => return other,
        }
    }
}

fn run_job(sh: &Shared, lease: Lease, flag: Arc<AtomicU8>) {
    let id = lease.job_id;
    let jc = lock_vec(&sh.client).with_token(&lease.job_token);
    let ttl = Duration::from_secs(lease.lease_ttl_secs.max(1));
    let dir = sh
        .cfg
        .home
        .join("agent/jobs")
        .join(format!("{id}-{}", lease.attempt_id));
    let _ = pinfold_sandbox::image::owner::remove_run_dir(&dir);
    // 0700: the job's workspace and writable layer are the job's alone.
    let spool =
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .and_then(|()| Spool::create(&dir.join("log")));
    let spool = match spool {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%e, job = id, "cannot create the job directory");
            let _ = retry(ttl, || {
                jc.finish(
                    id,
                    &FinishRequest {
                        state: JobState::Error,
                        reason: Some(format!("agent: job directory: {e}")),
                        steps: Vec::new(),
                    },
                )
            });
            return;
        }
    };
    tracing::info!(job = id, attempt = lease.attempt, "running");
    // Secrets: the server's, plus the agent's own for the names its
    // operator listed (--secret) that the job asks for.
    let mut secrets: BTreeMap<String, String> = lease.secrets.clone();
    for s in &lease.spec.secrets {
        if !secrets.contains_key(s.as_str())
            && let Some(v) = sh.cfg.secrets.get(s.as_str())
        {
            secrets.insert(s.to_string(), v.clone());
        }
    }
    let reader = spool.reader();
    let done = spool.done.clone();
    let log = LogWriter::new(Box::new(spool), secrets.values().cloned()).shared();
    if lease.attempt > 1 {
        lock(&log).line(&format!(
            "==> pinfold: attempt {} on runner {} (an earlier runner was lost)",
            lease.attempt, sh.cfg.name
        ));
    } else {
        lock(&log).line(&format!("==> pinfold: job {id} on runner {}", sh.cfg.name));
    }
    let shipper = match reader {
        Ok(r) => {
            let jc = jc.clone();
            let flag = flag.clone();
            let start = lease.log_offset;
            Some(std::thread::spawn(move || ship(&jc, id, start, &r, &flag)))
        }
        Err(e) => {
            tracing::error!(%e, "cannot read the spool; the log is not shipped");
            None
        }
    };
    let hb_stop = Arc::new(AtomicBool::new(false));
    let hb = {
        let (jc, flag, hb_stop) = (jc.clone(), flag.clone(), hb_stop.clone());
        std::thread::spawn(move || heartbeat(&jc, id, ttl, &flag, &hb_stop))
    };
    let job = Job {
        spec: lease.spec.clone(),
        ceiling: sh.cfg.ceiling.clone(),
        dir: dir.join("job"),
        secrets,
        exe: sh.cfg.exe.clone(),
        stop: flag.clone(),
        grace: sh.cfg.grace,
    };
    let source_sha = lease.source_sha256.clone();
    let mut fill = |ws: &crate::runner::Workspace<'_>| -> Result<(), RunError> {
        if let Some(src) = &lease.spec.source {
            return Err(RunError::Source(format!(
                "git sources ({}) are not supported by this agent yet",
                src.git
            )));
        }
        let Some(want) = &source_sha else {
            return Ok(());
        };
        let tar_path = dir.join("source.tar");
        let mut f = std::fs::File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&tar_path)
            .map_err(|e| RunError::Source(e.to_string()))?;
        retry(ttl, || {
            use std::io::Seek;
            f.rewind()?;
            f.set_len(0)?;
            jc.download_source(id, &mut f)
        })
        .map_err(|e| RunError::Source(format!("download: {e}")))?;
        let got =
            crate::artifacts::hash_file(&mut f).map_err(|e| RunError::Source(e.to_string()))?;
        if &got != want {
            return Err(RunError::Source(format!(
                "sha256 mismatch: the lease pins {want}, the download is {got}"
            )));
        }
        ws.write(|ws| crate::source::unpack(std::io::BufReader::new(f), ws))
            .map_err(|e| RunError::Source(e.to_string()))?;
        let _ = std::fs::remove_file(&tar_path);
        Ok(())
    };
    let mut deliver = |a: &mut crate::artifacts::Artifact| -> Result<(), String> {
        retry(ttl * 2, || {
            use std::io::Seek;
            a.file.rewind()?;
            jc.upload_artifact(id, &a.name, &a.sha256, &mut a.file)
        })
        .map(drop)
        .map_err(|e| format!("upload failed: {e}"))
    };
    let started_ms = pinfold_api::now_ms();
    let report = job.run(&log, &mut fill, &mut deliver);
    if !report.artifacts.is_empty() && flag.load(Ordering::SeqCst) != stop::LEASE_LOST {
        let line = match attest(sh, &jc, &lease, &report, started_ms, ttl) {
            Ok(keyid) => format!(
                "==> pinfold: provenance for {} artifacts signed by runner key {} and uploaded",
                report.artifacts.len(),
                &keyid[..16]
            ),
            Err(e) => {
                tracing::error!(%e, job = id, "provenance");
                format!("==> pinfold: provenance not uploaded: {e}")
            }
        };
        lock(&log).line(&line);
    }
    let _ = lock(&log).finish();
    done.store(true, Ordering::SeqCst);
    if let Some(s) = shipper {
        match s.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(%e, job = id, "log shipping ended early"),
            Err(_) => tracing::error!(job = id, "log shipper panicked"),
        }
    }
    hb_stop.store(true, Ordering::SeqCst);
    let _ = hb.join();
    if flag.load(Ordering::SeqCst) == stop::LEASE_LOST {
        tracing::warn!(job = id, "lease lost; not finishing");
    } else {
        let req = FinishRequest {
            state: report.state,
            reason: report.reason.clone(),
            steps: report.steps.clone(),
        };
        match retry(ttl * 2, || jc.finish(id, &req)) {
            Ok(_) => tracing::info!(job = id, state = report.state.as_str(), "finished"),
            Err(e) => tracing::error!(%e, job = id, "finish failed"),
        }
    }
    let _ = pinfold_sandbox::image::owner::remove_run_dir(&dir);
}

/// Builds the job's in-toto/SLSA statement (subjects: the uploaded
/// artifacts), signs it with the runner key and uploads it; returns the key id.
fn attest(
    sh: &Shared,
    jc: &Client,
    lease: &Lease,
    report: &crate::runner::Report,
    started_ms: u64,
    ttl: Duration,
) -> Result<String, String> {
    let server = sh.cfg.server.trim_end_matches('/');
    let runner_id = sh.runner_id.load(Ordering::SeqCst);
    let mut internal = serde_json::Map::new();
    internal.insert("runner".into(), sh.cfg.name.clone().into());
    internal.insert(
        "policy".into(),
        lease
            .spec
            .policy
            .as_ref()
            .map_or(sh.cfg.ceiling.names()[0], |p| p.as_str())
            .into(),
    );
    let statement = crate::provenance::statement(
        &lease.spec_yaml,
        lease.spec.image.as_str(),
        lease.source_sha256.as_deref(),
        report,
        &crate::provenance::Invocation {
            builder_id: &format!("{server}/api/v1/runners/{runner_id}"),
            invocation_id: &format!(
                "{server}/api/v1/jobs/{}#attempt-{}",
                lease.job_id, lease.attempt
            ),
            started_ms,
            finished_ms: pinfold_api::now_ms(),
        },
        internal,
    );
    let envelope = provenance::sign(&statement, &sh.key).map_err(|e| e.to_string())?;
    let body = serde_json::to_vec_pretty(&envelope).map_err(|e| e.to_string())?;
    let stored =
        retry(ttl, || jc.upload_provenance(lease.job_id, &body)).map_err(|e| e.to_string())?;
    Ok(stored.keyid)
}

fn heartbeat(jc: &Client, id: u64, ttl: Duration, flag: &AtomicU8, stop_hb: &AtomicBool) {
    let mut every = ttl / 3;
    let mut backoff = Backoff::new();
    let mut next = Instant::now() + every;
    while !stop_hb.load(Ordering::SeqCst) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match jc.heartbeat(id) {
            Ok(r) => {
                if r.cancel {
                    let _ = flag.compare_exchange(
                        stop::NONE,
                        stop::CANCELLED,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                every = Duration::from_secs(r.lease_ttl_secs.max(1)) / 3;
                next = Instant::now() + every;
                backoff = Backoff::new();
            }
            Err(e) if matches!(e.status(), Some(403 | 409 | 404)) => {
                tracing::warn!(%e, job = id, "lease lost");
                flag.store(stop::LEASE_LOST, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(%e, job = id, "heartbeat failed; retrying");
                next = Instant::now() + backoff.step().min(every);
            }
        }
    }
}

/// Appends in flight at once. The server orders them: an append that
/// arrives ahead of the log's end waits there for the ones before it.
const SHIP_WINDOW: usize = 3;
/// Largest append (the server takes up to 4 MiB; a 413 halves it). 1 MiB
/// keeps the agent's buffers (window + 1 of them) to 4 MiB whatever the
/// log; the server ingests 1 MiB appends at over 200 MB/s.
const SHIP_CHUNK: usize = 1 << 20;
/// Smallest append the halving goes down to.
const SHIP_CHUNK_MIN: usize = 64 << 10;
/// How long one append is retried through transport errors (server down).
const SHIP_PATIENCE: Duration = Duration::from_secs(600);

/// What became of one append.
enum Sent {
    /// Stored; the answer.
    Stored(LogAppendResponse),
    /// Refused: the log ends elsewhere; resume there.
    Gap(u64),
    /// Refused as too large for this server.
    TooLarge,
    /// Refused for good (stale lease, revoked, patience exhausted).
    Failed(ClientError),
}

/// Appends one chunk at `at`, retrying transport errors with backoff (the
/// server skips bytes it already has, so a resend never duplicates).
fn send_chunk(
    jc: &Client,
    id: u64,
    at: u64,
    data: &[u8],
    flag: &AtomicU8,
    stop_all: &AtomicBool,
) -> Sent {
    let first = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match jc.append_log(id, at, data) {
            Ok(r) => return Sent::Stored(r),
            Err(ClientError::Http {
                expected_offset: Some(e),
                ..
            }) => return Sent::Gap(e),
            Err(e) if e.status() == Some(413) && data.len() > SHIP_CHUNK_MIN => {
                return Sent::TooLarge;
            }
            Err(e @ (ClientError::Transport(_) | ClientError::Io(_)))
                if first.elapsed() < SHIP_PATIENCE
                    && flag.load(Ordering::SeqCst) != stop::LEASE_LOST
                    && !stop_all.load(Ordering::SeqCst) =>
            {
                tracing::debug!(%e, job = id, at, "log append failed; resending");
                backoff.sleep();
            }
            Err(e) => {
                if matches!(e.status(), Some(403 | 409)) {
                    flag.store(stop::LEASE_LOST, Ordering::SeqCst);
                }
                return Sent::Failed(e);
            }
        }
    }
}

/// Appends the spool to the job's log from `start` until the stream is
/// complete and shipped: chunks of up to [`SHIP_CHUNK`] read from the spool
/// (memory stays bounded), [`SHIP_WINDOW`] of them in flight so the network
/// and the server work while the next chunk is read. A refused chunk (409
/// with the server's `expected_offset`) lets the window drain, then shipping
/// resumes at the server's offset.
fn ship(
    jc: &Client,
    id: u64,
    start: u64,
    r: &SpoolReader,
    flag: &AtomicU8,
) -> Result<u64, ClientError> {
    let stop_all = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Vec<u8>, Sent)>();
    std::thread::scope(|s| {
        let mut chunk = SHIP_CHUNK;
        let mut sent = 0u64; // spool bytes handed to appends
        let mut in_flight = 0usize;
        let mut free: Vec<Vec<u8>> = Vec::new();
        let mut truncated = false;
        let mut resync: Option<u64> = None;
        let mut failure: Option<ClientError> = None;
        loop {
            let lost = flag.load(Ordering::SeqCst) == stop::LEASE_LOST;
            let complete = r.done.load(Ordering::SeqCst);
            let written = r.written.load(Ordering::SeqCst);
            if truncated {
                // The server keeps no more; acknowledge the rest locally.
                sent = sent.max(written);
            }
            while failure.is_none() && resync.is_none() && !lost && in_flight < SHIP_WINDOW {
                // With appends in flight, only a full chunk goes next: a
                // step printing slower than the server takes it gets one
                // append at a time, each carrying what piled up meanwhile,
                // not a stream of small ones.
                let backlog = r.written.load(Ordering::SeqCst).saturating_sub(sent);
                if in_flight > 0 && backlog < chunk as u64 && !complete {
                    break;
                }
                let mut buf = free.pop().unwrap_or_default();
                buf.resize(chunk, 0);
                let n = match r.read_at(sent, &mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        failure = Some(e.into());
                        stop_all.store(true, Ordering::SeqCst);
                        break;
                    }
                };
                if n == 0 {
                    free.push(buf);
                    break;
                }
                buf.truncate(n);
                let at = start + sent;
                sent += n as u64;
                in_flight += 1;
                let (tx, stop_all) = (tx.clone(), &stop_all);
                s.spawn(move || {
                    let out = send_chunk(jc, id, at, &buf, flag, stop_all);
                    let _ = tx.send((at, buf, out));
                });
            }
            if in_flight == 0 {
                if let Some(e) = failure.take() {
                    return Err(e);
                }
                if lost {
                    return Ok(start + sent);
                }
                if let Some(at) = resync.take() {
                    sent = at.saturating_sub(start);
                    continue;
                }
                if complete && written <= sent {
                    return Ok(start + sent);
                }
            }
            let wait = Duration::from_millis(20);
            let answer = if in_flight > 0 {
                rx.recv_timeout(wait).ok()
            } else {
                std::thread::sleep(wait);
                None
            };
            let Some((at, buf, out)) = answer else {
                continue;
            };
            in_flight -= 1;
            free.push(buf);
            match out {
                Sent::Stored(resp) => {
                    truncated |= resp.truncated;
                    // The server may already have had more (a resend after
                    // a resync): carry on from its end.
                    if resync.is_none() {
                        sent = sent.max(resp.offset.saturating_sub(start));
                    }
                }
                Sent::Gap(e) => resync = Some(resync.map_or(e, |r| r.min(e))),
                Sent::TooLarge => {
                    chunk = (chunk / 2).max(SHIP_CHUNK_MIN);
                    tracing::info!(
                        chunk,
                        job = id,
                        "log chunk too large for the server; halving"
                    );
                    resync = Some(resync.map_or(at, |r| r.min(at)));
                }
                Sent::Failed(e) => {
                    stop_all.store(true, Ordering::SeqCst);
                    failure.get_or_insert(e);
                }
            }
        }
    })
}
