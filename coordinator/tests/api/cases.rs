// The handler tests: the real router and a real store, driven with
// `tower::ServiceExt::oneshot` (no socket). Included by api.rs (SQLite in
// a temporary directory) and api_postgres.rs (a database of a real
// PostgreSQL server), each of which defines `store` and declares `common`
// (tests/common: the coordinator the cases open).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use pinfold_api::wire::{JobInfo, Lease, RegisterResponse, SubmitResponse};
use pinfold_coordinator::{AppState, Config, app, open, reap_expired};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const ADMIN: &str = "pfa_test_admin";
const REG: &str = "pfg_test_registration";
const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct T {
    state: AppState,
    _dir: tempfile::TempDir,
}

async fn setup(config: Config) -> T {
    let config = Config {
        store: store::url(),
        ..config
    };
    let dir = tempfile::tempdir().unwrap();
    let mut secrets = BTreeMap::new();
    secrets.insert("DEPLOY_KEY".to_string(), "hunter2".to_string());
    let state = common::coordinator(dir.path(), config, [ADMIN, REG], secrets).await;
    T { state, _dir: dir }
}

impl T {
    async fn req(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Body,
    ) -> (StatusCode, Vec<u8>) {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if uri.contains("/log") || uri.contains("/artifacts/") || uri.contains("/sources/") {
            b = b.header("content-type", "application/octet-stream");
        } else {
            b = b.header("content-type", "application/json");
        }
        let resp = app(self.state.clone())
            .oneshot(b.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, bytes)
    }

