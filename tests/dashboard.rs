//! The dashboard in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver, as the unprivileged test user so Chromium's own
//! sandbox works), against the real `pinfold server` and a real
//! `pinfold agent` running jobs on a busybox image.
//!
//! Screenshots go to `target/dashboard-screenshots/`; with
//! `PINFOLD_SCREENSHOTS=docs` also to `docs/screenshots/` (the README's).

mod common;
#[path = "common/server.rs"]
mod server;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use pinfold_api::wire::{JobState, SubmitRequest};
use pinfold_client::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use server::{ADMIN, REG, admin_cli, free_port, spawn_server};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A server, an agent as the test user, and chromedriver as the test user.
struct Rig {
    server: Child,
    agent: Child,
    driver: Child,
    url: String,
    driver_url: String,
    _homes: Vec<tempfile::TempDir>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for c in [&mut self.agent, &mut self.driver, &mut self.server] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_port(port: u16, what: &str) -> Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Rig {
    fn start() -> Result<Rig> {
        ensure!(
            std::path::Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: run tests/setup.sh (it installs chromium and chromium-driver)"
        );
        let server_home = tempfile::tempdir()?;
        let port = free_port();
        let server = spawn_server(server_home.path(), port, &[] as &[&str])?;
        let url = format!("http://127.0.0.1:{port}");
        let agent_home = common::user_dir();
        let agent = common::pinfold()
            .env("PINFOLD_HOME", agent_home.path())
            .env("RUST_LOG", "warn")
            .env("PINFOLD_ALLOW_LOCAL_IMAGES", "true")
            .args(["agent", "--server", &url, "--registration-token", REG])
            .args(["--name", "dash-runner", "--grace", "2s"])
            .stdout(Stdio::null())
            .spawn()?;
        let browser_home = common::user_dir();
        let dport = free_port();
        let mut driver = Command::new(CHROMEDRIVER);
        driver
            .arg(format!("--port={dport}"))
            .env_clear()
            .env("HOME", browser_home.path())
            .env("PATH", "/usr/bin:/bin")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = common::fixtures().user {
            driver.uid(uid).gid(gid);
        }
        let driver = driver.spawn()?;
        wait_port(dport, "chromedriver")?;
        Ok(Rig {
            server,
            agent,
            driver,
            url,
            driver_url: format!("http://127.0.0.1:{dport}"),
            _homes: vec![server_home, agent_home, browser_home],
        })
    }

    fn admin(&self) -> Client {
        Client::new(&self.url, Some(ADMIN.into()), Duration::from_secs(10))
    }

    /// `pinfold ARGS` as the admin against this server: its stdout, or an
    /// error with its stderr when it fails.
    fn admin_cli_ok(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = admin_cli(&self.url).args(args).output()?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    }

    fn submit(&self, steps: &str, extra: &str) -> Result<u64> {
        let spec = format!("image: {}\n{extra}steps:\n{steps}", common::busybox_image());
        Ok(self
            .admin()
            .submit(&SubmitRequest {
                spec,
                labels: vec![],
                source_sha256: None,
            })?
            .job_id)
    }

    /// The job's stored log so far.
    fn log(&self, id: u64) -> Result<String> {
        let (data, _, _) = self.admin().read_log(id, 0)?;
        Ok(String::from_utf8_lossy(&data).into_owned())
    }

    fn wait_state(&self, id: u64, want: impl Fn(JobState) -> bool) -> Result<JobState> {
        let start = Instant::now();
        loop {
            let s = self.admin().job(id)?.state;
            if want(s) {
                return Ok(s);
            }
            ensure!(
                start.elapsed() < Duration::from_secs(60),
                "job {id} stuck in {s:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn browser(&self) -> Result<Browser> {
        self.browser_with(true).await
    }

    /// Chromium, with page scripts allowed or not.
    async fn browser_with(&self, javascript: bool) -> Result<Browser> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--window-size=1280,900", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars"],
                "prefs": {
                    "profile.managed_default_content_settings.javascript": if javascript { 1 } else { 2 },
                },
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.driver_url)
            .await
            .context("starting Chromium through chromedriver")
    }

    /// Opens job `id`'s page in `b`.
    async fn open_job(&self, b: &Browser, id: u64) -> Result<()> {
        Ok(b.goto(&format!("{}/ui/jobs/{id}", self.url)).await?)
    }

