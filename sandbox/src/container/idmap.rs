//! User-namespace id maps.
//!
//! Three modes, chosen by [`plan`]:
//!
//! * **sub-id range** (rootless podman's way): the caller has an
//!   `/etc/subuid` + `/etc/subgid` range and `newuidmap`/`newgidmap` exist.
//!   The caller becomes container root (0) and the range becomes 1..=N, so
//!   `chown` inside works.
//! * **single**: the caller alone is mapped to 0 (with `setgroups` denied).
//!   Any other id shows as `nobody` inside.
//! * **root**: pinfold invoked as real root still gives the container no host
//!   privilege. Container ids 0..N map onto an unprivileged host range, taken
//!   from `$PINFOLD_ROOT_IDMAP` (`START:COUNT`), else the subuid/subgid range
//!   of the `pinfold` service user, else [`DEFAULT_ROOT_RANGE`].
//!
//! `--userns single` (or `$PINFOLD_USERNS=single`) forces the single mode (the fastest start: no
//! setuid helper to run); `auto` (the default) picks as above.

use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::unistd::{Gid, Pid, Uid, User};

use crate::settings::Settings;

/// Errors from planning or writing id maps.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // variant fields are described by the messages
pub enum IdMapError {
    /// Writing `/proc/PID/{uid_map,gid_map,setgroups}` failed.
    #[error("write {file} of the container: {source} ({hint})")]
    Write {
        file: String,
        #[source]
        source: std::io::Error,
        hint: &'static str,
    },
    /// newuidmap/newgidmap failed.
    #[error(
        "{helper} failed: {message} (check the caller's ranges in /etc/subuid and /etc/subgid, or set PINFOLD_USERNS=single)"
    )]
    Helper {
        helper: &'static str,
        message: String,
    },
    /// A configuration value is malformed.
    #[error("{0}")]
    Config(String),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, IdMapError>;

/// Which mapping the caller asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdMapMode {
    /// Pick from the environment as the module docs say.
    #[default]
    Auto,
    /// Map the caller alone.
    Single,
}

impl IdMapMode {
    /// Parses `auto` or `single` (the `--userns` flag, `$PINFOLD_USERNS`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "" | "auto" => Ok(IdMapMode::Auto),
            "single" => Ok(IdMapMode::Single),
            other => Err(IdMapError::Config(format!(
                "user namespace mode {other:?} is not understood: use auto or single"
            ))),
        }
    }
}

/// A contiguous host id range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First host id.
    pub start: u32,
    /// Number of ids.
    pub count: u32,
}

/// The container's ids 0..N go here when pinfold runs as root and nothing
/// else is configured: far above any ordinary user or subuid allocation.
pub const DEFAULT_ROOT_RANGE: Range = Range {
    start: 1_879_048_192,
    count: 65_536,
};

/// The mapping that will be written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // ids and ranges, as the Display impl shows
pub enum IdMapPlan {
    /// Caller → 0 only.
    Single { uid: u32, gid: u32 },
    /// Caller → 0 and the sub-id ranges → 1..=N, through newuidmap/newgidmap.
    SubIds {
        uid: u32,
        gid: u32,
        uids: Range,
        gids: Range,
    },
    /// pinfold runs as root: 0..N → an unprivileged host range.
    Root { uids: Range, gids: Range },
}

impl IdMapPlan {
    /// Whether the container may call setgroups(2) (not with a single map).
    pub fn setgroups_allowed(&self) -> bool {
        !matches!(self, IdMapPlan::Single { .. })
    }

    /// The host uid that container root runs as.
    pub fn host_root_uid(&self) -> u32 {
        match self {
            IdMapPlan::Single { uid, .. } | IdMapPlan::SubIds { uid, .. } => *uid,
            IdMapPlan::Root { uids, .. } => uids.start,
        }
    }

    /// The host gid that container root runs as.
    pub fn host_root_gid(&self) -> u32 {
        match self {
            IdMapPlan::Single { gid, .. } | IdMapPlan::SubIds { gid, .. } => *gid,
            IdMapPlan::Root { gids, .. } => gids.start,
        }
    }
}

