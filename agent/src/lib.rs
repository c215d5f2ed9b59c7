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
#![deny(missing_docs)]

pub mod agent;
pub mod artifacts;
pub mod log;
pub mod provenance;
pub mod reproduce;
pub mod runner;
pub mod signals;
pub mod source;
