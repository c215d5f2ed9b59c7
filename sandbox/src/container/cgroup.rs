//! Where pinfold sits in cgroup v2: whether this process may give its
//! containers cgroups of their own ([`detect`]), and, for a process that
//! starts many `pinfold exec` children (the runner of `pinfold run`,
//! `pinfold verify` and `pinfold agent`), a cgroup of their own for each
//! ([`Children`]).
//!
//! cgroup v2's "no internal processes" rule: controllers can be enabled for
//! a cgroup's children only while the cgroup itself holds no process. So a
//! delegated cgroup (a systemd unit with `Delegate=yes`, a user-manager
//! scope made with `systemd-run --user --scope -p Delegate=yes`) works for
//! `pinfold exec` only when exec is alone in it: exec then moves itself
//! into a leaf and enables the controllers above it (`limits::Watcher`).
//! When it shares the cgroup with its parent (a shell, the agent), it
//! cannot, and [`detect`] says so instead of failing later with EBUSY.
//!
//! A runner therefore moves itself, once, into the leaf `DIR/supervisor`,
//! enables memory, pids and cpu in `DIR`, and starts each step in a fresh
//! `DIR/step-<pid>-<n>`, in which that step's `pinfold exec` is alone. When
//! the step has ended, the runner kills what is left in it
//! (`cgroup.kill`) and removes it, so nothing is left behind. systemd 252
//! (Debian 12) has no `DelegateSubgroup=`, which would do the first move
//! for us.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

/// Errors of the cgroup set-up (they make a run fall back, never fail).
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or directory could not be written or made.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Which mechanism enforces memory, pids and CPU time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// A delegated cgroup v2 directory (the caller's own cgroup).
    Cgroup(PathBuf),
    /// rlimits plus the supervisor; the text says why cgroup v2 is not used.
    Fallback(String),
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mechanism::Cgroup(dir) => write!(f, "cgroup v2 ({})", dir.display()),
            Mechanism::Fallback(why) => {
                write!(f, "fallback: rlimits + pid-namespace supervisor ({why})")
            }
        }
    }
}

impl Mechanism {
    /// A short name for scripts: `cgroup-v2` or `fallback`.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::Cgroup(_) => "cgroup-v2",
            Mechanism::Fallback(_) => "fallback",
        }
    }
}

pub(crate) fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Io {
        path: path.to_owned(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The controllers pinfold's limits need.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The caller's cgroup v2 directory, if the unified hierarchy is mounted
/// (at /sys/fs/cgroup, or at /sys/fs/cgroup/unified on hybrid hosts).
pub fn own_cgroup() -> Option<PathBuf> {
    let line = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = line.lines().find_map(|l| l.strip_prefix("0::"))?;
    let base = unified_root()?;
    Some(base.join(rel.trim_start_matches('/')))
}

/// Where the unified hierarchy is mounted, if it is.
fn unified_root() -> Option<PathBuf> {
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if Path::new(base).join("cgroup.procs").exists() {
            let fs_type = nix::sys::statfs::statfs(base).ok()?.filesystem_type();
            if fs_type == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
                return Some(PathBuf::from(base));
            }
        }
    }
    None
}

/// Whether `/sys/fs/cgroup` itself is the unified hierarchy (not hybrid).
pub fn unified_only() -> bool {
    unified_root().is_some_and(|b| b == Path::new("/sys/fs/cgroup"))
}

/// The controllers `dir` lacks of [`CONTROLLERS`].
fn missing_controllers(dir: &Path) -> Vec<&'static str> {
    let available = read_trim(&dir.join("cgroup.controllers")).unwrap_or_default();
    CONTROLLERS
        .into_iter()
        .filter(|c| !available.split_whitespace().any(|x| x == *c))
        .collect()
}

fn writable(dir: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    ["cgroup.procs", "cgroup.subtree_control"]
        .iter()
        .all(|f| access(&dir.join(f), AccessFlags::W_OK).is_ok())
        && access(dir, AccessFlags::W_OK).is_ok()
}

/// The processes in `dir` other than this one and `also`.
fn others_in(dir: &Path, also: &[u32]) -> usize {
    let me = std::process::id();
    read_trim(&dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.trim()
                .parse::<u32>()
                .is_ok_and(|p| p != me && !also.contains(&p))
        })
        .count()
}

