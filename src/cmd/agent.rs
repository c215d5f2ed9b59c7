//! `pinfold agent`: the runner agent.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// Run jobs from a coordinator.
///
/// Registers once (the runner token is kept in $PINFOLD_HOME/agent, mode
/// 0600, one file per server, and reused on restart), then long-polls for
/// jobs whose labels it has. SIGTERM/SIGINT: take no more jobs, let running
/// ones finish for --drain, then cancel the rest (SIGTERM, --grace, SIGKILL)
/// and retry nothing: a log or result the server does not take at the first
/// try is dropped with one log line. The agent exits within drain + grace +
/// 5 s, whatever the network does.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment: PINFOLD_HOME, PINFOLD_SERVER, PINFOLD_AGENT_NAME, PINFOLD_LABELS (comma separated), PINFOLD_CONCURRENCY, PINFOLD_DRAIN, PINFOLD_GRACE, PINFOLD_POLICY, PINFOLD_ALLOW_POLICIES (comma separated), PINFOLD_REGISTRATION_TOKEN, PINFOLD_REQUEST_TIMEOUT, PINFOLD_AGENT_SECRETS (as --secret, comma separated), PINFOLD_SECRET_<NAME> (the value of a secret listed with --secret; any other is never handed out), RUST_LOG."
)]
pub struct Args {
    /// Coordinator URL; or several, comma separated, when coordinators share
    /// one database with no load balancer before them: a request that one
    /// does not answer (or answers 502-504) goes to the next.
    #[arg(long, env = "PINFOLD_SERVER")]
    server: String,
    /// Registration token (needed only when no runner token is stored yet).
    #[arg(long, env = "PINFOLD_REGISTRATION_TOKEN", hide_env_values = true)]
    registration_token: Option<String>,
    /// Runner name [default: the host name].
    #[arg(long, env = "PINFOLD_AGENT_NAME")]
    name: Option<String>,
    /// Labels offered, comma separated. They route jobs to this runner; they
    /// unlock no server secret (only labels the admin assigns with
    /// `pinfold runners label` do).
    #[arg(long, env = "PINFOLD_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// A local secret jobs may get: its value is PINFOLD_SECRET_<NAME> in this
    /// agent's environment. Repeatable, or comma separated; a job naming a
    /// secret that neither the server nor this list offers fails before its
    /// first step.
    #[arg(
        long = "secret",
        value_name = "NAME",
        env = "PINFOLD_AGENT_SECRETS",
        value_delimiter = ','
    )]
    secrets: Vec<String>,
    /// Jobs run at once.
    #[arg(long, env = "PINFOLD_CONCURRENCY", default_value_t = 1)]
    concurrency: usize,
    /// Exit after one job.
    #[arg(long)]
    ephemeral: bool,
    /// After SIGTERM, how long running jobs may go on before they are
    /// cancelled (and nothing more is retried).
    #[arg(long, env = "PINFOLD_DRAIN", default_value = "30s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Between SIGTERM and SIGKILL when a job is cancelled.
    #[arg(long, env = "PINFOLD_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// How long one request to the server may take before it is retried
    /// (with backoff; a long-poll gets its wait on top).
    #[arg(
        long,
        env = "PINFOLD_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    request_timeout: Duration,
    /// Let jobs name local images (oci:, oci-archive:, docker-archive:
    /// paths on this host). Without it a job's image must be a registry
    /// reference: a path would let a job run, or probe, the runner's files.
    #[arg(long, env = "PINFOLD_ALLOW_LOCAL_IMAGES")]
    allow_local_images: bool,
    #[command(flatten)]
    ceiling: super::CeilingArgs,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    crate::remote::exit_status("agent", agent(a))
}

fn agent(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        !a.request_timeout.is_zero(),
        "--request-timeout must be longer than 0s (it bounds each request to the server)"
    );
    let settings = crate::env::settings();
    let home: PathBuf =
        (settings.home.clone()).context("cannot find a state directory: set PINFOLD_HOME")?;
    let name = match a.name {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "pinfold-agent".into()),
    };
    let ceiling = a.ceiling.load(&settings).map_err(anyhow::Error::msg)?;
    pinfold_agent::signals::install().context("installing signal handlers")?;
    let cfg = pinfold_agent::agent::Config {
        server: a.server,
        registration_token: a.registration_token,
        name,
        labels: a.labels,
        secrets: crate::secrets::named(a.secrets.iter().map(String::as_str)),
        concurrency: a.concurrency,
        ephemeral: a.ephemeral,
        drain: a.drain,
        home,
        request_timeout: a.request_timeout,
        rt: pinfold_agent::runner::Runtime::new(
            ceiling,
            std::env::current_exe().context("finding my own binary")?,
            a.grace,
            settings,
            crate::env::host(),
            a.allow_local_images,
        ),
    };
    pinfold_agent::agent::run(cfg, &pinfold_agent::signals::received)?;
    Ok(())
}
