//! The job's source: a directory packed as a tar (for `pinfold run`, the
//! same form `pinfold submit` uploads), and a tar unpacked into the
//! workspace.
//!
//! The tar is hostile input (anyone who can submit a job chooses it). It is
//! applied with the image store's layer applier
//! (`pinfold_sandbox::image::layer::apply_tar`, as `TarKind::Plain`): every entry's parent is
//! opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_XDEV)` (`pinfold_sandbox::fs::beneath`, the one openat2
//! helper) from the workspace root and the last component is
//! created with `*at` calls that never follow it, so `..`, absolute names
//! and symlinks planted earlier in the tar cannot reach outside; sizes and
//! entry counts are bounded. A source is no image layer: a `.wh.NAME`
//! entry is an ordinary file, not a whiteout.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use pinfold_sandbox::image::Limits;
use pinfold_sandbox::image::layer::{Budget, LayerError, TarKind, apply_tar};

/// Errors from packing or unpacking a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading the directory or writing the tar failed.
    #[error("packing {path}: {source}")]
    Pack {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The tar was refused or could not be applied.
    #[error("unpacking the source: {0}")]
    Unpack(#[from] LayerError),
}

/// Bounds on what one source tar may unpack to.
pub const LIMITS: Limits = Limits {
    max_bytes: 8 << 30,
    max_entries: 1_000_000,
};

/// Tars `dir` into a temporary file (entries sorted, times and owners
/// zeroed, symlinks stored as links), rewound.
pub fn pack_dir(dir: &Path) -> Result<File, SourceError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| SourceError::Pack { path, source }
    };
    let mut file = tempfile::tempfile().map_err(err(dir))?;
    {
        let mut b = tar::Builder::new(&mut file);
        b.mode(tar::HeaderMode::Deterministic);
        b.follow_symlinks(false);
        add_dir(&mut b, dir, Path::new(""))?;
        b.finish().map_err(err(dir))?;
    }
    file.rewind().map_err(err(dir))?;
    Ok(file)
}

fn add_dir(b: &mut tar::Builder<&mut File>, root: &Path, rel: &Path) -> Result<(), SourceError> {
    let here = root.join(rel);
    let pack = |source| SourceError::Pack {
        path: here.clone(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(&here)
        .map_err(pack)?
        .collect::<Result<_, _>>()
        .map_err(pack)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = rel.join(e.file_name());
        let full = root.join(&path);
        let kind = e.file_type().map_err(pack)?;
        b.append_path_with_name(&full, &path)
            .map_err(|source| SourceError::Pack {
                path: full.clone(),
                source,
            })?;
        if kind.is_dir() {
            add_dir(b, root, &path)?;
        }
    }
    Ok(())
}

/// Unpacks a source tar into the empty directory `workspace`.
pub fn unpack(tar: impl Read, workspace: &Path) -> Result<(), SourceError> {
    apply_tar(
        tar,
        workspace,
        "source",
        &Budget::new(LIMITS),
        TarKind::Plain,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostile_tar(outside: &Path) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "esc", outside).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "esc/pwned", &b"bad"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_source_tar_cannot_write_through_its_own_symlink() {
        let d = tempfile::tempdir().unwrap();
        let (ws, outside) = (d.path().join("ws"), d.path().join("outside"));
        std::fs::create_dir(&ws).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let e = unpack(&hostile_tar(&outside)[..], &ws).unwrap_err();
        assert!(e.to_string().contains("esc"), "{e}");
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn pack_then_unpack_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("b/f", src.join("a/l")).unwrap();
        std::fs::write(src.join("a/.wh.kept"), b"k").unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        unpack(pack_dir(&src).unwrap(), &ws).unwrap();
        assert_eq!(std::fs::read(ws.join("a/b/f")).unwrap(), b"x");
        assert_eq!(std::fs::read(ws.join("a/.wh.kept")).unwrap(), b"k");
        assert_eq!(
            std::fs::read_link(ws.join("a/l")).unwrap(),
            Path::new("b/f")
        );
    }
}
