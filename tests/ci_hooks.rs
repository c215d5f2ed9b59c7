//! The Buildkite agent hook and the Woodpecker local-backend wrapper, run
//! as their agents run them: Buildkite's `hooks/command` sourced by bash in
//! the checkout with the job's environment (BUILDKITE_COMMAND,
//! BUILDKITE_BUILD_CHECKOUT_PATH, ...), Woodpecker's `pinfold-sh` called as
//! `pinfold-sh -e -c SCRIPT` in the workspace with the step's environment
//! (CI_WORKSPACE, ...), after the `-c` probe the local backend makes of a
//! shell it does not know (pipeline/backend/local/command.go). Neither agent can be installed here (not in Debian,
//! no network beyond the package registries), so the tests replay those
//! calls. Each job also brings a hostile environment: a PINFOLD_POLICY and
//! a PINFOLD_POLICY_PATH whose `untrusted.toml` is writable, which the
//! operator's settings must override.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn template(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("ci-templates")
        .join(path)
}

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    /// A runner host: a checkout with an input file and a hostile policy
    /// directory in it, and the template `file` installed beside an
    /// operator settings file (`settings` is its name).
    fn new(file: &str, settings: &str) -> Host {
        let dir = user_dir();
        let d = dir.path();
        std::fs::create_dir_all(d.join("checkout/evil")).unwrap();
        std::fs::create_dir_all(d.join("installed")).unwrap();
        std::fs::write(d.join("checkout/input.txt"), "from the checkout\n").unwrap();
        std::fs::create_dir_all(d.join("host-secret")).unwrap();
        std::fs::write(d.join("host-secret/key"), "host secret\n").unwrap();
        std::fs::create_dir_all(d.join("checkout/bin")).unwrap();
        let fake = d.join("checkout/bin/pinfold");
        std::fs::write(&fake, "#!/bin/sh\necho ran-the-jobs-pinfold-on-the-host\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut evil = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/untrusted.toml"),
        )
        .unwrap();
        evil = evil.replace("rootfs_writable = false", "rootfs_writable = true");
        std::fs::write(d.join("checkout/evil/untrusted.toml"), evil).unwrap();
        let name = Path::new(file).file_name().unwrap();
        std::fs::copy(template(file), d.join("installed").join(name)).unwrap();
        std::fs::write(
            d.join("installed").join(settings),
            format!(
                "PINFOLD_SHELL_IMAGE={}\nPINFOLD_POLICY=untrusted\nPINFOLD_HOME={}\nPINFOLD_BIN={}\n",
                probe_image(),
                d.join("pinfold-home").display(),
                fixtures().pinfold.display()
            ),
        )
        .unwrap();
        if let Some((uid, gid)) = fixtures().user {
            run_ok(
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{uid}:{gid}"))
                    .arg(d),
                "chown",
            );
        }
        Host { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `cmd` as the test user in the checkout, with the agent's
    /// environment and the job's hostile one.
    fn run(&self, mut cmd: Command, vars: &[(&str, String)]) -> Output {
        let f = fixtures();
        cmd.env_clear()
            .env("HOME", self.dir.path())
            .env("PINFOLD_POLICY", "trusted")
            .env("PINFOLD_POLICY_PATH", self.path("checkout/evil"))
            // Host directories to bind, and a `pinfold` of its own first
            // in PATH.
            .env("GITHUB_WORKSPACE", self.path("host-secret"))
            .env("RUNNER_TEMP", self.path("host-secret"))
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin",
                    self.path("checkout/bin").display()
                ),
            )
            .current_dir(self.path("checkout"));
        for (k, v) in vars {
            cmd.env(k, v);
        }
        if let Some((uid, gid)) = f.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.output().unwrap()
    }
}

/// What every job runs: reads the checkout, writes into it, tries the
/// rootfs and a mount.
const JOB: &str = "cat input.txt; echo built > out.txt; (touch /etc/x 2>/dev/null && echo rootfs-writable) || echo rootfs-read-only; /bin/probe mount; cat \"$GITHUB_WORKSPACE/key\" 2>/dev/null || echo no-host-dir";

#[track_caller]
fn assert_sandboxed(h: &Host, out: &Output) {
    let log = output_text(out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("from the checkout"), "{log}");
    // The operator's `untrusted`, not the job's file of that name.
    assert!(log.contains("rootfs-read-only"), "{log}");
    assert!(log.contains("mount: refused"), "{log}");
    // Not the job's pinfold, and no host directory the job named.
    assert!(!log.contains("ran-the-jobs-pinfold"), "{log}");
    assert!(
        log.contains("no-host-dir") && !log.contains("host secret"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(h.path("checkout/out.txt")).unwrap(),
        "built\n"
    );
}

#[test]
fn buildkites_command_hook_runs_the_step_in_pinfold() {
    let h = Host::new("buildkite/hooks/command", "pinfold.env");
    let hook = h.path("installed/command");
    let checkout = h.path("checkout").display().to_string();
    // The agent sources the hook in a bash of its own.
    let bk = |command: &str| {
        let mut c = Command::new("bash");
        c.arg("-c").arg(". \"$0\"").arg(&hook);
        h.run(
            c,
            &[
                ("BUILDKITE", "true".into()),
                ("BUILDKITE_COMMAND", command.into()),
                ("BUILDKITE_BUILD_CHECKOUT_PATH", checkout.clone()),
                ("BUILDKITE_JOB_ID", "0190-job".into()),
                ("BUILDKITE_BUILD_NUMBER", "7".into()),
            ],
        )
    };
    assert_sandboxed(&h, &bk(JOB));
    let out = bk("echo job=$BUILDKITE_JOB_ID; exit 7");
    let log = output_text(&out);
    assert_eq!(out.status.code(), Some(7), "{log}");
    assert!(log.contains("job=0190-job"), "{log}");
}

#[test]
fn woodpeckers_local_backend_runs_the_step_in_pinfold() {
    let h = Host::new("woodpecker/pinfold-sh", "pinfold-sh.env");
    let checkout = h.path("checkout").display().to_string();
    let wp = |script: &str| {
        let mut c = Command::new(h.path("installed/pinfold-sh"));
        c.args(["-e", "-c", script]);
        h.run(
            c,
            &[
                ("CI", "woodpecker".into()),
                ("CI_WORKSPACE", checkout.clone()),
                ("CI_PIPELINE_NUMBER", "3".into()),
            ],
        )
    };
    // The backend first probes a shell it does not know by name.
    let mut c = Command::new(h.path("installed/pinfold-sh"));
    c.args([
        "-c",
        r#"x=1 && [ "$x" = "1" ] && command -v test >/dev/null && printf ok"#,
    ]);
    let probe = h.run(c, &[("CI_WORKSPACE", checkout.clone())]);
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout),
        "ok",
        "{}",
        output_text(&probe)
    );
    assert_sandboxed(&h, &wp(JOB));
    // -e: the first failing command ends the script with its status.
    let out = wp("echo n=$CI_PIPELINE_NUMBER\nfalse\necho not-reached");
    let log = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("n=3") && !log.contains("not-reached"));
}

/// The example pipelines pass the schemas check-jsonschema ships.
#[test]
fn the_example_pipelines_are_valid() {
    for (schema, file) in [
        ("vendor.buildkite", "buildkite/pipeline.yml"),
        ("vendor.woodpecker-ci", "woodpecker/.woodpecker.yml"),
    ] {
        let out = check_jsonschema(schema, &template(file));
        assert!(out.status.success(), "{file}: {}", output_text(&out));
    }
}
