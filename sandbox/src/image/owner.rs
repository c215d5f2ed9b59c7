//! Who owns the files of cached layers.
//!
//! A layer is first unpacked squashed (every file the caller's, the image's
//! uid/gid in the `user.rootlesscontainers` xattr, as `umoci --rootless`
//! does). Then, when the caller's containers map more than one id, the
//! owners are spread over the same range the container will map, so inside
//! the container every file has the owner the image gave it and `chown`,
//! `apt`'s `_apt` user and the like work, as with rootless podman:
//!
//! * [`Ownership::SubIds`]: the caller has sub-id ranges (newuidmap): a
//!   helper process (`pinfold __pinfold-userns-helper`, see [`helper_main`])
//!   joins a new user namespace with the container's map (caller → 0,
//!   sub-ids → 1..=N) and chowns there. Files owned by sub-ids can then only
//!   be read or removed from such a namespace, so removal
//!   ([`Ownership::remove`]) and `image unpack` go through the helper too.
//! * [`Ownership::Root`]: pinfold runs as root; its containers map 0..N onto
//!   an unprivileged host range, and root chowns to that range directly.
//! * [`Ownership::Squash`]: the caller alone is mapped; nothing to spread.
//!
//! Ids beyond the range stay squashed to container root, with the xattr kept.
//! A store records its mode in `ownership`; a run whose map differs is
//! refused rather than showing files as `nobody`.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::unistd::Pid;

use super::PathIoError;
use super::layer::{self, ROOTLESS_XATTR};
use crate::container::idmap::{self, IdMapMode, IdMapPlan, Range};
use crate::settings::Settings;

/// The first argument that makes the `pinfold` binary run [`helper_main`].
pub const HELPER_ARG: &str = "__pinfold-userns-helper";

/// Errors from spreading or removing layer ownership.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum OwnerError {
    #[error("id mapping for layer ownership: {0}")]
    IdMap(#[from] idmap::IdMapError),
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(
        "the image store {store} holds layers owned for id map \"{stored}\" but this run maps \"{now}\"; use the same map (/etc/subuid, PINFOLD_ROOT_IDMAP) or another PINFOLD_HOME"
    )]
    Mismatch {
        store: PathBuf,
        stored: String,
        now: String,
    },
    #[error("the user-namespace helper ({op}) failed: {message}")]
    Helper { op: String, message: String },
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
}

type Result<T> = std::result::Result<T, OwnerError>;

/// How layer files get their owners (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Every file the caller's; the image's ids in the xattr.
    Squash,
    /// Container id `i` is host id `start + i` (pinfold runs as root).
    Root {
        /// Host uids of container uids 0..count.
        uids: Range,
        /// Host gids of container gids 0..count.
        gids: Range,
    },
    /// The caller's sub-id map, applied by the helper in a user namespace.
    SubIds(IdMapPlan),
}

impl Ownership {
    /// The ownership that matches the containers this caller runs by
    /// default (the `auto` id map under `settings`).
    pub fn detect(settings: &Settings) -> Result<Ownership> {
        Ok(match idmap::plan(IdMapMode::Auto, settings)? {
            IdMapPlan::Single { .. } => Ownership::Squash,
            IdMapPlan::Root { uids, gids } => Ownership::Root { uids, gids },
            p @ IdMapPlan::SubIds { .. } => Ownership::SubIds(p),
        })
    }

    /// What is written to the store's `ownership` file.
    fn tag(&self) -> String {
        match self {
            Ownership::Squash => "squash".into(),
            Ownership::Root { uids, gids } => format!(
                "root uids {}:{} gids {}:{}",
                uids.start, uids.count, gids.start, gids.count
            ),
            Ownership::SubIds(IdMapPlan::SubIds {
                uid,
                gid,
                uids,
                gids,
            }) => format!(
                "subids {uid}:{gid} uids {}:{} gids {}:{}",
                uids.start, uids.count, gids.start, gids.count
            ),
            Ownership::SubIds(p) => format!("subids {p}"),
        }
    }

