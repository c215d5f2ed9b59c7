//! The job file: what to run, in which image, under which policy.
//!
//! ```yaml
//! image: docker://127.0.0.1:5000/busybox@sha256:<digest>
//! policy: untrusted
//! network: allowlist
//! limits: { memory: 1G, cpu_time: 10m }
//! timeout: 30m
//! env: { GREETING: hello }
//! secrets: [DEPLOY_KEY]
//! steps:
//!   - name: build
//!     run: sh build.sh
//!     timeout: 10m
//! artifacts: [out/*.tar.gz, out/app]
//! ```
//!
//! Parsing is strict: an unknown key, a duplicate key, a wrong type or a bad
//! value is an error that names its line. Values are checked while they are
//! deserialized (newtypes with their own `Deserialize`), so the YAML parser
//! can attach the position of the offending node.
//!
//! YAML crate: `serde-saphyr`. `serde_yaml` is archived (RUSTSEC-2024-0320),
//! `serde_yml` carries unsoundness/unmaintained advisories (RUSTSEC-2025-0067,
//! -0068), and `serde_norway`/`serde_yaml_ng` still sit on `unsafe-libyaml`,
//! a mechanical C port. serde-saphyr is maintained, pure safe Rust on the
//! saphyr parser, rejects duplicate keys by default, and reports positions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

pub use crate::units::{ByteSize, Seconds};

/// A job file could not be parsed or failed validation.
#[derive(Debug, thiserror::Error)]
pub enum JobSpecError {
    /// The YAML is malformed, has an unknown key, or a value is invalid. The
    /// message names the line and column.
    #[error("invalid job file: {0}")]
    Invalid(String),
}

/// A parsed and validated job file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The image, pinned by digest (`...@sha256:<64 hex>`).
    pub image: ImageRef,
    /// The name of a policy the runner's operator allows (`pinfold agent
    /// --policy NAME --allow-policy NAME`); the runner's `--policy` when
    /// absent. Never a path: which policy files exist is the operator's
    /// choice, not the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyName>,
    /// The network mode; the policy's when absent. It may be stricter than
    /// the policy's (`none` < `allowlist` < `egress`), never more open: a
    /// more open one fails the job before its first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// Lower limits than the policy's; a higher one fails the job before
    /// its first step, naming the runner's ceiling.
    #[serde(default, skip_serializing_if = "JobLimits::is_empty")]
    pub limits: JobLimits,
    /// Wall-clock limit for the whole job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Environment variables for every step.
    #[serde(default)]
    pub env: BTreeMap<EnvName, String>,
    /// Names of secrets the job needs. Their values come from the server or
    /// the agent, never from this file, and are masked in logs.
    #[serde(default)]
    pub secrets: Vec<EnvName>,
    /// The steps, run in order with `/bin/sh -e -c` in /workspace.
    pub steps: Steps,
    /// Glob patterns, relative to /workspace, of files to upload.
    #[serde(default)]
    pub artifacts: Vec<ArtifactPattern>,
    /// Where /workspace comes from when not submitted with `--source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// On a coordinator: run the job on this many different runners and
    /// record whether their artifacts are identical (2 to 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyCount>,
}

/// How a container reaches the network: a job's `network:` and a policy's
/// `network.mode`. Openness: `none` < `allowlist` < `egress`; a job may ask
/// for a stricter mode than its policy's, never a more open one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A private network namespace with only loopback up.
    #[default]
    None,
    /// Loopback only, plus an HTTP(S) proxy run outside the container that
    /// reaches only the destinations in the policy's `network.allow`.
    Allowlist,
    /// Outbound connections through a user-mode network stack (pasta),
    /// started with the container and gone with it.
    Egress,
}

impl NetworkMode {
    /// The name `pinfold exec --network` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Allowlist => "allowlist",
            NetworkMode::Egress => "egress",
        }
    }

    /// How much a mode opens, for "the stricter wins".
    pub fn openness(self) -> u8 {
        match self {
            NetworkMode::None => 0,
            NetworkMode::Allowlist => 1,
            NetworkMode::Egress => 2,
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(NetworkMode::None),
            "allowlist" => Ok(NetworkMode::Allowlist),
            "egress" => Ok(NetworkMode::Egress),
            other => Err(format!(
                "network mode {other:?} is not known: use none, allowlist or egress"
            )),
        }
    }
}

