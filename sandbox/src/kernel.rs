//! What a policy needs from the kernel, and what it does on a kernel
//! without it: the policy's `[kernel]` table ([`KernelPolicy`]) against the
//! running kernel's features ([`KernelFeatures`]).
//!
//! Each protection pinfold takes from a kernel feature ([`Protection`]) is
//! either a floor (`"require"`: refuse to start, with one line naming the
//! feature and the oldest Linux that has it) or a degradation (`"degrade"`:
//! run without it, behind a compensating control this module names for the
//! policy's settings, [`compensation`]). A policy may only degrade what has
//! a control that holds under its own settings: validation refuses the rest
//! ([`KernelPolicy::check`]), so a degradation is never an accident.
//! [`assess`] is the pure decision: features in, the degradations in force
//! or the refusal out; `exec` (its `--report` and `-v`) and `doctor` both
//! call it, so they cannot disagree.
//!
//! No kernel requirement, so not in the table: `clone3` (the seccomp
//! profile answers it ENOSYS on every kernel, so libc falls back to
//! `clone`, whose flags the filter inspects), image whiteouts (applied by
//! pinfold itself where the overlay cannot), Landlock's audit (ABI 7,
//! unused). cgroup v2 limits are `limits.require_cgroup` (the host's
//! delegation, reported as `limits_mechanism`); pasta is needed by network
//! mode `egress` only.

use serde::{Deserialize, Serialize};

use pinfold_api::job::NetworkMode;

/// A policy's answer for one protection on a kernel that lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Refuse to start.
    Require,
    /// Run, behind the compensating control [`compensation`] names.
    Degrade,
}

/// The `[kernel]` table of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelPolicy {
    /// The oldest Landlock ABI the policy runs on, whatever the
    /// protections below say (at least 1).
    #[serde(default = "one")]
    pub landlock_abi: u32,
    /// Landlock's file rules (ABI 1): always required.
    #[serde(default = "require")]
    pub filesystem: Decision,
    /// openat2's `RESOLVE_IN_ROOT`: always required.
    #[serde(default = "require")]
    pub resolve_in_root: Decision,
    /// Landlock's truncate right (ABI 3).
    #[serde(default = "degrade")]
    pub truncate: Decision,
    /// Landlock's TCP bind/connect rules (ABI 4), used when
    /// `network.loopback_tcp` is false.
    #[serde(default = "degrade")]
    pub tcp: Decision,
    /// Landlock's ioctl right on device files (ABI 5).
    #[serde(default = "degrade")]
    pub ioctl_dev: Decision,
    /// Landlock's scoping of abstract unix sockets and signals (ABI 6).
    #[serde(default = "degrade")]
    pub scopes: Decision,
}

impl Default for KernelPolicy {
    fn default() -> Self {
        Self {
            landlock_abi: 1,
            filesystem: Decision::Require,
            resolve_in_root: Decision::Require,
            truncate: Decision::Degrade,
            tcp: Decision::Degrade,
            ioctl_dev: Decision::Degrade,
            scopes: Decision::Degrade,
        }
    }
}

fn one() -> u32 {
    1
}
fn require() -> Decision {
    Decision::Require
}
fn degrade() -> Decision {
    Decision::Degrade
}

/// A protection pinfold takes from a kernel feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Landlock's file rules.
    Filesystem,
    /// `RESOLVE_IN_ROOT`: paths inside the image resolved in it.
    ResolveInRoot,
    /// Landlock's truncate right.
    Truncate,
    /// Landlock's TCP rules.
    Tcp,
    /// Landlock's ioctl right on device files.
    IoctlDev,
    /// Landlock's abstract-unix-socket and signal scopes.
    Scopes,
}

/// What a protection needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// This Landlock ABI.
    Landlock(u32),
    /// openat2 with `RESOLVE_IN_ROOT`.
    Openat2,
}

