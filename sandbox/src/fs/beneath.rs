//! The one openat2(2) helper: opening (and creating) paths under a
//! directory fd without ever leaving it.
//!
//! Two ways to stay inside, chosen by the caller:
//!
//! * [`BENEATH`] (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`):
//!   a symlink anywhere on the path, a `..` above the directory or a mount
//!   crossing is an error. For trees written by someone else that pinfold
//!   reads or writes on the host's side: layers being unpacked, a job's
//!   workspace, an image's files.
//! * [`IN_ROOT`] (`RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`): `..` and
//!   absolute symlinks resolve against the directory, as a chroot would see
//!   them. For a container's rootfs, whose own symlinks must work.
//!
//! Every open adds `O_CLOEXEC` and retries the EAGAIN the kernel answers
//! when a rename or mount raced with its resolution of `..`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, mkdirat};

/// No symlink, no `..` above the directory, no mount crossing.
pub const BENEATH: ResolveFlag = ResolveFlag::RESOLVE_BENEATH
    .union(ResolveFlag::RESOLVE_NO_SYMLINKS)
    .union(ResolveFlag::RESOLVE_NO_XDEV);

/// The directory is `/`: `..` and absolute symlinks stay inside it; /proc
/// magic links are refused.
pub const IN_ROOT: ResolveFlag =
    ResolveFlag::RESOLVE_IN_ROOT.union(ResolveFlag::RESOLVE_NO_MAGICLINKS);

/// openat2(2) of `path` under `dir` with `flags` (plus `O_CLOEXEC`), `mode`
/// for a file it creates and `resolve` (e.g. [`BENEATH`], [`IN_ROOT`], or
/// empty for an ordinary open).
pub fn open_at(
    dir: impl AsFd,
    path: &Path,
    flags: OFlag,
    mode: Mode,
    resolve: ResolveFlag,
) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(resolve);
    retry_eagain(|| openat2(dir.as_fd(), path, how))
}

/// openat2(2) answers EAGAIN when a rename or mount anywhere on the system
/// raced with its resolution of `..`; the man page's advice is to retry.
/// Bounded, so a livelock still ends in an error.
fn retry_eagain<T>(mut f: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    let mut last = Errno::EAGAIN;
    for _ in 0..256 {
        match f() {
            Err(Errno::EAGAIN) => last = Errno::EAGAIN,
            other => return other,
        }
    }
    Err(last)
}

/// Opens `rel` under `root` without following any symlink or leaving
/// `root` ([`BENEATH`] plus `O_NOFOLLOW`); an empty `rel` is `root` itself.
pub fn open_beneath(root: impl AsFd, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    open_at(root, rel, flags | OFlag::O_NOFOLLOW, Mode::empty(), BENEATH)
}

/// Opens directory `rel` under `root` without following any symlink.
pub fn open_dir_beneath(root: impl AsFd, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    open_beneath(root, rel, flags | OFlag::O_DIRECTORY)
}

/// Which call of [`mkdir_all_beneath`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MkdirStep {
    /// Opening an existing component (`ELOOP`, `ENOTDIR`, `EXDEV`: a
    /// symlink, a non-directory or a mount point is in the way).
    Open,
    /// Creating a missing component.
    Create,
    /// Opening a component just created.
    Reopen,
}

/// Why [`mkdir_all_beneath`] stopped.
#[derive(Debug, thiserror::Error)]
#[error("{step:?}: {errno}")]
pub struct MkdirError {
    /// The call that failed.
    pub step: MkdirStep,
    /// Its error.
    pub errno: Errno,
}

/// Opens directory `rel` under `root` as `O_PATH`, creating missing
/// components with `mode`, never following a symlink or leaving `root`.
pub fn mkdir_all_beneath(root: OwnedFd, rel: &Path, mode: Mode) -> Result<OwnedFd, MkdirError> {
    let fail = |step| move |errno| MkdirError { step, errno };
    let mut cur = root;
    for c in rel.components() {
        let name = Path::new(c.as_os_str());
        cur = match open_dir_beneath(&cur, name, OFlag::O_PATH) {
            Err(Errno::ENOENT) => {
                mkdirat(cur.as_fd(), name, mode).map_err(fail(MkdirStep::Create))?;
                open_dir_beneath(&cur, name, OFlag::O_PATH).map_err(fail(MkdirStep::Reopen))?
            }
            r => r.map_err(fail(MkdirStep::Open))?,
        };
    }
    Ok(cur)
}
