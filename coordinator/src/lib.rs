//! pinfold-coordinator: the server runners pull jobs from.
//!
//! * [`app`] builds the axum [`Router`] over an [`AppState`]; tests drive it
//!   with `tower::ServiceExt::oneshot`, [`serve`] runs it on a socket with
//!   graceful shutdown and the lease reaper.
//! * [`store`]: the [`Store`] traits, one per concern (runners, jobs and
//!   leases, logs, artifacts, provenance, verify groups), and their SQLite
//!   implementation, one file per concern; a PostgreSQL one can slot in
//!   without touching handlers.
//! * [`blobs`]: content-addressed files (sources and artifacts).
//! * [`token`]: how tokens are made and hashed; [`auth`]: the extractors
//!   that check them.
//! * [`ui`]: the web pages under `/ui` (jobs, a job's live log, runners).
//!
//! The protocol is documented endpoint by endpoint in `docs/protocol.md`.
//!
//! Depends on `pinfold-api` only among pinfold's crates (`pinfold-client`
//! in its tests and benchmark). It may not depend on `pinfold-sandbox` or
//! `pinfold-agent`, and nothing that runs jobs may depend on it: a runner
//! host never links the server (`tests/run.sh` checks the agent's tree).
//! The layout and its directions: `docs/architecture.md`.
#![deny(missing_docs)]

pub mod auth;
pub mod blobs;
pub mod error;
mod relay;
mod routes;
pub mod store;
pub mod token;
pub mod ui;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use pinfold_api::now_ms;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use blobs::BlobStore;
pub use error::ApiError;
pub use store::{PgStore, SqliteStore, Store};

/// Errors while setting the coordinator up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No `$PINFOLD_HOME` and no home directory.
    #[error("cannot find a state directory: set PINFOLD_HOME")]
    NoHome,
    /// The state directory could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// The blob store could not be opened.
    #[error("blob store: {0}")]
    Blobs(#[from] blobs::BlobError),
    /// The socket failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Tunables of one coordinator.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// Attempts before a job whose runners keep vanishing fails "runner lost".
    pub max_attempts: u32,
    /// Longest a lease request is held open waiting for a job.
    pub max_long_poll: Duration,
    /// Stored log bytes per job; past it the log ends with a truncation marker.
    pub max_log_bytes: u64,
    /// Largest log chunk one append may carry.
    pub max_log_chunk: usize,
    /// Largest source tar.
    pub max_source_bytes: u64,
    /// Largest artifact.
    pub max_artifact_bytes: u64,
    /// Largest JSON body (job submissions included).
    pub max_json_bytes: usize,
    /// Where each server secret may go (name → scopes): a scope is a label
    /// the admin assigned (`pinfold runners label`) or `runner:ID`. A secret
    /// with no scope goes to no runner.
    pub secret_scopes: BTreeMap<String, Vec<String>>,
    /// The PostgreSQL database to keep state in (`postgres://...`), shared
    /// by every coordinator given the same; `None`: SQLite in the state
    /// directory.
    pub store: Option<String>,
}

