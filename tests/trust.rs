//! The trust boundary between the runner's operator and a job file (issue
//! 13, point 1), attacked through `pinfold run`, `pinfold verify` and
//! `pinfold exec` as the unprivileged test user. The agent shares the
//! runner code (tests/agent.rs attacks it through a coordinator).
//!
//! A job file may come from a stranger's pull request: it picks a policy
//! only by name and only among those the operator allows, narrows it and
//! never widens it, and nothing pinfold writes quotes a file the job named.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::busybox_image as image;

const SECRET: &str = "hunter2-operator-only";

fn job(extra: &str, run: &str) -> String {
    format!(
        "image: {}\n{extra}steps:\n  - name: s\n    run: {run}\n",
        image()
    )
}

/// `pinfold run ARGS... job.yaml` as the test user, with an agent-only
/// secret in its environment; (exit code, stdout + stderr).
fn run(dir: &Path, args: &[&str], yaml: &str) -> (i32, String) {
    std::fs::write(dir.join("job.yaml"), yaml).unwrap();
    std::fs::set_permissions(dir.join("job.yaml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = common::pinfold()
        .env("PINFOLD_HOME", dir.join("home"))
        .env("PINFOLD_SECRET_OPERATOR", SECRET)
        .current_dir(dir)
        .arg("run")
        .args(args)
        .arg("job.yaml")
        .output()
        .expect("run pinfold");
    (o.status.code().unwrap_or(-1), common::output_text(&o))
}

fn dir() -> tempfile::TempDir {
    let d = common::user_dir();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

#[test]
fn a_job_cannot_name_a_file_as_its_policy_nor_read_one_through_the_error() {
    let d = dir();
    for path in ["/etc/passwd", "/proc/self/environ", "../home/agent/token"] {
        let (code, out) = run(
            d.path(),
            &[],
            &job(&format!("policy: {path}\n"), "echo RAN"),
        );
        assert_eq!(code, 125, "{path}: {out}");
        assert!(
            out.contains("policy: must be a policy name") && out.contains("not a path"),
            "{path}: {out}"
        );
        // Nothing of the named file reaches the output.
        assert!(!out.contains("root:x:0:0"), "{out}");
        assert!(
            !out.contains(SECRET) && !out.contains("PINFOLD_SECRET"),
            "{out}"
        );
        assert!(!out.contains("RAN"), "{out}");
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    }
}

#[test]
fn a_job_cannot_pick_a_policy_the_runner_does_not_allow() {
    let d = dir();
    let (code, out) = run(
        d.path(),
        &[],
        &job("policy: trusted\n", "echo RAN-UNDER-TRUSTED"),
    );
    assert_eq!(code, 125, "{out}");
    assert!(
        out.contains(
            "==> pinfold: the job asks for policy \"trusted\", which this runner does not allow (it allows: default)"
        ),
        "{out}"
    );
    assert!(
        !out.contains("==> step") && !out.contains("RAN-UNDER-TRUSTED\n"),
        "refused before its first step: {out}"
    );
    // Allowed by the operator, the same job runs.
    let (code, out) = run(
        d.path(),
        &["--allow-policy", "trusted"],
        &job("policy: trusted\n", "echo RAN-UNDER-TRUSTED"),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("RAN-UNDER-TRUSTED\n"), "{out}");
}

#[test]
fn the_operator_policy_applies_when_the_job_names_none() {
    let d = dir();
    // Proved from inside: `untrusted` has a read-only rootfs, `default` not.
    let write = "touch /etc/pwned && echo WROTE || echo READ-ONLY";
    let (code, out) = run(d.path(), &["--policy", "untrusted"], &job("", write));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("READ-ONLY\n") && !out.contains("WROTE\n"),
        "{out}"
    );
    let (code, out) = run(d.path(), &[], &job("", write));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("WROTE\n"), "{out}");
    // The environment variable is the same setting.
    std::fs::write(d.path().join("job.yaml"), job("", write)).unwrap();
    let o = common::pinfold()
        .env("PINFOLD_HOME", d.path().join("home"))
        .env("PINFOLD_POLICY", "untrusted")
        .current_dir(d.path())
        .args(["run", "job.yaml"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("READ-ONLY\n"),
        "{o:?}"
    );
}

#[test]
fn a_job_may_narrow_its_policy_and_never_widen_it() {
    let d = dir();
    for (extra, field, ceiling) in [
        ("network: egress\n", "network egress", "(network none;"),
        (
            "limits: { memory: 64G }\n",
            "limits.memory 64G",
            "(limits.memory 8G)",
        ),
        (
            "limits: { pids: 0 }\n",
            "limits.pids 0",
            "(limits.pids 4096)",
        ),
        (
            "limits: { tmp_size: 2G }\n",
            "filesystem.tmp_size 2G",
            "(filesystem.tmp_size 1G)",
        ),
    ] {
        let (code, out) = run(d.path(), &[], &job(extra, "echo RAN"));
        assert_eq!(code, 125, "{extra}: {out}");
        assert!(
            out.contains(&format!(
                "==> pinfold: the job asks for {field}, above this runner's ceiling for policy \"default\" {ceiling}"
            )),
            "{extra}: {out}"
        );
        assert!(!out.contains("==> step"), "{extra}: {out}");
    }
    // Lower is enforced by the sandbox: a 1M /tmp fills at 1M, exit 123
    // naming the field.
    let (code, out) = run(
        d.path(),
        &[],
        &job(
            "limits: { tmp_size: 1M }\n",
            "dd if=/dev/zero of=/tmp/fill bs=64k count=64",
        ),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("filesystem.tmp_size"), "{out}");
}

#[test]
fn verify_and_exec_keep_the_same_ceiling() {
    let d = dir();
    std::fs::write(
        d.path().join("job.yaml"),
        job("policy: trusted\n", "echo hi"),
    )
    .unwrap();
    let o = common::pinfold()
        .env("PINFOLD_HOME", d.path().join("home"))
        .current_dir(d.path())
        .args(["verify", "job.yaml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("does not allow (it allows: default)"), "{err}");
    // exec's --limit only lowers.
    let o = common::exec(&["--limit", "memory=64G"], &["/bin/true"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("limits.memory 64G") && err.contains("(limits.memory 8G)"),
        "{err}"
    );
    let o = common::exec(&["--limit", "pids=8"], &["/bin/true"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
}

#[test]
fn a_broken_operator_policy_fails_at_start_without_quoting_it() {
    let d = dir();
    let pol = d.path().join("leaky.toml");
    std::fs::write(&pol, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&pol, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = run(
        d.path(),
        &["--policy", pol.to_str().unwrap()],
        &job("", "echo RAN"),
    );
    assert_eq!(code, 125, "{out}");
    assert!(
        out.contains("leaky.toml") && out.contains("line 1"),
        "{out}"
    );
    assert!(!out.contains(SECRET) && !out.contains("RAN"), "{out}");
}

/// Unmounts a test's own mount when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    st.blocks_available() * st.fragment_size()
}

#[test]
fn a_job_cannot_fill_the_host_disk_through_its_layer_or_its_workspace() {
    // Point 3: under the runner the writable layer and /workspace used to be
    // host directories with no cap (20 MB went into a "1 MB" layer). Each
    // write below asks for 10x the job's limit and lingers, so the host's
    // free space is read while the files exist.
    // The runner's disk is a file system of its own (a 256M tmpfs mounted
    // here, as root, as CI runs the tests), so nothing else writing on the
    // machine moves its free space: the drop is the job's alone.
    const LIMIT: u64 = 8 << 20;
    let d = dir();
    let disk = d.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let _unmount = common::is_root().then(|| {
        nix::mount::mount(
            Some("tmpfs"),
            &disk,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=256M,mode=0777"),
        )
        .expect("mount the runner's disk");
        Unmount(disk.clone())
    });
    // The image goes into the store first: what the measured runs store is
    // the job's writes only.
    let (code, out) = run(&disk, &[], &job("", "true"));
    assert_eq!(code, 0, "{out}");
    const FILL: &str = "dd if=/dev/zero of=TARGET bs=1M count=80 || true";
    // Empty files take no blocks but kernel memory: 300,000 of them once
    // fit in an 8M workspace. Now at most one per 8K of it (1024 here).
    const FILES: &str = "i=0; while [ $i -lt 3000 ]; do : > f$i || break; i=$((i+1)); done";
    for (limit, write, field, what) in [
        (
            "writable_layer_size",
            FILL.replace("TARGET", "/etc/fill"),
            "filesystem.writable_layer_size",
            "the writable layer is full (8M",
        ),
        (
            "workspace_size",
            FILL.replace("TARGET", "fill"),
            "filesystem.workspace_size",
            "the workspace is full (8M",
        ),
        (
            "workspace_size",
            FILES.to_string(),
            "filesystem.workspace_size",
            "the workspace is full (8M",
        ),
    ] {
        let yaml = job(
            &format!("limits: {{ {limit}: 8M }}\n"),
            &format!("\"{write}; sleep 2; exit 1\""),
        );
        std::fs::write(disk.join("job.yaml"), &yaml).unwrap();
        std::fs::set_permissions(
            disk.join("job.yaml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let before = free_bytes(&disk);
        let mut child = common::pinfold()
            .env("PINFOLD_HOME", disk.join("home"))
            .current_dir(&disk)
            .args(["run", "job.yaml"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut least = before;
        while child.try_wait().unwrap().is_none() {
            least = least.min(free_bytes(&disk));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        let out = common::output_text(&o);
        assert_eq!(o.status.code(), Some(1), "{limit}: {out}");
        assert!(out.contains("finished: exit 123"), "{limit}: {out}");
        assert!(
            out.contains(&format!("disk limit reached: {what}, policy {field})")),
            "{limit}: {out}"
        );
        // No more than the limit (the job dir, the log and the report are
        // a few KiB); the job asked for 80M.
        let dropped = before.saturating_sub(least);
        assert!(
            dropped <= LIMIT,
            "{limit}: the host lost {dropped} bytes of free space"
        );
    }
}
