//! pinfold-sandbox: everything in pinfold that touches the kernel.
//!
//! * [`policy`]: the [`Policy`] type, loaded from TOML.
//! * [`ceiling`]: the policies a runner's operator allows, and how far a job
//!   may narrow them.
//! * [`net`]: the network policy's home: the effective mode, the allowlist
//!   (parsed once), the proxy, pasta, the network namespace, and the
//!   address ranges.
//! * [`fs`]: the one openat2 helper (opening paths beneath a directory fd),
//!   and removing a tree without following symlinks.
//! * [`image`]: the OCI image store (pull, import, verify, unpack, cache).
//! * [`kernel`]: what a policy needs from the kernel and what it degrades
//!   (a pure decision over the probed features).
//! * [`settings`]: what the binary read from the environment (the library reads none).
//! * [`container`]: a rootless container (user, mount, pid, ipc, uts, cgroup
//!   and net namespaces; overlay rootfs; Landlock; seccomp; rlimits) that runs
//!   one command and reports how it ended.
//!
//! [`container::run`] forks, so it must be called from a single-threaded
//! process (the `pinfold exec` binary). Multi-threaded callers (the agent)
//! spawn `pinfold exec` instead.
//!
//! Depends on `pinfold-api` only, for the types it shares with job files
//! (`NetworkMode`, the job's limits and units). It may not depend on
//! `pinfold-client`, `pinfold-coordinator` or `pinfold-agent`, and reads no
//! environment variable: the binary fills [`Settings`]. Inside, `net/`
//! never imports `container/`. The layout, its directions and the
//! container's setup sequence: `docs/architecture.md`.
#![deny(missing_docs)]

pub mod ceiling;
pub mod container;
pub mod doctor;
pub mod fs;
pub mod image;
pub mod kernel;
pub mod net;
pub mod policy;
pub mod settings;

pub use container::{ContainerSpec, Outcome};
pub use policy::Policy;
pub use settings::Settings;
