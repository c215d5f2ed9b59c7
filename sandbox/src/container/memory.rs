//! What the fallback supervisor charges to `limits.memory`: every page the
//! kernel holds for the job that it cannot reclaim without the job's consent
//! (there is no swap for it to go to), counted once.
//!
//! * **private memory** of each process: statm resident − shared (anonymous
//!   pages; a page shared copy-on-write after a fork is counted per process).
//! * **shmem objects** on the kernel's internal mount (`memfd_create`,
//!   `MAP_SHARED|MAP_ANONYMOUS`, SysV shm), found through each process's
//!   `/proc/PID/fd` and `/proc/PID/maps` and counted once per inode:
//!   - an object some process holds an fd to (a memfd) is charged its
//!     allocated size (`st_blocks`, through `/proc/PID/fd/N`), mapped or not;
//!   - an object only mapped (a shared anonymous mapping, a memfd whose fds
//!     are closed, an attached SysV segment) is charged the largest extent
//!     any process maps (offset + length), touched or not. Resident pages
//!     (RssShmem, smaps Pss) would not do: `madvise(MADV_DONTNEED)` drops a
//!     shared mapping's pages from the page tables while the object keeps
//!     them. The price is over-charging a large, sparsely touched shared
//!     mapping (cgroup v2 charges touched pages only).
//! * **tmpfs file systems** of the container (/tmp, /dev/shm, /dev, a tmpfs
//!   working directory, and the writable layer when it is the stage tmpfs):
//!   their used blocks (`fstatfs`), so files there and their mappings
//!   (which are on those file systems, not on the internal mount) count once.
//!
//! SysV segments that exist detached are not visible from outside the
//! container's IPC namespace: the child caps them instead (`shmall` =
//! `limits.memory`, see [`cap_sysv`]). What the fallback still cannot charge
//! is listed in [`UNCHARGED`].

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

/// What the fallback supervisor cannot charge to `limits.memory` (said by
/// `pinfold doctor`, `pinfold -v exec` and the `--report` JSON).
pub const UNCHARGED: &str = "kernel memory (page tables, pipe and socket buffers), file page cache, \
memfd pages outside every mapping once its fds are closed or in flight over a socket, \
and detached SysV shm up to limits.memory (shmall)";

/// The container paths pinfold mounts a tmpfs on, for a spec: /tmp,
/// /dev/shm, /dev, the working directory (a tmpfs when the rootfs is
/// read-only, or the job file system's workspace) and `/` (an overlay
/// whose upper layer is a tmpfs: the stage's or the job file system's).
/// Bind destinations are left out: a bind is the host's file system, not
/// the job's memory.
pub(crate) fn tmpfs_paths(spec: &super::ContainerSpec) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["/tmp", "/dev/shm", "/dev"].map(PathBuf::from).into();
    v.push(spec.workdir.clone());
    v.push(PathBuf::from("/"));
    v.retain(|p| !spec.binds.iter().any(|b| &b.dest == p));
    v
}

/// The container's tmpfs file systems, opened once (`O_PATH` fds of their
/// roots, one per file system), and the internal shmem mount's device.
pub(crate) struct Shmem {
    mounts: Vec<OwnedFd>,
    /// `major:minor` of the kernel's internal shmem mount, as in /proc/PID/maps.
    shm_dev: Option<String>,
}

impl Shmem {
    /// Learns the internal mount's device from a memfd of our own.
    pub(crate) fn new() -> Shmem {
        let shm_dev =
            nix::sys::memfd::memfd_create(c"pinfold-probe", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .ok()
                .and_then(|fd| nix::sys::stat::fstat(&fd).ok())
                .map(|st| {
                    let dev = st.st_dev;
                    format!(
                        "{:02x}:{:02x}",
                        nix::sys::stat::major(dev),
                        nix::sys::stat::minor(dev)
                    )
                });
        Shmem {
            mounts: Vec::new(),
            shm_dev,
        }
    }

    /// Opens `paths` under `root` (`/proc/PID/root` of a job process),
    /// keeping each distinct tmpfs (or, for `/`, the overlay over the stage
    /// tmpfs, whose statfs is its upper layer's).
    pub(crate) fn open_mounts(&mut self, root: &str, paths: &[PathBuf]) {
        let mut devs = Vec::new();
        for p in paths {
            let path = format!("{root}{}", p.display());
            let Ok(fd) = open(
                path.as_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            let Ok(fs) = nix::sys::statfs::fstatfs(&fd) else {
                continue;
            };
            let ty = fs.filesystem_type();
            let wanted = if p == Path::new("/") {
                ty == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC
            } else {
                ty == nix::sys::statfs::TMPFS_MAGIC
            };
            let Ok(st) = nix::sys::stat::fstat(&fd) else {
                continue;
            };
            if wanted && !devs.contains(&st.st_dev) {
                devs.push(st.st_dev);
                self.mounts.push(fd);
            }
        }
    }

    /// Bytes used on the container's tmpfs file systems: their used blocks,
    /// and [`INODE_BYTES`] per used inode (kernel memory no block shows).
    // The statfs field types differ between libcs and architectures.
    #[allow(clippy::unnecessary_cast)]
    fn tmpfs_bytes(&self) -> u64 {
        self.mounts
            .iter()
            .filter_map(|fd| nix::sys::statfs::fstatfs(fd.as_fd()).ok())
            .map(|fs| {
                (fs.blocks() as u64).saturating_sub(fs.blocks_free() as u64)
                    * fs.block_size() as u64
                    + (fs.files() as u64).saturating_sub(fs.files_free() as u64) * INODE_BYTES
            })
            .sum()
    }
}

/// What one tmpfs inode costs the kernel, about: the shmem inode and its
/// dentry.
const INODE_BYTES: u64 = 1 << 10;

/// One sample's charge, summed over the container's processes.
#[derive(Default)]
pub(crate) struct Charge {
    private: u64,
    /// Internal-mount objects by (SysV?, inode): (bytes allocated, when an
    /// fd to it was found; the largest mapped extent). A SysV segment's
    /// inode number is its id (the first one's is 0), so the two are apart.
    objects: HashMap<(bool, u64), (Option<u64>, u64)>,
}

impl Charge {
    /// Adds the process whose /proc directory is `dir`.
    pub(crate) fn add_process(&mut self, dir: &str, page: u64, shmem: &Shmem) {
        self.private += private_pages(&format!("{dir}/statm")) * page;
        let Some(shm_dev) = &shmem.shm_dev else {
            return;
        };
        if let Ok(rd) = std::fs::read_dir(format!("{dir}/fd")) {
            for e in rd.flatten() {
                let is_memfd = std::fs::read_link(e.path())
                    .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"/memfd:"));
                if !is_memfd {
                    continue;
                }
                // stat follows the magic link to the object itself.
                if let Ok(st) = nix::sys::stat::stat(&e.path()) {
                    let bytes = st.st_blocks as u64 * 512;
                    let o = self.objects.entry((false, st.st_ino)).or_default();
                    o.0 = Some(o.0.unwrap_or(0).max(bytes));
                }
            }
        }
        if let Ok(maps) = std::fs::read_to_string(format!("{dir}/maps")) {
            for (key, extent) in maps.lines().filter_map(|l| shmem_extent(l, shm_dev)) {
                let o = self.objects.entry(key).or_default();
                o.1 = o.1.max(extent);
            }
        }
    }

