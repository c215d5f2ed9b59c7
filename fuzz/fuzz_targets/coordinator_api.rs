//! The coordinator's request bodies and query strings, through the real
//! router, the real SQLite store and the real authentication (tokens of a
//! registered runner and of a leased job are set up once; when an input
//! finishes the job, a fresh one is submitted and leased, so the job-token
//! endpoints keep reaching their handlers). The first byte picks the
//! endpoint, the rest is its body, or its query string (or artifact name),
//! a newline, then its body. The leased job declares a secret, so log
//! chunks go through the masking. No input may make a handler panic or
//! answer 500: bad input is the client's fault.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use pinfold_coordinator::{Config, app, open};
use tokio::runtime::Runtime;
use tower::ServiceExt;

const ADMIN: &str = "pfa_fuzz_admin";
const REG: &str = "pfg_fuzz_registration";
/// The fuzz runner's public key, so provenance uploads reach the DSSE check.
const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAjdVqRzdR7amxef+Pn4v1Nah7jRb7ECaWOgqWJLS+grA=\n-----END PUBLIC KEY-----\n";
const SECRET: &str = "hunter2";
const SPEC: &str = "image: docker://example.org/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nsecrets: [FUZZ_SECRET]\nsteps:\n  - name: t\n    run: \"true\"\n";

/// The leased job the job-token endpoints use.
#[derive(Clone)]
struct Job {
    token: String,
    id: u64,
    /// How much of its stored log was checked for the secret.
    checked: u64,
}

struct World {
    rt: Runtime,
    router: axum::Router,
    runner: String,
    runner_id: u64,
    job: Mutex<Job>,
    _dir: tempfile::TempDir,
}

async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    token: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", ct)
        .body(Body::from(body))
        .expect("a request");
    let resp = router
        .clone()
        .oneshot(req)
        .await
        .expect("the router answers");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    (status, bytes)
}

/// POSTs `body` as JSON.
async fn post_json(
    router: &axum::Router,
    uri: &str,
    token: &str,
    body: &serde_json::Value,
) -> (u16, Vec<u8>) {
    let body = serde_json::to_vec(body).expect("JSON");
    call(router, Method::POST, uri, token, "application/json", body).await
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).expect("JSON")
}

