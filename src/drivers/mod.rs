//! The CI drivers' process side (`pinfold gitlab-driver`, `pinfold
//! gha-hook`): a job's image and directory ([`jobdir`]), the keeper that
//! holds its job file system and runs its container across the calls the
//! CI's runner makes ([`keeper`]), and what each call does
//! ([`gitlab`], [`gha`]). The pure parts (wire formats, refusals, state)
//! are in `pinfold_agent::{gitlab, gha, hosted}`; the command lines in
//! `cmd/`.

pub mod gha;
pub mod gitlab;
pub mod jobdir;
pub mod keeper;