impl Config {
    /// Whether secret `name` may go to runner `runner_id`, which the admin
    /// trusts with `trusted` labels. Self-declared labels play no part.
    pub fn secret_may_go(&self, name: &str, runner_id: u64, trusted: &[String]) -> bool {
        self.secret_scopes.get(name).is_some_and(|scopes| {
            scopes.iter().any(|s| match s.strip_prefix("runner:") {
                Some(id) => id.parse() == Ok(runner_id),
                None => trusted.iter().any(|t| t == s),
            })
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease_ttl: Duration::from_secs(30),
            max_attempts: 3,
            max_long_poll: Duration::from_secs(30),
            max_log_bytes: 64 << 20,
            max_log_chunk: 4 << 20,
            max_source_bytes: 1 << 30,
            max_artifact_bytes: 4 << 30,
            max_json_bytes: 1 << 20,
            secret_scopes: BTreeMap::new(),
            store: None,
        }
    }
}

/// Wakes long-polls and log followers; tells streams the server is stopping.
/// With a shared PostgreSQL store, also those of the other coordinators
/// ([`relay`]).
#[derive(Debug)]
pub struct Events {
    queue: watch::Sender<u64>,
    log: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    /// The relay to the other coordinators, if any.
    remote: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<relay::Kind>>,
}

impl Events {
    fn new() -> Self {
        Events {
            queue: watch::channel(0).0,
            log: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            remote: std::sync::OnceLock::new(),
        }
    }
    /// A job became leasable.
    pub fn queue_changed(&self) {
        self.wake(relay::Kind::Queue);
        self.tell_others(relay::Kind::Queue);
    }
    /// A log grew or a job ended.
    pub fn log_changed(&self) {
        self.wake(relay::Kind::Log);
        self.tell_others(relay::Kind::Log);
    }
    /// Wakes this coordinator's waiters only.
    fn wake(&self, kind: relay::Kind) {
        let w = match kind {
            relay::Kind::Queue => &self.queue,
            relay::Kind::Log => &self.log,
        };
        w.send_modify(|n| *n = n.wrapping_add(1));
    }
    fn tell_others(&self, kind: relay::Kind) {
        if let Some(r) = self.remote.get() {
            let _ = r.send(kind);
        }
    }
    /// Ends long-polls and follows so graceful shutdown can finish.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }
}

/// sha256 hashes of the two server-wide tokens.
#[derive(Debug, Clone)]
pub struct ServerTokens {
    /// Hash of the admin token.
    pub admin_sha256: String,
    /// Hash of the registration token.
    pub registration_sha256: String,
}

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Queue, leases, logs and metadata.
    pub store: Arc<dyn Store>,
    /// Sources and artifacts, content-addressed.
    pub blobs: Arc<BlobStore>,
    /// Tunables.
    pub config: Arc<Config>,
    /// Hashes of the admin and registration tokens.
    pub tokens: Arc<ServerTokens>,
    /// Secret values the server hands to leases (name → value), masked in logs.
    pub secrets: Arc<BTreeMap<String, String>>,
    /// Wake-ups.
    pub events: Arc<Events>,
    /// Who is signed in to the pages.
    pub sessions: Arc<ui::session::Sessions>,
}

impl AppState {
    /// Builds the state over an opened store and blob store.
    pub fn new(
        store: Arc<dyn Store>,
        blobs: BlobStore,
        config: Config,
        tokens: ServerTokens,
        secrets: BTreeMap<String, String>,
    ) -> Self {
        AppState {
            store,
            blobs: Arc::new(blobs),
            config: Arc::new(config),
            tokens: Arc::new(tokens),
            secrets: Arc::new(secrets),
            events: Arc::new(Events::new()),
            sessions: Arc::default(),
        }
    }
}

/// The tokens a server was started with: each either given (environment)
/// or, on first start, generated. Generated ones are returned once so the
/// caller can print them; only their hashes are stored.
#[derive(Debug, Default)]
pub struct Bootstrap {
    /// The admin token when it was generated now.
    pub new_admin_token: Option<String>,
    /// The registration token when it was generated now.
    pub new_registration_token: Option<String>,
}

