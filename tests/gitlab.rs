//! `pinfold gitlab-driver` against GitLab Runner's side of the Custom
//! executor contract, played exactly: config_exec, then prepare_exec, then
//! run_exec SCRIPT STAGE for each stage in the runner's order
//! (common.BuildStage), then cleanup_exec, always; every call with the
//! runner's BUILD_FAILURE_EXIT_CODE and SYSTEM_FAILURE_EXIT_CODE (odd values
//! here, 37 and 73, so nothing can pass by hard-coding 1 and 2), the job's
//! variables as CUSTOM_ENV_*, config's job_env and BUILD_EXIT_CODE_FILE.
//! The job's script stage arrives as `build_script`, the name the Custom
//! executor still gives `step_script`. A cancel is what the
//! runner does on a job's cancel or timeout: SIGTERM to the stage's process
//! group, then SIGKILL. No GitLab Runner can be installed here (it is not in
//! Debian 12 and the network reaches only package registries), so this
//! harness is the runner; `ci-templates/gitlab/README.md` says how a real
//! one is configured.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BUILD: i32 = 37;
const SYSTEM: i32 = 73;

/// One job, as GitLab Runner drives it.
struct Runner {
    /// PINFOLD_HOME of the driver (job directories in gitlab/).
    home: PathBuf,
    _home: Option<tempfile::TempDir>,
    /// Where the runner writes each stage's script.
    scripts: tempfile::TempDir,
    /// The job's variables (CUSTOM_ENV_ prefixed on each call).
    vars: BTreeMap<String, String>,
    /// config's job_env.
    job_env: BTreeMap<String, String>,
    /// Extra arguments of prepare (the operator's).
    prepare_args: Vec<String>,
}

impl Runner {
    fn new(image: &str) -> Runner {
        let home = user_dir();
        let mut r = Runner::new_in(home.path(), image);
        r._home = Some(home);
        r
    }

    /// A job on the probe image that has been through config and prepare,
    /// as every stage after them finds it.
    #[track_caller]
    fn prepared() -> Runner {
        let mut r = Runner::new(probe_image());
        r.config();
        ok(&r.prepare(), "prepare");
        r
    }

    /// A job on a runner whose PINFOLD_HOME is `home`.
    fn new_in(home: &Path, image: &str) -> Runner {
        Runner {
            home: home.to_owned(),
            _home: None,
            scripts: user_dir(),
            vars: BTreeMap::from([
                ("CI_JOB_IMAGE".into(), image.into()),
                ("CI_JOB_ID".into(), "4242".into()),
                ("CI_PROJECT_DIR".into(), "/builds/group/project".into()),
                ("CI_JOB_TIMEOUT".into(), "3600".into()),
            ]),
            job_env: BTreeMap::new(),
            // The test images are OCI layouts on this host, which a job
            // may name only where the operator allows it.
            prepare_args: vec![
                "--policy".into(),
                "untrusted".into(),
                "--transfer-policy".into(),
                "default".into(),
                "--allow-local-images".into(),
            ],
        }
    }

    /// `pinfold gitlab-driver ARGS` with the environment the runner gives
    /// a driver stage.
    fn driver(&self, args: &[&str]) -> Command {
        let mut c = pinfold();
        c.env("PINFOLD_HOME", &self.home)
            .env("BUILD_FAILURE_EXIT_CODE", BUILD.to_string())
            .env("SYSTEM_FAILURE_EXIT_CODE", SYSTEM.to_string())
            .env("BUILD_EXIT_CODE_FILE", self.exit_code_file())
            .arg("gitlab-driver")
            .args(args);
        for (k, v) in &self.vars {
            c.env(format!("CUSTOM_ENV_{k}"), v);
        }
        c.envs(&self.job_env);
        c
    }

    /// Where the runner reads the script's own exit code.
    fn exit_code_file(&self) -> PathBuf {
        self.scripts.path().join("build_exit_code")
    }

    fn config(&mut self) -> serde_json::Value {
        let out = self.driver(&["config"]).output().unwrap();
        assert!(out.status.success(), "config: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for (k, val) in v["job_env"].as_object().unwrap() {
            self.job_env.insert(k.clone(), val.as_str().unwrap().into());
        }
        v
    }

    fn prepare(&self) -> Output {
        let mut args = vec!["prepare"];
        args.extend(self.prepare_args.iter().map(String::as_str));
        self.driver(&args).output().unwrap()
    }

