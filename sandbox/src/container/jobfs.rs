//! The job file system: a job's writable layer and its workspace, each a
//! tmpfs of the policy's size (`filesystem.writable_layer_size`,
//! `filesystem.workspace_size`), kept for the job's life across its steps.
//!
//! A step is a fresh `pinfold exec` with its own namespaces, so what must
//! outlive it has to live somewhere else. It used to be host directories,
//! which no size bounds: a job could fill the disk that holds the image
//! store, the runner's token and the coordinator's database. Now:
//!
//! 1. [`JobFs::start`] runs a *holder*: this binary as
//!    `pinfold HELPER_ARG DIR LAYER_BYTES WORKSPACE_BYTES`. It makes a user
//!    namespace with the job's id maps (written by the caller, as for the
//!    image store's helper) and a private mount namespace, mounts the two
//!    tmpfs over `DIR/layer` and `DIR/workspace` in that namespace only (on
//!    the host both stay empty directories), and listens on `DIR/jobfs.sock`
//!    (`DIR` is the runner's 0700 job directory).
//! 2. Each step's `pinfold exec --job-fs DIR/jobfs.sock` connects before it
//!    clones and receives two detached clones of the mounts
//!    (`open_tree(OPEN_TREE_CLONE)`, SCM_RIGHTS). Its child attaches them
//!    with `move_mount` in its own mount namespace: the layer as the
//!    overlay's upper and work directories, the workspace at the working
//!    directory. exec refuses mounts larger than its policy allows.
//! 3. The runner fills the workspace and collects artifacts from the host
//!    side through `/proc/HOLDER/root/DIR/…` (same user, so allowed). It
//!    opens both mount roots once, with its own credentials, and writes
//!    beneath those fds ([`JobFs::write_workspace`]): as real root it writes
//!    as the mounts' owner, an unprivileged id that may not search the
//!    runner's 0700 job directory on the way to them.
//! 4. The holder ends with the job (its stdin closes, or SIGKILL on drop);
//!    the kernel frees both tmpfs with the last mount.
//!
//! Why tmpfs, and not a loop-mounted image or project quotas: those two need
//! root (`losetup`, mounting ext4/xfs, setting project ids are all refused
//! in a user namespace), and tmpfs is the only size-bounded file system an
//! unprivileged user can mount. Its pages are memory: the sizes are upper
//! bounds, nothing is reserved, and what a job writes counts toward
//! `limits.memory` too (see `docs/security.md`, "Disk").

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::unistd::Pid;

use super::idmap::{self, IdMapMode};
use crate::fs::mount::make_mounts_private;

/// The argument that makes `pinfold` the holder (dispatched first in `main`).
pub const HELPER_ARG: &str = "__pinfold-jobfs-holder";
/// The holder's socket, in the job directory.
pub const SOCKET: &str = "jobfs.sock";
/// The writable layer's mount point in the job directory (`upper/`,
/// `work/` and `root/` inside).
pub const LAYER: &str = "layer";
/// The workspace's mount point in the job directory.
pub const WORKSPACE: &str = "workspace";

/// Errors of the job file system.
#[derive(Debug, thiserror::Error)]
pub enum JobFsError {
    /// A job directory could not be prepared.
    #[error("job directory {path}: {source}")]
    Dir {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The id maps could not be planned or written.
    #[error(transparent)]
    IdMap(#[from] idmap::IdMapError),
    /// The holder could not be started or failed while starting.
    #[error("job file system holder: {0}")]
    Holder(String),
    /// The holder's socket did not answer with the two mounts.
    #[error(
        "job file system {socket}: {why} (is the job's holder still running? the runner starts one per job)"
    )]
    Fetch {
        /// The socket.
        socket: PathBuf,
        /// Why.
        why: String,
    },
    /// A mount handed over is larger than the policy allows.
    #[error(
        "job file system: the {what} is {size} bytes, more than the policy's {field} ({limit} bytes); start the holder with the policy's sizes"
    )]
    TooBig {
        /// Which mount.
        what: &'static str,
        /// The policy field.
        field: &'static str,
        /// Its size.
        size: u64,
        /// The policy's size.
        limit: u64,
    },
}

type Result<T> = std::result::Result<T, JobFsError>;

/// The sizes of the two file systems, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// `filesystem.writable_layer_size`.
    pub layer: u64,
    /// `filesystem.workspace_size`.
    pub workspace: u64,
}

/// A running holder; dropping it ends the holder and frees both file systems.
pub struct JobFs {
    child: Child,
    dir: PathBuf,
    /// The host (uid, gid) of the namespace's root, who owns both roots.
    owner: (u32, u32),
    /// The directories the host side writes into.
    roots: Roots,
}

