//! `pinfold verify`: run a job several times from the same pinned inputs,
//! varying what a reproducible build must not depend on, and compare the
//! artifacts. The variations live in `pinfold_agent::verify`; this file
//! schedules the runs, compares, bisects and reports.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinfold_agent::log::{LogWriter, lock};
use pinfold_agent::runner::{Job, RunError, stop};
use pinfold_agent::verify::{self, Variation};
use pinfold_api::JobSpec;
use pinfold_api::wire::JobState;

/// Check that a job's build is reproducible: run it N times, varying build
/// path, time, hostname, umask, time zone, locale, user names, environment
/// order, CPUs, directory order and HOME, and compare the artifacts.
///
/// Exit status: 0 every artifact identical in every run; 1 an artifact
/// differs or is missing in a run; 125 a run failed (a step failed, or
/// pinfold did); 2 bad arguments; 130 interrupted.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Variations (--vary): all, build_path, time, hostname, umask, timezone, locale, user, env_order, cpus, dir_order, home; `-name` removes one (write --vary=-time or --vary all,-time).\n\
Environment: PINFOLD_HOME; PINFOLD_SECRET_<NAME> gives the value of job secret NAME; PINFOLD_VERIFY_TMPFS: the tmpfs for dir_order (default /dev/shm)."
)]
pub struct Args {
    /// The job file (YAML).
    job: PathBuf,
    /// Directory copied in as /workspace (packed once; every run gets the same tar).
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
    /// How many runs (run 1 is the control, the others vary).
    #[arg(long, default_value_t = 2, value_name = "N")]
    runs: usize,
    /// Which variations: all (the default: every one the machine supports),
    /// a list (hostname,umask), or removals (--vary=-time).
    #[arg(
        long,
        default_value = "all",
        value_name = "LIST",
        env = "PINFOLD_VERIFY_VARY"
    )]
    vary: String,
    /// For each differing artifact, re-run with one variation at a time and
    /// name the ones that flip it.
    #[arg(long)]
    bisect: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Directory for each run's artifacts, log and provenance, and the
    /// report [default: $PINFOLD_HOME/verify/verify-<time>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Runs at once [default: the CPUs available, at most N].
    #[arg(long, value_name = "N", env = "PINFOLD_VERIFY_JOBS")]
    jobs: Option<usize>,
    /// Print the JSON report on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
    /// Between SIGTERM and SIGKILL when a step is interrupted.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
    #[command(flatten)]
    ceiling: super::CeilingArgs,
}

/// One run to make.
struct Plan {
    /// run-1, run-2, …, bisect/NAME, bisect/NAME-control.
    label: String,
    /// The run number the varied values are made for.
    k: usize,
    vary: BTreeSet<Variation>,
}

/// How a run went.
#[derive(Debug, Clone)]
struct RunResult {
    label: String,
    varied: Vec<Variation>,
    state: &'static str,
    reason: Option<String>,
    /// Artifact name → sha256.
    artifacts: BTreeMap<String, String>,
    started_ms: u64,
    finished_ms: u64,
    log: PathBuf,
    provenance: Option<PathBuf>,
}

struct Shared<'a> {
    spec_text: &'a str,
    spec: &'a JobSpec,
    ceiling: Arc<pinfold_sandbox::ceiling::Ceiling>,
    secrets: BTreeMap<String, String>,
    exe: PathBuf,
    stop: Arc<AtomicU8>,
    grace: Duration,
    work: PathBuf,
    out: PathBuf,
    home: PathBuf,
    source_tar: Option<PathBuf>,
    source_digest: Option<String>,
    ctx: verify::Context<'a>,
    image: String,
}

