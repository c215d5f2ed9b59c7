//! `pinfold gha-hook` through `ci-templates/github/pinfold-hook.js`, with
//! the GitHub Actions runner's side of the container-hook contract played
//! exactly: each call runs the hook with node, as the runner runs a `.js`
//! hook, with one line of JSON on stdin built from `tests/fixtures/gha/`
//! (the field names of the runner's `HookInput.cs`), a response file the
//! runner created empty, the `state` of the last response passed back, the
//! job's `prependPath` at the front of the hook's PATH (the runner's
//! `ScriptHandler` puts it there), and the runner's cancel: SIGINT to the
//! hook's pid, then SIGTERM, then SIGKILL. No Actions runner can be
//! installed here (it needs GitHub to register), so this harness is the
//! runner; `ci-templates/github/README.md` says how a real one is
//! configured.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One runner with its directories, and the job it runs.
struct Runner {
    /// PINFOLD_HOME of the hook (job directories in gha/).
    home: tempfile::TempDir,
    /// The runner's own directory (`_work`, `externals`).
    dir: tempfile::TempDir,
    /// The `state` of the last response that had one.
    state: Value,
    /// The job's PATH entries (GITHUB_PATH), most recent first.
    prepend: Vec<String>,
    /// The operator's environment for the hook (the runner's .env).
    env: Vec<(String, String)>,
    /// Calls so far, for unique file names.
    n: u32,
}

impl Runner {
    fn new() -> Runner {
        let r = Runner {
            home: user_dir(),
            dir: user_dir(),
            state: Value::Null,
            prepend: Vec::new(),
            // The test image is an OCI layout on this host, which a job may
            // name only where the operator allows it.
            env: vec![("PINFOLD_GHA_ALLOW_LOCAL_IMAGES".into(), "true".into())],
            n: 0,
        };
        for d in [
            "_work/_temp/_runner_hook_responses",
            "_work/_temp/_runner_file_commands",
            "_work/_temp/_github_home",
            "_work/_temp/_github_workflow",
            "_work/_actions",
            "_work/_tool",
            "_work/repo/repo",
            "externals/node20/bin",
        ] {
            std::fs::create_dir_all(r.dir.path().join(d)).unwrap();
        }
        r.chown();
        r
    }

    /// A runner whose job on the probe image has been through prepare_job,
    /// as every step finds it.
    #[track_caller]
    fn prepared() -> Runner {
        let mut r = Runner::new();
        ok(&r.prepare(probe_image()).0, "prepare_job");
        r
    }

    /// The runner's files belong to the runner's user (the test user).
    fn chown(&self) {
        if let Some((uid, gid)) = fixtures().user {
            chown_tree(self.dir.path(), uid, gid);
        }
    }

    fn host(&self, container_path: &str) -> PathBuf {
        let rel = container_path.strip_prefix("/__w/").expect("under /__w");
        self.dir.path().join("_work").join(rel)
    }

    /// The call `command` from its fixture, filled in as the runner does.
    fn input(&mut self, command: &str, image: &str) -> (Value, PathBuf) {
        self.n += 1;
        let guid = format!("0000000{}-aaaa-bbbb-cccc-dddddddddddd", self.n);
        let text =
            std::fs::read_to_string(repo().join(format!("tests/fixtures/gha/{command}.json")))
                .unwrap()
                .replace("@RUNNER@", &self.dir.path().to_string_lossy())
                .replace("@IMAGE@", image)
                .replace("@GUID@", &guid);
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["state"] = self.state.clone();
        if command == "run_script_step" {
            v["args"]["prependPath"] = json!(self.prepend);
        }
        let response = PathBuf::from(v["responseFile"].as_str().unwrap());
        (v, response)
    }

