//! The environment the libraries do not read. What the sandbox needs
//! (pinfold's home, the policy path, the id map, ...) is read by
//! [`pinfold_exec::env`], which `pinfold-exec` shares; the runner's own is
//! read here.

pub use pinfold_exec::env::{pinfold_home, settings};

/// What the runner (`pinfold run`, `agent`, `verify`) needs from this
/// process's environment: the variables its steps keep, `PINFOLD_USERNS`.
pub fn host() -> pinfold_agent::runner::HostEnv {
    pinfold_agent::runner::HostEnv::from_vars(|k| std::env::var_os(k))
}