    /// Writes the stage's script where the runner would and returns the
    /// `run` call.
    fn run_cmd(&self, stage: &str, script: &str) -> Command {
        let path = self.scripts.path().join(format!("script-{stage}"));
        std::fs::write(&path, script).unwrap();
        let mut c = self.driver(&["run"]);
        c.arg(&path).arg(stage);
        c
    }

    fn run(&self, stage: &str, script: &str) -> Output {
        self.run_cmd(stage, script).output().unwrap()
    }

    /// Runs a stage that must succeed; returns its stdout.
    #[track_caller]
    fn stage_ok(&self, stage: &str, script: &str) -> String {
        ok(&self.run(stage, script), stage)
    }

    fn cleanup(&self) -> Output {
        self.driver(&["cleanup"]).output().unwrap()
    }

    fn job_dir(&self) -> PathBuf {
        self.home
            .join("gitlab")
            .join(&self.job_env["PINFOLD_GITLAB_JOB"])
    }

    /// After cleanup: the job's directory is gone and no process names it.
    fn assert_nothing_left(&self) {
        assert_job_gone(&self.job_dir());
    }

    /// The runner's last call, cleanup: it succeeds and leaves nothing.
    #[track_caller]
    fn cleanup_leaves_nothing(&self) {
        ok(&self.cleanup(), "cleanup");
        self.assert_nothing_left();
    }
}

/// A test that fails half-way still stops the job's keeper.
impl Drop for Runner {
    fn drop(&mut self) {
        if self.job_env.contains_key("PINFOLD_GITLAB_JOB") {
            let _ = self.cleanup();
        }
    }
}

/// The runner's stage order for a job with artifacts and a cache, each
/// stage's script standing in for what the runner generates. The job's
/// writable layer and /builds persist from stage to stage.
#[test]
fn a_job_runs_every_stage_in_one_sandbox_that_persists() {
    let mut r = Runner::new(probe_image());
    // The stand-in for the host's gitlab-runner binary, which the cache
    // and artifact stages run.
    let helper = r.scripts.path().join("gitlab-runner");
    std::fs::write(&helper, "#!/bin/sh\necho \"gitlab-runner $*\"\n").unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    r.prepare_args.push("--gitlab-runner".into());
    r.prepare_args.push(helper.to_string_lossy().into_owned());
    let cfg = r.config();
    assert_eq!(cfg["builds_dir"], "/builds");
    assert_eq!(cfg["builds_dir_is_shared"], false);
    assert_eq!(cfg["driver"]["name"], "pinfold");
    assert!(cfg["cache_dir"].is_string() && cfg["hostname"].is_string());
    let prep = r.prepare();
    let log = ok(&prep, "prepare");
    assert!(log.contains("sandbox ready: policy untrusted"), "{log}");
    // The stages call it by name, as gitlab-runner's scripts do.
    let h = "gitlab-runner";
    let stages: &[(&str, String, &str)] = &[
        ("prepare_script", "echo prepared".into(), "prepared"),
        (
            "get_sources",
            "mkdir -p /builds/group/project && cd /builds/group/project && echo 'int main;' > main.c && echo from-sources > /etc/marker && echo fetched".into(),
            "fetched",
        ),
        ("restore_cache", format!("{h} cache-extractor --file /cache/x.zip"), "gitlab-runner cache-extractor"),
        ("download_artifacts", format!("{h} artifacts-downloader"), "gitlab-runner artifacts-downloader"),
        (
            "build_script",
            format!(
                "cd /builds/group/project && cat main.c /etc/marker; for p in {PROBES}; do /bin/probe $p; done; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; \
                 test -x /usr/local/bin/gitlab-runner && echo helper-visible || echo helper-hidden; \
                 (echo x >> /.pinfold-gitlab/script) 2>/dev/null && echo script-writable || echo script-read-only; \
                 echo built > out.txt; echo step-done"
            ),
            "step-done",
        ),
        ("after_script", "cat /builds/group/project/out.txt".into(), "built"),
        ("archive_cache", format!("{h} cache-archiver --file /cache/x.zip"), "gitlab-runner cache-archiver"),
        ("upload_artifacts_on_success", format!("{h} artifacts-uploader"), "gitlab-runner artifacts-uploader"),
        ("cleanup_file_variables", "echo cleaned".into(), "cleaned"),
    ];
    let mut step_log = String::new();
    for (stage, script, want) in stages {
        let log = r.stage_ok(stage, script);
        assert!(log.contains(want), "{stage}: {log}");
        if *stage == "build_script" {
            step_log = log;
        }
    }
    // What get_sources wrote, into /builds and into the image's /etc, is
    // there for build_script.
    assert!(
        step_log.contains("int main;") && step_log.contains("from-sources"),
        "{step_log}"
    );
    // The probe in build_script sees the sandbox.
    assert_step_sandboxed(&step_log, PROBES);
    // The runner's binary only where the runner's scripts call it (its
    // mount point stays in the writable layer, an empty file); the script
    // itself is read-only.
    assert!(step_log.contains("helper-hidden"), "{step_log}");
    assert!(step_log.contains("script-read-only"), "{step_log}");
    r.cleanup_leaves_nothing();
}