impl Protection {
    /// Every protection, in the order reports list them.
    pub const ALL: [Protection; 6] = [
        Protection::Filesystem,
        Protection::ResolveInRoot,
        Protection::Truncate,
        Protection::Tcp,
        Protection::IoctlDev,
        Protection::Scopes,
    ];

    /// Its key in the `[kernel]` table.
    pub fn key(self) -> &'static str {
        match self {
            Protection::Filesystem => "filesystem",
            Protection::ResolveInRoot => "resolve_in_root",
            Protection::Truncate => "truncate",
            Protection::Tcp => "tcp",
            Protection::IoctlDev => "ioctl_dev",
            Protection::Scopes => "scopes",
        }
    }

    /// What it is, for people.
    pub fn what(self) -> &'static str {
        match self {
            Protection::Filesystem => "Landlock file rules",
            Protection::ResolveInRoot => "openat2 RESOLVE_IN_ROOT",
            Protection::Truncate => "Landlock truncate rules",
            Protection::Tcp => "Landlock TCP rules",
            Protection::IoctlDev => "Landlock device ioctl rules",
            Protection::Scopes => "Landlock abstract-unix-socket and signal scopes",
        }
    }

    fn need(self) -> Need {
        match self {
            Protection::Filesystem => Need::Landlock(1),
            Protection::ResolveInRoot => Need::Openat2,
            Protection::Truncate => Need::Landlock(3),
            Protection::Tcp => Need::Landlock(4),
            Protection::IoctlDev => Need::Landlock(5),
            Protection::Scopes => Need::Landlock(6),
        }
    }

    /// The kernel feature and the oldest Linux that has it, e.g.
    /// "Landlock ABI 4, Linux 6.7".
    pub fn missing(self) -> String {
        match self.need() {
            Need::Landlock(abi) => landlock_version(abi),
            Need::Openat2 => "openat2, Linux 5.6".to_owned(),
        }
    }

    fn decision(self, k: &KernelPolicy) -> Decision {
        match self {
            Protection::Filesystem => k.filesystem,
            Protection::ResolveInRoot => k.resolve_in_root,
            Protection::Truncate => k.truncate,
            Protection::Tcp => k.tcp,
            Protection::IoctlDev => k.ioctl_dev,
            Protection::Scopes => k.scopes,
        }
    }
}

/// "Landlock ABI N, Linux X.Y" (the Linux that introduced it).
fn landlock_version(abi: u32) -> String {
    let linux = match abi {
        0 | 1 => "Linux 5.13",
        2 => "Linux 5.19",
        3 => "Linux 6.2",
        4 => "Linux 6.7",
        5 => "Linux 6.10",
        6 => "Linux 6.12",
        7 => "Linux 6.15",
        _ => "a Linux newer than pinfold knows",
    };
    format!("Landlock ABI {abi}, {linux}")
}

/// The policy settings a compensating control depends on (the effective
/// ones: a job's narrower network mode counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// The network mode.
    pub network: NetworkMode,
    /// `filesystem.rootfs_writable`.
    pub rootfs_writable: bool,
    /// `network.loopback_tcp`: when true Landlock has no TCP rules to apply.
    pub loopback_tcp: bool,
}

/// Whether the container's network namespace is its own in `mode`
/// (exhaustive on purpose: a mode that shared the host's would lose the
/// controls that lean on it).
fn own_netns(mode: NetworkMode) -> bool {
    match mode {
        NetworkMode::None | NetworkMode::Allowlist | NetworkMode::Egress => true,
    }
}

