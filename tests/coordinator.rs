//! End-to-end tests of the coordinator: the real `pinfold server` binary on
//! 127.0.0.1 with its own PINFOLD_HOME, the real CLI, and a test runner
//! (the protocol client of pinfold-coordinator, driven as an agent would).

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinfold_api::wire::{FinishRequest, JobState, Lease, StepResult, SubmitRequest};
use pinfold_client::{Client, ClientError};

#[path = "common/pty.rs"]
mod pty;
#[path = "common/server.rs"]
mod server;

use server::{ADMIN, BIN, REG, SECRET, admin_cli, free_port, spawn_server};

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Server {
    child: Child,
    home: tempfile::TempDir,
    port: u16,
    args: Vec<String>,
}

impl Server {
    /// A server on a free port over a fresh PINFOLD_HOME.
    fn start(args: &[&str]) -> Result<Server> {
        let home = tempfile::tempdir()?;
        let port = free_port();
        Ok(Server {
            child: spawn_server(home.path(), port, args)?,
            home,
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn admin(&self) -> Client {
        Client::new(&self.url(), Some(ADMIN.into()), Duration::from_secs(10))
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("signal the server");
    }

    fn kill9_and_restart(&mut self) -> Result<()> {
        self.child.kill()?; // SIGKILL
        self.child.wait()?;
        self.child = spawn_server(self.home.path(), self.port, &self.args)?;
        Ok(())
    }

    /// A registered runner with `labels`.
    fn runner(&self, labels: &[&str]) -> Result<Client> {
        let reg = Client::new(&self.url(), Some(REG.into()), Duration::from_secs(10));
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let r = reg.register("test-runner", &labels)?;
        Ok(reg.with_token(&r.token))
    }

    /// The CLI as the admin against this server, over its PINFOLD_HOME.
    fn cli(&self) -> Command {
        let mut c = admin_cli(&self.url());
        c.env("PINFOLD_HOME", self.home.path());
        c
    }

    fn pinfold(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().expect("run pinfold")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal(Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn job_yaml(extra: &str) -> String {
    format!(
        "image: docker://127.0.0.1:5000/busybox@sha256:{DIGEST}\nsecrets: [DEPLOY_KEY]\nsteps:\n  - name: build\n    run: sh build.sh\n  - name: test\n    run: sh test.sh\n{extra}"
    )
}

fn submit(admin: &Client) -> Result<u64> {
    Ok(admin
        .submit(&SubmitRequest {
            spec: job_yaml(""),
            labels: vec![],
            source_sha256: None,
        })?
        .job_id)
}

fn lease(runner: &Client) -> Result<Lease> {
    runner.lease(10)?.context("no job leased within 10 s")
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn steps() -> Vec<StepResult> {
    ["build", "test"]
        .into_iter()
        .map(|n| StepResult {
            name: n.into(),
            exit_code: Some(0),
            started_at: Some(1),
            finished_at: Some(2),
        })
        .collect()
}

fn finish(job: &Client, id: u64, state: JobState) -> Result<()> {
    job.finish(
        id,
        &FinishRequest {
            state,
            reason: None,
            steps: steps(),
        },
    )?;
    Ok(())
}

/// Appends `data` from `offset` the way an agent should: retry on transport
/// errors, resume from the server's expected offset on a gap.
fn ship(job: &Client, id: u64, mut offset: u64, data: &[u8], deadline: Duration) -> Result<u64> {
    let end = offset + data.len() as u64;
    let base = offset;
    let start = Instant::now();
    while offset < end {
        let chunk =
            &data[(offset - base) as usize..((offset - base) as usize + 4096).min(data.len())];
        match job.append_log(id, offset, chunk) {
            Ok(r) => offset = r.offset,
            Err(ClientError::Http {
                expected_offset: Some(e),
                ..
            }) => offset = e,
            Err(e @ (ClientError::Transport(_) | ClientError::Io(_))) => {
                if start.elapsed() > deadline {
                    bail!("gave up shipping the log: {e}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(offset)
}

#[test]
fn submit_wait_runs_through_a_test_runner_with_source_logs_and_artifacts() -> Result<()> {
    let srv = Server::start(&[])?;
    // Declaring `deploy` itself unlocks nothing; the admin trusts it below.
    let runner = srv.runner(&["linux", "x86_64", "deploy"])?;
    let id = srv.admin().runners()?[0].id.to_string();
    let out = srv.pinfold(&["runners", "label", &id, "--add", "deploy"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("runner {id}: trusted labels [deploy]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let src = tempfile::tempdir()?;
    std::fs::write(src.path().join("build.sh"), "echo building\n")?;
    std::fs::create_dir(src.path().join("sub"))?;
    std::fs::write(src.path().join("sub/data"), "payload")?;
    let job_file = srv.home.path().join("job.yaml");
    std::fs::write(&job_file, job_yaml("artifacts: [out/app]\n"))?;

    // The user: submit --wait in the background, like a CI step would.
    let submitter = admin_cli(&srv.url())
        .args(["submit", "--label", "linux", "--wait", "--source"])
        .arg(src.path())
        .arg(&job_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;

    // The runner.
    let l = lease(&runner)?;
    assert_eq!(l.attempt, 1);
    assert_eq!(
        l.secrets.get("DEPLOY_KEY").map(String::as_str),
        Some(SECRET)
    );
    let job = runner.with_token(&l.job_token);
    let mut tar = Vec::new();
    let announced = job.download_source(l.job_id, &mut tar)?;
    assert_eq!(sha256(&tar), announced);
    assert_eq!(Some(announced), l.source_sha256);
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries()? {
        names.push(e?.path()?.display().to_string());
    }
    assert_eq!(names, ["build.sh", "sub", "sub/data"]);

    assert!(!job.heartbeat(l.job_id)?.cancel);
    let log = format!("== step build\nbuilding with key {SECRET}\n== step test\nok\n");
    let (a, b) = log.as_bytes().split_at(30); // splits the secret
    ship(&job, l.job_id, 0, a, Duration::from_secs(5))?;
    ship(&job, l.job_id, a.len() as u64, b, Duration::from_secs(5))?;
    let artifact = b"\x7fELF pretend binary".to_vec();
    job.upload_artifact(l.job_id, "out/app", &sha256(&artifact), &mut &artifact[..])?;
    finish(&job, l.job_id, JobState::Succeeded)?;

    let out = submitter.wait_with_output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let masked = log.replace(SECRET, "***");
    assert_eq!(stdout, masked, "submit --wait streams the masked log");

    let id = l.job_id.to_string();
    let logs = srv.pinfold(&["logs", &id]);
    assert_eq!(String::from_utf8(logs.stdout)?, masked);
    let dl = tempfile::tempdir()?;
    let out = srv.pinfold(&["artifacts", &id, "--out", dl.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dl.path().join("out/app"))?, artifact);
    let status: serde_json::Value =
        serde_json::from_slice(&srv.pinfold(&["status", &id, "--json"]).stdout)?;
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["steps"][1]["name"], "test");
    let jobs: serde_json::Value = serde_json::from_slice(&srv.pinfold(&["jobs", "--json"]).stdout)?;
    assert_eq!(jobs["jobs"][0]["id"], l.job_id);
    Ok(())
}

/// A raw HTTP/1.1 PUT of `body` to `path`; returns the status code and the body.
fn raw_put(port: u16, path: &str, token: &str, body: &[u8]) -> Result<(u16, String)> {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        c,
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    c.write_all(body)?;
    let mut resp = String::new();
    c.read_to_string(&mut resp)?;
    let code = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    Ok((code, resp))
}

/// Issue 13 point 9, past the agent: a hostile runner ships a log with
/// terminal escapes and uploads hidden artifact names by raw HTTP (the
/// server refuses them); a hidden name already in the database (an older
/// server) is refused by `pinfold artifacts --out`, which writes nothing;
/// `pinfold logs` on a terminal shows no ESC byte unless --raw.
#[test]
fn hostile_runner_output_and_hidden_artifact_names_are_refused() -> Result<()> {
    let srv = Server::start(&[])?;
    let runner = srv.runner(&["linux"])?;
    let id = submit(&srv.admin())?;
    let l = lease(&runner)?;
    let job = runner.with_token(&l.job_token);
    let log = b"\x1b]52;c;ZXZpbA==\x07\x1b[2Ahidden\n\x9b1A\xc2\x9b2J done\n";
    ship(&job, id, 0, log, Duration::from_secs(5))?;

    let content = b"#!/bin/sh\nevil\n".to_vec();
    for name in [".git/hooks/pre-commit", ".env", "out/.hidden", "a/../b"] {
        let path = format!(
            "/api/v1/jobs/{id}/artifacts/{name}?sha256={}",
            sha256(&content)
        );
        let (code, resp) = raw_put(srv.port, &path, &l.job_token, &content)?;
        assert_eq!(code, 400, "{name}: {resp}");
    }
    job.upload_artifact(id, "out/app", &sha256(&content), &mut &content[..])?;
    finish(&job, id, JobState::Succeeded)?;
    assert_eq!(srv.admin().artifacts(id)?.artifacts.len(), 1);

    // An older server let one in: the download refuses it before writing.
    let db = rusqlite::Connection::open_with_flags(
        srv.home.path().join("coordinator/coordinator.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
    )?;
    db.busy_timeout(Duration::from_secs(5))?;
    db.execute(
        "INSERT INTO artifacts (job_id, name, size, sha256) VALUES (?1, '.git/hooks/pre-commit', ?2, ?3)",
        rusqlite::params![id as i64, content.len() as i64, sha256(&content)],
    )?;
    drop(db);
    let dl = tempfile::tempdir()?;
    let out = srv.pinfold(&[
        "artifacts",
        &id.to_string(),
        "--out",
        dl.path().to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(".git/hooks/pre-commit") && err.contains("starting with '.'"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dl.path())?.count(),
        0,
        "something was written"
    );

    // `pinfold logs` on a terminal: escaped; --raw: as shipped.
    let logs = |extra: &[&str]| {
        let mut c = srv.cli();
        c.args(["logs", &id.to_string()])
            .args(extra)
            .stdin(Stdio::null());
        pty::run_on_pty(c)
    };
    let (code, seen, err) = logs(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(!seen.contains(&0x1b), "{:?}", pty::text(&seen));
    assert!(!seen.contains(&0x9b), "{:?}", pty::text(&seen));
    assert_eq!(
        pty::text(&seen),
        "\\x1b]52;c;ZXZpbA==\\x07\\x1b[2Ahidden\n\\x9b1A\\u{9b}2J done\n"
    );
    let (code, seen, err) = logs(&["--raw"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        seen.windows(5).any(|w| w == b"\x1b]52;"),
        "{:?}",
        pty::text(&seen)
    );
    // Not a terminal: the bytes as shipped (scripts and files get them whole).
    assert_eq!(srv.pinfold(&["logs", &id.to_string()]).stdout, log);
    Ok(())
}

#[test]
fn submit_wait_exits_with_the_jobs_status() -> Result<()> {
    let srv = Server::start(&[])?;
    let runner = srv.runner(&[])?;
    let job_file = srv.home.path().join("job.yaml");
    std::fs::write(&job_file, job_yaml(""))?;
    for (state, code) in [
        (JobState::Failed, 1),
        (JobState::TimedOut, 124),
        (JobState::Error, 125),
    ] {
        let waiter = admin_cli(&srv.url())
            .args(["submit", "--wait"])
            .arg(&job_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let l = lease(&runner)?;
        finish(&runner.with_token(&l.job_token), l.job_id, state)?;
        assert_eq!(
            waiter.wait_with_output()?.status.code(),
            Some(code),
            "{state:?}"
        );
    }
    // Cancel a running job: the runner learns it from its heartbeat.
    let id = submit(&srv.admin())?;
    let l = lease(&runner)?;
    let out = srv.pinfold(&["cancel", &id.to_string()]);
    assert!(String::from_utf8(out.stdout)?.contains("cancel requested"));
    let job = runner.with_token(&l.job_token);
    assert!(job.heartbeat(id)?.cancel);
    finish(&job, id, JobState::Cancelled)?;
    assert_eq!(srv.admin().job(id)?.state, JobState::Cancelled);
    Ok(())
}

#[test]
fn an_expired_lease_goes_to_a_second_runner_and_the_first_is_fenced() -> Result<()> {
    let srv = Server::start(&["--lease-ttl", "1s"])?;
    let (r1, r2) = (srv.runner(&[])?, srv.runner(&[])?);
    let id = submit(&srv.admin())?;
    let l1 = lease(&r1)?;
    let j1 = r1.with_token(&l1.job_token);
    ship(&j1, id, 0, b"attempt 1 started\n", Duration::from_secs(5))?;
    // Runner 1 dies: no more heartbeats. Runner 2 long-polls and gets it.
    let l2 = lease(&r2)?;
    assert_eq!((l2.job_id, l2.attempt, l2.log_offset), (id, 2, 18));
    let j2 = r2.with_token(&l2.job_token);
    for result in [
        j1.heartbeat(id).map(drop),
        j1.append_log(id, 18, b"zombie\n").map(drop),
        j1.finish(
            id,
            &FinishRequest {
                state: JobState::Succeeded,
                reason: None,
                steps: vec![],
            },
        )
        .map(drop),
    ] {
        let err = result.expect_err("a stale attempt must be refused");
        assert_eq!(err.status(), Some(409), "{err}");
        assert!(err.to_string().contains("stale lease"), "{err}");
    }
    ship(&j2, id, 18, b"attempt 2 done\n", Duration::from_secs(5))?;
    finish(&j2, id, JobState::Succeeded)?;
    let info = srv.admin().job(id)?;
    assert_eq!((info.state, info.attempts), (JobState::Succeeded, 2));
    assert_eq!(
        srv.admin().read_log(id, 0)?.0,
        b"attempt 1 started\nattempt 2 done\n"
    );
    Ok(())
}

#[test]
fn a_runner_lost_max_attempts_times_fails_the_job() -> Result<()> {
    let srv = Server::start(&["--lease-ttl", "1s", "--max-attempts", "2"])?;
    let r = srv.runner(&[])?;
    let id = submit(&srv.admin())?;
    lease(&r)?;
    lease(&r)?; // the requeued job, attempt 2; then let it expire too
    let start = Instant::now();
    loop {
        let info = srv.admin().job(id)?;
        if info.state.is_terminal() {
            assert_eq!(info.state, JobState::Error);
            assert!(info.reason.unwrap_or_default().contains("runner lost"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "job never failed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = ureq::get(format!("{}/metrics", srv.url()))
        .call()?
        .into_body()
        .read_to_string()?;
    assert!(m.contains("pinfold_leases_expired_total 2"), "{m}");
    assert!(
        m.contains("pinfold_jobs_finished_total{outcome=\"error\"} 1"),
        "{m}"
    );
    Ok(())
}

#[test]
fn a_server_killed_and_restarted_loses_no_job_or_log_byte() -> Result<()> {
    let mut srv = Server::start(&[])?;
    let runner = srv.runner(&[])?;
    let id = submit(&srv.admin())?;
    let queued = submit(&srv.admin())?;
    let l = lease(&runner)?;
    let job = runner.with_token(&l.job_token);
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| b"0123456789abcdef\n"[(i % 17) as usize])
        .collect();
    let (first, second) = data.split_at(120_000);
    let offset = ship(&job, id, 0, first, Duration::from_secs(10))?;

    srv.kill9_and_restart()?;

    // The same tokens work, the lease survived, the log resumes where it was.
    assert!(!job.heartbeat(id)?.cancel);
    let offset = ship(&job, id, offset, second, Duration::from_secs(10))?;
    assert_eq!(offset, data.len() as u64);
    finish(&job, id, JobState::Succeeded)?;
    let admin = srv.admin();
    let mut log = Vec::new();
    admin.follow_log(id, 0, &mut log)?;
    assert_eq!(sha256(&log), sha256(&data));
    assert_eq!(admin.job(queued)?.state, JobState::Queued);
    assert_eq!(lease(&runner)?.job_id, queued);
    Ok(())
}

#[test]
fn a_server_paused_past_the_request_timeout_keeps_the_log_whole() -> Result<()> {
    let srv = Server::start(&["--lease-ttl", "2s"])?;
    let runner = srv.runner(&[])?;
    let id = submit(&srv.admin())?;
    let l = lease(&runner)?;
    // Requests time out after 500 ms; the server stops for 3 s, longer than
    // the lease TTL too.
    let job = Client::new(
        &srv.url(),
        Some(l.job_token.clone()),
        Duration::from_millis(500),
    );
    let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let shipper = {
        let job = job.clone();
        let data = data.clone();
        std::thread::spawn(move || -> Result<u64> {
            let mut offset = 0;
            for part in data.chunks(16_384) {
                offset = ship(&job, id, offset, part, Duration::from_secs(30))?;
                let _ = job.heartbeat(id);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(offset)
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    srv.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    srv.signal(Signal::SIGCONT);
    let sent = shipper.join().expect("shipper thread")?;
    assert_eq!(sent, data.len() as u64);
    // The lease outlived the pause: the server does not blame runners for
    // its own absence.
    assert!(!job.heartbeat(id)?.cancel);
    finish(&job, id, JobState::Succeeded)?;
    let mut log = Vec::new();
    srv.admin().follow_log(id, 0, &mut log)?;
    assert_eq!(log.len(), data.len(), "no byte lost or duplicated");
    assert_eq!(sha256(&log), sha256(&data));
    Ok(())
}

#[test]
fn tokens_are_refused_outside_their_scope() -> Result<()> {
    let srv = Server::start(&[])?;
    let r = srv.runner(&[])?;
    let (a, b) = (submit(&srv.admin())?, submit(&srv.admin())?);
    let la = lease(&r)?;
    let lb = lease(&r)?;
    assert_eq!((la.job_id, lb.job_id), (a, b));
    let ja = r.with_token(&la.job_token);
    let err = ja
        .append_log(b, 0, b"x")
        .expect_err("job a's token on job b");
    assert_eq!(err.status(), Some(403));
    assert!(
        err.to_string()
            .contains(&format!("for job {a}, not job {b}")),
        "{err}"
    );
    let err = ja
        .finish(
            b,
            &FinishRequest {
                state: JobState::Succeeded,
                reason: None,
                steps: vec![],
            },
        )
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    let err = ja.artifacts(a).unwrap_err();
    assert_eq!(err.status(), Some(401), "a job token is not an admin token");

    let runners = srv.admin().runners()?;
    srv.admin().revoke_runner(runners[0].id)?;
    let err = r.lease(0).unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(err.to_string().contains("revoked"), "{err}");
    assert_eq!(ja.heartbeat(a).unwrap_err().status(), Some(403));
    let out = Command::new(BIN)
        .args(["jobs"])
        .env("PINFOLD_SERVER", srv.url())
        .env("PINFOLD_TOKEN", "pfa_wrong")
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)?.contains("(401): invalid admin token"));
    Ok(())
}

#[test]
fn malformed_jobs_and_oversized_bodies_get_clear_errors() -> Result<()> {
    let srv = Server::start(&[])?;
    let bad = srv.home.path().join("bad.yaml");
    std::fs::write(&bad, job_yaml("retries: 3\n"))?;
    let out = srv.pinfold(&["submit", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains("bad.yaml") && err.contains("line 8") && err.contains("retries"),
        "{err}"
    );

    let admin = srv.admin();
    let refused = |spec: String| {
        admin
            .submit(&SubmitRequest {
                spec,
                labels: vec![],
                source_sha256: None,
            })
            .unwrap_err()
    };
    let e = refused("image: busybox:latest\nsteps:\n  - name: a\n    run: b\n".into());
    assert_eq!(e.status(), Some(400));
    assert!(
        e.to_string().contains("line 1") && e.to_string().contains("not pinned"),
        "{e}"
    );
    let e = refused(job_yaml(&format!(
        "env: {{ X: \"{}\" }}\n",
        "x".repeat(2 << 20)
    )));
    assert_eq!(e.status(), Some(413), "{e}");
    assert!(e.to_string().contains("over the limit"), "{e}");

    let r = srv.runner(&[])?;
    let id = submit(&admin)?;
    let l = lease(&r)?;
    let e = r
        .with_token(&l.job_token)
        .append_log(id, 0, &vec![b'x'; 5 << 20])
        .unwrap_err();
    assert_eq!(e.status(), Some(413));
    assert!(e.to_string().contains("send smaller chunks"), "{e}");
    let mut body = &b"not what was announced"[..];
    let e = r
        .with_token(&l.job_token)
        .upload_artifact(id, "a", DIGEST, &mut body)
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("sha256 mismatch"), "{e}");
    let mut raw = String::new();
    ureq::get(format!("{}/api/v1/jobs", srv.url()))
        .config()
        .http_status_as_error(false)
        .build()
        .call()?
        .into_body()
        .into_reader()
        .read_to_string(&mut raw)?;
    assert!(raw.contains("\"error\""), "{raw}");
    Ok(())
}
