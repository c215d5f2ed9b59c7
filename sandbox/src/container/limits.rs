//! Container-wide resource limits: memory, tasks (pids), CPU time, and the
//! disks (the writable layer and /tmp tmpfs), with the limit that ended a
//! run named.
//!
//! Two mechanisms, chosen per run by `cgroup::detect`:
//!
//! * **cgroup v2**, when the caller's own cgroup is on the unified hierarchy,
//!   has the memory, pids and cpu controllers, is writable by the caller
//!   (a systemd unit with `Delegate=yes`, or a user session with delegation)
//!   and holds no other process (a runner gives each step's exec a cgroup of
//!   its own: `cgroup::Children`).
//!   The parent moves itself into a leaf and creates a sibling cgroup per
//!   run (see `Watcher::make_cgroup`), sets `memory.max`,
//!   `memory.swap.max = 0`, `memory.oom.group = 1` and `pids.max`, moves the
//!   container's init into it before releasing it, reads `memory.events`
//!   (`oom_kill`), `pids.events` (`max`) and `cpu.stat` (`usage_usec`) to
//!   name the limit, and tears it down with `cgroup.kill`.
//! * **fallback** everywhere else (cgroup v1 or hybrid hosts, no delegation):
//!   the job's rlimits (RLIMIT_NPROC = `pids`, RLIMIT_CPU = `cpu_time` + 2 s
//!   per process as a backstop) plus a supervisor in the parent that reads
//!   the container's own procfs every [`POLL`] (less often for a container
//!   with many processes: at most ~2% of a core), and kills the whole container (SIGKILL to its PID 1 takes
//!   every process with it) when their task count reaches `pids`, their
//!   memory (private memory, shmem objects and tmpfs files, see
//!   `container::memory`) exceeds `memory`, or their summed CPU time (including
//!   reaped children's) exceeds `cpu_time`. Polling means a fast allocator
//!   can overshoot `memory` by what it touches in one interval; file page
//!   cache and kernel memory are not counted (cgroup v2 counts both).
//!
//! RLIMIT_NPROC is counted by the kernel per (user namespace, uid) and checked
//! up the namespace chain: in the container's fresh user namespace it is a
//! per-container, per-uid process cap, which is why it serves as the
//! kernel-enforced backstop of `pids` (a fork bomb cannot outrun the poll).
//!
//! Disks are checked the same way in both mechanisms: after a failed
//! command, init (still in the container's mount namespace, before the
//! mounts go) checks with statvfs whether the writable layer (when it is the
//! policy-sized tmpfs) or /tmp is full, and reports it with the exit status.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use super::cgroup::{
    CgroupError, Mechanism, detect_with, enable_controllers, kill_and_remove, read_trim,
    remove_tree, write_file,
};
use super::memory::{Charge, Shmem};
use crate::policy::{ByteSize, Policy};

/// How often the fallback supervisor (and the cgroup event reader) looks at
/// most: every 10 ms, or 50 times as long as the last look took (so it
/// spends at most ~2% of a core), up to [`MAX_POLL`].
pub const POLL: Duration = Duration::from_millis(10);
/// The longest interval between two looks.
pub const MAX_POLL: Duration = Duration::from_millis(500);
const DUTY: u32 = 50;
/// The most processes one walk of the container's process tree collects.
const MAX_WALK: usize = 1 << 16;

/// The exit status `pinfold exec` reports when a resource limit ended the run.
pub const EXIT_LIMIT: i32 = 123;

/// `limits.require_cgroup`: the one-line refusal when the limits would be
/// enforced by the fallback.
pub fn refuse_fallback(policy: &Policy, mechanism: &Mechanism) -> Option<String> {
    match mechanism {
        Mechanism::Fallback(why) if policy.limits.require_cgroup => Some(format!(
            "the policy requires cgroup v2 limits (limits.require_cgroup) but {why}; run pinfold in a systemd unit with Delegate=yes on a cgroup v2 host, or use a policy without require_cgroup (the fallback does not charge {})",
            super::memory::UNCHARGED
        )),
        _ => None,
    }
}

