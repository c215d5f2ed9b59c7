//! The runner's policy ceiling: which policies a job may run under, and how
//! far a job may narrow one.
//!
//! The runner's operator decides (`pinfold agent|run|verify --policy NAME
//! [--allow-policy NAME]...`); a job file, which may come from a stranger's
//! pull request, only chooses among those policies *by name* and may ask
//! for less: a stricter network mode and lower limits. It never names a
//! file, and it never gets more than the policy it picked. Every allowed
//! policy is loaded and validated when the runner starts, so a broken
//! policy file is the operator's error at start, never a job's.
//!
//! The same narrowing reaches `pinfold exec` as `--network` and
//! `--limit NAME=VALUE` flags ([`limit_args`], parsed back by
//! [`parse_limit`]), which exec checks again against the policy it loads.

use std::path::{Path, PathBuf};

use pinfold_api::job::{JobLimits, NetworkMode};

use crate::policy::{ByteSize, Policy, PolicyError, PolicySource, Seconds};

/// Errors from building a ceiling or from a job that asks for more than it.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // variant fields are described by the messages
pub enum CeilingError {
    /// An operator's policy could not be loaded (at start).
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// Two allowed policies share a job-facing name.
    #[error(
        "two allowed policies are both named {name:?} ({first} and {second}): rename one of the files"
    )]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    /// The job names a policy the runner does not allow.
    #[error(
        "the job asks for policy {asked:?}, which this runner does not allow (it allows: {allowed}); remove `policy:` or name one of those, or ask the runner's operator to add it with --allow-policy"
    )]
    NotAllowed { asked: String, allowed: String },
    /// The job asks for more than the policy it runs under.
    #[error(
        "the job asks for {field} {asked}, above this runner's ceiling for policy {policy:?} ({field} {ceiling}); ask for at most that, or ask the runner's operator for a policy that allows it"
    )]
    Wider {
        field: &'static str,
        asked: String,
        ceiling: String,
        policy: String,
    },
    /// A `--limit` flag is malformed.
    #[error("--limit {0}")]
    BadLimit(String),
}

/// One policy a runner allows.
#[derive(Debug, Clone)]
struct Allowed {
    /// What a job's `policy:` names: the policy's name, or a file's stem.
    name: String,
    /// What `pinfold exec --policy` is given: the name of a built-in or
    /// searched policy, or the absolute path the operator's file was read from.
    reference: String,
    policy: Policy,
}

/// The policies a runner allows; the first is the one a job gets when it
/// names none.
#[derive(Debug, Clone)]
pub struct Ceiling {
    allowed: Vec<Allowed>,
}

/// The policy a job runs under, after its narrowing.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The job-facing name (for logs and provenance).
    pub name: String,
    /// What to give `pinfold exec --policy`.
    pub reference: String,
    /// The effective policy: the allowed one with the job's network mode and
    /// lower limits applied.
    pub policy: Policy,
}

