//! pinfold-client: the blocking HTTP client of the coordinator protocol, one
//! method per endpoint of `docs/protocol.md`. The runner agent talks to its
//! coordinator through it, the CLI's remote commands (`submit`, `jobs`,
//! `logs`, `artifacts`, ...) use it, and the coordinator's tests and
//! benchmark drive the server with it as a runner would.
//!
//! It is what a runner links to reach the server, so it stays small: it
//! depends on `pinfold-api` (the wire types) and a synchronous HTTP client,
//! never on `pinfold-coordinator` (the server: axum, tokio, SQLite) nor on
//! `pinfold-sandbox`, and nothing server-side may come in through it.
#![deny(missing_docs)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pinfold_api::wire::{
    ArtifactInfo, ArtifactList, ErrorBody, FinishRequest, HeartbeatResponse, JobInfo, JobList,
    Lease, LeaseRequest, LogAppendResponse, ProvenanceStored, RegisterRequest, RegisterResponse,
    RunnerFacts, RunnerInfo, RunnerKey, RunnerKeyRequest, SubmitRequest, SubmitResponse,
    TrustRequest, TrustedLabels, ViewerToken, ViewerTokensRevoked,
};
use serde::de::DeserializeOwned;
use ureq::http::Response;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("server refused ({status}): {error}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The server's `error` message.
        error: String,
        /// For a refused log append: where to resume.
        expected_offset: Option<u64>,
    },
    /// The request did not get an answer (connect, timeout, broken body).
    #[error("{0}")]
    Transport(#[from] ureq::Error),
    /// Local I/O while streaming a body.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// Whether the same request may succeed later: no answer, or an answer
    /// that says the server (or the load balancer before it) cannot serve
    /// now (502, 503: its database restarting, 504).
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) | ClientError::Io(_) => true,
            ClientError::Http { status, .. } => matches!(status, 502..=504),
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result of a call.
pub type Result<T> = std::result::Result<T, ClientError>;

/// The coordinators a client may talk to: several, comma separated, when
/// they share one database and no load balancer stands before them.
/// Requests go to the current one; one that gives no answer, or answers
/// 502-504, makes the next one current for the requests after it (the
/// caller's retry goes there). Hand-written as a ureq middleware, which
/// sees every request's outcome in one place.
struct Servers {
    bases: Vec<String>,
    current: AtomicUsize,
}

/// [`Servers`] as the agent's middleware.
struct Failover(Arc<Servers>);

impl ureq::middleware::Middleware for Failover {
    fn handle(
        &self,
        mut request: ureq::http::Request<ureq::SendBody>,
        next: ureq::middleware::MiddlewareNext,
    ) -> std::result::Result<Response<ureq::Body>, ureq::Error> {
        let s = &self.0;
        let n = s.bases.len();
        if n < 2 {
            return next.handle(request);
        }
        // Requests are made against the first; send this one to the current.
        let i = s.current.load(Ordering::SeqCst) % n;
        let uri = request.uri().to_string();
        if let Some(rest) = uri.strip_prefix(&s.bases[0])
            && let Ok(u) = format!("{}{rest}", s.bases[i]).parse()
        {
            *request.uri_mut() = u;
        }
        let out = next.handle(request);
        let failed = match &out {
            Err(_) => true,
            Ok(r) => matches!(r.status().as_u16(), 502..=504),
        };
        if failed {
            let _ = s
                .current
                .compare_exchange(i, (i + 1) % n, Ordering::SeqCst, Ordering::SeqCst);
        }
        out
    }
}

/// A connection to a coordinator (or several: [`Client::new`]) with one
/// token.
#[derive(Clone)]
pub struct Client {
    base: String,
    servers: Arc<Servers>,
    token: Option<String>,
    agent: ureq::Agent,
    timeout: Duration,
}

