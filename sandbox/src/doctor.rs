//! `pinfold doctor`: can the sandbox run here, and how well?
//!
//! Each check tries the real thing where it can (a user namespace, an
//! overlay mount in one) rather than reading configuration, and says what to
//! do when it fails. The probes that need namespaces run in a forked child,
//! so the caller is never changed.

use std::path::Path;

use serde::Serialize;

use crate::container::{cgroup, idmap, landlock, limits};
use crate::kernel::{self, KernelFeatures};
use crate::policy::{NetworkMode, Policy};
use crate::settings::Settings;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// Works, with a weaker guarantee or a missing extra.
    Warn,
    /// The sandbox cannot run (or cannot run a shipped policy).
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found, and what to do when it is not ok.
    pub detail: String,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

/// A check with one way to go wrong: `Ok` with `good` when it passes, else
/// `status` with `bad` (which says what to do).
fn pass_or(
    name: &'static str,
    pass: bool,
    good: impl Into<String>,
    status: Status,
    bad: impl Into<String>,
) -> Check {
    if pass {
        check(name, Status::Ok, good)
    } else {
        check(name, status, bad)
    }
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Runs `f` in a forked child and reports its exit status (0 = success) and
/// the message it wrote.
fn in_child(f: fn() -> Result<(), String>) -> Result<(), String> {
    let (r, w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    // SAFETY: `pinfold doctor` is single-threaded; the child only runs `f`,
    // writes to a pipe and exits with _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let code = match f() {
                Ok(()) => 0,
                Err(e) => {
                    let _ = nix::unistd::write(&w, e.as_bytes());
                    1
                }
            };
            // SAFETY: _exit ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(w);
            let mut msg = String::new();
            let mut file = std::fs::File::from(r);
            let _ = std::io::Read::read_to_string(&mut file, &mut msg);
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                _ => Err(if msg.is_empty() {
                    "the probe died".into()
                } else {
                    msg
                }),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

fn enter_userns() -> Result<(), String> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    nix::sched::unshare(
        nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS,
    )
    .map_err(|e| format!("unshare(CLONE_NEWUSER): {}", e.desc()))?;
    let _ = std::fs::write("/proc/self/setgroups", "deny");
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))
        .map_err(|e| format!("uid_map: {e}"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))
        .map_err(|e| format!("gid_map: {e}"))?;
    Ok(())
}

/// A user namespace with private mounts and a fresh tmpfs on /tmp, for a probe.
fn userns_with_tmp() -> Result<(), String> {
    enter_userns()?;
    crate::fs::mount::make_mounts_private()
        .map_err(|e| format!("make mounts private: {}", e.desc()))?;
    nix::mount::mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("mount tmpfs: {}", e.desc()))
}

fn probe_overlay() -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    userns_with_tmp()?;
    for d in ["l", "u", "w", "m"] {
        std::fs::create_dir(Path::new("/tmp").join(d)).map_err(|e| e.to_string())?;
    }
    mount(
        Some("overlay"),
        "/tmp/m",
        Some("overlay"),
        MsFlags::empty(),
        Some("lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w,userxattr"),
    )
    .map_err(|e| format!("mount overlay: {}", e.desc()))
}

/// Image deletions as the store writes them (`image/layer.rs`): a 0/0
/// character device made by this unprivileged user in an upper lower
/// layer must hide the file below it in a `userxattr` overlay.
fn probe_whiteouts() -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    use nix::sys::stat::{Mode, SFlag, mknod};
    userns_with_tmp()?;
    for d in ["l1", "l2", "m"] {
        std::fs::create_dir(Path::new("/tmp").join(d)).map_err(|e| e.to_string())?;
    }
    for f in ["/tmp/l1/gone", "/tmp/l1/kept"] {
        std::fs::write(f, "").map_err(|e| e.to_string())?;
    }
    mknod("/tmp/l2/gone", SFlag::S_IFCHR, Mode::empty(), 0)
        .map_err(|e| format!("mknod of a 0/0 whiteout: {}", e.desc()))?;
    mount(
        Some("overlay"),
        "/tmp/m",
        Some("overlay"),
        MsFlags::empty(),
        Some("lowerdir=/tmp/l2:/tmp/l1,userxattr"),
    )
    .map_err(|e| format!("mount overlay: {}", e.desc()))?;
    match (
        Path::new("/tmp/m/gone").symlink_metadata(),
        Path::new("/tmp/m/kept").exists(),
    ) {
        (Err(_), true) => Ok(()),
        _ => Err("a 0/0 whiteout did not hide the file below it".into()),
    }
}

