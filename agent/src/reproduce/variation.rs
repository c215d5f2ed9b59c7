//! What a reproducible build must not depend on, and how one run of a job
//! is made to differ in it (in the spirit of Debian's reprotest).
//!
//! Run 1 is the control (pinfold's plain defaults); every later run varies
//! the chosen [`Variation`]s. Each variation maps onto the existing runner
//! mechanism ([`RunOptions`]: `pinfold exec` flags, the step's environment,
//! files in the writable layer, the CPU affinity of the step's process) or,
//! for directory order and time, onto how and when the run is started.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;

use crate::runner::RunOptions;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum VariationError {
    /// A `--vary` item names no variation.
    #[error("--vary: unknown variation {0:?}; known: all, {known}", known = Variation::names())]
    UnknownVariation(String),
    /// Reading the image's user database failed.
    #[error("reading {path} from the image: {source}")]
    ImageFile {
        /// The file inside the image.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reordering a directory failed.
    #[error("reordering {path}: {source}")]
    Reorder {
        /// The directory or entry.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The minimum time between the start of the control run and a run that
/// varies the time: the real clock cannot be shifted for an unprivileged
/// container (a time namespace offsets only the monotonic and boot
/// clocks), so the runs happen at different real times instead.
pub const TIME_GAP: Duration = Duration::from_millis(1500);

/// The time zone of the varied runs: an unusual, non-whole-hour offset
/// that needs no zoneinfo files (a POSIX TZ string).
pub const VARIED_TZ: &str = "<+1345>-13:45";

/// The locale of the varied runs.
pub const VARIED_LANG: &str = "fr_CH.UTF-8";

/// One thing a reproducible build must not depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variation {
    /// Where the workspace is in the container.
    BuildPath,
    /// The wall-clock time.
    Time,
    /// Host and domain name.
    Hostname,
    /// The file mode creation mask.
    Umask,
    /// `TZ`.
    Timezone,
    /// `LANG`, `LC_ALL`, `LANGUAGE`.
    Locale,
    /// The names of the job's user and group.
    User,
    /// The order of the environment.
    EnvOrder,
    /// How many CPUs the build sees.
    Cpus,
    /// The order `readdir` returns the source's directory entries in.
    DirOrder,
    /// `HOME`.
    Home,
}

impl Variation {
    /// Every variation, in report order.
    pub const ALL: [Variation; 11] = [
        Variation::BuildPath,
        Variation::Time,
        Variation::Hostname,
        Variation::Umask,
        Variation::Timezone,
        Variation::Locale,
        Variation::User,
        Variation::EnvOrder,
        Variation::Cpus,
        Variation::DirOrder,
        Variation::Home,
    ];

    /// The name used by `--vary` and the report.
    pub fn name(self) -> &'static str {
        match self {
            Variation::BuildPath => "build_path",
            Variation::Time => "time",
            Variation::Hostname => "hostname",
            Variation::Umask => "umask",
            Variation::Timezone => "timezone",
            Variation::Locale => "locale",
            Variation::User => "user",
            Variation::EnvOrder => "env_order",
            Variation::Cpus => "cpus",
            Variation::DirOrder => "dir_order",
            Variation::Home => "home",
        }
    }

    fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// How the variation is applied: control value, then varied value
    /// (run K).
    pub fn how(self) -> &'static str {
        match self {
            Variation::BuildPath => {
                "workspace mounted (and the working directory) at /workspace; in run K at /build/verify-K/workspace"
            }
            Variation::Time => {
                "runs start at different real times: run K not before 1.5 s after run 1 (the real clock cannot be shifted in an unprivileged container); SOURCE_DATE_EPOCH is the same in every run"
            }
            Variation::Hostname => {
                "--hostname pinfold and no domain name; in run K --hostname verify-K --domainname verify-K.invalid"
            }
            Variation::Umask => "--umask 022; in run K 002",
            Variation::Timezone => "TZ unset (UTC); in run K TZ=<+1345>-13:45",
            Variation::Locale => {
                "LANG/LC_ALL/LANGUAGE unset (C); in run K LANG=LC_ALL=fr_CH.UTF-8, LANGUAGE=fr_CH:fr"
            }
            Variation::User => {
                "the image's names for uid/gid 0; in run K a generated /etc/passwd and /etc/group name them verifyK/gverifyK, and USER/LOGNAME are set"
            }
            Variation::EnvOrder => {
                "the environment in pinfold's order; in run K reversed (--reverse-env)"
            }
            Variation::Cpus => {
                "all CPUs of the caller; in run K one (sched_setaffinity on the step, so nproc says 1)"
            }
            Variation::DirOrder => {
                "every run's workspace is a tmpfs (the job file system), the source unpacked in name order; in run K every directory's entries re-linked so readdir returns them in the reverse order"
            }
            Variation::Home => "HOME=/root; in run K HOME=/nonexistent/verify-K",
        }
    }

    fn parse(s: &str) -> Result<Variation, VariationError> {
        let norm = s.trim().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|v| v.name() == norm)
            .ok_or_else(|| VariationError::UnknownVariation(s.trim().to_string()))
    }
}