/// Opens the store (SQLite under `dir`, or the PostgreSQL database of
/// `config.store`) and the blob store under `dir`, and settles the admin
/// and registration tokens: a given token replaces the stored hash, a
/// missing one is generated once.
pub async fn open(
    dir: &Path,
    config: Config,
    admin_token: Option<String>,
    registration_token: Option<String>,
    secrets: BTreeMap<String, String>,
) -> Result<(AppState, Bootstrap), SetupError> {
    std::fs::create_dir_all(dir).map_err(|source| SetupError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let (store, blobs): (Arc<dyn Store>, _) = match &config.store {
        Some(url) => {
            let pg = PgStore::connect(url).await?;
            let blobs = BlobStore::postgres(pg.pool());
            (Arc::new(pg), blobs)
        }
        None => (
            Arc::new(SqliteStore::open(&dir.join("coordinator.db"))?),
            BlobStore::open(&dir.join("blobs"))?,
        ),
    };
    let mut boot = Bootstrap::default();
    let mut hashes = Vec::new();
    for (key, given, prefix, slot) in [
        ("admin_token_sha256", admin_token, token::ADMIN_PREFIX, 0),
        (
            "registration_token_sha256",
            registration_token,
            token::REGISTRATION_PREFIX,
            1,
        ),
    ] {
        let hash = match given {
            Some(t) => {
                let h = token::hash_token(&t);
                store.set_meta(key, &h).await?;
                h
            }
            None => match store.get_meta(key).await? {
                Some(h) => h,
                None => {
                    let t = token::new_token(prefix);
                    let h = token::hash_token(&t);
                    // Another coordinator starting on the same database
                    // may store its token first: then that one stands, and
                    // this one is not printed.
                    let stored = store.set_meta_if_absent(key, &h).await?;
                    if stored == h {
                        if slot == 0 {
                            boot.new_admin_token = Some(t);
                        } else {
                            boot.new_registration_token = Some(t);
                        }
                    }
                    stored
                }
            },
        };
        hashes.push(hash);
    }
    let registration_sha256 = hashes.pop().unwrap_or_default();
    let admin_sha256 = hashes.pop().unwrap_or_default();
    let tokens = ServerTokens {
        admin_sha256,
        registration_sha256,
    };
    let url = config.store.clone();
    let state = AppState::new(store, blobs, config, tokens, secrets);
    if let Some(url) = url {
        let _ = state.events.remote.set(relay::spawn(url, &state.events));
    }
    Ok((state, boot))
}

/// The coordinator's HTTP API, and its web pages under `/ui` (which use
/// the routes' functions; the routes know nothing of the pages).
pub fn app(state: AppState) -> Router {
    routes::router(state.clone())
        .route(
            "/",
            axum::routing::get(|| async { ui::redirect("/ui/jobs") }),
        )
        .nest("/ui", ui::router().with_state(state))
}

/// Requeues or fails the jobs whose lease ran out; returns how many.
pub async fn reap_expired(state: &AppState) -> Result<usize, store::StoreError> {
    let n = state.store.expire_leases(now_ms()).await?;
    if n > 0 {
        tracing::info!(jobs = n, "leases expired");
        state.events.queue_changed();
        state.events.log_changed();
    }
    Ok(n)
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops taking
/// connections, ends long-polls and log follows, and waits for requests in
/// flight. Also runs the lease reaper.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SetupError> {
    // Leases were not renewable while the server was down: do not count the
    // server's own absence against the runners.
    let ttl = state.config.lease_ttl;
    state
        .store
        .extend_leases(now_ms() + ttl.as_millis() as u64)
        .await?;
    let reaper = tokio::spawn(reaper(state.clone()));
    let events = state.events.clone();
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            events.shut_down();
        })
        .await;
    reaper.abort();
    result.map_err(SetupError::Io)
}

async fn reaper(state: AppState) {
    let ttl = state.config.lease_ttl;
    let tick = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut last = Instant::now();
    // The database was out of reach (a PostgreSQL restart): runners'
    // heartbeats failed as the reaper did.
    let mut outage = false;
    loop {
        tokio::time::sleep(tick).await;
        let gap = last.elapsed();
        last = Instant::now();
        // A tick far later than planned means this process was not running
        // (SIGSTOP, a suspended VM): runners could not heartbeat either.
        // Likewise after an outage of the database: the first thing done
        // once it answers is to give every lease its time again.
        if outage || gap > tick + Duration::from_secs(2).max(ttl / 4) {
            if outage {
                tracing::warn!("the database answers again; extending leases");
            } else {
                tracing::warn!(?gap, "server stalled; extending leases");
            }
            if let Err(err) = state
                .store
                .extend_leases(now_ms() + ttl.as_millis() as u64)
                .await
            {
                tracing::error!(?err, "extending leases failed");
                outage = err.retryable();
            } else {
                outage = false;
            }
            continue;
        }
        if let Err(err) = reap_expired(&state).await {
            tracing::error!(?err, "lease reaper failed");
            outage = err.retryable();
        }
    }
}
