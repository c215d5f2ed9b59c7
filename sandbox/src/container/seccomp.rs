//! Seccomp: a policy's profile compiled to BPF with `seccompiler`, applied last.
//!
//! A profile is seccompiler's JSON format (see `policies/seccomp/pinfold.json`,
//! one comment per rule saying why) with two filters:
//!
//! * `deny`: the syscalls a job may not make → EPERM (modelled on Docker's
//!   default profile, written as a deny list so unknown new syscalls keep working);
//! * `enosys`: `clone3` → ENOSYS, so libc falls back to `clone`, whose flags the
//!   deny filter can inspect (clone3 keeps them in memory, out of seccomp's sight).
//!
//! A third, fixed filter refuses the x32 syscall ABI (numbers with bit 30 set),
//! which shares the x86_64 audit arch and would otherwise walk around the
//! deny list by number. seccompiler matches exact numbers only, so that one is
//! four BPF instructions written here by hand.
//!
//! Compiled programs are cached per profile text for the life of the process.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use seccompiler::{BpfProgram, TargetArch, sock_filter};

use crate::policy::{Policy, PolicyError};

/// Errors from compiling or applying a profile.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // variant fields are described by the messages
pub enum SeccompError {
    /// The profile is not valid seccompiler JSON.
    #[error("seccomp profile {profile}: {message}")]
    Compile { profile: String, message: String },
    /// A filter the profile must have is missing.
    #[error(
        "seccomp profile {profile}: no filter named {filter:?} (a profile needs \"deny\"; \"enosys\" is optional)"
    )]
    MissingFilter {
        profile: String,
        filter: &'static str,
    },
    /// The policy named a profile that could not be read.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// This architecture is not supported.
    #[error("seccomp: unsupported architecture {0}")]
    Arch(String),
}

/// The programs to install, in order.
#[derive(Debug, Clone)]
pub struct Filters {
    /// Where the profile came from.
    pub profile: String,
    /// The BPF programs, installed first to last.
    pub programs: Vec<BpfProgram>,
}

fn cache() -> &'static Mutex<HashMap<String, Vec<BpfProgram>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Vec<BpfProgram>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Refuses every x32 syscall with ENOSYS (see the module docs).
fn x32_guard() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
    const BPF_RET_K: u16 = 0x06;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    vec![
        // Load the syscall number (offset 0 of struct seccomp_data).
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: BPF_JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ]
}

impl Filters {
    /// Compiles the profile a policy names.
    pub fn for_policy(policy: &Policy) -> Result<Filters, SeccompError> {
        let (profile, text) = policy.seccomp_profile_text()?;
        Self::compile(&profile, &text)
    }

    /// Compiles profile JSON text; `profile` names it in errors.
    pub fn compile(profile: &str, text: &str) -> Result<Filters, SeccompError> {
        if let Some(programs) = cache().lock().ok().and_then(|c| c.get(text).cloned()) {
            return Ok(Filters {
                profile: profile.to_owned(),
                programs,
            });
        }
        let arch: TargetArch = std::env::consts::ARCH
            .try_into()
            .map_err(|_| SeccompError::Arch(std::env::consts::ARCH.to_owned()))?;
        let mut map = seccompiler::compile_from_json(text.as_bytes(), arch).map_err(|e| {
            SeccompError::Compile {
                profile: profile.to_owned(),
                message: e.to_string(),
            }
        })?;
        for name in map.keys() {
            if name != "deny" && name != "enosys" {
                return Err(SeccompError::Compile {
                    profile: profile.to_owned(),
                    message: format!("unknown filter {name:?}: use \"deny\" and \"enosys\""),
                });
            }
        }
        let deny = map
            .remove("deny")
            .ok_or_else(|| SeccompError::MissingFilter {
                profile: profile.to_owned(),
                filter: "deny",
            })?;
        let mut programs = Vec::new();
        if let Some(enosys) = map.remove("enosys") {
            programs.push(enosys);
        }
        programs.push(deny);
        if cfg!(target_arch = "x86_64") {
            programs.push(x32_guard());
        }
        if let Ok(mut c) = cache().lock() {
            c.insert(text.to_owned(), programs.clone());
        }
        Ok(Filters {
            profile: profile.to_owned(),
            programs,
        })
    }

    /// Installs every program on the calling thread (needs no_new_privs).
    pub fn apply(&self) -> Result<(), String> {
        for p in &self.programs {
            seccompiler::apply_filter(p).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profile_compiles() {
        let policy = Policy::load("default").unwrap();
        let f = Filters::for_policy(&policy).unwrap();
        assert_eq!(
            f.programs.len(),
            if cfg!(target_arch = "x86_64") { 3 } else { 2 }
        );
        assert!(f.programs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn bad_profiles_are_refused_with_the_name() {
        let err = Filters::compile("p.json", r#"{"deny": {"mismatch_action": "allow", "match_action": {"errno": 1}, "filter": [{"syscall": "no_such_call"}]}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.json") && err.contains("no_such_call"),
            "{err}"
        );
        let err = Filters::compile("q.json", r#"{"enosys": {"mismatch_action": "allow", "match_action": {"errno": 38}, "filter": []}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("deny"), "{err}");
    }
}
