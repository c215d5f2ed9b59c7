//! Docker / OCI seccomp profiles (the format of moby's
//! `profiles/seccomp/default.json` and of `linux.seccomp` in an OCI runtime
//! config), compiled to seccompiler filters so users can reuse the profiles
//! they already have.
//!
//! Semantics, as libseccomp gives them to Docker:
//!
//! * `defaultAction` applies to every syscall no rule matches;
//! * rules whose `includes` need capabilities are skipped (a pinfold job holds
//!   none), `excludes.caps` never excludes, `includes`/`excludes` `arches` and
//!   `minKernel` are checked against this machine;
//! * names this architecture does not have (`chown32`, `_llseek`…) are skipped;
//! * the `args` of one rule are AND-ed, rules for one syscall OR-ed;
//!   `SCMP_CMP_MASKED_EQ` is `(arg & value) == valueTwo`.
//!
//! seccompiler gives one filter a single match action, so rules are grouped by
//! action into one filter each; the kernel evaluates every installed filter and
//! keeps the most restrictive answer, and for two answers of the same kind
//! (two errnos) the one of the filter installed last. The default action's
//! filter is installed first and the exceptions after it, so an exception
//! such as `clone3 → ENOSYS` wins over an errno default.

use std::collections::BTreeMap;
use std::str::FromStr;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;
use syscalls::Sysno;

use super::SeccompError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<Rule>,
    // Architecture lists: seccompiler checks the native architecture and
    // kills every other (32-bit) one, so these are read and not used.
    #[serde(default, rename = "architectures")]
    _architectures: Option<serde_json::Value>,
    #[serde(default, rename = "archMap")]
    _arch_map: Option<serde_json::Value>,
    #[serde(default, rename = "flags")]
    _flags: Option<serde_json::Value>,
    #[serde(default, rename = "listenerPath")]
    _listener_path: Option<serde_json::Value>,
    #[serde(default, rename = "listenerMetadata")]
    _listener_metadata: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// Older profiles name one syscall per rule.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
    #[serde(default, rename = "comment")]
    _comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// Whether `text` looks like a Docker/OCI profile rather than seccompiler's format.
pub(crate) fn is_docker_profile(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("defaultAction").cloned())
        .is_some()
}

fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_version(&release)
}

fn parse_version(s: &str) -> (u32, u32) {
    let mut it = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

fn applies(rule: &Rule, kernel: (u32, u32)) -> bool {
    let arch = docker_arch();
    if let Some(inc) = &rule.includes {
        if !inc.caps.is_empty() {
            return false;
        }
        if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch) {
            return false;
        }
        if let Some(min) = &inc.min_kernel
            && kernel < parse_version(min)
        {
            return false;
        }
    }
    if let Some(exc) = &rule.excludes {
        if exc.arches.iter().any(|a| a == arch) {
            return false;
        }
        if let Some(min) = &exc.min_kernel
            && kernel >= parse_version(min)
        {
            return false;
        }
    }
    true
}

fn action(
    name: &str,
    errno: Option<u32>,
    default_errno: u32,
    profile: &str,
) -> Result<SeccompAction, SeccompError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(default_errno)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        other => {
            return Err(SeccompError::Compile {
                profile: profile.to_owned(),
                message: format!(
                    "action {other:?} is not supported (use ALLOW, ERRNO, KILL, KILL_PROCESS, TRAP or LOG)"
                ),
            });
        }
    })
}

fn condition(arg: &Arg, profile: &str) -> Result<SeccompCondition, SeccompError> {
    let (op, value) = match arg.op.as_str() {
        "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, arg.value),
        "SCMP_CMP_NE" => (SeccompCmpOp::Ne, arg.value),
        "SCMP_CMP_LT" => (SeccompCmpOp::Lt, arg.value),
        "SCMP_CMP_LE" => (SeccompCmpOp::Le, arg.value),
        "SCMP_CMP_GT" => (SeccompCmpOp::Gt, arg.value),
        "SCMP_CMP_GE" => (SeccompCmpOp::Ge, arg.value),
        "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(arg.value), arg.value_two),
        other => {
            return Err(SeccompError::Compile {
                profile: profile.to_owned(),
                message: format!("argument operator {other:?} is not supported"),
            });
        }
    };
    SeccompCondition::new(arg.index, SeccompCmpArgLen::Qword, op, value).map_err(|e| {
        SeccompError::Compile {
            profile: profile.to_owned(),
            message: format!("argument {}: {e}", arg.index),
        }
    })
}

/// One syscall's rules: `None` matches unconditionally.
type RuleMap = BTreeMap<i64, Option<Vec<SeccompRule>>>;

