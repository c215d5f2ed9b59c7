//! The container's file system, built in the child's own mount namespace.
//!
//! 1. make every mount private, so nothing propagates back to the host;
//! 2. a private tmpfs (the *stage*) holds the writable layer: overlayfs with the
//!    image layers (reached through the parent's `O_PATH` fds) as lower dirs;
//! 3. /proc, /dev (+ pts, shm, device binds), /tmp, binds, the working
//!    directory and the generated /etc files, each target resolved inside the
//!    rootfs (see [`super::rootpath`]);
//! 4. sensitive /proc entries masked or made read-only;
//! 5. pivot_root into the rootfs and detach the old root.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, fchdir, pivot_root, symlinkat};

use super::Prepared;
use super::rootpath::{fd_path, mkdir_all_in_root, open_in_root, touch_in_root};
use super::sync::{Step, StepError};
use crate::fs::mount::make_mounts_private;
use crate::policy::NetworkMode;

type Result<T> = std::result::Result<T, StepError>;

/// Where the stage tmpfs is mounted (in the child's namespace only; the host's
/// /tmp is untouched and every host path was opened before).
const STAGE: &str = "/tmp";

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// /proc entries hidden behind /dev/null or an empty read-only tmpfs
/// (the list docker and podman use).
const MASKED: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/acpi",
    "/proc/asound",
    "/proc/scsi",
    "/proc/interrupts",
];

/// /proc entries made read-only.
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Bytes of a policy-sized tmpfs per inode it may hold. Inodes take kernel
/// memory (about 1 KiB each with their dentry) but no blocks: without a cap
/// a tmpfs of any `size=` takes millions of empty files. One per 8 KiB
/// still gives a 1G tmpfs 131072 files, a 4G one 524288.
pub(crate) const BYTES_PER_INODE: u64 = 8 << 10;

/// The mount data of a policy-sized tmpfs: mode, size and an inode cap
/// ([`BYTES_PER_INODE`], at least 1024).
pub(crate) fn tmpfs_data(mode: &str, size: u64) -> String {
    let inodes = (size / BYTES_PER_INODE).max(1024);
    format!("mode={mode},size={size},nr_inodes={inodes}")
}

fn mnt(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    step: &str,
) -> Result<()> {
    mount(src, target, fstype, flags, data).map_err(|e| StepError::new(step, e.desc()))
}

/// Creates `path` in the rootfs and mounts a new `fstype` file system on it
/// (steps "create PATH", then "mount PATH").
fn mount_fresh(root: &OwnedFd, path: &str, fstype: &str, flags: MsFlags, data: &str) -> Result<()> {
    let dir = mkdir_all_in_root(root, Path::new(path)).step(&format!("create {path}"))?;
    mnt(
        Some(fstype),
        &fd_path(&dir),
        Some(fstype),
        flags,
        Some(data),
        &format!("mount {path}"),
    )
}

/// Bind-mounts `src` on `target` (both fds; `MS_REC` in `flags` for a
/// recursive bind).
fn bind(src: &impl AsRawFd, target: &impl AsRawFd, flags: MsFlags, step: &str) -> Result<()> {
    mnt(
        Some(&fd_path(src)),
        &fd_path(target),
        None,
        MsFlags::MS_BIND | flags,
        None,
        step,
    )
}

/// Changes the flags of the mount at `fd` (and below, with `recursive`) with
/// mount_setattr(2): unlike a bind remount this also works recursively and
/// keeps the flags the kernel locked.
fn setattr(fd: &impl AsRawFd, set: u64, recursive: bool, step: &str) -> Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH as libc::c_uint
        | if recursive {
            libc::AT_RECURSIVE as libc::c_uint
        } else {
            0
        };
    // SAFETY: mount_setattr reads `size_of::<mount_attr>()` bytes from a valid,
    // live struct; the path is a static empty C string used with AT_EMPTY_PATH.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(StepError::new(step, Errno::last().desc()));
    }
    Ok(())
}

