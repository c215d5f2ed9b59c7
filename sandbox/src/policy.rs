//! The [`Policy`] type: what a container may do, loaded from TOML.
//!
//! Policies live as TOML files in `policies/` at the repository root and are
//! read at run time by name (`default`, `untrusted`) or by path. Lookup order
//! for a name, first hit wins:
//!
//! 1. each directory in `$PINFOLD_POLICY_PATH` (colon-separated),
//! 2. `$PINFOLD_HOME/policies`,
//! 3. `/etc/pinfold/policies`,
//! 4. the copies of `policies/*.toml` built into the binary, so a lone binary works.
//!
//! Parsing is strict: an unknown key is an error that names the key and the file.
//! Seccomp profiles named by a policy are looked up the same way under `seccomp/`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kernel::{KernelPolicy, Setup};
use crate::net::allowlist::Allowlist;
pub use pinfold_api::units::{ByteSize, Seconds};

/// Errors from loading or validating a policy.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // variant fields are described by the messages
pub enum PolicyError {
    /// No policy file of that name in any search directory.
    #[error(
        "no policy named {name:?} (looked in {searched}); use a shipped name (default, untrusted, trusted) or a path to a .toml file"
    )]
    NotFound { name: String, searched: String },
    /// The file could not be read.
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key or a bad value. The
    /// message gives the position only, never the file's text (a file's
    /// first line may be a secret); `detail` says what is wrong there, for
    /// the operator's own `pinfold policy check`.
    #[error(
        "invalid policy {path}: not a valid policy at line {line}, column {column}; `pinfold policy check {path}` says what is wrong there"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        detail: String,
    },
    /// A value parsed but makes no sense.
    #[error("invalid policy {path}: field `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
    /// No seccomp profile of that name.
    #[error(
        "no seccomp profile named {name:?} (looked in {searched}); name one under policies/seccomp/ or give a path"
    )]
    ProfileNotFound { name: String, searched: String },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, PolicyError>;

/// What a container may do. Every field is documented in `policies/default.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// One line saying whom the policy is for.
    #[serde(default)]
    pub description: String,
    /// File system layout and sizes.
    #[serde(default)]
    pub filesystem: FilesystemPolicy,
    /// Network mode.
    #[serde(default)]
    pub network: NetworkPolicy,
    /// The old spelling of `kernel.landlock_abi` (`[landlock] min_abi`),
    /// still read; folded into `kernel` by validation and never written.
    #[serde(default, skip_serializing)]
    pub landlock: Option<LandlockPolicy>,
    /// What the policy needs from the kernel, and what it degrades
    /// (see [`crate::kernel`]).
    #[serde(default)]
    pub kernel: KernelPolicy,
    /// Seccomp profile.
    #[serde(default)]
    pub seccomp: SeccompPolicy,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Where the policy was loaded from (not part of the file).
    #[serde(skip)]
    pub source: PolicySource,
}

/// Where a policy came from, to resolve relative seccomp profile paths and to report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PolicySource {
    /// Built into the binary.
    #[default]
    Builtin,
    /// A file on disk.
    File(PathBuf),
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::Builtin => f.write_str("(built in)"),
            PolicySource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// File system settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemPolicy {
    /// Whether the job may write to its (throw-away) view of the rootfs.
    #[serde(default = "yes")]
    pub rootfs_writable: bool,
    /// Size cap of the per-run writable layer.
    #[serde(default = "default_layer_size")]
    pub writable_layer_size: ByteSize,
    /// Size cap of the job's workspace (the working directory under the
    /// runner: a tmpfs kept across the job's steps).
    #[serde(default = "default_workspace_size")]
    pub workspace_size: ByteSize,
    /// Size cap of /tmp.
    #[serde(default = "default_tmp_size")]
    pub tmp_size: ByteSize,
    /// Size cap of /dev/shm.
    #[serde(default = "default_shm_size")]
    pub shm_size: ByteSize,
}