    async fn sign_in(&self, b: &Browser, token: &str) -> Result<()> {
        b.goto(&format!("{}/ui/sign-in", self.url)).await?;
        b.find(Locator::Id("token")).await?.send_keys(token).await?;
        b.find(Locator::Css("main form button[type=submit]"))
            .await?
            .click()
            .await?;
        // The click may return before the POST's navigation has ended.
        let start = Instant::now();
        loop {
            let u = b.current_url().await?;
            if u.path() == "/ui/jobs" {
                return Ok(());
            }
            if let Ok(alert) = b.find(Locator::Css("p.error")).await {
                bail!("sign-in refused: {}", alert.text().await?);
            }
            ensure!(
                start.elapsed() < Duration::from_secs(15),
                "sign-in stayed on {u}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs `script` in the page and returns its value.
async fn js(b: &Browser, script: &str) -> Result<Value> {
    Ok(b.execute(script, vec![]).await?)
}

/// The text of the page's first element that matches the CSS `selector`
/// ("" when there is none).
async fn text_at(b: &Browser, selector: &str) -> Result<String> {
    let text = js(
        b,
        &format!("return document.querySelector({selector:?})?.innerText ?? ''"),
    )
    .await?;
    Ok(text.as_str().unwrap_or_default().to_string())
}

/// Waits until `script` returns true in the page.
async fn until(b: &Browser, script: &str, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if js(b, script).await? == Value::Bool(true) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            let text = js(b, "return document.body.innerText").await?;
            bail!("never true: {script}\npage: {text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn screenshot(b: &Browser, name: &str) -> Result<()> {
    let png = b.screenshot().await?;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), &png)?;
    if std::env::var("PINFOLD_SCREENSHOTS").as_deref() == Ok("docs") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&docs)?;
        std::fs::write(docs.join(name), &png)?;
    }
    Ok(())
}

const HOSTILE: &str = r#"  - name: hostile output
    run: |
      printf '<script>window.__pwned=1</script>\n'
      printf '"><img src=x onerror="window.__pwned=2">\n'
      printf '\033]0;osc-title\007\033[2J\033[31mred text\033[0m and \033[1mbold\033[0m\n'
      printf 'progress 10%%\rprogress 100%%\n'
  - name: build
    run: |
      i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo "tick $i"; sleep 0.1; done
      mkdir -p out && echo "the artifact" > out/app.txt
"#;

#[tokio::test(flavor = "multi_thread")]
async fn live_log_escaping_artifacts_accessibility_and_screenshots() -> Result<()> {
    let rig = Rig::start()?;
    let b = rig.browser().await?;
    rig.sign_in(&b, ADMIN).await?;

    // The page is open before the job prints anything: lines must arrive live.
    let job = rig.submit(HOSTILE, "artifacts: [out/app.txt]\n")?;
    rig.open_job(&b, job).await?;
    js(&b, "window.__loaded_once = true; return true").await?;
    until(
        &b,
        "return document.getElementById('logview').innerText.includes('tick 5')",
        Duration::from_secs(60),
    )
    .await?;
    ensure!(
        js(&b, "return window.__loaded_once === true").await? == Value::Bool(true),
        "the page reloaded instead of streaming"
    );
    screenshot(&b, "job-running.png").await?;
    until(
        &b,
        "return document.querySelector('main h1 .badge').innerText.includes('succeeded')",
        Duration::from_secs(60),
    )
    .await?;

    // What the job printed is text: nothing ran, no element was made.
    let pwned = js(&b, "return typeof window.__pwned").await?;
    assert_eq!(pwned, json!("undefined"), "the job's output ran script");
    let log = text_at(&b, "#logview").await?;
    assert!(log.contains("<script>window.__pwned=1</script>"), "{log}");
    assert!(
        log.contains("\"><img src=x onerror=\"window.__pwned=2\">"),
        "{log}"
    );
    assert!(!log.contains("osc-title") && !log.contains('\x1b'), "{log}");
    assert!(
        log.contains("progress 100%") && !log.contains("progress 10%"),
        "{log}"
    );
    let elements = js(
        &b,
        "return document.querySelectorAll('#logview img, #logview script, #logview [onerror]').length",
    )
    .await?;
    assert_eq!(elements, json!(0));
    let red = js(
        &b,
        "return [...document.querySelectorAll('#logview span[style]')].some(s => s.innerText === 'red text' && getComputedStyle(s).color !== getComputedStyle(document.getElementById('logview')).color)",
    )
    .await?;
    assert_eq!(red, json!(true), "the colour was not rendered");
    let sections = js(&b, "return [...document.querySelectorAll('#logview details.step > summary')].map(s => s.innerText)").await?;
    assert_eq!(
        sections,
        json!(["step 1/2: hostile output", "step 2/2: build"])
    );

    // The artifact, downloaded by the browser, has the digest the page shows.
    until(
        &b,
        "return !!document.querySelector('#artifacts a[download]')",
        Duration::from_secs(10),
    )
    .await?;
    let got = b
        .execute_async(
            "const done = arguments[0];
             const a = document.querySelector('#artifacts a[download]');
             fetch(a.href).then(r => r.arrayBuffer()).then(buf => crypto.subtle.digest('SHA-256', buf))
               .then(d => done([...new Uint8Array(d)].map(x => x.toString(16).padStart(2, '0')).join('')));",
            vec![],
        )
        .await?;
    let want = hex::encode(Sha256::digest(b"the artifact\n"));
    assert_eq!(got, json!(want));
    assert_eq!(text_at(&b, "#artifacts code.digest").await?, want);
    // The runner signed provenance for it; the server checked it again for the page.
    let prov = text_at(&b, "#provenance").await?;
    assert!(
        prov.contains("✓ verified") && prov.contains("1 artifacts match"),
        "{prov}"
    );

    // Every control has a name in the accessibility tree and the keyboard reaches it.
    for page in [
        "/ui/jobs".to_string(),
        format!("/ui/jobs/{job}"),
        "/ui/runners".into(),
    ] {
        b.goto(&format!("{}{page}", rig.url)).await?;
        check_accessible(&b, &page).await?;
    }
    // The runner told the server what its host enforces.
    let facts = text_at(&b, "#runners td.facts").await?;
    assert!(
        facts.contains("Landlock ABI") && facts.contains("policies: default"),
        "{facts}"
    );

    // A failed job, and the list.
    let failed = rig.submit(
        "  - name: compile\n    run: |\n      echo 'compiling main.c'\n      echo 'main.c:3: error: expected ; before }' >&2\n      exit 3\n",
        "",
    )?;
    rig.wait_state(failed, JobState::is_terminal)?;
    rig.open_job(&b, failed).await?;
    let reason = text_at(&b, "#summary dd.reason").await?;
    assert!(reason.contains("compile"), "{reason}");
    screenshot(&b, "job-failed.png").await?;
    b.goto(&format!("{}/ui/jobs", rig.url)).await?;
    screenshot(&b, "jobs.png").await?;
    // The list updates while it is watched.
    let queued = rig.submit("  - name: later\n    run: true\n", "")?;
    until(
        &b,
        &format!("return document.querySelector('#jobs tbody').innerText.includes('#{queued}')"),
        Duration::from_secs(15),
    )
    .await?;
    b.close().await?;
    Ok(())
}

/// `GET /session/{id}/element/{eid}/computedlabel`: the element's name in
/// the browser's accessibility tree (WebDriver "Get Computed Label").
#[derive(Debug)]
struct ComputedLabel(String);

impl WebDriverCompatibleCommand for ComputedLabel {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/element/{}/computedlabel",
            session.unwrap_or_default(),
            self.0
        ))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::GET, None)
    }
}

