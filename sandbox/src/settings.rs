//! [`Settings`]: what the `pinfold` binary read from its environment for
//! this crate. The library reads no environment variable: the binary reads
//! each one once and hands the values down in this struct.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Paths and settings from the caller's environment. [`Default`] is an
/// empty environment (no home, no `PATH`, the host platform, no auth file).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// pinfold's state directory (`$PINFOLD_HOME`, else
    /// `$XDG_DATA_HOME/pinfold`, else `~/.local/share/pinfold`); `None`
    /// when no home can be found.
    pub home: Option<PathBuf>,
    /// `$PINFOLD_POLICY_PATH`: directories searched first for a policy by
    /// name, in order.
    pub policy_path: Vec<PathBuf>,
    /// `$PATH` (`None`: unset), searched for helper programs.
    pub path: Option<OsString>,
    /// `$PINFOLD_ROOT_IDMAP` (`start:count`), the range root maps containers onto.
    pub root_idmap: Option<String>,
    /// `$PINFOLD_PLATFORM` (`os/arch[/variant]`): the platform images are
    /// pulled for instead of the host's.
    pub platform: Option<String>,
    /// The registry credential files, in the order they are searched.
    pub registry_auth_files: Vec<PathBuf>,
    /// `$TERM`, handed on to the container's command.
    pub term: Option<String>,
    /// Where `pinfold doctor` reads sysctls (`None`: `/proc/sys`); a test
    /// points it at a directory of its own files.
    pub proc_sys: Option<PathBuf>,
}

impl Settings {
    /// The directories searched for policies by name, in order (the built-in
    /// set comes last): [`Settings::policy_path`], `<home>/policies`,
    /// `/etc/pinfold/policies`.
    pub fn policy_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.policy_path.clone();
        if let Some(home) = &self.home {
            dirs.push(home.join("policies"));
        }
        dirs.push(PathBuf::from("/etc/pinfold/policies"));
        dirs
    }

    /// The first `prog` found in [`Settings::path`], or in `default` when
    /// `PATH` is unset.
    pub fn which(&self, prog: &str, default: &str) -> Option<PathBuf> {
        let path = self.path.clone().unwrap_or_else(|| default.into());
        std::env::split_paths(&path)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    }

    /// The file of sysctl `name` (`kernel/unprivileged_userns_clone`)
    /// under [`Settings::proc_sys`].
    pub fn sysctl_path(&self, name: &str) -> PathBuf {
        self.proc_sys
            .as_deref()
            .unwrap_or(Path::new("/proc/sys"))
            .join(name)
    }

    /// The directory of cached seccomp filters, when there is a home.
    pub fn seccomp_cache(&self) -> Option<PathBuf> {
        self.home.as_deref().map(|h| h.join("cache/seccomp"))
    }

    /// The image store's directory, when there is a home.
    pub fn image_store(&self) -> Option<PathBuf> {
        self.home.as_deref().map(|h| Path::new(h).join("images"))
    }
}