impl Default for FilesystemPolicy {
    fn default() -> Self {
        Self {
            rootfs_writable: true,
            writable_layer_size: default_layer_size(),
            workspace_size: default_workspace_size(),
            tmp_size: default_tmp_size(),
            shm_size: default_shm_size(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_layer_size() -> ByteSize {
    ByteSize(4 << 30)
}
fn default_workspace_size() -> ByteSize {
    ByteSize(4 << 30)
}
fn default_tmp_size() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_shm_size() -> ByteSize {
    ByteSize(64 << 20)
}

/// Network settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// The network mode.
    #[serde(default)]
    pub mode: NetworkMode,
    /// Whether TCP bind/connect is allowed at all (only loopback exists in `none`).
    #[serde(default = "yes")]
    pub loopback_tcp: bool,
    /// In `egress` and `allowlist`: whether the private classes of
    /// [`crate::net::ranges`] (RFC 1918, shared, link-local, unique local,
    /// documentation, benchmarking) and, in `egress`, the host's on-link
    /// prefixes and gateways are reachable. The host's own addresses,
    /// metadata endpoints and other special-use ranges never are.
    #[serde(default)]
    pub allow_private: bool,
    /// In `allowlist`: the destinations the proxy may reach, `HOST[:PORT]`
    /// (syntax in [`crate::net::allowlist`]), as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// `allow` parsed, with `allow_private`: made once, by [`Policy::parse`]
    /// (which refuses a bad entry), and handed as it is to the proxy.
    #[serde(skip)]
    allowlist: Allowlist,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        Self {
            mode: NetworkMode::None,
            loopback_tcp: true,
            allow_private: false,
            allow: Vec::new(),
            allowlist: Allowlist::default(),
        }
    }
}

impl NetworkPolicy {
    /// The destinations of mode `allowlist`, parsed when the policy was
    /// validated.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }

    /// Takes `mode`, decided by [`crate::net::effective`]; `none` drops the
    /// allow list (it has no effect there, and validation refuses it).
    pub fn narrow_to(&mut self, mode: NetworkMode) {
        self.mode = mode;
        if mode == NetworkMode::None {
            self.allow.clear();
            self.allowlist.clear();
        }
    }
}

/// How the container reaches the network: the one type the job file
/// (`network:`) and the policy (`network.mode`) share.
pub use pinfold_api::job::NetworkMode;

/// The old `[landlock]` table: `min_abi` is now `kernel.landlock_abi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockPolicy {
    /// The oldest kernel Landlock ABI this policy accepts.
    pub min_abi: u32,
}

/// Seccomp settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompPolicy {
    /// A profile name under `policies/seccomp/` or a path to a profile file.
    #[serde(default = "default_profile")]
    pub profile: String,
}

impl Default for SeccompPolicy {
    fn default() -> Self {
        Self {
            profile: default_profile(),
        }
    }
}

fn default_profile() -> String {
    "pinfold".to_owned()
}

/// Resource limits. `nofile`, `nproc` and `fsize` are rlimits of the job
/// process; `memory`, `pids` and `cpu_time` cover the whole container (a
/// delegated cgroup v2 subtree when there is one, else a supervisor watching
/// the pid namespace, see `container::limits`); `log_bytes` is enforced by the
/// agent. A zero means unlimited for the container-wide fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// RLIMIT_NOFILE.
    #[serde(default = "default_nofile")]
    pub nofile: u64,
    /// RLIMIT_NPROC, counted per uid in the container's user namespace.
    #[serde(default = "default_nproc")]
    pub nproc: u64,
    /// RLIMIT_FSIZE; 0 means unlimited.
    #[serde(default = "default_fsize")]
    pub fsize: ByteSize,
    /// Memory of the whole container (cgroup memory.max, or the summed private RSS
    /// of its processes); 0 means unlimited.
    #[serde(default)]
    pub memory: ByteSize,
    /// Tasks (processes and threads) of the whole container; 0 means unlimited.
    #[serde(default)]
    pub pids: u64,
    /// CPU time of the whole container (user + system, all processes); 0
    /// means unlimited.
    #[serde(default)]
    pub cpu_time: Seconds,
    /// Bytes of log output a job may produce (enforced by the agent); 0
    /// means unlimited.
    #[serde(default)]
    pub log_bytes: ByteSize,
    /// Refuse to run unless a delegated cgroup v2 enforces the limits: the
    /// fallback supervisor cannot charge everything (`container::memory::UNCHARGED`).
    #[serde(default)]
    pub require_cgroup: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            nofile: default_nofile(),
            nproc: default_nproc(),
            fsize: default_fsize(),
            memory: ByteSize(0),
            pids: 0,
            cpu_time: Seconds(0),
            log_bytes: ByteSize(0),
            require_cgroup: false,
        }
    }
}

fn default_nofile() -> u64 {
    65536
}
fn default_nproc() -> u64 {
    8192
}
fn default_fsize() -> ByteSize {
    ByteSize(0)
}

