//! Handler tests against the PostgreSQL store: the cases of api.rs
//! (api/cases.rs), each on a database of its own on a real PostgreSQL
//! server that the tests start themselves (tests/pg).

mod common;
mod pg;

use std::time::Instant;

/// The store the cases run against: PostgreSQL.
mod store {
    use std::path::Path;
    use std::process::Command;

    /// A new database of the test cluster.
    pub fn url() -> Option<String> {
        Some(crate::pg::cluster().database())
    }

    /// Every byte the store keeps: a dump of its database.
    pub fn stored(_dir: &Path, url: Option<&str>) -> Vec<u8> {
        let mut dump = Command::new(crate::pg::cluster().bin().join("pg_dump"));
        dump.args(["--data-only", "-d", url.expect("a database")]);
        crate::pg::run(&mut dump, "pg_dump")
    }
}

include!("api/cases.rs");

/// A coordinator on the database at `url`, with state of its own (its
/// blob directory) and the same tokens as every other: a replica.
async fn replica(url: &str) -> T {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        store: Some(url.to_string()),
        ..Config::default()
    };
    let state = common::coordinator(dir.path(), config, [ADMIN, REG], BTreeMap::new()).await;
    T { state, _dir: dir }
}

/// Two replicas on a new database, and its URL.
async fn two_replicas() -> (String, T, T) {
    let url = store::url().unwrap();
    let (a, b) = (replica(&url).await, replica(&url).await);
    (url, a, b)
}

/// Two coordinators on one database, runners leasing through both at
/// once: every job is leased once, by one runner (`FOR UPDATE SKIP
/// LOCKED`), and none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_lease_each_job_exactly_once() {
    let (_, a, b) = two_replicas().await;
    let replicas = [std::sync::Arc::new(a), std::sync::Arc::new(b)];
    let mut runners = Vec::new();
    for i in 0..4 {
        runners.push(replicas[i % 2].register(&[]).await.token);
    }
    let mut submitted = Vec::new();
    for i in 0..40 {
        submitted.push(replicas[i % 2].submit(&[]).await);
    }
    let mut tasks = Vec::new();
    for token in &runners {
        for r in &replicas {
            let (r, token) = (r.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(l) = r.lease(&token).await {
                    got.push(l.job_id);
                }
                got
            }));
        }
    }
    let mut leased = Vec::new();
    for t in tasks {
        leased.extend(t.await.unwrap());
    }
    leased.sort_unstable();
    submitted.sort_unstable();
    assert_eq!(leased, submitted, "each job leased exactly once");
}

/// A runner long-polling one coordinator is woken when a job is submitted
/// through another (LISTEN/NOTIFY), not when its poll times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_polling_one_coordinator_wakes_for_a_job_submitted_to_another() {
    let (_, a, b) = two_replicas().await;
    let runner = a.register(&[]).await;
    let t0 = Instant::now();
    let poll = tokio::spawn(async move {
        a.post(
            "/api/v1/runner/lease",
            &runner.token,
            json!({"wait_secs": 25}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = b.submit(&[]).await;
    let (s, v) = poll.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["job_id"], id);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "woken by its poll's timeout, not by the submit: {:?}",
        t0.elapsed()
    );
}

/// Coordinators that start together on a new database create the schema
/// once: the migrations take an advisory lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_starting_together_migrate_the_schema_once() {
    let url = store::url().unwrap();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let u = url.clone();
            tokio::spawn(async move { replica(&u).await })
        })
        .collect();
    for s in starts {
        s.await.unwrap();
    }
    let db = url.rsplit('/').next().unwrap();
    // Each start succeeded (a racing CREATE TABLE would have failed one)
    // and each version, 1 to the last, is applied once.
    assert_eq!(
        pg::cluster().psql(
            db,
            "SELECT count(*) > 1 AND count(*) = max(version) AND min(version) = 1 FROM schema_versions"
        ),
        "t"
    );
}

/// Blobs are in the database too: an artifact uploaded through one
/// coordinator (three chunks and a part) is served whole by another, and a
/// second upload of the same content stores nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_uploaded_through_one_coordinator_is_served_by_another() {
    let (url, a, b) = two_replicas().await;
    let runner = a.register(&[]).await;
    b.submit(&[]).await;
    let l = a.lease(&runner.token).await.expect("a lease");
    let data: Vec<u8> = (0..3_500_000u32).map(|i| (i % 251) as u8).collect();
    a.upload(&l, "out.bin", &data).await;
    b.upload(&l, "again.bin", &data).await;
    for name in ["out.bin", "again.bin"] {
        let (s, got) = b
            .get_bytes(&format!("/api/v1/jobs/{}/artifacts/{name}", l.job_id))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(sha(&got), sha(&data), "{name}");
    }
    // An upload whose content is not what its digest says stores nothing
    // under that digest, the honest blob's included.
    let liar = vec![7u8; 2_000_000];
    let (s, _) = b
        .req(
            Method::PUT,
            &format!(
                "/api/v1/jobs/{}/artifacts/lie.bin?sha256={}",
                l.job_id,
                sha(&data)
            ),
            Some(&l.job_token),
            Body::from(liar),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, got) = a
        .get_bytes(&format!("/api/v1/jobs/{}/artifacts/out.bin", l.job_id))
        .await;
    assert_eq!(sha(&got), sha(&data));
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(
        pg::cluster().psql(db, "SELECT count(*) || ' ' || sum(chunks) FROM blobs"),
        "1 4"
    );
    // Nothing staged is left.
    assert_eq!(
        pg::cluster().psql(db, "SELECT count(*) FROM blob_uploads"),
        "0"
    );
}

