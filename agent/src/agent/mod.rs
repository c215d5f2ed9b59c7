//! The runner agent's job loop (`pinfold agent`): registers with a
//! coordinator once, runs a pool of workers that long-poll for leases, and
//! runs each leased job with the [`runner`](crate::runner) core, then
//! finishes it with the state, the per-step exit codes and timings.
//!
//! Per job, besides the job's own threads: a `heartbeat` at ttl/3
//! (cancellation arrives in its answer) and a log shipper (`shipping`)
//! that tails the job's masked spool file; its source, artifacts and
//! provenance go through `transfer`. Who this runner is at the server is
//! `identity`; retries of unanswered requests are `retry`.
//!
//! Stopping (SIGTERM/SIGINT) ends whatever the network does: no new jobs;
//! running ones get `--drain`; at that deadline (the [`Cutoff`]) they are
//! cancelled (SIGTERM to the step's `pinfold exec`, `--grace`, SIGKILL) and
//! no request is retried any more, so a log, artifact, provenance or result
//! the coordinator does not take at the first try is dropped with one log
//! line; [`run`] returns by the deadline + grace + [`STOP_BOUND`] at the
//! latest, leaving behind a request that still hangs.

mod config;
mod heartbeat;
mod identity;
mod retry;
mod shipping;
mod transfer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinfold_api::provenance::SigningKey;
use pinfold_api::wire::{FinishRequest, JobState, Lease};
use pinfold_client::Client;

pub use config::{AgentError, Config};
pub use identity::token_path;
use retry::{Backoff, Cutoff, retry};

use crate::artifacts::Artifact;
use crate::log::{LogWriter, Spool, lock};
use crate::runner::{Job, Workspace, stop};

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
    /// The drain deadline, set with the SIGTERM/SIGINT: past it nothing
    /// is retried.
    cutoff: Cutoff,
    /// Running jobs: id and stop flag.
    running: Mutex<Vec<(u64, Arc<AtomicU8>)>>,
    jobs_done: AtomicUsize,
    fatal: Mutex<Option<AgentError>>,
}