/// The workspace's root and the layer's `upper/`, opened once by the
/// caller (`O_PATH`, close-on-exec: no step inherits them).
struct Roots {
    workspace: OwnedFd,
    upper: OwnedFd,
}

impl Roots {
    /// Opens both through the holder's root, as the caller: the path
    /// crosses the caller's 0700 job directory, which the mounts' owner may
    /// not search when the caller is real root (its containers' ids are an
    /// unprivileged range).
    fn open(holder: &Child, dir: &Path) -> Result<Roots> {
        let open = |path: PathBuf| {
            nix::fcntl::open(
                &path,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| JobFsError::Dir {
                path,
                source: e.into(),
            })
        };
        Ok(Roots {
            workspace: open(reach(holder, dir, WORKSPACE))?,
            upper: open(reach(holder, dir, LAYER).join("upper"))?,
        })
    }
}

/// `name` (a mount point in the job directory `dir`) as the host side
/// reaches it: through the holder's root, in the holder's mount namespace.
fn reach(holder: &Child, dir: &Path, name: &str) -> PathBuf {
    let rel = dir.strip_prefix("/").unwrap_or(dir);
    Path::new("/proc")
        .join(holder.id().to_string())
        .join("root")
        .join(rel)
        .join(name)
}

/// Talks the holder through its start: it made its namespaces, the caller
/// writes its id maps, it mounts both file systems and says `ready`.
fn handshake(child: &mut Child, plan: &idmap::IdMapPlan) -> Result<()> {
    let lost = |what: &str| JobFsError::Holder(format!("it ended before {what}"));
    let mut out = BufReader::new(child.stdout.take().ok_or_else(|| lost("starting"))?);
    let mut b = [0u8; 1];
    out.read_exact(&mut b)
        .map_err(|_| lost("making its namespaces"))?;
    idmap::apply(plan, Pid::from_raw(child.id() as i32))?;
    let stdin = child.stdin.as_mut().ok_or_else(|| lost("starting"))?;
    stdin
        .write_all(b"g")
        .and_then(|()| stdin.flush())
        .map_err(|_| lost("its id maps were written"))?;
    let mut line = String::new();
    out.read_line(&mut line)
        .map_err(|_| lost("mounting its file systems"))?;
    if line.trim_end() != "ready" {
        return Err(lost("mounting its file systems"));
    }
    Ok(())
}

impl JobFs {
    /// Starts the holder for the job directory `dir` (created if missing)
    /// with `exe` (this binary), mapping ids as `mode` says (as the steps
    /// do, so every id a step writes exists on the file systems; `settings`
    /// as the steps get them).
    pub fn start(
        exe: &Path,
        dir: &Path,
        sizes: Sizes,
        mode: IdMapMode,
        settings: &crate::Settings,
    ) -> Result<JobFs> {
        let dir = std::path::absolute(dir).map_err(|source| JobFsError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        for d in [LAYER, WORKSPACE] {
            let path = dir.join(d);
            std::fs::create_dir_all(&path).map_err(|source| JobFsError::Dir { path, source })?;
        }
        let plan = idmap::plan(mode, settings)?;
        let mut cmd = Command::new(exe);
        cmd.arg(HELPER_ARG)
            .arg(&dir)
            .arg(sizes.layer.to_string())
            .arg(sizes.workspace.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
        // memory of the parent: the holder dies with the thread that
        // started it, should this process die without dropping it.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| JobFsError::Holder(format!("start {}: {e}", exe.display())))?;
        let owner = (plan.host_root_uid(), plan.host_root_gid());
        let roots = match handshake(&mut child, &plan).and_then(|()| Roots::open(&child, &dir)) {
            Ok(roots) => roots,
            Err(e) => {
                let _ = child.kill();
                let mut why = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = err.read_to_string(&mut why);
                }
                let _ = child.wait();
                return Err(match why.lines().next() {
                    Some(line) if !line.is_empty() => JobFsError::Holder(line.to_owned()),
                    _ => e,
                });
            }
        };
        Ok(JobFs {
            child,
            dir,
            owner,
            roots,
        })
    }

    /// The socket steps fetch the mounts from (`pinfold exec --job-fs`).
    pub fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET)
    }

    /// The workspace, for the host side (source in, artifacts out).
    pub fn workspace(&self) -> PathBuf {
        reach(&self.child, &self.dir, WORKSPACE)
    }

    /// Runs `f`, which writes into the workspace at the path it is given,
    /// as the mounts' owner (see [`JobFs::as_owner`]). The path is the
    /// caller's open fd of the workspace's root (`/proc/self/fd/N`), so no
    /// directory above the mount is searched with the owner's ids.
    pub fn write_workspace<T>(&self, f: impl FnOnce(&Path) -> T) -> T {
        self.as_owner(|| f(&fd_path(&self.roots.workspace)))
    }

    /// [`JobFs::write_workspace`] for the writable layer's `upper/`.
    pub fn write_layer_upper<T>(&self, f: impl FnOnce(&Path) -> T) -> T {
        self.as_owner(|| f(&fd_path(&self.roots.upper)))
    }

    /// Runs `f` (which writes into the job file system from the host side)
    /// as the namespace's root when the caller is real root: a file system
    /// mounted in a user namespace refuses to create files for an owner it
    /// cannot map (EOVERFLOW), and host root is not mapped when pinfold
    /// runs as root. Only this thread's file-system ids change (setfsuid
    /// is per thread); they are restored after. The owner loses root's
    /// file capabilities with root's fsuid: it may not search the job
    /// directory, so `f` gets a path that starts at an open mount root.
    fn as_owner<T>(&self, f: impl FnOnce() -> T) -> T {
        use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
        if !Uid::effective().is_root() {
            return f();
        }
        /// Restores this thread's file-system ids, also when `f` panics.
        struct Restore(Uid, Gid);
        impl Drop for Restore {
            fn drop(&mut self) {
                setfsuid(self.0);
                setfsgid(self.1);
            }
        }
        let old_gid = setfsgid(Gid::from_raw(self.owner.1));
        let old_uid = setfsuid(Uid::from_raw(self.owner.0));
        let _restore = Restore(old_uid, old_gid);
        f()
    }
}

