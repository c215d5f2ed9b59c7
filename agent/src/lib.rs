//! pinfold-agent: runs jobs.
//!
//! * [`runner`]: the core both commands share: image, per-job directory,
//!   safe source unpack, one `pinfold exec` child per step (planned, pure,
//!   in `runner::plan`), artifacts.
//! * [`log`]: the job's output stream, masked, teed to a terminal or a spool file.
//! * [`source`]: packing a directory as a source tar and unpacking one safely.
//! * [`artifacts`]: glob matching and opening under the workspace without
//!   following symlinks.
//! * [`agent`]: the runner agent loop against a coordinator (`pinfold agent`):
//!   identity, job loop, heartbeat, log and artifact shipping.
//! * [`provenance`]: the in-toto/SLSA statement of a run, built once for
//!   the agent, `pinfold run` and `pinfold verify`, and the runner key.
//! * [`signals`]: SIGTERM/SIGINT as a flag.
//! * [`reproduce`]: `pinfold verify`: runs with variations, compared, bisected.
//! * [`shell`]: `pinfold shell {0}`, a custom `shell:` for Actions steps:
//!   what it binds and passes in.
//! * [`gitlab`]: GitLab Runner's Custom executor (`pinfold gitlab-driver`):
//!   stage kinds, the config answer, the job's state between stages.
//! * [`gha`]: GitHub Actions runner container hooks (`pinfold gha-hook`):
//!   the runner's JSON, what is refused, the mounts, a step's command.
//! * [`hosted`]: ids of the jobs those two keep between calls.
//!
//! Depends on `pinfold-api`, `pinfold-client` (to reach a coordinator) and
//! `pinfold-sandbox` (the image store, the ceiling, the job file system).
//! It may not depend on `pinfold-coordinator`: a runner host never links
//! the server (axum, SQLite), and `tests/run.sh` fails the build if it
//! does. It reads no environment variable: the binary passes
//! [`runner::HostEnv`] and the sandbox's settings down. The layout and its
//! directions: `docs/architecture.md`.
#![deny(missing_docs)]

pub mod agent;
pub mod artifacts;
pub mod gha;
pub mod gitlab;
pub mod hosted;
pub mod log;
pub mod provenance;
pub mod reproduce;
pub mod runner;
pub mod shell;
pub mod signals;
pub mod source;