impl Ceiling {
    /// Loads `policy` (the default for jobs that name none) and each of
    /// `allow`: names (searched in `dirs` as [`Policy::load`] does) or paths.
    pub fn new(policy: &str, allow: &[String], dirs: &[PathBuf]) -> Result<Ceiling, CeilingError> {
        let mut allowed: Vec<Allowed> = Vec::new();
        for entry in std::iter::once(policy).chain(allow.iter().map(String::as_str)) {
            let loaded = Policy::load(entry, dirs)?;
            let (name, reference) = match &loaded.source {
                PolicySource::File(path) => {
                    let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                    let stem = Path::new(entry)
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| entry.to_owned());
                    (stem, abs.display().to_string())
                }
                PolicySource::Builtin => (entry.to_owned(), entry.to_owned()),
            };
            if let Some(prev) = allowed.iter().find(|a| a.name == name) {
                if prev.reference == reference {
                    continue;
                }
                return Err(CeilingError::Duplicate {
                    name,
                    first: prev.reference.clone(),
                    second: reference,
                });
            }
            allowed.push(Allowed {
                name,
                reference,
                policy: loaded,
            });
        }
        Ok(Ceiling { allowed })
    }

    /// The job-facing names, the default first.
    pub fn names(&self) -> Vec<&str> {
        self.allowed.iter().map(|a| a.name.as_str()).collect()
    }

    /// The policy for a job that asks for `policy` (or the default), a
    /// network mode and limits: refused when the policy is not allowed or
    /// when anything is wider than it.
    pub fn choose(
        &self,
        policy: Option<&str>,
        network: Option<NetworkMode>,
        limits: &JobLimits,
    ) -> Result<Chosen, CeilingError> {
        let allowed = match policy {
            None => &self.allowed[0],
            Some(asked) => self
                .allowed
                .iter()
                .find(|a| a.name == asked)
                .ok_or_else(|| CeilingError::NotAllowed {
                    asked: asked.to_owned(),
                    allowed: self.names().join(", "),
                })?,
        };
        let policy = narrowed(&allowed.policy, &allowed.name, network, limits)?;
        Ok(Chosen {
            name: allowed.name.clone(),
            reference: allowed.reference.clone(),
            policy,
        })
    }
}

/// `policy` with a stricter network mode and lower limits applied; `name`
/// is how errors name the policy.
pub fn narrowed(
    policy: &Policy,
    name: &str,
    network: Option<NetworkMode>,
    l: &JobLimits,
) -> Result<Policy, CeilingError> {
    let mut p = policy.clone();
    if network.is_some() {
        let mode = crate::net::effective(p.network.mode, network).map_err(|e| {
            wider(
                name,
                "network",
                e.asked.to_string(),
                format!("{}; none < allowlist < egress", e.policy),
            )
        })?;
        p.network.narrow_to(mode);
    }
    let (lim, fs) = (&mut p.limits, &mut p.filesystem);
    lower("limits.memory", l.memory, &mut lim.memory, name)?;
    lower("limits.pids", l.pids, &mut lim.pids, name)?;
    lower("limits.cpu_time", l.cpu_time, &mut lim.cpu_time, name)?;
    lower("limits.log_bytes", l.log_bytes, &mut lim.log_bytes, name)?;
    // The sizes are never unlimited (the policy's are at least 4K): a zero
    // asked for is refused in `lower`, so it only ever lowers them.
    lower(
        "filesystem.writable_layer_size",
        l.writable_layer_size,
        &mut fs.writable_layer_size,
        name,
    )?;
    lower(
        "filesystem.workspace_size",
        l.workspace_size,
        &mut fs.workspace_size,
        name,
    )?;
    lower("filesystem.tmp_size", l.tmp_size, &mut fs.tmp_size, name)?;
    Ok(p)
}

/// The job asked for more of `field` than `policy` allows: both as written.
fn wider(policy: &str, field: &'static str, asked: String, ceiling: String) -> CeilingError {
    CeilingError::Wider {
        field,
        asked,
        ceiling,
        policy: policy.to_owned(),
    }
}

/// A limit's value in the unit the policy writes it in (which is how an
/// error shows it); 0 is "unlimited".
trait Amount: Copy + std::fmt::Display {
    fn raw(self) -> u64;
}

impl Amount for u64 {
    fn raw(self) -> u64 {
        self
    }
}

impl Amount for ByteSize {
    fn raw(self) -> u64 {
        self.0
    }
}

impl Amount for Seconds {
    fn raw(self) -> u64 {
        self.0
    }
}

/// Lowers the policy's `ceiling` (`field` of `policy`) to what the job
/// asks, if it asks; asking for more is an error. A zero in the policy is
/// "unlimited" for these: any value narrows it.
fn lower<T: Amount>(
    field: &'static str,
    asked: Option<T>,
    ceiling: &mut T,
    policy: &str,
) -> Result<(), CeilingError> {
    let Some(asked) = asked else { return Ok(()) };
    let (a, c) = (asked.raw(), ceiling.raw());
    if a == 0 || (c != 0 && a > c) {
        let shown = if c == 0 {
            "unlimited".to_owned()
        } else {
            ceiling.to_string()
        };
        return Err(wider(policy, field, asked.to_string(), shown));
    }
    *ceiling = asked;
    Ok(())
}

