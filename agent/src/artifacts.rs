//! Artifacts: files under the workspace matching the job's globs.
//!
//! The workspace is written by the job, so it is hostile: a job can plant
//! `out/app -> /etc/shadow` or make `out` a link to `/`. The tree is walked
//! from a directory fd and every open is `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` with `O_NOFOLLOW`, so no symlink
//! is followed at any component; a match that is a symlink is refused, not
//! uploaded. The file is hashed and copied from the same fd.
//!
//! Globs: `globset` with `literal_separator` (`*` stays within one path
//! component, `**` crosses them), matched against paths relative to
//! /workspace.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, ResolveFlag};
use nix::sys::stat::{Mode, SFlag, fstat};
use pinfold_sandbox::fs::beneath::{open_at, open_beneath};
use sha2::{Digest, Sha256};

/// Errors from collecting artifacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A pattern is not a valid glob.
    #[error("artifact pattern {pattern:?}: {why}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        why: String,
    },
    /// The workspace could not be walked.
    #[error("walking the workspace at {path}: {source}")]
    Walk {
        /// Relative path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
}

/// Most matches a job may upload.
pub const MAX_ARTIFACTS: usize = 1000;
const MAX_DEPTH: usize = 64;

/// A matched file, open, hashed, rewound.
pub struct Artifact {
    /// Path relative to /workspace.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// sha256, hex.
    pub sha256: String,
    /// The open file (read from offset 0).
    pub file: File,
}

/// What collecting found.
#[derive(Default)]
pub struct Collected {
    /// Files to upload, sorted by name.
    pub artifacts: Vec<Artifact>,
    /// Matches refused (symlinks, devices, unreadable) with the reason.
    pub refused: Vec<String>,
    /// Patterns that matched no file.
    pub unmatched: Vec<String>,
}

/// Finds, opens and hashes the files under `workspace` that match `patterns`,
/// `budget` bytes in all at most (the workspace's size: hard links and
/// sparse files would otherwise let a job ship far more than it could
/// hold, onto the runner's disk and the coordinator's); a file past it is
/// refused, unread.
pub fn collect(
    workspace: &Path,
    patterns: &[String],
    budget: u64,
) -> Result<Collected, ArtifactError> {
    let mut left = budget;
    let mut out = Collected::default();
    if patterns.is_empty() {
        return Ok(out);
    }
    let mut globs = Vec::new();
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let g = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| ArtifactError::Pattern {
                pattern: p.clone(),
                why: e.kind().to_string(),
            })?;
        globs.push(g.compile_matcher());
        set.add(g);
    }
    let set = set.build().map_err(|e| ArtifactError::Pattern {
        pattern: patterns.join(" "),
        why: e.to_string(),
    })?;
    let walk_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ArtifactError::Walk { path, source }
    };
    let root = open_at(
        AT_FDCWD,
        workspace,
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Mode::empty(),
        ResolveFlag::empty(),
    )
    .map_err(walk_err(workspace))?;
    let mut matches = Vec::new();
    walk(&root, Path::new(""), 0, &set, &mut matches)?;
    matches.sort();
    for (p, g) in patterns.iter().zip(&globs) {
        if !matches.iter().any(|m| g.is_match(m)) {
            out.unmatched.push(p.clone());
        }
    }
    for rel in matches {
        let name = rel.to_string_lossy().into_owned();
        if out.artifacts.len() >= MAX_ARTIFACTS {
            out.refused
                .push(format!("{name}: more than {MAX_ARTIFACTS} artifacts"));
            continue;
        }
        match open_file(&root, &rel, &mut left, budget) {
            // Hidden names (`.git/hooks/pre-commit`, `.env`) act on whoever
            // unpacks the artifacts; the coordinator refuses them as well.
            Ok(Some((file, size, sha256))) => match pinfold_api::wire::check_artifact_name(&name) {
                Err(e) => out.refused.push(format!("{name}: refused: {e}")),
                Ok(()) => out.artifacts.push(Artifact {
                    name,
                    size,
                    sha256,
                    file,
                }),
            },
            Ok(None) => {} // a directory matched a pattern: not an artifact
            Err(why) => out.refused.push(format!("{name}: {why}")),
        }
    }
    Ok(out)
}

fn walk(
    root: &OwnedFd,
    rel: &Path,
    depth: usize,
    set: &GlobSet,
    out: &mut Vec<PathBuf>,
) -> Result<(), ArtifactError> {
    let fd = open_beneath(root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(|source| {
        ArtifactError::Walk {
            path: rel.to_owned(),
            source,
        }
    })?;
    let dir = nix::dir::Dir::from_fd(fd).map_err(|source| ArtifactError::Walk {
        path: rel.to_owned(),
        source,
    })?;
    let mut subdirs = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|source| ArtifactError::Walk {
            path: rel.to_owned(),
            source,
        })?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let path = rel.join(name);
        if path.to_str().is_some() && set.is_match(&path) {
            out.push(path.clone());
        }
        if entry.file_type() == Some(nix::dir::Type::Directory) && depth < MAX_DEPTH {
            subdirs.push(path);
        }
    }
    for d in subdirs {
        walk(root, &d, depth + 1, set, out)?;
    }
    Ok(())
}