impl Client {
    /// A client of `server` (e.g. `http://127.0.0.1:8080`, or several
    /// such URLs, comma separated: coordinators on one database, tried in
    /// turn when one does not answer) whose calls give up after `timeout`
    /// (long-polls and follows get their own).
    pub fn new(server: &str, token: Option<String>, timeout: Duration) -> Client {
        let bases: Vec<String> = server
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let servers = Arc::new(Servers {
            bases: if bases.is_empty() {
                vec![String::new()]
            } else {
                bases
            },
            current: AtomicUsize::new(0),
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .middleware(Failover(servers.clone()))
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // An agent keeps a few log appends, a heartbeat and a long-poll
            // per job open at once: keep their connections (ureq keeps 3).
            .max_idle_connections_per_host(16)
            .max_idle_connections(32)
            .build()
            .into();
        Client {
            base: servers.bases[0].clone(),
            servers,
            token,
            agent,
            timeout,
        }
    }

    /// With several coordinators, makes the first that answers `/healthz`
    /// (from the current one on) the current one; with one, does nothing.
    /// For a one-shot command, which does not retry as the agent does.
    pub fn find_answering(&self) {
        let n = self.servers.bases.len();
        if n < 2 {
            return;
        }
        for _ in 0..n {
            if self.health().is_ok() {
                return;
            }
            // The failed request made the next one current.
        }
    }

    /// The same server and connections with another token.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn get(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.auth(self.agent.get(self.url(path)))
    }

    fn post(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.auth(self.agent.post(self.url(path)))
    }

    fn put(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.auth(self.agent.put(self.url(path)))
    }

    /// `GET /healthz`.
    pub fn health(&self) -> Result<()> {
        check(self.get("/healthz").call()?).map(drop)
    }

    /// `POST /api/v1/runners` (registration token).
    pub fn register(&self, name: &str, labels: &[String]) -> Result<RegisterResponse> {
        self.register_with_key(name, labels, None)
    }

    /// `POST /api/v1/runners` (registration token) with the runner's public
    /// key (SPKI PEM), which its provenance must verify with.
    pub fn register_with_key(
        &self,
        name: &str,
        labels: &[String],
        public_key: Option<&str>,
    ) -> Result<RegisterResponse> {
        json(self.post("/api/v1/runners").send_json(RegisterRequest {
            name: name.into(),
            labels: labels.to_vec(),
            public_key: public_key.map(str::to_owned),
        })?)
    }

    /// `PUT /api/v1/runner/key` (runner token): sets this runner's key when
    /// it registered without one (409 when it has another).
    pub fn set_runner_key(&self, public_key: &str) -> Result<RunnerKey> {
        json(self.put("/api/v1/runner/key").send_json(RunnerKeyRequest {
            public_key: public_key.to_owned(),
        })?)
    }

    /// `GET /api/v1/runners/{id}/key` (admin): the runner's public key.
    pub fn runner_key(&self, id: u64) -> Result<RunnerKey> {
        json(self.get(&format!("/api/v1/runners/{id}/key")).call()?)
    }

    /// `PUT /api/v1/jobs/{id}/provenance` (job token): a DSSE envelope (JSON).
    pub fn upload_provenance(&self, job: u64, envelope: &[u8]) -> Result<ProvenanceStored> {
        let req = self
            .put(&format!("/api/v1/jobs/{job}/provenance"))
            .content_type("application/json");
        json(expect_continue(req, envelope.len() as u64).send(envelope)?)
    }

    /// `GET /api/v1/jobs/{id}/provenance` (admin): the signing runner's id
    /// and the envelope as uploaded; None when the job has none.
    pub fn provenance(&self, job: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let resp = self.get(&format!("/api/v1/jobs/{job}/provenance")).call()?;
        if resp.status().as_u16() == 404 {
            // Tell "no provenance" from "no job": the job must exist.
            self.job(job)?;
            return Ok(None);
        }
        let resp = check(resp)?;
        let runner = resp
            .headers()
            .get("x-pinfold-runner-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = resp
            .into_body()
            .into_with_config()
            .limit(16 << 20)
            .read_to_vec()?;
        Ok(Some((runner, body)))
    }

    /// `GET /api/v1/runners` (admin).
    pub fn runners(&self) -> Result<Vec<RunnerInfo>> {
        json(self.get("/api/v1/runners").call()?)
    }

    /// `POST /api/v1/runners/{id}/labels` (admin): adds and removes the
    /// labels the admin trusts the runner with (they unlock secrets).
    pub fn trust_labels(
        &self,
        id: u64,
        add: &[String],
        remove: &[String],
    ) -> Result<TrustedLabels> {
        json(
            self.post(&format!("/api/v1/runners/{id}/labels"))
                .send_json(TrustRequest {
                    add: add.to_vec(),
                    remove: remove.to_vec(),
                })?,
        )
    }

    /// `DELETE /api/v1/runners/{id}` (admin).
    pub fn revoke_runner(&self, id: u64) -> Result<()> {
        let req = self.auth(
            self.agent
                .delete(self.url(&format!("/api/v1/runners/{id}"))),
        );
        check(req.call()?).map(drop)
    }

    /// `PUT /api/v1/runner/facts` (runner token): what this runner's host
    /// enforces, for the dashboard.
    pub fn set_runner_facts(&self, facts: &RunnerFacts) -> Result<()> {
        check(self.put("/api/v1/runner/facts").send_json(facts)?).map(drop)
    }

    /// `POST /api/v1/viewer-tokens` (admin): a read-only token for the web
    /// pages, shown once.
    pub fn viewer_token(&self) -> Result<ViewerToken> {
        json(self.post("/api/v1/viewer-tokens").send_empty()?)
    }

    /// `DELETE /api/v1/viewer-tokens` (admin): revokes every viewer token
    /// and signs every viewer out.
    pub fn revoke_viewer_tokens(&self) -> Result<ViewerTokensRevoked> {
        let req = self.auth(self.agent.delete(self.url("/api/v1/viewer-tokens")));
        json(req.call()?)
    }

    /// `PUT /api/v1/sources/{sha256}` (admin): streams a source tar.
    pub fn upload_source(&self, sha256: &str, file: &std::fs::File) -> Result<ArtifactInfo> {
        json(
            expect_continue(self.put(&format!("/api/v1/sources/{sha256}")), u64::MAX)
                .config()
                .timeout_global(None)
                .build()
                .send(file)?,
        )
    }

    /// `POST /api/v1/jobs` (admin).
    pub fn submit(&self, req: &SubmitRequest) -> Result<SubmitResponse> {
        let body = serde_json::to_vec(req).expect("plain data serializes");
        json(
            expect_continue(self.post("/api/v1/jobs"), body.len() as u64)
                .content_type("application/json")
                .send(&body[..])?,
        )
    }

    /// `GET /api/v1/jobs/{id}` (admin).
    pub fn job(&self, id: u64) -> Result<JobInfo> {
        json(self.get(&format!("/api/v1/jobs/{id}")).call()?)
    }

    /// `GET /api/v1/jobs` (admin), newest first.
    pub fn jobs(&self, state: Option<&str>, limit: u32) -> Result<JobList> {
        let mut req = self.get("/api/v1/jobs").query("limit", limit.to_string());
        if let Some(s) = state {
            req = req.query("state", s);
        }
        json(req.call()?)
    }

    /// `POST /api/v1/jobs/{id}/cancel` (admin).
    pub fn cancel(&self, id: u64) -> Result<JobInfo> {
        json(
            self.post(&format!("/api/v1/jobs/{id}/cancel"))
                .send_empty()?,
        )
    }

    /// `POST /api/v1/runner/lease` (runner token): `None` when no job came
    /// within `wait_secs`.
    pub fn lease(&self, wait_secs: u64) -> Result<Option<Lease>> {
        let resp = self
            .post("/api/v1/runner/lease")
            .config()
            .timeout_global(Some(self.timeout + Duration::from_secs(wait_secs)))
            .build()
            .send_json(LeaseRequest { wait_secs })?;
        if resp.status() == 204 {
            return Ok(None);
        }
        json(resp).map(Some)
    }

    /// `POST /api/v1/jobs/{id}/heartbeat` (job token).
    pub fn heartbeat(&self, job: u64) -> Result<HeartbeatResponse> {
        json(
            self.post(&format!("/api/v1/jobs/{job}/heartbeat"))
                .send_empty()?,
        )
    }

    /// `POST /api/v1/jobs/{id}/log?offset=N` (job token).
    pub fn append_log(&self, job: u64, offset: u64, data: &[u8]) -> Result<LogAppendResponse> {
        json(
            expect_continue(
                self.post(&format!("/api/v1/jobs/{job}/log")),
                data.len() as u64,
            )
            .query("offset", offset.to_string())
            .content_type("application/octet-stream")
            .send(data)?,
        )
    }

    /// `POST /api/v1/jobs/{id}/finish` (job token).
    pub fn finish(&self, job: u64, req: &FinishRequest) -> Result<JobInfo> {
        json(
            self.post(&format!("/api/v1/jobs/{job}/finish"))
                .send_json(req)?,
        )
    }

    /// `GET /api/v1/jobs/{id}/source` (job token) into `out`; returns the
    /// digest the server announced.
    pub fn download_source(&self, job: u64, out: &mut dyn Write) -> Result<String> {
        let resp = self
            .get(&format!("/api/v1/jobs/{job}/source"))
            .config()
            .timeout_global(None)
            .build()
            .call()?;
        copy_body(resp, out)
    }

    /// `PUT /api/v1/jobs/{id}/artifacts/{name}?sha256=` (job token).
    pub fn upload_artifact(
        &self,
        job: u64,
        name: &str,
        sha256: &str,
        body: &mut dyn Read,
    ) -> Result<ArtifactInfo> {
        json(
            self.put(&format!(
                "/api/v1/jobs/{job}/artifacts/{}",
                encode_path(name)
            ))
            .query("sha256", sha256)
            .config()
            .timeout_global(None)
            .build()
            .send(ureq::SendBody::from_reader(body))?,
        )
    }

    /// `GET /api/v1/jobs/{id}/artifacts` (admin).
    pub fn artifacts(&self, job: u64) -> Result<ArtifactList> {
        json(self.get(&format!("/api/v1/jobs/{job}/artifacts")).call()?)
    }

    /// `GET /api/v1/jobs/{id}/artifacts/{name}` (admin) into `out`; returns
    /// the digest the server announced (verify what you wrote against it).
    pub fn download_artifact(&self, job: u64, name: &str, out: &mut dyn Write) -> Result<String> {
        let resp = self
            .get(&format!(
                "/api/v1/jobs/{job}/artifacts/{}",
                encode_path(name)
            ))
            .config()
            .timeout_global(None)
            .build()
            .call()?;
        copy_body(resp, out)
    }

    /// `GET /api/v1/jobs/{id}/log?offset=N` (admin): a slice of the log, the
    /// offset after it, and whether the log is complete.
    pub fn read_log(&self, job: u64, offset: u64) -> Result<(Vec<u8>, u64, bool)> {
        let resp = check(
            self.get(&format!("/api/v1/jobs/{job}/log"))
                .query("offset", offset.to_string())
                .call()?,
        )?;
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next = header("x-pinfold-log-offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(offset);
        let complete = header("x-pinfold-log-complete").as_deref() == Some("true");
        let data = resp
            .into_body()
            .into_with_config()
            .limit(64 << 20)
            .read_to_vec()?;
        Ok((data, next, complete))
    }

    /// `GET /api/v1/jobs/{id}/log?offset=N&follow=true` (admin): copies the
    /// log to `out` as it grows until the job ends; returns the offset
    /// reached. A broken connection returns an error; call again from the
    /// returned offset to resume.
    pub fn follow_log(&self, job: u64, offset: u64, out: &mut dyn Write) -> Result<u64> {
        let resp = check(
            self.get(&format!("/api/v1/jobs/{job}/log"))
                .query("offset", offset.to_string())
                .query("follow", "true")
                .config()
                .timeout_global(None)
                .build()
                .call()?,
        )?;
        let mut reader = resp.into_body().into_reader();
        let mut at = offset;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(at);
            }
            out.write_all(&buf[..n])?;
            out.flush()?;
            at += n as u64;
        }
    }
}

/// Asks for `100 Continue` before sending a body of `len` bytes when it is
/// large, so a server that refuses it by size says so before the upload
/// (and the refusal is read instead of a broken pipe).
fn expect_continue(
    req: ureq::RequestBuilder<ureq::typestate::WithBody>,
    len: u64,
) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
    if len > 64 << 10 {
        req.header("Expect", "100-continue")
    } else {
        req
    }
}

/// Percent-encodes what a path segment cannot carry, keeping `/`.
fn encode_path(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn check(resp: Response<ureq::Body>) -> Result<Response<ureq::Body>> {
    let status = resp.status().as_u16();
    if status < 400 {
        return Ok(resp);
    }
    let text = resp
        .into_body()
        .into_with_config()
        .limit(1 << 20)
        .read_to_string()
        .unwrap_or_default();
    let (error, expected_offset) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => (b.error, b.expected_offset),
        Err(_) if text.trim().is_empty() => ("(no message)".to_string(), None),
        Err(_) => (text.trim().to_string(), None),
    };
    Err(ClientError::Http {
        status,
        error,
        expected_offset,
    })
}

fn json<T: DeserializeOwned>(resp: Response<ureq::Body>) -> Result<T> {
    Ok(check(resp)?
        .into_body()
        .into_with_config()
        .limit(64 << 20)
        .read_json()?)
}

fn copy_body(resp: Response<ureq::Body>, out: &mut dyn Write) -> Result<String> {
    let resp = check(resp)?;
    let sha = resp
        .headers()
        .get("x-pinfold-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut reader = resp.into_body().into_reader();
    std::io::copy(&mut reader, out)?;
    Ok(sha)
}