impl fmt::Display for IdMapPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdMapPlan::Single { uid, gid } => write!(
                f,
                "single: host {uid}:{gid} is container root, other ids show as nobody"
            ),
            IdMapPlan::SubIds {
                uid,
                gid,
                uids,
                gids,
            } => write!(
                f,
                "sub-id range: host {uid}:{gid} is container root, host uids {}..{} and gids {}..{} are container 1..{}",
                uids.start,
                uids.start as u64 + uids.count as u64 - 1,
                gids.start,
                gids.start as u64 + gids.count as u64 - 1,
                uids.count.min(gids.count)
            ),
            IdMapPlan::Root { uids, gids } => write!(
                f,
                "invoked as root: container ids 0..{} run as unprivileged host uids {}.. and gids {}.. (never host uid 0)",
                uids.count.min(gids.count) - 1,
                uids.start,
                gids.start
            ),
        }
    }
}

/// Finds `name`'s (or `uid`'s) range in a subuid/subgid file.
pub fn find_subid_range(file: &Path, name: Option<&str>, id: u32) -> Option<Range> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_subid(&text, name, id)
}

fn parse_subid(text: &str, name: Option<&str>, id: u32) -> Option<Range> {
    let id_str = id.to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split(':');
            let (who, start, count) = (it.next()?, it.next()?, it.next()?);
            let start: u32 = start.trim().parse().ok()?;
            let count: u32 = count.trim().parse().ok()?;
            (count > 0 && (Some(who) == name || who == id_str)).then_some(Range { start, count })
        })
        .max_by_key(|r| r.count)
}

fn parse_range(s: &str) -> Result<Range> {
    let bad = || {
        IdMapError::Config(format!(
            "PINFOLD_ROOT_IDMAP={s:?} is not START:COUNT with START > 0 and COUNT >= 1"
        ))
    };
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let start: u32 = a.trim().parse().map_err(|_| bad())?;
    let count: u32 = b.trim().parse().map_err(|_| bad())?;
    if start == 0 || count == 0 || start.checked_add(count).is_none() {
        return Err(bad());
    }
    Ok(Range { start, count })
}

/// Where `newuidmap` and `newgidmap` are looked for when `PATH` is unset.
const DEFAULT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Chooses the mapping for this caller; `settings` give root's range
/// (`PINFOLD_ROOT_IDMAP`) and the `PATH` searched for `newuidmap`.
pub fn plan(mode: IdMapMode, settings: &Settings) -> Result<IdMapPlan> {
    let uid = Uid::current().as_raw();
    let gid = Gid::current().as_raw();
    if Uid::effective().is_root() {
        if let Some(s) = &settings.root_idmap
            && !s.is_empty()
        {
            let r = parse_range(s)?;
            return Ok(IdMapPlan::Root { uids: r, gids: r });
        }
        let service = User::from_name("pinfold").ok().flatten();
        if let Some(u) = service {
            let uids = find_subid_range(Path::new("/etc/subuid"), Some("pinfold"), u.uid.as_raw());
            let gids = find_subid_range(Path::new("/etc/subgid"), Some("pinfold"), u.uid.as_raw());
            if let (Some(uids), Some(gids)) = (uids, gids) {
                return Ok(IdMapPlan::Root { uids, gids });
            }
        }
        return Ok(IdMapPlan::Root {
            uids: DEFAULT_ROOT_RANGE,
            gids: DEFAULT_ROOT_RANGE,
        });
    }
    if mode == IdMapMode::Single {
        return Ok(IdMapPlan::Single { uid, gid });
    }
    let name = User::from_uid(Uid::current())
        .ok()
        .flatten()
        .map(|u| u.name);
    let uids = find_subid_range(Path::new("/etc/subuid"), name.as_deref(), uid);
    let gids = find_subid_range(Path::new("/etc/subgid"), name.as_deref(), uid);
    match (
        uids,
        gids,
        settings.which("newuidmap", DEFAULT_PATH),
        settings.which("newgidmap", DEFAULT_PATH),
    ) {
        (Some(uids), Some(gids), Some(_), Some(_)) => Ok(IdMapPlan::SubIds {
            uid,
            gid,
            uids,
            gids,
        }),
        _ => Ok(IdMapPlan::Single { uid, gid }),
    }
}