    /// The store's mode: the recorded one, which must match this run's map;
    /// a store without a record is squashed if it already holds layers
    /// (made before ownership was spread), else it takes this run's map.
    pub fn for_store(store: &Path, settings: &Settings) -> Result<Ownership> {
        let now = Ownership::detect(settings)?;
        let file = store.join("ownership");
        let io = |op, source| OwnerError::Io(PathIoError::new(op, &file, source));
        match fs::read_to_string(&file) {
            Ok(s) if s.trim() == now.tag() => Ok(now),
            Ok(s) if s.trim() == "squash" => Ok(Ownership::Squash),
            Ok(s) => Err(OwnerError::Mismatch {
                store: store.to_owned(),
                stored: s.trim().to_owned(),
                now: now.tag(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let layers = store.join("layers");
                let used = fs::read_dir(&layers)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false);
                let mode = if used { Ownership::Squash } else { now };
                // Written whole under a temporary name and linked into place
                // only if no one else was first: a concurrent first run (an
                // agent with --concurrency) never reads a half-written record,
                // and the first record wins.
                let mut tmp =
                    tempfile::NamedTempFile::new_in(store).map_err(|e| io("create", e))?;
                io::Write::write_all(&mut tmp, format!("{}\n", mode.tag()).as_bytes())
                    .map_err(|e| io("write", e))?;
                match tmp.persist_noclobber(&file) {
                    Ok(_) => Ok(mode),
                    Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                        Ownership::for_store(store, settings)
                    }
                    Err(e) => Err(io("write", e.error)),
                }
            }
            Err(e) => Err(io("read", e)),
        }
    }

    /// Gives the files of a freshly unpacked layer directory their owners.
    /// `foreign_owners`: some entry is not 0:0 (see [`layer::Applied`]);
    /// without one, a sub-id store has nothing to change and skips the helper.
    pub fn apply(&self, dir: &Path, foreign_owners: bool) -> Result<()> {
        match self {
            Ownership::Squash => Ok(()),
            Ownership::SubIds(_) if !foreign_owners => Ok(()),
            Ownership::Root { uids, gids } => chown_tree(dir, &|u, g| {
                if u < u64::from(uids.count) && g < u64::from(gids.count) {
                    (uids.start + u as u32, gids.start + g as u32, true)
                } else {
                    (uids.start, gids.start, false)
                }
            }),
            Ownership::SubIds(plan) => run_helper(plan, "chown", &[dir.as_os_str()]),
        }
    }

    /// Removes trees that may hold files owned by mapped ids.
    pub fn remove(&self, paths: &[PathBuf]) -> Result<()> {
        match self {
            Ownership::SubIds(plan) if !paths.is_empty() => {
                let args: Vec<&OsStr> = paths.iter().map(|p| p.as_os_str()).collect();
                run_helper(plan, "rm", &args)
            }
            _ => {
                for p in paths {
                    crate::fs::remove::remove_tree(p).map_err(PathIoError::at("remove", p))?;
                }
                Ok(())
            }
        }
    }

    /// [`layer::flatten`], from where the layers' files can be read.
    pub fn flatten(&self, layers: &[PathBuf], dest: &Path) -> Result<()> {
        match self {
            Ownership::SubIds(plan) => {
                let mut args = vec![dest.as_os_str()];
                args.extend(layers.iter().map(|p| p.as_os_str()));
                run_helper(plan, "flatten", &args)
            }
            _ => Ok(layer::flatten(layers, dest)?),
        }
    }
}

/// Removes `path` (a per-run directory whose files a container may have
/// chowned to sub-ids) with this caller's default ownership mode.
pub fn remove_run_dir(path: &Path, settings: &Settings) -> Result<()> {
    Ownership::detect(settings)?.remove(&[path.to_owned()])
}

