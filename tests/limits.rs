//! Resource limits end to end: a fork bomb, a memory bomb, a CPU burner and
//! disk fills, each run by the unprivileged test user in a real container,
//! each ending with exit 123 and a reason naming the policy field; the next
//! run on the same host works. Every bomb is bounded on its own (a capped
//! allocation, RLIMIT_NPROC, a --timeout) so a bug here cannot take the
//! machine down. The log flood through a real agent is in tests/agent.rs.

mod common;

use common::{assert_policy_refused_naming, exec, fixtures, pinfold, sh_ok, user_dir};

/// Writes a policy file (default + `extra` TOML) the test user can read.
fn policy(dir: &std::path::Path, name: &str, limits: &str, filesystem: &str) -> String {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!("description = \"limits test\"\n[filesystem]\n{filesystem}\n[limits]\n{limits}\n"),
    )
    .unwrap();
    p.to_str().unwrap().to_owned()
}

/// Runs `cmd` under policy `p` with `timeout`; asserts it ended with exit
/// 123 and `message` on stderr. Returns stderr.
#[track_caller]
fn assert_ends_123(p: &str, timeout: &str, cmd: &[&str], message: &str) -> String {
    let out = exec(&["--policy", p, "--timeout", timeout], cmd);
    let (code, err) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, 123, "{err}");
    assert!(err.contains(message), "{err}");
    err
}

/// Runs `cmd` under a fresh policy (name, limits, filesystem) with
/// `timeout`: it ends with exit 123 and `message`; the next run is normal.
#[track_caller]
fn assert_killed_then_fine(policy: (&str, &str, &str), timeout: &str, cmd: &[&str], message: &str) {
    let (_d, p) = user_policy(policy.0, policy.1, policy.2);
    assert_ends_123(&p, timeout, cmd, message);
    next_run_is_normal();
}

/// `policy` in a fresh directory of the test user's.
fn user_policy(name: &str, limits: &str, filesystem: &str) -> (tempfile::TempDir, String) {
    let d = user_dir();
    let p = policy(d.path(), name, limits, filesystem);
    (d, p)
}

/// `sh -c SCRIPT` as a command line.
fn sh_c(script: &str) -> [&str; 3] {
    ["/bin/sh", "-c", script]
}

/// The host is fine: a plain run afterwards works.
fn next_run_is_normal() {
    let out = sh_ok(&[], "echo still-fine; ulimit -u");
    assert!(out.starts_with("still-fine\n"), "{out}");
}

#[test]
fn fork_bomb_is_killed_naming_the_pids_limit() {
    // A bomb that retries refused forks (as bash's does) for at most 20 s;
    // RLIMIT_NPROC (= pids) bounds it even if the supervisor were broken,
    // and the timeout ends it in any case.
    assert_killed_then_fine(
        ("pids", "pids = 64", ""),
        "30s",
        &["/bin/probe", "forkbomb", "20"],
        "pinfold: job killed: pids limit 64 reached (policy limits.pids)",
    );
}

#[test]
fn memory_bomb_is_killed_naming_the_memory_limit() {
    let (_d, p) = user_policy("mem", "memory = \"64M\"", "");
    // busybox dd allocates one bs-sized buffer and fills it from /dev/zero:
    // 256M resident, held for a while, bounded.
    assert_ends_123(
        &p,
        "60s",
        &sh_c("dd if=/dev/zero of=/dev/null bs=256M count=200 2>/dev/null"),
        "pinfold: job killed: memory limit 64M exceeded (policy limits.memory); raise it in the policy or reduce the build's memory",
    );
    // Under the limit the same kind of work runs.
    sh_ok(
        &["--policy", &p],
        "dd if=/dev/zero of=/dev/null bs=8M count=4 2>/dev/null",
    );
    next_run_is_normal();
}

/// `memory = "64M"` with disks large enough (1G) that memory, not a disk,
/// is the limit a 512 MiB trick crosses.
fn shmem_policy() -> (tempfile::TempDir, String) {
    user_policy(
        "shmem",
        "memory = \"64M\"",
        "tmp_size = \"1G\"\nshm_size = \"1G\"\nrootfs_writable = true\nwritable_layer_size = \"1G\"",
    )
}

/// Asserts a run ended by the supervisor naming `limits.memory`.
fn assert_memory_killed(what: &str, out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(123), "{what}: {stdout} {err}");
    assert!(
        err.contains("pinfold: job killed: memory limit 64M exceeded (policy limits.memory)"),
        "{what}: {err}"
    );
    assert!(!stdout.contains("held"), "{what} held its memory: {stdout}");
}

/// `cmd` under policy `p` with a 60 s timeout.
fn exec_60s(p: &str, cmd: &[&str]) -> std::process::Output {
    exec(&["--policy", p, "--timeout", "60s"], cmd)
}