/// A limit that ended a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    /// `limits.memory` (bytes).
    Memory(u64),
    /// `limits.pids` (tasks).
    Pids(u64),
    /// `limits.cpu_time` (seconds).
    CpuTime(u64),
    /// `filesystem.writable_layer_size` (bytes): the rootfs's writable layer is full.
    WritableLayer(u64),
    /// `filesystem.workspace_size` (bytes): the job's workspace is full.
    Workspace(u64),
    /// `filesystem.tmp_size` (bytes): /tmp is full.
    Tmp(u64),
}

impl Breach {
    /// The policy field that sets the limit.
    pub fn field(&self) -> &'static str {
        match self {
            Breach::Memory(_) => "limits.memory",
            Breach::Pids(_) => "limits.pids",
            Breach::CpuTime(_) => "limits.cpu_time",
            Breach::WritableLayer(_) => "filesystem.writable_layer_size",
            Breach::Workspace(_) => "filesystem.workspace_size",
            Breach::Tmp(_) => "filesystem.tmp_size",
        }
    }

    /// A short name for scripts.
    pub fn name(&self) -> &'static str {
        match self {
            Breach::Memory(_) => "memory",
            Breach::Pids(_) => "pids",
            Breach::CpuTime(_) => "cpu_time",
            Breach::WritableLayer(_) => "writable_layer",
            Breach::Workspace(_) => "workspace",
            Breach::Tmp(_) => "tmp",
        }
    }

    /// The one-line reason `pinfold exec` prints (after `pinfold: `).
    pub fn reason(&self) -> String {
        match *self {
            Breach::Memory(b) => format!(
                "job killed: memory limit {} exceeded (policy {}); raise it in the policy or reduce the build's memory",
                ByteSize(b),
                self.field()
            ),
            Breach::Pids(n) => format!(
                "job killed: pids limit {n} reached (policy {}); raise it in the policy or run fewer processes and threads",
                self.field()
            ),
            Breach::CpuTime(s) => format!(
                "job killed: CPU time limit {} exceeded (policy {}); raise it in the policy or make the build cheaper",
                crate::policy::Seconds(s),
                self.field()
            ),
            Breach::WritableLayer(b) | Breach::Workspace(b) | Breach::Tmp(b) => {
                let disk = match self {
                    Breach::WritableLayer(_) => "the writable layer",
                    Breach::Workspace(_) => "the workspace",
                    _ => "/tmp",
                };
                format!(
                    "job failed: disk limit reached: {disk} is full ({}, policy {}); raise it in the policy or write less",
                    ByteSize(b),
                    self.field()
                )
            }
        }
    }
}

/// One run's limits: the cgroup or the fallback supervisor, plus the disks.
pub(crate) struct Watcher {
    memory: u64,
    pids: u64,
    cpu_secs: u64,
    mechanism: Mechanism,
    cgroup: Option<PathBuf>,
    init: Pid,
    /// The container's own /proc (its pid namespace's procfs), once found.
    proc: Option<OwnedFd>,
    /// The container paths of its tmpfs mounts, opened into `shmem` once a
    /// job process shows the container's root.
    tmpfs: Vec<PathBuf>,
    shmem: Shmem,
    /// `FULL_*` bits init reported.
    full: u32,
    tmp_size: u64,
    layer_size: u64,
    workspace_size: u64,
    next: Instant,
    clk_tck: u64,
    page: u64,
}