/// The path of this process's open `fd`: opening through it starts at the
/// directory the fd holds, without walking the path it was opened by.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl Drop for JobFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.socket());
    }
}

/// The holder's entry point: `args` are what follows [`HELPER_ARG`]. Must
/// run first thing in `main`, while the process has one thread. Returns the
/// exit status; a failure is one line on stderr.
pub fn helper_main(args: &[std::ffi::OsString]) -> i32 {
    match hold(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn hold(args: &[std::ffi::OsString]) -> std::result::Result<(), String> {
    let [dir, layer, workspace] = args else {
        return Err(format!(
            "usage: pinfold {HELPER_ARG} DIR LAYER_BYTES WORKSPACE_BYTES"
        ));
    };
    let dir = Path::new(dir);
    let size = |s: &std::ffi::OsString| {
        s.to_str()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| format!("bad size {s:?}"))
    };
    let (layer_size, ws_size) = (size(layer)?, size(workspace)?);
    // Nothing the runner happened to leave open stays open for the job's
    // life: the holder needs stdin, stdout and stderr only.
    // SAFETY: close_range takes integers only; the fds above 2 are no
    // Rust object's (nothing is open yet in this process but std's 0-2).
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // The socket is the caller's alone: 0600 under umask 077, in the
    // caller's 0700 job directory. (SO_PEERCRED cannot tell the caller here:
    // in this namespace every unmapped user reads as the overflow id.)
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    use nix::sched::{CloneFlags, unshare};
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("create the holder's namespaces: {e}"))?;
    // Ready for the id maps: the caller writes them, then says go.
    let mut out = std::io::stdout();
    out.write_all(b"r")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    let mut stdin = std::io::stdin();
    let mut b = [0u8; 1];
    if stdin.read_exact(&mut b).is_err() || b[0] != b'g' {
        return Err("the caller went away before writing the id maps".into());
    }
    let step = |what: &str, e: Errno| format!("{what}: {}", e.desc());
    // Everything reached by path first, with the caller's own ids: the job
    // directory is the caller's alone, and once this process is root of
    // its namespace (below) it may not search it when the caller is real
    // root (host root is not mapped there).
    let sock = dir.join(SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    make_mounts_private().map_err(|e| step("make mounts private", e))?;
    let mut roots = Vec::new();
    for (name, bytes, what) in [
        (LAYER, layer_size, "mount the writable layer's tmpfs"),
        (WORKSPACE, ws_size, "mount the workspace's tmpfs"),
    ] {
        let target = dir.join(name);
        // uid/gid 0 of this namespace: the containers' root owns both.
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("{},uid=0,gid=0", super::mounts::tmpfs_data("0755", bytes)).as_str()),
        )
        .map_err(|e| step(what, e))?;
        let fd = nix::fcntl::open(
            &target,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| step(what, e))?;
        roots.push(fd);
    }
    let [layer, ws] = <[OwnedFd; 2]>::try_from(roots).map_err(|_| "two mounts".to_string())?;
    // Root of the namespace, so what it creates belongs to the containers'
    // root (the caller's uid unless pinfold runs as real root, whose
    // containers' root is an unprivileged host id).
    let root = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
    nix::unistd::setresgid(root.0, root.0, root.0)
        .and_then(|()| nix::unistd::setresuid(root.1, root.1, root.1))
        .map_err(|e| step("become root of the holder's namespace", e))?;
    // A change of effective uid (real root → an unprivileged range) clears
    // the parent-death signal the runner armed: arm it again.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| step("arm the parent-death signal", e))?;
    for d in ["upper", "work", "root"] {
        nix::sys::stat::mkdirat(&layer, d, nix::sys::stat::Mode::from_bits_truncate(0o755))
            .map_err(|e| step("create the writable layer", e))?;
    }
    out.write_all(b"ready\n")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    serve(&listener, &layer, &ws, stdin.as_fd())
}