    /// Starts the hook as the runner does: `node HOOK.js`, the JSON on
    /// stdin as one line, the job's PATH entries first in its PATH.
    fn spawn(&self, input: &Value, response: &Path) -> Child {
        // The runner creates the response file empty before each call.
        std::fs::write(response, "").unwrap();
        self.chown();
        let f = fixtures();
        let mut path: Vec<String> = self
            .prepend
            .iter()
            .map(|p| {
                p.strip_prefix("/__w/")
                    .map(|_| self.host(p).to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.clone())
            })
            .collect();
        path.push("/usr/local/bin:/usr/bin:/bin".into());
        let mut c = Command::new("/usr/bin/node");
        c.arg(repo().join("ci-templates/github/pinfold-hook.js"))
            .env_clear()
            .env("PATH", path.join(":"))
            .env("HOME", &f.root)
            .env("PINFOLD_HOME", self.home.path())
            .env("PINFOLD_BIN", &f.pinfold)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = f.user {
            std::os::unix::process::CommandExt::uid(&mut c, uid);
            std::os::unix::process::CommandExt::gid(&mut c, gid);
        }
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", serde_json::to_string(input).unwrap()).unwrap();
        drop(stdin);
        child
    }

    /// One call; the response (the runner keeps its `state`).
    fn call(
        &mut self,
        command: &str,
        image: &str,
        edit: impl FnOnce(&mut Value),
    ) -> (Output, Value) {
        let (mut v, response) = self.input(command, image);
        edit(&mut v);
        let out = self.spawn(&v, &response).wait_with_output().unwrap();
        let text = std::fs::read_to_string(&response).unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !body["state"].is_null() {
            self.state = body["state"].clone();
        }
        (out, body)
    }

    fn prepare(&mut self, image: &str) -> (Output, Value) {
        self.call("prepare_job", image, |_| {})
    }

    /// A `run:` step: the script written where the runner writes it, run
    /// with `sh -e`, with `env` added to the step's environment.
    fn step(&mut self, script: &str, env: &[(&str, &str)]) -> Output {
        self.step_child(script, env).wait_with_output().unwrap()
    }

    fn step_child(&mut self, script: &str, env: &[(&str, &str)]) -> Child {
        let (mut v, response) = self.input("run_script_step", "");
        let path = v["args"]["entryPointArgs"][1].as_str().unwrap().to_string();
        std::fs::write(self.host(&path), script).unwrap();
        for (k, val) in env {
            v["args"]["environmentVariables"][*k] = json!(val);
        }
        self.spawn(&v, &response)
    }

    fn cleanup(&mut self) -> Output {
        self.call("cleanup_job", "", |_| {}).0
    }

    fn job_dir(&self) -> PathBuf {
        self.home
            .path()
            .join("gha")
            .join(self.state["jobId"].as_str().unwrap_or("none"))
    }

    /// After cleanup: the job's directory is gone and no process names it.
    fn assert_nothing_left(&self) {
        assert_job_gone(&self.job_dir());
    }

    /// The runner's last call, cleanup_job: it succeeds and leaves nothing.
    #[track_caller]
    fn cleanup_leaves_nothing(&mut self) {
        ok(&self.cleanup(), "cleanup_job");
        self.assert_nothing_left();
    }
}

/// A test that fails half-way still stops the job's keeper.
impl Drop for Runner {
    fn drop(&mut self) {
        if self.state["jobId"].is_string() {
            let _ = self.cleanup();
        }
    }
}

