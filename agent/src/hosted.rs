//! Jobs that another CI system's runner drives one call at a time
//! (`pinfold gitlab-driver`, `pinfold gha-hook`): each call is a new
//! process, and finds the job's directory by an id the first call made,
//! and what the first call decided in the directory's state file.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

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