/// A failing script is the build's failure; the runner then runs
/// after_script and the failure stages, and cleanup.
#[test]
fn a_failing_script_exits_the_runners_build_failure_code() {
    let r = Runner::prepared();
    let out = r.run("build_script", "echo before; exit 3");
    assert_eq!(out.status.code(), Some(BUILD), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("before"));
    // The script's own code, for `allow_failure: exit_codes`.
    let code = || std::fs::read_to_string(r.exit_code_file()).unwrap();
    assert_eq!(code(), "3\n");
    r.stage_ok("after_script", "echo after");
    r.stage_ok("upload_artifacts_on_failure", "true");
    // A script that exits 125 itself (exec's own code for a broken sandbox)
    // is still the build's failure: the report tells them apart.
    let out = r.run("build_script", "exit 125");
    assert_eq!(out.status.code(), Some(BUILD), "{}", text(&out.stderr));
    assert_eq!(code(), "125\n");
    r.cleanup_leaves_nothing();
}

/// Which container a stage runs in: its pid namespace and init's start
/// time (a new container has both anew).
const WHICH: &str = "echo container=$(readlink /proc/self/ns/pid)-$(cut -d' ' -f22 /proc/1/stat)";

fn container_of(out: &Output) -> String {
    let log = text(&out.stdout);
    log.lines()
        .find_map(|l| l.strip_prefix("container="))
        .unwrap_or_else(|| panic!("no container line: {log}"))
        .to_string()
}

/// The stages of one kind share a job container, started by the first of
/// them and kept while the stages are of that kind; each stage is a step
/// in it, with nothing of the last stage still running. A transfer stage
/// (its own policy, the gitlab-runner binary) gets a container of its
/// own, and a failed stage ends its container: the next stage starts a
/// fresh one on the same job file system.
#[test]
fn stages_of_a_kind_share_a_job_container_and_start_clean() {
    let r = Runner::prepared();
    let daemon = "setsid sh -c 'echo $$ > /builds/daemon; exec sleep 1000' </dev/null >/dev/null 2>&1 & \
                  while [ ! -s /builds/daemon ]; do sleep 0.01; done";
    let first = r.run(
        "prepare_script",
        &format!("{WHICH}; {daemon}; echo started"),
    );
    assert!(ok(&first, "prepare_script").contains("started"));
    let a = container_of(&first);
    let second = r.run(
        "build_script",
        &format!("{WHICH}; test -d /proc/$(cat /builds/daemon) && echo daemon-alive || echo daemon-gone; cat /proc/1/comm"),
    );
    let log = ok(&second, "build_script");
    assert_eq!(container_of(&second), a, "{log}");
    assert!(log.contains("daemon-gone"), "{log}");
    assert!(log.contains("pinfold"), "init is pinfold's: {log}");
    let transfer = r.run("get_sources", &format!("{WHICH}; echo fetched > /builds/f"));
    let b = container_of(&transfer);
    assert_ne!(b, a, "{}", ok(&transfer, "get_sources"));
    let failed = r.run("build_script", &format!("{WHICH}; exit 3"));
    assert_eq!(
        failed.status.code(),
        Some(BUILD),
        "{}",
        text(&failed.stderr)
    );
    let c = container_of(&failed);
    assert!(c != a && c != b, "{c}");
    let after = r.run("after_script", &format!("{WHICH}; cat /builds/f"));
    let log = ok(&after, "after_script");
    assert!(log.contains("fetched"), "{log}");
    assert_ne!(container_of(&after), c, "{log}");
    r.cleanup_leaves_nothing();
}

/// The operator's memory limit holds for the stage's whole container: a
/// script that allocates past it fails the build, with the limit named in
/// the job's log, and the job goes on to after_script.
#[test]
fn a_stage_over_the_memory_limit_fails_the_build_and_says_why() {
    let mut r = Runner::new(probe_image());
    let policy = r.scripts.path().join("small.toml");
    std::fs::write(
        &policy,
        "description = \"small\"\n[limits]\nmemory = \"64M\"\n",
    )
    .unwrap();
    r.prepare_args[1] = policy.to_string_lossy().into_owned();
    r.config();
    ok(&r.prepare(), "prepare");
    let out = r.run(
        "build_script",
        "/bin/probe mem shared-anon 200; sleep 2; echo survived",
    );
    let log = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(BUILD),
        "{log} {}",
        text(&out.stderr)
    );
    assert!(!log.contains("survived"), "{log}");
    assert!(log.contains("memory limit 64M"), "{log}");
    r.stage_ok("after_script", "echo after");
    r.cleanup_leaves_nothing();
}

