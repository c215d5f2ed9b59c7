//! The jobs list and the runners page, and what the pages share: the state
//! badge, times and durations.

use axum::extract::{Form, Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use pinfold_api::now_ms;
use pinfold_api::wire::{JobInfo, JobState};
use serde::Deserialize;

use super::log::visible;
use super::session::Signed;
use super::{CsrfForm, Page, csrf_field, frame, redirect};
use crate::AppState;
use crate::error::ApiError;
use crate::store::JobFilter;

/// Jobs per page of the list.
const PAGE: u32 = 50;

/// The states, in the order the filter offers them.
const STATES: [JobState; 7] = [
    JobState::Queued,
    JobState::Running,
    JobState::Succeeded,
    JobState::Failed,
    JobState::TimedOut,
    JobState::Cancelled,
    JobState::Error,
];

/// A job's state as a badge: a symbol and a word as well as a colour.
pub fn badge(state: JobState) -> Markup {
    let (sym, word) = match state {
        JobState::Queued => ("○", "queued"),
        JobState::Running => ("◔", "running"),
        JobState::Succeeded => ("✓", "succeeded"),
        JobState::Failed => ("✗", "failed"),
        JobState::TimedOut => ("⏱", "timed out"),
        JobState::Cancelled => ("⊘", "cancelled"),
        JobState::Error => ("!", "error"),
    };
    html! {
        span class={"badge s-" (state.as_str())} {
            span aria-hidden="true" { (sym) } " " (word)
        }
    }
}

/// A time since the epoch (ms) as UTC, machine-readable too.
pub fn when(ms: Option<u64>) -> Markup {
    match ms {
        None => html! { "—" },
        Some(ms) => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            let s = humantime::format_rfc3339_seconds(t).to_string();
            html! { time datetime=(s) { (s.replace('T', " ").trim_end_matches('Z')) " UTC" } }
        }
    }
}

/// A duration in ms, short: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 01 min`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// How long a job ran (or has been running).
pub fn job_duration(j: &JobInfo) -> String {
    match (j.started_at, j.finished_at) {
        (Some(s), Some(f)) => duration(f.saturating_sub(s)),
        (Some(s), None) => format!("{} so far", duration(now_ms().saturating_sub(s))),
        _ => "—".into(),
    }
}

/// `image@sha256:0123456789ab…`: the digest shortened, the full name on hover.
pub fn short_image(image: &str) -> Markup {
    let short = match image.split_once("@sha256:") {
        Some((name, hex)) if hex.len() > 12 => format!("{name}@{}", &hex[..12]),
        _ => image.to_string(),
    };
    html! { code title=(image) { (short) } }
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    state: Option<String>,
    label: Option<String>,
    before: Option<u64>,
}

/// `GET /ui/jobs`: newest first, filtered, paged by id.
pub(super) async fn jobs(
    s: Signed,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Page {
    let filter_state = match q.state.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(JobState::parse(v).ok_or_else(|| {
            ApiError::BadRequest(format!("unknown state {v:?}: pick one from the list"))
        })?),
    };
    let label = q.label.filter(|l| !l.trim().is_empty());
    let jobs = state
        .store
        .list_jobs(&JobFilter {
            state: filter_state,
            label: label.clone(),
            before: q.before.map(|b| b.min(i64::MAX as u64)),
            limit: PAGE + 1,
        })
        .await?;
    let more = jobs.len() > PAGE as usize;
    let jobs: Vec<JobInfo> = jobs
        .into_iter()
        .take(PAGE as usize)
        .map(|j| j.info)
        .collect();
    let next = jobs.last().map(|j| j.id).filter(|_| more);
    let keep = |before: Option<u64>| {
        let mut qs = Vec::new();
        if let Some(st) = filter_state {
            qs.push(format!("state={}", st.as_str()));
        }
        if let Some(l) = &label {
            qs.push(format!("label={}", urlencode(l)));
        }
        if let Some(b) = before {
            qs.push(format!("before={b}"));
        }
        format!("/ui/jobs?{}", qs.join("&"))
    };
    let body = html! {
        h1 { "Jobs" }
        form.filters method="get" action="/ui/jobs" role="search" aria-label="Filter jobs" {
            label for="state" { "State" }
            select id="state" name="state" {
                option value="" selected[filter_state.is_none()] { "any" }
                @for st in STATES {
                    option value=(st.as_str()) selected[filter_state == Some(st)] { (st.as_str()) }
                }
            }
            label for="label" { "Label" }
            input id="label" name="label" type="text" value=[label.as_deref()] placeholder="any";
            button type="submit" { "Filter" }
        }
        table id="jobs" data-live="5000" {
            caption.visually-hidden { "Jobs, newest first" }
            thead { tr {
                th scope="col" { "Job" } th scope="col" { "State" } th scope="col" { "Image" }
                th scope="col" { "Labels" } th scope="col" { "Submitted" } th scope="col" { "Duration" }
                th scope="col" { "Attempts" } th scope="col" { "Runner" }
            } }
            tbody {
                @for j in &jobs {
                    tr {
                        td { a href={"/ui/jobs/" (j.id)} { "#" (j.id) } }
                        td { (badge(j.state)) @if j.cancel_requested && !j.state.is_terminal() { " (cancelling)" } }
                        td { (short_image(&j.image)) }
                        td { (j.labels.join(", ")) }
                        td { (when(Some(j.created_at))) }
                        td { (job_duration(j)) }
                        td { (j.attempts) }
                        td { @if let Some(r) = j.runner_id { "#" (r) } @else { "—" } }
                    }
                }
                @if jobs.is_empty() { tr { td colspan="8" { "No jobs match." } } }
            }
        }
        nav.pager aria-label="Pages" {
            @if q.before.is_some() { a href=(keep(None)) { "Newest" } }
            @if let Some(n) = next { a href=(keep(Some(n))) rel="next" { "Older" } }
        }
    };
    Ok(frame("Jobs", Some(&s), body))
}

