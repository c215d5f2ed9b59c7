//! One compact seccomp program for pinfold's own profile format: a binary
//! search on the syscall number instead of seccompiler's linear chain.
//!
//! Why hand-written: seccompiler emits, for every rule, a compare-and-jump
//! chain walked top to bottom (387 instructions for pinfold's deny list, ~70
//! syscalls deep for an allowed call), and one program per action, so pinfold
//! installed three filters that the kernel checks, converts and JIT-compiles
//! at every exec and runs one after another on every syscall whose answer
//! the kernel's seccomp cache cannot precompute. No maintained crate emits a
//! decision tree (libseccomp's binary-tree option needs the C library), so
//! this module builds it from the same JSON rules: arch check, then a
//! balanced tree of `jge` over the sorted boundaries of the syscall-number
//! intervals that have a rule, each leaf a `ret` (or, for a syscall with
//! argument rules, a short block of argument checks). x32 numbers (bit 30)
//! are one more interval answered with ENOSYS, so the x32 guard that was a
//! filter of its own is now a leaf.
//!
//! Semantics kept from the filters it replaces (checked instruction by
//! instruction by an emulator in the tests, on every syscall number and on
//! argument values around each rule):
//! * a foreign audit arch (i386 through `int 0x80`) kills the process;
//! * a syscall's rules are OR-ed, a rule's conditions AND-ed; a syscall with
//!   no argument rules always matches;
//! * where two filters of the profile both match, the kernel's precedence
//!   between the installed filters decides (the more restrictive action; at
//!   equal rank, the filter listed last in the program list).

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, sock_filter};

/// BPF opcodes used here (classic BPF, as seccomp takes it).
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// The first x32 syscall number (`__X32_SYSCALL_BIT`).
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// A comparison on one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`.
    MaskedEq(u64),
}

/// One condition: `args[index] OP value`, on the low 32 bits only (`dword`)
/// or on all 64 (`qword`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cond {
    pub index: u8,
    pub qword: bool,
    pub op: Op,
    pub value: u64,
}

/// A syscall's rules (OR-ed; each a list of AND-ed conditions) and the
/// action they give. An empty list matches unconditionally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyscallRules {
    pub rules: Vec<Vec<Cond>>,
    pub action: u32,
}

/// Rank of a seccomp return value: the kernel keeps the lowest action value
/// (`SECCOMP_RET_ACTION_FULL`, compared as signed) across filters.
pub(crate) fn precedence(ret: u32) -> i32 {
    (ret & 0xffff_0000) as i32
}

/// A program for: `arch` checked first (else kill the process), then for
/// each syscall number the first entry of its list whose rules match (the
/// caller orders a number's entries by the precedence the kernel would
/// apply), else `default`; x32 numbers answer ENOSYS.
pub(crate) fn compile(
    arch: u32,
    syscalls: &BTreeMap<u32, Vec<SyscallRules>>,
    default: u32,
) -> Result<BpfProgram, String> {
    // Partition the number space into intervals of equal behaviour: each
    // rule-carrying number is its own interval (unconditional neighbours
    // with the same action merge), the gaps answer `default`.
    let mut leaves: Vec<(u32, Leaf)> = Vec::new();
    let mut push = |start: u32, leaf: Leaf| match leaves.last() {
        Some((_, last)) if *last == leaf => {}
        _ => leaves.push((start, leaf)),
    };
    push(0, Leaf::Ret(default));
    for (&nr, entries) in syscalls {
        if nr >= X32_SYSCALL_BIT {
            return Err(format!("syscall number {nr} is in the x32 range"));
        }
        let leaf = match entries.as_slice() {
            [one] if one.rules.is_empty() => Leaf::Ret(one.action),
            _ => Leaf::Args(entries.clone()),
        };
        push(nr, leaf);
        if nr + 1 < X32_SYSCALL_BIT && !syscalls.contains_key(&(nr + 1)) {
            push(nr + 1, Leaf::Ret(default));
        }
    }
    push(
        X32_SYSCALL_BIT,
        Leaf::Ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    );

    let mut prog = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JMP_JEQ_K, arch, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
    ];
    prog.extend(tree(&leaves, default)?);
    if prog.len() > libc::BPF_MAXINSNS as usize {
        return Err(format!(
            "the filter needs {} BPF instructions, more than the kernel's {}",
            prog.len(),
            libc::BPF_MAXINSNS
        ));
    }
    Ok(prog)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Leaf {
    Ret(u32),
    Args(Vec<SyscallRules>),
}

