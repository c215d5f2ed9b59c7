//! pinfold-sandbox: everything in pinfold that touches the kernel.
//!
//! * [`policy`]: the [`Policy`] type, loaded from TOML.
//! * [`allowlist`]: the destinations of network mode `allowlist`.
//! * [`net`]: address classification and the host's own network.
//! * [`image`]: the OCI image store (pull, import, verify, unpack, cache).
//! * [`container`]: a rootless container (user, mount, pid, ipc, uts, cgroup
//!   and net namespaces; overlay rootfs; Landlock; seccomp; rlimits) that runs
//!   one command and reports how it ended.
//!
//! [`container::run`] forks, so it must be called from a single-threaded
//! process (the `pinfold exec` binary). Multi-threaded callers (the agent)
//! spawn `pinfold exec` instead.
#![deny(missing_docs)]

pub mod allowlist;
pub mod container;
pub mod doctor;
pub mod image;
pub mod net;
pub mod policy;

pub use container::{ContainerSpec, Outcome};
pub use policy::Policy;

use std::path::PathBuf;

/// pinfold's state directory: `$PINFOLD_HOME`, else `$XDG_DATA_HOME/pinfold`,
/// else `~/.local/share/pinfold`. `None` only when no home can be found.
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