/// A whole job: prepare_job, three `run:` steps sharing /__w, the job
/// container's layer and environment, a failing step, and cleanup_job.
#[test]
fn a_job_runs_its_steps_in_one_job_container_that_persists() {
    let mut r = Runner::new();
    // The operator's policy with a writable layer, to see it persist.
    r.env.push(("PINFOLD_POLICY".into(), "default".into()));
    let (out, resp) = r.prepare(probe_image());
    let log = ok(&out, "prepare_job");
    assert!(log.contains("job container ready: policy default"), "{log}");
    assert_eq!(resp["isAlpine"], false, "{resp}");
    assert!(resp["state"]["jobId"].is_string(), "{resp}");
    assert!(
        resp["context"]["container"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("pinfold-")),
        "{resp}"
    );
    // Step 1: a checkout and a tool install; an output for later steps.
    let out = r.step(
        "pwd; echo 'int main;' > main.c; echo from-step-1 > /etc/marker; \
         mkdir -p /__w/_tool/hello/bin; printf '#!/bin/sh\\necho hello-tool\\n' > /__w/_tool/hello/bin/hello; \
         chmod +x /__w/_tool/hello/bin/hello; echo home > $HOME/.rc; echo greeting=hi >> \"$GITHUB_OUTPUT\"",
        &[],
    );
    let log = ok(&out, "step 1");
    assert!(log.contains("/__w/repo/repo"), "{log}");
    // What the runner reads back, on the host.
    let outputs = std::fs::read_dir(r.host("/__w/_temp/_runner_file_commands"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(outputs.contains("greeting=hi"), "{outputs}");
    assert!(r.host("/__w/repo/repo/main.c").exists());
    // Step 2: the tool by GITHUB_PATH, the files of step 1, both
    // environments.
    r.prepend = vec!["/__w/_tool/hello/bin".into()];
    let out = r.step(
        "hello; cat main.c /etc/marker $HOME/.rc; echo \"$CONTAINER_VAR $STEP_VAR\"",
        &[("STEP_VAR", "from-step-env")],
    );
    let log = ok(&out, "step 2");
    for want in [
        "hello-tool",
        "int main;",
        "from-step-1",
        "home",
        "from-container-env from-step-env",
    ] {
        assert!(log.contains(want), "{want}: {log}");
    }
    // Step 3: the probe sees the sandbox; the runner's externals are
    // read-only and the Docker socket is not there.
    let out = r.step(
        &format!(
            "for p in {PROBES}; do /bin/probe $p; done; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; \
             (touch /__e/x) 2>/dev/null && echo externals-writable || echo externals-read-only; \
             test -e /var/run/docker.sock && echo docker-socket || echo no-docker-socket"
        ),
        &[],
    );
    let log = ok(&out, "step 3");
    assert_step_sandboxed(&log, PROBES);
    assert!(log.contains("externals-read-only"), "{log}");
    assert!(log.contains("no-docker-socket"), "{log}");
    // A failing step fails with its own code.
    let out = r.step("echo before; exit 3", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("before"));
    r.cleanup_leaves_nothing();
}

/// What a workflow can ask of a Docker-backed runner and not of this one:
/// one line each, and nothing made.
#[test]
fn what_this_runner_does_not_do_is_refused_with_one_line() {
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, &str)] = &[
        (
            "services",
            |v| v["args"]["services"] = json!([v["args"]["container"].clone()]),
            "services:",
        ),
        (
            "volumes",
            |v| v["args"]["container"]["userMountVolumes"] = json!([{"userProvidedValue": "/home:/x", "sourceVolumePath": "/home", "targetVolumePath": "/x", "readOnly": false}]),
            "volumes:",
        ),
        (
            "options",
            |v| v["args"]["container"]["createOptions"] = json!("--privileged"),
            "options:",
        ),
        (
            "ports",
            |v| v["args"]["container"]["portMappings"] = json!(["8080:80"]),
            "ports:",
        ),
        (
            "no container",
            |v| v["args"]["container"] = Value::Null,
            "container: IMAGE@sha256",
        ),
        (
            "a tag",
            |v| v["args"]["container"]["image"] = json!("registry.example/team/builder:latest"),
            "--allow-tag",
        ),
    ];
    let mut r = Runner::new();
    for (what, edit, want) in cases {
        let (out, _) = r.call("prepare_job", probe_image(), edit);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.contains(want), "{what}: {err}");
    }
    // A file on the runner is not an image a job may name.
    r.env.clear();
    let (out, _) = r.call("prepare_job", probe_image(), |_| {});
    let err = text(&out.stderr);
    assert!(err.contains("names a file on the runner"), "{err}");
    assert!(
        !r.home.path().join("gha").exists()
            || std::fs::read_dir(r.home.path().join("gha"))
                .unwrap()
                .count()
                == 0
    );
    // Container actions.
    let (out, _) = r.call("run_container_step", "", |_| {});
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("Dockerfile action") && err.lines().count() == 1,
        "{err}"
    );
    // A state that names no job of this hook, or another directory.
    for state in [json!({"jobId": "../../etc"}), Value::Null] {
        r.state = state;
        let out = r.step("echo never", &[]);
        assert_refused_unrun(&out, 1, "never", "prepare_job");
    }
    r.state = Value::Null;
}

