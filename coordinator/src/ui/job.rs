//! One job's page: summary, steps, the log (a window of it, live at the
//! tail), artifacts, provenance, the runs of a `verify: N` group; and the
//! log's raw download and search (its live follow: [`super::live`]).
//!
//! A log can be 64 MiB: the page shows [`WINDOW`] bytes of it (the tail by
//! default, or from `?at=OFFSET` when paging back or following a line
//! link), and search runs here, over the stored bytes, not in the browser.

use axum::body::Body;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use maud::{Markup, PreEscaped, html};
use pinfold_api::wire::JobInfo;
use serde::Deserialize;

use super::log::{Line, Start, count_lines, render, visible};
use super::pages::{badge, duration, job_duration, short_image, urlencode, when};
use super::session::Signed;
use super::{CsrfForm, Page, csrf_field, frame, redirect};
use crate::AppState;
use crate::routes;

/// Log bytes one page shows at most.
pub const WINDOW: u64 = 256 << 10;
/// Lines one page shows at most.
const PAGE_LINES: usize = 5000;
/// Bytes read from the store at a time when counting or searching.
const CHUNK: usize = 4 << 20;
/// Matches one search shows.
const MAX_HITS: usize = 500;
/// HTML one search returns at most.
const MAX_HITS_HTML: usize = 2 << 20;

/// Scans of a whole log (line numbers, search) one at a time: each holds a
/// store reader the runners' requests need too.
static SCANS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The line number (1-based) of the line that `offset` is in.
async fn line_at(state: &AppState, id: u64, offset: u64) -> Page<u64> {
    // One read needs no turn: only a long scan holds a reader for long.
    let _turn = match offset > CHUNK as u64 {
        true => Some(SCANS.acquire().await.expect("never closed")),
        false => None,
    };
    let mut n = 1;
    let mut at = 0;
    while at < offset {
        let want = ((offset - at) as usize).min(CHUNK);
        let r = state.store.read_log(id, at, want).await?;
        if r.data.is_empty() {
            break;
        }
        n += count_lines(&r.data);
        at += r.data.len() as u64;
    }
    Ok(n)
}

/// Where a window that should start near `at` starts: the start of the
/// first line at or after it (0 stays 0), or `at` itself inside a line
/// longer than a window.
async fn line_start(state: &AppState, id: u64, at: u64) -> Page<u64> {
    if at == 0 {
        return Ok(0);
    }
    let r = state.store.read_log(id, at - 1, WINDOW as usize).await?;
    Ok(match memchr::memchr(b'\n', &r.data) {
        Some(i) => at + i as u64,
        None => at,
    })
}

/// Where the window that ends at `end` starts: the last [`PAGE_LINES`]
/// lines within the [`WINDOW`] bytes before it (the tail, and `Earlier`).
async fn window_before(state: &AppState, id: u64, end: u64) -> Page<u64> {
    let from = end.saturating_sub(WINDOW);
    let r = state
        .store
        .read_log(id, from, (end - from) as usize)
        .await?;
    let body = r.data.strip_suffix(b"\n").unwrap_or(&r.data);
    match memchr::memrchr_iter(b'\n', body).nth(PAGE_LINES - 1) {
        Some(i) => Ok(from + i as u64 + 1),
        None => match line_start(state, id, from).await? {
            // No line starts in the window: it is inside one long line.
            s if s >= end => Ok(from),
            s => Ok(s),
        },
    }
}

/// Whether `offset` is the start of a line (not inside one).
pub(super) async fn begins_line(state: &AppState, id: u64, offset: u64) -> Page<bool> {
    Ok(match offset {
        0 => true,
        o => state.store.read_log(id, o - 1, 1).await?.data == b"\n",
    })
}

