//! Resolving paths inside the container's rootfs without ever leaving it.
//!
//! Every lookup goes through openat2(2) with `RESOLVE_IN_ROOT`, so `..` and
//! absolute symlinks planted by an image resolve against the rootfs, never the
//! host, and `RESOLVE_NO_MAGICLINKS` refuses /proc magic links. Mount targets
//! are then addressed as `/proc/self/fd/N`, so nothing can be swapped between
//! the check and the mount. (Hand-written rather than the `pathrs` crate: we
//! need three small operations and no extra dependency in the hot path.)

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, mkdirat};

const RESOLVE: ResolveFlag = ResolveFlag::RESOLVE_IN_ROOT.union(ResolveFlag::RESOLVE_NO_MAGICLINKS);

/// The path that reaches an open fd (for mount(2) and friends).
pub(crate) fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens `path` inside `root` with `flags` (plus O_CLOEXEC).
pub(crate) fn open_in_root(root: &impl AsFd, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::empty())
        .resolve(RESOLVE);
    openat2(root.as_fd(), path, how)
}

/// Opens the directory `path` inside `root`, creating missing components (mode 0755).
pub(crate) fn mkdir_all_in_root(root: &impl AsFd, path: &Path) -> Result<OwnedFd, Errno> {
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let mut cur = open_in_root(root, Path::new("/"), dir_flags)?;
    for comp in path.components() {
        let name = match comp {
            Component::Normal(n) => n,
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir | Component::Prefix(_) => return Err(Errno::EINVAL),
        };
        match open_in_root(&cur, Path::new(name), dir_flags) {
            Ok(fd) => cur = fd,
            Err(Errno::ENOENT) => {
                match mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                // Opened relative to `cur` but resolved in the rootfs: a
                // symlink raced in here still cannot leave it.
                cur = open_in_root(&cur, Path::new(name), dir_flags)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// Opens (creating if missing) an empty regular file at `path` inside `root`,
/// for use as a mount point of a file.
pub(crate) fn touch_in_root(root: &impl AsFd, path: &Path) -> Result<OwnedFd, Errno> {
    let parent = path.parent().ok_or(Errno::EINVAL)?;
    let name = path.file_name().ok_or(Errno::EINVAL)?;
    let dir = mkdir_all_in_root(root, parent)?;
    let how = OpenHow::new()
        .flags(OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(0o644))
        .resolve(RESOLVE);
    match openat2(dir.as_fd(), Path::new(name), how) {
        Ok(fd) => Ok(fd),
        // An existing file we may not write to is still a fine mount point.
        Err(Errno::EACCES) | Err(Errno::EROFS) | Err(Errno::ETXTBSY) => {
            open_in_root(&dir, Path::new(name), OFlag::O_PATH | OFlag::O_NOFOLLOW)
        }
        Err(e) => Err(e),
    }
}