fn write_proc(pid: Pid, file: &str, content: &str) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, content).map_err(|source| IdMapError::Write {
        file: file.to_owned(),
        source,
        hint: "the kernel refused the map: check that user namespaces are enabled and the ids are not already mapped",
    })
}

/// newuidmap/newgidmap's map after the pid: container id 0 is the caller's
/// own `id`, ids 1.. are `range` of its subordinate ids.
fn helper_args(id: u32, range: Range) -> Vec<String> {
    vec![
        "0".into(),
        id.to_string(),
        "1".into(),
        "1".into(),
        range.start.to_string(),
        range.count.to_string(),
    ]
}

fn spawn_helper(helper: &'static str, pid: Pid, args: Vec<String>) -> Result<std::process::Child> {
    Command::new(helper)
        .arg(pid.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| IdMapError::Helper {
            helper,
            message: e.to_string(),
        })
}

fn finish_helper(helper: &'static str, child: std::process::Child) -> Result<()> {
    let out = child.wait_with_output().map_err(|e| IdMapError::Helper {
        helper,
        message: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(IdMapError::Helper {
            helper,
            message: String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; "),
        })
    }
}

/// In the container's first process, before anything else of its user
/// namespace: maps the caller's own uid and gid (its effective ids) to 0,
/// which the kernel lets the namespace's owner do without help.
pub(crate) fn write_own(uid: u32, gid: u32) -> std::result::Result<(), super::sync::StepError> {
    for (file, content) in [
        ("setgroups", "deny".to_owned()),
        ("uid_map", format!("0 {uid} 1\n")),
        ("gid_map", format!("0 {gid} 1\n")),
    ] {
        std::fs::write(format!("/proc/self/{file}"), content).map_err(|e| {
            super::sync::StepError::new(format!("write the container's {file}"), e).hint(
                "the kernel refused the map: check that user namespaces are enabled (`pinfold doctor`)",
            )
        })?;
    }
    Ok(())
}

/// Writes the maps of the (waiting) child `pid`.
pub fn apply(plan: &IdMapPlan, pid: Pid) -> Result<()> {
    match plan {
        IdMapPlan::Single { uid, gid } => {
            write_proc(pid, "setgroups", "deny")?;
            write_proc(pid, "uid_map", &format!("0 {uid} 1\n"))?;
            write_proc(pid, "gid_map", &format!("0 {gid} 1\n"))
        }
        IdMapPlan::Root { uids, gids } => {
            write_proc(
                pid,
                "uid_map",
                &format!("0 {} {}\n", uids.start, uids.count),
            )?;
            write_proc(
                pid,
                "gid_map",
                &format!("0 {} {}\n", gids.start, gids.count),
            )
        }
        IdMapPlan::SubIds {
            uid,
            gid,
            uids,
            gids,
        } => {
            // The two setuid helpers run side by side: each costs a fork and exec.
            let u = spawn_helper("newuidmap", pid, helper_args(*uid, *uids))?;
            let g = spawn_helper("newgidmap", pid, helper_args(*gid, *gids));
            let g = match g {
                Ok(g) => g,
                Err(e) => {
                    let _ = finish_helper("newuidmap", u);
                    return Err(e);
                }
            };
            let ur = finish_helper("newuidmap", u);
            let gr = finish_helper("newgidmap", g);
            ur.and(gr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lookup_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\n1001:300000:1000\nbad line\nbob:x:1\n";
        assert_eq!(
            parse_subid(text, Some("alice"), 1000),
            Some(Range {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subid(text, Some("carol"), 1001),
            Some(Range {
                start: 300000,
                count: 1000
            })
        );
        assert_eq!(parse_subid(text, Some("bob"), 5), None);
    }

    #[test]
    fn root_range_config() {
        assert_eq!(
            parse_range("500000:1000").unwrap(),
            Range {
                start: 500000,
                count: 1000
            }
        );
        assert!(parse_range("0:10").is_err());
        assert!(parse_range("10").is_err());
        assert!(parse_range("4294967295:10").is_err());
    }
}