/// Attaches the detached mount `mount` (from the job file system, see
/// [`super::jobfs`]) on `target` (an `O_PATH` fd of a
/// directory in this mount namespace).
fn attach(mount: &OwnedFd, target: &impl AsRawFd) -> std::result::Result<(), Errno> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: move_mount reads two static empty C strings (used with the
    // EMPTY_PATH flags) and two valid fds; no other memory is touched.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Builds the rootfs and every mount, then pivots into it.
pub(crate) fn setup(p: &Prepared) -> Result<()> {
    // 1. Private propagation.
    make_mounts_private().step("make mounts private")?;

    // 2. The stage and the rootfs. The stage is the job file system's layer
    // (kept across a job's steps, `upper/`, `work/` and `root/` made by its
    // holder) or a private tmpfs; either is policy-sized.
    let fs = &p.filesystem;
    match &p.job_fs {
        Some(m) => {
            let stage = nix::fcntl::open(
                STAGE,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .step("open the stage")?;
            attach(&m.layer, &stage).step("attach the job file system's writable layer")?;
        }
        None => {
            mnt(
                Some("tmpfs"),
                STAGE,
                Some("tmpfs"),
                NOSUID_NODEV,
                Some(&tmpfs_data("0700", fs.writable_layer_size.0)),
                "mount the writable layer's tmpfs",
            )?;
            for d in ["upper", "work", "root"] {
                std::fs::create_dir(Path::new(STAGE).join(d)).step("create the writable layer")?;
            }
        }
    }
    let root_path = format!("{STAGE}/root");
    let lowers: Vec<String> = p.fds.layers.iter().map(fd_path).collect();
    let (upper, work) = (format!("{STAGE}/upper"), format!("{STAGE}/work"));
    let opts = format!(
        "lowerdir={},upperdir={upper},workdir={work},userxattr",
        lowers.join(":")
    );
    mount(
        Some("overlay"),
        root_path.as_str(),
        Some("overlay"),
        MsFlags::MS_NOSUID,
        Some(opts.as_str()),
    )
    .map_err(|e| {
        StepError::new("mount the overlay rootfs", e.desc()).hint(
            "unprivileged overlayfs needs Linux 5.11 or later and a rootfs on a local file system (not overlayfs or NFS)",
        )
    })?;
    let root = nix::fcntl::open(
        root_path.as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .step("open the rootfs")?;

    // 3. Mounts inside the rootfs.
    mount_proc(&root)?;
    mount_fresh(
        &root,
        "/tmp",
        "tmpfs",
        NOSUID_NODEV,
        &tmpfs_data("1777", fs.tmp_size.0),
    )?;
    mount_dev(&root, p)?;
    let workdir = mkdir_all_in_root(&root, &p.workdir).map_err(|e| {
        StepError::new(
            format!("create the working directory {}", p.workdir.display()),
            e.desc(),
        )
    })?;
    let workdir_bound = p.binds.iter().any(|(b, _)| b.dest == p.workdir);
    if let Some(m) = &p.job_fs {
        attach(&m.workspace, &workdir).step("attach the job file system's workspace")?;
    } else if !fs.rootfs_writable && !workdir_bound {
        // A read-only rootfs still needs a writable working directory.
        mnt(
            Some("tmpfs"),
            &fd_path(&workdir),
            Some("tmpfs"),
            NOSUID_NODEV,
            Some(&tmpfs_data("0755", fs.writable_layer_size.0)),
            "mount the working directory",
        )?;
    }
    drop(workdir);
    for (src, (bind, is_dir)) in p.fds.binds.iter().zip(&p.binds) {
        mount_bind(&root, src, &bind.dest, bind.writable, *is_dir)?;
    }
    write_etc_files(&root, &p.hostname, p.network)?;

    // 4. /proc masks.
    mask_proc(&root)?;
    if !fs.rootfs_writable {
        setattr(
            &root,
            libc::MOUNT_ATTR_RDONLY,
            false,
            "make the rootfs read-only",
        )?;
    }

    // 5. pivot_root(".", ".") stacks the old root on the new one; detaching it
    // leaves only the rootfs. No put_old directory is needed in the image.
    fchdir(root.as_fd()).step("enter the rootfs")?;
    pivot_root(".", ".").step("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).step("detach the old root")?;
    chdir("/").step("chdir to the new root")?;
    Ok(())
}

/// /proc is mounted read-only: Landlock keeps every file in it read-only
/// anyway, and a kernel without Landlock's truncate right (ABI 3, Linux
/// 6.2) would otherwise let truncate(2) through to its DAC-writable files
/// (`crate::kernel`'s compensating control for `truncate`). Writes through
/// its magic links (/dev/stdout) reach the target's own mount.
fn mount_proc(root: &OwnedFd) -> Result<()> {
    let proc_dir = mkdir_all_in_root(root, Path::new("/proc")).step("create /proc")?;
    mount(
        Some("proc"),
        fd_path(&proc_dir).as_str(),
        Some("proc"),
        NOSUID_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| {
        StepError::new("mount /proc", e.desc())
            .hint("the host's /proc must be fully visible (not partly masked, as inside another container)")
    })
}

fn mount_dev(root: &OwnedFd, p: &Prepared) -> Result<()> {
    mount_fresh(
        root,
        "/dev",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "mode=0755,size=65536",
    )?;
    // Reopen: `dev` is the directory under the new mount.
    let dev = open_in_root(root, Path::new("/dev"), OFlag::O_PATH | OFlag::O_DIRECTORY)
        .step("open /dev")?;
    for (name, host_fd) in &p.fds.dev_nodes {
        // Relative to the fresh /dev tmpfs: no walk through the rootfs.
        let target = touch_in_root(&dev, Path::new(name))
            .map_err(|e| StepError::new(format!("create /dev/{name}"), e.desc()))?;
        bind(
            host_fd,
            &target,
            MsFlags::empty(),
            &format!("bind /dev/{name}"),
        )?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        symlinkat(to, dev.as_fd(), link)
            .map_err(|e| StepError::new(format!("create /dev/{link}"), e.desc()))?;
    }
    mount_fresh(
        root,
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    mount_fresh(
        root,
        "/dev/shm",
        "tmpfs",
        NOSUID_NODEV,
        &tmpfs_data("1777", p.filesystem.shm_size.0),
    )?;
    let dev = open_in_root(root, Path::new("/dev"), OFlag::O_PATH | OFlag::O_DIRECTORY)
        .step("open /dev")?;
    setattr(&dev, libc::MOUNT_ATTR_RDONLY, false, "make /dev read-only")
}

fn mount_bind(
    root: &OwnedFd,
    src: &OwnedFd,
    dest: &Path,
    writable: bool,
    is_dir: bool,
) -> Result<()> {
    let step = format!("bind {}", dest.display());
    let target = if is_dir {
        mkdir_all_in_root(root, dest)
    } else {
        touch_in_root(root, dest)
    }
    .map_err(|e| {
        StepError::new(
            format!("create the mount point {}", dest.display()),
            e.desc(),
        )
    })?;
    bind(src, &target, MsFlags::MS_REC, &step)?;
    let mounted =
        open_in_root(root, dest, OFlag::O_PATH).map_err(|e| StepError::new(&step, e.desc()))?;
    let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if !writable {
        attrs |= libc::MOUNT_ATTR_RDONLY;
    }
    setattr(&mounted, attrs, true, &step)
}

/// Writes /etc/hostname, /etc/hosts and /etc/resolv.conf where the image has
/// none (into the writable layer; the image is untouched).
fn write_etc_files(root: &OwnedFd, hostname: &str, network: NetworkMode) -> Result<()> {
    let resolv = match network {
        NetworkMode::None => "# pinfold: network mode none, no name server\n".to_owned(),
        NetworkMode::Allowlist => "# pinfold: network mode allowlist, no name server: the proxy in $https_proxy resolves names\n".to_owned(),
        NetworkMode::Egress => {
            let [a, b, c, d] = crate::net::netns::DNS_FORWARD;
            format!(
                "# pinfold: network mode egress, pasta forwards DNS to the host's resolver\nnameserver {a}.{b}.{c}.{d}\n"
            )
        }
    };
    let etc = mkdir_all_in_root(root, Path::new("/etc")).step("create /etc")?;
    let files: [(&str, String); 3] = [
        ("hostname", format!("{hostname}\n")),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
        ("resolv.conf", resolv),
    ];
    for (name, content) in files {
        let fd = match nix::fcntl::openat(
            etc.as_fd(),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => fd,
            // The image has its own (or a symlink there): keep it.
            Err(Errno::EEXIST) => continue,
            // /etc belongs to an id the container does not map: leave it as is.
            Err(e @ (Errno::EACCES | Errno::EPERM | Errno::EROFS | Errno::EOVERFLOW)) => {
                tracing::debug!(file = name, error = %e, "cannot generate /etc file");
                continue;
            }
            Err(e) => return Err(StepError::new(format!("write /etc/{name}"), e.desc())),
        };
        nix::unistd::write(&fd, content.as_bytes())
            .map_err(|e| StepError::new(format!("write /etc/{name}"), e.desc()))?;
    }
    Ok(())
}

fn mask_proc(root: &OwnedFd) -> Result<()> {
    let null = open_in_root(root, Path::new("/dev/null"), OFlag::O_PATH).step("open /dev/null")?;
    // Paths are resolved from the container's own procfs (mounted above),
    // not walked from the rootfs (through every overlay layer) each time.
    let proc = open_in_root(root, Path::new("/proc"), OFlag::O_PATH | OFlag::O_DIRECTORY)
        .step("open /proc")?;
    let in_proc = |path: &str| Path::new(path.strip_prefix("/proc").unwrap_or(path)).to_owned();
    for path in MASKED {
        let target = match open_in_root(&proc, &in_proc(path), OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(t) => t,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(StepError::new(format!("mask {path}"), e.desc())),
        };
        let is_dir = nix::sys::stat::fstat(&target)
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .unwrap_or(false);
        if is_dir {
            mnt(
                Some("tmpfs"),
                &fd_path(&target),
                Some("tmpfs"),
                NOSUID_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
                Some("size=0,mode=0555"),
                &format!("mask {path}"),
            )?;
        } else {
            bind(&null, &target, MsFlags::empty(), &format!("mask {path}"))?;
        }
    }
    for path in READ_ONLY {
        let target = match open_in_root(&proc, &in_proc(path), OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(t) => t,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(StepError::new(format!("make {path} read-only"), e.desc())),
        };
        let step = format!("make {path} read-only");
        bind(&target, &target, MsFlags::MS_REC, &step)?;
        let mounted = open_in_root(&proc, &in_proc(path), OFlag::O_PATH | OFlag::O_NOFOLLOW)
            .map_err(|e| StepError::new(&step, e.desc()))?;
        setattr(
            &mounted,
            libc::MOUNT_ATTR_RDONLY
                | libc::MOUNT_ATTR_NOSUID
                | libc::MOUNT_ATTR_NODEV
                | libc::MOUNT_ATTR_NOEXEC,
            true,
            &step,
        )?;
    }
    Ok(())
}

/// Paths (inside the container, after pivot_root) the job may write to, for
/// Landlock: the writable mounts, and the rootfs's own directories when the
/// policy makes the rootfs writable.
pub(crate) fn writable_paths(p: &Prepared) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = vec!["/tmp".into(), "/dev/shm".into(), p.workdir.clone()];
    v.extend(
        p.binds
            .iter()
            .filter(|(b, _)| b.writable)
            .map(|(b, _)| b.dest.clone()),
    );
    if p.filesystem.rootfs_writable
        && let Ok(entries) = std::fs::read_dir("/")
    {
        for e in entries.flatten() {
            let name = e.file_name();
            if matches!(name.to_str(), Some("proc" | "sys" | "dev")) {
                continue;
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                v.push(Path::new("/").join(name));
            }
        }
    }
    v
}
