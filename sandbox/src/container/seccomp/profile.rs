//! pinfold's profile format (`policies/seccomp/pinfold.json`), read here
//! rather than by seccompiler's JSON front end so that syscall names come
//! from the `syscalls` crate's tables, which know the kernel's newest calls
//! (seccompiler 0.5 has no `open_tree_attr`, `setxattrat`, `file_getattr`…).
//!
//! A profile is an object of filters, each seccompiler's shape
//! (`mismatch_action`, `match_action`, `filter` of rules, a `comment` on any
//! rule or condition), installed in the order of [`FILTERS`], plus an
//! optional `allowed` list of groups (`comment`, `syscalls`): the syscalls
//! the profile lets through *on purpose*. A unit test requires every number
//! of this architecture's table to be in a filter or in `allowed`, so a
//! syscall new to the table is decided by someone before it ships.
//!
//! A name this architecture does not have but another one does (`socketcall`
//! on x86_64) is accepted and skipped; a name no table knows is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition};
use serde::Deserialize;

/// The filters a profile may have, in installation order (the kernel runs
/// the last-installed first and, between two errnos, keeps its answer).
pub(crate) const FILTERS: [&str; 3] = ["enosys", "eafnosupport", "deny"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    enosys: Option<RawFilter>,
    #[serde(default)]
    eafnosupport: Option<RawFilter>,
    #[serde(default)]
    deny: Option<RawFilter>,
    #[serde(default)]
    allowed: Vec<AllowedGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(alias = "default_action")]
    mismatch_action: SeccompAction,
    #[serde(alias = "filter_action")]
    match_action: SeccompAction,
    filter: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    syscall: String,
    #[serde(default)]
    args: Option<Vec<Cond>>,
    #[serde(default, rename = "comment")]
    _comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowedGroup {
    #[serde(rename = "comment")]
    _comment: String,
    syscalls: Vec<String>,
}

/// One condition: `args[index] OP val` on 32 (`dword`) or 64 (`qword`) bits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cond {
    pub index: u8,
    #[serde(rename = "type")]
    pub len: SeccompCmpArgLen,
    pub op: SeccompCmpOp,
    pub val: u64,
    #[serde(default, rename = "comment")]
    _comment: Option<String>,
}

impl Cond {
    /// seccompiler's form (which also checks the index and the value).
    pub(crate) fn to_seccompiler(&self) -> Result<SeccompCondition, String> {
        SeccompCondition::new(self.index, self.len.clone(), self.op.clone(), self.val)
            .map_err(|e| e.to_string())
    }
}

/// One filter, its names resolved for this architecture.
#[derive(Debug)]
pub(crate) struct Filter {
    pub name: &'static str,
    pub mismatch: SeccompAction,
    pub matched: SeccompAction,
    /// Syscall number → its rules (OR-ed lists of AND-ed conditions); an
    /// empty list matches unconditionally.
    pub syscalls: BTreeMap<u32, Vec<Vec<Cond>>>,
    /// Every name the filter lists, this architecture's or not.
    pub names: BTreeSet<String>,
}

/// A parsed profile.
#[derive(Debug)]
pub(crate) struct Profile {
    /// Present filters, in installation order.
    pub filters: Vec<Filter>,
    /// The syscalls allowed on purpose.
    #[cfg_attr(not(test), allow(dead_code))] // read by the coverage test
    pub allowed: BTreeSet<String>,
}

/// This architecture's number for `name`; `Ok(None)` for a syscall only
/// other architectures have; an error for a name no table knows.
fn resolve(name: &str) -> Result<Option<u32>, String> {
    if let Ok(s) = syscalls::Sysno::from_str(name) {
        return Ok(Some(s.id() as u32));
    }
    let elsewhere = syscalls::x86::Sysno::from_str(name).is_ok()
        || syscalls::x86_64::Sysno::from_str(name).is_ok()
        || syscalls::aarch64::Sysno::from_str(name).is_ok()
        || syscalls::riscv64::Sysno::from_str(name).is_ok();
    if elsewhere {
        Ok(None)
    } else {
        Err(format!("unknown syscall {name:?}"))
    }
}