/// How long after the drain deadline plus `--grace` [`run`] waits at most
/// for its workers: a cancelled step is gone within the grace; what is left
/// is one try at each undelivered request (and a step's output closing).
pub const STOP_BOUND: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown()` says so (then drains; returns within
/// `drain` + `grace` + [`STOP_BOUND`]) or, with `ephemeral`, after one job.
pub fn run(mut cfg: Config, shutdown: &dyn Fn() -> bool) -> Result<(), AgentError> {
    if cfg.ephemeral {
        cfg.concurrency = 1;
    }
    cfg.concurrency = cfg.concurrency.max(1);
    // Before any job starts a child: the steps' cgroups (see
    // pinfold_sandbox::container::cgroup), once for the whole agent.
    match pinfold_sandbox::container::cgroup::Children::get() {
        Ok(_) => tracing::info!("cgroup v2 is delegated: each step runs in a cgroup of its own"),
        Err(why) => tracing::info!("step limits: each step's exec decides ({why})"),
    }
    let key = crate::provenance::runner_key(&cfg.home)?;
    let stored = identity::runner_token(&cfg, &key, false)?;
    let base = Client::new(&cfg.server, None, cfg.request_timeout);
    identity::ensure_key(&base.with_token(&stored.token), &key);
    identity::send_facts(&base.with_token(&stored.token), &cfg);
    let sh = Arc::new(Shared {
        client: Mutex::new(base.with_token(&stored.token)),
        key,
        runner_id: AtomicU64::new(stored.runner_id),
        reregistered: AtomicBool::new(false),
        cfg,
        draining: AtomicBool::new(false),
        cutoff: Cutoff::default(),
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
    let mut abandoned = false;
    loop {
        if workers.iter().all(|w| w.is_finished()) {
            break;
        }
        if sh.cutoff.at().is_none() && shutdown() {
            tracing::info!("shutting down: no new jobs; draining running ones");
            sh.draining.store(true, Ordering::SeqCst);
            sh.cutoff.set(Instant::now() + sh.cfg.drain);
        }
        if let Some(d) = sh.cutoff.at()
            && Instant::now() >= d
        {
            for (_, s) in lock_vec(&sh.running).iter() {
                let _ = s.compare_exchange(
                    stop::NONE,
                    stop::SHUTDOWN,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
            if Instant::now() >= d + sh.cfg.rt.grace + STOP_BOUND {
                abandon(&sh, workers.iter().filter(|w| !w.is_finished()).count());
                abandoned = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !abandoned {
        for w in workers {
            let _ = w.join();
        }
    }
    match sh.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Past the drain deadline + grace + [`STOP_BOUND`]: `busy` workers still
/// wait on the coordinator. One line for each job whose result is dropped;
/// the caller returns without them (their steps were stopped at the
/// deadline, and any left die with the process: PR_SET_PDEATHSIG).
fn abandon(sh: &Shared, busy: usize) {
    let jobs = lock_vec(&sh.running);
    for (id, _) in jobs.iter() {
        tracing::error!(
            job = id,
            "the coordinator did not answer by the drain deadline; exiting: the job's undelivered log and result are dropped"
        );
    }
    if busy > jobs.len() {
        tracing::warn!(
            requests = busy - jobs.len(),
            "exiting with requests to the coordinator unanswered"
        );
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
                lock_vec(&sh.running).push((lease.job_id, flag.clone()));
                run_job(sh, lease, flag.clone());
                lock_vec(&sh.running).retain(|(_, f)| !Arc::ptr_eq(f, &flag));
                sh.jobs_done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(None) => {}
            Err(e)
                if e.status() == Some(401)
                    && sh.cfg.registration_token.is_some()
                    && !sh.reregistered.swap(true, Ordering::SeqCst) =>
            {
                tracing::warn!(%e, "the server does not know this runner; registering again");
                match identity::runner_token(&sh.cfg, &sh.key, true) {
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
                backoff.sleep(&sh.cutoff);
                continue;
            }
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
    let _ = pinfold_sandbox::image::owner::remove_run_dir(&dir, &sh.cfg.rt.settings);
    // 0700: the job's workspace and writable layer are the job's alone.
    let spool =
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .and_then(|()| Spool::create(&dir.join("log")));
    let spool = match spool {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%e, job = id, "cannot create the job directory");
            let _ = retry(ttl, &sh.cutoff, || {
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
            let cutoff = sh.cutoff.clone();
            Some(std::thread::spawn(move || {
                let append = |at: u64, data: &[u8]| jc.append_log(id, at, data);
                shipping::ship(&append, id, start, &r, &flag, &cutoff)
            }))
        }
        Err(e) => {
            tracing::error!(%e, "cannot read the spool; the log is not shipped");
            None
        }
    };
    let hb_stop = Arc::new(AtomicBool::new(false));
    let hb = {
        let (jc, flag, hb_stop) = (jc.clone(), flag.clone(), hb_stop.clone());
        std::thread::spawn(move || heartbeat::heartbeat(&jc, id, ttl, &flag, &hb_stop))
    };
    let job = Job {
        spec: lease.spec.clone(),
        dir: dir.join("job"),
        secrets,
        stop: flag.clone(),
        rt: sh.cfg.rt.clone(),
    };
    let cutoff = &sh.cutoff;
    let mut fill = |ws: &Workspace<'_>| transfer::fetch_source(&jc, &lease, &dir, ttl, cutoff, ws);
    let mut deliver = |a: &mut Artifact| transfer::upload_artifact(&jc, id, ttl * 2, cutoff, a);
    let started_ms = pinfold_api::now_ms();
    let report = job.run(&log, &mut fill, &mut deliver);
    if !report.artifacts.is_empty() && flag.load(Ordering::SeqCst) != stop::LEASE_LOST {
        let builder = transfer::Builder {
            server: &sh.cfg.server,
            runner_id: sh.runner_id.load(Ordering::SeqCst),
            runner: &sh.cfg.name,
            default_policy: sh.cfg.rt.ceiling.names()[0],
            key: &sh.key,
        };
        let line = match transfer::attest(&builder, &jc, &lease, &report, started_ms, ttl, cutoff) {
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
            Ok(Err(e)) if cutoff.passed() => tracing::error!(
                %e,
                job = id,
                "the rest of the job's log was not delivered by the drain deadline; dropped"
            ),
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
        match retry(ttl * 2, cutoff, || jc.finish(id, &req)) {
            Ok(_) => tracing::info!(job = id, state = report.state.as_str(), "finished"),
            Err(e) if cutoff.passed() => tracing::error!(
                %e,
                job = id,
                state = report.state.as_str(),
                "the job's result was not delivered by the drain deadline; dropped"
            ),
            Err(e) => tracing::error!(%e, job = id, "finish failed"),
        }
    }
    let _ = pinfold_sandbox::image::owner::remove_run_dir(&dir, &sh.cfg.rt.settings);
}
