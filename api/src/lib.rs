//! pinfold-api: the types the agent and the coordinator share.
//!
//! * [`escape`]: job output made inert for a terminal (control characters shown escaped).
//! * [`job`]: the job file (`job.yaml`), parsed strictly.
//! * [`wire`]: the JSON bodies of the coordinator protocol (`docs/protocol.md`).
//! * [`provenance`]: in-toto/SLSA provenance statements, DSSE-signed with Ed25519.
//! * [`verdict`]: whether several runs of a job built identical artifacts.
//! * [`mask`]: secret masking of logs that arrive in chunks (the agent masks
//!   before it sends, the coordinator again before it stores).
//!
//! Pure: data types and functions over bytes, shared by every other crate of
//! the workspace and depending on none of them. No network I/O and no
//! runtime (no HTTP client or server, no async, no database); the only I/O is
//! reading the environment in [`pinfold_home`] and the signing key file in
//! [`provenance::load_or_create_key`]. Code that talks to the coordinator
//! belongs in `pinfold-client`, code that serves it in `pinfold-coordinator`.
#![deny(missing_docs)]

pub mod escape;
pub mod job;
pub mod mask;
pub mod provenance;
pub mod units;
pub mod verdict;
pub mod wire;

pub use job::{JobSpec, JobSpecError};

use std::path::PathBuf;

/// pinfold's state directory: `$PINFOLD_HOME`, else `$XDG_DATA_HOME/pinfold`,
/// else `~/.local/share/pinfold`. `None` only when no home can be found.
///
/// The one definition: the sandbox re-exports it, and the coordinator (which
/// never depends on the sandbox) uses it from here.
pub fn pinfold_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("PINFOLD_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(x).join("pinfold"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/pinfold"))
}

/// Milliseconds since the Unix epoch (0 before it). The one clock the
/// coordinator and the agent stamp jobs, steps and leases with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// True when `s` is 64 lowercase hex digits (a sha256 in hex).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