impl Watcher {
    /// Sets the limits up for the container whose init is `init` (cloned,
    /// not yet released); `tmpfs`: its tmpfs mount points
    /// (`memory::tmpfs_paths`), charged to `memory` in the fallback.
    pub(crate) fn start(policy: &Policy, init: Pid, tmpfs: Vec<PathBuf>) -> Watcher {
        let l = &policy.limits;
        let active = l.memory.0 != 0 || l.pids != 0 || l.cpu_time.0 != 0;
        let mut w = Watcher {
            memory: l.memory.0,
            pids: l.pids,
            cpu_secs: l.cpu_time.0,
            mechanism: Mechanism::Fallback("no container-wide limit is set".into()),
            cgroup: None,
            init,
            proc: None,
            shmem: Shmem::new(),
            tmpfs: if l.memory.0 != 0 { tmpfs } else { Vec::new() },
            full: 0,
            tmp_size: policy.filesystem.tmp_size.0,
            layer_size: policy.filesystem.writable_layer_size.0,
            workspace_size: policy.filesystem.workspace_size.0,
            next: Instant::now() + POLL,
            clk_tck: nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .ok()
                .flatten()
                .unwrap_or(100) as u64,
            page: nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
                .ok()
                .flatten()
                .unwrap_or(4096) as u64,
        };
        if !active {
            return w;
        }
        w.mechanism = detect_with(&[init.as_raw() as u32]);
        if let Mechanism::Cgroup(dir) = &w.mechanism {
            match w.make_cgroup(dir) {
                Ok(cg) => w.cgroup = Some(cg),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot use the delegated cgroup; falling back");
                    w.mechanism = Mechanism::Fallback(format!("cgroup set-up failed: {e}"));
                }
            }
        }
        tracing::debug!(mechanism = %w.mechanism, memory = w.memory, pids = w.pids, cpu_secs = w.cpu_secs, "resource limits");
        w
    }

    /// Builds `DIR/pinfold-<this pid>/{exec,job}`: this process moves into
    /// `exec`, the container's init into `job`, which carries the limits.
    ///
    /// cgroup v2's no-internal-process rule: controllers can be enabled for
    /// children only in a cgroup without processes of its own. So this
    /// process first leaves DIR (for `exec`), then enables memory, pids and
    /// cpu in DIR and in `pinfold-<pid>`. That works when pinfold was alone
    /// in its delegated cgroup (`systemd-run --user -p Delegate=yes`, a
    /// unit with `Delegate=yes`) or DIR has the controllers enabled already;
    /// otherwise the caller gets the error and the run falls back.
    fn make_cgroup(&self, dir: &Path) -> Result<PathBuf, CgroupError> {
        let me = std::process::id();
        collect_stale(dir);
        let base = dir.join(format!("pinfold-{me}"));
        let (exec, job) = (base.join("exec"), base.join("job"));
        let setup = || -> Result<(), CgroupError> {
            for p in [&exec, &job] {
                std::fs::create_dir_all(p).map_err(|source| CgroupError::Io {
                    path: p.to_path_buf(),
                    source,
                })?;
            }
            // Both out of DIR first (the init is not released yet), so
            // that DIR and pinfold-<pid> hold no process of their own.
            write_file(&exec.join("cgroup.procs"), "0")?;
            write_file(&job.join("cgroup.procs"), &self.init.to_string())?;
            enable_controllers(dir)?;
            enable_controllers(&base)?;
            if self.memory != 0 {
                write_file(&job.join("memory.max"), &self.memory.to_string())?;
                write_file(&job.join("memory.swap.max"), "0")?;
                write_file(&job.join("memory.oom.group"), "1")?;
            }
            if self.pids != 0 {
                write_file(&job.join("pids.max"), &self.pids.to_string())?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            // Back where we came from (allowed while DIR has no controllers
            // enabled, which is the case when enabling them failed).
            let _ = std::fs::write(dir.join("cgroup.procs"), "0");
            let _ = std::fs::write(dir.join("cgroup.procs"), self.init.to_string());
            remove_tree(&base);
            return Err(e);
        }
        Ok(job)
    }

    /// The mechanism in use.
    pub(crate) fn mechanism(&self) -> &Mechanism {
        &self.mechanism
    }

    /// Records the full disks init reported.
    pub(crate) fn set_full_disks(&mut self, full: u32) {
        self.full = full;
    }

    /// When the next check is due (None: nothing to poll).
    pub(crate) fn next_check(&self) -> Option<Instant> {
        (self.memory != 0 || self.pids != 0 || self.cpu_secs != 0).then_some(self.next)
    }

    /// Checks the limits if a check is due; a breach means: kill the container.
    pub(crate) fn poll(&mut self) -> Option<Breach> {
        let now = Instant::now();
        if self.next_check().is_none_or(|n| now < n) {
            return None;
        }
        let breach = match &self.cgroup {
            Some(cg) => self.check_cgroup(&cg.clone()),
            None => self.check_namespace(),
        };
        // A duty cycle of at most 1/DUTY: a container with many processes
        // is sampled less often rather than costing more.
        let spent = now.elapsed();
        self.next = Instant::now() + (spent * DUTY).clamp(POLL, MAX_POLL);
        breach
    }

    fn check_cgroup(&self, cg: &Path) -> Option<Breach> {
        let events = |file: &str, key: &str| -> u64 {
            read_trim(&cg.join(file))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                .unwrap_or(0)
        };
        if self.memory != 0 && events("memory.events", "oom_kill ") > 0 {
            return Some(Breach::Memory(self.memory));
        }
        // pids.max is rarely what refuses the fork: RLIMIT_NPROC (= pids,
        // the kernel-enforced backstop set in every mechanism) is checked
        // first in fork, so the cgroup's task count at the limit names it too.
        let current = read_trim(&cg.join("pids.current")).and_then(|v| v.parse::<u64>().ok());
        if self.pids != 0
            && (events("pids.events", "max ") > 0 || current.is_some_and(|c| c >= self.pids))
        {
            return Some(Breach::Pids(self.pids));
        }
        if self.cpu_secs != 0 && events("cpu.stat", "usage_usec ") > self.cpu_secs * 1_000_000 {
            return Some(Breach::CpuTime(self.cpu_secs));
        }
        None
    }

    /// The fallback: every process of the container's pid namespace.
    fn check_namespace(&mut self) -> Option<Breach> {
        // Two passes: tasks and CPU time from each stat first, which is
        // cheap, then memory (each process's maps), which is not. A fork
        // bomb that starves this process (a slow or loaded machine: under
        // qemu's emulation one full look took seconds) is named by the
        // first pass without waiting for the second.
        let mut dirs: Vec<(String, bool)> = Vec::new();
        if self.proc.is_none() {
            let members = self.members_on_host();
            // The container's own procfs lists exactly its processes, so a
            // scan costs what the container holds, not what the host runs.
            // It is opened through a job process: not init (non-dumpable,
            // its memory belongs to the host's user namespace), but any
            // process exec'd inside the container's user namespace, which
            // the caller owns (so even a non-dumpable one is readable).
            // /proc/PID/root resolves inside the container's root.
            for &pid in members.iter().filter(|p| **p != self.init.as_raw()) {
                let path = format!("/proc/{pid}/root/proc");
                if let Ok(fd) = open(
                    path.as_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    tracing::debug!(%path, "watching the container's processes");
                    self.proc = Some(fd);
                    self.shmem
                        .open_mounts(&format!("/proc/{pid}/root"), &self.tmpfs);
                    break;
                }
            }
            if self.proc.is_none() {
                for pid in members {
                    dirs.push((format!("/proc/{pid}"), pid == self.init.as_raw()));
                }
            }
        }
        if let Some(fd) = &self.proc {
            let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
            for pid in pids_in(&proc) {
                // Init (PID 1) is pinfold's: its reaped orphans' CPU time
                // counts, its own memory and CPU do not.
                dirs.push((format!("{proc}/{pid}"), pid == 1));
            }
        }
        // Each process is at least one task: a count of processes at the
        // limit needs no stat at all.
        if self.pids != 0 && dirs.len() as u64 >= self.pids {
            return Some(Breach::Pids(self.pids));
        }
        let mut totals = Totals::default();
        for (dir, init) in &dirs {
            totals.add(dir, *init);
        }
        tracing::trace!(
            tasks = totals.tasks,
            ticks = totals.ticks,
            found = self.proc.is_some(),
            "fallback look"
        );
        if self.pids != 0 && totals.tasks >= self.pids {
            return Some(Breach::Pids(self.pids));
        }
        if self.cpu_secs != 0 && totals.ticks > self.cpu_secs * self.clk_tck {
            return Some(Breach::CpuTime(self.cpu_secs));
        }
        if self.memory != 0 {
            let mut charge = Charge::default();
            for (dir, _) in dirs.iter().filter(|(_, init)| !init) {
                charge.add_process(dir, self.page, &self.shmem);
            }
            let memory = charge.total(&self.shmem);
            tracing::trace!(memory, "fallback look: memory");
            if memory > self.memory {
                return Some(Breach::Memory(self.memory));
            }
        }
        None
    }

    /// The container's processes among the host's: init and its descendants
    /// (orphans are re-parented to init, PID 1 of their namespace), found by
    /// walking /proc/PID/task/TID/children down from init. That needs no
    /// ptrace access, so a process that made itself non-dumpable is still
    /// found, and it costs what the container holds, not what the host runs
    /// (a scan of every host process's stat took ~1 ms on an idle VM with
    /// 130 processes, on every poll until a job process was found).
    fn members_on_host(&self) -> Vec<i32> {
        let mut members = vec![self.init.as_raw()];
        let mut i = 0;
        // Pids are unique among live processes, so the walk is a tree; the
        // cap only bounds a walk racing with a fork bomb.
        while i < members.len() && members.len() < MAX_WALK {
            let pid = members[i];
            for tid in pids_in(&format!("/proc/{pid}/task")) {
                if let Ok(text) =
                    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))
                {
                    members.extend(
                        text.split_ascii_whitespace()
                            .filter_map(|c| c.parse::<i32>().ok()),
                    );
                }
            }
            i += 1;
        }
        members
    }

    /// After the run: a limit that explains how it ended, if any. A run
    /// that failed with a full disk names the disk; under cgroup v2 an OOM
    /// kill or a refused fork names memory or pids.
    pub(crate) fn after(&mut self, code: i32) -> Option<Breach> {
        if code == 0 {
            return None;
        }
        if let Some(cg) = &self.cgroup
            && let Some(b) = self.check_cgroup(&cg.clone())
        {
            return Some(b);
        }
        if self.full & FULL_LAYER != 0 {
            return Some(Breach::WritableLayer(self.layer_size));
        }
        if self.full & FULL_WORKSPACE != 0 {
            return Some(Breach::Workspace(self.workspace_size));
        }
        if self.full & FULL_TMP != 0 {
            return Some(Breach::Tmp(self.tmp_size));
        }
        None
    }
}

