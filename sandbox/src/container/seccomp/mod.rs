//! Seccomp: a policy's profile compiled to BPF with `seccompiler`, applied last.
//!
//! A profile is either a Docker/OCI seccomp profile (see [`docker`], detected
//! by its `defaultAction` key) or pinfold's format, seccompiler's JSON read by
//! [`profile`] (see `policies/seccomp/pinfold.json`, one comment per rule
//! saying why, and an `allowed` list of what passes on purpose) with up to
//! three filters:
//!
//! * `eafnosupport`: `socket`/`socketpair` of an address family outside
//!   AF_UNIX, AF_INET, AF_INET6, AF_NETLINK → EAFNOSUPPORT;
//! * `deny`: the syscalls a job may not make → EPERM (modelled on Docker's
//!   default profile, written as a deny list so unknown new syscalls keep working);
//! * `enosys`: `clone3` → ENOSYS, so libc falls back to `clone`, whose flags the
//!   deny filter can inspect (clone3 keeps them in memory, out of seccomp's
//!   sight), and calls whose callers fall back on ENOSYS (`listmount`…).
//!
//! The x32 syscall ABI (numbers with bit 30 set) shares the x86_64 audit arch
//! and would otherwise walk around the deny list by number: it is refused
//! with ENOSYS.
//!
//! On x86_64 a profile in pinfold's format whose filters all allow what they
//! do not match (a deny list, as the shipped one) is compiled by [`tree`] into
//! **one** program: arch check, then a binary search on the syscall number
//! (`policies/seccomp/pinfold.json`: one program of 236 instructions, about
//! a dozen evaluated per call, instead of three programs of 10 + 387 + 4
//! instructions walked linearly). seccompiler still parses and validates the profile (its errors
//! are the ones users see), and the tests check the tree against its output.
//! Other profiles (Docker's format, allow lists) keep seccompiler's programs
//! plus a four-instruction x32 guard written here by hand.
//!
//! Compiled programs are cached per profile text: in memory for the life of
//! the process, and on disk under `$PINFOLD_HOME/cache/seccomp/` keyed by the
//! sha256 of pinfold's version, the architecture and the profile text, so each
//! policy's BPF is built once. A cache file carries a checksum of its own; a
//! damaged one is ignored and rebuilt, never used.

mod docker;
mod profile;
mod tree;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompFilter, SeccompRule,
    TargetArch, sock_filter,
};
use sha2::{Digest, Sha256};

use crate::policy::{Policy, PolicyError};
use crate::settings::Settings;

/// Errors from compiling or applying a profile.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // variant fields are described by the messages
pub enum SeccompError {
    /// The profile is not valid seccompiler JSON.
    #[error("seccomp profile {profile}: {message}")]
    Compile { profile: String, message: String },
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
    /// Compiles the profile a policy names (or loads it from the disk cache
    /// under the home of `settings`, where its policy search directories
    /// find a named profile).
    pub fn for_policy(policy: &Policy, settings: &Settings) -> Result<Filters, SeccompError> {
        let (profile, text) = policy.seccomp_profile_text(&settings.policy_dirs())?;
        let key = cache_key(&text);
        let path = settings
            .seccomp_cache()
            .map(|c| c.join(format!("{key}.bpf")));
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
        let parsed = if docker::is_docker_profile(text) {
            None
        } else {
            Some(
                profile::parse(text).map_err(|message| SeccompError::Compile {
                    profile: profile.to_owned(),
                    message,
                })?,
            )
        };
        let tree = match &parsed {
            Some(p) => compile_tree(profile, p)?,
            None => None,
        };
        let programs = match tree {
            // The tree answers x32 numbers itself.
            Some(tree) => vec![tree],
            None => {
                let mut programs = match &parsed {
                    Some(p) => compile_seccompiler(profile, p)?,
                    None => docker::compile(profile, text)?,
                };
                if cfg!(target_arch = "x86_64") {
                    programs.push(x32_guard());
                }
                programs
            }
        };
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

/// Compiles a pinfold-format profile (see [`profile`]) to seccompiler's
/// programs, one per filter, in installation order.
fn compile_seccompiler(
    profile: &str,
    parsed: &profile::Profile,
) -> Result<Vec<BpfProgram>, SeccompError> {
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH.to_owned()))?;
    let bad = |message: String| SeccompError::Compile {
        profile: profile.to_owned(),
        message,
    };
    let mut programs = Vec::new();
    for f in &parsed.filters {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for (&nr, conds) in &f.syscalls {
            let list = conds
                .iter()
                .map(|c| {
                    let c = c
                        .iter()
                        .map(profile::Cond::to_seccompiler)
                        .collect::<Result<Vec<_>, _>>()?;
                    SeccompRule::new(c).map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("filter {}: {e}", f.name)))?;
            rules.insert(i64::from(nr), list);
        }
        let filter = SeccompFilter::new(rules, f.mismatch.clone(), f.matched.clone(), arch)
            .map_err(|e| bad(format!("filter {}: {e}", f.name)))?;
        programs.push(BpfProgram::try_from(filter).map_err(|e| bad(e.to_string()))?);
    }
    Ok(programs)
}

