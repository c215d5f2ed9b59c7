//! `pinfold verify`: the arguments and the environment of a reproducibility
//! check; the check itself is `pinfold_agent::reproduce`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use pinfold_agent::reproduce::{self, Settings};
use pinfold_api::JobSpec;

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

fn fail(msg: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("pinfold verify: {msg}");
    code
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let vary = match reproduce::parse_vary(&a.vary) {
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
    let env = crate::env::settings();
    let ceiling = match a.ceiling.load(&env) {
        Ok(c) => c,
        Err(e) => return fail(e, 125),
    };
    if let Err(e) = reproduce::check(&spec, &ceiling, a.source.as_deref()) {
        return fail(e, 125);
    }
    let Some(home) = env.home.clone() else {
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
    if let Err(e) = pinfold_agent::signals::install() {
        return fail(format!("installing signal handlers: {e}"), 125);
    }
    let settings = Settings {
        job_file: a.job,
        spec_text: text,
        spec,
        secrets,
        home,
        out,
        report: a.report,
        source: a.source,
        runs: a.runs,
        vary,
        bisect: a.bisect,
        jobs: a.jobs,
        stop: pinfold_agent::signals::stop_flag(),
        tmpfs: std::env::var_os("PINFOLD_VERIFY_TMPFS")
            .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from),
        // Only where PATH says: no default directories when it is unset.
        diffoscope: env.path.as_ref().and(env.which("diffoscope", "")),
        started_ms,
        // `pinfold verify` runs the caller's own job file.
        rt: pinfold_agent::runner::Runtime::new(
            ceiling,
            exe,
            a.grace,
            env,
            crate::env::host(),
            true,
        ),
    };
    // The human summary: on stdout, or on stderr when stdout has the JSON.
    let mut term: Box<dyn Write> = if a.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    match reproduce::run(settings, &mut term) {
        Ok(report) => {
            if a.json {
                println!("{}", report.to_json());
            }
            report.exit_code
        }
        Err(e) => fail(e, 125),
    }
}
