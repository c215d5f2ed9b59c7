//! Benchmarks (never assertions): dispatch throughput with 100 concurrent
//! simulated runners leasing and finishing no-op jobs, and log ingest
//! throughput for one job, over real HTTP, against three set-ups side by
//! side, the runs interleaved: the SQLite store (one coordinator), the
//! PostgreSQL store with one coordinator, and two coordinators on one
//! PostgreSQL database behind haproxy. PostgreSQL is a cluster of its own
//! (coordinator/tests/pg), with `synchronous_commit=off` (fsync on), the
//! durability class of the SQLite store's `synchronous=NORMAL`, and
//! `pg_stat_statements`, from which the database work per job is reported.
//!
//! `cargo bench -p pinfold-coordinator --bench dispatch [-- JOBS LOG_MIB RUNS]`
//! Prints each run and the medians.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/pg/mod.rs"]
mod pg;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pinfold_api::wire::{FinishRequest, JobState, SubmitRequest};
use pinfold_client::Client;
use pinfold_coordinator::Config;

const ADMIN: &str = "pfa_bench";
const REG: &str = "pfg_bench";
const RUNNERS: usize = 100;
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

/// A coordinator in this process: over SQLite in a temporary directory,
/// or over the PostgreSQL database `store`.
fn start(store: Option<&str>) -> Server {
    let store = store.map(str::to_string);
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
                store,
                ..Config::default()
            };
            let state = common::coordinator(&path, config, [ADMIN, REG], BTreeMap::new()).await;
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

/// One of the set-ups, started afresh for a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Sqlite,
    Pg1,
    Pg2,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Sqlite => "SQLite, 1 coordinator",
            Setup::Pg1 => "PostgreSQL, 1 coordinator",
            Setup::Pg2 => "PostgreSQL, 2 coordinators + haproxy",
        }
    }
}

/// A running set-up: its coordinators, the balancer, and the URL runners use.
struct Running {
    url: String,
    _servers: Vec<Server>,
    _lb: Option<pg::haproxy::Haproxy>,
    db: Option<String>,
}

fn run_setup(setup: Setup, cluster: &pg::Cluster) -> Running {
    match setup {
        Setup::Sqlite => {
            let s = start(None);
            Running {
                url: s.url.clone(),
                _servers: vec![s],
                _lb: None,
                db: None,
            }
        }
        Setup::Pg1 | Setup::Pg2 => {
            let url = cluster.database();
            let n = if setup == Setup::Pg1 { 1 } else { 2 };
            let servers: Vec<Server> = (0..n).map(|_| start(Some(&url))).collect();
            let (url_for_runners, lb) = if n == 1 {
                (servers[0].url.clone(), None)
            } else {
                let ports: Vec<u16> = servers
                    .iter()
                    .map(|s| s.url.rsplit(':').next().unwrap().parse().unwrap())
                    .collect();
                let lb = pg::haproxy::Haproxy::start(&ports);
                (lb.url(), Some(lb))
            };
            Running {
                url: url_for_runners,
                _servers: servers,
                _lb: lb,
                db: Some(url.rsplit('/').next().unwrap().to_string()),
            }
        }
    }
}

/// The database's work since the last reset: (statements, round trips)
/// from pg_stat_statements (a round trip: a statement or a transaction's
/// BEGIN or COMMIT), and the server processes' CPU time in ms.
fn db_work(cluster: &pg::Cluster, db: &str) -> (f64, f64, f64) {
    let calls = |filter: &str| -> f64 {
        cluster
            .psql(
                db,
                &format!(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid                      WHERE d.datname = current_database() AND {filter}"
                ),
            )
            .parse()
            .unwrap()
    };
    let statements =
        calls("query !~* '^(BEGIN|COMMIT|ROLLBACK)'") - calls("query ~* 'pg_stat_statements'");
    let round_trips = calls("true") - calls("query ~* 'pg_stat_statements'");
    (statements, round_trips, server_cpu_ms(cluster))
}