/// Each `probe mem TRICK 512` under the shmem policy is killed naming
/// `limits.memory`; the next run is normal.
fn tricks_are_killed(tricks: &[&str]) {
    let (_d, p) = shmem_policy();
    for trick in tricks {
        let out = exec_60s(&p, &["/bin/probe", "mem", trick, "512"]);
        assert_memory_killed(trick, &out);
    }
    next_run_is_normal();
}

#[test]
fn shared_anonymous_memory_is_charged() {
    // 512 MiB of MAP_SHARED|MAP_ANONYMOUS pages are "shared" in statm; after
    // MADV_DONTNEED they are not even resident in the page tables, but the
    // shmem object still holds them.
    tricks_are_killed(&["shared-anon", "shared-anon-dontneed"]);
}

#[test]
fn memfd_is_charged_mapped_or_only_written() {
    // A memfd touched through a mapping whose fd is closed, and one written
    // with write(2) and never mapped (no process shows it as resident).
    tricks_are_killed(&["memfd-mapped", "memfd-write"]);
}

#[test]
fn tmpfs_files_are_charged() {
    // Files on /tmp, /dev/shm and the writable layer (all tmpfs: the kernel
    // holds their pages in memory), each below its disk size (1G).
    let (_d, p) = shmem_policy();
    for file in ["/tmp/fill", "/dev/shm/fill", "/root/fill"] {
        let out = exec_60s(
            &p,
            &[
                "/bin/sh",
                "-c",
                &format!("dd if=/dev/zero of={file} bs=1M count=512 && echo held"),
            ],
        );
        assert_memory_killed(file, &out);
    }
    next_run_is_normal();
}