/// Init found the writable layer full.
pub(crate) const FULL_LAYER: u32 = 1;
/// Init found /tmp full.
pub(crate) const FULL_TMP: u32 = 2;

/// Init found the job's workspace full.
pub(crate) const FULL_WORKSPACE: u32 = 4;

/// Init, after a failed job, before the mounts go: which of the
/// policy-sized disks are full (`FULL_*` bits). `layer`: the rootfs's
/// writable layer is the policy-sized tmpfs (it is, unless the rootfs is
/// read-only); `workspace`: where the job file system's workspace is.
pub(crate) fn full_disks(layer: bool, workspace: Option<&Path>) -> u32 {
    let full = |path: &Path| {
        // Full: no block (or inode) left for an unprivileged writer.
        nix::sys::statvfs::statvfs(path)
            .is_ok_and(|st| st.blocks_available() == 0 || st.files_available() == 0)
    };
    let mut bits = 0;
    if layer && full(Path::new("/")) {
        bits |= FULL_LAYER;
    }
    if workspace.is_some_and(full) {
        bits |= FULL_WORKSPACE;
    }
    if full(Path::new("/tmp")) {
        bits |= FULL_TMP;
    }
    bits
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // This process's own `exec` leaf cannot go while it is in it: it
        // goes with the cgroup pinfold was started in, which its maker
        // removes once pinfold has exited (systemd a scope or unit, the
        // runner a step's cgroup, tests/vm/system/hundred.sh checks it), or
        // with a later run's `collect_stale`.
        if let Some(cg) = self.cgroup.take() {
            kill_and_remove(&cg);
        }
    }
}

