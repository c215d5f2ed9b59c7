//! File system helpers shared by the image store, the container setup and
//! the agent.
//!
//! * [`beneath`]: the one openat2(2) helper: opening and creating paths
//!   under a directory fd without leaving it.
//! * [`remove`]: removing a tree without following symlinks.

pub mod beneath;
pub mod remove;