/// gitlab-runner retries prepare after a system failure: a second prepare
/// of the same job starts afresh, and its first keeper is gone.
#[test]
fn a_retried_prepare_starts_afresh() {
    let r = Runner::prepared();
    r.stage_ok("get_sources", "echo stale > /builds/f");
    let first = std::fs::read_to_string(r.job_dir().join("keeper.pid")).unwrap();
    ok(&r.prepare(), "retried prepare");
    let out = r.run("build_script", "cat /builds/f 2>/dev/null || echo fresh");
    assert!(text(&out.stdout).contains("fresh"), "{}", text(&out.stdout));
    // Gone, or a zombie not yet reaped (its command line is empty).
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", first.trim())).unwrap_or_default();
    assert!(cmdline.is_empty(), "the first keeper is still running");
    r.cleanup_leaves_nothing();
}

/// An image named by tag is refused before anything is made; with no
/// prepare, a stage is pinfold's failure, with one line saying why.
#[test]
fn an_unpinned_image_is_refused_with_the_build_failure_code() {
    let mut r = Runner::new("registry.example/team/builder:latest");
    r.config();
    let out = r.prepare();
    assert_eq!(out.status.code(), Some(BUILD), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no digest") && err.contains("--allow-tag"),
        "{err}"
    );
    assert!(!r.job_dir().exists());
    // A file on the runner is not an image a job may name (unless the
    // operator allows local images): refused without a word of the file
    // (here the harness's own exit-code file, holding a marker).
    std::fs::write(r.exit_code_file(), "secret-marker ".repeat(100)).unwrap();
    let mut r2 = Runner::new_in(&r.home, "unused");
    r2.prepare_args.retain(|a| a != "--allow-local-images");
    for image in [
        format!("oci-archive:{}", r.exit_code_file().display()),
        format!(
            "oci:{}@sha256:{}",
            r.scripts.path().display(),
            "0".repeat(64)
        ),
    ] {
        r2.vars.insert("CI_JOB_IMAGE".into(), image.clone());
        r2.config();
        let out = r2.prepare();
        assert_eq!(
            out.status.code(),
            Some(BUILD),
            "{image}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.contains("names a file on the runner"), "{err}");
        assert!(!err.contains("secret-marker") && !text(&out.stdout).contains("secret-marker"));
    }
    let out = r.run("build_script", "echo never");
    assert_refused_unrun(&out, SYSTEM, "never", "prepare_exec");
    r.cleanup_leaves_nothing();
}

/// A job cannot reach another job's sandbox. The job's own variables
/// override GitLab's predefined ones, so a job can claim another's
/// CI_JOB_ID: the driver keys jobs by the id config put in job_env, which
/// the runner sets without the CUSTOM_ENV_ prefix that every job variable
/// carries, and refuses any other id.
#[test]
fn a_job_cannot_reach_another_jobs_sandbox() {
    let victim = Runner::prepared();
    victim.stage_ok("get_sources", "echo token-of-the-victim > /builds/secret");
    // The same runner host and PINFOLD_HOME, the same CI_JOB_ID claimed.
    let mut attacker = Runner::new_in(&victim.home, probe_image());
    attacker.config();
    ok(&attacker.prepare(), "attacker's prepare");
    let out = attacker.run("build_script", "cat /builds/secret; ls /builds");
    assert!(
        !text(&out.stdout).contains("token-of-the-victim"),
        "{}",
        text(&out.stdout)
    );
    ok(&attacker.cleanup(), "attacker's cleanup");
    attacker.assert_nothing_left();
    // Forged ids in the runner's variable are refused outright.
    let victim_id = victim.job_env["PINFOLD_GITLAB_JOB"].clone();
    for id in ["../../etc", "4242", "", &victim_id.to_uppercase()] {
        attacker.job_env = BTreeMap::from([("PINFOLD_GITLAB_JOB".into(), id.into())]);
        let out = attacker.run("build_script", "cat /builds/secret");
        assert_eq!(
            out.status.code(),
            Some(SYSTEM),
            "{id}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stdout).contains("token"), "{id}");
    }
    victim.cleanup_leaves_nothing();
}

/// GitLab's cancel and timeout: SIGTERM to the stage's process group, and
/// SIGKILL when it lingers (here at once, the harshest case); and SIGKILL
/// to the driver's process alone, as a runner that kills only its child
/// would. The job's processes, a setsid'd daemon included, die with the
/// stage, and cleanup leaves nothing.
#[test]
fn a_cancelled_stage_leaves_nothing_after_cleanup() {
    for (signal, group) in [
        (libc::SIGTERM, true),
        (libc::SIGKILL, true),
        (libc::SIGKILL, false),
    ] {
        let r = Runner::prepared();
        let marker = format!("sleep 7{signal:02}{}", u8::from(group));
        let mut c = r.run_cmd(
            "build_script",
            &format!("setsid {marker} & {marker} & echo started; {marker}"),
        );
        c.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "started");
        // The three sleeps (one in a session of its own) are running.
        let t = Instant::now();
        while processes_matching(&marker).len() < 3 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(processes_matching(&marker).len(), 3);
        let pid = child.id() as i32;
        // SAFETY: kill(2) of the process (group) this test just made.
        unsafe { libc::kill(if group { -pid } else { pid }, signal) };
        let t = Instant::now();
        let status = child.wait().unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{signal}: {status:?}"
        );
        r.cleanup_leaves_nothing();
        let t = Instant::now();
        while !processes_matching(&marker).is_empty() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            processes_matching(&marker).is_empty(),
            "signal {signal} (group: {group}): the job's processes outlived cleanup"
        );
    }
}