    async fn json(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let (s, b) = self
            .req(method, uri, token, Body::from(body.to_string()))
            .await;
        let v = if b.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&b).unwrap_or(Value::String(String::from_utf8_lossy(&b).into()))
        };
        (s, v)
    }

    async fn get(&self, uri: &str, token: &str) -> (StatusCode, Value) {
        self.json(Method::GET, uri, Some(token), Value::Null).await
    }

    async fn post(&self, uri: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.json(Method::POST, uri, Some(token), body).await
    }

    async fn put(&self, uri: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.json(Method::PUT, uri, Some(token), body).await
    }

    async fn delete(&self, uri: &str, token: &str) -> (StatusCode, Value) {
        self.json(Method::DELETE, uri, Some(token), Value::Null)
            .await
    }

    /// POSTs to `/api/v1/jobs/{job}/{action}`: heartbeat, finish or cancel.
    async fn on_job(
        &self,
        job: u64,
        action: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.post(&format!("/api/v1/jobs/{job}/{action}"), token, body)
            .await
    }

    /// GETs `uri` as the admin; the raw body.
    async fn get_bytes(&self, uri: &str) -> (StatusCode, Vec<u8>) {
        self.req(Method::GET, uri, Some(ADMIN), Body::empty()).await
    }

    /// Registers a runner with the registration token.
    async fn register_as(&self, body: Value) -> (StatusCode, Value) {
        self.post("/api/v1/runners", REG, body).await
    }

    async fn register(&self, labels: &[&str]) -> RegisterResponse {
        let (s, v) = self
            .register_as(json!({"name": "r", "labels": labels}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        serde_json::from_value(v).unwrap()
    }

    async fn submit(&self, labels: &[&str]) -> u64 {
        let spec = format!(
            "image: busybox@sha256:{DIGEST}\nsecrets: [DEPLOY_KEY]\nsteps:\n  - name: a\n    run: echo hi\n"
        );
        let (s, v) = self
            .post(
                "/api/v1/jobs",
                ADMIN,
                json!({"spec": spec, "labels": labels}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        serde_json::from_value::<SubmitResponse>(v).unwrap().job_id
    }

    async fn lease(&self, runner_token: &str) -> Option<Lease> {
        let (s, v) = self
            .post(
                "/api/v1/runner/lease",
                runner_token,
                json!({"wait_secs": 0}),
            )
            .await;
        if s == StatusCode::NO_CONTENT {
            return None;
        }
        assert_eq!(s, StatusCode::OK, "{v}");
        Some(serde_json::from_value(v).unwrap())
    }

    async fn append(&self, job: u64, token: &str, offset: u64, data: &[u8]) -> (StatusCode, Value) {
        let (s, b) = self
            .req(
                Method::POST,
                &format!("/api/v1/jobs/{job}/log?offset={offset}"),
                Some(token),
                Body::from(data.to_vec()),
            )
            .await;
        (s, serde_json::from_slice(&b).unwrap())
    }

    async fn log(&self, job: u64) -> Vec<u8> {
        let (s, b) = self.get_bytes(&format!("/api/v1/jobs/{job}/log")).await;
        assert_eq!(s, StatusCode::OK);
        b
    }

    async fn status(&self, job: u64) -> JobInfo {
        let (s, v) = self.get(&format!("/api/v1/jobs/{job}"), ADMIN).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        serde_json::from_value(v).unwrap()
    }
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// DEPLOY_KEY may go to runners the admin trusts with the label `deploy`.
fn scoped() -> Config {
    Config {
        secret_scopes: [("DEPLOY_KEY".to_string(), vec!["deploy".to_string()])].into(),
        ..Config::default()
    }
}

impl T {
    /// Submits a job with `labels` and leases it as the runner: the
    /// secrets that lease carries.
    async fn secrets_for(&self, labels: &[&str], runner_token: &str) -> BTreeMap<String, String> {
        self.submit(labels).await;
        self.lease(runner_token).await.expect("a lease").secrets
    }

    /// The admin adds and removes trusted labels of a runner.
    async fn trust(&self, runner: u64, add: &[&str], remove: &[&str]) -> Value {
        let (s, v) = self
            .post(
                &format!("/api/v1/runners/{runner}/labels"),
                ADMIN,
                json!({"add": add, "remove": remove}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

#[tokio::test]
async fn a_job_runs_through_the_protocol() {
    let t = setup(scoped()).await;
    let runner = t.register(&["linux", "x86_64"]).await;
    t.trust(runner.runner_id, &["deploy"], &[]).await;
    assert!(t.lease(&runner.token).await.is_none(), "empty queue");
    let job = t.submit(&["linux"]).await;
    let lease = t.lease(&runner.token).await.expect("a lease");
    assert_eq!((lease.job_id, lease.attempt, lease.log_offset), (job, 1, 0));
    assert_eq!(
        lease.secrets.get("DEPLOY_KEY").map(String::as_str),
        Some("hunter2")
    );
    let jt = lease.job_token.as_str();

    let (s, v) = t.on_job(job, "heartbeat", jt, Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["cancel"], false);

    // Appends by offset: in order, a repeat, an overlap, a gap.
    let (s, v) = t.append(job, jt, 0, b"step a\nkey=hun").await;
    assert_eq!((s, v["offset"].as_u64()), (StatusCode::OK, Some(14)));
    let (s, v) = t.append(job, jt, 0, b"step a\nkey=hun").await;
    assert_eq!(
        (s, v["offset"].as_u64()),
        (StatusCode::OK, Some(14)),
        "a retried chunk is skipped"
    );
    let (s, v) = t.append(job, jt, 11, b"hunter2\n").await;
    assert_eq!(
        (s, v["offset"].as_u64()),
        (StatusCode::OK, Some(19)),
        "an overlap adds only new bytes"
    );
    let (s, v) = t.append(job, jt, 25, b"late").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["expected_offset"], 19);
    assert!(
        v["error"].as_str().unwrap().contains("resend from 19"),
        "{v}"
    );
    t.append(job, jt, 19, b"done\n").await;

    // An artifact, deduplicated and verified.
    let content = b"binary!".to_vec();
    let uri = format!(
        "/api/v1/jobs/{job}/artifacts/out/app?sha256={}",
        sha(&content)
    );
    let (s, b) = t
        .req(Method::PUT, &uri, Some(jt), Body::from(content.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let bad = format!("/api/v1/jobs/{job}/artifacts/out/bad?sha256={DIGEST}");
    let (s, b) = t
        .req(Method::PUT, &bad, Some(jt), Body::from(content.clone()))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("sha256 mismatch"));
    let (s, v) = t.get(&format!("/api/v1/jobs/{job}/artifacts"), ADMIN).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["artifacts"],
        json!([{"name": "out/app", "size": 7, "sha256": sha(&content)}])
    );
    let (s, b) = t
        .get_bytes(&format!("/api/v1/jobs/{job}/artifacts/out/app"))
        .await;
    assert_eq!((s, b), (StatusCode::OK, content));

    let fin = json!({"state": "succeeded", "steps": [{"name": "a", "exit_code": 0, "started_at": 1, "finished_at": 2}]});
    let (s, v) = t.on_job(job, "finish", jt, fin.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = t.on_job(job, "finish", jt, fin).await;
    assert_eq!(s, StatusCode::OK, "a retried finish is a no-op");
    let info = t.status(job).await;
    assert_eq!(info.state.as_str(), "succeeded");
    assert_eq!(info.steps[0].exit_code, Some(0));
    assert_eq!(
        t.log(job).await,
        b"step a\nkey=***\ndone\n",
        "the secret is masked across chunks"
    );
    let (s, v) = t.append(job, jt, 24, b"more").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    let (_, b) = t.req(Method::GET, "/metrics", None, Body::empty()).await;
    let m = String::from_utf8(b).unwrap();
    assert!(
        m.contains("pinfold_queue_depth 0")
            && m.contains("pinfold_jobs_finished_total{outcome=\"succeeded\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn an_append_ahead_of_the_log_waits_for_the_one_before_it() {
    let t = setup(Config::default()).await;
    let runner = t.register(&[]).await;
    let job = t.submit(&[]).await;
    let lease = t.lease(&runner.token).await.expect("a lease");
    let jt = lease.job_token.as_str();
    // Pipelined appends can arrive out of order: the second chunk comes
    // first and waits until the first one has been stored.
    let ahead = t.append(job, jt, 6, b"world\n");
    let behind = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.append(job, jt, 0, b"hello ").await
    };
    let ((s1, v1), (s2, v2)) = tokio::join!(ahead, behind);
    assert_eq!(
        (s1, v1["offset"].as_u64()),
        (StatusCode::OK, Some(12)),
        "{v1}"
    );
    assert_eq!(
        (s2, v2["offset"].as_u64()),
        (StatusCode::OK, Some(6)),
        "{v2}"
    );
    // A chunk far past the end is refused with where to resume.
    let far = 12 + 8 * Config::default().max_log_chunk as u64 + 1;
    let (s, v) = t.append(job, jt, far, b"lost").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["expected_offset"], 12);
    let (s, _) = t
        .on_job(
            job,
            "finish",
            jt,
            json!({"state": "succeeded", "steps": []}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t.log(job).await, b"hello world\n");
}

#[tokio::test]
async fn labels_choose_the_runner() {
    let t = setup(Config::default()).await;
    let plain = t.register(&[]).await;
    let gpu = t.register(&["gpu"]).await;
    let job = t.submit(&["gpu"]).await;
    assert!(t.lease(&plain.token).await.is_none());
    assert_eq!(t.lease(&gpu.token).await.unwrap().job_id, job);
}

#[tokio::test]
async fn the_job_list_filters_by_state_and_label_and_pages_by_id() {
    let t = setup(Config::default()).await;
    let a = t.submit(&["gpu"]).await;
    let b = t.submit(&[]).await;
    let c = t.submit(&["gpu", "arm"]).await;
    let ids = |v: Value| -> Vec<u64> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_u64().unwrap())
            .collect()
    };
    let (s, v) = t.get("/api/v1/jobs?label=gpu", ADMIN).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(ids(v), vec![c, a]);
    let (_, v) = t
        .get(&format!("/api/v1/jobs?before={c}&limit=1"), ADMIN)
        .await;
    assert_eq!(ids(v), vec![b]);
    let gpu = t.register(&["gpu"]).await;
    assert_eq!(t.lease(&gpu.token).await.unwrap().job_id, a);
    let (_, v) = t.get("/api/v1/jobs?state=queued&label=gpu", ADMIN).await;
    assert_eq!(ids(v), vec![c]);
    let (s, _) = t.get("/api/v1/jobs?label=gpu&colour=red", ADMIN).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn tokens_are_scoped() {
    let t = setup(Config::default()).await;
    let r = t.register(&[]).await;
    let j1 = t.submit(&[]).await;
    let j2 = t.submit(&[]).await;
    let l1 = t.lease(&r.token).await.unwrap();
    let l2 = t.lease(&r.token).await.unwrap();
    assert_eq!((l1.job_id, l2.job_id), (j1, j2));

    let (s, v) = t.append(j2, &l1.job_token, 0, b"x").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&format!("for job {j1}")),
        "{v}"
    );
    let (s, _) = t.get(&format!("/api/v1/jobs/{j1}"), &l1.job_token).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a job token is not an admin token"
    );
    let (s, v) = t.post("/api/v1/jobs", &r.token, json!({"spec": ""})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = t
        .json(Method::POST, "/api/v1/runner/lease", None, json!({}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("Bearer"));

    // Revoking the runner refuses its token and the job tokens it holds.
    let (s, _) = t
        .delete(&format!("/api/v1/runners/{}", r.runner_id), ADMIN)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = t.post("/api/v1/runner/lease", &r.token, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(v["error"].as_str().unwrap().contains("revoked"), "{v}");
    let (s, _) = t.append(j1, &l1.job_token, 0, b"x").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn expired_leases_requeue_then_fail_and_fence_stale_writers() {
    let config = Config {
        lease_ttl: Duration::from_millis(300),
        max_attempts: 2,
        ..Config::default()
    };
    let t = setup(config).await;
    let r1 = t.register(&[]).await;
    let r2 = t.register(&[]).await;
    let job = t.submit(&[]).await;
    let l1 = t.lease(&r1.token).await.unwrap();
    t.append(job, &l1.job_token, 0, b"first\n").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(reap_expired(&t.state).await.unwrap(), 1);
    assert_eq!(t.status(job).await.state.as_str(), "queued");

    let l2 = t.lease(&r2.token).await.unwrap();
    assert_eq!(
        (l2.attempt, l2.log_offset),
        (2, 6),
        "the second attempt resumes the log"
    );
    for (uri, body) in [
        (format!("/api/v1/jobs/{job}/heartbeat"), Value::Null),
        (
            format!("/api/v1/jobs/{job}/finish"),
            json!({"state": "succeeded"}),
        ),
    ] {
        let (s, v) = t.post(&uri, &l1.job_token, body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{uri}: {v}");
        assert!(v["error"].as_str().unwrap().contains("stale lease"), "{v}");
    }
    let (s, _) = t.append(job, &l1.job_token, 6, b"zombie\n").await;
    assert_eq!(s, StatusCode::CONFLICT);

    tokio::time::sleep(Duration::from_millis(400)).await;
    reap_expired(&t.state).await.unwrap();
    let info = t.status(job).await;
    assert_eq!(info.state.as_str(), "error");
    assert!(info.reason.unwrap().contains("runner lost"));
    assert_eq!(t.log(job).await, b"first\n");
}

#[tokio::test]
async fn cancel_reaches_the_runner_through_the_heartbeat() {
    let t = setup(Config::default()).await;
    let r = t.register(&[]).await;
    let queued = t.submit(&[]).await;
    let (s, v) = t.on_job(queued, "cancel", ADMIN, Value::Null).await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let running = t.submit(&[]).await;
    let l = t.lease(&r.token).await.unwrap();
    assert_eq!(l.job_id, running);
    t.on_job(running, "cancel", ADMIN, Value::Null).await;
    let (_, v) = t
        .on_job(running, "heartbeat", &l.job_token, Value::Null)
        .await;
    assert_eq!(v["cancel"], true);
    let (s, _) = t
        .on_job(
            running,
            "finish",
            &l.job_token,
            json!({"state": "cancelled"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = t.on_job(running, "cancel", ADMIN, Value::Null).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
}

#[tokio::test]
async fn logs_are_capped_with_a_visible_marker() {
    let t = setup(Config {
        max_log_bytes: 10,
        ..Config::default()
    })
    .await;
    let r = t.register(&[]).await;
    let job = t.submit(&[]).await;
    let l = t.lease(&r.token).await.unwrap();
    t.append(job, &l.job_token, 0, b"0123456").await;
    let (_, v) = t.append(job, &l.job_token, 7, b"789abcdef").await;
    assert_eq!(
        (v["offset"].as_u64(), v["truncated"].as_bool()),
        (Some(16), Some(true))
    );
    let (_, v) = t.append(job, &l.job_token, 16, b"ignored").await;
    assert_eq!(
        v["offset"], 23,
        "bytes past the cap are acknowledged and dropped"
    );
    let log = String::from_utf8(t.log(job).await).unwrap();
    assert!(
        log.starts_with("0123456789\n[pinfold: log truncated"),
        "{log}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_json_error() {
    let t = setup(Config {
        max_json_bytes: 4096,
        max_log_chunk: 1024,
        ..Config::default()
    })
    .await;
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "unknown key",
            json!({"spec": format!("image: a@sha256:{DIGEST}\nstepz: []\n")}),
            StatusCode::BAD_REQUEST,
            "line 2",
        ),
        (
            "unpinned",
            json!({"spec": "image: busybox\nsteps:\n  - name: a\n    run: b\n"}),
            StatusCode::BAD_REQUEST,
            "not pinned",
        ),
        (
            "not yaml",
            json!({"spec": "{{{"}),
            StatusCode::BAD_REQUEST,
            "invalid job file",
        ),
        (
            "unknown field",
            json!({"spec": "x", "priority": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "priority",
        ),
        (
            "missing source",
            json!({"spec": format!("image: a@sha256:{DIGEST}\nsteps:\n  - name: a\n    run: b\n"), "source_sha256": DIGEST}),
            StatusCode::BAD_REQUEST,
            "was not uploaded",
        ),
        (
            "bad label",
            json!({"spec": format!("image: a@sha256:{DIGEST}\nsteps:\n  - name: a\n    run: b\n"), "labels": ["a b"]}),
            StatusCode::BAD_REQUEST,
            "bad label",
        ),
        (
            "too big",
            json!({"spec": "x".repeat(5000)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "length limit",
        ),
    ];
    for (what, body, status, needle) in cases {
        let (s, v) = t.post("/api/v1/jobs", ADMIN, body).await;
        assert_eq!(s, status, "{what}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: not a JSON error: {v}"));
        assert!(msg.contains(needle), "{what}: {msg}");
    }
    let (s, b) = t
        .req(
            Method::POST,
            "/api/v1/jobs",
            Some(ADMIN),
            Body::from("not json"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(serde_json::from_slice::<Value>(&b).unwrap()["error"].is_string());
    let (s, v) = t.get("/api/v1/nope", ADMIN).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());
    let (s, v) = t.get("/api/v1/jobs/42", ADMIN).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no job 42"))
    );
    let (s, v) = t.get("/api/v1/jobs/abc", ADMIN).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = t.put("/api/v1/jobs", ADMIN, Value::Null).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");

    let r = t.register(&[]).await;
    t.submit(&[]).await;
    let l = t.lease(&r.token).await.unwrap();
    let (s, v) = t.append(l.job_id, &l.job_token, 0, &[b'x'; 2000]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        v["error"].as_str().unwrap().contains("send smaller chunks"),
        "{v}"
    );
    let (s, b) = t
        .req(
            Method::POST,
            &format!("/api/v1/jobs/{}/log", l.job_id),
            Some(&l.job_token),
            Body::from("x"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "offset is required");
    assert!(String::from_utf8_lossy(&b).contains("offset"));
}

#[tokio::test]
async fn first_start_generates_tokens_once_and_stores_only_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let url = store::url();
    let config = || Config {
        store: url.clone(),
        ..Config::default()
    };
    let (_, boot) = open(dir.path(), config(), None, None, BTreeMap::new())
        .await
        .unwrap();
    let admin = boot.new_admin_token.unwrap();
    assert!(admin.starts_with("pfa_") && boot.new_registration_token.unwrap().starts_with("pfg_"));
    let (state, boot) = open(dir.path(), config(), None, None, BTreeMap::new())
        .await
        .unwrap();
    assert!(boot.new_admin_token.is_none() && boot.new_registration_token.is_none());
    let hay = store::stored(dir.path(), url.as_deref());
    assert!(!hay.is_empty());
    assert!(
        !hay.windows(admin.len()).any(|w| w == admin.as_bytes()),
        "the token itself is not stored"
    );
    let t = T { state, _dir: dir };
    let (s, _) = t.get("/api/v1/jobs", &admin).await;
    assert_eq!(s, StatusCode::OK);
}

impl T {
    async fn submit_verify(&self, n: u32) -> u64 {
        let spec = format!(
            "image: busybox@sha256:{DIGEST}\nverify: {n}\nsteps:\n  - name: a\n    run: echo hi\nartifacts: [out/*]\n"
        );
        let (s, v) = self
            .post("/api/v1/jobs", ADMIN, json!({"spec": spec}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        serde_json::from_value::<SubmitResponse>(v).unwrap().job_id
    }

    async fn upload(&self, l: &Lease, name: &str, data: &[u8]) {
        let (s, b) = self
            .req(
                Method::PUT,
                &format!(
                    "/api/v1/jobs/{}/artifacts/{name}?sha256={}",
                    l.job_id,
                    sha(data)
                ),
                Some(&l.job_token),
                Body::from(data.to_vec()),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    }

    async fn finish(&self, l: &Lease, state: &str) {
        let (s, v) = self
            .on_job(l.job_id, "finish", &l.job_token, json!({ "state": state }))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

#[tokio::test]
async fn verify_runs_go_to_distinct_runners_and_settle_a_verdict() {
    let t = setup(Config::default()).await;
    let (r1, r2) = (t.register(&[]).await, t.register(&[]).await);
    let g = t.submit_verify(2).await;
    let a = t.lease(&r1.token).await.expect("a run for r1");
    assert_ne!(a.job_id, g, "the group itself is never leased");
    assert_eq!(t.status(a.job_id).await.verify_of, Some(g));
    // r1 may not take the second run, even while it holds the first.
    assert!(t.lease(&r1.token).await.is_none());
    let info = t.status(g).await;
    let v = info.verify.clone().unwrap();
    assert_eq!(info.state.as_str(), "running");
    // r2 registered but never asked for work: one runner is online.
    let waiting = v.waiting.unwrap();
    assert!(
        waiting.contains("1 of 2 runs wait") && waiting.contains("1 online"),
        "{waiting}"
    );
    t.upload(&a, "out/same", b"same").await;
    t.upload(&a, "out/stamp", b"one").await;
    t.finish(&a, "succeeded").await;
    assert!(
        t.lease(&r1.token).await.is_none(),
        "not after it finished either"
    );
    assert_eq!(t.status(g).await.state.as_str(), "running");

    let b = t.lease(&r2.token).await.expect("a run for r2");
    t.upload(&b, "out/same", b"same").await;
    t.upload(&b, "out/stamp", b"two").await;
    t.finish(&b, "succeeded").await;
    let info = t.status(g).await;
    assert_eq!(info.state.as_str(), "failed", "{info:?}");
    let verdict = info.verify.unwrap().verdict.unwrap();
    assert!(!verdict.reproducible);
    assert_eq!(verdict.differing, vec!["out/stamp".to_string()]);
    let stamp = &verdict.artifacts[1];
    assert_eq!(
        stamp.by_runner,
        BTreeMap::from([
            (r1.runner_id, Some(sha(b"one"))),
            (r2.runner_id, Some(sha(b"two")))
        ])
    );
    let log = String::from_utf8(t.log(g).await).unwrap();
    assert!(log.contains("out/stamp DIFFERS"), "{log}");
    assert!(log.contains("not reproducible: out/stamp differ"), "{log}");
}

#[tokio::test]
async fn a_failed_or_cancelled_run_ends_the_verify_job_without_verdict() {
    let t = setup(Config::default()).await;
    let (r1, r2) = (t.register(&[]).await, t.register(&[]).await);
    let g = t.submit_verify(2).await;
    let a = t.lease(&r1.token).await.unwrap();
    let b = t.lease(&r2.token).await.unwrap();
    t.finish(&a, "succeeded").await;
    t.finish(&b, "failed").await;
    let info = t.status(g).await;
    assert_eq!(info.state.as_str(), "failed");
    assert!(info.reason.unwrap().contains("no verdict"));
    assert!(info.verify.unwrap().verdict.is_none());

    // Cancelling the group: the queued run ends at once, the running one
    // learns it at its heartbeat; the group ends when it confirms.
    let g = t.submit_verify(2).await;
    let a = t.lease(&r1.token).await.unwrap();
    let (s, v) = t.on_job(g, "cancel", ADMIN, Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let runs = t.status(g).await.verify.unwrap().run_jobs;
    assert_eq!(runs[1].state.as_str(), "cancelled");
    assert_eq!(t.status(g).await.state.as_str(), "running");
    let (_, hb) = t
        .on_job(a.job_id, "heartbeat", &a.job_token, Value::Null)
        .await;
    assert_eq!(hb["cancel"], true);
    t.finish(&a, "cancelled").await;
    assert_eq!(t.status(g).await.state.as_str(), "cancelled");
}

#[tokio::test]
async fn runner_keys_are_checked_at_registration_and_served() {
    let t = setup(Config::default()).await;
    let key = pinfold_api::provenance::signing_key_from_seed([3; 32]);
    let pem = pinfold_api::provenance::public_key_pem(&key.verifying_key()).unwrap();
    let (s, v) = t.register_as(json!({"name": "k", "public_key": pem})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["runner_id"].as_u64().unwrap();
    let (s, v) = t.get(&format!("/api/v1/runners/{id}/key"), ADMIN).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["public_key"], pem.as_str());
    assert_eq!(
        v["keyid"],
        pinfold_api::provenance::key_id(&key.verifying_key()).as_str()
    );
    // Runner tokens do not read keys; a runner without one is a 404.
    let r = t.register(&[]).await;
    let (s, _) = t.get(&format!("/api/v1/runners/{id}/key"), &r.token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = t
        .get(&format!("/api/v1/runners/{}/key", r.runner_id), ADMIN)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no public key"));
    // A runner registered without a key (an older agent) sets one, once.
    let (s, v) = t
        .put("/api/v1/runner/key", &r.token, json!({"public_key": pem}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = t
        .put("/api/v1/runner/key", &r.token, json!({"public_key": pem}))
        .await;
    assert_eq!(s, StatusCode::OK, "the same key again is fine");
    let other = pinfold_api::provenance::signing_key_from_seed([4; 32]);
    let other = pinfold_api::provenance::public_key_pem(&other.verifying_key()).unwrap();
    let (s, v) = t
        .put("/api/v1/runner/key", &r.token, json!({"public_key": other}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("cannot change"),
        "{v}"
    );
    let (s, v) = t
        .get(&format!("/api/v1/runners/{}/key", r.runner_id), ADMIN)
        .await;
    assert_eq!(
        (s, v["public_key"].as_str()),
        (StatusCode::OK, Some(pem.as_str()))
    );
    let (s, v) = t
        .register_as(json!({"name": "bad", "public_key": "not a key"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("public_key"), "{v}");
}

/// Issue 13 point 8: a runner that declares the label a secret is scoped to
/// does not get the secret; once the admin trusts it with the label it does;
/// a secret without a scope goes to no runner; a runner cannot trust itself.
#[tokio::test]
async fn secrets_go_only_to_runners_the_admin_trusts() {
    let t = setup(scoped()).await;
    let runner = t.register(&["linux", "deploy"]).await;
    let id = runner.runner_id;

    let secrets = t.secrets_for(&["deploy"], &runner.token).await;
    assert!(
        secrets.is_empty(),
        "self-declared label unlocked {:?}",
        secrets
    );

    // The runner's own token cannot assign labels.
    let (s, _) = t
        .post(
            &format!("/api/v1/runners/{id}/labels"),
            &runner.token,
            json!({"add": ["deploy"]}),
        )
        .await;
    assert!(s.is_client_error(), "{s}");

    let v = t.trust(id, &["deploy"], &[]).await;
    assert_eq!(v["trusted_labels"], json!(["deploy"]));
    let secrets = t.secrets_for(&["deploy"], &runner.token).await;
    assert_eq!(
        secrets.get("DEPLOY_KEY").map(String::as_str),
        Some("hunter2")
    );

    let v = t.trust(id, &[], &["deploy"]).await;
    assert_eq!(v["trusted_labels"], json!([]));
    assert!(t.secrets_for(&["deploy"], &runner.token).await.is_empty());

    // Unscoped: even a trusted runner gets nothing. A runner id scope works.
    let t = setup(Config::default()).await;
    let runner = t.register(&["deploy"]).await;
    t.trust(runner.runner_id, &["deploy"], &[]).await;
    assert!(t.secrets_for(&[], &runner.token).await.is_empty());
    let by_id = Config {
        secret_scopes: [(
            "DEPLOY_KEY".to_string(),
            vec![format!("runner:{}", runner.runner_id)],
        )]
        .into(),
        ..Config::default()
    };
    assert!(by_id.secret_may_go("DEPLOY_KEY", runner.runner_id, &[]));
    assert!(!by_id.secret_may_go("DEPLOY_KEY", runner.runner_id + 1, &["deploy".into()]));
}