async fn check_accessible(b: &Browser, page: &str) -> Result<()> {
    const CONTROLS: &str = "a[href], button, input:not([type=hidden]), select, summary, [tabindex]";
    let controls = b.find_all(Locator::Css(CONTROLS)).await?;
    ensure!(!controls.is_empty(), "{page}: no controls");
    for c in &controls {
        let label = b
            .issue_cmd(ComputedLabel(c.element_id().to_string()))
            .await?;
        let html = c.html(false).await?;
        ensure!(
            label.as_str().is_some_and(|l| !l.trim().is_empty()),
            "{page}: a control has no accessible name: {html}"
        );
    }
    // Tab through the page: every control gets the focus, in order.
    js(b, "document.activeElement.blur(); window.__seen = new Set(); document.addEventListener('focusin', e => window.__seen.add(e.target)); return true").await?;
    let body = b.find(Locator::Css("body")).await?;
    let _ = body;
    for _ in 0..controls.len() + 2 {
        b.active_element().await?.send_keys("\u{E004}").await?;
    }
    let missed = js(
        b,
        &format!(
            "return [...document.querySelectorAll('{CONTROLS}')].filter(e => !window.__seen.has(e)).map(e => e.outerHTML.slice(0, 120))"
        ),
    )
    .await?;
    ensure!(
        missed == json!([]),
        "{page}: the keyboard never reaches {missed}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_from_the_page_and_a_viewer_cannot() -> Result<()> {
    let rig = Rig::start()?;
    let job = rig.submit(
        "  - name: long\n    run: |\n      while true; do echo still here; sleep 0.5; done\n",
        "",
    )?;
    rig.wait_state(job, |s| s == JobState::Running)?;

    // A viewer sees the job and no Cancel; a forged POST with its own
    // session's CSRF token is refused.
    let viewer = String::from_utf8(rig.admin_cli_ok(&["viewer-token"])?)?
        .trim()
        .to_string();
    let b = rig.browser().await?;
    rig.sign_in(&b, &viewer).await?;
    rig.open_job(&b, job).await?;
    until(
        &b,
        "return document.getElementById('logview').innerText.includes('still here')",
        Duration::from_secs(30),
    )
    .await?;
    assert!(
        b.find(Locator::Id("cancel")).await.is_err(),
        "a viewer is offered Cancel"
    );
    // The log follows the end until the reader scrolls up, and stays put then.
    until(&b, "return window.scrollY > 0 && window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 48", Duration::from_secs(30)).await?;
    js(&b, "window.scrollTo(0, 0); return true").await?;
    let lines = "return document.querySelectorAll('#logview .l').length";
    let before = js(&b, lines).await?.as_u64().unwrap_or_default();
    until(
        &b,
        &format!("return document.querySelectorAll('#logview .l').length > {before}"),
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(
        js(&b, "return window.scrollY").await?,
        json!(0),
        "the page scrolled the reader away"
    );
    let status = b
        .execute_async(
            &format!(
                "const done = arguments[0];
                 const csrf = document.querySelector('input[name=csrf]').value;
                 fetch('/ui/jobs/{job}/cancel', {{method: 'POST', body: new URLSearchParams({{csrf}}), redirect: 'manual'}})
                   .then(r => done(r.status));"
            ),
            vec![],
        )
        .await?;
    assert_eq!(status, json!(403));
    assert_eq!(rig.admin().job(job)?.state, JobState::Running);
    b.find(Locator::Css("form.signout button"))
        .await?
        .click()
        .await?;

    // The admin cancels from the page; the runner stops the job.
    rig.sign_in(&b, ADMIN).await?;
    rig.open_job(&b, job).await?;
    b.find(Locator::Id("cancel")).await?.click().await?;
    let end = rig.wait_state(job, JobState::is_terminal)?;
    assert_eq!(end, JobState::Cancelled);
    rig.open_job(&b, job).await?;
    let badge = text_at(&b, "main h1 .badge").await?;
    assert!(badge.contains("cancelled"), "{badge}");
    b.close().await?;

    // The admin revokes every viewer token from the command line.
    let got: Value =
        serde_json::from_slice(&rig.admin_cli_ok(&["viewer-token", "--revoke-all", "--json"])?)?;
    assert_eq!(got["revoked"], json!(1), "{got}");
    Ok(())
}

/// Everything but the live updates works without JavaScript: sign-in, the
/// lists, a job's log (the tail, rendered by the server), Cancel.
#[tokio::test(flavor = "multi_thread")]
async fn the_pages_work_with_javascript_off() -> Result<()> {
    let rig = Rig::start()?;
    let job = rig.submit(
        "  - name: long\n    run: |\n      echo 'printed before the page loads'\n      sleep 60\n",
        "",
    )?;
    let start = Instant::now();
    while !rig.log(job)?.contains("printed before") {
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the job printed nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = rig.browser_with(false).await?;
    rig.sign_in(&b, ADMIN).await?;
    let text = |b: &Browser| {
        let b = b.clone();
        async move { b.find(Locator::Css("body")).await?.text().await }
    };
    let body = text(&b).await?;
    ensure!(body.contains(&format!("#{job}")), "the jobs list: {body}");
    ensure!(
        body.contains("Live updates need JavaScript"),
        "scripts ran: {body}"
    );
    rig.open_job(&b, job).await?;
    let body = text(&b).await?;
    ensure!(
        body.contains("printed before the page loads"),
        "the log: {body}"
    );
    b.find(Locator::Id("cancel")).await?.click().await?;
    assert_eq!(
        rig.wait_state(job, JobState::is_terminal)?,
        JobState::Cancelled
    );
    b.close().await?;
    Ok(())
}
