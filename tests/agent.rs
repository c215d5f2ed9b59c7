//! The runner agent and `pinfold run` end to end: the real `pinfold server`
//! (as in tests/coordinator.rs) and real `pinfold agent` processes running
//! as the unprivileged test user, real jobs on a busybox OCI image built
//! with umoci and referenced as `oci:DIR@sha256:...`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinfold_api::wire::{JobInfo, JobState, SubmitRequest};
use pinfold_coordinator::client::Client;

const ADMIN: &str = "pfa_agent_e2e_admin";
const REG: &str = "pfg_agent_e2e_registration";
const SECRET: &str = "s3cr3t-deploy-key";

fn sh(script: &str) -> String {
    let o = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A busybox image built with umoci, once: `oci:DIR@sha256:D`.
fn image() -> &'static str {
    static IMG: OnceLock<String> = OnceLock::new();
    IMG.get_or_init(|| {
        let root = common::fixtures().root.join("agent-image");
        let d = sh(&format!(
            r#"
l={root}/layout; b={root}/bundle
umoci init --layout $l
umoci new --image $l:img
umoci unpack --rootless --image $l:img $b >/dev/null
r=$b/rootfs
mkdir -p $r/bin $r/tmp $r/etc
cp "$(command -v busybox)" $r/bin/busybox
for c in $($r/bin/busybox --list); do [ "$c" = busybox ] || ln -s busybox $r/bin/$c; done
chmod 1777 $r/tmp
umoci repack --image $l:img $b >/dev/null
rm -rf $b
chmod -R a+rX {root}
python3 -c "import json;print(json.load(open('$l/index.json'))['manifests'][0]['digest'])"
"#,
            root = root.display()
        ));
        format!("oci:{}/layout@{d}", root.display())
    })
}

struct Server {
    child: Child,
    url: String,
    port: u16,
    args: Vec<String>,
    home: tempfile::TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Result<Server> {
        let home = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Ok(Server {
            child: Self::spawn(home.path(), port, &args)?,
            url: format!("http://127.0.0.1:{port}"),
            port,
            args,
            home,
        })
    }

    /// `pinfold server` on `port` over `home`, once it listens.
    fn spawn(home: &Path, port: u16, args: &[String]) -> Result<Child> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pinfold"))
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("PINFOLD_HOME", home)
            .env("PINFOLD_ADMIN_TOKEN", ADMIN)
            .env("PINFOLD_REGISTRATION_TOKEN", REG)
            .env("PINFOLD_SECRET_DEPLOY_KEY", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = child.stdout.take().context("server stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("server did not start");
        }
        Ok(child)
    }

