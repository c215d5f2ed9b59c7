//! Jobs that another CI system's runner drives one call at a time
//! (`pinfold gitlab-driver`, `pinfold gha-hook`): each call is a new
//! process, and finds the job's directory by an id the first call made.

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
