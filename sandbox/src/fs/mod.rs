//! File system helpers shared by the image store, the container setup and
//! the agent.
//!
//! * [`beneath`]: the one openat2(2) helper: opening and creating paths
//!   under a directory fd without leaving it.
//! * [`remove`]: removing a tree without following symlinks.
//! * `mount`: making a new mount namespace's mounts private.

pub mod beneath;
pub(crate) mod mount;
pub mod remove;