/// The code for `leaves` (sorted by start; the accumulator holds the
/// syscall number, known to be >= the first start and below the start
/// after the last leaf).
fn tree(leaves: &[(u32, Leaf)], default: u32) -> Result<Vec<sock_filter>, String> {
    if let [(_, leaf)] = leaves {
        return leaf_code(leaf, default);
    }
    let mid = leaves.len() / 2;
    let low = tree(&leaves[..mid], default)?;
    let high = tree(&leaves[mid..], default)?;
    let mut out = Vec::with_capacity(low.len() + high.len() + 2);
    // nr >= start of the upper half: fall into it; else skip over it.
    match u8::try_from(high.len()) {
        Ok(skip) => out.push(jump(JMP_JGE_K, leaves[mid].0, 0, skip)),
        Err(_) => {
            out.push(jump(JMP_JGE_K, leaves[mid].0, 1, 0));
            out.push(stmt(JMP_JA, high.len() as u32));
        }
    }
    out.extend(high);
    out.extend(low);
    Ok(out)
}

fn leaf_code(leaf: &Leaf, default: u32) -> Result<Vec<sock_filter>, String> {
    let entries = match leaf {
        Leaf::Ret(r) => return Ok(vec![stmt(RET_K, *r)]),
        Leaf::Args(entries) => entries,
    };
    // Each rule: its conditions, a failing one jumping to the next rule;
    // all holding → ret its action. No rule matched → the default.
    let mut out = Vec::new();
    for entry in entries {
        if entry.rules.is_empty() {
            // Unconditional: nothing after it can be reached.
            out.push(stmt(RET_K, entry.action));
            return Ok(out);
        }
        for rule in &entry.rules {
            out.extend(rule_code(rule, entry.action)?);
        }
    }
    out.push(stmt(RET_K, default));
    Ok(out)
}

/// A rule's conditions then `ret action`; a failing condition jumps past
/// the `ret` (to the next rule, or the mismatch `ret`).
fn rule_code(conds: &[Cond], action: u32) -> Result<Vec<sock_filter>, String> {
    // Built back to front so each failing jump knows how far the end is.
    let mut out: Vec<sock_filter> = vec![stmt(RET_K, action)];
    for c in conds.iter().rev() {
        let block = cond_code(c, out.len())?;
        let mut v = block;
        v.extend(out);
        out = v;
    }
    Ok(out)
}

