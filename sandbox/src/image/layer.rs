//! Safe application of image layers.
//!
//! An image is hostile input. Each layer tar is applied into its own empty
//! directory (the layer cache), so a layer can never reach a lower layer's
//! files, let alone the host's: every entry's parent is opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` from
//! the layer root (the kernel refuses `..`, absolute and symlink escapes),
//! and the last component is created with `*at` calls that never follow it.
//! Names are cleaned lexically first (`..` is clamped at the root, as docker
//! and umoci do). A parent that is a symlink (planted earlier in the same
//! layer) is an error, not a redirection.
//!
//! OCI whiteouts become overlayfs *char 0/0 whiteouts* (`.wh.NAME` → a
//! character device NAME, number 0/0; `.wh..wh..opq` → the directory gets
//! `user.overlay.opaque=y`), one form for every kernel, not the *xattr
//! whiteouts* older pinfold wrote: an unprivileged `userxattr` overlay
//! honours those only from Linux 6.7, so on Debian 12's 6.1 deleted files
//! came back, silently. Unprivileged mknod of the 0/0 device works since
//! 5.8 (`vfs_mknod` exempts it from CAP_MKNOD) and `opaque=y` with
//! `userxattr` since 5.11, the floor of an unprivileged overlay anyway: no
//! probe or fallback. Where mknod is refused all the same (a seccomp filter
//! or LSM around pinfold) the unpack fails naming it, as `pinfold doctor`
//! does. Layers of older pinfold are dropped and fetched again (store
//! format 2, `store.rs`).
//!
//! Whiteouts are written after the whole tar: an entry of the same layer
//! wins over its own whiteout (OCI's rule), and a directory of the same
//! layer then becomes opaque. None is written below an opaque directory:
//! it would hide nothing, and overlayfs lists a directory found in one
//! layer only as it is, so it would show as a broken entry.
//!
//! One job: applying one layer tar safely ([`apply_tar`]), with the
//! helpers that job needs (xattrs, tree removal). [`flatten`] (in
//! `layer/flatten.rs`) merges cached layers into one plain directory with
//! the same overlay semantics, again without following any symlink; every
//! reader of a cached layer takes a 0/0 character device for a whiteout
//! ([`is_whiteout`]), never for a device to open or copy.
//!
//! Ownership is rootless: files belong to the caller; the ids the image gave
//! are kept in the `user.rootlesscontainers` xattr the way umoci keeps them
//! (the store then spreads them over the container's id range where it can:
//! see [`super::owner`]).

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, fstatat, futimens, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, mkfifoat, symlinkat};

use crate::fs::beneath::{MkdirStep, mkdir_all_beneath, open_dir_beneath};
pub use crate::fs::remove::{remove_all_at, remove_tree};

mod flatten;
pub use flatten::{find_in_layers, flatten, is_whiteout};

/// Errors from applying a layer.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum LayerError {
    /// Reading or decompressing the layer failed.
    #[error("{what}: reading the layer failed: {source}")]
    Read {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A file-system operation on an entry failed.
    #[error("{what}: entry {entry:?}: {op}: {source}")]
    Entry {
        what: String,
        entry: PathBuf,
        op: &'static str,
        #[source]
        source: Errno,
    },
    /// The layer is malformed or tries something pinfold refuses.
    #[error("{what}: entry {entry:?}: {why}")]
    Refused {
        what: String,
        entry: PathBuf,
        why: String,
    },
    /// The image is bigger than the configured bounds.
    #[error("image exceeds the limit of {limit} {unit}; raise {flag} if you trust it")]
    Limit {
        limit: u64,
        unit: &'static str,
        flag: &'static str,
    },
    /// Flattening cached layers failed.
    #[error("unpack into {path}: {op}: {source}")]
    Flatten {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Errno,
    },
}

type Result<T> = std::result::Result<T, LayerError>;

/// Bounds on the work one image may cause.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of file content, all layers together.
    pub max_bytes: u64,
    /// Most tar entries, all layers together.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 32 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What one image has spent of its [`Limits`] (shared by layers unpacked in parallel).