/// The command that installs pinfold's AppArmor profile (from a checkout;
/// the Debian package installs it itself). The profile names
/// `/usr/bin/pinfold`.
pub const APPARMOR_INSTALL: &str = "sudo install -m644 ci-templates/apparmor/pinfold /etc/apparmor.d/pinfold && sudo apparmor_parser -r /etc/apparmor.d/pinfold";

/// The sysctls that decide whether an unprivileged user namespace may be
/// created, as read (trimmed; `None`: absent).
#[derive(Debug, Default)]
struct UsernsSysctls {
    max_user_namespaces: Option<String>,
    unprivileged_userns_clone: Option<String>,
    apparmor_restrict: Option<String>,
}

impl UsernsSysctls {
    fn read(settings: &Settings) -> UsernsSysctls {
        let read = |name: &str| read_trim(&settings.sysctl_path(name));
        UsernsSysctls {
            max_user_namespaces: read("user/max_user_namespaces"),
            unprivileged_userns_clone: read("kernel/unprivileged_userns_clone"),
            apparmor_restrict: read("kernel/apparmor_restrict_unprivileged_userns"),
        }
    }
}

fn check_userns(settings: &Settings) -> Check {
    let root = nix::unistd::geteuid().is_root();
    userns_verdict(&UsernsSysctls::read(settings), root, || {
        in_child(enter_userns)
    })
}

/// The user-namespace check from the sysctls, whether the caller is root
/// (exempt from AppArmor's restriction) and the probe, run only when the
/// sysctls allow it.
fn userns_verdict(
    sysctls: &UsernsSysctls,
    root: bool,
    probe: impl FnOnce() -> Result<(), String>,
) -> Check {
    let name = "user namespaces";
    if sysctls.max_user_namespaces.as_deref() == Some("0") {
        return check(
            name,
            Status::Fail,
            "disabled by user.max_user_namespaces=0: run `sysctl -w user.max_user_namespaces=15000` (and persist it in /etc/sysctl.d)",
        );
    }
    if sysctls.unprivileged_userns_clone.as_deref() == Some("0") {
        return check(
            name,
            Status::Fail,
            "disabled by kernel.unprivileged_userns_clone=0: run `sysctl -w kernel.unprivileged_userns_clone=1`",
        );
    }
    let restricted = sysctls.apparmor_restrict.as_deref() == Some("1");
    let install = format!(
        "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1): install pinfold's profile, which allows them for /usr/bin/pinfold: `{APPARMOR_INSTALL}`"
    );
    match probe() {
        Ok(()) if restricted && root => check(
            name,
            Status::Warn,
            format!("root may create one, other users may not: {install}"),
        ),
        Ok(()) if restricted => check(
            name,
            Status::Ok,
            "an unprivileged user namespace can be created (AppArmor restricts them, and a profile allows this binary)",
        ),
        Ok(()) => check(
            name,
            Status::Ok,
            "an unprivileged user namespace can be created",
        ),
        Err(e) if restricted => check(name, Status::Fail, format!("{e}: {install}")),
        Err(e) => check(
            name,
            Status::Fail,
            format!(
                "{e}: check the sysctls user.max_user_namespaces and kernel.apparmor_restrict_unprivileged_userns, and any seccomp or LSM policy of the caller"
            ),
        ),
    }
}

fn check_no_new_privs() -> Check {
    let set = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("NoNewPrivs:"))
                .map(|l| l.ends_with('1'))
        })
        .unwrap_or(false);
    pass_or(
        "no_new_privs",
        !set,
        "not set by a parent",
        Status::Warn,
        "already set by a parent process: the setuid newuidmap cannot work, so only the single-id mapping is possible; start pinfold from a service without NoNewPrivileges=yes",
    )
}

