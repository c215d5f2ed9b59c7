//! The runner agent and `pinfold run` end to end: the real `pinfold server`
//! (as in tests/coordinator.rs) and real `pinfold agent` processes running
//! as the unprivileged test user, real jobs on a busybox OCI image built
//! with umoci and referenced as `oci:DIR@sha256:...`.

mod common;
#[path = "common/pty.rs"]
mod pty;
#[path = "common/server.rs"]
mod server;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinfold_api::wire::{JobInfo, JobState, SubmitRequest};
use pinfold_client::Client;

use common::{KillOnDrop, busybox_image as image, host_sh as sh};
use server::{ADMIN, REG, SECRET, admin_cli, free_port, spawn_server};

struct Server {
    child: KillOnDrop,
    url: String,
    port: u16,
    args: Vec<String>,
    home: tempfile::TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Result<Server> {
        let home = tempfile::tempdir()?;
        let port = free_port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Ok(Server {
            child: KillOnDrop(spawn_server(home.path(), port, &args)?),
            url: format!("http://127.0.0.1:{port}"),
            port,
            args,
            home,
        })
    }

    /// SIGKILL (no goodbye), `down` with nothing listening, then the same
    /// server again: same port, same state directory.
    fn kill9_and_restart(&mut self, down: Duration) -> Result<()> {
        self.child.0.kill()?;
        self.child.0.wait()?;
        std::thread::sleep(down);
        self.child = KillOnDrop(spawn_server(self.home.path(), self.port, &self.args)?);
        Ok(())
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        Ok(kill(Pid::from_raw(self.child.0.id() as i32), sig)?)
    }

    fn admin(&self) -> Client {
        Client::new(&self.url, Some(ADMIN.into()), Duration::from_secs(10))
    }

    /// `pinfold agent` as the test user with its own PINFOLD_HOME (and
    /// `--grace 2s` unless `extra` sets it).
    fn agent(&self, home: &Path, extra: &[&str]) -> Result<Child> {
        Ok(self.agent_cmd(home, extra).spawn()?)
    }

    /// The command [`Server::agent`] spawns, for a test to change its
    /// environment first.
    fn agent_cmd(&self, home: &Path, extra: &[&str]) -> Command {
        let grace: &[&str] = if extra.contains(&"--grace") {
            &[]
        } else {
            &["--grace", "2s"]
        };
        let mut c = common::pinfold();
        c.env("PINFOLD_HOME", home)
            .env("RUST_LOG", "warn")
            .env("PINFOLD_ALLOW_LOCAL_IMAGES", "true")
            .args(["agent", "--server", &self.url, "--registration-token", REG])
            .args(grace)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        c
    }

    /// `pinfold agent` as above, in a fresh home of its own.
    fn new_agent(&self, extra: &[&str]) -> Result<(tempfile::TempDir, KillOnDrop)> {
        let home = common::user_dir();
        let agent = KillOnDrop(self.agent(home.path(), extra)?);
        Ok((home, agent))
    }