/// The policies shipped in `policies/`, built in as a fallback.
const BUILTIN_POLICIES: &[(&str, &str)] = &[
    ("default", include_str!("../../policies/default.toml")),
    ("untrusted", include_str!("../../policies/untrusted.toml")),
    ("trusted", include_str!("../../policies/trusted.toml")),
];

/// The seccomp profiles shipped in `policies/seccomp/`, built in as a fallback.
const BUILTIN_PROFILES: &[(&str, &str)] = &[(
    "pinfold",
    include_str!("../../policies/seccomp/pinfold.json"),
)];

fn looks_like_path(s: &str) -> bool {
    s.contains('/') || s.ends_with(".toml") || s.ends_with(".json")
}

fn describe(dirs: &[PathBuf]) -> String {
    let mut v: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    v.push("built-in".to_owned());
    v.join(", ")
}

impl Policy {
    /// Loads a policy by name, searched in `dirs` then among the built-in
    /// ones (see the module docs for the order the binary passes), or by path.
    pub fn load(name_or_path: &str, dirs: &[PathBuf]) -> Result<Policy> {
        if looks_like_path(name_or_path) {
            return Self::from_file(Path::new(name_or_path));
        }
        if !name_or_path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || name_or_path.is_empty()
        {
            return Err(PolicyError::NotFound {
                name: name_or_path.to_owned(),
                searched: "nowhere: a policy name is letters, digits, - and _".to_owned(),
            });
        }
        for dir in dirs {
            let candidate = dir.join(format!("{name_or_path}.toml"));
            if candidate.is_file() {
                return Self::from_file(&candidate);
            }
        }
        match BUILTIN_POLICIES.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, text)) => Self::parse(
                text,
                PolicySource::Builtin,
                Path::new(&format!("(built-in) {n}.toml")),
            ),
            None => Err(PolicyError::NotFound {
                name: name_or_path.to_owned(),
                searched: describe(dirs),
            }),
        }
    }

    /// Loads a policy from a TOML file.
    pub fn from_file(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, PolicySource::File(path.to_owned()), path)
    }

    /// Parses and validates policy TOML. `shown` names the file in errors.
    pub fn parse(text: &str, source: PolicySource, shown: &Path) -> Result<Policy> {
        let mut policy: Policy = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |r| r.start).min(text.len());
            let before = &text.as_bytes()[..at];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = at
                - before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1)
                + 1;
            PolicyError::Parse {
                path: shown.to_owned(),
                line,
                column,
                detail: one_line(&e.to_string()),
            }
        })?;
        policy.source = source;
        policy.validate(shown)?;
        Ok(policy)
    }

    /// Checks every field; parses `network.allow` into `network.allowlist`.
    fn validate(&mut self, shown: &Path) -> Result<()> {
        let invalid = |field, message: &str| PolicyError::Invalid {
            path: shown.to_owned(),
            field,
            message: message.to_owned(),
        };
        if self.limits.nofile < 16 {
            return Err(invalid("limits.nofile", "must be at least 16"));
        }
        if self.limits.nproc < 1 {
            return Err(invalid("limits.nproc", "must be at least 1"));
        }
        if self.limits.memory.0 != 0 && self.limits.memory.0 < 4 << 20 {
            return Err(invalid(
                "limits.memory",
                "must be 0 (unlimited) or at least 4M: no container starts in less",
            ));
        }
        if self.limits.pids != 0 && self.limits.pids < 4 {
            return Err(invalid(
                "limits.pids",
                "must be 0 (unlimited) or at least 4: the container's init, a shell and a command need 3",
            ));
        }
        if self.limits.log_bytes.0 != 0 && self.limits.log_bytes.0 < 4096 {
            return Err(invalid(
                "limits.log_bytes",
                "must be 0 (unlimited) or at least 4K",
            ));
        }
        for (field, size) in [
            (
                "filesystem.writable_layer_size",
                self.filesystem.writable_layer_size,
            ),
            ("filesystem.workspace_size", self.filesystem.workspace_size),
            ("filesystem.tmp_size", self.filesystem.tmp_size),
            ("filesystem.shm_size", self.filesystem.shm_size),
        ] {
            if size.0 < 4096 {
                return Err(invalid(field, "must be at least 4K"));
            }
        }
        if self.network.mode == NetworkMode::Egress && !self.network.loopback_tcp {
            return Err(invalid(
                "network.loopback_tcp",
                "must be true with mode = \"egress\" (egress is TCP and UDP through a user-mode stack)",
            ));
        }
        match Allowlist::parse(&self.network.allow, self.network.allow_private) {
            Ok(list) => self.network.allowlist = list,
            Err(e) => return Err(invalid("network.allow", &e.to_string())),
        }
        if !self.network.allow.is_empty() && self.network.mode == NetworkMode::None {
            return Err(invalid(
                "network.allow",
                "has no effect with mode = \"none\": set mode = \"allowlist\", or remove the list",
            ));
        }
        if self.seccomp.profile.is_empty() {
            return Err(invalid("seccomp.profile", "must name a profile"));
        }
        if let Some(old) = self.landlock.take() {
            if self.kernel != KernelPolicy::default() {
                return Err(invalid(
                    "landlock.min_abi",
                    "is the old spelling of kernel.landlock_abi: remove the [landlock] table and set landlock_abi in [kernel]",
                ));
            }
            if old.min_abi == 0 {
                return Err(invalid(
                    "landlock.min_abi",
                    "0 (run without Landlock) is no longer accepted: Landlock's file rules are always required; remove the [landlock] table",
                ));
            }
            self.kernel.landlock_abi = old.min_abi;
        }
        self.kernel
            .check(&self.setup(self.network.mode))
            .map_err(|(field, message)| invalid(field, &message))
    }

    /// The settings the kernel's compensating controls depend on, with
    /// network mode `network` (the effective one, which a job may narrow).
    pub fn setup(&self, network: NetworkMode) -> Setup {
        Setup {
            network,
            rootfs_writable: self.filesystem.rootfs_writable,
            loopback_tcp: self.network.loopback_tcp,
        }
    }

    /// Renders the effective policy as TOML (what `pinfold policy show` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Reads the seccomp profile this policy names: `(where it came from, JSON text)`.
    /// A name is searched beside the policy's file, then under `seccomp/`
    /// of each of `search` (the policy search directories), then built in.
    pub fn seccomp_profile_text(&self, search: &[PathBuf]) -> Result<(String, String)> {
        let name = &self.seccomp.profile;
        if looks_like_path(name) {
            let mut path = PathBuf::from(name);
            if path.is_relative()
                && let PolicySource::File(f) = &self.source
                && let Some(dir) = f.parent()
            {
                path = dir.join(path);
            }
            let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read {
                path: path.clone(),
                source,
            })?;
            return Ok((path.display().to_string(), text));
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let PolicySource::File(f) = &self.source
            && let Some(dir) = f.parent()
        {
            dirs.push(dir.join("seccomp"));
        }
        dirs.extend(search.iter().map(|d| d.join("seccomp")));
        for dir in &dirs {
            let candidate = dir.join(format!("{name}.json"));
            if candidate.is_file() {
                let text =
                    std::fs::read_to_string(&candidate).map_err(|source| PolicyError::Read {
                        path: candidate.clone(),
                        source,
                    })?;
                return Ok((candidate.display().to_string(), text));
            }
        }
        match BUILTIN_PROFILES.iter().find(|(n, _)| n == name) {
            Some((n, text)) => Ok((format!("(built-in) {n}.json"), (*text).to_owned())),
            None => Err(PolicyError::ProfileNotFound {
                name: name.clone(),
                searched: describe(&dirs),
            }),
        }
    }
}