fn check_idmap(settings: &Settings) -> Check {
    let name = "id mapping";
    match idmap::plan(idmap::IdMapMode::Auto, settings) {
        Ok(plan @ idmap::IdMapPlan::Single { .. }) => check(
            name,
            Status::Warn,
            format!(
                "{plan}; for a full range install uidmap and give the user ranges: `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER`"
            ),
        ),
        Ok(plan) => check(name, Status::Ok, plan.to_string()),
        Err(e) => check(name, Status::Fail, e.to_string()),
    }
}

fn check_landlock(f: &KernelFeatures) -> Check {
    if f.landlock_abi == 0 {
        return check(
            "landlock",
            Status::Fail,
            "unavailable: boot with `lsm=...,landlock` on Linux 5.13 or later (every policy requires Landlock's file rules)",
        );
    }
    check(
        "landlock",
        Status::Ok,
        format!(
            "ABI {} (pinfold targets {}; what an older ABI leaves out, and what stands in for it, is said per policy)",
            f.landlock_abi,
            landlock::TARGET_ABI as u32
        ),
    )
}

/// The shipped policies `doctor` judges, by the names a runner uses.
const SHIPPED: [&str; 3] = ["default", "untrusted", "trusted"];

/// Whether policy `name` runs here, as `exec` would decide it: the
/// kernel's floors and degradations ([`kernel::assess`], the same call as
/// the container's), then what the host must provide (a delegated cgroup
/// under `limits.require_cgroup`, pasta for `egress`).
fn policy_verdict(
    name: &'static str,
    policy: &Policy,
    f: &KernelFeatures,
    mechanism: &cgroup::Mechanism,
    pasta: bool,
) -> Check {
    let degraded = match kernel::assess(&policy.kernel, &policy.setup(policy.network.mode), f) {
        Ok(d) => d,
        Err(refusal) => return check(name, Status::Fail, format!("refuses: {refusal}")),
    };
    if let Some(refusal) = limits::refuse_fallback(policy, mechanism) {
        return check(name, Status::Fail, format!("refuses: {refusal}"));
    }
    if policy.network.mode == NetworkMode::Egress && !pasta {
        return check(
            name,
            Status::Fail,
            "refuses: network mode egress needs pasta (apt-get install passt)",
        );
    }
    if degraded.is_empty() {
        return check(name, Status::Ok, "runs");
    }
    let list: Vec<String> = degraded.iter().map(ToString::to_string).collect();
    check(
        name,
        Status::Warn,
        format!("runs degraded: {}", list.join("; ")),
    )
}

fn check_policies(
    settings: &Settings,
    f: &KernelFeatures,
    mechanism: &cgroup::Mechanism,
) -> Vec<Check> {
    let pasta = settings.which("pasta", "").is_some();
    SHIPPED
        .iter()
        .map(|&name| {
            let label = match name {
                "default" => "policy default",
                "untrusted" => "policy untrusted",
                _ => "policy trusted",
            };
            match Policy::load(name, &settings.policy_dirs()) {
                Ok(p) => policy_verdict(label, &p, f, mechanism, pasta),
                Err(e) => check(label, Status::Fail, e.to_string()),
            }
        })
        .collect()
}

fn check_seccomp() -> Check {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    pass_or(
        "seccomp",
        rc >= 0,
        "filters available",
        Status::Fail,
        "the kernel lacks seccomp (CONFIG_SECCOMP_FILTER)",
    )
}

fn check_overlay() -> Check {
    match in_child(probe_overlay) {
        Ok(()) => check(
            "overlayfs",
            Status::Ok,
            "mountable in a user namespace (with userxattr)",
        ),
        Err(e) => check(
            "overlayfs",
            Status::Fail,
            format!("{e}: unprivileged overlayfs needs Linux 5.11 or later"),
        ),
    }
}

fn check_whiteouts() -> Check {
    let name = "image whiteouts";
    match in_child(probe_whiteouts) {
        Ok(()) => check(
            name,
            Status::Ok,
            "0/0 character devices hide deleted files in an unprivileged overlay",
        ),
        Err(e) => check(
            name,
            Status::Warn,
            format!(
                "{e}: images whose layers delete files cannot be unpacked or would show them (needs Linux 5.8+ and mknod not refused by a seccomp filter or LSM); --rootfs is unaffected"
            ),
        ),
    }
}