    /// SIGKILL (no goodbye), `down` with nothing listening, then the same
    /// server again: same port, same state directory.
    fn kill9_and_restart(&mut self, down: Duration) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        std::thread::sleep(down);
        self.child = Self::spawn(self.home.path(), self.port, &self.args)?;
        Ok(())
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        Ok(kill(Pid::from_raw(self.child.id() as i32), sig)?)
    }

    fn admin(&self) -> Client {
        Client::new(&self.url, Some(ADMIN.into()), Duration::from_secs(10))
    }

    /// `pinfold agent` as the test user with its own PINFOLD_HOME.
    fn agent(&self, home: &Path, extra: &[&str]) -> Result<Child> {
        Ok(common::pinfold()
            .env("PINFOLD_HOME", home)
            .env("RUST_LOG", "warn")
            .args(["agent", "--server", &self.url, "--registration-token", REG])
            .args(["--grace", "2s"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?)
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.signal(Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn job(steps: &str, extra: &str) -> String {
    format!("image: {}\n{extra}steps:\n{steps}", image())
}

fn codes(j: &JobInfo) -> Vec<Option<i32>> {
    j.steps.iter().map(|s| s.exit_code).collect()
}

fn user_file_dir() -> tempfile::TempDir {
    let d = common::user_dir();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

#[test]
fn multi_step_job_ships_log_artifacts_and_masks_secrets() -> Result<()> {
    let server = Server::start(&[])?;
    let home = common::user_dir();
    let _agent = Agent(server.agent(home.path(), &["--name", "a1"])?);
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
    let j = server.wait(id, Duration::from_secs(60))?;
    let log = server.log(id)?;
    assert_eq!(j.state, JobState::Succeeded, "{log}");
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
    let home = common::user_dir();
    let mut agent = Agent(server.agent(home.path(), &["--concurrency", "3"])?);
    let failing = server.submit(
        &job(
            "  - name: a\n    run: echo about to fail; exit 3\n  - name: b\n    run: echo never\n",
            "",
        ),
        None,
    )?;
    let slow = server.submit(
        &job("  - name: slow\n    run: sleep 30\n    timeout: 2s\n", ""),
        None,
    )?;
    let long = server.submit(
        &job("  - name: long\n    run: echo started; sleep 60\n", ""),
        None,
    )?;
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
    let (h1, h2) = (common::user_dir(), common::user_dir());
    let mut first = Agent(server.agent(h1.path(), &["--name", "first"])?);
    let id = server.submit(
        &job(
            "  - name: work\n    run: echo working; sleep 3; mkdir -p out; echo done > out/result\n",
            "artifacts: [out/result]\n",
        ),
        None,
    )?;
    server.wait_log(id, "working", Duration::from_secs(30))?;
    first.0.kill()?; // SIGKILL: no goodbye, the lease just stops renewing
    first.0.wait()?;
    let _second = Agent(server.agent(h2.path(), &["--name", "second", "--ephemeral"])?);
    let j = server.wait(id, Duration::from_secs(60))?;
    let log = server.log(id)?;
    assert_eq!(j.state, JobState::Succeeded, "{log}");
    assert_eq!(j.attempts, 2, "{log}");
    assert!(log.contains("attempt 2 on runner second"), "{log}");
    let arts = server.admin().artifacts(id)?.artifacts;
    assert_eq!(arts.len(), 1);
    Ok(())
}

#[test]
fn sigterm_drains_then_cancels_and_a_restart_reuses_the_token() -> Result<()> {
    let server = Server::start(&[])?;
    let home = common::user_dir();
    let mut agent = Agent(server.agent(home.path(), &["--drain", "1s"])?);
    let id = server.submit(
        &job("  - name: long\n    run: echo started; sleep 60\n", ""),
        None,
    )?;
    server.wait_log(id, "started", Duration::from_secs(30))?;
    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGTERM)?;
    let j = server.wait(id, Duration::from_secs(30))?;
    assert_eq!(j.state, JobState::Cancelled);
    assert!(j.reason.unwrap_or_default().contains("shut down"));
    let status = agent.0.wait()?;
    assert_eq!(status.code(), Some(0));

    // Restarted without a registration token, it reuses its stored runner token.
    let _again = Agent(
        common::pinfold()
            .env("PINFOLD_HOME", home.path())
            .env("RUST_LOG", "warn")
            .args(["agent", "--server", &server.url, "--ephemeral"])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let id = server.submit(&job("  - name: a\n    run: echo again\n", ""), None)?;
    let j = server.wait(id, Duration::from_secs(30))?;
    assert_eq!(j.state, JobState::Succeeded, "{}", server.log(id)?);
    assert_eq!(server.admin().runners()?.len(), 1);
    Ok(())
}

fn run_local(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let o = common::pinfold()
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
    std::fs::write(
        dir.join("job.yaml"),
        job(
            "  - name: build\n    run: mkdir -p out; cat input > out/app; echo tok=$TOKEN\n  - name: link\n    run: ln -s /etc/passwd out/passwd\n",
            "secrets: [TOKEN]\nartifacts: [out/*]\n",
        ),
    )?;
    sh(&format!("chmod -R a+rwX '{}'", dir.display()));
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
    let verify = || {
        common::pinfold()
            .args(["attest", "verify"])
            .arg(&statement)
            .arg("--key")
            .arg(&key)
            .arg("--json")
            .output()
            .expect("run pinfold attest")
    };
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
    std::fs::write(
        dir.join("fail.yaml"),
        job("  - name: f\n    run: exit 7\n", ""),
    )?;
    let (code, out, _) = run_local(dir, &["fail.yaml", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(v["state"], "failed");
    assert_eq!(v["steps"][0]["exit_code"], 7);

    // A malformed job file: one clear line naming the file and the line.
    std::fs::write(
        dir.join("bad.yaml"),
        job("  - name: x\n    run: y\n", "stepz: 1\n"),
    )?;
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
    let j = server.wait(id, Duration::from_secs(90))?;
    let log = server.log(id)?;
    assert_eq!(j.state, JobState::Succeeded, "{log}");
    assert_eq!(j.attempts, 1, "the job ran once: {log}");
    let body = step_output(&log, "print")?;
    let want = seq(300_000);
    assert_eq!(body.len(), want.len(), "no byte lost or duplicated");
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
    let home = common::user_dir();
    let _agent = Agent(server.agent(home.path(), &["--request-timeout", "2s"])?);
    let id = server.submit(&job(BURSTS, ""), None)?;
    server.wait_log(id, "\n50000\n", Duration::from_secs(30))?;
    // Down for 1.5 s while the job prints its second burst into the spool.
    server.kill9_and_restart(Duration::from_millis(1500))?;
    assert_whole_log(&server, id)
}

#[test]
fn a_server_stopped_past_the_request_timeout_then_continued() -> Result<()> {
    // The pause is longer than the agent's request timeout and the lease.
    let server = Server::start(&["--lease-ttl", "3s"])?;
    let home = common::user_dir();
    let mut agent = Agent(server.agent(home.path(), &["--request-timeout", "1s"])?);
    let id = server.submit(&job(BURSTS, ""), None)?;
    server.wait_log(id, "\n50000\n", Duration::from_secs(30))?;
    server.signal(Signal::SIGSTOP)?;
    std::thread::sleep(Duration::from_secs(5));
    server.signal(Signal::SIGCONT)?;
    assert_whole_log(&server, id)?;
    // The agent carries on with the next job.
    assert!(agent.0.try_wait()?.is_none(), "the agent exited");
    let next = server.submit(
        &job("  - name: a\n    run: echo after the pause\n", ""),
        None,
    )?;
    let j = server.wait(next, Duration::from_secs(30))?;
    assert_eq!(j.state, JobState::Succeeded, "{}", server.log(next)?);
    Ok(())
}
