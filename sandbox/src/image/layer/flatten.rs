//! [`flatten`]: cached layer directories merged into one plain directory
//! with overlayfs semantics, never following anything in the destination.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{Mode, UtimensatFlags, fchmod, fstatat, futimens, mkdirat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, mkfifoat, symlinkat};

use super::{
    LayerError, OPAQUE_XATTR, ROOTLESS_XATTR, Result, SET_ID, get_xattr_path, is_dir,
    remove_all_at, set_xattr,
};
use crate::fs::beneath::open_dir_beneath;

/// Merges cached layer directories (bottom first) into the plain directory
/// `dest` (created when missing, must be empty), with overlayfs semantics:
/// whiteouts (0/0 character devices) delete, opaque directories replace, an
/// upper entry of another type replaces a lower one. Nothing in `dest` is
/// ever followed, and no whiteout is ever opened or copied.
pub fn flatten(layers: &[PathBuf], dest: &Path) -> Result<()> {
    let fe = |op: &'static str| {
        move |source| LayerError::Flatten {
            path: dest.to_owned(),
            op,
            source,
        }
    };
    match std::fs::create_dir(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if std::fs::read_dir(dest)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
            {
                return Err(fe("check the target")(Errno::ENOTEMPTY));
            }
        }
        Err(e) => {
            return Err(fe("create the target")(Errno::from_raw(
                e.raw_os_error().unwrap_or(0),
            )));
        }
    }
    let root = openat(
        AT_FDCWD,
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fe("open the target"))?;
    let mut f = Flattener {
        root,
        dest,
        dirs: BTreeMap::new(),
        links: HashMap::new(),
    };
    for layer in layers {
        f.links.clear();
        f.merge(layer, Path::new(""))?;
    }
    let mut dirs: Vec<_> = std::mem::take(&mut f.dirs).into_iter().collect();
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, (mode, mtime)) in dirs {
        let fd = match open_dir_beneath(f.root.as_fd(), &p, OFlag::O_RDONLY) {
            Ok(fd) => fd,
            // Whited out or replaced by a non-directory in an upper layer.
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => continue,
            Err(e) => return Err(fe("open a directory")(e)),
        };
        fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(fe("chmod a directory"))?;
        futimens(fd.as_fd(), &mtime, &mtime).map_err(fe("set a directory's time"))?;
    }
    Ok(())
}

struct Flattener<'a> {
    root: OwnedFd,
    dest: &'a Path,
    dirs: BTreeMap<PathBuf, (u32, TimeSpec)>,
    links: HashMap<u64, PathBuf>,
}

