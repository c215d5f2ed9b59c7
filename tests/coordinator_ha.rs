//! Several coordinators on one PostgreSQL database behind a real load
//! balancer: two `pinfold server --store postgres://...` processes, Debian's
//! haproxy in front of them, real `pinfold agent` processes and the real
//! CLI pointed at haproxy only, and a PostgreSQL cluster the test starts
//! itself (coordinator/tests/pg). One coordinator is killed with SIGKILL
//! while jobs run: every job still ends, once, with its whole log.

mod common;
#[path = "../coordinator/tests/pg/mod.rs"]
mod pg;
#[path = "common/server.rs"]
mod server;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use pinfold_api::wire::{JobInfo, JobState, SubmitRequest};
use pinfold_client::Client;

use common::KillOnDrop;
use pg::haproxy::Haproxy;
use server::{ADMIN, REG, admin_cli, free_port, spawn_server};

/// A coordinator on the shared database.
struct Coordinator {
    child: KillOnDrop,
    _home: tempfile::TempDir,
    port: u16,
}

impl Coordinator {
    fn start(url: &str, extra: &[&str]) -> Result<Coordinator> {
        let home = tempfile::tempdir()?;
        let port = free_port();
        let mut args = vec!["--store", url];
        args.extend_from_slice(extra);
        let child = KillOnDrop(spawn_server(home.path(), port, &args)?);
        Ok(Coordinator {
            child,
            _home: home,
            port,
        })
    }
}

