//! The layer applier on a hostile tar. The layer is applied into
//! `D/root`, beside a bait directory `D/bait` holding one file; afterwards
//! `D` must hold nothing but `root` and `bait`, and the bait must be as it
//! was (same entries, content, modes, times, link count): no entry landed
//! outside the root, and no symlink or hard link the archive planted was
//! followed out of it. `D` is a fixed path (`$TMPDIR/pinfold-fuzz-layer`)
//! so seeds can aim absolute links at it: run one process per machine.
#![no_main]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pinfold_sandbox::image::layer::{Budget, apply_tar, remove_tree};
use pinfold_sandbox::image::Limits;

fn base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let d = std::env::temp_dir().join("pinfold-fuzz-layer");
        let _ = remove_tree(&d);
        std::fs::create_dir_all(d.join("bait")).expect("create the bait");
        std::fs::write(d.join("bait/f"), b"bait").expect("write the bait");
        d
    })
}

/// (name, size, mode, mtime, nlink) of each bait entry, and the bait dir's own.
fn snapshot(bait: &Path) -> Vec<(String, u64, u32, i64, u64)> {
    let mut v = Vec::new();
    let m = std::fs::symlink_metadata(bait).expect("the bait directory");
    v.push((".".into(), 0, m.mode(), m.mtime(), m.nlink()));
    for e in std::fs::read_dir(bait).expect("read the bait") {
        let e = e.expect("a bait entry");
        let m = e.metadata().expect("stat a bait entry");
        v.push((
            e.file_name().to_string_lossy().into_owned(),
            m.len(),
            m.mode(),
            m.mtime(),
            m.nlink(),
        ));
    }
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let base = base();
    let bait = base.join("bait");
    let before = snapshot(&bait);
    let root = base.join("root");
    std::fs::create_dir(&root).expect("create the layer root");
    let budget = Budget::new(Limits {
        max_bytes: 4 << 20,
        max_entries: 4096,
    });
    let _ = apply_tar(data, &root, "fuzz layer", &budget);
    let mut names: Vec<String> = std::fs::read_dir(base)
        .expect("read the base")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bait", "root"], "the layer wrote outside its root");
    assert_eq!(snapshot(&bait), before, "the layer changed a file outside its root");
    assert_eq!(std::fs::read(bait.join("f")).expect("the bait file"), b"bait");
    remove_tree(&root).expect("remove the layer root");
});