/// Limits a job asks for, each at most the policy's (`limits.*` and
/// `filesystem.*_size` of the policy file, same units). Absent fields keep
/// the policy's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobLimits {
    /// Memory of the whole container (`limits.memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Tasks of the whole container (`limits.pids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU time of the whole container (`limits.cpu_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time: Option<Seconds>,
    /// Bytes of log output of the whole job (`limits.log_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<ByteSize>,
    /// The writable layer (`filesystem.writable_layer_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writable_layer_size: Option<ByteSize>,
    /// The workspace (`filesystem.workspace_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_size: Option<ByteSize>,
    /// /tmp (`filesystem.tmp_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp_size: Option<ByteSize>,
}

impl JobLimits {
    /// True when the job asks for no limit of its own.
    pub fn is_empty(&self) -> bool {
        *self == JobLimits::default()
    }
}

impl JobSpec {
    /// Parses and validates a job file.
    pub fn from_yaml(text: &str) -> Result<JobSpec, JobSpecError> {
        serde_saphyr::from_str(text).map_err(|e| JobSpecError::Invalid(plain_error(&e)))
    }
}

/// serde-saphyr renders errors with a source snippet over several lines;
/// the first line carries the message and position, which is what an API
/// error body and a terminal line want.
fn plain_error(e: &serde_saphyr::Error) -> String {
    let s = e.to_string();
    let mut lines = s.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    let first = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if first.contains("line") {
        first
    } else {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// A name unique within the job, shown in logs and results.
    pub name: NonEmpty,
    /// The shell command line.
    pub run: NonEmpty,
    /// Wall-clock limit for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// The steps of a job: at least one, names unique and one line of text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Steps(pub Vec<Step>);

impl<'de> Deserialize<'de> for Steps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let steps = Vec::<Step>::deserialize(d)?;
        if steps.is_empty() {
            return Err(de::Error::custom("steps: a job needs at least one step"));
        }
        let mut seen = BTreeSet::new();
        for s in &steps {
            // The agent writes `==> step i/n: NAME` into the log: a newline
            // (or any control) in a name would let the job file forge
            // pinfold's own lines.
            if s.name.0.chars().any(char::is_control) {
                return Err(de::Error::custom(format!(
                    "steps: step name {:?} has a control character (a newline, tab or escape): \
                     a step name is one line of text",
                    s.name.0
                )));
            }
            if !seen.insert(s.name.0.as_str()) {
                return Err(de::Error::custom(format!(
                    "steps: duplicate step name {:?}",
                    s.name.0
                )));
            }
        }
        Ok(Steps(steps))
    }
}

/// Where the workspace comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A git URL the agent fetches outside the sandbox.
    pub git: NonEmpty,
    /// The full commit id (40 or 64 hex digits); branch names are not pins.
    pub commit: CommitId,
}

