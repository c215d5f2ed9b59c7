//! Jobs that another CI system's runner drives one call at a time
//! (`pinfold gitlab-driver`, `pinfold gha-hook`): each call is a new
//! process, and finds the job's directory by an id the first call made,
//! and what the first call decided in the directory's state file.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, OFlag, ResolveFlag};
use nix::sys::stat::{Mode, fstat};
use pinfold_sandbox::container::Bind;
use pinfold_sandbox::fs::beneath::open_at;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The state file in a job directory.
pub const STATE: &str = "state.json";

/// A job directory's state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("job state {path}: {why}")]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub why: String,
}

/// Writes `state` into `dir`'s state file.
pub fn save_state<T: Serialize>(dir: &Path, state: &T) -> Result<(), StateError> {
    let path = dir.join(STATE);
    let text = serde_json::to_vec_pretty(state).expect("state serializes");
    std::fs::write(&path, text).map_err(|e| StateError {
        path,
        why: e.to_string(),
    })
}

/// Reads `dir`'s state file.
pub fn load_state<T: DeserializeOwned>(dir: &Path) -> Result<T, StateError> {
    let path = dir.join(STATE);
    let text = std::fs::read(&path).map_err(|e| StateError {
        path: path.clone(),
        why: e.to_string(),
    })?;
    serde_json::from_slice(&text).map_err(|e| StateError {
        path,
        why: e.to_string(),
    })
}

/// A host directory bound into every step of a job, pinned when the job
/// was prepared: its path with no symlink left in it, and the directory's
/// identity. The runner's directories can sit inside what a step may
/// write (`_work/_temp/_github_home` is inside `/__w/_temp`): a step could
/// put a symlink or another directory in its place, and the next step would
/// bind whatever that names. [`check_binds`] refuses that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedBind {
    /// The bind, its source canonical.
    pub bind: Bind,
    /// The source's device.
    pub dev: u64,
    /// The source's inode.
    pub ino: u64,
}

/// A bind source is not what the job was prepared with.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The source cannot be resolved or opened.
    #[error("the runner's directory {path} cannot be opened ({why}): a step may have replaced it")]
    Open {
        /// The source.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The source is another directory than at prepare.
    #[error(
        "the runner's directory {0} was replaced during the job (a step swapped it for another): refusing to bind it"
    )]
    Replaced(PathBuf),
}

/// Pins `binds` (at prepare, before any job code runs): each source
/// canonical, with its identity.
pub fn pin_binds(binds: Vec<Bind>) -> Result<Vec<PinnedBind>, BindError> {
    binds
        .into_iter()
        .map(|mut bind| {
            let given = bind.source.clone();
            let open = |why: std::io::Error| BindError::Open {
                path: given.clone(),
                why: why.to_string(),
            };
            bind.source = std::fs::canonicalize(&given).map_err(open)?;
            let m = std::fs::metadata(&bind.source).map_err(open)?;
            Ok(PinnedBind {
                dev: m.dev(),
                ino: m.ino(),
                bind,
            })
        })
        .collect()
}

/// The binds of a step: each source opened again without following any
/// symlink and compared with its pinned identity.
pub fn check_binds(pinned: &[PinnedBind]) -> Result<Vec<Bind>, BindError> {
    pinned
        .iter()
        .map(|p| {
            let path = &p.bind.source;
            let fd = open_at(
                AT_FDCWD,
                path,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY,
                Mode::empty(),
                ResolveFlag::RESOLVE_NO_SYMLINKS,
            )
            .map_err(|e| BindError::Open {
                path: path.clone(),
                why: e.desc().to_string(),
            })?;
            let st = fstat(&fd).map_err(|e| BindError::Open {
                path: path.clone(),
                why: e.desc().to_string(),
            })?;
            if st.st_dev != p.dev || st.st_ino != p.ino {
                return Err(BindError::Replaced(path.clone()));
            }
            Ok(p.bind.clone())
        })
        .collect()
}

/// A new random job id: 32 lowercase hex digits, unguessable, so that a
/// job cannot name another's directory.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("getrandom");
    hex::encode(b)
}

/// Whether `id` is one [`new_id`] makes (and so a plain file name).
pub fn is_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_source_swapped_for_a_symlink_or_another_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("_github_home");
        std::fs::create_dir(&home).unwrap();
        let secret = d.path().join("runner-root");
        std::fs::create_dir(&secret).unwrap();
        let bind = |src: &Path| Bind {
            source: src.to_owned(),
            dest: "/github/home".into(),
            writable: true,
        };
        // Pinned through a symlink in the path: the canonical path is kept.
        std::os::unix::fs::symlink(d.path(), d.path().join("link")).unwrap();
        let pinned = pin_binds(vec![bind(&d.path().join("link/_github_home"))]).unwrap();
        assert_eq!(pinned[0].bind.source, std::fs::canonicalize(&home).unwrap());
        assert_eq!(
            check_binds(&pinned).unwrap()[0].source,
            pinned[0].bind.source
        );
        // A step swaps it for a symlink to the runner's root.
        std::fs::rename(&home, d.path().join("old")).unwrap();
        std::os::unix::fs::symlink(&secret, &home).unwrap();
        let e = check_binds(&pinned).unwrap_err().to_string();
        assert!(e.contains("cannot be opened"), "{e}");
        // Or for another directory.
        std::fs::remove_file(&home).unwrap();
        std::fs::create_dir(&home).unwrap();
        let e = check_binds(&pinned).unwrap_err().to_string();
        assert!(e.contains("was replaced"), "{e}");
    }

    #[test]
    fn new_ids_are_ids_and_paths_are_not() {
        let id = new_id();
        assert!(is_id(&id));
        assert_ne!(new_id(), id);
        for bad in [
            "",
            "42",
            "../../etc",
            &id.to_uppercase(),
            &format!("{id}/.."),
        ] {
            assert!(!is_id(bad), "{bad}");
        }
    }
}