/// Parses `--vary`: `all`; a list of names (only those); or `-name` items
/// (all but those), e.g. `all,-time` or `-time`.
pub fn parse_vary(s: &str) -> Result<BTreeSet<Variation>, VariationError> {
    let items: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    let mut set = BTreeSet::new();
    if items
        .first()
        .is_none_or(|i| *i == "all" || i.starts_with('-'))
    {
        set.extend(Variation::ALL);
    }
    for item in items {
        if item == "all" {
            set.extend(Variation::ALL);
        } else if let Some(name) = item.strip_prefix('-') {
            set.remove(&Variation::parse(name)?);
        } else {
            set.insert(Variation::parse(item)?);
        }
    }
    Ok(set)
}

/// What this machine allows: `Err(why)` for a variation that cannot be
/// applied here.
pub fn supported(v: Variation, tmpfs: &Path) -> Result<(), String> {
    match v {
        Variation::Cpus => match crate::runner::allowed_cpus() {
            n if n > 1 => Ok(()),
            n => Err(format!("only {n} CPU is available to pinfold")),
        },
        Variation::DirOrder => match dir_order_flips(tmpfs) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "re-linking entries does not change readdir order on {}",
                tmpfs.display()
            )),
            Err(e) => Err(format!("{}: {e}", tmpfs.display())),
        },
        _ => Ok(()),
    }
}

/// Checks on a scratch directory under `dir` that re-linking entries
/// reverses their readdir order there.
fn dir_order_flips(dir: &Path) -> std::io::Result<bool> {
    let scratch = tempfile::Builder::new()
        .prefix("pinfold-dir-order-")
        .tempdir_in(dir)?;
    for n in ["a", "b", "c"] {
        std::fs::write(scratch.path().join(n), "")?;
    }
    let before = read_names(scratch.path())?;
    reverse_dir_order(scratch.path()).map_err(std::io::Error::other)?;
    let after = read_names(scratch.path())?;
    Ok(after.iter().rev().eq(before.iter()))
}

fn read_names(dir: &Path) -> std::io::Result<Vec<std::ffi::OsString>> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

/// Reverses the readdir order of every directory under `root` on a file
/// system that lists entries by when they were linked (tmpfs lists the
/// newest first): each entry is renamed away and back, in the current
/// order. Symlinks are not followed.
pub fn reverse_dir_order(root: &Path) -> Result<(), VariationError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| VariationError::Reorder { path, source }
    };
    let names = read_names(root).map_err(err(root))?;
    let tmp = root.join(".pinfold-verify-relink");
    for n in &names {
        let p = root.join(n);
        std::fs::rename(&p, &tmp).map_err(err(&p))?;
        std::fs::rename(&tmp, &p).map_err(err(&p))?;
    }
    for n in &names {
        let p = root.join(n);
        if std::fs::symlink_metadata(&p)
            .map_err(err(&p))?
            .file_type()
            .is_dir()
        {
            reverse_dir_order(&p)?;
        }
    }
    Ok(())
}

/// What a run needs besides the variations: the image's layers (for its
/// user database) and the fixed `SOURCE_DATE_EPOCH`.
pub struct Context<'a> {
    /// The image's layer directories, topmost first.
    pub layers: &'a [PathBuf],
    /// `SOURCE_DATE_EPOCH` for every run (the job's own env entry wins).
    pub source_date_epoch: u64,
}

/// The runner options for run `k` (1 = control) varying `vary` (every
/// run's workspace is a tmpfs, the job file system's, so under `dir_order`
/// only the order differs).
pub fn options(
    k: usize,
    vary: &BTreeSet<Variation>,
    ctx: &Context<'_>,
) -> Result<RunOptions, VariationError> {
    let mut o = RunOptions {
        umask: Some(0o022),
        env: vec![(
            "SOURCE_DATE_EPOCH".to_string(),
            ctx.source_date_epoch.to_string(),
        )],
        ..RunOptions::default()
    };
    for v in vary {
        match v {
            Variation::BuildPath => {
                o.mount = Some(PathBuf::from(format!("/build/verify-{k}/workspace")));
            }
            Variation::Time | Variation::DirOrder => {} // applied by the caller
            Variation::Hostname => {
                o.hostname = Some(format!("verify-{k}"));
                o.domainname = Some(format!("verify-{k}.invalid"));
            }
            Variation::Umask => o.umask = Some(0o002),
            Variation::Timezone => o.env.push(("TZ".into(), VARIED_TZ.into())),
            Variation::Locale => {
                o.env.push(("LANG".into(), VARIED_LANG.into()));
                o.env.push(("LC_ALL".into(), VARIED_LANG.into()));
                o.env.push(("LANGUAGE".into(), "fr_CH:fr".into()));
            }
            Variation::User => {
                let (user, group) = (format!("verify{k}"), format!("gverify{k}"));
                let passwd = image_file(ctx.layers, "etc/passwd")?;
                let groups = image_file(ctx.layers, "etc/group")?;
                o.files.push((
                    "etc/passwd".into(),
                    rename_id0(
                        passwd.as_deref(),
                        &user,
                        &format!("{user}:x:0:0:{user}:/root:/bin/sh"),
                    ),
                ));
                o.files.push((
                    "etc/group".into(),
                    rename_id0(groups.as_deref(), &group, &format!("{group}:x:0:")),
                ));
                o.env.push(("USER".into(), user.clone()));
                o.env.push(("LOGNAME".into(), user));
            }
            Variation::EnvOrder => o.reverse_env = true,
            Variation::Cpus => o.cpus = Some(1),
            Variation::Home => o
                .env
                .push(("HOME".into(), format!("/nonexistent/verify-{k}"))),
        }
    }
    Ok(o)
}