/// The runner's cancel: SIGINT to the hook's pid, then SIGTERM after
/// 7.5 s, then SIGKILL. The step, a setsid'd daemon included, ends; after
/// the harshest (the hook killed outright), cleanup_job leaves nothing.
#[test]
fn a_cancelled_step_leaves_nothing_after_cleanup() {
    for (signal, marker) in [(libc::SIGINT, "7101"), (libc::SIGKILL, "7109")] {
        let mut r = Runner::prepared();
        let mut child = r.step_child(&format!("setsid sleep {marker} & sleep {marker}"), &[]);
        let t = Instant::now();
        while processes_matching(&format!("sleep {marker}")).len() < 2 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the step did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let t = Instant::now();
        let status = child.wait().unwrap();
        assert!(!status.success());
        if signal == libc::SIGINT {
            assert!(
                t.elapsed() < Duration::from_secs(7),
                "the step outlived the runner's SIGINT wait"
            );
            let left = processes_matching(&format!("sleep {marker}"));
            assert!(left.is_empty(), "the step's processes are left: {left:?}");
        }
        ok(&r.cleanup(), "cleanup_job");
        let t = Instant::now();
        while !processes_matching(&format!("sleep {marker}")).is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "processes left after cleanup"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r.assert_nothing_left();
    }
}

/// The attack on a `.sh` hook: the runner finds the hook's `bash` on the
/// job's own GITHUB_PATH entries, on the host. A step writes a `bash` (and
/// a `node` and a `pinfold`) into the workspace and adds its host path to
/// GITHUB_PATH, as a job can learn it. The shipped `.js` hook runs with the
/// runner's node by absolute path and names pinfold by absolute path, so
/// none of them runs.
#[test]
fn a_jobs_path_entries_do_not_choose_what_runs_the_hook() {
    let mut r = Runner::prepared();
    let marker = r.dir.path().join("hijacked");
    let evil = format!("#!/bin/sh\necho hijacked > {}\n", marker.display());
    let mut script = String::from("mkdir -p /__w/evil; ");
    for name in [
        "bash",
        "sh",
        "node",
        "pinfold",
        "newuidmap",
        "newgidmap",
        "pasta",
    ] {
        script += &format!("printf '%s' '{evil}' > /__w/evil/{name}; chmod +x /__w/evil/{name}; ");
    }
    ok(&r.step(&script, &[]), "the attacking step");
    // The runner's PrependPath now holds the host path (the harness maps
    // /__w to it, as a job that knows the runner's directory would write).
    r.prepend = vec!["/__w/evil".into()];
    // The premise: the runner would start a .sh hook with this bash.
    let found = std::env::split_paths(&r.host("/__w/evil"))
        .map(|d| d.join("bash"))
        .find(|p| p.exists());
    assert!(
        found.is_some(),
        "the attack's bash is not where the runner looks"
    );
    ok(&r.step("echo next-step", &[]), "the next step");
    r.cleanup_leaves_nothing();
    assert!(!marker.exists(), "the job's bash ran on the host");
}

/// A step swaps one of the runner's directories that every step gets
/// (`_work/_temp/_github_home`, at /github/home) for a symlink to the
/// runner's own directory, then for another directory: the next step must
/// not bind what it now names (the runner's credentials, its .env).
#[test]
fn a_step_cannot_swap_a_runner_directory_for_another_path() {
    let mut r = Runner::new();
    std::fs::write(r.dir.path().join(".credentials"), "RUNNER-SECRET").unwrap();
    r.chown();
    ok(&r.prepare(probe_image()).0, "prepare_job");
    ok(
        &r.step(
            "mv /__w/_temp/_github_home /__w/_temp/_gh_old && ln -s ../.. /__w/_temp/_github_home",
            &[],
        ),
        "the swapping step",
    );
    let out = r.step("cat /github/home/.credentials; echo next-step-ran", &[]);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(
        !so.contains("RUNNER-SECRET"),
        "the step read the runner's credentials: {so}"
    );
    assert_eq!(out.status.code(), Some(1), "{so}{se}");
    assert!(!so.contains("next-step-ran"), "{so}");
    assert!(
        se.contains("_github_home") && se.lines().count() == 1,
        "{se}"
    );
    r.cleanup_leaves_nothing();
    // Or a directory of the job's own in its place, in another job.
    let mut r = Runner::prepared();
    ok(
        &r.step(
            "mv /__w/_temp/_github_home /__w/_temp/_gh_old && mkdir /__w/_temp/_github_home",
            &[],
        ),
        "the second swap",
    );
    let out = r.step("echo next-step-ran", &[]);
    assert_refused_unrun(&out, 1, "next-step-ran", "was replaced");
    r.cleanup_leaves_nothing();
}

