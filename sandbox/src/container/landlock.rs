//! Landlock: file, network and scope restrictions applied in the job process.
//!
//! pinfold targets [`TARGET_ABI`] (raised on purpose, never derived from the
//! running kernel). Rules, all inside the container (after pivot_root):
//!
//! * read and execute beneath `/`;
//! * everything beneath the writable paths (/tmp, /dev/shm, the working
//!   directory, rw binds, and the rootfs's own directories when the policy
//!   makes the rootfs writable);
//! * read, write and ioctl on the terminal-ish device nodes and /dev/pts;
//! * no TCP bind or connect at all when the policy refuses loopback TCP,
//!   except connect to the `allowlist` proxy's port;
//! * signals and abstract unix sockets scoped to the job (ABI 6).
//!
//! Anything not beneath `/` of the container, such as the host's pinfold
//! binary reached through a /proc magic link, matches no rule and is denied.
//! The policy's `kernel.landlock_abi` is a hard floor; above it the ruleset
//! is best effort and [`apply`] reports how much the kernel enforced. What a
//! kernel below [`TARGET_ABI`] leaves out, and what stands in for it, the
//! parent decided before the clone ([`crate::kernel::assess`]).

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
};

/// The Landlock ABI pinfold's rules are written for (Linux 6.12).
pub const TARGET_ABI: ABI = ABI::V6;

/// What was enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Every requested restriction is in force.
    Full,
    /// Some are (the kernel's ABI is below the target).
    Partial,
    /// None: the kernel has no Landlock and the policy allows that.
    None,
}

pub use crate::kernel::landlock_abi as kernel_abi;

/// What the job may touch.
pub struct Rules {
    /// Paths with full access.
    pub writable: Vec<PathBuf>,
    /// Device nodes (and /dev/pts) with read, write and ioctl.
    pub devices: Vec<PathBuf>,
    /// Whether TCP bind/connect stay allowed.
    pub allow_tcp: bool,
    /// When TCP is refused: ports the job may still connect to.
    pub connect_ports: Vec<u16>,
    /// The policy's floor.
    pub min_abi: u32,
}

/// Restricts the calling thread (and what it execs). Needs no_new_privs.
pub fn apply(rules: &Rules) -> Result<Enforcement, String> {
    prepare(rules)?.restrict()
}

/// A ruleset made and filled, not yet in force: a job container's init
/// makes it once, and each step it forks puts its own copy in force
/// ([`Prepared::restrict`]), which spares every step opening each path.
pub struct Prepared(Option<landlock::RulesetCreated>);

impl Prepared {
    /// Puts the ruleset in force on the calling thread (and what it
    /// execs). Needs no_new_privs.
    pub fn restrict(self) -> Result<Enforcement, String> {
        let Some(created) = self.0 else {
            return Ok(Enforcement::None);
        };
        let status = created.restrict_self().map_err(|e| e.to_string())?;
        Ok(match status.ruleset {
            RulesetStatus::FullyEnforced => Enforcement::Full,
            RulesetStatus::PartiallyEnforced => Enforcement::Partial,
            RulesetStatus::NotEnforced => Enforcement::None,
        })
    }
}

impl Prepared {
    /// The ruleset's fd, for [`restrict_fd`] (`None`: the kernel has no
    /// Landlock and the policy allows that).
    pub fn into_fd(self) -> Option<std::os::fd::OwnedFd> {
        self.0.and_then(Option::from)
    }
}

/// Puts the ruleset `fd` in force on the calling thread (and what it
/// execs); needs no_new_privs. A raw system call rather than the crate's
/// `restrict_self`, which consumes its ruleset: a job container's step is
/// started sharing its init's memory (see `init::spawn_step`), where it
/// must leave every value as it found it.
pub fn restrict_fd(fd: std::os::fd::BorrowedFd<'_>) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: landlock_restrict_self takes an fd and a flags word and
    // touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd.as_raw_fd(), 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

/// Makes and fills the ruleset of `rules` (see [`Prepared`]).
pub fn prepare(rules: &Rules) -> Result<Prepared, String> {
    let abi = kernel_abi();
    if abi < rules.min_abi {
        return Err(format!(
            "the kernel's Landlock ABI is {abi}, below the policy's kernel.landlock_abi {} (Landlock needs Linux 5.13+ and `lsm=...,landlock` on the kernel command line; or choose a policy with a lower floor)",
            rules.min_abi
        ));
    }
    if abi == 0 {
        return Ok(Prepared(None));
    }
    let fs_all = AccessFs::from_all(TARGET_ABI);
    let read = AccessFs::from_read(TARGET_ABI);
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(fs_all)
        .map_err(|e| e.to_string())?;
    if !rules.allow_tcp {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(TARGET_ABI))
            .map_err(|e| e.to_string())?;
    }
    let ruleset = ruleset
        .scope(Scope::from_all(TARGET_ABI))
        .map_err(|e| e.to_string())?;
    let mut beneath: Vec<PathBeneath<PathFd>> = Vec::new();
    let mut add = |path: &Path, access: BitFlags<AccessFs>| -> Result<(), String> {
        match PathFd::new(path) {
            Ok(fd) => beneath.push(PathBeneath::new(fd, access)),
            // A device the host lacks, or a bind that vanished: nothing to allow.
            Err(_) if !path.exists() => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        Ok(())
    };
    add(Path::new("/"), read)?;
    for p in &rules.writable {
        add(p, fs_all)?;
    }
    for p in &rules.devices {
        // Directory-only rights on a file would make the ruleset "partial".
        let access = if p.is_dir() {
            fs_all
        } else {
            AccessFs::from_file(TARGET_ABI)
        };
        add(p, access)?;
    }
    let mut created = ruleset
        .create()
        .map_err(|e| e.to_string())?
        .add_rules(beneath.into_iter().map(Ok::<_, RulesetError>))
        .map_err(|e| e.to_string())?;
    if !rules.allow_tcp {
        for port in &rules.connect_ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(Prepared(Some(created)))
}
