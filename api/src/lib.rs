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
//! the workspace and depending on none of them. No file or network I/O, no
//! runtime (no HTTP client or server, no async, no database) and no
//! environment variable read: the runner key's file lives in
//! `pinfold-agent`, code that talks to the coordinator in `pinfold-client`,
//! code that serves it in `pinfold-coordinator`. The layout and its
//! directions: `docs/architecture.md`.
#![deny(missing_docs)]

pub mod escape;
pub mod job;
pub mod mask;
pub mod provenance;
pub mod units;
pub mod verdict;
pub mod wire;

pub use job::{JobSpec, JobSpecError};

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