#[derive(Debug, Default)]
pub struct Budget {
    limits: Limits,
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl Budget {
    /// A fresh budget.
    pub fn new(limits: Limits) -> Self {
        Budget {
            limits,
            ..Default::default()
        }
    }

    fn charge(&self, bytes: u64, entries: u64) -> Result<()> {
        spend(
            &self.bytes,
            bytes,
            self.limits.max_bytes,
            "unpacked bytes",
            "--max-unpacked-bytes",
        )?;
        spend(
            &self.entries,
            entries,
            self.limits.max_entries,
            "entries",
            "--max-entries",
        )
    }
}

/// Adds `n` to `spent`; past `limit`, the error names `unit` and the `flag`
/// that raises it.
fn spend(
    spent: &AtomicU64,
    n: u64,
    limit: u64,
    unit: &'static str,
    flag: &'static str,
) -> Result<()> {
    if spent.fetch_add(n, Ordering::Relaxed) + n > limit {
        return Err(LayerError::Limit { limit, unit, flag });
    }
    Ok(())
}

const OPAQUE_XATTR: &CStr = c"user.overlay.opaque";
pub(crate) const ROOTLESS_XATTR: &CStr = c"user.rootlesscontainers";

/// The set-uid and set-gid bits, cleared from every file the store writes.
pub const SET_ID: u32 = 0o6000;

/// `name` cleaned lexically: no root, no `.`, `..` clamped at the root.
fn clean(name: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn set_xattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: fd is a valid open fd for the call; name is NUL-terminated;
    // value points to value.len() readable bytes.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

pub(crate) fn get_xattr_path(path: &Path, name: &CStr) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 256];
    // SAFETY: p and name are NUL-terminated; buf is writable for buf.len() bytes.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().map(|n| buf[..n].to_vec())
}

/// The `user.rootlesscontainers` value (protobuf `Resource{uid=1, gid=2}`,
/// zero ids omitted as proto3 does). Hand-written: two varints do not
/// justify a protobuf crate.
pub(crate) fn rootless_value(uid: u64, gid: u64) -> Option<Vec<u8>> {
    if uid == 0 && gid == 0 {
        return None;
    }
    let mut v = Vec::new();
    for (tag, id) in [(0x08u8, uid), (0x10u8, gid)] {
        if id != 0 {
            v.push(tag);
            let mut x = id as u32 as u64;
            loop {
                let b = (x & 0x7f) as u8;
                x >>= 7;
                if x == 0 {
                    v.push(b);
                    break;
                }
                v.push(b | 0x80);
            }
        }
    }
    Some(v)
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip, possibly several members.
    Gzip,
    /// zstd, possibly several frames.
    Zstd,
}

struct Applier<'a> {
    what: &'a str,
    root: OwnedFd,
    budget: &'a Budget,
    cache: Option<(PathBuf, OwnedFd)>,
    dirs: Vec<(PathBuf, u32, i64)>,
    whiteouts: Vec<PathBuf>,
    opaque: HashSet<PathBuf>,
    /// A plain tree, not a layer: `.wh.` names are ordinary entries.
    plain: bool,
    /// Some entry had an owner other than 0:0 (kept in the rootless xattr).
    foreign_owners: bool,
}

/// What [`apply_tar`] found out while applying.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied {
    /// Some entry had an owner other than 0:0: its ids are in the
    /// `user.rootlesscontainers` xattr, for [`super::owner`] to apply.
    pub foreign_owners: bool,
}