/// Code that falls through when `c` holds and jumps `fail` instructions past
/// its own end when it does not.
fn cond_code(c: &Cond, fail: usize) -> Result<Vec<sock_filter>, String> {
    let lo_off = OFF_ARGS + 8 * u32::from(c.index);
    let hi_off = lo_off + 4;
    let (vlo, vhi) = (c.value as u32, (c.value >> 32) as u32);
    let far =
        |n: usize| u8::try_from(n).map_err(|_| "a syscall has too many argument rules".to_owned());
    // Each alternative lists instructions with the failing exit as `F`
    // (resolved to a distance below).
    #[derive(Clone, Copy)]
    enum J {
        F,
        N(u8),
    }
    let mut code: Vec<(u16, u32, J, J)> = Vec::new();
    let ld = |off| (LD_W_ABS, off, J::N(0), J::N(0));
    let and = |k| (ALU_AND_K, k, J::N(0), J::N(0));
    if !c.qword {
        code.push(ld(lo_off));
        match c.op {
            Op::Eq => code.push((JMP_JEQ_K, vlo, J::N(0), J::F)),
            Op::Ne => code.push((JMP_JEQ_K, vlo, J::F, J::N(0))),
            Op::Gt => code.push((JMP_JGT_K, vlo, J::N(0), J::F)),
            Op::Ge => code.push((JMP_JGE_K, vlo, J::N(0), J::F)),
            Op::Lt => code.push((JMP_JGE_K, vlo, J::F, J::N(0))),
            Op::Le => code.push((JMP_JGT_K, vlo, J::F, J::N(0))),
            Op::MaskedEq(m) => {
                code.push(and(m as u32));
                code.push((JMP_JEQ_K, vlo, J::N(0), J::F));
            }
        }
    } else {
        match c.op {
            Op::Eq | Op::MaskedEq(_) => {
                let (mlo, mhi) = match c.op {
                    Op::MaskedEq(m) => (m as u32, (m >> 32) as u32),
                    _ => (u32::MAX, u32::MAX),
                };
                code.push(ld(hi_off));
                if mhi != u32::MAX {
                    code.push(and(mhi));
                }
                code.push((JMP_JEQ_K, vhi, J::N(0), J::F));
                code.push(ld(lo_off));
                if mlo != u32::MAX {
                    code.push(and(mlo));
                }
                code.push((JMP_JEQ_K, vlo, J::N(0), J::F));
            }
            Op::Ne => {
                // hi != vhi → holds (skip the low check); else low decides.
                code.push(ld(hi_off));
                code.push((JMP_JEQ_K, vhi, J::N(0), J::N(2)));
                code.push(ld(lo_off));
                code.push((JMP_JEQ_K, vlo, J::F, J::N(0)));
            }
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                // Compare the high words; equal → the low words decide.
                // (hi > vhi, hi < vhi): past the end when the condition
                // holds, to the failing exit when not.
                let (above, below) = match c.op {
                    Op::Gt | Op::Ge => (J::N(3), J::F),
                    _ => (J::F, J::N(2)),
                };
                code.push(ld(hi_off));
                code.push((JMP_JGT_K, vhi, above, J::N(0)));
                // Not above: equal (go on to the low words) or below.
                code.push((JMP_JEQ_K, vhi, J::N(0), below));
                code.push(ld(lo_off));
                code.push(match c.op {
                    Op::Gt => (JMP_JGT_K, vlo, J::N(0), J::F),
                    Op::Ge => (JMP_JGE_K, vlo, J::N(0), J::F),
                    Op::Lt => (JMP_JGE_K, vlo, J::F, J::N(0)),
                    _ => (JMP_JGT_K, vlo, J::F, J::N(0)),
                });
            }
        }
    }
    let len = code.len();
    code.iter()
        .enumerate()
        .map(|(i, &(op, k, jt, jf))| {
            let resolve = |j: J| match j {
                J::N(n) => Ok(n),
                J::F => far(len - i - 1 + fail),
            };
            Ok(jump(op, k, resolve(jt)?, resolve(jf)?))
        })
        .collect()
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A classic-BPF interpreter for the instructions seccomp filters use, to
/// check programs against each other in tests.
#[cfg(test)]
pub(crate) fn run(prog: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let i = &prog[pc];
        pc += 1;
        match i.code {
            0x20 => {
                let o = i.k as usize;
                acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
            }
            0x54 => acc &= i.k,
            0x05 => pc += i.k as usize,
            0x15 | 0x25 | 0x35 | 0x45 => {
                let t = match i.code {
                    0x15 => acc == i.k,
                    0x25 => acc > i.k,
                    0x35 => acc >= i.k,
                    _ => acc & i.k != 0,
                };
                pc += usize::from(if t { i.jt } else { i.jf });
            }
            0x06 => return i.k,
            other => panic!("unexpected BPF opcode {other:#x} at {}", pc - 1),
        }
    }
}