fn check_cgroups(mechanism: &cgroup::Mechanism) -> Check {
    use crate::container::cgroup::Mechanism;
    let name = "cgroup v2 delegation";
    match mechanism {
        Mechanism::Cgroup(dir) => check(
            name,
            Status::Ok,
            format!(
                "{} is delegated with memory, pids and cpu, and pinfold is alone in it: limits use cgroup v2",
                dir.display()
            ),
        ),
        Mechanism::Fallback(why) => check(
            name,
            Status::Warn,
            format!(
                "{why}; limits use the fallback (rlimits + pid-namespace supervisor), whose memory sum does not charge {}; {} (policies with limits.require_cgroup refuse to run until then)",
                crate::container::memory::UNCHARGED,
                delegation_hint(nix::unistd::geteuid().as_raw())
            ),
        ),
    }
}

/// What to do, on this host, for cgroup v2 limits.
fn delegation_hint(uid: u32) -> String {
    use crate::container::cgroup::{USER_DELEGATE_DROP_IN, unified_only, user_manager_controllers};
    if !unified_only() {
        return "this host's cgroups are hybrid or v1, so cgroup v2 limits need a host booted on the unified hierarchy (systemd.unified_cgroup_hierarchy=1, the default of every current systemd distribution)".into();
    }
    let scope = if uid == 0 {
        "run pinfold as a unit with Delegate=yes (ci-templates/systemd/pinfold-agent.service) or as `systemd-run --scope -p Delegate=yes pinfold ...`"
    } else {
        "run pinfold as `systemd-run --user --scope -p Delegate=yes pinfold ...` or as a unit with Delegate=yes"
    };
    let scope = format!(
        "{scope}; pinfold run and pinfold agent started that way give each step a cgroup of its own"
    );
    if uid == 0 {
        return scope;
    }
    match user_manager_controllers(uid) {
        None => format!(
            "no systemd user manager runs for uid {uid}: `sudo loginctl enable-linger $USER`, install the drop-in `{USER_DELEGATE_DROP_IN}`, then {scope}"
        ),
        Some(have) => {
            let missing: Vec<&str> = crate::container::cgroup::CONTROLLERS
                .into_iter()
                .filter(|c| !have.iter().any(|h| h == c))
                .collect();
            if missing.is_empty() {
                scope
            } else {
                format!(
                    "the user manager (user@{uid}.service) is not delegated {}: install the drop-in `{USER_DELEGATE_DROP_IN}`, then {scope}",
                    missing.join(", ")
                )
            }
        }
    }
}

fn check_user_net(settings: &Settings) -> Check {
    let found: Vec<&str> = ["pasta", "slirp4netns"]
        .into_iter()
        .filter(|p| settings.which(p, "").is_some())
        .collect();
    pass_or(
        "user-mode networking",
        !found.is_empty(),
        format!("found {}", found.join(", ")),
        Status::Warn,
        "neither pasta nor slirp4netns found: only network mode `none` can run (apt-get install passt)",
    )
}

