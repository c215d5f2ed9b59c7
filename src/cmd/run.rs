//! `pinfold run`: run a job file locally, no server.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use pinfold_agent::log::{LogWriter, lock};
use pinfold_agent::runner::{Job, RunError, Runtime};
use pinfold_api::JobSpec;

/// Run a job file locally: logs on the terminal, artifacts into --out.
///
/// Exit status: 0 success, 1 a step failed, 124 timeout, 125 pinfold failed
/// (bad job file, image, sandbox), 130 interrupted.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment: PINFOLD_HOME, PINFOLD_POLICY, PINFOLD_ALLOW_POLICIES (comma separated); PINFOLD_SECRET_<NAME> gives the value of job secret NAME (masked in the log)."
)]
pub struct Args {
    /// The job file (YAML).
    job: PathBuf,
    /// Directory copied in as /workspace (as a tar, unpacked safely).
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
    /// Directory the artifacts are copied into (created).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Log to stderr and print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// Between SIGTERM and SIGKILL when a step is interrupted.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Keep the per-job directory (workspace and writable layer) and print its path.
    #[arg(long)]
    keep: bool,
    /// Write the job's bytes as they are, control characters included (on a
    /// terminal they are shown escaped otherwise).
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    ceiling: super::CeilingArgs,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let text = match std::fs::read_to_string(&a.job) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pinfold run: {}: {e}", a.job.display());
            return 125;
        }
    };
    let spec = match JobSpec::from_yaml(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pinfold run: {}: {e}", a.job.display());
            return 125;
        }
    };
    let settings = crate::env::settings();
    let ceiling = match a.ceiling.load(&settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pinfold run: {e}");
            return 125;
        }
    };
    // A local run has no server to hold the job's secrets: the environment gives them.
    let secrets = crate::secrets::named(spec.secrets.iter().map(|s| s.as_str()));
    let Some(home) = settings.home.clone() else {
        eprintln!("pinfold run: cannot find a state directory: set PINFOLD_HOME");
        return 125;
    };
    let runs = home.join("run");
    let dir = match std::fs::create_dir_all(&runs).and_then(|()| {
        // 0700 like the agent's: the job file system's socket is in it.
        tempfile::Builder::new()
            .prefix("job-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&runs)
    }) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pinfold run: {}: {e}", runs.display());
            return 125;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("pinfold run: cannot find my own binary: {e}");
            return 125;
        }
    };
    if let Err(e) = pinfold_agent::signals::install() {
        eprintln!("pinfold run: installing signal handlers: {e}");
        return 125;
    }
    let flag = pinfold_agent::signals::stop_flag();
    let out: Box<dyn Write + Send> = if a.json {
        crate::term::job_output(std::io::stderr(), &std::io::stderr(), a.raw)
    } else {
        crate::term::job_output(std::io::stdout(), &std::io::stdout(), a.raw)
    };
    let log = LogWriter::new(out, secrets.values().cloned()).shared();
    let job = Job {
        spec,
        dir: dir.path().to_owned(),
        secrets,
        stop: flag,
        // The caller's own job file: its images are the caller's choice.
        rt: Runtime::new(
            ceiling,
            exe,
            a.grace,
            settings.clone(),
            crate::env::host(),
            true,
        ),
    };
    let source = a.source.clone();
    let mut source_digest: Option<String> = None;
    let started_ms = pinfold_api::now_ms();
    let mut fill = |ws: &pinfold_agent::runner::Workspace<'_>| -> Result<(), RunError> {
        let Some(src) = &source else { return Ok(()) };
        if !src.is_dir() {
            return Err(RunError::Source(format!(
                "--source {}: not a directory",
                src.display()
            )));
        }
        let mut tar =
            pinfold_agent::source::pack_dir(src).map_err(|e| RunError::Source(e.to_string()))?;
        // The source's digest goes into the provenance (packing is deterministic).
        source_digest = Some(
            pinfold_agent::artifacts::hash_file(&mut tar)
                .map_err(|e| RunError::Source(e.to_string()))?,
        );
        ws.write(|ws| pinfold_agent::source::unpack(std::io::BufReader::new(tar), ws))
            .map_err(|e| RunError::Source(e.to_string()))
    };
    let out_dir = a.out.clone();
    let mut deliver = |art: &mut pinfold_agent::artifacts::Artifact| -> Result<(), String> {
        let Some(out) = &out_dir else {
            return Err("not copied (no --out)".into());
        };
        pinfold_agent::artifacts::copy_to_dir(out, art)
    };
    let image = job.spec.image.as_str().to_owned();
    let report = job.run(&log, &mut fill, &mut deliver);
    let _ = lock(&log).finish();
    if let Some(out) = &a.out {
        let statement = pinfold_agent::provenance::statement(
            &text,
            &image,
            source_digest.as_deref(),
            &report,
            &pinfold_agent::provenance::Invocation {
                builder_id: &pinfold_agent::provenance::local_builder_id(),
                invocation_id: &dir
                    .path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                started_ms,
                finished_ms: pinfold_api::now_ms(),
            },
            serde_json::Map::new(),
        );
        match pinfold_agent::provenance::write_local(&home, out, &statement) {
            Ok((file, key)) => eprintln!(
                "pinfold run: provenance in {}; check it with `pinfold attest verify {} --key {}`",
                file.display(),
                file.display(),
                key.display()
            ),
            Err(e) => {
                eprintln!("pinfold run: writing provenance: {e}");
                return 125;
            }
        }
    }
    if a.keep {
        let kept = dir.keep();
        eprintln!("pinfold run: job directory kept at {}", kept.display());
    } else if let Err(e) = pinfold_sandbox::image::owner::remove_run_dir(dir.path(), &settings) {
        tracing::warn!(%e, "removing the job directory");
    }
    if a.json {
        let v = serde_json::json!({
            "state": report.state.as_str(),
            "reason": report.reason,
            "steps": report.steps,
            "artifacts": report.artifacts,
        });
        println!("{v}");
    }
    report.state.exit_code()
}
