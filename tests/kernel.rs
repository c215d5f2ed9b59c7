//! What a policy does on a kernel that lacks a protection (`[kernel]`,
//! sandbox/src/kernel.rs), proved here on a kernel that lacks none: every
//! shipped policy reports nothing degraded, a floor this kernel cannot meet
//! refuses in one line, and the compensating controls that stand in on an
//! older kernel (tests/vm proves them on Debian 12's 6.1) hold on their own.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use common::*;

const SHIPPED: [&str; 3] = ["default", "untrusted", "trusted"];

#[test]
fn every_shipped_policy_runs_undegraded_on_this_kernel() {
    for policy in SHIPPED {
        let d = user_dir();
        let report = d.path().join("report.json");
        let out = exec(
            &[
                "-v",
                "--policy",
                policy,
                "--report",
                report.to_str().unwrap(),
            ],
            &["/bin/true"],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{policy}: {err}");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(v["degraded"], serde_json::json!([]), "{policy}: {v}");
        assert!(!err.contains("degraded:"), "{policy}: {err}");
    }
    // doctor says the same per policy.
    let out = pinfold().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for policy in SHIPPED {
        let line = format!("ok   policy {policy}: runs");
        assert!(text.lines().any(|l| l == line), "no {line:?}: {text}");
    }
}

/// Runs /bin/true under a policy file holding `toml`; asserts exit 125 and
/// one line of stderr, and returns it.
fn refused_line(dir: &std::path::Path, toml: &str) -> String {
    let p = dir.join("kernel.toml");
    std::fs::write(&p, toml).unwrap();
    let out = exec(&["--policy", p.to_str().unwrap()], &["/bin/true"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(125), "{toml}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    err
}

#[test]
fn a_floor_this_kernel_cannot_meet_refuses_in_one_line() {
    let d = user_dir();
    let floor = "below the policy's kernel.landlock_abi = 99 (Landlock ABI 99";
    let err = refused_line(d.path(), "[kernel]\nlandlock_abi = 99\n");
    assert!(err.contains(floor), "{err}");
    // The old spelling is still read, as the same floor.
    let err = refused_line(d.path(), "[landlock]\nmin_abi = 99\n");
    assert!(err.contains(floor), "{err}");
    // A degradation nothing stands in for is refused when the policy loads.
    let err = refused_line(d.path(), "[kernel]\nfilesystem = \"degrade\"\n");
    assert!(err.contains("kernel.filesystem"), "{err}");
}

/// `probe outside` on the host, as the user the container runs as: a TCP
/// listener on loopback, an abstract unix socket, and its pid in `dir`.
struct Outside {
    child: Child,
}

impl Outside {
    fn start(dir: &std::path::Path) -> Outside {
        let f = fixtures();
        let pidfile = dir.join("outside.pid");
        let mut c = Command::new(f.root.join("probe"));
        c.arg("outside").arg(&pidfile).stdout(Stdio::null());
        if let Some((uid, gid)) = f.user {
            c.uid(uid).gid(gid);
        }
        // Killed and waited for on drop, even should it not start.
        let outside = Outside {
            child: c.spawn().unwrap(),
        };
        for _ in 0..200 {
            if std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')) {
                return outside;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("probe outside did not start");
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the probe on the host as the container's user; returns its line.
fn on_host(args: &[&str]) -> String {
    let f = fixtures();
    let mut c = Command::new(f.root.join("probe"));
    c.args(args);
    if let Some((uid, gid)) = f.user {
        c.uid(uid).gid(gid);
    }
    String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
}

#[test]
fn what_stands_in_for_tcp_rules_scopes_and_truncate_holds_by_itself() {
    let d = user_dir();
    let outside = Outside::start(d.path());
    let bind = format!("{}:/o:ro", d.path().display());
    // The probes work: from the host, each reaches its target.
    let file = d.path().join("dac-writable");
    std::fs::write(&file, "x").unwrap();
    if let Some((uid, gid)) = fixtures().user {
        std::os::unix::fs::chown(&file, Some(uid), Some(gid)).unwrap();
    }
    for (probe, arg) in [
        ("tcp-outside", None),
        ("abstract-outside", None),
        ("truncate-ro", Some(file.to_str().unwrap())),
    ] {
        let mut args = vec![probe];
        args.extend(arg);
        let line = on_host(&args);
        assert!(line.contains("ALLOWED"), "{probe} on the host: {line}");
    }
    // From inside, under every policy, each fails by the control that
    // stands in for Landlock on an older kernel, not by Landlock: the
    // errno says which (network namespace: ECONNREFUSED, pid namespace:
    // ESRCH, read-only mount: EROFS). `untrusted` refuses TCP by Landlock
    // here first, so its tcp errno is not the namespace's.
    for policy in SHIPPED {
        for (probe, errno) in [
            (&["tcp-outside"][..], "ECONNREFUSED"),
            (&["abstract-outside"], "ECONNREFUSED"),
            (&["kill-outside", "/o/outside.pid"], "ESRCH"),
            (&["truncate-ro"], "EROFS"),
            (&["truncate-ro", "/proc/1/comm"], "EROFS"),
        ] {
            let mut cmd = vec!["/bin/probe"];
            cmd.extend_from_slice(probe);
            let out = exec(&["--policy", policy, "--bind", &bind], &cmd);
            let line = String::from_utf8_lossy(&out.stdout);
            assert!(line.contains("refused"), "{policy} {probe:?}: {line}");
            if !(policy == "untrusted" && probe[0] == "tcp-outside") {
                assert!(line.contains(errno), "{policy} {probe:?}: {line}");
            }
        }
    }
    // The kill probe's target was alive all along (a refused kill leaves it).
    let pid = std::fs::read_to_string(d.path().join("outside.pid")).unwrap();
    assert!(
        std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the outside process died"
    );
    let line = on_host(&[
        "kill-outside",
        d.path().join("outside.pid").to_str().unwrap(),
    ]);
    assert!(line.contains("ALLOWED"), "kill-outside on the host: {line}");
    drop(outside);
}

#[test]
fn writes_through_procs_magic_links_still_work() {
    // /proc is a read-only mount: a write through /dev/stdout
    // (/proc/self/fd/1) or /proc/self/fd/N reaches the file's own mount.
    let out = sh_ok(
        &[],
        "(echo through > /dev/stdout) | cat; exec 3>>/tmp/f; echo fd >> /proc/self/fd/3; cat /tmp/f",
    );
    assert_eq!(out, "through\nfd\n");
}
