//! `pinfold server`: the coordinator (and `server migrate`: [`migrate`]).

mod migrate;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use pinfold_coordinator::Config;

/// Run the coordinator: the HTTP API runners pull jobs from.
///
/// State (SQLite database, sources, artifacts) lives in
/// $PINFOLD_HOME/coordinator, or with --store in a PostgreSQL database
/// (all of it: several coordinators on one database serve the same jobs). On first start it prints an admin token and a
/// registration token once; only their hashes are kept.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment: PINFOLD_HOME; PINFOLD_STORE (as --store); PINFOLD_ADMIN_TOKEN and PINFOLD_REGISTRATION_TOKEN set the tokens instead of generating them; PINFOLD_SECRET_<NAME> gives the value of job secret NAME (handed only to runners its --secret-to names, masked in its log); PINFOLD_SECRETS_TO (as --secret-to, ';' separated); RUST_LOG."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How long a lease lives without a heartbeat.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Attempts before a job whose runners keep vanishing fails with "runner lost".
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Log bytes kept per job; the rest is dropped behind a truncation marker.
    #[arg(long, default_value_t = 64 << 20)]
    max_log_bytes: u64,
    /// Where server secret NAME may go: NAME=SCOPE[,SCOPE...], a scope being
    /// a label the admin assigned (`pinfold runners label ID --add L`) or
    /// runner:ID. Repeatable. A secret without one goes to no runner.
    #[arg(
        long = "secret-to",
        value_name = "NAME=SCOPES",
        env = "PINFOLD_SECRETS_TO",
        value_delimiter = ';',
        value_parser = parse_scope
    )]
    secret_to: Vec<(String, Vec<String>)>,
    /// Keep the coordinator's state in this PostgreSQL database
    /// (postgres://USER@HOST:PORT/DB) instead of SQLite in
    /// $PINFOLD_HOME/coordinator: several coordinators given the same
    /// database serve the same jobs. The schema is created or migrated at
    /// start. TLS: add ?sslmode=verify-full&sslrootcert=CA.pem (or
    /// sslrootcert=system).
    #[arg(long, value_name = "URL", env = "PINFOLD_STORE", value_parser = pinfold_coordinator::store::parse_url)]
    store: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Move a SQLite coordinator's whole state (database, logs, sources,
    /// artifacts) into an empty PostgreSQL database, then check every
    /// table's row count and every log's and blob's sha256 there. Stop the
    /// coordinator first; one transaction: a failure leaves the database
    /// empty.
    Migrate(migrate::Args),
}

fn parse_scope(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, scopes) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=LABEL[,LABEL|runner:ID...]"))?;
    let scopes: Vec<String> = scopes
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect();
    if name.is_empty() || scopes.is_empty() {
        return Err(format!("{s:?}: expected NAME=LABEL[,LABEL|runner:ID...]"));
    }
    if let Some(bad) = scopes.iter().find(|x| {
        x.strip_prefix("runner:")
            .is_some_and(|id| id.parse::<u64>().is_err())
    }) {
        return Err(format!("{bad:?}: runner:ID takes a runner's numeric id"));
    }
    Ok((name.to_string(), scopes))
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    match a.command {
        Some(Sub::Migrate(m)) => crate::remote::exit_status("server migrate", migrate::run(m)),
        None => crate::remote::exit_status("server", serve(a)),
    }
}

fn token_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|t| !t.trim().is_empty())
}

fn serve(a: Args) -> anyhow::Result<()> {
    let home = crate::env::pinfold_home()
        .context("cannot find a state directory: set PINFOLD_HOME")?
        .join("coordinator");
    let store = a.store.clone();
    let config = Config {
        lease_ttl: a.lease_ttl,
        max_attempts: a.max_attempts.max(1),
        max_log_bytes: a.max_log_bytes,
        secret_scopes: a.secret_to.iter().cloned().collect(),
        store: store.clone(),
        ..Config::default()
    };
    let secrets = crate::secrets::from_env();
    for name in secrets.keys() {
        if !config.secret_scopes.contains_key(name) {
            tracing::warn!(
                secret = %name,
                "no --secret-to {name}=...: this secret goes to no runner"
            );
        }
    }
    // The only command that needs async: the sandbox commands stay
    // single-threaded, so the runtime is built here and not in main.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let (state, boot) = pinfold_coordinator::open(
            &home,
            config,
            token_env("PINFOLD_ADMIN_TOKEN"),
            token_env("PINFOLD_REGISTRATION_TOKEN"),
            secrets,
        )
        .await
        .with_context(|| match &store {
            Some(url) => format!(
                "opening the coordinator's database {}",
                pinfold_coordinator::store::redact(url)
            ),
            None => format!("opening {}", home.display()),
        })?;
        if let Some(t) = &boot.new_admin_token {
            println!("admin token (shown once; use as PINFOLD_TOKEN): {t}");
        }
        if let Some(t) = &boot.new_registration_token {
            println!("registration token (shown once; for pinfold agent): {t}");
        }
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr()?;
        println!("pinfold server: listening on http://{addr}");
        tracing::info!(%addr, home = %home.display(), "coordinator started");
        pinfold_coordinator::serve(listener, state, shutdown_signal()).await?;
        tracing::info!("coordinator stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