    /// The memory charged: private, each object once, the tmpfs file systems.
    pub(crate) fn total(&self, shmem: &Shmem) -> u64 {
        let objects: u64 = self
            .objects
            .values()
            .map(|(held, mapped)| held.unwrap_or(*mapped))
            .sum();
        self.private + objects + shmem.tmpfs_bytes()
    }
}

/// A /proc/PID/maps line on the internal shmem mount: ((SysV?, inode),
/// offset + length).
fn shmem_extent(line: &str, shm_dev: &str) -> Option<((bool, u64), u64)> {
    let mut f = line.split_ascii_whitespace();
    let (range, _perms, offset, dev, ino) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    if dev != shm_dev {
        return None;
    }
    let sysv = f.next().is_some_and(|path| path.starts_with("/SYSV"));
    let ino: u64 = ino.parse().ok().filter(|i| sysv || *i != 0)?;
    let (start, end) = range.split_once('-')?;
    let len = u64::from_str_radix(end, 16).ok()? - u64::from_str_radix(start, 16).ok()?;
    Some(((sysv, ino), u64::from_str_radix(offset, 16).ok()? + len))
}

/// Resident pages not backed by a file or shmem (statm's resident minus
/// shared): the anonymous memory of a process.
pub(crate) fn private_pages(path: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    let mut f = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    let (_size, resident, shared) = (f.next(), f.next().unwrap_or(0), f.next().unwrap_or(0));
    resident.saturating_sub(shared)
}

/// The child, root of the container's user namespace and alone in its fresh
/// IPC namespace, before anything of the job runs: caps SysV shm in that
/// namespace at `memory` bytes in all (`shmall`, in pages) and per segment
/// (`shmmax`), so a segment nobody maps, which no process of the container
/// shows, still cannot hold more than the limit. 0 (unlimited) leaves the
/// kernel's defaults.
pub(crate) fn cap_sysv(memory: u64) -> std::io::Result<()> {
    if memory == 0 {
        return Ok(());
    }
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    std::fs::write("/proc/sys/kernel/shmmax", memory.to_string())?;
    std::fs::write("/proc/sys/kernel/shmall", memory.div_ceil(page).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_on_the_shmem_mount_give_their_extent() {
        let l = "7f04753dc000-7f04754dc000 rw-s 00100000 00:01 1024     /memfd:x (deleted)";
        assert_eq!(shmem_extent(l, "00:01"), Some(((false, 1024), 0x200000)));
        let sysv = "7f9f1da72000-7f9f1e272000 rw-s 00000000 00:01 0   /SYSV00000000 (deleted)";
        assert_eq!(shmem_extent(sysv, "00:01"), Some(((true, 0), 8 << 20)));
        assert_eq!(shmem_extent(l, "00:2a"), None);
        let anon = "7f04753dc000-7f04754dc000 rw-p 00000000 00:00 0 ";
        assert_eq!(shmem_extent(anon, "00:00"), None);
    }

    #[test]
    fn a_memfd_is_charged_once_mapped_or_held() {
        // This process holds a 4 MiB memfd, written, and maps it twice.
        use std::io::Write;
        let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::empty()).unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(&vec![1u8; 4 << 20]).unwrap();
        let shmem = Shmem::new();
        let mut c = Charge::default();
        c.add_process("/proc/self", 4096, &shmem);
        let before = c.total(&shmem);
        let mut again = Charge::default();
        again.add_process("/proc/self", 4096, &shmem);
        again.add_process("/proc/self", 4096, &shmem);
        assert!(before >= 4 << 20, "{before}");
        // The object is one inode: a second look adds private memory only.
        let objects: u64 = again.objects.values().map(|o| o.0.unwrap_or(o.1)).sum();
        let once: u64 = c.objects.values().map(|o| o.0.unwrap_or(o.1)).sum();
        assert_eq!(objects, once);
        drop(f);
    }
}