/// CPU time (user + system) of the cluster's processes, in ms.
fn server_cpu_ms(cluster: &pg::Cluster) -> f64 {
    let tick = 1000.0 / 100.0; // USER_HZ
    let mut ticks = 0u64;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, ... utime (14), stime (15).
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let pid: u32 = head
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let ppid: u32 = f.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if pid == cluster.pid() || ppid == cluster.pid() {
            ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ticks as f64 * tick
}

fn dispatch(setup: Setup, cluster: &pg::Cluster, jobs: usize) -> (f64, Option<(f64, f64, f64)>) {
    let srv = run_setup(setup, cluster);
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
    let before = srv.db.as_ref().map(|db| {
        cluster.psql(db, "SELECT pg_stat_statements_reset()");
        server_cpu_ms(cluster)
    });
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
    let work = srv.db.as_ref().zip(before).map(|(db, cpu0)| {
        if std::env::var_os("PINFOLD_BENCH_TOP").is_some() {
            // Where the database's time went: the costliest statements.
            println!(
                "{}",
                cluster.psql(
                    db,
                    "SELECT round(total_exec_time::numeric, 1) || ' ms, ' || calls || ' calls: ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 110) \
                     FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8"
                )
            );
        }
        let (st, rt, cpu) = db_work(cluster, db);
        let n = jobs as f64;
        (st / n, rt / n, (cpu - cpu0) / n)
    });
    (jobs as f64 / secs, work)
}

fn log_ingest(setup: Setup, cluster: &pg::Cluster, mib: usize) -> f64 {
    let srv = run_setup(setup, cluster);
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
    let jobs = args.first().copied().unwrap_or(10_000);
    let mib = args.get(1).copied().unwrap_or(256);
    let runs = args.get(2).copied().unwrap_or(3);
    let cluster = pg::Cluster::start(&[
        "synchronous_commit=off",
        "shared_preload_libraries=pg_stat_statements",
        "pg_stat_statements.track_utility=on",
    ]);
    cluster.psql("template1", "CREATE EXTENSION pg_stat_statements");
    let setups = [Setup::Sqlite, Setup::Pg1, Setup::Pg2];
    let mut d: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut w: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); 3];
    let mut l: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for i in 0..runs {
        // A different order each round, so that no set-up always runs
        // first (or last) in a round.
        for k in 0..3 {
            let s = (i + k) % 3;
            let (r, work) = dispatch(setups[s], &cluster, jobs);
            print!(
                "dispatch run {i}, {}: {jobs} jobs, {RUNNERS} runners: {r:.0} jobs/s",
                setups[s].name()
            );
            if let Some((st, rt, cpu)) = work {
                print!(
                    " ({st:.1} statements, {rt:.1} round trips, {cpu:.2} ms of database CPU per job)"
                );
                w[s].push((st, rt, cpu));
            }
            println!();
            d[s].push(r);
        }
        for k in 0..3 {
            let s = (i + k) % 3;
            let r = log_ingest(setups[s], &cluster, mib);
            println!(
                "log ingest run {i}, {}: {mib} MiB in 1 MiB appends: {r:.0} MB/s",
                setups[s].name()
            );
            l[s].push(r);
        }
    }
    for (s, setup) in setups.iter().enumerate() {
        print!(
            "median, {}: dispatch {:.0} jobs/s, log ingest {:.0} MB/s",
            setup.name(),
            median(d[s].clone()),
            median(l[s].clone())
        );
        if !w[s].is_empty() {
            let st = median(w[s].iter().map(|x| x.0).collect());
            let rt = median(w[s].iter().map(|x| x.1).collect());
            let cpu = median(w[s].iter().map(|x| x.2).collect());
            print!("; per job: {st:.1} statements, {rt:.1} round trips, {cpu:.2} ms database CPU");
        }
        println!();
    }
}