/// The job's image itself attacks before any step: its /bin/sh (which
/// prepare_job runs to look at the image) replaces the response file the
/// runner created with a symlink to a file of the runner's, which the
/// hook would then overwrite on the host.
#[test]
fn the_jobs_image_cannot_redirect_the_response_file() {
    let evil = umoci_image(
        "evil-sh-image",
        r#"mkdir -p $r/bin $r/tmp $r/etc
cp "$(command -v busybox)" $r/bin/busybox
printf '#!/bin/busybox sh\nfor f in /__w/_temp/_runner_hook_responses/*.json; do [ -f "$f" ] && /bin/busybox rm -f "$f" && /bin/busybox ln -s ../../../victim "$f"; done\nexec /bin/busybox sh "$@"\n' > $r/bin/sh
chmod 755 $r/bin/sh
chmod 1777 $r/tmp"#,
    );
    let mut r = Runner::new();
    let victim = r.dir.path().join("victim");
    std::fs::write(&victim, "ORIGINAL").unwrap();
    r.chown();
    let (out, resp) = r.prepare(&evil);
    ok(&out, "prepare_job");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "ORIGINAL");
    assert!(resp["state"]["jobId"].is_string(), "{resp}");
    r.cleanup_leaves_nothing();
}

/// A pinned image is the job's only under the name it gives: the same
/// digest cached under another name (a local image, or a private one the
/// operator pulled) is pulled afresh under the job's name, and a registry
/// on this machine is refused unless the operator allows local sources.
#[test]
fn a_cached_digest_under_another_name_is_not_the_jobs() {
    let mut r = Runner::new();
    ok(
        &r.prepare(probe_image()).0,
        "prepare_job (caches the image)",
    );
    ok(&r.cleanup(), "cleanup_job");
    let digest = probe_image().rsplit_once('@').unwrap().1;
    // Port 1 on loopback: nothing listens, so a pull fails at once.
    let other = format!("127.0.0.1:1/private/app@{digest}");
    let (out, _) = r.prepare(&other);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        !text(&out.stdout).contains("(cached)"),
        "{}",
        text(&out.stdout)
    );
    r.env.retain(|(k, _)| k != "PINFOLD_GHA_ALLOW_LOCAL_IMAGES");
    let (out, _) = r.prepare(&other);
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("127.0.0.1:1") && e.contains("--allow-local-images"),
        "{e}"
    );
    r.state = Value::Null;
}

/// The example workflow is a valid GitHub workflow (check-jsonschema's
/// GitHub schema) and pins its container by digest.
#[test]
fn the_github_template_is_valid() {
    let wf = repo().join("ci-templates/github/workflow.yml");
    ok(
        &check_jsonschema("vendor.github-workflows", &wf),
        "check-jsonschema workflow.yml",
    );
    let text = std::fs::read_to_string(&wf).unwrap();
    assert!(
        text.contains("@sha256:"),
        "the example's container is not pinned"
    );
    let env = std::fs::read_to_string(repo().join("ci-templates/github/runner.env")).unwrap();
    for want in [
        "ACTIONS_RUNNER_CONTAINER_HOOKS=",
        "ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER=true",
    ] {
        assert!(env.lines().any(|l| l.starts_with(want)), "{want}");
    }
    assert!(env.contains("pinfold-hook.js"));
}