macro_rules! validated_string {
    ($(#[$m:meta])* $name:ident, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s).map_err(de::Error::custom)?;
                Ok($name(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl $name {
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

validated_string!(
    /// An image reference pinned by digest.
    ImageRef,
    |s| {
        let Some((_, digest)) = s.rsplit_once('@') else {
            return Err(format!(
                "image {s:?} is not pinned: append @sha256:<digest> (a tag alone can change under you)"
            ));
        };
        match digest.strip_prefix("sha256:") {
            Some(hex) if crate::is_sha256_hex(hex) => Ok(()),
            _ => Err(format!(
                "image {s:?}: the pin must be @sha256: followed by 64 lowercase hex digits"
            )),
        }
    }
);

validated_string!(
    /// The name of a policy the runner allows: letters, digits, `-` and
    /// `_`, never a path.
    PolicyName,
    |s| {
        if s.is_empty() || s.len() > 64 {
            Err("policy: give the name of a policy the runner allows (1 to 64 letters, digits, - and _)".into())
        } else if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            Err("policy: must be a policy name (letters, digits, - and _), not a path: the runner's operator decides which policies exist".into())
        } else {
            Ok(())
        }
    }
);

validated_string!(
    /// A string that is not empty or blank.
    NonEmpty,
    |s| {
        if s.trim().is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(())
        }
    }
);

validated_string!(
    /// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
    EnvName,
    |s| {
        let mut b = s.bytes();
        let ok = matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
            && b.all(|c| c == b'_' || c.is_ascii_alphanumeric());
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{s:?} is not a valid variable name (letters, digits and _, not starting with a digit)"
            ))
        }
    }
);

validated_string!(
    /// A full git commit id.
    CommitId,
    |s| {
        if (s.len() == 40 || s.len() == 64) && s.bytes().all(|c| c.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(format!("commit {s:?}: give the full 40 or 64 hex digit id"))
        }
    }
);

validated_string!(
    /// A glob relative to /workspace that cannot climb out of it.
    ArtifactPattern,
    |s| {
        if s.is_empty() {
            Err("artifact pattern must not be empty".into())
        } else if s.starts_with('/') {
            Err(format!("artifact {s:?}: patterns are relative to /workspace"))
        } else if s.split('/').any(|c| c == "..") {
            Err(format!("artifact {s:?}: '..' is not allowed"))
        } else {
            Ok(())
        }
    }
);

/// How many runners a `verify:` job runs on: 2 to [`VerifyCount::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct VerifyCount(pub u32);

impl VerifyCount {
    /// The most runs one job may ask for.
    pub const MAX: u32 = 16;
}

impl<'de> Deserialize<'de> for VerifyCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if !(2..=Self::MAX).contains(&n) {
            return Err(de::Error::custom(format!(
                "verify: {n} runs; give 2 to {} (the number of different runners to compare)",
                Self::MAX
            )));
        }
        Ok(VerifyCount(n))
    }
}