/// Runs `pinfold HELPER_ARG op args…` in a new user namespace with `plan`.
fn run_helper(plan: &IdMapPlan, op: &str, args: &[&OsStr]) -> Result<()> {
    let fail = |message: String| OwnerError::Helper {
        op: op.to_owned(),
        message,
    };
    let mut child = Command::new("/proc/self/exe")
        .arg(HELPER_ARG)
        .arg(op)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let ready = {
        let mut b = [0u8; 1];
        let out = child.stdout.as_mut().expect("piped");
        out.read_exact(&mut b).is_ok() && b[0] == b'r'
    };
    let mapped = if ready {
        idmap::apply(plan, Pid::from_raw(child.id() as i32)).map_err(|e| e.to_string())
    } else {
        Err(String::new())
    };
    if mapped.is_ok() {
        let _ = child.stdin.as_mut().expect("piped").write_all(b"g");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', "; ");
    match mapped {
        Err(m) if !m.is_empty() => Err(fail(m)),
        _ if !out.status.success() => Err(fail(if stderr.is_empty() {
            format!("exited with {}", out.status)
        } else {
            stderr
        })),
        _ => Ok(()),
    }
}

/// The helper's entry point: `args` are what follows [`HELPER_ARG`]. Must
/// run first thing in `main`, while the process has one thread. Returns the
/// exit status.
pub fn helper_main(args: &[OsString]) -> i32 {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
        eprintln!("create a user namespace: {e}");
        return 1;
    }
    // Ready: the parent writes our maps, then says go. From then on this
    // process is root of the namespace, with every capability over the
    // mapped ids (no execve since unshare, so none was dropped).
    let mut out = io::stdout();
    if out.write_all(b"r").and_then(|_| out.flush()).is_err() {
        return 1;
    }
    let mut b = [0u8; 1];
    if io::stdin().read_exact(&mut b).is_err() || b[0] != b'g' {
        return 1;
    }
    let (umax, gmax) = (mapped_ids("uid_map"), mapped_ids("gid_map"));
    let r: std::result::Result<(), String> = match args {
        [op, dir] if op == "chown" => chown_tree(Path::new(dir), &|u, g| {
            if u < umax && g < gmax {
                (u as u32, g as u32, true)
            } else {
                (0, 0, false)
            }
        })
        .map_err(|e| e.to_string()),
        [op, paths @ ..] if op == "rm" => paths
            .iter()
            .try_for_each(|p| crate::fs::remove::remove_tree(Path::new(p)))
            .map_err(|e| e.to_string()),
        [op, dest, layers @ ..] if op == "flatten" => {
            let layers: Vec<PathBuf> = layers.iter().map(PathBuf::from).collect();
            layer::flatten(&layers, Path::new(dest)).map_err(|e| e.to_string())
        }
        _ => Err("usage: chown DIR | rm PATH... | flatten DEST LAYER...".into()),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// How many ids (from 0) this process's user namespace maps (`uid_map` or `gid_map`).
fn mapped_ids(file: &str) -> u64 {
    let map = fs::read_to_string(format!("/proc/self/{file}")).unwrap_or_default();
    map.lines()
        .filter_map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 3).then(|| v[0] + v[2])
        })
        .max()
        .unwrap_or(1)
}

/// Walks `dir` without following symlinks and gives every entry the owner
/// `map(image uid, image gid)` returns; the image's ids come from the
/// rootless xattr (absent: 0:0), which is removed when `map` says they were
/// applied. Setuid/setgid bits, which chown clears, are put back. The
/// directory itself keeps its owner (the caller), so it can still be renamed
/// into the cache (moving a directory needs write access to it).
fn chown_tree(dir: &Path, map: &dyn Fn(u64, u64) -> (u32, u32, bool)) -> Result<()> {
    let io = PathIoError::at;
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).map_err(io("stat", &p))?;
        if md.is_dir() {
            for e in fs::read_dir(&p).map_err(io("read", &p))? {
                stack.push(e.map_err(io("read", &p))?.path());
            }
        }
        if p == dir {
            continue;
        }
        let c = CString::new(p.as_os_str().as_bytes())
            .map_err(|e| PathIoError::new("name", &p, e.into()))?;
        let stored = layer::get_xattr_path(&p, ROOTLESS_XATTR);
        let (uid, gid) = stored.as_deref().map(parse_rootless).unwrap_or((0, 0));
        let (hu, hg, applied) = map(uid, gid);
        if (md.uid(), md.gid()) != (hu, hg) {
            // chown clears set-id bits; the store never keeps any (layer.rs).
            std::os::unix::fs::lchown(&p, Some(hu), Some(hg)).map_err(io("chown", &p))?;
        }
        if applied && stored.is_some() {
            // SAFETY: both pointers are NUL-terminated strings.
            let r = unsafe { libc::lremovexattr(c.as_ptr(), ROOTLESS_XATTR.as_ptr()) };
            Errno::result(r)
                .map_err(|e| PathIoError::new("remove the rootless xattr of", &p, e.into()))?;
        }
    }
    Ok(())
}

/// Decodes protobuf `Resource{uid=1, gid=2}` (two varints; see
/// `layer::rootless_value`, which writes it).
fn parse_rootless(v: &[u8]) -> (u64, u64) {
    let (mut uid, mut gid) = (0, 0);
    let mut i = 0;
    while i < v.len() {
        let tag = v[i];
        i += 1;
        let (mut x, mut shift) = (0u64, 0);
        while i < v.len() && shift < 64 {
            let b = v[i];
            i += 1;
            x |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        match tag {
            0x08 => uid = x,
            0x10 => gid = x,
            _ => {}
        }
    }
    (uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_values_round_trip() {
        for (u, g) in [(1000, 1000), (0, 42), (65534, 0), (300, 70000)] {
            let v = layer::rootless_value(u, g).unwrap();
            assert_eq!(parse_rootless(&v), (u, g));
        }
    }
}