impl Applier<'_> {
    fn refused(&self, entry: &Path, why: impl Into<String>) -> LayerError {
        LayerError::Refused {
            what: self.what.to_owned(),
            entry: entry.to_owned(),
            why: why.into(),
        }
    }

    fn err(&self, entry: &Path, op: &'static str) -> impl FnOnce(Errno) -> LayerError + use<'_> {
        let entry = entry.to_owned();
        move |source| LayerError::Entry {
            what: self.what.to_owned(),
            entry,
            op,
            source,
        }
    }

    /// The directory `parent` (created when missing, as 0755), as an fd.
    fn parent(&mut self, parent: &Path, entry: &Path) -> Result<BorrowedFd<'_>> {
        if self.cache.as_ref().is_none_or(|(p, _)| p != parent) {
            let fd = match open_dir_beneath(self.root.as_fd(), parent, OFlag::O_PATH) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => self.create_parents(parent, entry)?,
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) => {
                    return Err(self.refused(
                        entry,
                        "a parent is a symlink or not a directory; refusing to write through it",
                    ));
                }
                Err(e) => return Err(self.err(entry, "open the parent directory")(e)),
            };
            self.cache = Some((parent.to_owned(), fd));
        }
        match &self.cache {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => unreachable!("cache was just filled"),
        }
    }

    fn create_parents(&self, parent: &Path, entry: &Path) -> Result<OwnedFd> {
        let root = self
            .root
            .try_clone()
            .map_err(|_| self.err(entry, "dup")(Errno::EMFILE))?;
        mkdir_all_beneath(root, parent, Mode::from_bits_truncate(0o755)).map_err(|e| {
            match (e.step, e.errno) {
                (MkdirStep::Open, Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) => self.refused(
                    entry,
                    "a parent is a symlink or not a directory; refusing to write through it",
                ),
                (MkdirStep::Create, errno) => self.err(entry, "create a parent directory")(errno),
                (_, errno) => self.err(entry, "open a parent directory")(errno),
            }
        })
    }

    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path().map_err(|e| self.read_err(e))?.into_owned();
        let path = clean(&raw);
        let kind = entry.header().entry_type();
        let size = if kind.is_file() || kind == tar::EntryType::Continuous {
            entry.size()
        } else {
            0
        };
        self.budget.charge(size, 1)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let mtime = entry.header().mtime().unwrap_or(0) as i64;
        let mut uid = entry.header().uid().unwrap_or(0);
        let mut gid = entry.header().gid().unwrap_or(0);
        let mut xattrs: Vec<(CString, Vec<u8>)> = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| self.read_err(e))? {
            for ext in pax {
                let ext = ext.map_err(|e| self.read_err(e))?;
                let Ok(key) = ext.key() else { continue };
                if key == "uid" || key == "gid" {
                    let v = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(0);
                    if key == "uid" { uid = v } else { gid = v }
                } else if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                    // Only user.* can be set unprivileged; overlay's own names
                    // and the rootless ids are pinfold's to write, never the image's.
                    if x.starts_with("user.")
                        && !x.starts_with("user.overlay.")
                        && x != "user.rootlesscontainers"
                    {
                        if let Ok(c) = CString::new(x) {
                            xattrs.push((c, ext.value_bytes().to_vec()));
                        }
                    } else {
                        tracing::debug!(entry = ?raw, xattr = x, "xattr skipped");
                    }
                }
            }
        }
        if let Some(v) = rootless_value(uid, gid) {
            self.foreign_owners = true;
            xattrs.push((ROOTLESS_XATTR.to_owned(), v));
        }

        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(p), Some(n)) => (p.to_owned(), n.to_owned()),
            _ => {
                // The layer root itself ("./").
                if kind == tar::EntryType::Directory {
                    self.dirs.push((PathBuf::new(), mode, mtime));
                }
                return Ok(());
            }
        };
        let nb = name.as_bytes();
        if let Some(hidden) = nb.strip_prefix(b".wh.").filter(|_| !self.plain) {
            // Under a non-directory of this layer (umoci writes `e` as a symlink,
            // then `e/.wh.x`), a whiteout hides nothing more than `e` already does.
            if let Err(e) = self.parent(&parent, &raw) {
                if matches!(e, LayerError::Refused { .. }) {
                    tracing::debug!(entry = ?raw, "whiteout under a non-directory skipped");
                    return Ok(());
                }
                return Err(e);
            }
            if hidden == b".wh..opq" {
                self.opaque.insert(parent);
            } else if hidden.starts_with(b".wh.") {
                tracing::debug!(entry = ?raw, "aufs metadata skipped");
            } else if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.refused(&raw, "whiteout of nothing"));
            } else {
                self.whiteouts.push(parent.join(OsStr::from_bytes(hidden)));
            }
            return Ok(());
        }

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                let pfd = self
                    .parent(&parent, &raw)?
                    .try_clone_to_owned()
                    .map_err(|_| self.err(&raw, "dup")(Errno::EMFILE))?;
                match mkdirat(
                    pfd.as_fd(),
                    name.as_os_str(),
                    Mode::from_bits_truncate(0o700),
                ) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        let st = fstatat(
                            pfd.as_fd(),
                            name.as_os_str(),
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(self.err(&raw, "stat"))?;
                        if !is_dir(&st) {
                            remove_all_at(pfd.as_fd(), &name)
                                .map_err(self.err(&raw, "replace a file by a directory"))?;
                            mkdirat(
                                pfd.as_fd(),
                                name.as_os_str(),
                                Mode::from_bits_truncate(0o700),
                            )
                            .map_err(self.err(&raw, "create the directory"))?;
                        }
                    }
                    Err(e) => return Err(self.err(&raw, "create the directory")(e)),
                }
                if !xattrs.is_empty() {
                    let d = openat(
                        pfd.as_fd(),
                        name.as_os_str(),
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(self.err(&raw, "open the directory"))?;
                    self.set_xattrs(d.as_fd(), &xattrs, &raw);
                }
                self.dirs.push((path, mode, mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let pfd = self
                    .parent(&parent, &raw)?
                    .try_clone_to_owned()
                    .map_err(|_| self.err(&raw, "dup")(Errno::EMFILE))?;
                let flags = OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                let fd = match openat(
                    pfd.as_fd(),
                    name.as_os_str(),
                    flags,
                    Mode::from_bits_truncate(0o600),
                ) {
                    Err(Errno::EEXIST) => {
                        remove_all_at(pfd.as_fd(), &name)
                            .map_err(self.err(&raw, "replace an entry"))?;
                        openat(
                            pfd.as_fd(),
                            name.as_os_str(),
                            flags,
                            Mode::from_bits_truncate(0o600),
                        )
                    }
                    r => r,
                }
                .map_err(self.err(&raw, "create the file"))?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(|e| self.read_err(e))?;
                // xattrs first: user.* needs write permission, which the mode may drop.
                self.set_xattrs(file.as_fd(), &xattrs, &raw);
                // Set-id bits never reach the host: a setuid-root `su` of an
                // image, owned by the CI user in the store, would let any
                // local user who reaches it run it as that user. Inside the
                // container they are inert anyway (nosuid, no_new_privs).
                fchmod(file.as_fd(), Mode::from_bits_truncate(mode & !SET_ID))
                    .map_err(self.err(&raw, "chmod"))?;
                let t = TimeSpec::new(mtime, 0);
                futimens(file.as_fd(), &t, &t).map_err(self.err(&raw, "set the time"))?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refused(&raw, "symlink without a target"))?
                    .into_owned();
                let pfd = self
                    .parent(&parent, &raw)?
                    .try_clone_to_owned()
                    .map_err(|_| self.err(&raw, "dup")(Errno::EMFILE))?;
                let target = OsStr::from_bytes(&target);
                match symlinkat(target, pfd.as_fd(), name.as_os_str()) {
                    Err(Errno::EEXIST) => {
                        remove_all_at(pfd.as_fd(), &name)
                            .map_err(self.err(&raw, "replace an entry"))?;
                        symlinkat(target, pfd.as_fd(), name.as_os_str())
                    }
                    r => r,
                }
                .map_err(self.err(&raw, "create the symlink"))?;
                let t = TimeSpec::new(mtime, 0);
                utimensat(
                    pfd.as_fd(),
                    name.as_os_str(),
                    &t,
                    &t,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(self.err(&raw, "set the time"))?;
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.read_err(e))?
                    .ok_or_else(|| self.refused(&raw, "hardlink without a target"))?;
                let target = clean(&target);
                let (Some(tparent), Some(tname)) = (target.parent(), target.file_name()) else {
                    return Err(self.refused(&raw, "hardlink to the layer root"));
                };
                let tfd = match open_dir_beneath(self.root.as_fd(), tparent, OFlag::O_PATH) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => {
                        return Err(self.refused(
                            &raw,
                            format!("hardlink target {target:?} is not in this layer"),
                        ));
                    }
                    Err(_) => {
                        return Err(self.refused(
                            &raw,
                            format!("hardlink target {target:?} is behind a symlink"),
                        ));
                    }
                };
                let pfd = self
                    .parent(&parent, &raw)?
                    .try_clone_to_owned()
                    .map_err(|_| self.err(&raw, "dup")(Errno::EMFILE))?;
                let link = || {
                    linkat(
                        tfd.as_fd(),
                        tname,
                        pfd.as_fd(),
                        name.as_os_str(),
                        nix::fcntl::AtFlags::empty(),
                    )
                };
                match link() {
                    Err(Errno::EEXIST) => {
                        let a =
                            fstatat(tfd.as_fd(), tname, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
                        let b = fstatat(
                            pfd.as_fd(),
                            name.as_os_str(),
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        );
                        if let (Ok(a), Ok(b)) = (a, b) {
                            if a.st_ino == b.st_ino && a.st_dev == b.st_dev {
                                return Ok(());
                            }
                        }
                        remove_all_at(pfd.as_fd(), &name)
                            .map_err(self.err(&raw, "replace an entry"))?;
                        link()
                    }
                    r => r,
                }
                .map_err(|e| match e {
                    Errno::ENOENT => self.refused(
                        &raw,
                        format!("hardlink target {target:?} is not in this layer"),
                    ),
                    e => self.err(&raw, "create the hardlink")(e),
                })?;
            }
            T::Fifo => {
                let pfd = self
                    .parent(&parent, &raw)?
                    .try_clone_to_owned()
                    .map_err(|_| self.err(&raw, "dup")(Errno::EMFILE))?;
                let _ = remove_all_at(pfd.as_fd(), &name);
                mkfifoat(
                    pfd.as_fd(),
                    name.as_os_str(),
                    Mode::from_bits_truncate(mode & 0o777),
                )
                .map_err(self.err(&raw, "create the fifo"))?;
            }
            T::Char | T::Block => {
                tracing::warn!(entry = ?raw, "{}: device node skipped (a rootless container cannot create devices)", self.what);
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => {
                tracing::warn!(entry = ?raw, kind = ?other, "{}: entry of unknown type skipped", self.what);
            }
        }
        Ok(())
    }

    fn set_xattrs(&self, fd: BorrowedFd<'_>, xattrs: &[(CString, Vec<u8>)], entry: &Path) {
        for (k, v) in xattrs {
            if let Err(e) = set_xattr(fd, k, v) {
                tracing::debug!(?entry, xattr = ?k, %e, "xattr not set");
            }
        }
    }

    fn read_err(&self, source: io::Error) -> LayerError {
        LayerError::Read {
            what: self.what.to_owned(),
            source,
        }
    }

    /// Whiteouts, opaque markers and directory modes, once every entry is in.
    fn finish(mut self) -> Result<()> {
        self.cache = None;
        let whiteouts = std::mem::take(&mut self.whiteouts);
        // A whiteout of a directory this layer also has: the lower one is
        // gone, this layer's stays, and nothing of the lower one shows
        // through it (OCI: a whiteout hides only lower layers' entries).
        for w in &whiteouts {
            let (Some(parent), Some(name)) = (w.parent(), w.file_name()) else {
                continue;
            };
            let Ok(pfd) = open_dir_beneath(self.root.as_fd(), parent, OFlag::O_PATH) else {
                continue;
            };
            if fstatat(pfd.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| is_dir(&st))
            {
                self.opaque.insert(w.clone());
            }
        }
        for w in whiteouts {
            let (Some(parent), Some(name)) = (w.parent(), w.file_name()) else {
                continue;
            };
            // Below an opaque directory nothing lower shows anyway (see the
            // module docs for why a whiteout there would do harm).
            if parent.ancestors().any(|a| self.opaque.contains(a)) {
                continue;
            }
            let pfd = match open_dir_beneath(self.root.as_fd(), parent, OFlag::O_PATH) {
                Ok(fd) => fd,
                // Replaced by a non-directory later in the layer: nothing to hide.
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => continue,
                Err(e) => return Err(self.err(&w, "open the whiteout's directory")(e)),
            };
            match mknodat(pfd.as_fd(), name, SFlag::S_IFCHR, Mode::empty(), 0) {
                // An entry of this layer wins over its own whiteout.
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(self.err(
                        &w,
                        "create the whiteout (mknod of a 0/0 character device: Linux 5.8+, not refused by a seccomp filter or LSM; see pinfold doctor)",
                    )(e));
                }
            }
        }
        for dir in &self.opaque {
            let fd = open_dir_beneath(self.root.as_fd(), dir, OFlag::O_RDONLY)
                .map_err(self.err(dir, "open the opaque directory"))?;
            set_xattr(fd.as_fd(), OPAQUE_XATTR, b"y")
                .map_err(self.err(dir, "mark the directory opaque (user xattrs needed)"))?;
        }
        let mut dirs = std::mem::take(&mut self.dirs);
        // Deepest first, so a read-only directory is closed after its children.
        dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (p, mode, mtime) in dirs {
            let fd = open_dir_beneath(self.root.as_fd(), &p, OFlag::O_RDONLY)
                .map_err(self.err(&p, "open the directory"))?;
            fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(self.err(&p, "chmod"))?;
            let t = TimeSpec::new(mtime, 0);
            futimens(fd.as_fd(), &t, &t).map_err(self.err(&p, "set the time"))?;
        }
        Ok(())
    }
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// What a tar is applied as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    /// An image layer: `.wh.` entries are whiteouts.
    Layer,
    /// A plain tree that is no layer (a job's source): the same safety and
    /// bounds, and a `.wh.` name is an ordinary entry.
    Plain,
}