/// Submits a job declaring the secret and leases it (first leasing, and
/// leaving, any older jobs the inputs queued): its token and id.
async fn new_job(router: &axum::Router, runner: &str) -> Job {
    let job = serde_json::json!({"spec": SPEC});
    let (s, b) = post_json(router, "/api/v1/jobs", ADMIN, &job).await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let want = json(&b)["job_id"].as_u64().expect("a job id");
    let any = serde_json::json!({});
    loop {
        let (s, b) = post_json(router, "/api/v1/runner/lease", runner, &any).await;
        assert_eq!(
            s,
            200,
            "the fuzz job was not leased: {s} {}",
            String::from_utf8_lossy(&b)
        );
        let lease = json(&b);
        if lease["job_id"].as_u64() == Some(want) {
            let token = lease["job_token"].as_str().expect("a job token").to_owned();
            return Job {
                token,
                id: want,
                checked: 0,
            };
        }
    }
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = Config {
            max_long_poll: Duration::ZERO,
            ..Config::default()
        };
        let (state, _) = rt
            .block_on(open(
                dir.path(),
                config,
                Some(ADMIN.into()),
                Some(REG.into()),
                BTreeMap::from([("FUZZ_SECRET".to_owned(), SECRET.to_owned())]),
            ))
            .expect("open the coordinator");
        let router = app(state);
        let (runner, runner_id, job) = rt.block_on(async {
            let reg = serde_json::json!({"name": "fuzz", "public_key": KEY});
            let (s, b) = post_json(&router, "/api/v1/runners", REG, &reg).await;
            assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
            let reg = json(&b);
            let runner = reg["token"].as_str().expect("a runner token").to_owned();
            let runner_id = reg["runner_id"].as_u64().expect("a runner id");
            let job = new_job(&router, &runner).await;
            (runner, runner_id, job)
        });
        World {
            rt,
            router,
            runner,
            runner_id,
            job: Mutex::new(job),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let job = w.job.lock().expect("the job").clone();
    let (job_token, id) = (job.token.as_str(), job.id);
    // Query string (or artifact name) up to the first newline, body after.
    let (head, tail) = match body.iter().position(|&b| b == b'\n') {
        Some(i) => (&body[..i], body[i + 1..].to_vec()),
        None => (body, Vec::new()),
    };
    let query = String::from_utf8_lossy(head);
    let json = "application/json";
    let octets = "application/octet-stream";
    let runner = w.runner.as_str();
    let rid = w.runner_id;
    let (method, uri, token, ct, body) = match pick % 12 {
        0 => (
            Method::POST,
            "/api/v1/runners".to_owned(),
            REG,
            json,
            body.to_vec(),
        ),
        1 => (
            Method::POST,
            "/api/v1/jobs".to_owned(),
            ADMIN,
            json,
            body.to_vec(),
        ),
        2 => (
            Method::POST,
            "/api/v1/runner/lease".to_owned(),
            runner,
            json,
            body.to_vec(),
        ),
        3 => (
            Method::PUT,
            "/api/v1/runner/key".to_owned(),
            runner,
            json,
            body.to_vec(),
        ),
        4 => (
            Method::POST,
            format!("/api/v1/jobs/{id}/finish"),
            job_token,
            json,
            body.to_vec(),
        ),
        5 => (
            Method::PUT,
            format!("/api/v1/jobs/{id}/provenance"),
            job_token,
            json,
            body.to_vec(),
        ),
        6 => (
            Method::POST,
            format!("/api/v1/jobs/{id}/log?{query}"),
            job_token,
            octets,
            tail,
        ),
        7 => (
            Method::GET,
            format!("/api/v1/jobs?{query}"),
            ADMIN,
            json,
            Vec::new(),
        ),
        8 => (
            Method::GET,
            format!("/api/v1/jobs/{id}/log?{query}"),
            ADMIN,
            json,
            Vec::new(),
        ),
        9 => (
            Method::PUT,
            format!("/api/v1/jobs/{id}/artifacts/{query}"),
            job_token,
            octets,
            tail,
        ),
        10 => (
            Method::POST,
            format!("/api/v1/runners/{rid}/labels"),
            ADMIN,
            json,
            body.to_vec(),
        ),
        _ => (
            Method::PUT,
            format!("/api/v1/sources/{query}"),
            ADMIN,
            octets,
            tail,
        ),
    };
    // A URI the HTTP layer itself refuses never reaches the router.
    if uri.parse::<axum::http::Uri>().is_err() {
        return;
    }
    let (status, resp) =
        w.rt.block_on(call(&w.router, method, &uri, token, ct, body));
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("{uri}: {status} {}", String::from_utf8_lossy(&resp));
    }
    assert!(
        status < 500,
        "{uri}: {status} {}",
        String::from_utf8_lossy(&resp)
    );
    if pick % 12 == 6 && status < 300 {
        // The log as stored never holds the secret's value (checked from a
        // little before the part not yet checked, for one split over two).
        let from = job.checked.saturating_sub(SECRET.len() as u64);
        let uri = format!("/api/v1/jobs/{id}/log?offset={from}");
        let (s, log) =
            w.rt.block_on(call(&w.router, Method::GET, &uri, ADMIN, json, Vec::new()));
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&log));
        assert!(
            !log.windows(SECRET.len()).any(|x| x == SECRET.as_bytes()),
            "the secret reached the stored log: {}",
            String::from_utf8_lossy(&log)
        );
        w.job.lock().expect("the job").checked = from + log.len() as u64;
    }
    if pick % 12 == 4 && status < 300 {
        let job = w.rt.block_on(new_job(&w.router, runner));
        *w.job.lock().expect("the job") = job;
    }
});
