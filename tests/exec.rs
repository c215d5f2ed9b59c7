//! `pinfold exec` end to end: every property of the container proved from
//! inside it, with the real binary run as an unprivileged user.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

// ---------- exit status contract ----------

#[test]
fn exit_codes_pass_through() {
    assert_eq!(sh(&[], "exit 0").0, 0);
    assert_eq!(sh(&[], "exit 3").0, 3);
    assert_eq!(sh(&[], "exit 255").0, 255);
}

#[test]
fn signals_map_to_128_plus_n() {
    assert_eq!(sh(&[], "kill -TERM $$").0, 128 + 15);
    assert_eq!(sh(&[], "kill -KILL $$").0, 128 + 9);
}

#[test]
fn missing_and_unexecutable_commands() {
    let out = exec(&[], &["/no/such/command"]);
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("command not found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");

    let out = exec(&[], &["/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{:?}", out);
}

#[test]
fn setup_failures_exit_125_with_one_line() {
    let out = pinfold()
        .args(["exec", "--rootfs", "/no/such/rootfs", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/rootfs"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = exec(&["--policy", "no-such-policy"], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no policy named"));

    let out = exec(&["--bind", "/etc"], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SRC:DST"));

    let out = exec(&["--no-such-flag"], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn stdio_passes_through() {
    let mut child = exec_cmd(&[], &["/bin/sh", "-c", "tr a-z A-Z; echo err >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert!(out.status.success());
}

#[test]
fn timeout_returns_124_and_kills_everything() {
    let marker = format!("{}", 40000 + std::process::id() % 20000);
    let started = Instant::now();
    let (code, _, err) = sh(
        &["--timeout", "1s"],
        &format!("setsid sleep {marker} & sleep 1000"),
    );
    assert_eq!(code, 124, "{err}");
    assert!(err.contains("timed out"), "{err}");
    // Liveness bound only (not a benchmark): the kill must not wait for sleep 1000.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        processes_matching(&format!("sleep {marker}")).is_empty(),
        "a setsid'd process outlived the timeout"
    );
}

#[test]
fn setsid_daemon_dies_with_the_job() {
    let marker = format!("{}", 20000 + std::process::id() % 20000);
    sh_ok(
        &[],
        &format!("setsid sleep {marker} </dev/null >/dev/null 2>&1 & exit 0"),
    );
    assert!(
        processes_matching(&format!("sleep {marker}")).is_empty(),
        "a setsid'd daemon outlived pinfold exec"
    );
}

#[test]
fn sigterm_to_pinfold_reaches_the_job() {
    let mut child = exec_cmd(
        &[],
        &[
            "/bin/sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    stdout.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(42), "{rest}");
    assert!(rest.contains("got-term"));
}

// ---------- identity and privileges ----------

#[test]
fn runs_as_container_root_with_no_privileges() {
    let out = sh_ok(
        &[],
        "id -u; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"));
    for l in lines {
        let (k, v) = l.split_once(':').unwrap();
        let v = v.trim();
        match k {
            "NoNewPrivs" => assert_eq!(v, "1"),
            "Seccomp" => assert_eq!(v, "2", "seccomp filter mode"),
            _ => assert_eq!(v, "0000000000000000", "{k}"),
        }
    }
}

#[test]
fn host_uid_of_container_processes_is_not_root() {
    let mut child = exec_cmd(&[], &["/bin/sh", "-c", "echo up; sleep 30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 3];
    child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
    let pids = descendants(child.id());
    assert!(pids.len() >= 3, "pinfold, init and the job: {pids:?}");
    for p in &pids {
        if let Some(uid) = host_uid(*p) {
            assert_ne!(uid, 0, "host pid {p} runs as host root");
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn as_real_root_the_container_still_has_no_host_privilege() {
    if !is_root() {
        eprintln!("skipped: needs to run as root to prove root gets no host privilege");
        return;
    }
    let f = fixtures();
    let mut child = std::process::Command::new(&f.pinfold)
        .args(["exec", "--rootfs"])
        .arg(&f.rootfs)
        .args(["--", "/bin/sh", "-c", "echo up; id -u; sleep 30"])
        .env("PINFOLD_HOME", f.root.join("root-home"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 5];
    child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"up\n0\n", "container root inside");
    let pids = descendants(child.id());
    assert!(pids.len() >= 3, "{pids:?}");
    // A process may be gone by the time its status is read (`id` exits as
    // soon as it has printed): check those still there, at least init and sh.
    let seen: Vec<(u32, u32)> = pids[1..]
        .iter()
        .filter_map(|p| host_uid(*p).map(|u| (*p, u)))
        .collect();
    assert!(seen.len() >= 2, "{pids:?} {seen:?}");
    for (p, uid) in seen {
        assert!(
            uid >= 65536,
            "host pid {p} runs as host uid {uid}, expected the unprivileged range"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // And a probe run as root is refused like any other.
    let out = std::process::Command::new(&f.pinfold)
        .args(["exec", "--rootfs"])
        .arg(&f.rootfs)
        .args(["--", "/bin/probe", "mount"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn subid_range_maps_a_full_range_and_single_maps_one_id() {
    if !std::path::Path::new("/usr/bin/newuidmap").exists() {
        eprintln!("skipped: newuidmap is not installed (apt-get install uidmap)");
        return;
    }
    // The kernel's view of the map, read from inside.
    let (code, out, err) = sh(&["-v"], "cat /proc/self/uid_map /proc/self/gid_map");
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Vec<u64>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 4, "uid and gid maps of two rows each: {out}");
    assert_eq!(rows[0][0], 0);
    assert_eq!(rows[0][2], 1, "the caller is container root");
    assert_eq!(rows[1][0], 1);
    assert!(rows[1][2] >= 65536, "a full sub-id range: {out}");
    assert!(
        err.contains("sub-id range"),
        "mode is reported with --verbose: {err}"
    );

    let out = exec_cmd(&["-v"], &["/bin/cat", "/proc/self/uid_map"])
        .env("PINFOLD_USERNS", "single")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("single"));
}

#[test]
fn image_file_owners_from_the_subid_range_show_inside() {
    if !is_root() {
        eprintln!("skipped: needs root to give a fixture file a sub-id owner");
        return;
    }
    let f = fixtures();
    let (_, out, _) = sh(&[], "cat /proc/self/uid_map");
    let second: Vec<u32> = out
        .lines()
        .nth(1)
        .expect("sub-id row")
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let d = user_dir();
    let file = d.path().join("owned");
    std::fs::write(&file, "x").unwrap();
    // Container uid 1000 is host (start + 999).
    std::os::unix::fs::chown(&file, Some(second[1] + 999), Some(f.user.unwrap().1)).unwrap();
    let bind = format!("{}:/data", d.path().display());
    let out = sh_ok(&["--bind", &bind], "stat -c %u /data/owned");
    assert_eq!(out.trim(), "1000");
}

// ---------- file system ----------

#[test]
fn rootfs_is_never_modified() {
    let f = fixtures();
    let out = sh_ok(
        &[],
        "echo hi > /etc/pinfold-was-here && cat /etc/pinfold-was-here && rm /bin/ls && echo removed",
    );
    assert_eq!(out, "hi\nremoved\n");
    assert!(!f.rootfs.join("etc/pinfold-was-here").exists());
    assert!(f.rootfs.join("bin/ls").symlink_metadata().is_ok());
}

#[test]
fn untrusted_rootfs_is_read_only() {
    let (code, _, err) = sh(&["--policy", "untrusted"], "echo hi > /etc/x");
    assert_ne!(code, 0);
    assert!(
        err.contains("Read-only") || err.contains("Permission denied"),
        "{err}"
    );
    // The writable places still take writes.
    sh_ok(
        &["--policy", "untrusted"],
        "echo a > /tmp/a && echo b > /workspace/b && echo c > /dev/shm/c && echo d > /dev/null",
    );
}

#[test]
fn minimal_dev_proc_and_tmp() {
    let out = sh_ok(
        &[],
        "ls /dev | tr '\\n' ' '; echo; cat /proc/1/cmdline | tr '\\0' ' '; echo; stat -f -c %T /tmp /dev/shm; ls /dev/pts",
    );
    let mut l = out.lines();
    let dev = l.next().unwrap();
    for n in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd",
    ] {
        assert!(
            dev.split_whitespace().any(|d| d == n),
            "/dev/{n} missing: {dev}"
        );
    }
    assert!(
        !dev.contains("sda") && !dev.contains("vda") && !dev.contains("mem"),
        "{dev}"
    );
    assert!(
        l.next().unwrap().contains("pinfold"),
        "PID 1 is pinfold's init"
    );
    assert_eq!(l.next(), Some("tmpfs"));
    assert_eq!(l.next(), Some("tmpfs"));
    assert_eq!(
        l.next(),
        Some("ptmx"),
        "a new devpts instance holds only ptmx"
    );
}

#[test]
fn sensitive_proc_entries_are_masked_or_read_only() {
    let (code, out, err) = sh(
        &[],
        "cat /proc/keys /proc/timer_list | wc -c; echo 1 > /proc/sys/kernel/hostname && echo WROTE",
    );
    assert_ne!(code, 0);
    assert!(out.starts_with('0'), "masked files read empty: {out}");
    assert!(!out.contains("WROTE"), "{out} {err}");
}

#[test]
fn proc_self_exe_of_init_cannot_be_written() {
    assert_refused(&[], &["write-file", "/proc/1/exe"]);
    let f = fixtures();
    let before = std::fs::read(&f.pinfold).unwrap();
    let _ = sh(&[], "echo x >> /proc/1/exe; cat /proc/1/exe > /tmp/copy");
    assert_eq!(
        std::fs::read(&f.pinfold).unwrap(),
        before,
        "the host binary changed"
    );
}

#[test]
fn binds_are_read_only_unless_rw() {
    let d = user_dir();
    std::fs::write(d.path().join("in.txt"), "from host").unwrap();
    let spec_ro = format!("{}:/src", d.path().display());
    let (code, out, err) = sh(&["--bind", &spec_ro], "cat /src/in.txt; echo x > /src/new");
    assert_ne!(code, 0);
    assert_eq!(out, "from host");
    assert!(err.contains("Read-only"), "{err}");
    assert!(!d.path().join("new").exists());

    let spec_rw = format!("{}:/workspace:rw", d.path().display());
    sh_ok(&["--bind", &spec_rw], "echo made > out.txt");
    assert_eq!(
        std::fs::read_to_string(d.path().join("out.txt")).unwrap(),
        "made\n"
    );
}

#[test]
fn workdir_env_and_hostname() {
    let out = sh_ok(
        &[
            "--workdir",
            "/build/here",
            "--env",
            "GREETING=hello",
            "--hostname",
            "ci-box",
        ],
        "pwd; echo $GREETING; hostname; cat /etc/hostname",
    );
    assert_eq!(out, "/build/here\nhello\nci-box\nci-box\n");
    let (_, out, _) = sh(&[], "hostname; pwd; echo $PATH");
    assert_eq!(out.lines().next(), Some("pinfold"));
    assert_eq!(out.lines().nth(1), Some("/workspace"));
}

#[test]
fn image_symlinks_cannot_redirect_mounts_to_the_host() {
    // A hostile rootfs whose /workspace, /dev and /etc point at a host directory.
    let f = fixtures();
    let host_dir = user_dir();
    let evil = user_dir();
    let rootfs = evil.path().join("rootfs");
    build_rootfs(&rootfs, &f.root.join("probe"));
    let host = host_dir.path().display().to_string();
    std::fs::remove_dir_all(rootfs.join("etc")).unwrap();
    std::os::unix::fs::symlink(
        format!("../../../../../../..{host}"),
        rootfs.join("workspace"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&host, rootfs.join("dev")).unwrap();
    let host_etc = user_dir();
    std::os::unix::fs::symlink(
        format!("/../../{}", host_etc.path().display()),
        rootfs.join("etc"),
    )
    .unwrap();
    if let Some((uid, gid)) = f.user {
        std::process::Command::new("chown")
            .args(["-R", "-h", &format!("{uid}:{gid}")])
            .arg(evil.path())
            .status()
            .unwrap();
    }
    let out = pinfold()
        .args(["exec", "--rootfs"])
        .arg(&rootfs)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "echo y > /workspace/escaped; ls /dev/null && cat /etc/hostname",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/dev/null\npinfold\n");
    for d in [host_dir.path(), host_etc.path()] {
        let leftovers: Vec<_> = std::fs::read_dir(d).unwrap().collect();
        assert!(
            leftovers.is_empty(),
            "the container wrote to the host: {leftovers:?}"
        );
    }
    assert_eq!(
        std::fs::read_link(rootfs.join("dev"))
            .unwrap()
            .display()
            .to_string(),
        host,
        "the rootfs is untouched"
    );
}

// ---------- fds ----------

#[test]
fn no_inherited_fd_beyond_stdio() {
    // Open an extra fd without close-on-exec in pinfold's parent: the job must not see it.
    let file = std::fs::File::open("/etc/hostname").unwrap();
    let fd = file.as_raw_fd();
    let mut cmd = exec_cmd(&[], &["/bin/probe", "fds"]);
    // SAFETY: the closure only calls fcntl on an fd we own, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("only 0-2"));
    drop(file);
}

// ---------- network ----------

#[test]
fn network_is_loopback_only() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    assert_refused(&[], &["connect", "127.0.0.1", &port]);
    let out = sh_ok(
        &[],
        "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '",
    );
    assert_eq!(out.trim(), "lo", "only loopback exists");
    // The namespace is the job's own in both id-mapping modes (the child
    // makes it on a second thread and joins it before forking the job).
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    for userns in [&[][..], &["--userns", "single"][..]] {
        let (code, out, err) = sh(userns, "readlink /proc/self/ns/net");
        assert_eq!(code, 0, "{err}");
        assert!(out.trim().starts_with("net:["), "{out}");
        assert_ne!(out.trim(), host_ns.to_str().unwrap(), "{userns:?}");
    }
    // Loopback is up and usable under the default policy...
    let out = exec(&[], &["/bin/probe", "tcp-loopback"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // ...and TCP is refused entirely under `untrusted` (Landlock).
    assert_refused(&["--policy", "untrusted"], &["tcp-loopback"]);
}

// ---------- seccomp, from inside ----------

#[test]
fn forbidden_syscalls_are_refused() {
    for probe in [
        "mount",
        "umount",
        "pivot_root",
        "chroot",
        "unshare-user",
        "unshare-mount",
        "clone-newuser",
        "setns",
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "io_uring_setup",
        "userfaultfd",
        "open_by_handle_at",
        "kexec_load",
        "init_module",
        "tiocsti",
        "tiocsti-plain",
        "ptrace-init",
    ] {
        assert_refused(&[], &[probe]);
    }
}

/// Address families a build has no use for are refused under every shipped
/// policy: the attack (`socket(AF_VSOCK, SOCK_STREAM)` reaches a VM runner's
/// hypervisor) fails, and with a type past SOCK_MAX the answer is seccomp's
/// EAFNOSUPPORT, not the kernel's EINVAL, so the filter (not a missing
/// module) is what refuses. The four kept families still work.
#[test]
fn socket_families_a_build_has_no_use_for_are_refused() {
    // AF_KEY 15, AF_PACKET 17, AF_RDS 21, AF_CAN 29, AF_TIPC 30,
    // AF_BLUETOOTH 31, AF_ALG 38, AF_VSOCK 40, AF_XDP 44, AF_MCTP 45.
    let refused = ["15", "17", "21", "29", "30", "31", "38", "40", "44", "45"];
    for policy in ["default", "untrusted", "trusted"] {
        let p = &["--policy", policy][..];
        for family in refused {
            for (call, ty) in [
                ("socket", "1"),
                ("socket", "2"),
                ("socket", "5"),
                ("socket", "11"),
                ("socketpair", "1"),
            ] {
                let out = exec(p, &["/bin/probe", call, family, ty]);
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    stdout.contains("refused (errno EAFNOSUPPORT)"),
                    "{policy}: {call}({family}, {ty}): {stdout}"
                );
            }
        }
        for (family, ty) in [("1", "1"), ("2", "2"), ("10", "2"), ("16", "3")] {
            let out = exec(p, &["/bin/probe", "socket", family, ty]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains("ALLOWED"),
                "{policy}: family {family}: {stdout}"
            );
            let out = exec(p, &["/bin/probe", "socket", family, "11"]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains("EINVAL"),
                "{policy}: family {family}: {stdout}"
            );
        }
        let out = exec(p, &["/bin/probe", "socketpair", "1", "1"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("ALLOWED"));
    }
}

#[test]
fn clone3_answers_enosys_so_libc_falls_back() {
    let out = exec(&[], &["/bin/probe", "clone3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ENOSYS"), "{stdout}");
    // Threads and fork still work (busybox forks for the pipeline).
    let (code, out, _) = sh(&[], "echo a | cat");
    assert_eq!((code, out.as_str()), (0, "a\n"));
}

// ---------- policies ----------

#[test]
fn policy_show_prints_the_effective_policy() {
    let out = pinfold()
        .args(["policy", "show", "untrusted"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("loopback_tcp = false"), "{s}");
    assert!(
        s.contains("[kernel]") && s.contains("scopes = \"degrade\""),
        "{s}"
    );

    let out = pinfold()
        .args(["policy", "show", "default", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["network"]["mode"], "none");
}

#[test]
fn policy_errors_name_the_key_and_file() {
    let d = user_dir();
    let p = d.path().join("mine.toml");
    std::fs::write(&p, "[limits]\nnofile = 100\nnofiles = 5\n").unwrap();
    let out = pinfold().args(["policy", "show"]).arg(&p).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nofiles") && err.contains("mine.toml"),
        "{err}"
    );
    let out = exec(&["--policy", p.to_str().unwrap()], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn rlimits_come_from_the_policy() {
    let out = sh_ok(
        &["--policy", "untrusted"],
        "ulimit -n; ulimit -c; ulimit -u",
    );
    let v: Vec<&str> = out.lines().collect();
    assert!(v[0].parse::<u64>().unwrap() <= 4096, "{out}");
    assert_eq!(v[1], "0");
}

#[test]
fn help_is_available() {
    for args in [
        &["--help"][..],
        &["exec", "--help"],
        &["policy", "--help"],
        &["policy", "show", "--help"],
    ] {
        let out = pinfold().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

#[test]
fn user_namespaces_disabled_is_a_clear_error() {
    // bubblewrap's --disable-userns leaves pinfold unable to create a user
    // namespace, as `user.max_user_namespaces=0` would on a host.
    let f = fixtures();
    let args: Vec<&std::ffi::OsStr> = vec![
        "exec".as_ref(),
        "--rootfs".as_ref(),
        f.rootfs.as_os_str(),
        "--".as_ref(),
        "/bin/true".as_ref(),
    ];
    let Some(out) = pinfold_without_userns(&args) else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("create namespaces"), "{err}");
    assert!(
        err.contains("max_user_namespaces")
            || err.contains("apparmor_restrict_unprivileged_userns"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_job_fs_without_its_holder_is_one_clear_line() {
    // `--job-fs` takes the writable layer and the working directory from a
    // job's holder (the runner starts one per job; tests/trust.rs and
    // tests/agent.rs run steps on it). Without one: exit 125, one line.
    let d = user_dir();
    let sock = d.path().join("jobfs.sock");
    let out = exec(&["--job-fs", sock.to_str().unwrap()], &["/bin/true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!("job file system {}:", sock.display())) && err.contains("holder"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn policy_check_validates_files_and_their_profiles() {
    let out = policy_check("trusted");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok:"));

    let d = user_dir();
    let bad_value = d.path().join("bad.toml");
    std::fs::write(&bad_value, "[network]\nmode = \"everywhere\"\n").unwrap();
    let err = policy_refused(&bad_value);
    assert!(
        err.contains("everywhere") && err.contains("bad.toml"),
        "{err}"
    );

    let bad_profile = d.path().join("prof.toml");
    std::fs::write(&bad_profile, "[seccomp]\nprofile = \"./missing.json\"\n").unwrap();
    let err = policy_refused(&bad_profile);
    assert!(
        err.contains("seccomp.profile") && err.contains("missing.json"),
        "{err}"
    );
}

/// Writes a policy using a Docker-format seccomp profile; returns its path.
fn docker_profile_policy(dir: &std::path::Path, profile: serde_json::Value) -> String {
    std::fs::write(dir.join("docker.json"), profile.to_string()).unwrap();
    let policy = dir.join("docker-policy.toml");
    std::fs::write(&policy, "[seccomp]\nprofile = \"./docker.json\"\n").unwrap();
    policy.to_str().unwrap().to_owned()
}

#[test]
fn docker_seccomp_profiles_deny_list() {
    let d = user_dir();
    let policy = docker_profile_policy(
        d.path(),
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["chown32", "no_such_call"], "action": "SCMP_ACT_ERRNO"}
            ]
        }),
    );
    let out = sh_ok(&["--policy", &policy], "mkdir /tmp/x 2>&1; echo ppid=$PPID");
    assert!(
        out.contains("Permission denied"),
        "mkdir gets errnoRet 13: {out}"
    );
    assert!(
        out.contains("ppid=1"),
        "a rule needing CAP_SYS_ADMIN is not applied: {out}"
    );
    // pinfold's own x32 guard and hardening still hold with a foreign profile.
    let (code, out, _) = sh(
        &["--policy", &policy],
        "grep Seccomp_filters /proc/self/status",
    );
    assert_eq!(code, 0);
    assert!(
        out.trim().ends_with('2'),
        "the profile's one filter and the x32 guard: {out}"
    );
}

#[test]
fn docker_seccomp_profiles_allow_list() {
    use std::str::FromStr;
    // Everything this architecture has, except mkdir/mkdirat, and clone3
    // answered ENOSYS, the way moby's default profile does it.
    let names: Vec<String> = syscalls::Sysno::iter()
        .map(|s| s.name().to_owned())
        .filter(|n| !matches!(n.as_str(), "mkdir" | "mkdirat" | "clone3"))
        .collect();
    assert!(syscalls::Sysno::from_str("mkdirat").is_ok());
    let d = user_dir();
    let policy = docker_profile_policy(
        d.path(),
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [
                {"names": names, "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }),
    );
    let out = sh_ok(
        &["--policy", &policy],
        "mkdir /tmp/x 2>&1; /bin/probe clone3; echo a | cat",
    );
    assert!(
        out.contains("Operation not permitted"),
        "the default errno: {out}"
    );
    assert!(
        out.contains("clone3: refused (errno ENOSYS)"),
        "the exception wins over the default: {out}"
    );
    assert!(out.ends_with("a\n"), "{out}");
}

#[test]
fn the_callers_environment_and_host_processes_are_out_of_reach() {
    // A token in pinfold's own environment (an agent's) is not passed in, and
    // PID 1 (a fork of pinfold) is not dumpable, so its environ is unreadable.
    let out = exec_cmd(&[], &["/bin/sh", "-c", "env; cat /proc/1/environ"])
        .env("PINFOLD_TOKEN", "s3cr3t-token-value")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"),
        "{stdout} {stderr}"
    );
    assert!(
        stderr.contains("Permission denied"),
        "/proc/1/environ: {stderr}"
    );

    // Host processes do not exist in the container's pid namespace.
    let me = std::process::id().to_string();
    let out = exec(&[], &["/bin/probe", "kill", &me]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("refused (errno ESRCH)"), "{stdout}");

    // An abstract unix socket listening on the host is in another network namespace.
    let name = format!("pinfold-test-{}", std::process::id());
    let mut addr = vec![0u8];
    addr.extend_from_slice(name.as_bytes());
    use std::os::linux::net::SocketAddrExt;
    let sa = std::os::unix::net::SocketAddr::from_abstract_name(&addr[1..]).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind_addr(&sa).unwrap();
    assert_refused(&[], &["abstract-unix", &name]);
}