/// `pinfold server migrate`: a SQLite coordinator's state (a runner, a
/// finished job with its log and an artifact, a queued job) moved into an
/// empty database, checked there; a coordinator on that database serves
/// the same jobs, log and artifact and numbers the next job after them. A
/// second migration into it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_coordinator_moves_whole_into_postgres() {
    use pinfold_coordinator::store::migrate::sqlite_to_postgres;
    let dir = tempfile::tempdir().unwrap();
    let state =
        common::coordinator(dir.path(), Config::default(), [ADMIN, REG], BTreeMap::new()).await;
    let old = T {
        state,
        _dir: tempfile::tempdir().unwrap(),
    };
    let runner = old.register(&[]).await;
    let done = old.submit(&[]).await;
    let l = old.lease(&runner.token).await.expect("a lease");
    let (s, v) = old
        .append(done, &l.job_token, 0, b"built on sqlite\n")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    old.upload(&l, "out.bin", &data).await;
    old.finish(&l, "succeeded").await;
    let queued = old.submit(&[]).await;
    let log = old.log(done).await;
    drop(old);

    let url = store::url().unwrap();
    let moved = sqlite_to_postgres(dir.path(), &url).await.unwrap();
    let rows = |t: &str| moved.rows.iter().find(|(n, _)| *n == t).unwrap().1;
    assert_eq!((rows("jobs"), rows("runners"), rows("attempts")), (2, 1, 1));
    assert_eq!(moved.logs.0, 1);
    assert_eq!(moved.blobs.0, 1);

    let new = replica(&url).await;
    assert_eq!(new.log(done).await, log);
    assert_eq!(
        new.status(done).await.state,
        pinfold_api::wire::JobState::Succeeded
    );
    assert_eq!(
        new.status(queued).await.state,
        pinfold_api::wire::JobState::Queued
    );
    let (s, got) = new
        .get_bytes(&format!("/api/v1/jobs/{done}/artifacts/out.bin"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(sha(&got), sha(&data));
    // The runner's token still works, and leases the queued job.
    let l2 = new.lease(&runner.token).await.expect("the queued job");
    assert_eq!(l2.job_id, queued);
    assert!(new.submit(&[]).await > queued);
    let e = sqlite_to_postgres(dir.path(), &url)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("migrate into a new, empty database"), "{e}");
}

/// A coordinator on `url`, or why it could not open.
async fn open_on(url: &str) -> Result<T, String> {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        store: Some(url.to_string()),
        ..Config::default()
    };
    let opened = pinfold_coordinator::open(
        dir.path(),
        config,
        Some(ADMIN.into()),
        Some(REG.into()),
        BTreeMap::new(),
    )
    .await;
    match opened {
        Ok((state, _)) => Ok(T { state, _dir: dir }),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// `sslmode=verify-full`: the coordinator reaches a database that accepts
/// only TLS, and works; a server whose certificate does not name the host
/// connected to, or that a CA other than `sslrootcert` signed (a machine
/// in the middle), is refused before any query; and without TLS the
/// server itself refuses the connection (so the first case really was
/// TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_reached_over_verified_tls() {
    let tls = pg::tls::cluster();
    let db = tls.cluster.database();
    let name = db.rsplit('/').next().unwrap();
    let port = tls.cluster.port;
    let url = |host: &str, ca: &std::path::Path| {
        format!(
            "postgres://pinfold@{host}:{port}/{name}?sslmode=verify-full&sslrootcert={}",
            ca.display()
        )
    };

    let t = open_on(&url("localhost", &tls.ca))
        .await
        .expect("verified TLS");
    let runner = t.register(&[]).await;
    let id = t.submit(&[]).await;
    assert_eq!(t.lease(&runner.token).await.expect("a lease").job_id, id);
    let encrypted = tls.cluster.psql(
        name,
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND NOT s.ssl",
    );
    assert_eq!(encrypted, "0", "a coordinator connection without TLS");

    let wrong_host = open_on(&url("127.0.0.1", &tls.ca)).await.err();
    let wrong_host = wrong_host.expect("a certificate for another name was accepted");
    assert!(wrong_host.contains("certificate"), "{wrong_host}");

    let other_ca = open_on(&url("localhost", &tls.other_ca)).await.err();
    let other_ca = other_ca.expect("a certificate of another CA was accepted");
    assert!(other_ca.contains("certificate"), "{other_ca}");

    let plain = open_on(&format!("postgres://pinfold@localhost:{port}/{name}"))
        .await
        .err()
        .expect("the TLS-only server took a plain connection");
    assert!(plain.contains("no encryption"), "{plain}");
}