/// Percent-encodes a query value (labels are `[a-z0-9._:-]`, but a link
/// must survive whatever was typed into the filter).
pub fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /ui/runners`.
pub(super) async fn runners(s: Signed, State(state): State<AppState>) -> Page {
    let runners = state.store.list_runners().await?;
    let running = state
        .store
        .list_jobs(&JobFilter {
            state: Some(JobState::Running),
            limit: 1000,
            ..JobFilter::default()
        })
        .await?;
    let may_act = s.session.role.may_act();
    let mut rows = Vec::new();
    for r in &runners {
        let trusted = state.store.trusted_labels(r.id).await?;
        let key = state.store.runner_key(r.id).await?;
        let keyid = key
            .and_then(|pem| pinfold_api::provenance::parse_public_key(&pem).ok())
            .map(|k| pinfold_api::provenance::key_id(&k));
        let facts = crate::routes::runners::facts(&state, r.id).await?;
        rows.push((r, trusted, keyid, facts));
    }
    let body = html! {
        h1 { "Runners" }
        table id="runners" {
            caption.visually-hidden { "Registered runners" }
            thead { tr {
                th scope="col" { "Runner" } th scope="col" { "Labels" } th scope="col" { "Trusted labels" }
                th scope="col" { "Signing key" } th scope="col" { "Registered" } th scope="col" { "Last heartbeat" }
                th scope="col" { "Running" } th scope="col" { "Sandbox (as the runner reports it)" } th scope="col" { "Status" }
            } }
            tbody {
                @for (r, trusted, keyid, facts) in &rows {
                    tr {
                        td { "#" (r.id) " " (visible(&r.name)) }
                        td { (r.labels.join(", ")) }
                        td { (trusted.join(", ")) }
                        td { @if let Some(k) = keyid { code title=(k) { (&k[..16.min(k.len())]) } } @else { "none" } }
                        td { (when(Some(r.created_at))) }
                        td { (when(r.last_seen)) }
                        td {
                            @for j in running.iter().filter(|j| j.info.runner_id == Some(r.id)) {
                                a href={"/ui/jobs/" (j.info.id)} { "#" (j.info.id) } " "
                            }
                        }
                        td.facts {
                            @if let Some(f) = facts {
                                "pinfold " (visible(&f.version)) br;
                                "kernel " (visible(&f.kernel)) br;
                                "limits: " (visible(&f.limits)) br;
                                "Landlock ABI " (f.landlock_abi) br;
                                "policies: " (visible(&f.policies.join(", ")))
                            } @else { "not reported (an older agent)" }
                        }
                        td {
                            @if r.revoked { "revoked" }
                            @else if may_act {
                                form method="post" action={"/ui/runners/" (r.id) "/revoke"} {
                                    (csrf_field(&s))
                                    button.danger type="submit" aria-label={"Revoke runner " (r.id) " " (visible(&r.name))} { "Revoke" }
                                }
                            } @else { "active" }
                        }
                    }
                }
                @if rows.is_empty() { tr { td colspan="9" { "No runner has registered." } } }
            }
        }
    };
    Ok(frame("Runners", Some(&s), body))
}

/// `POST /ui/runners/{id}/revoke` (admin session, CSRF).
pub(super) async fn revoke(
    s: Signed,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Form(f): Form<CsrfForm>,
) -> Page<Response> {
    s.may_act(&f)?;
    state.store.revoke_runner(id).await?;
    tracing::info!(runner_id = id, "runner revoked from the dashboard");
    Ok(redirect("/ui/runners"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_short() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_340), "12.3 s");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(duration(7_260_000), "2 h 01 min");
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
    }
}
