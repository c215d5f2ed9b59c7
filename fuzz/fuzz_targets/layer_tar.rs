//! The layer applier on a hostile tar, into a temporary directory, asserting
//! that nothing lands outside it.
//!
//! The layer is applied into `D/a/b/root`, three levels under a fixed base
//! `D` (`$TMPDIR/pinfold-fuzz-layer`, so seeds can aim absolute links at
//! it: run one process per machine). Bait sits at every level on the way:
//! `D/bait/f`, `D/a/f`, `D/a/b/bait/f`. Before each input the whole of `D`
//! outside the root is recorded, recursively: each entry's type, size,
//! mode, link count, symlink target, content, and its mtime and ctime to
//! the nanosecond (a ctime moves on any chmod, chown, utimes, xattr or link
//! change; a directory's mtime moves when an entry is created in it or
//! removed from it, even if put back). After the layer, that record must be
//! unchanged: no entry landed outside the root by `..` (up to three levels,
//! then it would reach `$TMPDIR` itself, which other processes share), by
//! an absolute name, or through a symlink or hard link the archive planted.
//! The root is emptied between inputs (never followed, never removed, so
//! its parent's times stay put).
#![no_main]

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pinfold_sandbox::image::Limits;
use pinfold_sandbox::image::layer::{Budget, TarKind, apply_tar, remove_all_at, remove_tree};

struct Dirs {
    base: PathBuf,
    root: PathBuf,
}

fn dirs() -> &'static Dirs {
    static DIRS: OnceLock<Dirs> = OnceLock::new();
    DIRS.get_or_init(|| {
        let base = std::env::temp_dir().join("pinfold-fuzz-layer");
        let _ = remove_tree(&base);
        let root = base.join("a/b/root");
        std::fs::create_dir_all(&root).expect("create the layer root");
        for bait in ["bait/f", "a/f", "a/b/bait/f"] {
            let p = base.join(bait);
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("create the bait");
            std::fs::write(&p, b"bait").expect("write the bait");
        }
        Dirs { base, root }
    })
}

/// One entry outside the root, as far as any write through it would show.
#[derive(Debug, PartialEq)]
struct Seen {
    path: PathBuf,
    mode: u32,
    size: u64,
    nlink: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// A file's content or a symlink's target.
    data: Vec<u8>,
}

fn record(dir: &Path, skip: &Path, out: &mut Vec<Seen>) {
    let m = std::fs::symlink_metadata(dir).expect("stat outside the root");
    let data = if m.file_type().is_symlink() {
        use std::os::unix::ffi::OsStrExt;
        std::fs::read_link(dir)
            .expect("read a link")
            .as_os_str()
            .as_bytes()
            .to_vec()
    } else if m.is_file() {
        std::fs::read(dir).expect("read a file outside the root")
    } else {
        Vec::new()
    };
    out.push(Seen {
        path: dir.to_owned(),
        mode: m.mode(),
        size: m.len(),
        nlink: m.nlink(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        data,
    });
    if m.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("list outside the root")
            .map(|e| e.expect("an entry").path())
            .collect();
        names.sort();
        for p in names {
            if p != skip {
                record(&p, skip, out);
            }
        }
    }
}

fn outside(d: &Dirs) -> Vec<Seen> {
    let mut v = Vec::new();
    record(&d.base, &d.root, &mut v);
    v
}

/// Empties the root without following anything in it, and resets its mode.
fn empty(root: &Path) {
    let fd = std::fs::File::open(root).expect("open the layer root");
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the layer root");
    for e in std::fs::read_dir(root).expect("list the layer root") {
        let e = e.expect("an entry");
        remove_all_at(fd.as_fd(), &e.file_name()).expect("remove a layer entry");
    }
}

fuzz_target!(|data: &[u8]| {
    let d = dirs();
    let before = outside(d);
    let budget = Budget::new(Limits {
        max_bytes: 4 << 20,
        max_entries: 4096,
    });
    let _ = apply_tar(data, &d.root, "fuzz layer", &budget, TarKind::Layer);
    let after = outside(d);
    if after != before {
        let changed: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
        let gone: Vec<_> = before.iter().filter(|s| !after.contains(s)).collect();
        panic!("the layer wrote outside its root: now {changed:#?}, was {gone:#?}");
    }
    empty(&d.root);
});