/// The one-program form of a pinfold-format profile (see [`tree`]), or
/// `None` where it does not apply: not x86_64, or a filter that does not
/// allow what it leaves unmatched (an allow list), whose combination with
/// the other filter the seccompiler programs express directly.
fn compile_tree(
    profile: &str,
    parsed: &profile::Profile,
) -> Result<Option<BpfProgram>, SeccompError> {
    if !cfg!(target_arch = "x86_64") {
        return Ok(None);
    }
    let bad = |message: String| SeccompError::Compile {
        profile: profile.to_owned(),
        message,
    };
    // Validation first, with seccompiler's own messages.
    compile_seccompiler(profile, parsed)?;
    // In installation order: the kernel runs the last-installed filter
    // first and keeps its answer at equal precedence.
    let installed = &parsed.filters;
    if installed.iter().any(|f| f.mismatch != SeccompAction::Allow) {
        return Ok(None);
    }
    let mut syscalls: BTreeMap<u32, Vec<(usize, tree::SyscallRules)>> = BTreeMap::new();
    for (i, f) in installed.iter().enumerate() {
        let action = u32::from(f.matched.clone());
        for (&nr, rules) in &f.syscalls {
            let rules = rules
                .iter()
                .map(|conds| {
                    conds
                        .iter()
                        .map(|c| tree::Cond {
                            index: c.index,
                            qword: c.len == SeccompCmpArgLen::Qword,
                            op: match c.op {
                                SeccompCmpOp::Eq => tree::Op::Eq,
                                SeccompCmpOp::Ne => tree::Op::Ne,
                                SeccompCmpOp::Lt => tree::Op::Lt,
                                SeccompCmpOp::Le => tree::Op::Le,
                                SeccompCmpOp::Gt => tree::Op::Gt,
                                SeccompCmpOp::Ge => tree::Op::Ge,
                                SeccompCmpOp::MaskedEq(m) => tree::Op::MaskedEq(m),
                            },
                            value: c.val,
                        })
                        .collect()
                })
                .collect();
            syscalls
                .entry(nr)
                .or_default()
                .push((i, tree::SyscallRules { rules, action }));
        }
    }
    let syscalls = syscalls
        .into_iter()
        .map(|(nr, mut entries)| {
            // Most restrictive action first; at equal rank the filter
            // installed last (the kernel's choice).
            entries.sort_by_key(|(i, e)| (tree::precedence(e.action), std::cmp::Reverse(*i)));
            (nr, entries.into_iter().map(|(_, e)| e).collect())
        })
        .collect();
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    tree::compile(AUDIT_ARCH_X86_64, &syscalls, libc::SECCOMP_RET_ALLOW)
        .map(Some)
        .map_err(bad)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cache_key(text: &str) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    // The compiler's own version: a change of the generated code must not
    // load programs cached by an older pinfold of the same version.
    h.update([0]);
    h.update("tree-1");
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
        let policy = Policy::load("default", &[]).unwrap();
        let f = Filters::for_policy(&policy, &crate::Settings::default()).unwrap();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(f.programs.len(), 1, "one tree program");
            assert!(
                f.programs[0].len() <= 260,
                "{} instructions",
                f.programs[0].len()
            );
        } else {
            assert_eq!(f.programs.len(), 2);
        }
        assert!(f.programs.iter().all(|p| !p.is_empty()));
    }

    /// What the kernel answers for a list of installed programs: the most
    /// restrictive action, at a tie the last-installed program's.
    #[cfg(target_arch = "x86_64")]
    fn kernel_answer(programs: &[BpfProgram], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut ret = libc::SECCOMP_RET_ALLOW;
        for p in programs.iter().rev() {
            let r = tree::run(p, nr, arch, args);
            if tree::precedence(r) < tree::precedence(ret) {
                ret = r;
            }
        }
        ret
    }

    /// The tree gives the same answer as the three programs it replaces,
    /// for every syscall number, x32 numbers, a foreign arch, and argument
    /// values around each argument rule of the shipped profile.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tree_matches_the_seccompiler_programs() {
        let (_, text) = Policy::load("default", &[])
            .unwrap()
            .seccomp_profile_text(&[])
            .unwrap();
        let parsed = profile::parse(&text).unwrap();
        let mut chain = compile_seccompiler("pinfold.json", &parsed).unwrap();
        chain.push(x32_guard());
        let tree = compile_tree("pinfold.json", &parsed).unwrap().unwrap();
        const X86_64: u32 = 0xc000_003e;
        const I386: u32 = 0x4000_0003;
        let mut args_set: Vec<[u64; 6]> = vec![[0; 6], [u64::MAX; 6]];
        for bit in 0..64 {
            args_set.push([1 << bit, 1 << bit, 0, 0, 0, 0]);
        }
        for flags in [
            libc::SIGCHLD as u64,
            0x1200011,
            0x7e020000,
            0x10000000 | (1 << 40),
        ] {
            args_set.push([flags, 0, 0, 0, 0, 0]);
        }
        for cmd in [
            0x5412u64,
            0x541c,
            0x5413,
            0x1_0000_5412,
            0xffff_ffff_0000_541c,
        ] {
            args_set.push([1, cmd, 0, 0, 0, 0]);
        }
        for family in [0u64, 1, 2, 10, 16, 17, 38, 40, 44, 1 << 32 | 1] {
            args_set.push([family, 1, 0, 0, 0, 0]);
        }
        let mut numbers: Vec<u32> = (0..1024).collect();
        numbers.extend([
            tree::X32_SYSCALL_BIT,
            tree::X32_SYSCALL_BIT + 165,
            tree::X32_SYSCALL_BIT + 0x3fff_ffff,
            0x8000_0000,
            u32::MAX,
        ]);
        let mut checked = 0;
        for &nr in &numbers {
            for arch in [X86_64, I386] {
                for args in &args_set {
                    let want = kernel_answer(&chain, nr, arch, *args);
                    let got = tree::run(&tree, nr, arch, *args);
                    assert_eq!(got, want, "nr {nr} arch {arch:#x} args {args:x?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 100_000);
        // Spot checks that the comparison is not vacuous.
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        assert_eq!(
            tree::run(&tree, libc::SYS_mount as u32, X86_64, [0; 6]),
            eperm
        );
        assert_eq!(
            tree::run(&tree, libc::SYS_clone3 as u32, X86_64, [0; 6]),
            enosys
        );
        assert_eq!(
            tree::run(&tree, libc::SYS_read as u32, X86_64, [0; 6]),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(
            tree::run(
                &tree,
                libc::SYS_ioctl as u32,
                X86_64,
                [0, 0x1_0000_5412, 0, 0, 0, 0]
            ),
            eperm
        );
        assert_eq!(
            tree::run(
                &tree,
                libc::SYS_clone as u32,
                X86_64,
                [0x10000000, 0, 0, 0, 0, 0]
            ),
            eperm
        );
        assert_eq!(
            tree::run(&tree, 1, I386, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            tree::run(&tree, tree::X32_SYSCALL_BIT + 165, X86_64, [0; 6]),
            enosys
        );
    }

    /// The shipped profile's socket rule: the four kept families pass, every
    /// other family (and socketpair's) answers EAFNOSUPPORT, on the low 32
    /// bits as the kernel reads the int.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn socket_families_outside_the_kept_four_answer_eafnosupport() {
        let policy = Policy::load("default", &[]).unwrap();
        let tree = &Filters::for_policy(&policy, &crate::Settings::default())
            .unwrap()
            .programs[0];
        const X86_64: u32 = 0xc000_003e;
        let refused = libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;
        for nr in [libc::SYS_socket, libc::SYS_socketpair] {
            for family in 0..64u64 {
                let want = if [1, 2, 10, 16].contains(&family) {
                    libc::SECCOMP_RET_ALLOW
                } else {
                    refused
                };
                for high in [0, 1 << 32] {
                    let got = tree::run(tree, nr as u32, X86_64, [family | high, 1, 0, 0, 0, 0]);
                    assert_eq!(got, want, "syscall {nr} family {family} high {high:#x}");
                }
            }
            assert_eq!(
                tree::run(tree, nr as u32, X86_64, [40, 1, 0, 0, 0, 0]),
                refused
            );
        }
    }

    /// Every comparison operator on 32 and 64 bits against direct evaluation,
    /// around the boundaries where high and low words interact.
    #[test]
    fn tree_argument_operators() {
        use tree::{Cond, Op, SyscallRules};
        let values: Vec<u64> = vec![
            0,
            1,
            7,
            8,
            9,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0007,
            0x1_0000_0008,
            0x1_0000_0009,
            0x2_0000_0008,
            0xffff_ffff_ffff_ffff,
            0x8000_0000_0000_0008,
        ];
        let ops = [
            Op::Eq,
            Op::Ne,
            Op::Lt,
            Op::Le,
            Op::Gt,
            Op::Ge,
            Op::MaskedEq(0xff00_0000_00ff),
            Op::MaskedEq(0x8),
        ];
        let holds = |op: Op, a: u64, v: u64| match op {
            Op::Eq => a == v,
            Op::Ne => a != v,
            Op::Lt => a < v,
            Op::Le => a <= v,
            Op::Gt => a > v,
            Op::Ge => a >= v,
            Op::MaskedEq(m) => a & m == v,
        };
        let deny = libc::SECCOMP_RET_ERRNO | 1;
        for qword in [false, true] {
            for op in ops {
                for &v in &[8u64, 0x1_0000_0008, 0x8] {
                    if !qword && v > u32::MAX as u64 {
                        continue;
                    }
                    let cond = Cond {
                        index: 2,
                        qword,
                        op,
                        value: v,
                    };
                    let mut map = BTreeMap::new();
                    map.insert(
                        100,
                        vec![SyscallRules {
                            rules: vec![vec![cond]],
                            action: deny,
                        }],
                    );
                    let prog = tree::compile(0xc000_003e, &map, libc::SECCOMP_RET_ALLOW).unwrap();
                    for &a in &values {
                        let seen = if qword { a } else { a & 0xffff_ffff };
                        let (op_v, v_cmp) = match op {
                            Op::MaskedEq(m) if !qword => (Op::MaskedEq(m & 0xffff_ffff), v),
                            _ => (op, v),
                        };
                        let want = if holds(op_v, seen, v_cmp) {
                            deny
                        } else {
                            libc::SECCOMP_RET_ALLOW
                        };
                        let got = tree::run(&prog, 100, 0xc000_003e, [0, 0, a, 0, 0, 0]);
                        assert_eq!(got, want, "{op:?} qword={qword} arg {a:#x} value {v:#x}");
                        // Neighbouring numbers are untouched.
                        assert_eq!(
                            tree::run(&prog, 99, 0xc000_003e, [0, 0, a, 0, 0, 0]),
                            libc::SECCOMP_RET_ALLOW
                        );
                        assert_eq!(
                            tree::run(&prog, 101, 0xc000_003e, [0, 0, a, 0, 0, 0]),
                            libc::SECCOMP_RET_ALLOW
                        );
                    }
                }
            }
        }
    }

    /// A tree larger than a conditional jump's reach (255) still works.
    #[test]
    fn tree_with_long_jumps() {
        let mut map = BTreeMap::new();
        for nr in (0..900).step_by(2) {
            map.insert(
                nr,
                vec![tree::SyscallRules {
                    rules: vec![],
                    action: libc::SECCOMP_RET_ERRNO | nr,
                }],
            );
        }
        let prog = tree::compile(0xc000_003e, &map, libc::SECCOMP_RET_ALLOW).unwrap();
        assert!(prog.len() > 600);
        for nr in 0..1000u32 {
            let want = if nr < 900 && nr % 2 == 0 {
                libc::SECCOMP_RET_ERRNO | nr
            } else {
                libc::SECCOMP_RET_ALLOW
            };
            assert_eq!(tree::run(&prog, nr, 0xc000_003e, [0; 6]), want, "nr {nr}");
        }
    }

    #[test]
    fn disk_cache_round_trips_and_rejects_damage() {
        let policy = Policy::load("default", &[]).unwrap();
        let compiled = Filters::for_policy(&policy, &crate::Settings::default())
            .unwrap()
            .programs;
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
