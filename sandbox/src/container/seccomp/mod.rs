//! Seccomp: a policy's profile compiled to BPF with `seccompiler`, applied last.
//!
//! A profile is either a Docker/OCI seccomp profile (see [`docker`], detected
//! by its `defaultAction` key) or seccompiler's JSON format (see `policies/seccomp/pinfold.json`,
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
//! Compiled programs are cached per profile text: in memory for the life of
//! the process, and on disk under `$PINFOLD_HOME/cache/seccomp/` keyed by the
//! sha256 of pinfold's version, the architecture and the profile text, so each
//! policy's BPF is built once. A cache file carries a checksum of its own; a
//! damaged one is ignored and rebuilt, never used.

mod docker;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use seccompiler::{BpfProgram, TargetArch, sock_filter};
use sha2::{Digest, Sha256};

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
    /// Compiles the profile a policy names (or loads it from the disk cache).
    pub fn for_policy(policy: &Policy) -> Result<Filters, SeccompError> {
        let (profile, text) = policy.seccomp_profile_text()?;
        let key = cache_key(&text);
        let path =
            crate::pinfold_home().map(|h| h.join("cache/seccomp").join(format!("{key}.bpf")));
        if let Some(programs) = path.as_deref().and_then(|p| load_cached(p, &key)) {
            return Ok(Filters { profile, programs });
        }
        let filters = Self::compile(&profile, &text)?;
        if let Some(p) = &path
            && let Err(e) = store_cached(p, &key, &filters.programs)
        {
            tracing::debug!(path = %p.display(), error = %e, "cannot cache the seccomp filter");
        }
        Ok(filters)
    }

    /// Compiles profile JSON text; `profile` names it in errors.
    pub fn compile(profile: &str, text: &str) -> Result<Filters, SeccompError> {
        if let Some(programs) = cache().lock().ok().and_then(|c| c.get(text).cloned()) {
            return Ok(Filters {
                profile: profile.to_owned(),
                programs,
            });
        }
        let mut programs = if docker::is_docker_profile(text) {
            docker::compile(profile, text)?
        } else {
            compile_seccompiler(profile, text)?
        };
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
    /// Later programs are evaluated first by the kernel.
    pub fn apply(&self) -> Result<(), String> {
        for p in &self.programs {
            seccompiler::apply_filter(p).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// pinfold's own format: seccompiler JSON with a `deny` and an optional `enosys` filter.
fn compile_seccompiler(profile: &str, text: &str) -> Result<Vec<BpfProgram>, SeccompError> {
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
    Ok(programs)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cache_key(text: &str) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update([0]);
    h.update(std::env::consts::ARCH);
    h.update([0]);
    h.update(text);
    hex(&h.finalize())
}

/// File format: for each program a little-endian u32 length then its
/// instructions (u16 code, u8 jt, u8 jf, u32 k); then sha256(key ‖ payload).
fn encode(programs: &[BpfProgram]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in programs {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        for i in p {
            out.extend_from_slice(&i.code.to_le_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_le_bytes());
        }
    }
    out
}

fn checksum(key: &str, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(payload);
    h.finalize().into()
}

fn decode(payload: &[u8]) -> Option<Vec<BpfProgram>> {
    let mut programs = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let bytes = tail.get(..len.checked_mul(8)?)?;
        let program = bytes
            .chunks_exact(8)
            .map(|c| sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        programs.push(program);
        rest = &tail[len * 8..];
    }
    (!programs.is_empty()).then_some(programs)
}

fn load_cached(path: &std::path::Path, key: &str) -> Option<Vec<BpfProgram>> {
    let data = std::fs::read(path).ok()?;
    let (payload, sum) = data.split_last_chunk::<32>()?;
    if checksum(key, payload) != *sum {
        tracing::warn!(path = %path.display(), "ignoring a damaged seccomp cache file");
        return None;
    }
    decode(payload)
}

fn store_cached(path: &std::path::Path, key: &str, programs: &[BpfProgram]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir)?;
    let mut data = encode(programs);
    let sum = checksum(key, &data);
    data.extend_from_slice(&sum);
    // Write beside, then rename: concurrent runs never see half a file.
    let tmp = dir.join(format!(".{key}.{}", std::process::id()));
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, path)
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
    fn disk_cache_round_trips_and_rejects_damage() {
        let policy = Policy::load("default").unwrap();
        let compiled = Filters::for_policy(&policy).unwrap().programs;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bpf");
        store_cached(&path, "k", &compiled).unwrap();
        assert_eq!(load_cached(&path, "k").unwrap(), compiled);
        assert!(load_cached(&path, "other key").is_none());
        let mut data = std::fs::read(&path).unwrap();
        data[10] ^= 1;
        std::fs::write(&path, &data).unwrap();
        assert!(load_cached(&path, "k").is_none(), "a flipped bit is caught");
        std::fs::write(&path, &data[..data.len() - 40]).unwrap();
        assert!(load_cached(&path, "k").is_none(), "truncation is caught");
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
