//! Removing a directory tree that a job or an image layer made: never
//! following a symlink, and making a directory without write or search
//! permission ours first (a layer may ship `d---------`).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Removes `name` in `dir`, recursively, never following a symlink; a
/// directory without write or search permission is chmod'ed first (it is ours).
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    let st = match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
    let sub = match openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Err(Errno::EACCES) => {
            nix::sys::stat::fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(0o700),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
            openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?
        }
        r => r?,
    };
    if st.st_mode & 0o300 != 0o300 {
        fchmod(&sub, Mode::from_bits_truncate(0o700))?;
    }
    let mut names = Vec::new();
    {
        let mut d = nix::dir::Dir::from_fd(sub.try_clone().map_err(|_| Errno::EMFILE)?)?;
        for e in d.iter() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_owned());
            }
        }
    }
    for n in names {
        remove_all_at(sub.as_fd(), &n)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// Removes a directory tree (used for cache entries and temporary dirs).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other("refusing to remove a root"));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = openat(
        AT_FDCWD,
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    remove_all_at(dir.as_fd(), name).map_err(io::Error::from)
}