/// Folds a multi-line parser message (toml prints a source excerpt) into one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '|' || c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a policy text as the built-in file `x.toml`.
    fn parse_x(text: &str) -> Result<Policy> {
        Policy::parse(text, PolicySource::Builtin, Path::new("x.toml"))
    }

    #[test]
    fn shipped_policies_parse() {
        for (name, text) in BUILTIN_POLICIES {
            let p = Policy::parse(text, PolicySource::Builtin, Path::new(name)).unwrap();
            assert!(!p.description.is_empty(), "{name} has a description");
        }
        let untrusted = Policy::load("untrusted", &[]).unwrap();
        assert!(!untrusted.network.loopback_tcp);
        assert!(!untrusted.filesystem.rootfs_writable);
        assert_eq!(untrusted.kernel.landlock_abi, 1);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse_x("[limits]\nnofile = 100\nbogus = 1\n").unwrap_err();
        let err = e.to_string();
        assert!(
            err.contains("x.toml") && err.contains("line 3, column 1"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        assert!(full(&e).contains("bogus"), "{e:?}");
    }

    /// The message and, for a parse error, the operator-only detail.
    fn full(e: &PolicyError) -> String {
        match e {
            PolicyError::Parse { detail, .. } => format!("{e} {detail}"),
            _ => e.to_string(),
        }
    }

    #[test]
    fn a_parse_error_never_quotes_the_file() {
        // A job used to name `/proc/self/environ` or a token file as its
        // policy; the error went into the job's log with the first line.
        for text in [
            "PINFOLD_SECRET_DEPLOY=hunter2-s3cr3t\n",
            "hunter2-s3cr3t\n",
            "[limits]\nmemory = \"hunter2-s3cr3t\"\n",
            "description = 7\n[hunter2-s3cr3t]\n",
        ] {
            let err = parse_x(text).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("x.toml") && err.contains("line "), "{err}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse_x("[limits]\nnofile = 3\n").unwrap_err().to_string();
        assert!(err.contains("limits.nofile"), "{err}");
        let e = parse_x("[filesystem]\ntmp_size = \"12Q\"\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(full(&e).contains("12Q"), "{e:?}");
    }

    #[test]
    fn container_limits_parse_and_are_validated() {
        let p = parse_x(
            "[limits]\nmemory = \"2G\"\npids = 512\ncpu_time = \"10m\"\nlog_bytes = \"64M\"\n",
        )
        .unwrap();
        assert_eq!(p.limits.memory, ByteSize(2 << 30));
        assert_eq!(p.limits.pids, 512);
        assert_eq!(p.limits.cpu_time, Seconds(600));
        assert_eq!(p.limits.log_bytes, ByteSize(64 << 20));
        let untrusted = Policy::load("untrusted", &[]).unwrap();
        assert_eq!(untrusted.limits.pids, 512);
        for (toml, field) in [
            ("memory = \"1M\"", "limits.memory"),
            ("pids = 3", "limits.pids"),
            ("log_bytes = 10", "limits.log_bytes"),
            ("cpu_time = \"soon\"", "cpu_time"),
            ("cpu_time = \"1500ms\"", "whole seconds"),
        ] {
            let e = parse_x(&format!("[limits]\n{toml}\n")).unwrap_err();
            let err = full(&e);
            assert!(err.contains(field), "{toml}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn the_allow_list_is_parsed_with_the_policy() {
        let mut p =
            parse_x("[network]\nmode = \"allowlist\"\nallow = [\"198.51.100.7:8080\"]\n").unwrap();
        let list = p.network.allowlist();
        assert!(list.check("198.51.100.7", 8080).is_ok());
        assert!(list.check("198.51.100.7", 443).is_err());
        p.network.narrow_to(NetworkMode::None);
        assert!(p.network.allow.is_empty());
        assert!(p.network.allowlist().check("198.51.100.7", 8080).is_err());
    }

    #[test]
    fn the_kernel_table_and_its_old_spelling() {
        // An old file's [landlock] min_abi is the new floor.
        let p = parse_x("[landlock]\nmin_abi = 6\n").unwrap();
        assert_eq!(p.kernel.landlock_abi, 6);
        assert!(p.landlock.is_none());
        let again = Policy::parse(&p.to_toml(), PolicySource::Builtin, Path::new("s")).unwrap();
        assert_eq!(p, again);
        for (toml, field, says) in [
            (
                "[landlock]\nmin_abi = 0\n",
                "landlock.min_abi",
                "remove the [landlock] table",
            ),
            (
                "[landlock]\nmin_abi = 2\n[kernel]\nscopes = \"require\"\n",
                "landlock.min_abi",
                "set landlock_abi in [kernel]",
            ),
            (
                "[kernel]\nfilesystem = \"degrade\"\n",
                "kernel.filesystem",
                "set \"require\"",
            ),
            (
                "[kernel]\nlandlock_abi = 0\n",
                "kernel.landlock_abi",
                "at least 1",
            ),
        ] {
            let e = parse_x(toml).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(says), "{toml}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = full(&parse_x("[kernel]\nscopes = \"maybe\"\n").unwrap_err());
        assert!(e.contains("require") && e.contains("degrade"), "{e}");
        // Every shipped policy degrades, never requires, what Debian 12 lacks.
        for name in ["default", "untrusted", "trusted"] {
            let k = Policy::load(name, &[]).unwrap().kernel;
            assert_eq!(k, KernelPolicy::default(), "{name}");
        }
    }

    #[test]
    fn round_trip_through_show() {
        let p = Policy::load("default", &[]).unwrap();
        let shown = p.to_toml();
        let again = Policy::parse(&shown, PolicySource::Builtin, Path::new("shown")).unwrap();
        assert_eq!(p, again);
    }

    #[test]
    fn builtin_profile_found() {
        let p = Policy::load("default", &[]).unwrap();
        let (_, text) = p.seccomp_profile_text(&[]).unwrap();
        assert!(text.contains("clone3"));
    }
}