/// The `pinfold exec --limit` flags that carry `l` (empty when the job asks
/// for nothing). `log_bytes` is the runner's to enforce, not exec's.
pub fn limit_args(l: &JobLimits) -> Vec<String> {
    [
        ("memory", l.memory.map(|s| s.0)),
        ("pids", l.pids),
        ("cpu_time", l.cpu_time.map(|s| s.0)),
        ("writable_layer_size", l.writable_layer_size.map(|s| s.0)),
        ("workspace_size", l.workspace_size.map(|s| s.0)),
        ("tmp_size", l.tmp_size.map(|s| s.0)),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| ["--limit".to_owned(), format!("{name}={v}")]))
    .flatten()
    .collect()
}

/// Adds one `--limit NAME=VALUE` to `l` (the names of the job file's
/// `limits:`, values in its units).
pub fn parse_limit(l: &mut JobLimits, arg: &str) -> Result<(), CeilingError> {
    let bad = |why: String| CeilingError::BadLimit(format!("{arg}: {why}"));
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| bad("write NAME=VALUE, e.g. memory=512M".into()))?;
    let size = || ByteSize::parse(value).map(Some).map_err(bad);
    match name {
        "memory" => l.memory = size()?,
        "log_bytes" => l.log_bytes = size()?,
        "writable_layer_size" => l.writable_layer_size = size()?,
        "workspace_size" => l.workspace_size = size()?,
        "tmp_size" => l.tmp_size = size()?,
        "cpu_time" => l.cpu_time = Some(Seconds::parse(value).map_err(bad)?),
        "pids" => {
            l.pids = Some(
                value
                    .parse()
                    .map_err(|_| bad("pids is a whole number".into()))?,
            )
        }
        _ => {
            return Err(bad(
                "unknown limit: use memory, pids, cpu_time, log_bytes, writable_layer_size, workspace_size or tmp_size"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// The policy `pinfold exec` runs under: `policy` (a shipped name or a
/// path) lowered by its `--limit NAME=VALUE` arguments.
pub fn load_with_limits(
    policy: &str,
    limit_args: &[String],
    dirs: &[PathBuf],
) -> Result<Policy, CeilingError> {
    let loaded = Policy::load(policy, dirs)?;
    let mut limits = JobLimits::default();
    for l in limit_args {
        parse_limit(&mut limits, l)?;
    }
    narrowed(&loaded, policy, None, &limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceiling() -> Ceiling {
        Ceiling::new("untrusted", &["default".into()], &[]).unwrap()
    }

    #[test]
    fn default_is_the_first_and_names_are_names() {
        let c = ceiling();
        assert_eq!(c.names(), ["untrusted", "default"]);
        let chosen = c.choose(None, None, &JobLimits::default()).unwrap();
        assert_eq!(chosen.name, "untrusted");
        assert_eq!(chosen.reference, "untrusted");
        assert_eq!(chosen.policy, Policy::load("untrusted", &[]).unwrap());
    }

    #[test]
    fn a_job_cannot_touch_the_kernel_table() {
        // An operator's copy that requires scopes: whatever a job narrows,
        // the floor stays a floor (a job file has no kernel field at all).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strict.toml");
        std::fs::write(
            &file,
            "[network]\nmode = \"allowlist\"\nloopback_tcp = false\n[kernel]\nscopes = \"require\"\n",
        )
        .unwrap();
        let c = Ceiling::new(file.to_str().unwrap(), &[], &[]).unwrap();
        let limits = JobLimits {
            memory: Some(ByteSize(64 << 20)),
            ..JobLimits::default()
        };
        let chosen = c.choose(None, Some(NetworkMode::None), &limits).unwrap();
        assert_eq!(
            chosen.policy.kernel.scopes,
            crate::kernel::Decision::Require
        );
        assert_eq!(chosen.policy.kernel, c.allowed[0].policy.kernel);
        let old = crate::kernel::KernelFeatures {
            release: "6.1".into(),
            landlock_abi: 2,
            resolve_in_root: true,
        };
        let p = &chosen.policy;
        let refused = crate::kernel::assess(&p.kernel, &p.setup(p.network.mode), &old);
        assert!(refused.is_err(), "{refused:?}");
    }

    #[test]
    fn a_policy_not_on_the_list_is_refused_naming_the_list() {
        let e = ceiling()
            .choose(Some("trusted"), None, &JobLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"trusted\"") && e.contains("untrusted, default"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn wider_network_and_limits_are_refused_lower_ones_apply() {
        let c = ceiling();
        let e = c
            .choose(
                Some("default"),
                Some(NetworkMode::Egress),
                &JobLimits::default(),
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("network egress") && e.contains("network none"),
            "{e}"
        );
        let more = JobLimits {
            memory: Some(ByteSize(4 << 30)),
            ..JobLimits::default()
        };
        let e = c.choose(None, None, &more).unwrap_err().to_string();
        assert!(
            e.contains("limits.memory 4G") && e.contains("(limits.memory 2G)"),
            "{e}"
        );
        let zero = JobLimits {
            pids: Some(0),
            ..JobLimits::default()
        };
        assert!(
            c.choose(None, None, &zero).is_err(),
            "0 is unlimited: wider"
        );
        let less = JobLimits {
            memory: Some(ByteSize(64 << 20)),
            pids: Some(32),
            cpu_time: Some(Seconds(60)),
            log_bytes: Some(ByteSize(1 << 20)),
            writable_layer_size: Some(ByteSize(8 << 20)),
            workspace_size: Some(ByteSize(8 << 20)),
            tmp_size: Some(ByteSize(8 << 20)),
        };
        let p = c.choose(None, None, &less).unwrap().policy;
        assert_eq!(p.limits.memory, ByteSize(64 << 20));
        assert_eq!(p.limits.pids, 32);
        assert_eq!(p.limits.cpu_time, Seconds(60));
        assert_eq!(p.limits.log_bytes, ByteSize(1 << 20));
        assert_eq!(p.filesystem.writable_layer_size, ByteSize(8 << 20));
        assert_eq!(p.filesystem.workspace_size, ByteSize(8 << 20));
        assert_eq!(p.filesystem.tmp_size, ByteSize(8 << 20));
        // Round trip through exec's flags.
        let mut back = JobLimits::default();
        let args = limit_args(&less);
        for pair in args.chunks(2) {
            assert_eq!(pair[0], "--limit");
            parse_limit(&mut back, &pair[1]).unwrap();
        }
        assert_eq!(
            back,
            JobLimits {
                log_bytes: None,
                ..less
            }
        );
    }

    #[test]
    fn operator_paths_are_known_by_their_stem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ci-strict.toml");
        std::fs::write(&file, "[limits]\nmemory = \"1G\"\n").unwrap();
        let c = Ceiling::new(file.to_str().unwrap(), &[], &[]).unwrap();
        assert_eq!(c.names(), ["ci-strict"]);
        let chosen = c
            .choose(Some("ci-strict"), None, &JobLimits::default())
            .unwrap();
        assert_eq!(chosen.reference, file.display().to_string());
        let other = dir.path().join("x/ci-strict.toml");
        std::fs::create_dir_all(other.parent().unwrap()).unwrap();
        std::fs::write(&other, "").unwrap();
        let e =
            Ceiling::new(file.to_str().unwrap(), &[other.display().to_string()], &[]).unwrap_err();
        assert!(matches!(e, CeilingError::Duplicate { .. }), "{e}");
    }

    #[test]
    fn bad_limit_flags_are_named() {
        let mut l = JobLimits::default();
        for bad in ["memory", "memory=lots", "pids=-1", "network=egress"] {
            let e = parse_limit(&mut l, bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--limit {bad}")), "{e}");
        }
    }
}