#[test]
fn sysv_shm_is_charged_or_refused() {
    let (_d, p) = shmem_policy();
    // One 512 MiB segment, and 8 MiB segments touched then detached (which
    // no process maps): refused by the IPC namespace's shmmax/shmall, which
    // the container starts with at limits.memory.
    for trick in ["sysv", "sysv-detached"] {
        let out = exec_60s(&p, &["/bin/probe", "mem", trick, "512"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        let refused = out.status.code() == Some(3) && stdout.contains("refused");
        let killed = out.status.code() == Some(123) && err.contains("(policy limits.memory)");
        assert!(refused || killed, "{trick}: {stdout} {err}");
    }
    // An attached 48 MiB segment plus a 40 MiB memfd: each under 64M, the
    // sum over it.
    assert_ends_123(
        &p,
        "60s",
        &sh_c("/bin/probe mem sysv 48 & /bin/probe mem memfd-write 40; wait"),
        "(policy limits.memory)",
    );
    next_run_is_normal();
}

#[test]
fn page_cache_cannot_be_pinned_with_mlock() {
    // mlock of a file mapping pins page cache, which is not the job's
    // memory in the fallback's sums: RLIMIT_MEMLOCK (64K) refuses it.
    let (_d, p) = shmem_policy();
    let out = exec_60s(&p, &["/bin/probe", "mem", "mlock-file", "512"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("refused: mlock after 0 MiB"), "{stdout}");
}

#[test]
fn shared_memory_is_charged_once_for_all_its_processes() {
    // 40 MiB shared by 4 processes is 40 MiB, not 160: no early kill.
    let (_d, p) = shmem_policy();
    let out = exec_60s(&p, &["/bin/probe", "mem", "shared-anon-forked", "40"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn a_job_that_hides_from_proc_is_still_measured() {
    // Non-dumpable from its first instruction: the supervisor, owner of the
    // container's user namespace, still reads it (through the container's
    // procfs, or by ancestry on the host's /proc).
    assert_killed_then_fine(
        ("nodump", "memory = \"64M\"", ""),
        "60s",
        &["/bin/probe", "nodump-alloc", "256"],
        "memory limit 64M exceeded",
    );
}

#[test]
fn cpu_burner_is_killed_naming_the_cpu_time_limit() {
    // Two burners: the limit is the container's total, not per process.
    assert_killed_then_fine(
        ("cpu", "cpu_time = \"1s\"", ""),
        "30s",
        &sh_c("(while :; do :; done) & while :; do :; done"),
        "pinfold: job killed: CPU time limit 1s exceeded (policy limits.cpu_time)",
    );
}

#[test]
fn filling_tmp_fails_naming_the_tmp_size() {
    let (_d, p) = user_policy("tmp", "", "tmp_size = \"1M\"");
    let err = assert_ends_123(
        &p,
        "30s",
        &sh_c("dd if=/dev/zero of=/tmp/fill bs=64k count=64"),
        "pinfold: job failed: disk limit reached: /tmp is full (1M, policy filesystem.tmp_size)",
    );
    assert!(err.contains("No space left on device"), "{err}");
    // A job that handles the full disk and succeeds keeps its status.
    sh_ok(
        &["--policy", &p],
        "dd if=/dev/zero of=/tmp/fill bs=64k count=64 2>/dev/null || echo handled",
    );
    next_run_is_normal();
}

#[test]
fn filling_the_writable_layer_fails_naming_its_size() {
    assert_killed_then_fine(
        (
            "layer",
            "",
            "rootfs_writable = true\nwritable_layer_size = \"1M\"",
        ),
        "30s",
        &sh_c("dd if=/dev/zero of=/root/fill bs=64k count=64"),
        "the writable layer is full (1M, policy filesystem.writable_layer_size)",
    );
}

/// What the test user's own cgroup offers, read independently of pinfold:
/// cgroup v2 limits need memory, pids and cpu delegated and writable.
fn cgroup_v2_delegated() -> bool {
    let Ok(line) = std::fs::read_to_string("/proc/self/cgroup") else {
        return false;
    };
    let Some(rel) = line.lines().find_map(|l| l.strip_prefix("0::")) else {
        return false;
    };
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .any(|base| {
            let dir = std::path::Path::new(base).join(rel.trim_start_matches('/'));
            let c = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            ["memory", "pids", "cpu"]
                .iter()
                .all(|x| c.split_whitespace().any(|y| y == *x))
        })
}

#[test]
fn verbose_exec_doctor_and_report_name_the_mechanism() {
    let (d, p) = user_policy("named", "pids = 128", "");
    let report = d.path().join("report.json");
    let out = pinfold()
        .arg("--verbose")
        .arg("exec")
        .arg("--rootfs")
        .arg(&fixtures().rootfs)
        .args(["--policy", &p, "--report"])
        .arg(&report)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["outcome"], "exited");
    let doctor = pinfold().args(["doctor"]).output().unwrap();
    let doc = String::from_utf8_lossy(&doctor.stdout).into_owned()
        + &String::from_utf8_lossy(&doctor.stderr);
    let line = doc
        .lines()
        .find(|l| l.contains("cgroup v2 delegation"))
        .unwrap_or_else(|| panic!("{doc}"))
        .to_owned();
    if cgroup_v2_delegated() {
        // Delegated controllers are necessary, not sufficient (writability):
        // whichever was chosen must be named consistently.
        let m = v["limits_mechanism"].as_str().unwrap().to_owned();
        assert!(m == "cgroup-v2" || m == "fallback", "{v}");
        assert!(err.contains(&format!("enforced by {m}")), "{err}");
    } else {
        // This machine: hybrid cgroups, the unified tree has no controllers.
        assert_eq!(v["limits_mechanism"], "fallback", "{v}");
        assert!(err.contains("enforced by fallback"), "{err}");
        assert!(err.contains("pid-namespace supervisor"), "{err}");
        assert!(line.contains("limits use the fallback"), "{line}");
        // What the fallback cannot charge is said, in doctor and the report.
        assert!(line.contains("does not charge kernel memory"), "{line}");
        assert!(
            v["limits_uncharged"]
                .as_str()
                .is_some_and(|u| u.contains("detached SysV shm")),
            "{v}"
        );
    }
}

#[test]
fn require_cgroup_refuses_the_fallback() {
    // An operator who will not accept what the fallback cannot charge sets
    // limits.require_cgroup; without delegated cgroup v2 nothing runs.
    let (d, p) = user_policy("strict", "memory = \"64M\"\nrequire_cgroup = true", "");
    let out = exec(
        &["--policy", &p],
        &["/bin/probe", "create-file", "/tmp/ran"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    if cgroup_v2_delegated() {
        return; // Refused only when the cgroup set-up fails; not this machine.
    }
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ok"), "ran");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("the policy requires cgroup v2 limits (limits.require_cgroup)"),
        "{err}"
    );
    // Off (the default), the same machine runs the job.
    let p = policy(d.path(), "loose", "memory = \"64M\"", "");
    sh_ok(&["--policy", &p], "true");
}

#[test]
fn bad_limit_values_name_the_field() {
    let d = user_dir();
    for (toml, field) in [
        ("memory = \"1K\"", "limits.memory"),
        ("pids = 2", "limits.pids"),
        ("cpu_time = \"1.5s\"", "cpu_time"),
        ("log_bytes = \"100\"", "limits.log_bytes"),
    ] {
        let p = policy(d.path(), "bad", toml, "");
        assert_policy_refused_naming(&p, &[field]);
        let out = exec(&["--policy", &p], &["/bin/true"]);
        assert_eq!(out.status.code(), Some(125), "{toml}");
    }
}
