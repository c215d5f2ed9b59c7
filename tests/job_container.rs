//! One container per job, from inside: `pinfold run` on the probe image
//! as the unprivileged test user. Every step after the first runs in the
//! same container as the first (same pid and mount namespaces, /tmp
//! kept), and still sees the sandbox `pinfold exec` gives a single
//! command; what a step leaves behind outside its writable paths (a
//! daemon, SysV IPC, a lowered limit on init) does not reach the next
//! step; the job's limits count every step together.

mod common;

use anyhow::Result;
use common::{PROBES, probe_image};

/// A job file on the probe image with `steps` (YAML list items) and
/// `extra` top-level keys, run with `pinfold run` in a fresh directory the
/// test user owns; asserts it exited `code` and returns its stdout +
/// stderr.
#[track_caller]
fn run_job(steps: &str, extra: &str, code: i32) -> Result<String> {
    let d = common::user_dir();
    let dir = d.path();
    std::fs::write(
        dir.join("job.yaml"),
        format!("image: {}\n{extra}steps:\n{steps}", probe_image()),
    )?;
    common::host_sh(&format!("chmod -R a+rwX '{}'", dir.display()));
    let o = common::pinfold()
        .env("PINFOLD_HOME", dir.join("home"))
        .env("PINFOLD_ALLOW_POLICIES", "untrusted")
        .current_dir(dir)
        .args(["run", "job.yaml"])
        .output()?;
    let log = common::output_text(&o);
    assert_eq!(o.status.code(), Some(code), "steps:\n{steps}\n{log}");
    Ok(log)
}

/// Runs the job as [`run_job`] does; asserts it succeeded and that its
/// second step printed `want`.
#[track_caller]
fn assert_second_step_says(steps: &str, extra: &str, want: &str) -> Result<()> {
    let log = run_job(steps, extra, 0)?;
    assert!(step_log(&log, 2).contains(want), "{log}");
    Ok(())
}

/// The part of a `pinfold run` log between step `n`'s header and the next.
fn step_log(log: &str, n: usize) -> &str {
    let start = log
        .find(&format!("==> step {n}/"))
        .unwrap_or_else(|| panic!("no step {n}: {log}"));
    let rest = &log[start..];
    let end = rest[1..].find("\n==> step ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

#[test]
fn a_later_step_sees_the_sandbox_and_nothing_a_step_left_but_its_files() -> Result<()> {
    let log = run_job(
        &format!(
            "  - name: leave things behind\n    run: |\n      setsid sh -c 'echo $$ > /tmp/daemon; exec sleep 1000' </dev/null >/dev/null 2>&1 &\n      while [ ! -s /tmp/daemon ]; do sleep 0.01; done\n      /bin/probe shm-leave\n      /bin/probe mq-leave || echo mq-refused\n      echo kept > /tmp/kept\n      readlink /proc/self/ns/pid > /tmp/ns; readlink /proc/self/ns/mnt >> /tmp/ns\n      grep -c . /proc/sysvipc/shm\n  - name: probe\n    run: |\n      for p in {PROBES}; do /bin/probe $p; done\n      grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status\n      cat /tmp/kept\n      (readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt) | cmp - /tmp/ns && echo same-namespaces\n      test -d /proc/$(cat /tmp/daemon) && echo daemon-alive || echo daemon-gone\n      echo sysv-left=$(($(grep -c . /proc/sysvipc/shm) - 1))\n      /bin/probe mq-check\n      echo init=$(cat /proc/1/comm)\n"
        ),
        "",
        0,
    )?;
    let first = step_log(&log, 1);
    // The first step did make a SysV segment (header + 1 line).
    assert!(first.lines().any(|l| l == "2"), "{first}");
    // A POSIX message queue would outlive it too, but the step cannot
    // make one: opening the mqueue file system's files is a file open that
    // no Landlock rule allows.
    assert!(
        first.contains("mq_open: Permission denied") && first.contains("mq-refused"),
        "{first}"
    );
    let second = step_log(&log, 2);
    common::assert_step_sandboxed(second, PROBES);
    for want in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        // The job's files stay, in the same container...
        "kept",
        "same-namespaces",
        // ...and nothing else does.
        "daemon-gone",
        "sysv-left=0",
        "mq-gone",
        // The runner's job container is the lean binary's.
        "init=pinfold-exec",
    ] {
        assert!(second.contains(want), "{want}: {second}");
    }
    Ok(())
}

/// Landlock holds in a later step too: under `untrusted`, which refuses
/// TCP by Landlock's network rules, the second step cannot use loopback TCP.
#[test]
fn landlock_holds_in_a_later_step() -> Result<()> {
    assert_second_step_says(
        "  - name: first\n    run: echo first\n  - name: second\n    run: /bin/probe tcp-loopback\n",
        "policy: untrusted\n",
        "tcp-loopback: refused",
    )
}

/// The attack: a step lowers a limit on PID 1 (prlimit needs no
/// privilege against a process of the same uid), which every later step
/// would inherit from the init that forks it. The step that did it fails,
/// naming what changed, and the job stops there.
#[test]
fn a_step_that_changes_init_fails_and_stops_the_job() -> Result<()> {
    let attacks = [
        ("resource limits", "/bin/probe prlimit-init"),
        ("scheduling priority", "renice -n 19 -p 1"),
        ("scheduling priority", "/bin/probe sched-init"),
    ];
    for (what, attack) in attacks {
        // The sandbox refuses the step (exit 125): the job ends in error.
        let log = run_job(
            &format!(
                "  - name: attack\n    run: {attack} || true\n  - name: next\n    run: echo next-ran nofile=$(ulimit -n) nice=$(cut -d' ' -f19 /proc/self/stat)\n"
            ),
            "",
            125,
        )?;
        assert!(!log.contains("next-ran"), "{attack}: {log}");
        assert!(
            log.contains(&format!("the step changed init's {what}")),
            "{attack}: {log}"
        );
        assert!(log.contains("attack finished: exit 125"), "{attack}: {log}");
    }
    Ok(())
}

/// Narrowed CPUs are the one change to init a step undoes itself: each
/// step takes init's CPUs as they were when the job began.
#[test]
fn a_step_that_narrows_init_cpus_does_not_narrow_the_next() -> Result<()> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Ok(()); // narrowing to CPU 0 changes nothing on one CPU
    }
    assert_second_step_says(
        "  - name: narrow\n    run: |\n      taskset -p $$ | sed 's/.*: //' > /tmp/mask\n      taskset -p 1 1\n  - name: next\n    run: |\n      test \"$(taskset -p $$ | sed 's/.*: //')\" = \"$(cat /tmp/mask)\" && echo cpus-as-before\n",
        "",
        "cpus-as-before",
    )
}

/// limits.memory counts the whole job: 40 MiB that step 1 leaves in /tmp
/// and 40 MiB that step 2 allocates are over a 64 MiB limit together,
/// though neither is alone.
#[test]
fn the_memory_limit_counts_every_step_of_the_job() -> Result<()> {
    let log = run_job(
        "  - name: fill tmp\n    run: dd if=/dev/zero of=/tmp/fill bs=1M count=40 2>/dev/null && echo filled\n  - name: allocate\n    run: /bin/probe mem shared-anon 40 && sleep 2 && echo survived\n",
        "limits: { memory: 64M }\n",
        1,
    )?;
    assert!(log.contains("filled"), "{log}");
    assert!(!log.contains("survived"), "{log}");
    assert!(
        log.contains("step allocate: job killed: memory limit 64M exceeded"),
        "{log}"
    );
    Ok(())
}
