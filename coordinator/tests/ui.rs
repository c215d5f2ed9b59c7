//! The web pages through the real router and store (no socket, no
//! browser; tests/dashboard.rs drives them in Chromium): sign-in, the
//! session cookie, CSRF, what a viewer may do, and that job output is text.

mod common;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use pinfold_api::wire::{Lease, RegisterResponse, SubmitResponse, ViewerToken};
use pinfold_coordinator::ui::CSP;
use pinfold_coordinator::{AppState, Config, app};
use sha2::Digest;
use tower::ServiceExt;

const ADMIN: &str = "pfa_ui_admin";
const REG: &str = "pfg_ui_registration";

struct T {
    state: AppState,
    _dir: tempfile::TempDir,
}

struct Resp {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

async fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    let state =
        common::coordinator(dir.path(), Config::default(), [ADMIN, REG], BTreeMap::new()).await;
    T { state, _dir: dir }
}

impl T {
    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn api(&self, method: Method, uri: &str, token: &str, body: Body) -> Resp {
        self.send(
            Request::builder()
                .method(method)
                .uri(uri)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(body)
                .unwrap(),
        )
        .await
    }

    async fn page(&self, uri: &str, cookie: &str) -> Resp {
        self.send(
            Request::builder()
                .uri(uri)
                .header("cookie", cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn form(&self, uri: &str, cookie: Option<&str>, form: &str) -> Resp {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        self.send(b.body(Body::from(form.to_string())).unwrap())
            .await
    }

    /// POSTs `body` to `/api/v1/jobs/{job}/{action}` (`log?offset=N`,
    /// `finish`) with `token`.
    async fn on_job(&self, job: u64, action: &str, token: &str, body: impl Into<Body>) -> Resp {
        let uri = format!("/api/v1/jobs/{job}/{action}");
        self.api(Method::POST, &uri, token, body.into()).await
    }

    /// PUTs `facts` as a runner's facts, with `token`.
    async fn put_facts(&self, token: &str, facts: &serde_json::Value) -> Resp {
        let body = Body::from(facts.to_string());
        self.api(Method::PUT, "/api/v1/runner/facts", token, body)
            .await
    }

    /// Leases the next job as `runner`.
    async fn lease(&self, runner: &RegisterResponse) -> Lease {
        let r = self
            .api(
                Method::POST,
                "/api/v1/runner/lease",
                &runner.token,
                Body::from(r#"{"wait_secs":0}"#),
            )
            .await;
        serde_json::from_str(&r.body).unwrap()
    }

    /// POSTs the job page's Cancel form with this session and token.
    async fn cancel(&self, job: u64, cookie: &str, csrf: &str) -> Resp {
        self.form(
            &format!("/ui/jobs/{job}/cancel"),
            Some(cookie),
            &format!("csrf={csrf}"),
        )
        .await
    }

    /// Signs in; the cookie to send back.
    async fn sign_in(&self, token: &str) -> String {
        let r = self
            .form("/ui/sign-in", None, &format!("token={token}"))
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
        set.split(';').next().unwrap().to_string()
    }

    async fn register(&self, name: &str) -> RegisterResponse {
        let body = serde_json::json!({ "name": name, "labels": [] }).to_string();
        let r = self
            .api(Method::POST, "/api/v1/runners", REG, Body::from(body))
            .await;
        serde_json::from_str(&r.body).unwrap()
    }

    /// Submits a job of one `echo` step, with `extra` job-file lines.
    async fn submit(&self, extra: &str) -> u64 {
        let spec = format!(
            "image: busybox@sha256:{}\n{extra}steps:\n  - name: a\n    run: echo hi\n",
            "0".repeat(64)
        );
        let r = self
            .api(
                Method::POST,
                "/api/v1/jobs",
                ADMIN,
                Body::from(serde_json::json!({ "spec": spec }).to_string()),
            )
            .await;
        serde_json::from_str::<SubmitResponse>(&r.body)
            .unwrap()
            .job_id
    }

    async fn state_of(&self, job: u64) -> String {
        let r = self
            .api(
                Method::GET,
                &format!("/api/v1/jobs/{job}"),
                ADMIN,
                Body::empty(),
            )
            .await;
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// The CSRF token a page's forms carry.
fn csrf(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 64].to_string()
}

#[tokio::test]
async fn pages_need_a_session_from_a_real_token_and_set_a_strict_csp() {
    let t = setup().await;
    let r = t.page("/ui/jobs", "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/ui/sign-in");
    // Another site's page cannot sign this browser in (login CSRF).
    let r = t
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/ui/sign-in")
                .header("host", "127.0.0.1:8080")
                .header("origin", "https://evil.example")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={ADMIN}")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    let r = t.form("/ui/sign-in", None, "token=pfa_not_it").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    let r = t.page("/ui/jobs", "pinfold_session=forged").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    let r = t.form("/ui/sign-in", None, &format!("token={ADMIN}")).await;
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap();
    let r = t.page("/ui/jobs", cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert_eq!(csp, CSP);
    let script_src = csp
        .split(';')
        .find(|d| d.trim().starts_with("script-src"))
        .unwrap();
    assert_eq!(script_src.trim(), "script-src 'self'");
    assert!(
        !r.body.contains("<script>") && !r.body.contains(" on"),
        "inline script in the page"
    );

    // Sign-out needs the form's token, then the cookie is dead.
    let r = t.form("/ui/sign-out", Some(cookie), "csrf=00").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let token = csrf(&t.page("/ui/jobs", cookie).await.body);
    let r = t
        .form("/ui/sign-out", Some(cookie), &format!("csrf={token}"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        t.page("/ui/jobs", cookie).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_cancel_or_revoke_and_forms_need_their_csrf_token() {
    let t = setup().await;
    let job = t.submit("").await;
    let r = t
        .api(Method::POST, "/api/v1/viewer-tokens", ADMIN, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let viewer: ViewerToken = serde_json::from_str(&r.body).unwrap();
    assert!(viewer.token.starts_with("pfv_"));
    // A viewer token is no API token.
    let r = t
        .api(Method::GET, "/api/v1/jobs", &viewer.token, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let v = t.sign_in(&viewer.token).await;
    let page = t.page(&format!("/ui/jobs/{job}"), &v).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains("Cancel job"),
        "a viewer is offered Cancel"
    );
    let token = csrf(&page.body);
    let r = t.cancel(job, &v, &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("can only read"), "{}", r.body);
    let runner = t.register("r").await;
    let r = t
        .form(
            &format!("/ui/runners/{}/revoke", runner.runner_id),
            Some(&v),
            &format!("csrf={token}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(t.state_of(job).await, "queued");

    // The admin's session: a missing or foreign CSRF token is refused...
    let a = t.sign_in(ADMIN).await;
    let r = t
        .form(&format!("/ui/jobs/{job}/cancel"), Some(&a), "")
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    let r = t.cancel(job, &a, &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(t.state_of(job).await, "queued");
    // ...and its own works.
    let mine = csrf(&t.page(&format!("/ui/jobs/{job}"), &a).await.body);
    let r = t.cancel(job, &a, &mine).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(t.state_of(job).await, "cancelled");

    // The admin revokes every viewer token: the viewer is signed out now
    // and cannot sign in again; the admin's own session stays.
    let r = t
        .api(
            Method::DELETE,
            "/api/v1/viewer-tokens",
            ADMIN,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let got: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(got, serde_json::json!({"revoked": 1, "sessions": 1}));
    assert_eq!(t.page("/ui/jobs", &v).await.status, StatusCode::SEE_OTHER);
    let r = t
        .form("/ui/sign-in", None, &format!("token={}", viewer.token))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(t.page("/ui/jobs", &a).await.status, StatusCode::OK);
    let r = t
        .api(
            Method::DELETE,
            "/api/v1/viewer-tokens",
            &viewer.token,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "only the admin revokes");
}

#[tokio::test]
async fn job_output_is_text_in_the_page_the_live_follow_and_the_search() {
    let t = setup().await;
    let job = t.submit("").await;
    let lease = t.lease(&t.register("r").await).await;
    let log = "==> step 1/1: a\n<script>alert(1)</script>\n\"><img src=x onerror=alert(2)>\n\x1b[31mred\x1b[0m\x1b]0;osc-title\x07\n";
    let r = t.on_job(job, "log?offset=0", &lease.job_token, log).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let a = t.sign_in(ADMIN).await;
    let page = t.page(&format!("/ui/jobs/{job}"), &a).await.body;
    for bad in [
        "<script>alert",
        "<img",
        "onerror=alert(2)>",
        "\x1b",
        "osc-title",
    ] {
        assert!(!page.contains(bad), "{bad:?} reached the page raw");
    }
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("<summary>step 1/1: a</summary>"));
    assert!(page.contains("<span style='color:var(--red,#a00)'>red</span>"));

    let hits = t
        .page(&format!("/ui/jobs/{job}/search?q=onerror"), &a)
        .await
        .body;
    assert!(hits.contains("1 matching lines"), "{hits}");
    assert!(hits.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    assert!(!hits.contains("<img"));

    let raw = t.page(&format!("/ui/jobs/{job}/log.txt"), &a).await;
    assert_eq!(raw.body, log, "the raw log is the stored bytes");
    assert!(
        raw.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );

    // The live follow, on a real socket: from a byte offset and line (where
    // a dropped page reconnects from), the rest of the lines, then the end.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pinfold_coordinator::serve(
        listener,
        t.state.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut ws = live(addr, job, &a, "16:2", Some(&format!("http://{addr}"))).await;
    let first = next_text(&mut ws).await;
    let m: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(m["at"], format!("{}:5:1", log.len()));
    assert_eq!(m["lines"][0]["n"], 2);
    assert_eq!(m["lines"][0]["o"], 16);
    assert!(
        !first.contains("step 1/1"),
        "resumed before its offset: {first}"
    );
    // Still running: nothing more until the log grows or the job ends.
    {
        use futures_util::StreamExt;
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), ws.next()).await;
        assert!(quiet.is_err(), "a message with nothing new: {quiet:?}");
    }
    let finish = r#"{"state":"failed","reason":"step a exited 1","steps":[]}"#;
    let r = t.on_job(job, "finish", &lease.job_token, finish).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(next_text(&mut ws).await, r#"{"end":"failed"}"#);

    // Another site's page cannot open it, even with the cookie.
    let refused = tokio_tungstenite::client_async(
        ws_request(addr, job, &a, "0:1", Some("http://evil.example")),
        tokio::net::TcpStream::connect(addr).await.unwrap(),
    )
    .await;
    assert!(refused.is_err(), "a cross-origin handshake was accepted");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn ws_request(
    addr: std::net::SocketAddr,
    job: u64,
    cookie: &str,
    from: &str,
    origin: Option<&str>,
) -> Request<()> {
    let mut b = Request::builder()
        .uri(format!("ws://{addr}/ui/jobs/{job}/log/live?from={from}"))
        .header("host", addr.to_string())
        .header("cookie", cookie)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        );
    if let Some(o) = origin {
        b = b.header("origin", o);
    }
    b.body(()).unwrap()
}

async fn live(
    addr: std::net::SocketAddr,
    job: u64,
    cookie: &str,
    from: &str,
    origin: Option<&str>,
) -> Ws {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(ws_request(addr, job, cookie, from, origin), stream)
        .await
        .expect("the live log's handshake")
        .0
}

async fn next_text(ws: &mut Ws) -> String {
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return t.to_string();
        }
    }
}

#[tokio::test]
async fn a_runners_facts_are_shown_as_text_and_bounded() {
    let t = setup().await;
    let runner = t.register("<b>r</b>\u{202e}lave").await;
    let facts = serde_json::json!({
        "version": "0.1.0<script>alert(1)</script>", "kernel": "6.18.0",
        "limits": "cgroup v2", "landlock_abi": 7, "policies": ["default", "trusted"],
    });
    let r = t.put_facts(&runner.token, &facts).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    // Only a runner says what it is; the admin token cannot.
    let r = t.put_facts(ADMIN, &facts).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let long = serde_json::json!({
        "version": "x".repeat(201), "kernel": "", "limits": "", "landlock_abi": 0, "policies": [],
    });
    let r = t.put_facts(&runner.token, &long).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("too long"), "{}", r.body);

    let a = t.sign_in(ADMIN).await;
    let page = t.page("/ui/runners", &a).await.body;
    assert!(page.contains("Landlock ABI 7") && page.contains("policies: default, trusted"));
    assert!(page.contains("0.1.0&lt;script&gt;") && !page.contains("<script>alert"));
    assert!(page.contains("&lt;b&gt;r&lt;/b&gt;") && !page.contains("<b>r</b>"));
    assert!(
        page.contains("&lt;/b&gt;\\u{202e}lave") && !page.contains('\u{202e}'),
        "a bidi override in a runner's name is shown, not obeyed"
    );
}

#[tokio::test]
async fn a_verify_group_shows_its_runs_side_by_side_and_what_differed() {
    let t = setup().await;
    let group = t.submit("verify: 2\nartifacts: [out/*]\n").await;
    for (name, stamp) in [("r1", "one"), ("r2", "two")] {
        let lease = t.lease(&t.register(name).await).await;
        for (art, data) in [("out/same", "same"), ("out/stamp", stamp)] {
            let sha = hex::encode(sha2::Sha256::digest(data));
            let uri = format!("/api/v1/jobs/{}/artifacts/{art}?sha256={sha}", lease.job_id);
            let r = t
                .api(Method::PUT, &uri, &lease.job_token, Body::from(data))
                .await;
            assert!(r.status.is_success(), "{}", r.body);
        }
        let finish = r#"{"state":"succeeded","steps":[]}"#;
        let r = t
            .on_job(lease.job_id, "finish", &lease.job_token, finish)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let a = t.sign_in(ADMIN).await;
    let page = t.page(&format!("/ui/jobs/{group}"), &a).await.body;
    let verify = &page[page
        .find("id=\"verify\"")
        .expect("a reproducibility section")..];
    assert!(
        verify.contains("not reproducible</span>: out/stamp differ"),
        "{verify}"
    );
    assert!(verify.contains("Runner #1") && verify.contains("Runner #2"));
    let stamp_row = &verify[verify.find("<td>out/stamp</td>").unwrap()..];
    assert!(stamp_row.starts_with("<td>out/stamp</td><td><strong>no</strong>"));
    assert!(verify.contains("<td>out/same</td><td>yes</td>"));
}

#[tokio::test]
async fn a_long_log_shows_its_last_lines_and_earlier_shows_the_ones_before() {
    let t = setup().await;
    let job = t.submit("").await;
    let lease = t.lease(&t.register("r").await).await;
    let log: String = (1..=6000).map(|i| format!("line {i}\n")).collect();
    let r = t
        .on_job(job, "log?offset=0", &lease.job_token, log.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let a = t.sign_in(ADMIN).await;
    // The log lines a page shows: how many, the first and the last.
    let shown = |page: &str| -> (usize, String, String) {
        let rows: Vec<&str> = page
            .match_indices("<span class=\"t\">")
            .map(|(i, m)| {
                let rest = &page[i + m.len()..];
                &rest[..rest.find('<').unwrap()]
            })
            .collect();
        let first = rows.first().copied().unwrap_or_default();
        let last = rows.last().copied().unwrap_or_default();
        (rows.len(), first.into(), last.into())
    };
    let tail = t.page(&format!("/ui/jobs/{job}"), &a).await.body;
    assert_eq!(shown(&tail), (5000, "line 1001".into(), "line 6000".into()));
    assert!(
        tail.contains("id=\"L1001\""),
        "line numbers count the lines before"
    );
    let start = log.find("line 1001\n").unwrap();
    assert!(
        tail.contains(&format!("?to={start}#log\">Earlier")),
        "no Earlier link"
    );
    let earlier = t.page(&format!("/ui/jobs/{job}?to={start}"), &a).await.body;
    assert_eq!(shown(&earlier), (1000, "line 1".into(), "line 1000".into()));
    assert!(
        !earlier.contains("data-live"),
        "a window before the end follows nothing"
    );
}