/// Decides the mechanism for a container this process starts: cgroup v2
/// when its own cgroup is on the unified hierarchy, has memory, pids and
/// cpu, is writable, and holds no other process (see the module docs).
pub fn detect() -> Mechanism {
    detect_with(&[])
}

/// [`detect`] for a container already cloned: its init (`also`), not yet
/// moved, is in the cgroup too.
pub(crate) fn detect_with(also: &[u32]) -> Mechanism {
    let Some(dir) = own_cgroup() else {
        return Mechanism::Fallback("no cgroup v2 hierarchy is mounted".into());
    };
    let missing = missing_controllers(&dir);
    if !missing.is_empty() {
        return Mechanism::Fallback(format!(
            "{} lacks the {} controller(s): they are not delegated to it (or the host is hybrid or v1)",
            dir.display(),
            missing.join(", ")
        ));
    }
    if !writable(&dir) {
        return Mechanism::Fallback(format!(
            "{} is not writable by this user: cgroups are not delegated",
            dir.display()
        ));
    }
    let others = others_in(&dir, also);
    if others > 0 {
        return Mechanism::Fallback(format!(
            "{} is delegated but holds {others} other process(es), and cgroup v2 lets pinfold enable controllers for its containers only in a cgroup it is alone in: start pinfold exec alone in its cgroup (`systemd-run --user --scope -p Delegate=yes pinfold exec ...`, or a unit with Delegate=yes whose main process is pinfold), or through pinfold run/agent, which give each step a cgroup of its own",
            dir.display()
        ));
    }
    Mechanism::Cgroup(dir)
}

/// Enables [`CONTROLLERS`] for the children of `cg` (those not yet on).
pub(crate) fn enable_controllers(cg: &Path) -> Result<(), CgroupError> {
    let enabled = read_trim(&cg.join("cgroup.subtree_control")).unwrap_or_default();
    let want: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|x| x == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if want.is_empty() {
        return Ok(());
    }
    write_file(&cg.join("cgroup.subtree_control"), &want.join(" "))
}

/// Kills every process in `cg` and below (`cgroup.kill`, Linux 5.14) and
/// removes the cgroups, deepest first. Best effort: a cgroup whose
/// processes are still dying is retried for up to about a second.
pub(crate) fn kill_and_remove(cg: &Path) {
    let _ = std::fs::write(cg.join("cgroup.kill"), "1");
    for _ in 0..500 {
        if remove_tree(cg) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    tracing::warn!(cgroup = %cg.display(), "a cgroup could not be removed (processes still in it)");
}

/// rmdir of `cg`'s sub-cgroups and then `cg`; whether `cg` is gone (a
/// cgroup with processes stays).
pub(crate) fn remove_tree(cg: &Path) -> bool {
    if let Ok(entries) = std::fs::read_dir(cg) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    std::fs::remove_dir(cg).is_ok() || !cg.exists()
}

/// A runner's delegated cgroup, prepared to give each step a cgroup of its
/// own (see the module docs).
#[derive(Debug)]
pub struct Children {
    dir: PathBuf,
    next: AtomicU64,
}

/// One step's cgroup: the child is moved into it between fork and exec
/// ([`StepCgroup::enter`]); dropping it kills what is left in it and
/// removes it.
#[derive(Debug)]
pub struct StepCgroup {
    path: PathBuf,
    procs: OwnedFd,
}

static CHILDREN: OnceLock<Result<Children, String>> = OnceLock::new();

impl Children {
    /// This process's cgroup prepared for children: on the first call this
    /// process moves into `DIR/supervisor` and enables the controllers in
    /// `DIR`. `Err` (the reason) when the cgroup is not delegated to this
    /// process alone; the steps then run where this process is, and their
    /// `pinfold exec` picks its own mechanism as usual. Call it before this
    /// process starts any child that lives on, as those would stay in
    /// `DIR` and keep the controllers from being enabled.
    pub fn get() -> Result<&'static Children, &'static str> {
        CHILDREN
            .get_or_init(Children::prepare)
            .as_ref()
            .map_err(|e| e.as_str())
    }

    fn prepare() -> Result<Children, String> {
        let dir = match detect() {
            Mechanism::Cgroup(dir) => dir,
            Mechanism::Fallback(why) => return Err(why),
        };
        let supervisor = dir.join("supervisor");
        let setup = || -> Result<(), CgroupError> {
            mkdir(&supervisor)?;
            write_file(&supervisor.join("cgroup.procs"), "0")?;
            enable_controllers(&dir)
        };
        if let Err(e) = setup() {
            // Back where it came from (allowed while DIR has no
            // controllers enabled, which is the case when enabling failed).
            let _ = std::fs::write(dir.join("cgroup.procs"), "0");
            let _ = std::fs::remove_dir(&supervisor);
            return Err(e.to_string());
        }
        // Steps of an earlier runner in this cgroup that are gone.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("step-") {
                    kill_and_remove(&e.path());
                }
            }
        }
        tracing::debug!(cgroup = %dir.display(), "each step gets a cgroup of its own");
        Ok(Children {
            dir,
            next: AtomicU64::new(0),
        })
    }

    /// A fresh, empty cgroup for one step.
    pub fn step(&self) -> Result<StepCgroup, CgroupError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("step-{}-{n}", std::process::id()));
        mkdir(&path)?;
        let procs = path.join("cgroup.procs");
        match open(&procs, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(procs) => Ok(StepCgroup { path, procs }),
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                Err(CgroupError::Io {
                    path: procs,
                    source: e.into(),
                })
            }
        }
    }
}