/// gitlab-runner's cancel is SIGTERM first: the stage's script gets it
/// (its `trap` runs, within the driver's `--grace`), and the stage ends
/// as the build's failure.
#[test]
fn a_cancel_gives_the_script_its_sigterm_and_grace() {
    let r = Runner::prepared();
    let mut c = r.run_cmd(
        "build_script",
        "trap 'echo trapped; exit 7' TERM; echo started; sleep 100 & wait",
    );
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "started");
    let t = Instant::now();
    // SAFETY: kill(2) of the driver this test just started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(rest.contains("trapped"), "{rest}");
    assert_eq!(status.code(), Some(BUILD), "{rest}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    r.cleanup_leaves_nothing();
}

/// Without gitlab-runner's exit codes the driver says how it must be run.
#[test]
fn outside_gitlab_runner_the_driver_says_how_to_run_it() {
    let out = pinfold()
        .args(["gitlab-driver", "run", "/dev/null", "build_script"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("BUILD_FAILURE_EXIT_CODE is not set"), "{err}");
    // A bad [runners.custom] line is the runner's failure, not the job's.
    let r = Runner::new(probe_image());
    let out = r.driver(&["run", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(SYSTEM), "{}", text(&out.stderr));
}

fn template(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("ci-templates/gitlab")
        .join(name)
}

/// The template's files: the pipeline passes GitLab's schema (and a broken
/// one does not), the transfer policy loads, and config.toml calls each
/// stage of the driver that exists, with options prepare takes.
#[test]
fn the_gitlab_template_is_valid() {
    let ci = template(".gitlab-ci.yml");
    ok(
        &check_jsonschema("vendor.gitlab-ci", &ci),
        "check-jsonschema .gitlab-ci.yml",
    );
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join(".gitlab-ci.yml");
    let text = std::fs::read_to_string(&ci).unwrap();
    std::fs::write(&bad, text.replace("  script:", "  scrpt:")).unwrap();
    assert!(!check_jsonschema("vendor.gitlab-ci", &bad).status.success());

    ok(
        &pinfold()
            .args(["policy", "check"])
            .arg(template("gitlab-transfer.toml"))
            .output()
            .unwrap(),
        "policy check gitlab-transfer.toml",
    );

    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(template("config.toml")).unwrap()).unwrap();
    let runner = &cfg["runners"][0];
    assert_eq!(runner["executor"].as_str(), Some("custom"));
    let custom = &runner["custom"];
    for stage in ["config", "prepare", "run", "cleanup"] {
        assert_eq!(
            custom[format!("{stage}_exec").as_str()].as_str(),
            Some("/usr/bin/pinfold")
        );
        let args: Vec<&str> = custom[format!("{stage}_args").as_str()]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(&args[..2], ["gitlab-driver", stage]);
        // Each stage's arguments are ones the driver takes: --help with
        // them parses (and names the stage).
        let mut c = pinfold();
        c.args(&args).arg("--help");
        let help = ok(&c.output().unwrap(), stage);
        assert!(help.contains("Usage: pinfold gitlab-driver"), "{help}");
    }
}