/// Runs every check, in the order the report prints them; `settings` are
/// what the caller read from its environment (`PATH`, policy directories).
pub fn run_checks(settings: &Settings) -> Vec<Check> {
    let features = KernelFeatures::probe();
    // Once: the cgroup check and every policy's verdict use the same answer.
    let mechanism = cgroup::detect();
    let mut checks = vec![
        check_userns(settings),
        check_no_new_privs(),
        check_idmap(settings),
        check_overlay(),
        check_whiteouts(),
        check_landlock(&features),
        check_seccomp(),
        check_cgroups(&mechanism),
        check_user_net(settings),
    ];
    checks.extend(check_policies(settings, &features, &mechanism));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restricted(dir: &Path) -> Settings {
        let kernel = dir.join("kernel");
        std::fs::create_dir_all(&kernel).unwrap();
        std::fs::write(kernel.join("apparmor_restrict_unprivileged_userns"), "1\n").unwrap();
        Settings {
            proc_sys: Some(dir.to_path_buf()),
            ..Settings::default()
        }
    }

    #[test]
    fn apparmor_restriction_prints_the_profile_install_command() {
        let dir = tempfile::tempdir().unwrap();
        let s = UsernsSysctls::read(&restricted(dir.path()));
        assert_eq!(s.apparmor_restrict.as_deref(), Some("1"));
        let failing = || Err("uid_map: Operation not permitted".to_owned());
        let c = userns_verdict(&s, false, failing);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains(APPARMOR_INSTALL), "{}", c.detail);
        assert!(
            c.detail.contains(
                "sudo install -m644 ci-templates/apparmor/pinfold /etc/apparmor.d/pinfold && sudo apparmor_parser -r /etc/apparmor.d/pinfold"
            ),
            "{}",
            c.detail
        );
        // Root is exempt from the restriction: it passes, and is told
        // that other users will not.
        let c = userns_verdict(&s, true, || Ok(()));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains(APPARMOR_INSTALL), "{}", c.detail);
        // A profile in place: the probe passes as a user.
        let c = userns_verdict(&s, false, || Ok(()));
        assert_eq!(c.status, Status::Ok);
    }

    #[test]
    fn no_restriction_no_profile_command() {
        let dir = tempfile::tempdir().unwrap();
        let s = UsernsSysctls::read(&Settings {
            proc_sys: Some(dir.path().to_path_buf()),
            ..Settings::default()
        });
        let c = userns_verdict(&s, false, || Ok(()));
        assert_eq!(c.status, Status::Ok);
        let c = userns_verdict(&s, false, || Err("unshare(CLONE_NEWUSER): EPERM".into()));
        assert_eq!(c.status, Status::Fail);
        assert!(!c.detail.contains(APPARMOR_INSTALL), "{}", c.detail);
    }

    /// Debian 12's stock kernel, as `kernel::assess` sees it.
    fn linux_6_1() -> KernelFeatures {
        KernelFeatures {
            release: "6.1.0-28-amd64".into(),
            landlock_abi: 2,
            resolve_in_root: true,
        }
    }

    #[test]
    fn a_policy_runs_degraded_where_exec_would_run_it() {
        let cgroup = cgroup::Mechanism::Fallback("no delegation here".into());
        for name in SHIPPED {
            let p = Policy::load(name, &[]).unwrap();
            let c = policy_verdict("p", &p, &linux_6_1(), &cgroup, true);
            assert_eq!(c.status, Status::Warn, "{name}: {}", c.detail);
            assert!(c.detail.starts_with("runs degraded: "), "{}", c.detail);
            assert!(
                c.detail
                    .contains("scopes (needs Landlock ABI 6, Linux 6.12)")
            );
            let full = KernelFeatures {
                landlock_abi: 7,
                ..linux_6_1()
            };
            let c = policy_verdict("p", &p, &full, &cgroup, true);
            assert_eq!((c.status, c.detail.as_str()), (Status::Ok, "runs"));
        }
        // The old untrusted floor (ABI 6) refuses there, as exec does.
        let old = Policy::parse(
            "[landlock]\nmin_abi = 6\n",
            crate::policy::PolicySource::Builtin,
            Path::new("old.toml"),
        )
        .unwrap();
        let c = policy_verdict("p", &old, &linux_6_1(), &cgroup, true);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.starts_with("refuses: "), "{}", c.detail);
        // What the host lacks refuses too.
        let mut p = Policy::load("default", &[]).unwrap();
        p.limits.require_cgroup = true;
        let c = policy_verdict("p", &p, &linux_6_1(), &cgroup, true);
        assert!(c.detail.contains("limits.require_cgroup"), "{}", c.detail);
        let trusted = Policy::load("trusted", &[]).unwrap();
        let c = policy_verdict("p", &trusted, &linux_6_1(), &cgroup, false);
        assert!(c.detail.contains("needs pasta"), "{}", c.detail);
    }

    #[test]
    fn disabled_sysctls_fail_before_the_probe() {
        let s = UsernsSysctls {
            max_user_namespaces: Some("0".into()),
            ..UsernsSysctls::default()
        };
        let c = userns_verdict(&s, false, || panic!("probed"));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("user.max_user_namespaces=0"));
    }
}