/// Parses and checks a profile; errors are one line, without the text.
pub(crate) fn parse(text: &str) -> Result<Profile, String> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if raw.deny.is_none() {
        return Err(format!(
            "no filter named \"deny\" (a profile needs \"deny\"; {:?} are optional)",
            &FILTERS[..2]
        ));
    }
    let mut filters = Vec::new();
    for (name, f) in FILTERS.iter().zip([raw.enosys, raw.eafnosupport, raw.deny]) {
        let Some(f) = f else { continue };
        let mut uncond: BTreeMap<u32, bool> = BTreeMap::new();
        let mut out = Filter {
            name,
            mismatch: f.mismatch_action,
            matched: f.match_action,
            syscalls: BTreeMap::new(),
            names: BTreeSet::new(),
        };
        for rule in f.filter {
            let nr = resolve(&rule.syscall).map_err(|e| format!("filter {name}: {e}"))?;
            for c in rule.args.iter().flatten() {
                c.to_seccompiler()
                    .map_err(|e| format!("filter {name}: {}: {e}", rule.syscall))?;
            }
            out.names.insert(rule.syscall.clone());
            let Some(nr) = nr else { continue };
            let conds = rule.args.unwrap_or_default();
            // A rule without conditions matches always: it is the whole entry.
            match uncond.get(&nr) {
                Some(true) => {}
                _ if conds.is_empty() => {
                    uncond.insert(nr, true);
                    out.syscalls.insert(nr, Vec::new());
                }
                _ => {
                    uncond.insert(nr, false);
                    out.syscalls.entry(nr).or_default().push(conds);
                }
            }
        }
        filters.push(out);
    }
    let mut allowed = BTreeSet::new();
    for name in raw.allowed.into_iter().flat_map(|g| g.syscalls) {
        resolve(&name).map_err(|e| format!("allowed: {e}"))?;
        if let Some(f) = filters.iter().find(|f| f.names.contains(&name)) {
            return Err(format!(
                "{name:?} is both in \"allowed\" and in the filter {:?}; keep one",
                f.name
            ));
        }
        if !allowed.insert(name.clone()) {
            return Err(format!("{name:?} is listed twice in \"allowed\""));
        }
    }
    Ok(Profile { filters, allowed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Profile {
        let text = include_str!("../../../../policies/seccomp/pinfold.json");
        parse(text).unwrap()
    }

    /// Every number of this architecture's syscall table is either refused by
    /// a filter or allowed on purpose: a syscall new to the table (a `syscalls`
    /// update) fails here until someone decides it in the profile.
    #[test]
    fn every_syscall_of_this_architecture_is_decided() {
        let p = shipped();
        let mut decided = p.allowed.clone();
        for f in &p.filters {
            decided.extend(f.names.iter().cloned());
        }
        let undecided: Vec<&str> = syscalls::Sysno::iter()
            .map(|s| s.name())
            .filter(|n| !decided.contains(*n))
            .collect();
        assert!(
            undecided.is_empty(),
            "policies/seccomp/pinfold.json neither allows nor refuses {undecided:?}: \
             add each to \"allowed\" or to a filter, with a comment"
        );
        assert!(p.allowed.contains("read") && !p.allowed.contains("mount"));
    }

    #[test]
    fn names_of_other_architectures_are_skipped_unknown_ones_refused() {
        let p = shipped();
        let deny = p.filters.iter().find(|f| f.name == "deny").unwrap();
        assert!(deny.names.contains("socketcall"));
        if cfg!(target_arch = "x86_64") {
            assert!(syscalls::Sysno::from_str("socketcall").is_err());
        }
        let profile = |rule: &str, allowed: &str| {
            format!(
                r#"{{"deny": {{"mismatch_action": "allow", "match_action": {{"errno": 1}},
                "filter": [{rule}]}}, "allowed": [{{"comment": "c", "syscalls": [{allowed}]}}]}}"#
            )
        };
        assert!(parse(&profile(r#"{"syscall": "socketcall"}"#, r#""read""#)).is_ok());
        let e = parse(&profile(r#"{"syscall": "no_such_call"}"#, "")).unwrap_err();
        assert!(e.contains("no_such_call"), "{e}");
        let e = parse(&profile(r#"{"syscall": "mount"}"#, r#""mount""#)).unwrap_err();
        assert!(e.contains("both"), "{e}");
        let e = parse(&profile(r#"{"syscall": "mount"}"#, r#""nope""#)).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let e = parse(r#"{"enosys": {"mismatch_action": "allow", "match_action": {"errno": 38}, "filter": []}}"#)
            .unwrap_err();
        assert!(e.contains("deny"), "{e}");
        let e = parse(r#"{"deny": {"mismatch_action": "allow", "match_action": {"errno": 1}, "filter": []}, "other": {}}"#)
            .unwrap_err();
        assert!(e.contains("other"), "{e}");
    }

    /// Syscalls seccompiler 0.5's own table does not know are resolved.
    #[test]
    fn the_newest_syscalls_resolve() {
        for name in ["open_tree_attr", "setxattrat", "file_setattr", "listmount"] {
            assert!(resolve(name).unwrap().is_some(), "{name}");
        }
    }
}