impl StepCgroup {
    /// Moves the calling process into this cgroup. Async-signal-safe (one
    /// write(2) to a descriptor opened beforehand): meant for the child
    /// between fork and exec.
    pub fn enter(&self) -> std::io::Result<()> {
        nix::unistd::write(self.procs.as_fd(), b"0")
            .map(|_| ())
            .map_err(std::io::Error::from)
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        kill_and_remove(&self.path);
    }
}

/// The controllers the user manager of `uid` (`user@UID.service`) has, or
/// `None` when there is none on the unified hierarchy. `pinfold doctor`
/// uses it to tell a missing delegation from a missing scope.
pub fn user_manager_controllers(uid: u32) -> Option<Vec<String>> {
    let base = unified_root()?;
    let dir = base.join(format!("user.slice/user-{uid}.slice/user@{uid}.service"));
    let text = read_trim(&dir.join("cgroup.controllers"))?;
    Some(text.split_whitespace().map(str::to_owned).collect())
}

/// The drop-in that delegates the controllers to every user manager, as
/// runc's and podman's documentation give it.
pub const USER_DELEGATE_DROP_IN: &str = "sudo mkdir -p /etc/systemd/system/user@.service.d && printf '[Service]\\nDelegate=cpu cpuset io memory pids\\n' | sudo tee /etc/systemd/system/user@.service.d/delegate.conf && sudo systemctl daemon-reload (then log in again)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_processes_are_counted_and_self_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        std::fs::write(dir.path().join("cgroup.procs"), format!("{me}\n")).unwrap();
        assert_eq!(others_in(dir.path(), &[]), 0);
        std::fs::write(dir.path().join("cgroup.procs"), format!("1\n{me}\n4242\n")).unwrap();
        assert_eq!(others_in(dir.path(), &[]), 2);
        assert_eq!(others_in(dir.path(), &[4242]), 1);
    }

    #[test]
    fn controllers_missing_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io pids\n",
        )
        .unwrap();
        assert_eq!(missing_controllers(dir.path()), vec!["memory"]);
        std::fs::write(dir.path().join("cgroup.controllers"), "memory pids cpu\n").unwrap();
        assert!(missing_controllers(dir.path()).is_empty());
    }

    #[test]
    fn a_step_tree_is_removed_deepest_first() {
        // On a plain directory tree rmdir works the same way as on cgroupfs
        // (where the files inside a cgroup need no removal): an empty tree goes.
        let dir = tempfile::tempdir().unwrap();
        let step = dir.path().join("step-1-0");
        std::fs::create_dir_all(step.join("pinfold-7/exec")).unwrap();
        std::fs::create_dir_all(step.join("pinfold-7/job")).unwrap();
        assert!(remove_tree(&step));
        assert!(!step.exists());
    }
}
