//! Resolving paths inside the container's rootfs without ever leaving it.
//!
//! Every lookup goes through openat2(2) with `RESOLVE_IN_ROOT`
//! ([`crate::fs::beneath::IN_ROOT`]), so `..` and absolute symlinks planted
//! by an image resolve against the rootfs, never the host, and
//! `RESOLVE_NO_MAGICLINKS` refuses /proc magic links. Mount targets
//! are then addressed as `/proc/self/fd/N`, so nothing can be swapped between
//! the check and the mount. (Hand-written rather than the `pathrs` crate: we
//! need three small operations and no extra dependency in the hot path.)

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::fcntl::readlinkat;
use nix::sys::stat::{Mode, mkdirat};

use crate::fs::beneath::{IN_ROOT, open_at};

/// The path that reaches an open fd (for mount(2) and friends).
pub(crate) fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens `path` inside `root` with `flags` (plus O_CLOEXEC).
pub(crate) fn open_in_root(root: &impl AsFd, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    open_at(root, path, flags, Mode::empty(), IN_ROOT)
}

/// Opens the directory `path` inside `root`, creating missing components
/// (mode 0755). A dangling symlink on the way is followed the way the kernel
/// would inside the rootfs (its target created there), like securejoin does.
pub(crate) fn mkdir_all_in_root(root: &impl AsFd, path: &Path) -> Result<OwnedFd, Errno> {
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut pending, path)?;
    pending.reverse();
    let mut cur = open_in_root(root, Path::new("/"), dir_flags)?;
    let mut walked = PathBuf::from("/");
    let mut links_followed = 0;
    while let Some(name) = pending.pop() {
        match open_in_root(&cur, Path::new(&name), dir_flags) {
            Ok(fd) => {
                cur = fd;
                walked.push(&name);
                continue;
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        match mkdirat(
            cur.as_fd(),
            name.as_os_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) => {
                cur = open_in_root(&cur, Path::new(&name), dir_flags)?;
                walked.push(&name);
            }
            Err(Errno::EEXIST) => {
                // A dangling symlink: continue from its target, inside the rootfs.
                let target = readlinkat(cur.as_fd(), name.as_os_str())?;
                links_followed += 1;
                if links_followed > 40 {
                    return Err(Errno::ELOOP);
                }
                let target = Path::new(&target);
                let restart = if target.is_absolute() {
                    target.to_owned()
                } else {
                    walked.join(target)
                };
                let mut rest: Vec<std::ffi::OsString> = Vec::new();
                push_components(&mut rest, &restart)?;
                rest.reverse();
                pending.extend(rest);
                cur = open_in_root(root, Path::new("/"), dir_flags)?;
                walked = PathBuf::from("/");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// Splits `path` into normal components, resolving `..` lexically and never
/// above the root (as RESOLVE_IN_ROOT does).
fn push_components(out: &mut Vec<std::ffi::OsString>, path: &Path) -> Result<(), Errno> {
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    for comp in path.components() {
        match comp {
            Component::Normal(n) => parts.push(n.to_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir => {}
            Component::Prefix(_) => return Err(Errno::EINVAL),
        }
    }
    out.extend(parts);
    Ok(())
}

/// Opens (creating if missing) an empty regular file at `path` inside `root`,
/// for use as a mount point of a file.
pub(crate) fn touch_in_root(root: &impl AsFd, path: &Path) -> Result<OwnedFd, Errno> {
    let parent = path.parent().ok_or(Errno::EINVAL)?;
    let name = path.file_name().ok_or(Errno::EINVAL)?;
    let dir = mkdir_all_in_root(root, parent)?;
    match open_at(
        &dir,
        Path::new(name),
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o644),
        IN_ROOT,
    ) {
        Ok(fd) => Ok(fd),
        // An existing file we may not write to is still a fine mount point.
        Err(Errno::EACCES) | Err(Errno::EROFS) | Err(Errno::ETXTBSY) => {
            open_in_root(&dir, Path::new(name), OFlag::O_PATH | OFlag::O_NOFOLLOW)
        }
        Err(e) => Err(e),
    }
}