/// The control that stands in for `p` under `setup`, or `None` when none
/// does (then the protection can only be required).
pub fn compensation(p: Protection, setup: &Setup) -> Option<&'static str> {
    match p {
        // Without file rules a job reaches host files through /proc magic
        // links; without RESOLVE_IN_ROOT an image's symlinks steer pinfold's
        // own mounts out of the rootfs. Nothing else stops either.
        Protection::Filesystem | Protection::ResolveInRoot => None,
        Protection::Truncate if setup.rootfs_writable => Some(
            "read-only mounts (/proc, /dev, read-only binds: truncate fails with EROFS); the rest is the run's own throw-away rootfs layer, writable under this policy",
        ),
        Protection::Truncate => Some(
            "read-only mounts: the rootfs, /proc, /dev and read-only binds (truncate fails with EROFS)",
        ),
        Protection::Tcp => match setup.network {
            NetworkMode::None => Some(
                "the container's own network namespace with only loopback: no listener but the job's own to connect to",
            ),
            NetworkMode::Allowlist => Some(
                "the container's own network namespace with only loopback and the allowlist proxy, which reaches only network.allow",
            ),
            // Egress is TCP through pasta: nothing stands in for rules there.
            NetworkMode::Egress => None,
        },
        Protection::IoctlDev => Some(
            "no device nodes but pinfold's (null, zero, full, tty and the container's devpts, where the rules allow ioctl anyway; random and urandom, whose state-changing ioctls need the host's CAP_SYS_ADMIN); every other mount is nodev",
        ),
        Protection::Scopes if own_netns(setup.network) => Some(
            "the container's own network namespace (abstract unix sockets outside it cannot be named) and pid namespace (processes outside it cannot be signalled)",
        ),
        Protection::Scopes => None,
    }
}

/// Whether `p` is in use under `setup` (TCP rules only when loopback TCP is refused).
fn in_use(p: Protection, setup: &Setup) -> bool {
    p != Protection::Tcp || !setup.loopback_tcp
}

impl KernelPolicy {
    /// Refuses a table that degrades what nothing compensates under
    /// `setup`: `(field, message)`.
    pub fn check(&self, setup: &Setup) -> Result<(), (&'static str, String)> {
        if self.landlock_abi < 1 {
            return Err((
                "kernel.landlock_abi",
                "must be at least 1: Landlock's file rules are always required".to_owned(),
            ));
        }
        for p in Protection::ALL {
            if p.decision(self) == Decision::Degrade
                && in_use(p, setup)
                && compensation(p, setup).is_none()
            {
                return Err((
                    field(p),
                    format!(
                        "cannot be \"degrade\" here: nothing stands in for {} under this policy; set \"require\"",
                        p.what()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn field(p: Protection) -> &'static str {
    match p {
        Protection::Filesystem => "kernel.filesystem",
        Protection::ResolveInRoot => "kernel.resolve_in_root",
        Protection::Truncate => "kernel.truncate",
        Protection::Tcp => "kernel.tcp",
        Protection::IoctlDev => "kernel.ioctl_dev",
        Protection::Scopes => "kernel.scopes",
    }
}

/// What the running kernel has, as far as pinfold's protections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: String,
    /// The Landlock ABI (0: no Landlock).
    pub landlock_abi: u32,
    /// openat2 with `RESOLVE_IN_ROOT` works.
    pub resolve_in_root: bool,
}

impl KernelFeatures {
    /// Asks the running kernel.
    pub fn probe() -> KernelFeatures {
        KernelFeatures {
            release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".to_owned()),
            landlock_abi: landlock_abi(),
            resolve_in_root: probe_resolve_in_root(),
        }
    }

    fn has(&self, p: Protection) -> bool {
        match p.need() {
            Need::Landlock(abi) => self.landlock_abi >= abi,
            Need::Openat2 => self.resolve_in_root,
        }
    }
}

/// The kernel's Landlock ABI version (0 when Landlock is unavailable).
pub fn landlock_abi() -> u32 {
    // SAFETY: with a null attr, size 0 and LANDLOCK_CREATE_RULESET_VERSION the
    // syscall only returns the ABI version; no memory is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if v < 0 { 0 } else { v as u32 }
}

fn probe_resolve_in_root() -> bool {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    openat2(nix::fcntl::AT_FDCWD, "/", how).is_ok()
}

/// A protection in force in a weaker form on this kernel, as `--report`'s
/// `degraded` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Degradation {
    /// The `[kernel]` key.
    pub protection: &'static str,
    /// The feature the kernel lacks and the oldest Linux that has it.
    pub missing: String,
    /// What stands in for it.
    pub compensated_by: &'static str,
}

impl std::fmt::Display for Degradation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (needs {}): compensated by {}",
            self.protection, self.missing, self.compensated_by
        )
    }
}

/// Why a policy does not run on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // variant fields are described by the messages
pub enum Refusal {
    /// Below the policy's `kernel.landlock_abi`.
    #[error(
        "this kernel (Linux {release}) has Landlock ABI {abi}, below the policy's kernel.landlock_abi = {floor} ({version}): run on a newer kernel (Landlock needs `lsm=...,landlock`), or choose a policy with a lower floor"
    )]
    Floor {
        release: String,
        abi: u32,
        floor: u32,
        version: String,
    },
    /// A required protection is missing.
    #[error(
        "this kernel (Linux {release}, Landlock ABI {abi}) lacks {what} ({missing}), which the policy requires (kernel.{key} = \"require\"): run on that Linux or later, or choose a policy that degrades it"
    )]
    Missing {
        release: String,
        abi: u32,
        what: &'static str,
        missing: String,
        key: &'static str,
    },
}

