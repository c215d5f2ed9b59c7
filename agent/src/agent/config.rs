//! How the agent is configured ([`Config`], filled by the binary) and
//! the errors that stop it ([`AgentError`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pinfold_client::ClientError;

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
    /// `$PINFOLD_HOME`.
    pub home: PathBuf,
    /// How long one request may take before it is given up and retried
    /// (long-polls get their wait on top).
    pub request_timeout: Duration,
    /// How jobs run here: the policies they may run under (`--policy`,
    /// `--allow-policy`), the binary, the grace between SIGTERM and
    /// SIGKILL, what the binary read from its environment, and whether
    /// jobs may name local images (`--allow-local-images`).
    pub rt: crate::runner::Runtime,
}