/// Answers each connection with clones of the two mounts until stdin
/// closes (the runner dropped its [`JobFs`]).
fn serve(
    listener: &UnixListener,
    layer: &OwnedFd,
    ws: &OwnedFd,
    stdin: std::os::fd::BorrowedFd<'_>,
) -> std::result::Result<(), String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stdin, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
            Ok(_) => {}
        }
        if fds[1].any().unwrap_or(true) {
            return Ok(()); // EOF (or anything) on stdin: the job is over
        }
        let Ok((conn, _)) = listener.accept() else {
            continue;
        };
        // A failure here only fails that step's start (it sees EOF).
        if let (Ok(l), Ok(w)) = (clone_mount(layer), clone_mount(ws)) {
            let _ = super::sync::send_fds(&conn, &[l.as_raw_fd(), w.as_raw_fd()]);
        }
    }
}

/// Whether the peer of `conn` runs as `uid` (SO_PEERCRED: its credentials
/// when it connected or listened, as this process's user namespace sees
/// them).
fn same_uid(conn: &impl AsFd, uid: nix::unistd::Uid) -> bool {
    nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
        .is_ok_and(|c| c.uid() == uid.as_raw())
}

/// A detached copy of the mount whose root is `root`
/// (`open_tree(OPEN_TREE_CLONE)`).
fn clone_mount(root: &OwnedFd) -> std::result::Result<OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    let flags =
        libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: open_tree reads a static empty C string (with AT_EMPTY_PATH)
    // and a valid fd, and returns a new fd (or -1); no other memory is
    // touched.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, root.as_raw_fd(), c"".as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The two mounts a step received (detached; attached by `mounts::attach`).
pub(crate) struct Mounts {
    pub layer: OwnedFd,
    pub workspace: OwnedFd,
}

/// A step (its parent, before the clone): fetches the mounts from the holder
/// and checks them against the policy's sizes.
pub(crate) fn fetch(socket: &Path, fs: &crate::policy::FilesystemPolicy) -> Result<Mounts> {
    let fail = |why: String| JobFsError::Fetch {
        socket: socket.to_owned(),
        why,
    };
    let conn = UnixStream::connect(socket).map_err(|e| fail(e.to_string()))?;
    // Only a holder of this user's own: another user who could put a socket
    // there must not choose this job's file systems.
    if !same_uid(&conn, nix::unistd::getuid()) {
        return Err(fail("the socket's holder runs as another user".into()));
    }
    let fds = super::sync::recv_fds(&conn).map_err(|e| fail(e.desc().to_owned()))?;
    let Ok([layer, workspace]) = <[OwnedFd; 2]>::try_from(fds) else {
        return Err(fail("the holder sent no mounts".into()));
    };
    for (fd, what, field, limit) in [
        (
            &layer,
            "writable layer",
            "filesystem.writable_layer_size",
            fs.writable_layer_size.0,
        ),
        (
            &workspace,
            "workspace",
            "filesystem.workspace_size",
            fs.workspace_size.0,
        ),
    ] {
        let fs_type = nix::sys::statfs::fstatfs(fd).map_err(|e| fail(e.desc().to_owned()))?;
        if fs_type.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            return Err(fail(format!("the {what} it sent is not a tmpfs")));
        }
        let st = nix::sys::statvfs::fstatvfs(fd).map_err(|e| fail(e.desc().to_owned()))?;
        let size = st.blocks() * st.fragment_size();
        // tmpfs rounds its size up to whole pages.
        if size > limit.next_multiple_of(4096) {
            return Err(JobFsError::TooBig {
                what,
                field,
                size,
                limit,
            });
        }
    }
    Ok(Mounts { layer, workspace })
}