/// The degradations in force for a policy with table `k` and settings
/// `setup` on a kernel with `f`, or why it refuses to run there.
pub fn assess(
    k: &KernelPolicy,
    setup: &Setup,
    f: &KernelFeatures,
) -> Result<Vec<Degradation>, Refusal> {
    if f.landlock_abi < k.landlock_abi {
        return Err(Refusal::Floor {
            release: f.release.clone(),
            abi: f.landlock_abi,
            floor: k.landlock_abi,
            version: landlock_version(k.landlock_abi),
        });
    }
    let mut degraded = Vec::new();
    for p in Protection::ALL {
        if f.has(p) || !in_use(p, setup) {
            continue;
        }
        match (p.decision(k), compensation(p, setup)) {
            (Decision::Degrade, Some(by)) => degraded.push(Degradation {
                protection: p.key(),
                missing: p.missing(),
                compensated_by: by,
            }),
            // A degradation without a control is refused by validation;
            // should one get here, it is a floor.
            _ => {
                return Err(Refusal::Missing {
                    release: f.release.clone(),
                    abi: f.landlock_abi,
                    what: p.what(),
                    missing: p.missing(),
                    key: p.key(),
                });
            }
        }
    }
    Ok(degraded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(abi: u32) -> KernelFeatures {
        KernelFeatures {
            release: format!("test-abi{abi}"),
            landlock_abi: abi,
            resolve_in_root: true,
        }
    }

    const UNTRUSTED: Setup = Setup {
        network: NetworkMode::None,
        rootfs_writable: false,
        loopback_tcp: false,
    };
    const DEFAULT: Setup = Setup {
        network: NetworkMode::None,
        rootfs_writable: true,
        loopback_tcp: true,
    };

    fn keys(d: &[Degradation]) -> Vec<&str> {
        d.iter().map(|d| d.protection).collect()
    }

    #[test]
    fn debian_12s_kernel_degrades_four_protections_under_untrusted() {
        let k = KernelPolicy::default();
        let d = assess(&k, &UNTRUSTED, &kernel(2)).unwrap();
        assert_eq!(keys(&d), ["truncate", "tcp", "ioctl_dev", "scopes"]);
        assert_eq!(d[1].missing, "Landlock ABI 4, Linux 6.7");
        assert!(d[1].compensated_by.contains("only loopback"), "{}", d[1]);
        assert!(d[0].compensated_by.contains("the rootfs"), "{}", d[0]);
        // loopback TCP allowed: no TCP rules, so nothing degraded there.
        let d = assess(&k, &DEFAULT, &kernel(2)).unwrap();
        assert_eq!(keys(&d), ["truncate", "ioctl_dev", "scopes"]);
        assert!(d[0].compensated_by.contains("throw-away"), "{}", d[0]);
    }

    #[test]
    fn each_abi_degrades_only_what_it_lacks() {
        let k = KernelPolicy::default();
        for (abi, want) in [
            (1, &["truncate", "tcp", "ioctl_dev", "scopes"][..]),
            (3, &["tcp", "ioctl_dev", "scopes"]),
            (4, &["ioctl_dev", "scopes"]),
            (5, &["scopes"]),
            (6, &[]),
            (7, &[]),
        ] {
            assert_eq!(keys(&assess(&k, &UNTRUSTED, &kernel(abi)).unwrap()), want);
        }
    }

    #[test]
    fn a_required_protection_refuses_in_one_line() {
        let k = KernelPolicy {
            scopes: Decision::Require,
            ..KernelPolicy::default()
        };
        let e = assess(&k, &UNTRUSTED, &kernel(2)).unwrap_err().to_string();
        assert!(e.contains("Landlock ABI 6, Linux 6.12"), "{e}");
        assert!(e.contains("kernel.scopes"), "{e}");
        assert!(!e.contains('\n'));
        assert!(assess(&k, &UNTRUSTED, &kernel(6)).is_ok());
        // No Landlock at all: the file rules are a floor.
        let e = assess(&KernelPolicy::default(), &DEFAULT, &kernel(0)).unwrap_err();
        assert!(matches!(e, Refusal::Floor { .. }), "{e}");
        let e = assess(
            &KernelPolicy {
                landlock_abi: 0,
                ..KernelPolicy::default()
            },
            &DEFAULT,
            &kernel(0),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Landlock file rules (Landlock ABI 1, Linux 5.13)"),
            "{e}"
        );
        let no_openat2 = KernelFeatures {
            resolve_in_root: false,
            ..kernel(7)
        };
        let e = assess(&KernelPolicy::default(), &DEFAULT, &no_openat2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("openat2, Linux 5.6"), "{e}");
    }

    #[test]
    fn the_floor_refuses_by_abi() {
        let k = KernelPolicy {
            landlock_abi: 99,
            ..KernelPolicy::default()
        };
        let e = assess(&k, &DEFAULT, &kernel(7)).unwrap_err().to_string();
        assert!(
            e.contains("Landlock ABI 7, below the policy's kernel.landlock_abi = 99"),
            "{e}"
        );
    }

    #[test]
    fn only_what_a_control_covers_may_degrade() {
        let ok = KernelPolicy::default();
        assert!(ok.check(&UNTRUSTED).is_ok());
        for (k, field) in [
            (
                KernelPolicy {
                    filesystem: Decision::Degrade,
                    ..ok.clone()
                },
                "kernel.filesystem",
            ),
            (
                KernelPolicy {
                    resolve_in_root: Decision::Degrade,
                    ..ok.clone()
                },
                "kernel.resolve_in_root",
            ),
            (
                KernelPolicy {
                    landlock_abi: 0,
                    ..ok.clone()
                },
                "kernel.landlock_abi",
            ),
        ] {
            assert_eq!(k.check(&DEFAULT).unwrap_err().0, field);
        }
        // TCP rules in egress would have no stand-in (validation of the
        // network table refuses loopback_tcp = false there first).
        let egress = Setup {
            network: NetworkMode::Egress,
            ..UNTRUSTED
        };
        assert_eq!(ok.check(&egress).unwrap_err().0, "kernel.tcp");
        assert!(compensation(Protection::Tcp, &egress).is_none());
        // Scopes lean on the container's own namespaces, in every mode.
        for network in [
            NetworkMode::None,
            NetworkMode::Allowlist,
            NetworkMode::Egress,
        ] {
            let s = Setup { network, ..DEFAULT };
            assert!(compensation(Protection::Scopes, &s).is_some());
        }
    }

    #[test]
    fn this_kernel_is_probed() {
        let f = KernelFeatures::probe();
        assert!(!f.release.is_empty());
        // Every kernel pinfold runs on has openat2 (5.6) below overlayfs
        // in a user namespace (5.11).
        assert!(f.resolve_in_root);
    }
}
