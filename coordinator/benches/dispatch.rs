//! Benchmarks (never assertions): dispatch throughput with 50 concurrent
//! simulated runners leasing and finishing no-op jobs, and log ingest
//! throughput for one job, against the SQLite store over real HTTP.
//!
//! `cargo bench -p pinfold-coordinator --bench dispatch [-- JOBS LOG_MIB RUNS]`
//! Prints each run and the median.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pinfold_api::wire::{FinishRequest, JobState, SubmitRequest};
use pinfold_client::Client;
use pinfold_coordinator::Config;

const ADMIN: &str = "pfa_bench";
const REG: &str = "pfg_bench";
const RUNNERS: usize = 50;
const SPEC: &str = "image: busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nsteps:\n  - name: noop\n    run: 'true'\n";

struct Server {
    url: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let config = Config {
                max_log_bytes: 4 << 30,
                ..Config::default()
            };
            let (state, _) = pinfold_coordinator::open(
                &path,
                config,
                Some(ADMIN.into()),
                Some(REG.into()),
                BTreeMap::new(),
            )
            .await
            .unwrap();
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(l.local_addr().unwrap()).unwrap();
            pinfold_coordinator::serve(l, state, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    let addr = addr_rx.recv().unwrap();
    Server {
        url: format!("http://{addr}"),
        _dir: dir,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

fn client(url: &str, token: &str) -> Client {
    Client::new(url, Some(token.into()), Duration::from_secs(30))
}

fn dispatch(jobs: usize) -> f64 {
    let srv = start();
    let admin = client(&srv.url, ADMIN);
    std::thread::scope(|s| {
        for part in 0..8 {
            let admin = admin.clone();
            s.spawn(move || {
                for _ in (part..jobs).step_by(8) {
                    admin
                        .submit(&SubmitRequest {
                            spec: SPEC.into(),
                            labels: vec![],
                            source_sha256: None,
                        })
                        .unwrap();
                }
            });
        }
    });
    // Each simulated runner has its own client and connections, as
    // separate runner processes would.
    let reg = client(&srv.url, REG);
    let runners: Vec<Client> = (0..RUNNERS)
        .map(|i| {
            let token = reg.register(&format!("bench-{i}"), &[]).unwrap().token;
            client(&srv.url, &token)
        })
        .collect();
    let start = Instant::now();
    let done: usize = std::thread::scope(|s| {
        let handles: Vec<_> = runners
            .iter()
            .map(|r| {
                s.spawn(move || {
                    let mut n = 0;
                    while let Some(lease) = r.lease(0).unwrap() {
                        r.with_token(&lease.job_token)
                            .finish(
                                lease.job_id,
                                &FinishRequest {
                                    state: JobState::Succeeded,
                                    reason: None,
                                    steps: vec![],
                                },
                            )
                            .unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(done, jobs);
    jobs as f64 / secs
}

fn log_ingest(mib: usize) -> f64 {
    let srv = start();
    let admin = client(&srv.url, ADMIN);
    let job = admin
        .submit(&SubmitRequest {
            spec: SPEC.into(),
            labels: vec![],
            source_sha256: None,
        })
        .unwrap()
        .job_id;
    let reg = client(&srv.url, REG);
    let runner = reg.with_token(&reg.register("bench", &[]).unwrap().token);
    let lease = runner.lease(0).unwrap().unwrap();
    let j = runner.with_token(&lease.job_token);
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i| b"log line of a build\n"[i % 20])
        .collect();
    let start = Instant::now();
    let mut offset = 0;
    for _ in 0..mib {
        offset = j.append_log(job, offset, &chunk).unwrap().offset;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(offset, (mib as u64) << 20);
    assert_eq!(admin.job(job).unwrap().log_bytes, offset);
    mib as f64 * 1.048576 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let jobs = args.first().copied().unwrap_or(5000);
    let mib = args.get(1).copied().unwrap_or(256);
    let runs = args.get(2).copied().unwrap_or(5);
    let mut d = Vec::new();
    for i in 0..runs {
        let r = dispatch(jobs);
        println!("dispatch run {i}: {jobs} jobs, {RUNNERS} runners: {r:.0} jobs/s");
        d.push(r);
    }
    let mut l = Vec::new();
    for i in 0..runs {
        let r = log_ingest(mib);
        println!("log ingest run {i}: {mib} MiB in 1 MiB appends: {r:.0} MB/s");
        l.push(r);
    }
    println!("median dispatch: {:.0} jobs/s", median(d));
    println!("median log ingest: {:.0} MB/s", median(l));
}