/// Opens a regular file without following any symlink, hashes it, rewinds.
fn open_file(
    root: &OwnedFd,
    rel: &Path,
    left: &mut u64,
    budget: u64,
) -> Result<Option<(File, u64, String)>, String> {
    let fd = match open_beneath(root, rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => {
            return Err(
                "refused: a symlink (artifacts are never followed out of /workspace)".into(),
            );
        }
        Err(e) => return Err(format!("cannot open: {e}")),
    };
    let st = fstat(&fd).map_err(|e| format!("stat: {e}"))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFDIR {
        return Ok(None);
    }
    if kind != SFlag::S_IFREG {
        return Err("refused: not a regular file".into());
    }
    let refuse = || {
        format!(
            "refused: {} bytes would take the artifacts past {} (policy filesystem.workspace_size)",
            st.st_size,
            pinfold_api::units::ByteSize(budget)
        )
    };
    if st.st_size as u64 > *left {
        return Err(refuse());
    }
    let mut file = File::from(fd);
    // At most what is left, should the file have grown since fstat.
    let (size, sha) = hash(&mut (&mut file).take(*left)).map_err(|e| format!("read: {e}"))?;
    if size < st.st_size as u64 {
        return Err(format!("read: {size} of {} bytes", st.st_size));
    }
    *left -= size;
    file.rewind().map_err(|e| format!("rewind: {e}"))?;
    Ok(Some((file, size, sha)))
}

/// sha256 and length of everything `r` yields.
pub fn hash(r: &mut dyn Read) -> io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n_total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((n_total, hex::encode(h.finalize())));
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
}

/// sha256 of the whole file, from its start; the file is left rewound to
/// its start, ready to be read again (a source tar, before it is unpacked
/// or uploaded).
pub fn hash_file(f: &mut File) -> io::Result<String> {
    f.rewind()?;
    let (_, sha) = hash(f)?;
    f.rewind()?;
    Ok(sha)
}

/// Copies an artifact to `out/NAME`, making the directories on the way:
/// delivery into a directory (`pinfold run --out`, `pinfold verify`). The
/// name is relative and free of `..` (the artifact walk never yields one).
pub fn copy_to_dir(out: &Path, art: &mut Artifact) -> Result<(), String> {
    let dest = out.join(&art.name);
    if let Some(p) = dest.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let mut f = File::create(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    io::copy(&mut art.file, &mut f).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace holding `files` (path relative to it, contents), with
    /// the directories on the way made.
    fn workspace(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            let path = d.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        d
    }

    #[test]
    fn matches_within_the_workspace_and_refuses_symlinks() {
        let d = workspace(&[
            ("out/app", b"app"),
            ("out/deep/x.tar.gz", b"x"),
            ("secret", b"s"),
        ]);
        let ws = d.path();
        std::os::unix::fs::symlink("/etc/passwd", ws.join("out/evil")).unwrap();
        std::os::unix::fs::symlink("..", ws.join("up")).unwrap();
        let pats = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = collect(
            ws,
            &pats(&["out/*", "up/*", "**/*.tar.gz", "none/*"]),
            1 << 20,
        )
        .unwrap();
        let names: Vec<_> = c.artifacts.iter().map(|a| a.name.as_str()).collect();
        // `*` stays in one component; `up/*` never walks through the link.
        assert_eq!(names, ["out/app", "out/deep/x.tar.gz"]);
        assert_eq!(c.artifacts[0].size, 3);
        assert_eq!(c.artifacts[0].sha256, hex::encode(Sha256::digest(b"app")));
        assert_eq!(c.refused.len(), 1, "{:?}", c.refused);
        assert!(c.refused[0].starts_with("out/evil: refused: a symlink"));
        assert_eq!(c.unmatched, ["up/*", "none/*"]);
    }

    #[test]
    fn hidden_names_are_refused() {
        let d = workspace(&[
            (".git/hooks/pre-commit", b"#!/bin/sh"),
            (".env", b"K=V"),
            ("app", b"app"),
        ]);
        let ws = d.path();
        let c = collect(ws, &["**".to_string()], 1 << 20).unwrap();
        let names: Vec<_> = c.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["app"]);
        assert_eq!(c.refused.len(), 2, "{:?}", c.refused);
        assert!(
            c.refused.iter().all(|r| r.contains("starting with '.'")),
            "{:?}",
            c.refused
        );
    }

    #[test]
    fn sparse_files_and_hard_links_cannot_ship_more_than_the_workspace_holds() {
        // The hostile review's attack: a 1G sparse file and 20 links to one
        // 4K file, from an 8K-block workspace, used to reach the runner's
        // disk in full.
        let d = tempfile::tempdir().unwrap();
        let ws = d.path();
        std::fs::write(ws.join("h0"), vec![7u8; 4096]).unwrap();
        for i in 1..20 {
            std::fs::hard_link(ws.join("h0"), ws.join(format!("h{i}"))).unwrap();
        }
        let f = std::fs::File::create(ws.join("sparse")).unwrap();
        f.set_len(1 << 30).unwrap();
        let c = collect(ws, &["h*".to_string(), "sparse".to_string()], 10 << 10).unwrap();
        let shipped: u64 = c.artifacts.iter().map(|a| a.size).sum();
        assert_eq!(shipped, 8192, "two links fit in 10K: {:?}", c.refused);
        assert_eq!(c.refused.len(), 19, "{:?}", c.refused);
        assert!(
            c.refused
                .iter()
                .all(|r| r.contains("past 10K (policy filesystem.workspace_size)")),
            "{:?}",
            c.refused
        );
    }
}