fn fail(msg: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("pinfold verify: {msg}");
    code
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let vary = match verify::parse_vary(&a.vary) {
        Ok(v) => v,
        Err(e) => return fail(e, 2),
    };
    if a.runs < 2 {
        return fail(
            format!("--runs {}: give at least 2 (run 1 is the control)", a.runs),
            2,
        );
    }
    if a.jobs == Some(0) {
        return fail("--jobs 0: give at least 1", 2);
    }
    let text = match std::fs::read_to_string(&a.job) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", a.job.display()), 125),
    };
    let spec = match JobSpec::from_yaml(&text) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {e}", a.job.display()), 125),
    };
    let ceiling = match a.ceiling.load() {
        Ok(c) => c,
        Err(e) => return fail(e, 125),
    };
    if let Err(e) = ceiling.choose(
        spec.policy.as_ref().map(|p| p.as_str()),
        spec.network,
        &spec.limits,
    ) {
        return fail(e, 125);
    }
    if let Some(src) = &a.source
        && !src.is_dir()
    {
        return fail(format!("--source {}: not a directory", src.display()), 125);
    }
    let Some(home) = pinfold_api::pinfold_home() else {
        return fail("cannot find a state directory: set PINFOLD_HOME", 125);
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("cannot find my own binary: {e}"), 125),
    };
    let secrets = crate::secrets::named(spec.secrets.iter().map(|s| s.as_str()));
    let started_ms = pinfold_api::now_ms();
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| home.join("verify").join(format!("verify-{started_ms}")));
    let work = match std::fs::create_dir_all(home.join("run"))
        .and_then(|()| {
            // 0700 like the agent's: the runs' job file system sockets are in it.
            tempfile::Builder::new()
                .prefix("verify-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir_in(home.join("run"))
        })
        .and_then(|w| std::fs::create_dir_all(&out).map(|()| w))
    {
        Ok(w) => w,
        Err(e) => return fail(format!("preparing {}: {e}", out.display()), 125),
    };
    if let Err(e) = pinfold_agent::signals::install() {
        return fail(format!("installing signal handlers: {e}"), 125);
    }
    let flag = pinfold_agent::signals::stop_flag();
    // The human summary: on stdout, or on stderr when stdout has the JSON.
    let mut term: Box<dyn Write> = if a.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };

    // The image, resolved (pulled when missing) once; its layers are cached
    // in the store and stacked by every run's steps.
    let image = spec.image.as_str().to_owned();
    let probe_job = Job {
        spec: spec.clone(),
        ceiling: ceiling.clone(),
        dir: work.path().to_owned(),
        secrets: secrets.clone(),
        exe: exe.clone(),
        stop: flag.clone(),
        grace: a.grace,
        host: pinfold_agent::runner::HostEnv::from_vars(|k| std::env::var_os(k)),
    };
    let image_log = LogWriter::new(Box::new(std::io::stderr()), []).shared();
    if let Err(e) = probe_job.resolve_image(&image_log) {
        return fail(e, 125);
    }
    let layers = match image_layers(&image) {
        Ok(l) => l,
        Err(e) => return fail(format!("image {image}: {e}"), 125),
    };
    // The source, packed once: every run unpacks the same tar.
    let (source_tar, source_digest) = match &a.source {
        None => (None, None),
        Some(src) => match pack_source(src, work.path()) {
            Ok((p, d)) => (Some(p), Some(d)),
            Err(e) => return fail(format!("--source {}: {e}", src.display()), 125),
        },
    };

    // Which variations apply here.
    let tmpfs = std::env::var_os("PINFOLD_VERIFY_TMPFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let mut applied = BTreeSet::new();
    let mut not_applied = Vec::new();
    for v in Variation::ALL {
        if !vary.contains(&v) {
            not_applied.push((v, "not asked for (--vary)".to_string()));
            continue;
        }
        match verify::supported(v, &tmpfs) {
            Ok(()) => {
                applied.insert(v);
            }
            Err(why) => not_applied.push((v, why)),
        }
    }
    let sde = spec
        .env
        .iter()
        .find(|(k, _)| k.as_str() == "SOURCE_DATE_EPOCH")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(started_ms / 1000);
    let shared = Shared {
        spec_text: &text,
        spec: &spec,
        ceiling,
        secrets,
        exe,
        stop: flag.clone(),
        grace: a.grace,
        work: work.path().to_owned(),
        out: out.clone(),
        home: home.clone(),
        source_tar,
        source_digest: source_digest.clone(),
        ctx: verify::Context {
            layers: &layers,
            source_date_epoch: sde,
        },
        image: image.clone(),
    };
    let cpus = pinfold_agent::runner::allowed_cpus();
    let at_once = a.jobs.unwrap_or(cpus).min(a.runs).max(1);
    let _ = writeln!(
        term,
        "pinfold verify: {} runs of {} ({} at once); varying: {}",
        a.runs,
        a.job.display(),
        at_once,
        if applied.is_empty() {
            "nothing".to_string()
        } else {
            applied
                .iter()
                .map(|v| v.name())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for (v, why) in &not_applied {
        if vary.contains(v) {
            let _ = writeln!(term, "  not varied: {}: {why}", v.name());
        }
    }

    let plans: Vec<Plan> = (1..=a.runs)
        .map(|k| Plan {
            label: format!("run-{k}"),
            k,
            vary: if k == 1 {
                BTreeSet::new()
            } else {
                applied.clone()
            },
        })
        .collect();
    let t_runs = Instant::now();
    let results = execute(&shared, plans, at_once);
    let runs_took = t_runs.elapsed();
    let failed: Vec<&RunResult> = results.iter().filter(|r| r.state != "succeeded").collect();

    // Compare: every artifact any run produced, its digest in each run.
    let names: BTreeSet<String> = results
        .iter()
        .flat_map(|r| r.artifacts.keys().cloned())
        .collect();
    let mut artifacts = Vec::new();
    for n in &names {
        let digests: Vec<Option<String>> = results
            .iter()
            .map(|r| r.artifacts.get(n).cloned())
            .collect();
        let identical = digests.iter().all(|d| d.is_some() && *d == digests[0]);
        artifacts.push(serde_json::json!({
            "name": n,
            "identical": identical,
            "sha256": digests,
        }));
    }
    let differing: Vec<usize> = artifacts
        .iter()
        .enumerate()
        .filter(|(_, x)| x["identical"] == false)
        .map(|(i, _)| i)
        .collect();

    // Bisect: one variation at a time. Each single-variation run is made
    // together with a fresh control (a pair started at the same moment),
    // so an artifact that embeds the time is not blamed on the variation
    // that happened to run later; a flip of an artifact that the time flips
    // too is confirmed by a second pair.
    let mut bisect_runs = Vec::new();
    if a.bisect && failed.is_empty() && !differing.is_empty() {
        let _ = writeln!(
            term,
            "pinfold verify: {} artifact(s) differ; bisecting over {} variations",
            differing.len(),
            applied.len()
        );
        let diff_names: Vec<String> = differing
            .iter()
            .map(|&i| {
                artifacts[i]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let mut flips: BTreeMap<Variation, BTreeSet<String>> = BTreeMap::new();
        let mut broken: BTreeSet<Variation> = BTreeSet::new();
        let mut pair = |v: Variation, attempt: usize| -> Option<BTreeSet<String>> {
            let runs = execute(&shared, bisect_pair(v, attempt), 2);
            let flipped = (runs.iter().all(|r| r.state == "succeeded")).then(|| {
                diff_names
                    .iter()
                    .filter(|n| runs[0].artifacts.get(*n) != runs[1].artifacts.get(*n))
                    .cloned()
                    .collect()
            });
            bisect_runs.extend(runs);
            flipped
        };
        for &v in &applied {
            match pair(v, 1) {
                Some(f) => {
                    flips.insert(v, f);
                }
                None => {
                    broken.insert(v);
                }
            }
        }
        let by_time = flips.get(&Variation::Time).cloned().unwrap_or_default();
        for &v in &applied {
            let suspect = v != Variation::Time
                && flips
                    .get(&v)
                    .is_some_and(|f| f.iter().any(|n| by_time.contains(n)));
            if suspect {
                match pair(v, 2) {
                    Some(again) => {
                        if let Some(f) = flips.get_mut(&v) {
                            f.retain(|n| !by_time.contains(n) || again.contains(n));
                        }
                    }
                    None => {
                        broken.insert(v);
                    }
                }
            }
        }
        for &i in &differing {
            let name = artifacts[i]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let flipped: Vec<&str> = flips
                .iter()
                .filter(|(_, f)| f.contains(&name))
                .map(|(v, _)| v.name())
                .collect();
            artifacts[i]["flipped_by"] = serde_json::json!(flipped);
            if !broken.is_empty() {
                artifacts[i]["bisect_failed_runs"] =
                    serde_json::json!(broken.iter().map(|v| v.name()).collect::<Vec<_>>());
            }
        }
    }

    // diffoscope, when installed, for each differing artifact present in
    // the control and in the first run that differs from it.
    let diffoscope = which("diffoscope");
    for &i in &differing {
        let Some(tool) = &diffoscope else { break };
        let name = artifacts[i]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(c) = results[0].artifacts.get(&name) else {
            continue;
        };
        let Some(other) = results
            .iter()
            .find(|r| r.artifacts.get(&name).is_some_and(|d| d != c))
        else {
            continue;
        };
        let file = out
            .join("diffoscope")
            .join(format!("{}.txt", name.replace('/', "_")));
        let _ = std::fs::create_dir_all(out.join("diffoscope"));
        let ran = std::process::Command::new(tool)
            .arg("--text")
            .arg(&file)
            .arg(out.join(&results[0].label).join(&name))
            .arg(out.join(&other.label).join(&name))
            .stdout(std::process::Stdio::null())
            .status();
        match ran {
            Ok(s) if s.code().is_some_and(|c| c <= 1) => {
                artifacts[i]["diffoscope"] = serde_json::json!(file);
            }
            Ok(s) => tracing::warn!(%s, "diffoscope failed"),
            Err(e) => tracing::warn!(%e, "running diffoscope"),
        }
    }

    let (verdict, code) = if flag.load(Ordering::SeqCst) != stop::NONE {
        ("interrupted", 130)
    } else if !failed.is_empty() {
        ("run failed", 125)
    } else if !differing.is_empty() {
        ("not reproducible", 1)
    } else {
        ("reproducible", 0)
    };
    let report = serde_json::json!({
        "verdict": verdict,
        "exit_code": code,
        "job": a.job,
        "image": image,
        "source_sha256": source_digest,
        "source_date_epoch": sde,
        "runs_at_once": at_once,
        "runs_took_ms": runs_took.as_millis() as u64,
        "variations": {
            "applied": applied.iter().map(|v| serde_json::json!({"name": v.name(), "how": v.how()})).collect::<Vec<_>>(),
            "not_applied": not_applied.iter().map(|(v, why)| serde_json::json!({"name": v.name(), "why": why})).collect::<Vec<_>>(),
        },
        "artifacts": artifacts,
        "runs": results.iter().map(RunResult::to_json).collect::<Vec<_>>(),
        "bisect_runs": bisect_runs.iter().map(RunResult::to_json).collect::<Vec<_>>(),
        "diffoscope": diffoscope.as_ref().map_or(serde_json::json!("not installed"), |p| serde_json::json!(p)),
        "out": out,
    });
    let pretty = serde_json::to_string_pretty(&report).unwrap_or_default();
    let report_file = out.join("report.json");
    for f in std::iter::once(&report_file).chain(a.report.as_ref()) {
        if let Err(e) = std::fs::write(f, format!("{pretty}\n")) {
            return fail(format!("writing the report {}: {e}", f.display()), 125);
        }
    }

    // The human summary.
    for r in &failed {
        let _ = writeln!(
            term,
            "  {}: {}{} (log: {})",
            r.label,
            r.state,
            r.reason
                .as_deref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default(),
            r.log.display()
        );
    }
    for x in &report["artifacts"].as_array().cloned().unwrap_or_default() {
        let name = x["name"].as_str().unwrap_or_default();
        let ds: Vec<String> = x["sha256"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| d.as_str().map_or("missing".into(), |d| d[..12].to_string()))
            .collect();
        if x["identical"] == true {
            let _ = writeln!(term, "  identical  {name}  sha256 {}", ds[0]);
        } else {
            let _ = writeln!(
                term,
                "  DIFFERS    {name}  sha256 per run: {}",
                ds.join(" ")
            );
            if let Some(f) = x["flipped_by"].as_array() {
                let names: Vec<&str> = f.iter().filter_map(|v| v.as_str()).collect();
                let _ = writeln!(
                    term,
                    "             flipped by: {}",
                    if names.is_empty() {
                        "no single variation (nondeterministic, or a combination)".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            }
            if let Some(f) = x["diffoscope"].as_str() {
                let _ = writeln!(term, "             diffoscope: {f}");
            }
        }
    }
    if names.is_empty() && failed.is_empty() {
        let _ = writeln!(term, "  (the job produced no artifacts)");
    }
    let _ = writeln!(
        term,
        "pinfold verify: {verdict}; report {}",
        report_file.display()
    );
    if a.json {
        println!("{report}");
    }
    if let Err(e) = pinfold_sandbox::image::layer::remove_tree(work.path()) {
        tracing::warn!(%e, "removing the verify work directory");
    }
    code
}

/// A fresh control and a run varying only `v`, to be started together.
fn bisect_pair(v: Variation, attempt: usize) -> Vec<Plan> {
    let suffix = if attempt > 1 {
        format!("-{attempt}")
    } else {
        String::new()
    };
    vec![
        Plan {
            label: format!("bisect/{}{suffix}-control", v.name()),
            k: 1,
            vary: BTreeSet::new(),
        },
        Plan {
            label: format!("bisect/{}{suffix}", v.name()),
            k: 2,
            vary: BTreeSet::from([v]),
        },
    ]
}

/// Runs `plans` with up to `at_once` at the same time; results in plan order.
fn execute(s: &Shared<'_>, plans: Vec<Plan>, at_once: usize) -> Vec<RunResult> {
    let t0 = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<RunResult>>> = Mutex::new(vec![None; plans.len()]);
    std::thread::scope(|scope| {
        for _ in 0..at_once.min(plans.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(p) = plans.get(i) else { return };
                    let r = run_one(s, p, t0);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

fn run_one(s: &Shared<'_>, p: &Plan, t0: Instant) -> RunResult {
    let dir = s.work.join(&p.label);
    let out = s.out.join(&p.label);
    let log_path = out.join("log.txt");
    let varied: Vec<Variation> = p.vary.iter().copied().collect();
    let started_ms = pinfold_api::now_ms();
    let failed = |reason: String| RunResult {
        label: p.label.clone(),
        varied: varied.clone(),
        state: JobState::Error.as_str(),
        reason: Some(reason),
        artifacts: BTreeMap::new(),
        started_ms,
        finished_ms: pinfold_api::now_ms(),
        log: log_path.clone(),
        provenance: None,
    };
    if p.vary.contains(&Variation::Time) {
        // The real clock cannot be shifted: start later than the batch's
        // first run (the control) instead.
        let at = t0 + verify::TIME_GAP;
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    }
    let opts = match verify::options(p.k, &p.vary, &s.ctx) {
        Ok(o) => o,
        Err(e) => return failed(e.to_string()),
    };
    let log_file =
        match std::fs::create_dir_all(&out).and_then(|()| std::fs::File::create(&log_path)) {
            Ok(f) => f,
            Err(e) => return failed(format!("{}: {e}", log_path.display())),
        };
    let log = LogWriter::new(Box::new(log_file), s.secrets.values().cloned()).shared();
    let job = Job {
        spec: s.spec.clone(),
        ceiling: s.ceiling.clone(),
        dir: dir.clone(),
        secrets: s.secrets.clone(),
        exe: s.exe.clone(),
        stop: s.stop.clone(),
        grace: s.grace,
        host: pinfold_agent::runner::HostEnv::from_vars(|k| std::env::var_os(k)),
    };
    let reorder = p.vary.contains(&Variation::DirOrder);
    let mut fill = |ws: &pinfold_agent::runner::Workspace<'_>| -> Result<(), RunError> {
        let Some(tar) = &s.source_tar else {
            return Ok(());
        };
        let f = std::fs::File::open(tar).map_err(|e| RunError::Source(e.to_string()))?;
        ws.write(|ws| {
            pinfold_agent::source::unpack(std::io::BufReader::new(f), ws)
                .map_err(|e| RunError::Source(e.to_string()))?;
            if reorder {
                verify::reverse_dir_order(ws).map_err(|e| RunError::Source(e.to_string()))?;
            }
            Ok(())
        })
    };
    let mut deliver = |art: &mut pinfold_agent::artifacts::Artifact| -> Result<(), String> {
        pinfold_agent::artifacts::copy_to_dir(&out, art)
    };
    let report = job.run_with(&log, &mut fill, &mut deliver, &opts);
    let _ = lock(&log).finish();
    let finished_ms = pinfold_api::now_ms();
    let mut internal = serde_json::Map::new();
    internal.insert(
        "verify".into(),
        serde_json::json!({ "run": p.label, "varied": varied }),
    );
    let statement = pinfold_agent::provenance::statement(
        s.spec_text,
        &s.image,
        s.source_digest.as_deref(),
        &report,
        &pinfold_agent::provenance::Invocation {
            builder_id: &pinfold_agent::provenance::local_builder_id(),
            invocation_id: &format!(
                "{}/{}",
                s.work
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                p.label
            ),
            started_ms,
            finished_ms,
        },
        internal,
    );
    let (provenance, mut reason) =
        match pinfold_agent::provenance::write_local(&s.home, &out, &statement) {
            Ok((file, _)) => (Some(file), report.reason.clone()),
            Err(e) => (None, Some(format!("writing provenance: {e}"))),
        };
    let mut state = report.state.as_str();
    if provenance.is_none() {
        state = JobState::Error.as_str();
    } else if reason.is_none() && report.state != JobState::Succeeded {
        reason = Some(state.to_string());
    }
    if let Err(e) = pinfold_sandbox::image::layer::remove_tree(&dir) {
        tracing::warn!(%e, "removing a run's directory");
    }
    RunResult {
        label: p.label.clone(),
        varied,
        state,
        reason,
        artifacts: report
            .artifacts
            .into_iter()
            .map(|x| (x.name, x.sha256))
            .collect(),
        started_ms,
        finished_ms,
        log: log_path,
        provenance,
    }
}

impl RunResult {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "label": self.label,
            "varied": self.varied.iter().map(|v| v.name()).collect::<Vec<_>>(),
            "state": self.state,
            "reason": self.reason,
            "artifacts": self.artifacts,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "log": self.log,
            "provenance": self.provenance,
        })
    }
}

/// Packs the source once into `work/source.tar`; returns it and its sha256.
fn pack_source(src: &Path, work: &Path) -> anyhow::Result<(PathBuf, String)> {
    let mut tar = pinfold_agent::source::pack_dir(src)?;
    let path = work.join("source.tar");
    let mut f = std::fs::File::create(&path)?;
    std::io::copy(&mut tar, &mut f)?;
    drop(f);
    let digest = pinfold_agent::artifacts::hash_file(&mut std::fs::File::open(&path)?)?;
    Ok((path, digest))
}

fn image_layers(image: &str) -> anyhow::Result<Vec<PathBuf>> {
    let store = pinfold_sandbox::image::Store::open_default()?;
    let rec = store.find(image)?;
    Ok(store.layer_dirs(&rec)?)
}

/// `name` on PATH, if it is there.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