/// Removes the `pinfold-<pid>` subtrees of earlier runs whose processes are
/// gone (rmdir fails on a cgroup that still has processes).
fn collect_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("pinfold-")) else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_tree(&e.path());
    }
}

/// Summed usage of a set of processes.
#[derive(Default)]
struct Totals {
    tasks: u64,
    ticks: u64,
}

impl Totals {
    /// Adds the process whose /proc directory is `dir`; `init`: count only
    /// its reaped children's CPU time (and its task).
    fn add(&mut self, dir: &str, init: bool) {
        let Some(st) = Stat::read(&format!("{dir}/stat")) else {
            return;
        };
        self.tasks += st.threads;
        self.ticks += st.children_ticks;
        if !init {
            self.ticks += st.ticks;
        }
    }
}

/// The numeric entries of a /proc directory.
fn pids_in(dir: &str) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// The fields of /proc/PID/stat the supervisor sums.
struct Stat {
    threads: u64,
    ticks: u64,
    children_ticks: u64,
}

impl Stat {
    fn read(path: &str) -> Option<Stat> {
        let text = std::fs::read_to_string(path).ok()?;
        Stat::parse(&text)
    }

    /// Fields after the command name (which may contain spaces and parens):
    /// state is field 3, utime 14, stime 15, cutime 16, cstime 17,
    /// num_threads 20 (proc(5)).
    fn parse(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| -> Option<u64> {
            f.get(i - 3)?.parse::<i64>().ok().map(|v| v.max(0) as u64)
        };
        Some(Stat {
            ticks: n(14)? + n(15)?,
            children_ticks: n(16)? + n(17)?,
            threads: n(20)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 11 2 20 0 5 0 123 4096000 250 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let st = Stat::parse(line).unwrap();
        assert_eq!(st.ticks, 10);
        assert_eq!(st.children_ticks, 13);
        assert_eq!(st.threads, 5);
    }

    #[test]
    fn reasons_name_the_field() {
        let r = Breach::Memory(256 << 20).reason();
        assert!(
            r.starts_with("job killed: memory limit 256M exceeded (policy limits.memory)"),
            "{r}"
        );
        assert!(Breach::Pids(64).reason().contains("limits.pids"));
        assert!(Breach::CpuTime(90).reason().contains("1m 30s"));
        assert!(
            Breach::Tmp(1 << 20)
                .reason()
                .contains("filesystem.tmp_size")
        );
    }

    #[test]
    fn process_tree_walk_finds_descendants() {
        // This test process stands in for the container's init: its child
        // and grandchild are members, PID 1 of the host is not.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let w = Watcher::start(
            &Policy::load("default", &[]).unwrap(),
            Pid::this(),
            Vec::new(),
        );
        let members = w.members_on_host();
        let _ = child.kill();
        let _ = child.wait();
        let me = std::process::id() as i32;
        assert!(members.contains(&me), "{members:?}");
        assert!(members.contains(&(child.id() as i32)), "{members:?}");
        assert!(members.len() >= 3, "the sleep too: {members:?}");
        assert!(!members.contains(&1), "{members:?}");
    }

    #[test]
    fn a_proc_directory_is_summed() {
        // The supervisor's scan pointed at the host's /proc (this test's
        // own pid namespace) counts this process's threads and memory.
        let mut w = Watcher::start(
            &Policy::load("default", &[]).unwrap(),
            Pid::this(),
            Vec::new(),
        );
        w.cgroup = None;
        w.proc = Some(open("/proc", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap());
        w.pids = 1;
        w.memory = 0;
        w.cpu_secs = 0;
        w.next = Instant::now();
        assert_eq!(w.poll(), Some(Breach::Pids(1)));
        w.pids = 0;
        w.memory = 4096;
        w.next = Instant::now();
        assert_eq!(w.poll(), Some(Breach::Memory(4096)));
        w.memory = u64::MAX;
        w.next = Instant::now();
        assert_eq!(w.poll(), None);
    }
}