impl Flattener<'_> {
    fn e(&self, rel: &Path, op: &'static str) -> impl FnOnce(Errno) -> LayerError + use<> {
        let path = self.dest.join(rel);
        move |source| LayerError::Flatten { path, op, source }
    }

    fn merge(&mut self, src: &Path, rel: &Path) -> Result<()> {
        let dir = src.join(rel);
        let md = std::fs::symlink_metadata(&dir)
            .map_err(|e| self.e(rel, "stat a cached directory")(io_errno(&e)))?;
        self.dirs.insert(
            rel.to_owned(),
            (
                md.mode() & 0o7777,
                TimeSpec::new(md.mtime(), md.mtime_nsec()),
            ),
        );
        let dfd = open_dir_beneath(self.root.as_fd(), rel, OFlag::O_RDONLY)
            .map_err(self.e(rel, "open a directory"))?;
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| self.e(rel, "read a cached directory")(io_errno(&e)))?;
        for ent in rd {
            let ent = ent.map_err(|e| self.e(rel, "read a cached directory")(io_errno(&e)))?;
            let name = ent.file_name();
            let spath = ent.path();
            let drel = rel.join(&name);
            let md = std::fs::symlink_metadata(&spath)
                .map_err(|e| self.e(&drel, "stat a cached entry")(io_errno(&e)))?;
            let ft = md.file_type();
            let t = TimeSpec::new(md.mtime(), md.mtime_nsec());
            if is_whiteout(md.mode(), md.rdev()) {
                remove_all_at(dfd.as_fd(), &name).map_err(self.e(&drel, "apply a whiteout"))?;
                continue;
            }
            if ft.is_dir() {
                let opaque = get_xattr_path(&spath, OPAQUE_XATTR).is_some_and(|v| v == b"y");
                let existing = fstatat(
                    dfd.as_fd(),
                    name.as_os_str(),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .ok();
                if opaque || existing.as_ref().is_some_and(|st| !is_dir(st)) {
                    remove_all_at(dfd.as_fd(), &name).map_err(self.e(&drel, "replace an entry"))?;
                }
                if opaque || existing.as_ref().is_none_or(|st| !is_dir(st)) {
                    mkdirat(
                        dfd.as_fd(),
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(self.e(&drel, "create a directory"))?;
                }
                self.merge(src, &drel)?;
                continue;
            }
            remove_all_at(dfd.as_fd(), &name).map_err(self.e(&drel, "replace an entry"))?;
            if ft.is_symlink() {
                let target = std::fs::read_link(&spath)
                    .map_err(|e| self.e(&drel, "read a symlink")(io_errno(&e)))?;
                symlinkat(target.as_os_str(), dfd.as_fd(), name.as_os_str())
                    .map_err(self.e(&drel, "create a symlink"))?;
                utimensat(
                    dfd.as_fd(),
                    name.as_os_str(),
                    &t,
                    &t,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(self.e(&drel, "set a time"))?;
            } else if ft.is_file() {
                if md.nlink() > 1 {
                    if let Some(first) = self.links.get(&md.ino()) {
                        let (fp, fname) = (
                            first.parent().unwrap_or(Path::new("")),
                            first.file_name().unwrap_or_default(),
                        );
                        let ffd = open_dir_beneath(self.root.as_fd(), fp, OFlag::O_PATH)
                            .map_err(self.e(&drel, "open a hardlink's directory"))?;
                        linkat(
                            ffd.as_fd(),
                            fname,
                            dfd.as_fd(),
                            name.as_os_str(),
                            nix::fcntl::AtFlags::empty(),
                        )
                        .map_err(self.e(&drel, "create a hardlink"))?;
                        continue;
                    }
                    self.links.insert(md.ino(), drel.clone());
                }
                let mode = md.mode() & 0o7777;
                let mut sf = match File::open(&spath) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                        // A mode without u+r in our own cache: read it once with u+r.
                        nix::sys::stat::fchmodat(
                            AT_FDCWD,
                            &spath,
                            Mode::from_bits_truncate(mode | 0o400),
                            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                        )
                        .map_err(self.e(&drel, "make a cached file readable"))?;
                        let f = File::open(&spath);
                        let _ = nix::sys::stat::fchmodat(
                            AT_FDCWD,
                            &spath,
                            Mode::from_bits_truncate(mode),
                            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                        );
                        f.map_err(|e| self.e(&drel, "open a cached file")(io_errno(&e)))?
                    }
                    Err(e) => return Err(self.e(&drel, "open a cached file")(io_errno(&e))),
                };
                let fd = openat(
                    dfd.as_fd(),
                    name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(self.e(&drel, "create a file"))?;
                let mut df = File::from(fd);
                io::copy(&mut sf, &mut df)
                    .map_err(|e| self.e(&drel, "copy a file")(io_errno(&e)))?;
                if let Some(v) = get_xattr_path(&spath, ROOTLESS_XATTR) {
                    let _ = set_xattr(df.as_fd(), ROOTLESS_XATTR, &v);
                }
                fchmod(df.as_fd(), Mode::from_bits_truncate(mode & !SET_ID))
                    .map_err(self.e(&drel, "chmod a file"))?;
                futimens(df.as_fd(), &t, &t).map_err(self.e(&drel, "set a time"))?;
            } else if std::os::unix::fs::FileTypeExt::is_fifo(&ft) {
                mkfifoat(
                    dfd.as_fd(),
                    name.as_os_str(),
                    Mode::from_bits_truncate(md.mode() & 0o777),
                )
                .map_err(self.e(&drel, "create a fifo"))?;
            }
        }
        Ok(())
    }
}

fn io_errno(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Whether a cached layer's entry (its `st_mode` and `st_rdev`, not
/// followed) is a whiteout: a character device 0/0. Never open one.
pub fn is_whiteout(mode: u32, rdev: u64) -> bool {
    mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0
}

/// Which of `layers` (cached layer directories, topmost first) holds what
/// the merged image shows at `rel`, looked up as overlayfs does: a
/// whiteout, or a non-directory on the way, hides every layer below it, and
/// so does an opaque directory. `None`: the image has nothing at `rel`.
/// Nothing is opened; the caller opens the entry in the layer it gets.
pub fn find_in_layers(layers: &[PathBuf], rel: &Path) -> Option<usize> {
    let mut active: Vec<usize> = (0..layers.len()).collect();
    let mut prefix = PathBuf::new();
    let mut parts = rel.components().peekable();
    while let Some(c) = parts.next() {
        prefix.push(c);
        let last = parts.peek().is_none();
        let mut dirs = Vec::new();
        for &i in &active {
            let p = layers[i].join(&prefix);
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if is_whiteout(md.mode(), md.rdev()) {
                break;
            }
            if last {
                return Some(i);
            }
            if !md.is_dir() {
                // Below a directory of an upper layer it is hidden; on
                // its own, nothing can be under it.
                break;
            }
            dirs.push(i);
            if get_xattr_path(&p, OPAQUE_XATTR).is_some_and(|v| v == b"y") {
                break;
            }
        }
        if dirs.is_empty() {
            return None;
        }
        active = dirs;
    }
    None
}