fn agent(home: &Path, server: &str) -> Result<KillOnDrop> {
    Ok(KillOnDrop(
        common::pinfold()
            .env("PINFOLD_HOME", home)
            .env("RUST_LOG", "warn")
            .env("PINFOLD_ALLOW_LOCAL_IMAGES", "true")
            .args(["agent", "--server", server, "--registration-token", REG])
            .args(["--concurrency", "2", "--grace", "2s"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    ))
}

/// What job `n` prints: 3,000 numbered lines (about 60 KiB), shipped in
/// several appends, so that appends land on both coordinators.
fn expected_log(n: usize) -> String {
    (1..=3000).map(|i| format!("job {n} line {i}\n")).collect()
}

fn job_yaml(n: usize) -> String {
    job_yaml_for(n, 1)
}

/// As [`job_yaml`], then sleeping `secs`.
fn job_yaml_for(n: usize, secs: u32) -> String {
    format!(
        "image: {}\nsteps:\n  - name: print\n    run: i=1; while [ $i -le 3000 ]; do echo \"job {n} line $i\"; i=$((i+1)); done; sleep {secs}\n",
        common::busybox_image()
    )
}

/// GETs through `admin` until it answers (a request can land on the
/// coordinator just killed before haproxy marks it down).
fn with_retry<T>(mut f: impl FnMut() -> pinfold_client::Result<T>) -> Result<T> {
    let t = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable() && t.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn log_of(admin: &Client, id: u64) -> Result<String> {
    let (mut all, mut at) = (Vec::new(), 0);
    loop {
        let (data, next, complete) = with_retry(|| admin.read_log(id, at))?;
        all.extend_from_slice(&data);
        if data.is_empty() || complete || next == at {
            return Ok(String::from_utf8_lossy(&all).into_owned());
        }
        at = next;
    }
}

fn wait_terminal(admin: &Client, id: u64, within: Duration) -> Result<JobInfo> {
    let t = Instant::now();
    loop {
        let j = with_retry(|| admin.job(id))?;
        if j.state.is_terminal() {
            return Ok(j);
        }
        if t.elapsed() > within {
            bail!("job {id} still {:?} after {within:?}", j.state);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Submits `count` jobs through `admin`, job `n` printing its lines and
/// then sleeping `secs`; their numbers and ids.
fn submit_jobs(admin: &Client, count: usize, secs: u32) -> Result<Vec<(usize, u64)>> {
    let mut ids = Vec::new();
    for n in 0..count {
        let spec = job_yaml_for(n, secs);
        let id = with_retry(|| {
            admin.submit(&SubmitRequest {
                spec: spec.clone(),
                labels: vec![],
                source_sha256: None,
            })
        })?
        .job_id;
        ids.push((n, id));
    }
    Ok(ids)
}

/// Waits until some job runs (its log half shipped), or fails after 60 s.
fn wait_until_running(admin: &Client) -> Result<()> {
    let t = Instant::now();
    while with_retry(|| admin.jobs(Some("running"), 10))?
        .jobs
        .is_empty()
    {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "no job started");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `pinfold submit --wait` of one more job through `server`.
fn submit_and_wait_with_the_cli(server: &str) -> Result<()> {
    let dir = common::user_dir();
    let file = dir.path().join("after.yaml");
    std::fs::write(&file, job_yaml(100))?;
    let out = admin_cli(server)
        .args(["submit", "--wait"])
        .arg(&file)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "submit --wait: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Each job succeeded in its first attempt (none lost, none run twice),
/// and its log holds its output whole and once.
fn each_ran_once_with_its_whole_log(admin: &Client, ids: Vec<(usize, u64)>) -> Result<()> {
    for (n, id) in ids {
        let j = wait_terminal(admin, id, Duration::from_secs(120))?;
        assert_eq!(j.state, JobState::Succeeded, "job {n}: {j:?}");
        assert_eq!(j.attempts, 1, "job {n} ran more than once: {j:?}");
        let log = log_of(admin, id)?;
        assert!(
            log.contains(&expected_log(n)),
            "job {n}: its output, whole and once, is in its log ({} bytes)",
            log.len()
        );
        assert_eq!(log.matches("line 3000\n").count(), 1, "job {n}");
    }
    Ok(())
}

/// Two coordinators behind haproxy, two agents; one coordinator is killed
/// (SIGKILL) while jobs run and ship logs. Every job succeeds in its first
/// attempt (none lost, none run twice), every log is exactly what the job
/// printed (no byte lost or repeated), and `pinfold submit --wait` through
/// haproxy works after the kill.
#[test]
fn jobs_survive_a_coordinator_killed_behind_the_load_balancer() -> Result<()> {
    let url = pg::cluster().database();
    let mut a = Coordinator::start(&url, &[])?;
    let b = Coordinator::start(&url, &[])?;
    let lb = Haproxy::start(&[a.port, b.port]);
    let homes = [common::user_dir(), common::user_dir()];
    let _agents = [
        agent(homes[0].path(), &lb.url())?,
        agent(homes[1].path(), &lb.url())?,
    ];
    let admin = Client::new(&lb.url(), Some(ADMIN.into()), Duration::from_secs(10));
    let ids = submit_jobs(&admin, 8, 1)?;
    wait_until_running(&admin)?;
    a.child.0.kill()?; // SIGKILL
    a.child.0.wait()?;
    // The CLI through the load balancer, after the kill.
    submit_and_wait_with_the_cli(&lb.url())?;
    each_ran_once_with_its_whole_log(&admin, ids)?;
    drop(b);
    Ok(())
}

/// PostgreSQL itself restarted while jobs run, down for longer than a
/// lease lives (3 s here): a request meanwhile fails with 503 and a line
/// that says to retry (not a 500), the agent retries with backoff, and once
/// the database is back the coordinator gives every lease its time again
/// before it looks for expired ones, so every job ends in its first attempt
/// with its whole log.
#[test]
fn jobs_survive_a_postgresql_restart() -> Result<()> {
    // A cluster of its own: the shared one serves the other tests.
    let cluster = pg::Cluster::start(&["fsync=off"]);
    let url = cluster.database();
    let c = Coordinator::start(&url, &["--lease-ttl", "3s"])?;
    let server = format!("http://127.0.0.1:{}", c.port);
    let home = common::user_dir();
    let _agent = agent(home.path(), &server)?;
    let admin = Client::new(&server, Some(ADMIN.into()), Duration::from_secs(10));
    let ids = submit_jobs(&admin, 4, 8)?;
    wait_until_running(&admin)?;
    cluster.stop();
    let down = admin.job(ids[0].1).expect_err("the database is down");
    assert_eq!(down.status(), Some(503), "{down}");
    assert!(down.to_string().contains("retry"), "{down}");
    std::thread::sleep(Duration::from_secs(5));
    cluster.start_again();
    each_ran_once_with_its_whole_log(&admin, ids)
}

/// Without a load balancer: the agent and the CLI are given both
/// coordinators' URLs, and the first is killed (SIGKILL) while jobs run.
/// They go on through the second: every job succeeds in its first attempt
/// with its whole log, and `pinfold submit --wait` works after the kill.
#[test]
fn agents_given_several_coordinators_fail_over_without_a_balancer() -> Result<()> {
    let url = pg::cluster().database();
    let mut a = Coordinator::start(&url, &[])?;
    let b = Coordinator::start(&url, &[])?;
    let servers = format!("http://127.0.0.1:{},http://127.0.0.1:{}", a.port, b.port);
    let home = common::user_dir();
    let _agent = agent(home.path(), &servers)?;
    let admin = Client::new(&servers, Some(ADMIN.into()), Duration::from_secs(10));
    let ids = submit_jobs(&admin, 6, 1)?;
    wait_until_running(&admin)?;
    a.child.0.kill()?; // SIGKILL
    a.child.0.wait()?;
    submit_and_wait_with_the_cli(&servers)?;
    each_ran_once_with_its_whole_log(&admin, ids)?;
    drop(b);
    Ok(())
}