/// Where `offset` falls: its line, and whether it starts that line.
async fn starts_line(state: &AppState, id: u64, offset: u64) -> Page<Start> {
    Ok(Start {
        offset,
        line: line_at(state, id, offset).await?,
        line_start: begins_line(state, id, offset).await?,
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    /// Show the log from about here instead of the tail.
    at: Option<u64>,
    /// Show the window that ends here (`Earlier`).
    to: Option<u64>,
}

/// `GET /ui/jobs/{id}`.
pub(super) async fn page(
    s: Signed,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Query(q): Query<PageQuery>,
) -> Page {
    let job = routes::jobs::info(&state, id).await?;
    let len = state.store.read_log(id, u64::MAX, 0).await?.len;
    let (start, end) = match (q.at, q.to) {
        (Some(a), _) => (line_start(&state, id, a.min(len)).await?, len),
        (None, to) => {
            let end = to.unwrap_or(len).min(len);
            (window_before(&state, id, end).await?, end)
        }
    };
    let from = starts_line(&state, id, start).await?;
    let want = (end - start).min(WINDOW) as usize;
    let read = state.store.read_log(id, start, want).await?;
    let complete = read.complete && start + read.data.len() as u64 >= read.len;
    let out = render(&read.data, from, complete, PAGE_LINES);
    let lines = out.lines;
    let next = start + out.used as u64;
    let tail = end >= len
        && (q.at.is_none() || (start + read.data.len() as u64 >= len && lines.len() < PAGE_LINES));
    let next_at = format!("{next}:{}:{}", out.next_line, u8::from(out.at_line_start));
    let artifacts = state.store.artifacts(id).await?;
    let prov = routes::provenance::check_stored(&state, id).await?;
    let title = format!("Job #{id}");
    let body = html! {
        h1 { (title) " " (badge(job.state)) }
        section id="summary" aria-label="Summary" { (summary(&job)) }
        @if !job.state.is_terminal() && s.session.role.may_act() && !job.cancel_requested {
            form method="post" action={"/ui/jobs/" (id) "/cancel"} {
                (csrf_field(&s))
                button.danger type="submit" id="cancel" { "Cancel job" }
            }
        }
        section id="steps" aria-labelledby="steps-h" {
            h2 id="steps-h" { "Steps" }
            (steps(&job))
        }
        @if let Some(v) = &job.verify { section id="verify" aria-labelledby="verify-h" { h2 id="verify-h" { "Reproducibility" } (verify(v)) } }
        section id="log" aria-labelledby="log-h" {
            h2 id="log-h" { "Log" }
            nav.logbar aria-label="Log" {
                @if start > 0 {
                    a href={"/ui/jobs/" (id) "?to=" (start) "#log"} { "Earlier" }
                }
                @if !tail {
                    a href={"/ui/jobs/" (id) "?at=" (next) "#log"} { "Later" }
                    a href={"/ui/jobs/" (id) "#log"} { "Latest" }
                }
                a href={"/ui/jobs/" (id) "/log.txt"} download={"job-" (id) ".log"} { "Raw log" }
                form method="get" action={"/ui/jobs/" (id) "/search"} role="search" aria-label="Search the log" {
                    label for="q" class="visually-hidden" { "Search the log" }
                    input id="q" name="q" type="search" placeholder="Search the whole log" required;
                    button type="submit" { "Search" }
                }
                span.size { (bytes(len)) }
            }
            @let live = tail && !job.state.is_terminal();
            pre id="logview" tabindex="0" aria-label="Job log"
                data-live=[live.then(|| format!("/ui/jobs/{id}/log/live"))]
                data-next=(next_at) {
                (log_lines(&lines))
            }
            @if live { p.hint id="livestate" aria-live="polite" { "Following the log live." } }
        }
        section id="artifacts" aria-labelledby="artifacts-h" {
            h2 id="artifacts-h" { "Artifacts" }
            @if artifacts.is_empty() { p { "None." } } @else {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Size" } th scope="col" { "sha256" } } }
                    tbody { @for a in &artifacts { tr {
                        td { a href={"/ui/jobs/" (id) "/artifacts/" (path_encode(&a.name))} download { (visible(&a.name)) } }
                        td { (bytes(a.size)) }
                        td { code.digest { (a.sha256) } }
                    } } }
                }
            }
        }
        section id="provenance" aria-labelledby="prov-h" {
            h2 id="prov-h" { "Provenance" }
            @match &prov {
                None => { p { "None (no artifacts, not finished, or a runner without a signing key)." } }
                Some(c) => {
                    p {
                        @match &c.verdict {
                            Ok(n) => { span.verified { span aria-hidden="true" { "✓" } " verified" } ": signed by runner #" (c.runner_id) "'s registered key; " (n) " artifacts match the stored ones." }
                            Err(why) => { span.unverified { span aria-hidden="true" { "✗" } " not verified" } ": " (why) }
                        }
                    }
                    @if let Some(k) = &c.keyid { p { "Signer key id: " code.digest { (k) } } }
                }
            }
        }
    };
    Ok(frame(&title, Some(&s), body))
}

fn summary(j: &JobInfo) -> Markup {
    html! {
        dl.summary {
            dt { "Image" } dd { (short_image(&j.image)) }
            dt { "Labels" } dd { @if j.labels.is_empty() { "none" } @else { (j.labels.join(", ")) } }
            dt { "Submitted" } dd { (when(Some(j.created_at))) }
            dt { "Started" } dd { (when(j.started_at)) }
            dt { "Duration" } dd { (job_duration(j)) }
            dt { "Attempts" } dd { (j.attempts) }
            dt { "Runner" } dd { @if let Some(r) = j.runner_id { "#" (r) } @else { "—" } }
            @if let Some(g) = j.verify_of { dt { "Verify group" } dd { a href={"/ui/jobs/" (g)} { "#" (g) } } }
            @if let Some(r) = &j.reason { dt { "Reason" } dd.reason { (r) } }
            @if j.cancel_requested && !j.state.is_terminal() { dt { "Cancel" } dd { "requested; the runner stops the job at its next heartbeat" } }
        }
    }
}

fn steps(j: &JobInfo) -> Markup {
    html! {
        @if j.steps.is_empty() { p { @if j.state.is_terminal() { "No step ran." } @else { "Steps are reported when the job ends." } } }
        @else {
            table {
                thead { tr { th scope="col" { "Step" } th scope="col" { "Exit code" } th scope="col" { "Duration" } } }
                tbody { @for st in &j.steps { tr {
                    td { (st.name) }
                    td { @match st.exit_code { Some(0) => { "0" } Some(c) => { strong { (c) } } None => { "—" } } }
                    td { @match (st.started_at, st.finished_at) { (Some(a), Some(b)) => { (duration(b.saturating_sub(a))) } _ => { "—" } } }
                } } }
            }
        }
    }
}

fn verify(v: &pinfold_api::wire::VerifyStatus) -> Markup {
    html! {
        p { (v.runs) " runs on distinct runners."
            @if let Some(w) = &v.waiting { " Waiting: " (w) } }
        table {
            thead { tr { th scope="col" { "Run" } th scope="col" { "Job" } th scope="col" { "State" } th scope="col" { "Runner" } } }
            tbody { @for r in &v.run_jobs { tr {
                td { (r.run) } td { a href={"/ui/jobs/" (r.job_id)} { "#" (r.job_id) } } td { (badge(r.state)) }
                td { @if let Some(id) = r.runner_id { "#" (id) } @else { "—" } }
            } } }
        }
        @if let Some(verdict) = &v.verdict {
            p { @if verdict.reproducible { span.verified { span aria-hidden="true" { "✓" } " reproducible" } }
                @else { span.unverified { span aria-hidden="true" { "✗" } " not reproducible" } ": " (verdict.differing.join(", ")) " differ" } }
            table {
                thead { tr { th scope="col" { "Artifact" } th scope="col" { "Same everywhere" }
                    @for r in v.run_jobs.iter().filter_map(|r| r.runner_id) { th scope="col" { "Runner #" (r) } } } }
                tbody { @for a in &verdict.artifacts { tr {
                    td { (visible(&a.name)) } td { @if a.identical { "yes" } @else { strong { "no" } } }
                    @for r in v.run_jobs.iter().filter_map(|r| r.runner_id) {
                        td { @match a.by_runner.get(&r) { Some(Some(d)) => { code title=(d) { (&d[..12.min(d.len())]) } } _ => { "missing" } } }
                    }
                } } }
            }
        }
    }
}

/// The lines of a log window: numbered links; a step's lines in a
/// section that folds (`ui.js` builds the same for live lines).
fn log_lines(lines: &[Line]) -> Markup {
    let mut open = false;
    let mut out = String::new();
    for l in lines {
        if let Some(title) = &l.s {
            if open {
                out.push_str("</div></details>");
            }
            out.push_str("<details class=\"step\" open><summary>");
            out.push_str(&html! { (title) }.into_string());
            out.push_str("</summary><div class=\"sec\">");
            open = true;
        }
        out.push_str(&one_line(l).into_string());
    }
    if open {
        out.push_str("</div></details>");
    }
    PreEscaped(out)
}

fn one_line(l: &Line) -> Markup {
    html! {
        span.l id=[(!l.c).then(|| format!("L{}", l.n))] {
            a.n href={"?at=" (l.o) "#L" (l.n)} aria-label={"line " (l.n)} { (l.n) }
            span.t { (PreEscaped(&l.h)) }
        }
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

fn path_encode(name: &str) -> String {
    name.split('/').map(urlencode).collect::<Vec<_>>().join("/")
}

/// `GET /ui/jobs/{id}/log.txt`: the whole stored log as it is.
pub(super) async fn raw(_: Signed, State(state): State<AppState>, Path(id): Path<u64>) -> Page {
    state.store.job(id).await?;
    let stream = routes::logs::stream_from(state, id, 0, false, None);
    Ok((
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"job-{id}.log\""))
                    .expect("ascii"),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /ui/jobs/{id}/artifacts/{name}`: an artifact, as a download.
pub(super) async fn artifact(
    _: Signed,
    State(state): State<AppState>,
    Path((id, name)): Path<(u64, String)>,
) -> Page {
    let mut res = routes::artifacts::artifact(&state, id, &name).await?;
    let base: String = name
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    res.headers_mut().insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{base}\"")).expect("ascii"),
    );
    Ok(res)
}

#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    q: String,
}

/// `GET /ui/jobs/{id}/search?q=`: the lines that contain the text, with
/// links into the log.
pub(super) async fn search(
    s: Signed,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Query(q): Query<SearchQuery>,
) -> Page {
    state.store.job(id).await?;
    let needle = q.q.as_bytes();
    let finder = memchr::memmem::Finder::new(needle);
    let mut hits: Vec<Line> = Vec::new();
    let (mut at, mut line, mut line_start, mut more, mut html) = (0u64, 1u64, true, false, 0usize);
    let _turn = SCANS.acquire().await.expect("never closed");
    // Only matching lines are rendered; the rest are only scanned.
    'scan: loop {
        let r = state.store.read_log(id, at, CHUNK).await?;
        if r.data.is_empty() || needle.is_empty() {
            break;
        }
        let done = at + r.data.len() as u64 >= r.len;
        let usable = match memchr::memrchr(b'\n', &r.data) {
            Some(i) if !done => i + 1,
            // The last bytes, or one line longer than a chunk: as a line.
            _ => r.data.len(),
        };
        let mut s = 0;
        while s < usable {
            let e = memchr::memchr(b'\n', &r.data[s..usable]).map_or(usable, |i| s + i);
            if finder.find(&r.data[s..e]).is_some() {
                if hits.len() == MAX_HITS || html > MAX_HITS_HTML {
                    more = true;
                    break 'scan;
                }
                let from = Start {
                    offset: at + s as u64,
                    line,
                    line_start,
                };
                let found = render(&r.data[s..e], from, true, 1).lines;
                html += found.iter().map(|l| l.h.len()).sum::<usize>();
                hits.extend(found);
            }
            // A piece of a line longer than a chunk keeps the line's number.
            line_start = e < r.data.len() && r.data[e] == b'\n';
            if line_start {
                line += 1;
            }
            s = e + 1;
        }
        at += usable as u64;
        if done {
            break;
        }
    }
    let body = html! {
        h1 { "Search in job #" (id) }
        p { a href={"/ui/jobs/" (id)} { "Back to the job" } }
        form method="get" action={"/ui/jobs/" (id) "/search"} role="search" aria-label="Search the log" {
            label for="q" { "Text" }
            input id="q" name="q" type="search" value=(q.q) required;
            button type="submit" { "Search" }
        }
        p aria-live="polite" { (hits.len()) @if more { "+" } " matching lines." }
        pre id="logview" tabindex="0" aria-label="Matching lines" {
            @for l in &hits {
                span.l {
                    a.n href={"/ui/jobs/" (id) "?at=" (l.o) "#L" (l.n)} aria-label={"line " (l.n)} { (l.n) }
                    span.t { (PreEscaped(&l.h)) }
                }
            }
        }
    };
    Ok(frame(&format!("Search job #{id}"), Some(&s), body))
}

/// `POST /ui/jobs/{id}/cancel` (admin session, CSRF).
pub(super) async fn cancel(
    s: Signed,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Form(f): Form<CsrfForm>,
) -> Page<Response> {
    s.may_act(&f)?;
    // A job that ended meanwhile: its page says how.
    let after = match state.store.cancel(id, pinfold_api::now_ms()).await {
        Err(crate::store::StoreError::Conflict(_)) => {
            return Ok(redirect(&format!("/ui/jobs/{id}")));
        }
        other => other?,
    };
    tracing::info!(
        job_id = id,
        state = after.as_str(),
        "cancel requested from the dashboard"
    );
    state.events.log_changed();
    Ok(redirect(&format!("/ui/jobs/{id}")))
}