/// Applies one (already decompressed) tar to the empty directory `dest`.
/// `what` names it in errors. Reads the tar to its end-of-archive marker;
/// the caller drains what follows.
pub fn apply_tar(
    tar_stream: impl Read,
    dest: &Path,
    what: &str,
    budget: &Budget,
    kind: TarKind,
) -> Result<Applied> {
    let root = openat(
        AT_FDCWD,
        dest,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| LayerError::Flatten {
        path: dest.to_owned(),
        op: "open the layer directory",
        source,
    })?;
    let mut a = Applier {
        what,
        root,
        budget,
        cache: None,
        dirs: Vec::new(),
        whiteouts: Vec::new(),
        opaque: HashSet::new(),
        plain: kind == TarKind::Plain,
        foreign_owners: false,
    };
    let mut archive = tar::Archive::new(tar_stream);
    let entries = archive.entries().map_err(|e| a.read_err(e))?;
    for entry in entries {
        let entry = entry.map_err(|e| a.read_err(e))?;
        a.apply(entry)?;
    }
    let applied = Applied {
        foreign_owners: a.foreign_owners,
    };
    a.finish()?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names() {
        assert_eq!(
            clean(Path::new("../../etc/passwd")),
            PathBuf::from("etc/passwd")
        );
        assert_eq!(clean(Path::new("/a/./b/../c")), PathBuf::from("a/c"));
        assert_eq!(clean(Path::new("./")), PathBuf::new());
    }

    #[test]
    fn rootless_xattr_encoding() {
        assert_eq!(rootless_value(0, 0), None);
        assert_eq!(rootless_value(1000, 0), Some(vec![0x08, 0xe8, 0x07]));
        assert_eq!(rootless_value(0, 5), Some(vec![0x10, 5]));
    }
}