/// Compiles a Docker/OCI profile into programs, installed first to last.
pub(crate) fn compile(profile: &str, text: &str) -> Result<Vec<BpfProgram>, SeccompError> {
    let bad = |message: String| SeccompError::Compile {
        profile: profile.to_owned(),
        message,
    };
    let p: Profile = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let default_errno = p.default_errno_ret.unwrap_or(libc::EPERM as u32);
    let default = action(
        &p.default_action,
        p.default_errno_ret,
        default_errno,
        profile,
    )?;
    let kernel = kernel_version();
    // Group the rules by action, in order of first appearance.
    let mut groups: Vec<(SeccompAction, RuleMap)> = Vec::new();
    for rule in &p.syscalls {
        if !applies(rule, kernel) {
            continue;
        }
        let act = action(&rule.action, rule.errno_ret, default_errno, profile)?;
        if act == default {
            continue; // the default already does it
        }
        let conditions = match &rule.args {
            Some(args) if !args.is_empty() => Some(
                args.iter()
                    .map(|a| condition(a, profile))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            _ => None,
        };
        let idx = match groups.iter().position(|(a, _)| *a == act) {
            Some(i) => i,
            None => {
                groups.push((act.clone(), BTreeMap::new()));
                groups.len() - 1
            }
        };
        let map = &mut groups[idx].1;
        for name in rule.names.iter().chain(rule.name.iter()) {
            let Ok(sysno) = Sysno::from_str(name) else {
                tracing::debug!(syscall = %name, "not a syscall of this architecture; skipped");
                continue;
            };
            let entry = map
                .entry(sysno.id() as i64)
                .or_insert_with(|| Some(Vec::new()));
            match (&conditions, entry) {
                // Unconditional wins over any conditional rule.
                (None, e) => *e = None,
                (Some(_), None) => {}
                (Some(c), Some(rules)) => rules
                    .push(SeccompRule::new(c.clone()).map_err(|e| bad(format!("{name}: {e}")))?),
            }
        }
    }
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH.to_owned()))?;
    let build = |rules: BTreeMap<i64, Vec<SeccompRule>>,
                 mismatch: SeccompAction,
                 matched: SeccompAction| {
        let filter =
            SeccompFilter::new(rules, mismatch, matched, arch).map_err(|e| bad(e.to_string()))?;
        BpfProgram::try_from(filter).map_err(|e| bad(e.to_string()))
    };
    let flatten = |m: RuleMap| -> BTreeMap<i64, Vec<SeccompRule>> {
        m.into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect()
    };
    let mut programs = Vec::new();
    // The allow-list (or, with an allowing default, nothing) comes first.
    let allow_idx = groups.iter().position(|(a, _)| *a == SeccompAction::Allow);
    let allow = allow_idx.map(|i| groups.remove(i).1);
    if default != SeccompAction::Allow {
        programs.push(build(
            flatten(allow.unwrap_or_default()),
            default.clone(),
            SeccompAction::Allow,
        )?);
    }
    // Then one filter per other action: matching syscalls get it, the rest
    // are left to the filters before.
    for (act, map) in groups.into_iter().filter(|(_, m)| !m.is_empty()) {
        programs.push(build(flatten(map), SeccompAction::Allow, act)?);
    }
    if programs.is_empty() {
        return Err(bad(
            "the profile allows everything; a policy needs some restriction".into(),
        ));
    }
    Ok(programs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_applicability() {
        assert_eq!(parse_version("6.18.44-fc-v782"), (6, 18));
        assert_eq!(parse_version("4.8"), (4, 8));
        let rule = |inc: Option<Filter>, exc: Option<Filter>| Rule {
            names: vec!["ptrace".into()],
            name: None,
            action: "SCMP_ACT_ALLOW".into(),
            errno_ret: None,
            args: None,
            includes: inc,
            excludes: exc,
            _comment: None,
        };
        let caps = Filter {
            caps: vec!["CAP_SYS_ADMIN".into()],
            ..Default::default()
        };
        assert!(
            !applies(&rule(Some(caps), None), (6, 18)),
            "needs a capability we never have"
        );
        let caps = Filter {
            caps: vec!["CAP_SYS_ADMIN".into()],
            ..Default::default()
        };
        assert!(
            applies(&rule(None, Some(caps)), (6, 18)),
            "excluded caps are never held"
        );
        let newer = Filter {
            min_kernel: Some("7.1".into()),
            ..Default::default()
        };
        assert!(!applies(&rule(Some(newer), None), (6, 18)));
        let other_arch = Filter {
            arches: vec!["s390x".into()],
            ..Default::default()
        };
        assert!(!applies(&rule(Some(other_arch), None), (6, 18)));
    }

    #[test]
    fn unsupported_actions_are_named() {
        let err = compile(
            "p.json",
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SCMP_ACT_NOTIFY") && err.contains("p.json"),
            "{err}"
        );
    }
}
