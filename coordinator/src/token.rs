//! Tokens: how they are made and the hash they are stored under.
//!
//! Every token is 32 random bytes in hex behind a prefix that says what it
//! is (`pfa_` admin, `pfg_` registration, `pfr_` runner, `pfj_` job). The
//! server stores only sha256 hashes and looks tokens up by hash, so a leaked
//! database does not leak tokens. A leaf: it imports nothing of the crate,
//! so the blob store can name its temporary files with [`new_token`]
//! without reaching the request extractors in [`crate::auth`].

use sha2::{Digest, Sha256};

/// Prefix of admin tokens.
pub const ADMIN_PREFIX: &str = "pfa_";
/// Prefix of registration tokens.
pub const REGISTRATION_PREFIX: &str = "pfg_";
/// Prefix of runner tokens.
pub const RUNNER_PREFIX: &str = "pfr_";
/// Prefix of per-job tokens.
pub const JOB_PREFIX: &str = "pfj_";

/// A fresh random token with `prefix`.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the kernel's random source failed");
    format!("{prefix}{}", hex::encode(bytes))
}

/// The hash a token is stored under (sha256, hex).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hash_stably() {
        let a = new_token(JOB_PREFIX);
        let b = new_token(JOB_PREFIX);
        assert!(a.starts_with("pfj_") && a.len() == 4 + 64 && a != b);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