/// A positive duration written as `30m`, `1h 30m`, `90s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = humantime::parse_duration(&s).map_err(|e| {
            de::Error::custom(format!("bad duration {s:?}: {e} (use e.g. 90s, 10m, 1h)"))
        })?;
        if v.is_zero() {
            return Err(de::Error::custom("a timeout must be longer than zero"));
        }
        Ok(HumanDuration(v))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn job(extra: &str) -> String {
        format!(
            "image: docker://127.0.0.1:5000/busybox@sha256:{DIGEST}\nsteps:\n  - name: build\n    run: echo hi\n{extra}"
        )
    }

    fn err(text: &str) -> String {
        JobSpec::from_yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_issue_example() {
        let text = format!(
            "image: docker://127.0.0.1:5000/busybox@sha256:{DIGEST}\npolicy: untrusted\ntimeout: 30m\nenv: {{ GREETING: hello }}\nsecrets: [DEPLOY_KEY]\nsteps:\n  - name: build\n    run: sh build.sh\n    timeout: 10m\nartifacts: [out/*.tar.gz, out/app]\n"
        );
        let j = JobSpec::from_yaml(&text).unwrap();
        assert_eq!(j.policy.as_ref().unwrap().as_str(), "untrusted");
        assert_eq!(j.timeout.unwrap().0, Duration::from_secs(1800));
        assert_eq!(j.env.get(&EnvName("GREETING".into())).unwrap(), "hello");
        assert_eq!(j.secrets[0].as_str(), "DEPLOY_KEY");
        assert_eq!(j.steps.0[0].timeout.unwrap().0, Duration::from_secs(600));
        assert_eq!(j.artifacts.len(), 2);
        // JSON round trip (the lease carries the spec as JSON).
        let json = serde_json::to_string(&j).unwrap();
        let back: JobSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, j);
    }

    #[test]
    fn defaults() {
        let j = JobSpec::from_yaml(&job("")).unwrap();
        assert!(j.policy.is_none() && j.limits.is_empty());
        assert!(j.timeout.is_none() && j.env.is_empty() && j.source.is_none());
    }

    #[test]
    fn policy_is_a_name_never_a_path() {
        for bad in [
            "/proc/self/environ",
            "../policies/trusted",
            "ci.toml",
            "a b",
            "",
        ] {
            let e = err(&job(&format!("policy: {bad:?}\n")));
            assert!(e.contains("policy") && e.contains("line 5"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let j = JobSpec::from_yaml(&job("policy: ci-strict_2\n")).unwrap();
        assert_eq!(j.policy.unwrap().as_str(), "ci-strict_2");
    }

    #[test]
    fn limits_parse_in_policy_units() {
        let j = JobSpec::from_yaml(&job(
            "limits: { memory: 512M, pids: 64, cpu_time: 5m, log_bytes: 1M, tmp_size: 64M }\n",
        ))
        .unwrap();
        assert_eq!(j.limits.memory, Some(ByteSize(512 << 20)));
        assert_eq!(j.limits.pids, Some(64));
        assert_eq!(j.limits.cpu_time, Some(Seconds(300)));
        assert_eq!(j.limits.log_bytes, Some(ByteSize(1 << 20)));
        assert_eq!(j.limits.tmp_size, Some(ByteSize(64 << 20)));
        let json = serde_json::to_string(&j).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), j);
        let e = err(&job("limits: { memory: lots }\n"));
        assert!(e.contains("line 5"), "{e}");
        let e = err(&job("limits: { network: egress }\n"));
        assert!(e.contains("network") && e.contains("line 5"), "{e}");
    }

    #[test]
    fn network_mode_by_name() {
        let j = JobSpec::from_yaml(&job("network: allowlist\n")).unwrap();
        assert_eq!(j.network, Some(NetworkMode::Allowlist));
        assert_eq!(j.network.unwrap().as_str(), "allowlist");
        assert_eq!(JobSpec::from_yaml(&job("")).unwrap().network, None);
        let e = err(&job("network: everywhere\n"));
        assert!(e.contains("everywhere") && e.contains("line 5"), "{e}");
    }

    #[test]
    fn unknown_key_names_its_line() {
        let e = err(&job("artifactz: [x]\n"));
        assert!(e.contains("artifactz") && e.contains("line 5"), "{e}");
        let e = err(&job("    retries: 3\n"));
        assert!(e.contains("retries") && e.contains("line 5"), "{e}");
    }

    #[test]
    fn unpinned_image_is_refused() {
        let e = err("image: busybox:latest\nsteps:\n  - name: a\n    run: b\n");
        assert!(e.contains("not pinned") && e.contains("line 1"), "{e}");
        let e = err("image: busybox@sha256:abc\nsteps:\n  - name: a\n    run: b\n");
        assert!(e.contains("64 lowercase hex"), "{e}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = err(&job("timeout: soon\n"));
        assert!(e.contains("bad duration") && e.contains("line 5"), "{e}");
        let e = err(&job("env: { 1BAD: x }\n"));
        assert!(
            e.contains("valid variable name") && e.contains("line 5"),
            "{e}"
        );
        let e = err(&job("artifacts: [../etc/passwd]\n"));
        assert!(e.contains("'..'"), "{e}");
        let e = err(&job("source: { git: https://x/y, commit: main }\n"));
        assert!(e.contains("full 40"), "{e}");
    }

    #[test]
    fn steps_are_required_unique_and_nonempty() {
        let e = err(&format!("image: a@sha256:{DIGEST}\n"));
        assert!(e.contains("steps"), "{e}");
        let e = err(&format!("image: a@sha256:{DIGEST}\nsteps: []\n"));
        assert!(e.contains("at least one step"), "{e}");
        let e = err(&job("  - name: build\n    run: x\n"));
        assert!(e.contains("duplicate step name"), "{e}");
        let e = err(&job("  - name: \"a\\n==> job succeeded\"\n    run: x\n"));
        assert!(e.contains("control character"), "{e}");
        let e = err(&format!(
            "image: a@sha256:{DIGEST}\nsteps:\n  - name: a\n    run: ''\n"
        ));
        assert!(
            e.contains("must not be empty") && e.contains("line 4"),
            "{e}"
        );
    }

    #[test]
    fn verify_count_is_checked() {
        let j = JobSpec::from_yaml(&job("verify: 3\n")).unwrap();
        assert_eq!(j.verify, Some(VerifyCount(3)));
        let back: JobSpec = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
        for bad in ["verify: 1\n", "verify: 17\n"] {
            let e = err(&job(bad));
            assert!(e.contains("2 to 16") && e.contains("line 5"), "{e}");
        }
        let e = err(&job("verify: two\n"));
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn duplicate_keys_and_garbage_are_refused() {
        let e = err(&job("policy: a\npolicy: b\n"));
        assert!(e.to_lowercase().contains("duplicate"), "{e}");
        let e = err("{ not yaml: [");
        assert!(e.contains("invalid job file"), "{e}");
        let e = err("- just\n- a list\n");
        assert!(e.contains("invalid job file"), "{e}");
    }
}