/// `db` (an /etc/passwd or /etc/group) with the name of id 0 replaced, or
/// `line` appended when it has no entry for id 0.
fn rename_id0(db: Option<&str>, name: &str, line: &str) -> String {
    let mut out = String::new();
    let mut found = false;
    for l in db.unwrap_or("").lines() {
        let mut f: Vec<&str> = l.split(':').collect();
        if f.len() > 2 && f[2] == "0" && !found {
            found = true;
            f[0] = name;
            out.push_str(&f.join(":"));
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    if !found {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The content of `rel` in the image: from the layer the merged image
/// shows it from (whiteouts and opaque directories applied, as overlayfs
/// does), opened without following symlinks (the image is untrusted: a link
/// must not pull a host file into the container). `None` when the image
/// has no regular file there.
fn image_file(layers: &[PathBuf], rel: &str) -> Result<Option<String>, VariationError> {
    let err = |source| VariationError::ImageFile {
        path: rel.to_string(),
        source,
    };
    let Some(i) = pinfold_sandbox::image::layer::find_in_layers(layers, Path::new(rel)) else {
        return Ok(None);
    };
    let root = std::fs::File::open(&layers[i]).map_err(err)?;
    // O_NONBLOCK: a fifo of the image must not hang the run.
    match pinfold_sandbox::fs::beneath::open_beneath(
        root.as_fd(),
        Path::new(rel),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK,
    ) {
        Ok(fd) => {
            let f = std::fs::File::from(fd);
            if !f.metadata().map_err(err)?.is_file() {
                return Ok(None);
            }
            let mut s = String::new();
            f.take(1 << 20).read_to_string(&mut s).map_err(err)?;
            Ok(Some(s))
        }
        // A symlink (never followed): treat it as absent, so a fresh
        // file is generated and shadows it in the writable layer.
        Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(err(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_lists() {
        assert_eq!(parse_vary("all").unwrap().len(), Variation::ALL.len());
        assert_eq!(parse_vary("").unwrap().len(), Variation::ALL.len());
        let s = parse_vary("-time").unwrap();
        assert!(!s.contains(&Variation::Time) && s.len() == Variation::ALL.len() - 1);
        let s = parse_vary("hostname,umask").unwrap();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            [Variation::Hostname, Variation::Umask]
        );
        assert_eq!(
            parse_vary("build-path").unwrap().into_iter().next(),
            Some(Variation::BuildPath)
        );
        let e = parse_vary("hostname,tme").unwrap_err().to_string();
        assert!(
            e.contains("\"tme\"") && e.contains("known: all, build_path"),
            "{e}"
        );
    }

    #[test]
    fn relinking_reverses_readdir_order_on_tmpfs() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return; // no tmpfs here: `supported` reports dir_order as not applied
        }
        let d = tempfile::tempdir_in(shm).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        for n in ["a", "b", "c", "sub/x", "sub/y"] {
            std::fs::write(d.path().join(n), n).unwrap();
        }
        let before = (
            read_names(d.path()).unwrap(),
            read_names(&d.path().join("sub")).unwrap(),
        );
        reverse_dir_order(d.path()).unwrap();
        let mut after = (
            read_names(d.path()).unwrap(),
            read_names(&d.path().join("sub")).unwrap(),
        );
        after.0.reverse();
        after.1.reverse();
        assert_eq!(before, after);
        assert!(dir_order_flips(shm).unwrap());
    }

    #[test]
    fn image_files_are_read_without_following_symlinks() {
        let top = tempfile::tempdir().unwrap();
        let low = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        std::fs::create_dir_all(low.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", top.path().join("etc/passwd")).unwrap();
        std::fs::write(low.path().join("etc/group"), "root:x:0:\n").unwrap();
        let layers = [top.path().to_owned(), low.path().to_owned()];
        assert_eq!(image_file(&layers, "etc/passwd").unwrap(), None);
        assert_eq!(
            image_file(&layers, "etc/group").unwrap().as_deref(),
            Some("root:x:0:\n")
        );
        assert_eq!(image_file(&layers, "etc/shadow").unwrap(), None);
    }

    #[test]
    fn id0_renamed_or_added() {
        let db = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
        assert_eq!(
            rename_id0(Some(db), "v2", "unused"),
            "v2:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
        );
        assert_eq!(rename_id0(None, "v2", "v2:x:0:"), "v2:x:0:\n");
    }
}