    /// Waits for runner `name` to register, then trusts it with `label`
    /// through `pinfold runners label` (so server secrets scoped to it go there).
    fn trust(&self, name: &str, label: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(r) = self.admin().runners()?.into_iter().find(|r| r.name == name) {
                let o = cli(
                    self,
                    &["runners", "label", &r.id.to_string(), "--add", label],
                );
                anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("runner {name} did not register");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn submit(&self, yaml: &str, source: Option<&Path>) -> Result<u64> {
        let admin = self.admin();
        let source_sha256 = match source {
            Some(dir) => {
                let mut tar = pinfold_agent::source::pack_dir(dir)?;
                let (_, sha) = pinfold_agent::artifacts::hash(&mut tar)?;
                use std::io::Seek;
                tar.rewind()?;
                admin.upload_source(&sha, &tar)?;
                Some(sha)
            }
            None => None,
        };
        Ok(admin
            .submit(&SubmitRequest {
                spec: yaml.into(),
                labels: vec![],
                source_sha256,
            })?
            .job_id)
    }

    /// Submits `job(steps, extra)` without a source.
    fn submit_job(&self, steps: &str, extra: &str) -> Result<u64> {
        self.submit(&job(steps, extra), None)
    }

    fn wait(&self, id: u64, within: Duration) -> Result<JobInfo> {
        let start = Instant::now();
        loop {
            let j = self.admin().job(id)?;
            if j.state.is_terminal() {
                return Ok(j);
            }
            if start.elapsed() > within {
                bail!("job {id} still {:?} after {within:?}", j.state);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for job `id` and asserts it succeeded; the job and its log.
    fn wait_succeeded(&self, id: u64, within: Duration) -> Result<(JobInfo, String)> {
        let j = self.wait(id, within)?;
        let log = self.log(id)?;
        assert_eq!(j.state, JobState::Succeeded, "{log}");
        Ok((j, log))
    }

    fn log(&self, id: u64) -> Result<String> {
        let (mut all, mut at) = (Vec::new(), 0);
        loop {
            let (data, next, complete) = self.admin().read_log(id, at)?;
            all.extend_from_slice(&data);
            if data.is_empty() || complete || next == at {
                return Ok(String::from_utf8_lossy(&all).into_owned());
            }
            at = next;
        }
    }

    fn wait_log(&self, id: u64, needle: &str, within: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.log(id)?.contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{needle:?} not in the log of job {id}: {}", self.log(id)?)
    }
}

/// SIGCONT first, for a server a test stopped; its `child` is then
/// killed as it drops.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.signal(Signal::SIGCONT);
    }
}

fn job(steps: &str, extra: &str) -> String {
    format!("image: {}\n{extra}steps:\n{steps}", image())
}

fn codes(j: &JobInfo) -> Vec<Option<i32>> {
    j.steps.iter().map(|s| s.exit_code).collect()
}

/// Writes `job(steps, extra)` to `dir/name`.
fn write_job(dir: &Path, name: &str, steps: &str, extra: &str) -> Result<()> {
    Ok(std::fs::write(dir.join(name), job(steps, extra))?)
}

/// Lets the test user read and write everything below `dir`.
fn open_to_all(dir: &Path) {
    sh(&format!("chmod -R a+rwX '{}'", dir.display()));
}

/// A directory the test user may write holding the job files given as
/// (name, steps, extra), each `job(steps, extra)`.
fn job_dir(jobs: &[(&str, &str, &str)]) -> Result<tempfile::TempDir> {
    let w = user_file_dir();
    for (name, steps, extra) in jobs {
        write_job(w.path(), name, steps, extra)?;
    }
    open_to_all(w.path());
    Ok(w)
}

fn user_file_dir() -> tempfile::TempDir {
    let d = common::user_dir();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

#[test]
fn multi_step_job_ships_log_artifacts_and_masks_secrets() -> Result<()> {
    let server = Server::start(&[])?;
    let (home, _agent) = server.new_agent(&["--name", "a1"])?;
    server.trust("a1", "deploy")?;
    let src = user_file_dir();
    std::fs::write(
        src.path().join("build.sh"),
        "mkdir -p out\necho \"$GREETING from the build\" > out/app\nsha256sum out/app | cut -d' ' -f1 > out/app.sha\n",
    )?;
    let yaml = job(
        "  - name: build\n    run: sh build.sh; echo key=$DEPLOY_KEY; echo to-stderr >&2; echo kept > /etc/kept\n  - name: check\n    run: cat /etc/kept; cat out/app; ln -s /etc/shadow out/evil\n",
        "env: { GREETING: hello }\nsecrets: [DEPLOY_KEY]\nartifacts: [out/app, out/evil]\n",
    );
    let id = server.submit(&yaml, Some(src.path()))?;
    let (j, log) = server.wait_succeeded(id, Duration::from_secs(60))?;
    assert_eq!(codes(&j), vec![Some(0), Some(0)]);
    assert!(j.steps.iter().all(|s| s.started_at <= s.finished_at));
    // Markers, both streams in order, state persisting across steps.
    for needle in [
        "==> step 1/2: build\n",
        "key=***\nto-stderr\n",
        "==> step 2/2: check\nkept\nhello from the build\n",
        "==> artifact out/evil: refused: a symlink",
    ] {
        assert!(log.contains(needle), "{needle:?} missing from:\n{log}");
    }
    assert!(!log.contains(SECRET), "{log}");
    // The artifact is the file built inside: its digest equals the one
    // computed in the container; the symlink was not uploaded.
    let arts = server.admin().artifacts(id)?.artifacts;
    assert_eq!(arts.len(), 1, "{arts:?}");
    assert_eq!(arts[0].name, "out/app");
    let mut body = Vec::new();
    server.admin().download_artifact(id, "out/app", &mut body)?;
    assert_eq!(body, b"hello from the build\n");
    let inside = log
        .lines()
        .find(|l| l.starts_with("==> artifact out/app ("))
        .context("artifact line")?;
    assert!(inside.contains(&arts[0].sha256), "{inside}");
    // The runner token is kept 0600, one file per server.
    let tok = pinfold_agent::agent::token_path(home.path(), &server.url);
    let mode = std::fs::metadata(&tok)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    Ok(())
}

#[test]
fn failing_step_timeout_and_cancel() -> Result<()> {
    let server = Server::start(&[])?;
    let (_home, mut agent) = server.new_agent(&["--concurrency", "3"])?;
    let failing = server.submit_job(
        "  - name: a\n    run: echo about to fail; exit 3\n  - name: b\n    run: echo never\n",
        "",
    )?;
    let slow = server.submit_job("  - name: slow\n    run: sleep 30\n    timeout: 2s\n", "")?;
    let long = server.submit_job("  - name: long\n    run: echo started; sleep 60\n", "")?;
    server.wait_log(long, "started", Duration::from_secs(30))?;
    let t0 = Instant::now();
    server.admin().cancel(long)?;
    let j = server.wait(long, Duration::from_secs(30))?;
    assert_eq!(j.state, JobState::Cancelled, "{}", server.log(long)?);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());

    let j = server.wait(failing, Duration::from_secs(30))?;
    let log = server.log(failing)?;
    assert_eq!(j.state, JobState::Failed, "{log}");
    assert_eq!(codes(&j), vec![Some(3), None]);
    assert_eq!(j.reason.as_deref(), Some("step a exited 3"));
    assert!(
        log.contains("about to fail") && !log.contains("never"),
        "{log}"
    );

    let j = server.wait(slow, Duration::from_secs(30))?;
    assert_eq!(j.state, JobState::TimedOut, "{}", server.log(slow)?);
    assert_eq!(codes(&j), vec![Some(124)]);

    // SIGTERM with nothing running: the agent exits 0 promptly.
    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGTERM)?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = agent.0.try_wait()? {
            break s;
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!("agent did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    Ok(())
}

#[test]
fn killed_agent_job_is_finished_by_a_second_agent() -> Result<()> {
    let server = Server::start(&["--lease-ttl", "3s"])?;
    let (_h1, mut first) = server.new_agent(&["--name", "first"])?;
    let id = server.submit_job(
        "  - name: work\n    run: echo working; sleep 3; mkdir -p out; echo done > out/result\n",
        "artifacts: [out/result]\n",
    )?;
    server.wait_log(id, "working", Duration::from_secs(30))?;
    first.0.kill()?; // SIGKILL: no goodbye, the lease just stops renewing
    first.0.wait()?;
    let (_h2, _second) = server.new_agent(&["--name", "second", "--ephemeral"])?;
    let (j, log) = server.wait_succeeded(id, Duration::from_secs(60))?;
    assert_eq!(j.attempts, 2, "{log}");
    assert!(log.contains("attempt 2 on runner second"), "{log}");
    let arts = server.admin().artifacts(id)?.artifacts;
    assert_eq!(arts.len(), 1);
    Ok(())
}

#[test]
fn sigterm_drains_then_cancels_and_a_restart_reuses_the_token() -> Result<()> {
    let server = Server::start(&[])?;
    let (home, mut agent) = server.new_agent(&["--drain", "1s"])?;
    let id = server.submit_job("  - name: long\n    run: echo started; sleep 60\n", "")?;
    server.wait_log(id, "started", Duration::from_secs(30))?;
    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGTERM)?;
    let j = server.wait(id, Duration::from_secs(30))?;
    assert_eq!(j.state, JobState::Cancelled);
    assert!(j.reason.unwrap_or_default().contains("shut down"));
    let status = agent.0.wait()?;
    assert_eq!(status.code(), Some(0));

    // Restarted without a registration token, it reuses its stored runner token.
    let _again = KillOnDrop(
        common::pinfold()
            .env("PINFOLD_HOME", home.path())
            .env("RUST_LOG", "warn")
            .env("PINFOLD_ALLOW_LOCAL_IMAGES", "true")
            .args(["agent", "--server", &server.url, "--ephemeral"])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let id = server.submit_job("  - name: a\n    run: echo again\n", "")?;
    server.wait_succeeded(id, Duration::from_secs(30))?;
    assert_eq!(server.admin().runners()?.len(), 1);
    Ok(())
}

#[test]
fn sigterm_with_the_coordinator_killed_exits_within_drain_and_grace() -> Result<()> {
    // The case: connections are refused, every retry fails at once.
    sigterm_with_the_coordinator_gone(|s| {
        s.child.0.kill()?;
        s.child.0.wait()?;
        Ok(())
    })
}

#[test]
fn sigterm_with_the_coordinator_hung_exits_within_drain_and_grace() -> Result<()> {
    // Stopped: connections are accepted and never answered, each request
    // hangs for the whole (default, 30 s) request timeout.
    sigterm_with_the_coordinator_gone(|s| s.signal(Signal::SIGSTOP))
}

/// A job runs, the coordinator goes away (`gone`), then the agent gets
/// SIGTERM. It must not retry past its drain: the job is cancelled at the
/// deadline (SIGTERM, --grace, SIGKILL), its undeliverable log and result
/// are dropped, and the agent exits within drain + grace + 5 s, leaving no
/// process of the job behind.
fn sigterm_with_the_coordinator_gone(gone: fn(&mut Server) -> Result<()>) -> Result<()> {
    let (drain, grace) = (Duration::from_secs(3), Duration::from_secs(1));
    let mut server = Server::start(&[])?;
    let (home, mut agent) = server.new_agent(&["--drain", "3s", "--grace", "1s"])?;
    let marker = "sleep 2917";
    let id = server.submit_job(
        &format!("  - name: long\n    run: echo started; {marker}\n"),
        "",
    )?;
    server.wait_log(id, "started", Duration::from_secs(30))?;
    gone(&mut server)?;
    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGTERM)?;
    let t0 = Instant::now();
    let bound = drain + grace + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = agent.0.try_wait()? {
            break s;
        }
        if t0.elapsed() > bound + Duration::from_secs(1) {
            bail!("the agent still runs {:?} after SIGTERM", t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "the agent exited {:?} after SIGTERM: {status}",
        t0.elapsed()
    );
    assert!(status.code().is_some(), "{status:?}");
    // Nothing of the job is left: no step shell or sleep, no `pinfold
    // exec` or job holder over the agent's home.
    let home = home.path().to_string_lossy().into_owned();
    let left = || {
        let mut v = common::processes_matching(marker);
        v.extend(common::processes_matching(&home));
        v
    };
    let start = Instant::now();
    while !left().is_empty() && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> = left()
        .into_iter()
        .filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    Ok(())
}

fn run_local(dir: &Path, args: &[&str]) -> (i32, String, String) {
    run_local_as(common::pinfold(), dir, args)
}

/// [`run_local`] with `pinfold` as the command (the test user's or root's).
fn run_local_as(mut pinfold: Command, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let o = pinfold
        .env("PINFOLD_HOME", dir.join("home"))
        .env("PINFOLD_SECRET_TOKEN", "hunter2-local")
        .current_dir(dir)
        .arg("run")
        .args(args)
        .output()
        .expect("run pinfold");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn pinfold_run_locally() -> Result<()> {
    let w = user_file_dir();
    let dir = w.path();
    let src = dir.join("src");
    std::fs::create_dir(&src)?;
    std::fs::write(src.join("input"), "from the source\n")?;
    write_job(
        dir,
        "job.yaml",
        "  - name: build\n    run: mkdir -p out; cat input > out/app; echo tok=$TOKEN\n  - name: link\n    run: ln -s /etc/passwd out/passwd\n",
        "secrets: [TOKEN]\nartifacts: [out/*]\n",
    )?;
    open_to_all(dir);
    let (code, out, err) = run_local(dir, &["job.yaml", "--source", "src", "--out", "art"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tok=***") && !out.contains("hunter2"), "{out}");
    assert!(out.contains("out/passwd: refused: a symlink"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.join("art/out/app"))?,
        "from the source\n"
    );
    assert!(!dir.join("art/out/passwd").exists());

    // Provenance beside the artifacts, signed with the local runner key,
    // verified offline; a changed artifact fails the check.
    let statement = dir.join("art/provenance.intoto.json");
    let key = dir.join("home/keys/runner.key.pub");
    let verify = || attest_verify(common::pinfold(), &statement, &key);
    let o = verify();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["artifacts"], serde_json::json!(["out/app"]));
    let deps = v["dependencies"].to_string();
    assert!(
        deps.contains("source.tar") && deps.contains(image().rsplit_once("@sha256:").unwrap().1),
        "{deps}"
    );
    std::fs::write(dir.join("art/out/app"), "tampered\n")?;
    let o = verify();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not match"));

    // --json: the summary on stdout; a failing step exits 1.
    write_job(dir, "fail.yaml", "  - name: f\n    run: exit 7\n", "")?;
    let (code, out, _) = run_local(dir, &["fail.yaml", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(v["state"], "failed");
    assert_eq!(v["steps"][0]["exit_code"], 7);

    // A malformed job file: one clear line naming the file and the line.
    write_job(dir, "bad.yaml", "  - name: x\n    run: y\n", "stepz: 1\n")?;
    let (code, out, err) = run_local(dir, &["bad.yaml"]);
    assert_eq!(code, 125);
    assert!(out.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.yaml") && err.contains("stepz") && err.contains("line 2"),
        "{err}"
    );
    Ok(())
}

/// As real root (an operator's runner, and every check of the VM matrix),
/// a job with a source and artifacts runs as it does for the test user.
/// The runner writes the source as the containers' root, an unprivileged
/// host id: it used to reach the workspace by a path through the runner's
/// 0700 job directory with that id, and every job with a source failed
/// with EACCES.
#[test]
fn pinfold_run_as_real_root_unpacks_the_source_and_ships_artifacts() -> Result<()> {
    if !common::is_root() {
        eprintln!("skipped: needs to run as root");
        return Ok(());
    }
    let w = tempfile::tempdir_in(&common::fixtures().root)?;
    let dir = w.path();
    std::fs::create_dir_all(dir.join("src/sub"))?;
    std::fs::write(dir.join("src/input"), "from the source\n")?;
    std::fs::write(dir.join("src/sub/more"), "and below\n")?;
    write_job(
        dir,
        "job.yaml",
        "  - name: build\n    run: mkdir -p out; cat input sub/more > out/app; stat -c %u:%g input > out/owner; echo more >> sub/more\n  - name: again\n    run: cat sub/more > out/more\n",
        "artifacts: [out/*]\n",
    )?;
    write_job(
        dir,
        "nosrc.yaml",
        "  - name: empty\n    run: mkdir out; ls -A > out/ls\n",
        "artifacts: [out/*]\n",
    )?;
    let run = |args: &[&str]| run_local_as(common::pinfold_as_root(), dir, args);
    let (code, out, err) = run(&["job.yaml", "--source", "src", "--out", "art"]);
    assert_eq!(code, 0, "{out}{err}");
    let art = dir.join("art/out");
    assert_eq!(
        std::fs::read_to_string(art.join("app"))?,
        "from the source\nand below\n"
    );
    // The source belongs to the containers' root, and the steps write it.
    assert_eq!(std::fs::read_to_string(art.join("owner"))?, "0:0\n");
    assert_eq!(
        std::fs::read_to_string(art.join("more"))?,
        "and below\nmore\n"
    );
    assert!(dir.join("art/provenance.intoto.json").is_file(), "{err}");

    // No source: an empty workspace, artifacts still shipped.
    let (code, out, err) = run(&["nosrc.yaml", "--out", "art2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_to_string(dir.join("art2/out/ls"))?, "out\n");
    // Nothing is left of either job directory.
    let left: Vec<_> = std::fs::read_dir(dir.join("home/run"))?.collect();
    assert!(left.is_empty(), "{left:?}");
    Ok(())
}

/// Issue 13 point 9: a job prints an OSC 52 clipboard write, a CSI cursor
/// move and a fake `==> job succeeded`, and plants `.git/hooks/pre-commit`
/// matching its artifact glob. `pinfold run` on a terminal shows no ESC
/// byte, the fake line is marked as the job's, and nothing hidden is
/// written to --out; with --raw the job's bytes pass.
#[test]
fn pinfold_run_on_a_terminal_escapes_job_output_and_refuses_hidden_artifacts() -> Result<()> {
    let w = job_dir(&[(
        "job.yaml",
        "  - name: evil\n    run: mkdir -p .git/hooks out; echo x > .git/hooks/pre-commit; echo y > out/app; printf '\\033]52;c;ZXZpbA==\\007\\033[2Ahidden\\n==> job succeeded\\n'; exit 3\n",
        "artifacts: [.git/hooks/*, out/*]\n",
    )])?;
    let dir = w.path();
    let run = |extra: &[&str]| {
        let mut c = common::pinfold();
        c.env("PINFOLD_HOME", dir.join("home"))
            .current_dir(dir)
            .args(["run", "job.yaml"])
            .args(extra);
        pty::run_on_pty(c)
    };

    let (code, seen, err) = run(&["--out", "art"]);
    let shown = pty::text(&seen);
    assert_eq!(code, 1, "{shown}{err}");
    assert!(
        !seen.contains(&0x1b),
        "an ESC byte reached the terminal: {shown:?}"
    );
    assert!(
        shown.contains("\\x1b]52;c;ZXZpbA==\\x07\\x1b[2Ahidden\n"),
        "{shown}"
    );
    // The job's line is marked; the only line beginning `==> job` is pinfold's.
    assert!(shown.contains("\njob> ==> job succeeded\n"), "{shown}");
    let ours: Vec<_> = shown
        .lines()
        .filter(|l| l.starts_with("==> job "))
        .collect();
    assert_eq!(ours.len(), 1, "{shown}");
    assert!(ours[0].starts_with("==> job failed"), "{shown}");
    // The hidden artifact is refused with one line and never written.
    assert!(
        shown.contains("==> artifact .git/hooks/pre-commit: refused: ")
            && shown.contains("starting with '.'"),
        "{shown}"
    );
    assert!(!dir.join("art/.git").exists());
    assert_eq!(std::fs::read_to_string(dir.join("art/out/app"))?, "y\n");

    // --raw: the job's bytes reach the terminal as they are.
    let (code, seen, err) = run(&["--raw"]);
    assert_eq!(code, 1, "{}{err}", pty::text(&seen));
    let raw = b"\x1b]52;c;ZXZpbA==\x07\x1b[2Ahidden";
    assert!(
        seen.windows(raw.len()).any(|w| w == raw),
        "{:?}",
        pty::text(&seen)
    );
    Ok(())
}

/// `seq 1 n`'s output.
fn seq(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

/// The output of step 1/1 `name`: between its start and finish markers.
fn step_output<'a>(log: &'a str, name: &str) -> Result<&'a str> {
    let begin = format!("==> step 1/1: {name}\n");
    let end = format!("==> step 1/1: {name} finished");
    anyhow::ensure!(log.matches(&begin).count() == 1, "one start marker: {log}");
    let (_, rest) = log.split_once(&begin).context("start marker")?;
    let (body, _) = rest.split_once(&end).context("finish marker")?;
    Ok(body)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A job that prints 300,000 lines in three bursts, the later ones while
/// the test has the server down or stopped.
const BURSTS: &str = "  - name: print\n    run: seq 1 50000; sleep 2; seq 50001 200000; sleep 1; seq 200001 300000\n";

/// Checks the job ran once, succeeded, and its log holds every line once.
fn assert_whole_log(server: &Server, id: u64) -> Result<()> {
    let (j, log) = server.wait_succeeded(id, Duration::from_secs(90))?;
    assert_eq!(j.attempts, 1, "the job ran once: {log}");
    // The step's output without pinfold's own notes (`==> limits ...`).
    let body: String = step_output(&log, "print")?
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("==> "))
        .collect();
    let want = seq(300_000);
    let odd: Vec<&str> = body
        .lines()
        .filter(|l| l.parse::<u32>().is_err())
        .take(5)
        .collect();
    assert_eq!(
        body.len(),
        want.len(),
        "no byte lost or duplicated: {odd:?}"
    );
    assert_eq!(sha256_hex(body.as_bytes()), sha256_hex(want.as_bytes()));
    assert_eq!(log.matches("==> pinfold: job ").count(), 1, "{log}");
    Ok(())
}

#[test]
fn a_zero_request_timeout_is_refused_clearly() {
    let o = common::pinfold()
        .args([
            "agent",
            "--server",
            "http://127.0.0.1:9",
            "--request-timeout",
            "0s",
        ])
        .output()
        .expect("run pinfold agent");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--request-timeout must be longer than 0s"),
        "{err}"
    );
}

#[test]
fn a_server_killed_and_restarted_mid_job_loses_no_log_byte() -> Result<()> {
    let mut server = Server::start(&[])?;
    let (_home, _agent) = server.new_agent(&["--request-timeout", "2s"])?;
    let id = server.submit_job(BURSTS, "")?;
    server.wait_log(id, "\n50000\n", Duration::from_secs(30))?;
    // Down for 1.5 s while the job prints its second burst into the spool.
    server.kill9_and_restart(Duration::from_millis(1500))?;
    assert_whole_log(&server, id)
}

#[test]
fn a_server_stopped_past_the_request_timeout_then_continued() -> Result<()> {
    // The pause is longer than the agent's request timeout and the lease.
    let server = Server::start(&["--lease-ttl", "3s"])?;
    let (_home, mut agent) = server.new_agent(&["--request-timeout", "1s"])?;
    let id = server.submit_job(BURSTS, "")?;
    server.wait_log(id, "\n50000\n", Duration::from_secs(30))?;
    server.signal(Signal::SIGSTOP)?;
    std::thread::sleep(Duration::from_secs(5));
    server.signal(Signal::SIGCONT)?;
    assert_whole_log(&server, id)?;
    // The agent carries on with the next job.
    assert!(agent.0.try_wait()?.is_none(), "the agent exited");
    let next = server.submit_job("  - name: a\n    run: echo after the pause\n", "")?;
    server.wait_succeeded(next, Duration::from_secs(30))?;
    Ok(())
}

#[test]
fn job_network_field_narrows_the_policy_and_never_widens_it() -> Result<()> {
    // trusted allows egress; the job narrows it to allowlist, whose list
    // (trusted has none) refuses everything through the proxy.
    let w = job_dir(&[
        (
            "narrow.yaml",
            "  - name: fetch\n    run: echo proxy=$https_proxy; wget -q -O - http://198.51.100.1:8080/ 2>&1 || echo fetch-failed\n",
            "policy: trusted\nnetwork: allowlist\n",
        ),
        (
            "widen.yaml",
            "  - name: fetch\n    run: echo unreachable\n",
            "network: egress\n",
        ),
    ])?;
    let dir = w.path();
    // The runner's operator allows `trusted`; the job picks it by name.
    let (code, out, err) = run_local(dir, &["--allow-policy", "trusted", "narrow.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("proxy=http://127.0.0.1:3128"), "{out}");
    assert!(
        out.contains("403 Forbidden") && out.contains("fetch-failed"),
        "{out}"
    );
    let (code, out, err) = run_local(dir, &["widen.yaml"]);
    assert_eq!(code, 125, "{out}{err}");
    assert!(
        out.contains(
            "==> pinfold: the job asks for network egress, above this runner's ceiling for policy \"default\" (network none; none < allowlist < egress)"
        ),
        "{out}{err}"
    );
    assert!(
        !out.contains("==> step"),
        "refused before its first step: {out}"
    );
    Ok(())
}

#[test]
fn an_agent_runs_only_the_policies_its_operator_allows() -> Result<()> {
    let server = Server::start(&[])?;
    // A job naming a file as its policy (the agent's own environment, with
    // its secrets) is refused when submitted, in one line that quotes nothing.
    let e = server
        .submit_job(
            "  - name: s\n    run: echo RAN\n",
            "policy: /proc/self/environ\n",
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("policy: must be a policy name") && e.contains("not a path"),
        "{e}"
    );
    let (_home, _agent) = server.new_agent(&[
        "--name",
        "ceiling",
        "--policy",
        "untrusted",
        "--allow-policy",
        "default",
    ])?;
    // `trusted` is not on this runner's list: the job ends before its first step.
    let id = server.submit_job(
        "  - name: s\n    run: echo RAN-UNDER-TRUSTED\n",
        "policy: trusted\n",
    )?;
    let j = server.wait(id, Duration::from_secs(60))?;
    let log = server.log(id)?;
    assert_eq!(j.state, JobState::Error, "{log}");
    assert_eq!(
        j.reason.as_deref(),
        Some(
            "the job asks for policy \"trusted\", which this runner does not allow (it allows: untrusted, default); remove `policy:` or name one of those, or ask the runner's operator to add it with --allow-policy"
        )
    );
    assert_eq!(codes(&j), vec![None], "{log}");
    assert!(!log.contains("RAN-UNDER-TRUSTED\n"), "{log}");
    // No `policy:`: the operator's --policy, proved from inside (untrusted's
    // rootfs is read-only); `policy: default` is on the list and writable.
    let write = "  - name: s\n    run: touch /etc/pwned && echo WROTE || echo READ-ONLY\n";
    for (extra, want) in [("", "READ-ONLY\n"), ("policy: default\n", "WROTE\n")] {
        let id = server.submit_job(write, extra)?;
        let (_, log) = server.wait_succeeded(id, Duration::from_secs(60))?;
        assert!(log.contains(want), "{extra}: {log}");
    }
    Ok(())
}

// ---- Issue 6: `verify: N` across runners, and signed provenance ----

/// The CLI as the admin against this server.
fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    admin_cli(&server.url)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("PINFOLD_ALLOW_LOCAL_IMAGES", "true")
        .output()
        .expect("run pinfold")
}

/// `pinfold attest verify STATEMENT --key KEY --json`, run by `pinfold`.
fn attest_verify(mut pinfold: Command, statement: &Path, key: &Path) -> std::process::Output {
    pinfold
        .args(["attest", "verify"])
        .arg(statement)
        .arg("--key")
        .arg(key)
        .arg("--json")
        .output()
        .expect("run pinfold attest")
}

/// `pinfold artifacts ID --out OUT EXTRA...` as the admin.
fn artifacts(server: &Server, id: u64, out: &Path, extra: &[&str]) -> std::process::Output {
    let (id, out) = (id.to_string(), out.to_str().unwrap());
    let args: Vec<&str> = ["artifacts", id.as_str(), "--out", out]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    cli(server, &args)
}

/// Waits for `cond` on the job's status.
fn wait_for(
    server: &Server,
    id: u64,
    within: Duration,
    cond: impl Fn(&JobInfo) -> bool,
) -> Result<JobInfo> {
    let start = Instant::now();
    loop {
        let j = server.admin().job(id)?;
        if cond(&j) {
            return Ok(j);
        }
        if start.elapsed() > within {
            bail!("job {id} not there after {within:?}: {j:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn verify_waits_for_a_second_runner_then_records_reproducible() -> Result<()> {
    let server = Server::start(&[])?;
    let (_h1, _a1) = server.new_agent(&["--name", "v1", "--concurrency", "2"])?;
    let id = server.submit_job(
        "  - name: build\n    run: mkdir -p out; printf 'same bytes' > out/app; echo 42 > out/n\n",
        "verify: 2\nartifacts: [out/*]\n",
    )?;
    // One runner alone: it runs one copy; the other waits for a second
    // runner, and the status says why (even with a free slot on v1).
    let j = wait_for(&server, id, Duration::from_secs(60), |j| {
        j.verify
            .as_ref()
            .is_some_and(|v| v.run_jobs.iter().any(|r| r.state == JobState::Succeeded))
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let j2 = server.admin().job(id)?;
    let v = j2.verify.clone().context("verify status")?;
    assert_eq!(j2.state, JobState::Running, "{j:#?}");
    assert_eq!(v.runs, 2);
    let queued: Vec<_> = v
        .run_jobs
        .iter()
        .filter(|r| r.state == JobState::Queued)
        .collect();
    assert_eq!(queued.len(), 1, "{v:#?}");
    let waiting = v.waiting.clone().unwrap_or_default();
    assert!(
        waiting.contains("has not run this job") && waiting.contains("1 online"),
        "{waiting}"
    );
    let o = cli(&server, &["status", &id.to_string()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("waiting: 1 of 2 runs wait"), "{text}");
    // Each run is an ordinary job pointing back at the group.
    let run = server.admin().job(queued[0].job_id)?;
    assert_eq!(run.verify_of, Some(id));

    let (_h2, _a2) = server.new_agent(&["--name", "v2"])?;
    let j = server.wait(id, Duration::from_secs(60))?;
    let v = j.verify.clone().context("verify status")?;
    let verdict = v.verdict.clone().context("verdict")?;
    assert_eq!(j.state, JobState::Succeeded, "{j:#?}");
    assert!(
        verdict.reproducible && verdict.differing.is_empty(),
        "{verdict:#?}"
    );
    let runners: std::collections::BTreeSet<_> =
        v.run_jobs.iter().map(|r| r.runner_id.unwrap()).collect();
    assert_eq!(runners.len(), 2, "two different runners: {v:#?}");
    assert_eq!(verdict.artifacts.len(), 2);
    for a in &verdict.artifacts {
        assert!(a.identical);
        assert_eq!(a.by_runner.len(), 2);
        let want = &server
            .admin()
            .artifacts(v.run_jobs[0].job_id)?
            .artifacts
            .into_iter()
            .find(|x| x.name == a.name)
            .unwrap()
            .sha256;
        assert!(a.by_runner.values().all(|d| d.as_ref() == Some(want)));
    }
    assert!(j.reason.unwrap_or_default().starts_with("reproducible"));
    assert!(server.log(id)?.contains("==> verify: out/app identical"));
    Ok(())
}

#[test]
fn verify_names_the_artifact_that_differs_and_submit_wait_exits_1() -> Result<()> {
    let server = Server::start(&[])?;
    let (_h1, _a1) = server.new_agent(&["--name", "n1"])?;
    let (_h2, _a2) = server.new_agent(&["--name", "n2"])?;
    let dir = user_file_dir();
    let file = dir.path().join("job.yaml");
    // out/same is identical everywhere; out/stamp holds a fresh random uuid.
    std::fs::write(
        &file,
        job(
            "  - name: build\n    run: mkdir -p out; echo fixed > out/same; cat /proc/sys/kernel/random/uuid > out/stamp\n",
            "verify: 2\nartifacts: [out/*]\n",
        ),
    )?;
    let o = cli(&server, &["submit", file.to_str().unwrap(), "--wait"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(out.contains("==> verify: out/stamp DIFFERS"), "{out}");
    assert!(err.contains("not reproducible: out/stamp differ"), "{err}");
    let id: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("pinfold submit: job "))
        .and_then(|l| {
            l.split_whitespace()
                .next()?
                .trim_end_matches(':')
                .parse()
                .ok()
        })
        .context("job id on stderr")?;
    let j = server.admin().job(id)?;
    let verdict = j.verify.context("verify")?.verdict.context("verdict")?;
    assert!(!verdict.reproducible);
    assert_eq!(verdict.differing, vec!["out/stamp".to_string()]);
    let stamp = verdict
        .artifacts
        .iter()
        .find(|a| a.name == "out/stamp")
        .unwrap();
    let digests: std::collections::BTreeSet<_> = stamp.by_runner.values().collect();
    assert_eq!(digests.len(), 2, "{stamp:?}");
    assert!(
        verdict
            .artifacts
            .iter()
            .any(|a| a.name == "out/same" && a.identical)
    );
    let o = cli(&server, &["status", &id.to_string()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("verdict: NOT reproducible") && text.contains("DIFFERS out/stamp"),
        "{text}"
    );
    // A verify count outside 2..=16 is refused at submit, with its line.
    let admin = server.admin();
    let e = admin
        .submit(&SubmitRequest {
            spec: job("  - name: a\n    run: true\n", "verify: 1\n"),
            labels: vec![],
            source_sha256: None,
        })
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("2 to 16"), "{e}");
    Ok(())
}

#[test]
fn agent_provenance_downloads_and_verifies_against_the_registered_key() -> Result<()> {
    let server = Server::start(&[])?;
    let (home, _agent) = server.new_agent(&["--name", "signer"])?;
    let src = user_file_dir();
    std::fs::write(src.path().join("input"), "from the source\n")?;
    let id = server.submit(
        &job(
            "  - name: build\n    run: mkdir -p out/bin; cat input > out/bin/app; echo notes > out/notes\n",
            "artifacts: [out/bin/app, out/notes]\n",
        ),
        Some(src.path()),
    )?;
    let (j, log) = server.wait_succeeded(id, Duration::from_secs(60))?;
    assert!(log.contains("provenance for 2 artifacts signed"), "{log}");

    let out = tempfile::tempdir()?;
    let d = out.path().join("dl");
    let key = out.path().join("runner.pub");
    let o = artifacts(&server, id, &d, &["--key-out", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The key the coordinator hands out is the one the agent made.
    assert_eq!(
        std::fs::read_to_string(&key)?,
        std::fs::read_to_string(home.path().join("keys/runner.key.pub"))?
    );
    let statement = d.join("provenance.intoto.json");
    let verify = || attest_verify(Command::new(server::BIN), &statement, &key);
    let o = verify();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(
        v["artifacts"],
        serde_json::json!(["out/bin/app", "out/notes"])
    );
    let runner = server.admin().runners()?[0].id;
    assert_eq!(
        v["builder"],
        format!("{}/api/v1/runners/{runner}", server.url)
    );
    let deps = v["dependencies"].to_string();
    assert!(
        deps.contains(j.source_sha256.as_deref().unwrap())
            && deps.contains(image().rsplit_once("@sha256:").unwrap().1),
        "{deps}"
    );
    // The statement carries the job file as submitted and the run's times.
    let env: pinfold_api::provenance::Envelope =
        serde_json::from_slice(&std::fs::read(&statement)?)?;
    let st = pinfold_api::provenance::verify(
        &env,
        &pinfold_api::provenance::parse_public_key(&std::fs::read_to_string(&key)?)?,
    )?;
    let job_file = st.predicate.build_definition.external_parameters["jobFile"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(job_file.contains("cat input > out/bin/app"), "{job_file}");
    assert!(
        st.predicate.run_details.metadata.started_on
            <= st.predicate.run_details.metadata.finished_on
    );
    // --verify does the same in one go.
    let o = artifacts(&server, id, &d, &["--verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("verified"));

    // A flipped byte in an artifact fails the check ...
    let app = d.join("out/bin/app");
    let good = std::fs::read(&app)?;
    let mut bad = good.clone();
    bad[0] ^= 1;
    std::fs::write(&app, &bad)?;
    let o = verify();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not match"));
    std::fs::write(&app, &good)?;
    assert!(verify().status.success());
    // ... and so does a flipped byte in the envelope's signed payload.
    let text = std::fs::read_to_string(&statement)?;
    let mut e: serde_json::Value = serde_json::from_str(&text)?;
    let p = e["payload"].as_str().unwrap().to_string();
    let i = p.len() / 2;
    let c = if &p[i..i + 1] == "A" { "B" } else { "A" };
    e["payload"] = format!("{}{c}{}", &p[..i], &p[i + 1..]).into();
    std::fs::write(&statement, serde_json::to_vec(&e)?)?;
    let o = verify();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("signature does not verify") || err.contains("malformed"),
        "{err}"
    );
    Ok(())
}

#[test]
fn coordinator_refuses_provenance_signed_by_another_key() -> Result<()> {
    use pinfold_api::provenance as p;
    let server = Server::start(&[])?;
    // The test plays the runner through the protocol.
    let reg = Client::new(&server.url, Some(REG.into()), Duration::from_secs(10));
    let mine = p::signing_key_from_seed([1; 32]);
    let other = p::signing_key_from_seed([2; 32]);
    let e = reg
        .register_with_key("fake", &[], Some("-----BEGIN PUBLIC KEY-----\nnope\n"))
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("public_key"), "{e}");
    let r = reg.register_with_key(
        "fake",
        &[],
        Some(&p::public_key_pem(&mine.verifying_key())?),
    )?;
    assert_eq!(
        server.admin().runner_key(r.runner_id)?.keyid,
        p::key_id(&mine.verifying_key())
    );
    let id = server.submit_job("  - name: a\n    run: true\n", "artifacts: [out/x]\n")?;
    let runner = reg.with_token(&r.token);
    let lease = runner.lease(5)?.context("a lease")?;
    assert_eq!(lease.job_id, id);
    assert!(lease.spec_yaml.contains("artifacts: [out/x]"));
    let jc = runner.with_token(&lease.job_token);
    let body = b"artifact bytes".to_vec();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    jc.upload_artifact(id, "out/x", &sha, &mut &body[..])?;
    let arts = vec![("out/x".to_string(), sha.clone())];
    let record = |arts: &[(String, String)]| {
        p::statement_for(&p::JobRecord {
            job_yaml: &lease.spec_yaml,
            image: (lease.spec.image.as_str(), &"0".repeat(64)),
            source: None,
            artifacts: arts,
            builder_id: "https://example/runner",
            invocation_id: "x",
            started_ms: 1,
            finished_ms: 2,
            internal: serde_json::Value::Null,
        })
    };
    let upload = |key: &p::SigningKey, arts: &[(String, String)]| {
        let env = p::sign(&record(arts), key).unwrap();
        jc.upload_provenance(id, &serde_json::to_vec(&env).unwrap())
    };
    // Signed by another key: refused, nothing stored.
    let e = upload(&other, &arts).unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("registered key"), "{e}");
    assert!(server.admin().provenance(id)?.is_none());
    // Attesting an artifact the job never uploaded: refused.
    let e = upload(&mine, &[("out/y".to_string(), sha.clone())]).unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("not an artifact of job"), "{e}");
    // A wrong digest for an uploaded one: refused.
    let e = upload(&mine, &[("out/x".to_string(), "1".repeat(64))]).unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    // Not an envelope at all.
    let e = jc.upload_provenance(id, b"{\"hello\": 1}").unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("not a DSSE envelope"), "{e}");
    // Over the JSON body limit (1 MiB): 413 before it is read.
    let e = jc.upload_provenance(id, &vec![b' '; 2 << 20]).unwrap_err();
    assert_eq!(e.status(), Some(413), "{e}");
    // Signed by the registered key: stored and served as uploaded.
    let stored = upload(&mine, &arts)?;
    assert_eq!(stored.runner_id, r.runner_id);
    let (by, body) = server.admin().provenance(id)?.context("stored")?;
    assert_eq!(by, r.runner_id);
    let env: p::Envelope = serde_json::from_slice(&body)?;
    p::verify(&env, &mine.verifying_key())?;
    Ok(())
}

/// Peak resident memory of a process, from /proc/PID/status.
fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn log_flood_ends_the_job_naming_the_limit_and_the_next_job_runs() -> Result<()> {
    let server = Server::start(&[])?;
    let home = common::user_dir();
    let pol = user_file_dir();
    let policy = pol.path().join("quiet.toml");
    std::fs::write(
        &policy,
        "description = \"a small log budget\"\n[limits]\nlog_bytes = \"32M\"\n",
    )?;
    // The operator allows the file; jobs pick it by its name, `quiet`.
    let agent = KillOnDrop(server.agent(
        home.path(),
        &[
            "--name",
            "flood",
            "--allow-policy",
            &policy.display().to_string(),
        ],
    )?);
    // An endless flood (`yes` writes as fast as the pipe takes it): only
    // the log limit can end it before the 120 s step timeout.
    // The agent's peak after a small job, to compare the flood with.
    let warm = server.submit_job("  - name: warm\n    run: echo warm\n", "")?;
    server.wait(warm, Duration::from_secs(60))?;
    let before = vm_hwm_kb(agent.0.id());
    let id = server.submit_job("  - name: flood\n    run: yes 'flood flood flood flood flood flood flood'\n    timeout: 120s\n  - name: after\n    run: echo never\n", "policy: quiet\n")?;
    let j = server.wait(id, Duration::from_secs(100))?;
    let log = server.log(id)?;
    assert_eq!(
        j.state,
        JobState::Failed,
        "{}",
        &log[log.len().saturating_sub(2000)..]
    );
    assert_eq!(
        j.reason.as_deref(),
        Some(
            "step flood: log limit 32M exceeded (policy limits.log_bytes); raise it in the policy or make the build quieter"
        )
    );
    assert_eq!(j.steps[1].exit_code, None, "the second step never ran");
    // What was kept: the output up to the limit, then pinfold's own lines.
    let flood = log
        .matches("flood flood flood flood flood flood flood\n")
        .count() as u64;
    assert!(flood * 42 <= 32 << 20, "{flood} lines");
    assert!(flood * 42 > 30 << 20, "{flood} lines");
    assert!(
        log.contains("log limit 32M exceeded"),
        "{}",
        &log[log.len() - 500..]
    );
    // The agent did not hold the flood in memory (its log goes to a spool
    // file): its peak grew by far less than the 32 MiB that went through.
    let after = vm_hwm_kb(agent.0.id());
    eprintln!("agent VmHWM: {before} kB after a small job, {after} kB after the flood");
    assert!(
        before > 0 && after < before + (8 << 10),
        "agent VmHWM {before} -> {after} kB"
    );
    // The next job on the same agent runs normally.
    let id = server.submit_job(
        "  - name: ok\n    run: echo next-job-fine\n",
        "policy: quiet\n",
    )?;
    let (_, log) = server.wait_succeeded(id, Duration::from_secs(60))?;
    assert!(log.contains("next-job-fine\n"), "{log}");
    assert!(log.contains("==> limits enforced by "), "{log}");
    // A memory bomb on the same agent, in a job that lowers its own
    // memory limit: the job result names the limit.
    let id = server.submit_job("  - name: bomb\n    run: dd if=/dev/zero of=/dev/null bs=256M count=200\n    timeout: 60s\n", "limits: { memory: 64M }\n")?;
    let j = server.wait(id, Duration::from_secs(90))?;
    let log = server.log(id)?;
    assert_eq!(j.state, JobState::Failed, "{log}");
    assert_eq!(codes(&j), vec![Some(123)]);
    assert_eq!(
        j.reason.as_deref(),
        Some(
            "step bomb: job killed: memory limit 64M exceeded (policy limits.memory); raise it in the policy or reduce the build's memory"
        ),
        "{log}"
    );
    let id = server.submit_job("  - name: ok\n    run: echo fine-again\n", "")?;
    server.wait_succeeded(id, Duration::from_secs(60))?;
    Ok(())
}

#[test]
fn base64_of_a_secret_is_masked_in_the_shipped_log() -> Result<()> {
    use base64::Engine;
    let server = Server::start(&[])?;
    let (_home, _agent) = server.new_agent(&["--name", "b64"])?;
    server.trust("b64", "deploy")?;
    let id = server.submit_job("  - name: leak\n    run: printf %s \"$DEPLOY_KEY\" | base64; printf 'x%s' \"$DEPLOY_KEY\" | base64\n", "secrets: [DEPLOY_KEY]\n")?;
    let (_, log) = server.wait_succeeded(id, Duration::from_secs(60))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    for (prefix, enc) in [
        (0usize, b64.encode(SECRET)),
        (1, b64.encode(format!("x{SECRET}"))),
    ] {
        // The characters that encode the secret's bytes alone.
        let (start, end) = ((prefix * 8).div_ceil(6), (prefix + SECRET.len()) * 8 / 6);
        assert!(!log.contains(&enc[start..end]), "{enc} in {log}");
    }
    assert_eq!(log.matches("***").count(), 2, "{log}");
    Ok(())
}

/// Issue 13 point 8: an agent hands a job only the local secrets its
/// operator listed. Without `--secret LOCAL_TOKEN`, a job naming it fails
/// before its first step with one line saying so, though the agent's
/// environment holds PINFOLD_SECRET_LOCAL_TOKEN; with it, the job gets it.
#[test]
fn an_agent_hands_out_only_the_local_secrets_its_operator_listed() -> Result<()> {
    let server = Server::start(&[])?;
    let home = common::user_dir();
    let start = |extra: &[&str]| -> Result<KillOnDrop> {
        let args = [&["--name", "local"], extra].concat();
        Ok(KillOnDrop(
            server
                .agent_cmd(home.path(), &args)
                .env("PINFOLD_SECRET_LOCAL_TOKEN", "l0cal-t0ken-value")
                .spawn()?,
        ))
    };
    let yaml = job(
        "  - name: use\n    run: echo tok=$LOCAL_TOKEN; echo ran\n",
        "secrets: [LOCAL_TOKEN]\n",
    );

    let agent = start(&[])?;
    let id = server.submit(&yaml, None)?;
    let j = server.wait(id, Duration::from_secs(60))?;
    let log = server.log(id)?;
    assert_eq!(j.state, JobState::Error, "{log}");
    assert!(
        !log.contains("l0cal-t0ken") && !log.contains("ran\n"),
        "{log}"
    );
    assert!(!log.contains("==> step 1/1"), "a step ran: {log}");
    let why: Vec<_> = log.lines().filter(|l| l.contains("LOCAL_TOKEN")).collect();
    assert_eq!(why.len(), 1, "{log}");
    assert!(why[0].contains("not offered by this runner"), "{log}");
    drop(agent);

    let _agent = start(&["--secret", "LOCAL_TOKEN"])?;
    let id = server.submit(&yaml, None)?;
    let (_, log) = server.wait_succeeded(id, Duration::from_secs(60))?;
    assert!(
        log.contains("tok=***\nran\n") && !log.contains("l0cal-t0ken"),
        "{log}"
    );
    Ok(())
}

/// A job may not name a file on the runner as its image (here the suite's
/// own OCI layout, `oci:DIR@sha256:…`) unless the runner's operator allows
/// local images: the job ends before its first step, saying so.
#[test]
fn a_job_naming_a_local_image_is_refused_unless_the_operator_allows_it() -> Result<()> {
    let server = Server::start(&[])?;
    let home = common::user_dir();
    // The operator's default: no PINFOLD_ALLOW_LOCAL_IMAGES.
    let _agent = KillOnDrop(
        server
            .agent_cmd(home.path(), &[])
            .env_remove("PINFOLD_ALLOW_LOCAL_IMAGES")
            .spawn()?,
    );
    let id = server.submit_job("  - name: a\n    run: echo step-ran\n", "")?;
    let j = server.wait(id, Duration::from_secs(60))?;
    let log = server.log(id)?;
    assert_ne!(j.state, JobState::Succeeded, "{log}");
    assert!(!log.contains("step-ran"), "{log}");
    let said = format!("{} {log}", j.reason.unwrap_or_default());
    assert!(said.contains("names a file on the runner"), "{said}");
    Ok(())
}
