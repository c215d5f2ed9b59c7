//! The coordinator's request bodies and query strings, through the real
//! router, the real SQLite store and the real authentication (tokens of a
//! registered runner and of a leased job are set up once). The first byte
//! picks the endpoint, the rest is its body (or query string). No input
//! may make a handler panic or answer 500: bad input is the client's fault.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use pinfold_coordinator::{Config, app, open};
use tokio::runtime::Runtime;
use tower::ServiceExt;

const ADMIN: &str = "pfa_fuzz_admin";
const REG: &str = "pfg_fuzz_registration";

struct World {
    rt: Runtime,
    router: axum::Router,
    runner: String,
    job_token: String,
    job_id: u64,
    _dir: tempfile::TempDir,
}

async fn call(router: &axum::Router, method: Method, uri: &str, token: &str, ct: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", ct)
        .body(Body::from(body))
        .expect("a request");
    let resp = router.clone().oneshot(req).await.expect("the router answers");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    (status, bytes)
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
            .block_on(open(dir.path(), config, Some(ADMIN.into()), Some(REG.into()), BTreeMap::new()))
            .expect("open the coordinator");
        let router = app(state);
        let (runner, job_token, job_id) = rt.block_on(async {
            let j = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).expect("JSON");
            let (s, b) = call(&router, Method::POST, "/api/v1/runners", REG, "application/json",
                br#"{"name":"fuzz"}"#.to_vec()).await;
            assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
            let runner = j(&b)["token"].as_str().expect("a runner token").to_owned();
            let spec = "image: docker://example.org/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nsteps:\n  - run: true\n";
            let body = serde_json::to_vec(&serde_json::json!({"spec": spec})).expect("JSON");
            let (s, b) = call(&router, Method::POST, "/api/v1/jobs", ADMIN, "application/json", body).await;
            assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
            let (s, b) = call(&router, Method::POST, "/api/v1/runner/lease", &runner, "application/json",
                b"{}".to_vec()).await;
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            let lease = j(&b);
            (runner, lease["job_token"].as_str().expect("a job token").to_owned(),
             lease["job_id"].as_u64().expect("a job id"))
        });
        World { rt, router, runner, job_token, job_id, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let id = w.job_id;
    let query = String::from_utf8_lossy(body);
    let json = "application/json";
    let octets = "application/octet-stream";
    let (method, uri, token, ct, body) = match pick % 10 {
        0 => (Method::POST, "/api/v1/runners".to_owned(), REG, json, body.to_vec()),
        1 => (Method::POST, "/api/v1/jobs".to_owned(), ADMIN, json, body.to_vec()),
        2 => (Method::POST, "/api/v1/runner/lease".to_owned(), w.runner.as_str(), json, body.to_vec()),
        3 => (Method::PUT, "/api/v1/runner/key".to_owned(), w.runner.as_str(), json, body.to_vec()),
        4 => (Method::POST, format!("/api/v1/jobs/{id}/finish"), w.job_token.as_str(), json, body.to_vec()),
        5 => (Method::PUT, format!("/api/v1/jobs/{id}/provenance"), w.job_token.as_str(), json, body.to_vec()),
        6 => (Method::POST, format!("/api/v1/jobs/{id}/log?{query}"), w.job_token.as_str(), octets, Vec::new()),
        7 => (Method::GET, format!("/api/v1/jobs?{query}"), ADMIN, json, Vec::new()),
        8 => (Method::GET, format!("/api/v1/jobs/{id}/log?{query}"), ADMIN, json, Vec::new()),
        _ => (Method::PUT, format!("/api/v1/jobs/{id}/artifacts/{query}"), w.job_token.as_str(), octets, b"x".to_vec()),
    };
    // A URI the HTTP layer itself refuses never reaches the router.
    if uri.parse::<axum::http::Uri>().is_err() {
        return;
    }
    let (status, resp) = w.rt.block_on(call(&w.router, method, &uri, token, ct, body));
    assert!(
        status < 500,
        "{uri}: {status} {}",
        String::from_utf8_lossy(&resp)
    );
});
