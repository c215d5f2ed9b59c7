//! `pinfold`: the command line. Thin by design; one file per subcommand in
//! `cmd/`, all the work in the library crates. Subcommands never import each
//! other: the CLI plumbing several of them share (server options, terminal
//! output, image fetch options, secrets from the environment, provenance
//! checks) is in the modules beside `cmd/`.

mod attestation;
mod cmd;
mod drivers;
mod env;
mod fetch;
mod remote;
mod secrets;
mod term;

use clap::{Parser, Subcommand};

/// Rootless container sandbox for CI runners.
///
/// Runs build steps in user-namespace containers hardened with Landlock and
/// seccomp, from pinned images, without root and without a daemon.
#[derive(Debug, Parser)]
#[command(name = "pinfold", version, propagate_version = true)]
struct Cli {
    /// Log what pinfold does (debug level); RUST_LOG overrides.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per process, so boxing the large variants buys nothing.
#[allow(clippy::large_enum_variant)]
// Each subcommand's arguments are built only when it is the one invoked:
// building all of them cost every command ~0.5 ms of its start. The one-line
// `about`s below are what the command list shows before that; each command's
// own help still comes from its Args' doc comment.
#[command(defer = true)]
enum Command {
    #[command(about = "Run a command in a hardened rootless container")]
    Exec(cmd::exec::Args),
    #[command(subcommand)]
    Image(cmd::image::Command),
    #[command(subcommand)]
    Policy(cmd::policy::Command),
    #[command(about = "Check this machine's sandbox support, one line each with what to do")]
    Doctor(cmd::doctor::Args),
    #[command(subcommand)]
    Attest(cmd::attest::Command),
    #[command(about = "Run the coordinator: the HTTP API runners pull jobs from")]
    Server(cmd::server::Args),
    #[command(about = "Submit a job file to a coordinator")]
    Submit(cmd::submit::Args),
    #[command(about = "Print a job's log (secrets masked); --follow streams it until the job ends")]
    Logs(cmd::logs::Args),
    #[command(about = "Show a job's state, attempts and step results")]
    Status(cmd::status::Args),
    #[command(about = "List jobs, newest first")]
    Jobs(cmd::jobs::Args),
    #[command(about = "Cancel a job")]
    Cancel(cmd::cancel::Args),
    #[command(about = "Download a job's artifacts into a directory, verifying each sha256")]
    Artifacts(cmd::artifacts::Args),
    /// Manage runners: the labels the admin trusts them with (admin token).
    #[command(subcommand)]
    Runners(cmd::runners::Cmd),
    #[command(about = "Run a job file locally: logs on the terminal, artifacts into --out")]
    Run(cmd::run::Args),
    #[command(
        about = "Check that a job's build is reproducible: run it N times with variations, compare the artifacts"
    )]
    Verify(cmd::verify::Args),
    #[command(about = "Mint a read-only token for the coordinator's web pages (admin token)")]
    ViewerToken(cmd::viewer_token::Args),
    #[command(about = "Run jobs from a coordinator")]
    Agent(cmd::agent::Args),
    #[command(
        subcommand,
        about = "GitLab Runner's Custom executor: run each stage of a GitLab CI job in pinfold"
    )]
    GitlabDriver(cmd::gitlab_driver::Command),
    #[command(
        about = "GitHub Actions runner container hooks: run each job in a pinfold job container"
    )]
    GhaHook(cmd::gha_hook::Args),
    #[command(
        about = "Run an Actions step's script in pinfold: `shell: pinfold shell {0}` (trusted repositories)"
    )]
    Shell(cmd::shell::Args),
    /// The keeper of a `gitlab-driver` or `gha-hook` job: its job file
    /// system and container (internal: started by their prepare).
    #[command(hide = true)]
    KeepJobFs(drivers::keeper::KeepArgs),
}

fn init_tracing(verbose: bool, server: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if verbose {
        "pinfold=debug,pinfold_sandbox=debug,pinfold_coordinator=debug,pinfold_agent=debug"
    } else if server {
        "warn,pinfold=info,pinfold_coordinator=info,pinfold_agent=info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn main() {
    // The image store's user-namespace helper (pinfold_sandbox::image::owner),
    // dispatched before anything else, while the process has one thread.
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if raw
        .get(1)
        .is_some_and(|a| a == pinfold_sandbox::image::owner::HELPER_ARG)
    {
        std::process::exit(pinfold_sandbox::image::owner::helper_main(&raw[2..]));
    }
    // The job file system's holder (pinfold_sandbox::container::jobfs),
    // likewise single-threaded.
    if raw
        .get(1)
        .is_some_and(|a| a == pinfold_sandbox::container::jobfs::HELPER_ARG)
    {
        std::process::exit(pinfold_sandbox::container::jobfs::helper_main(&raw[2..]));
    }
    let args: Vec<String> = std::env::args().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let informational = !e.use_stderr();
            let _ = e.print();
            // `exec` follows the docker/podman contract: 125 when pinfold
            // itself fails, so CI scripts can tell it from the command's codes.
            std::process::exit(if informational {
                0
            } else if args.get(1).map(String::as_str) == Some("exec") {
                125
            } else {
                // A misconfigured [runners.custom] is the runner's failure,
                // not the job's.
                args.get(1)
                    .filter(|a| *a == "gitlab-driver")
                    .and_then(|_| std::env::var("SYSTEM_FAILURE_EXIT_CODE").ok()?.parse().ok())
                    .unwrap_or(2)
            });
        }
    };
    init_tracing(
        cli.verbose,
        matches!(cli.command, Command::Server(_) | Command::Agent(_)),
    );
    let code = match cli.command {
        Command::Exec(a) => cmd::exec::run(a),
        Command::Image(c) => cmd::image::run(c),
        Command::Policy(c) => cmd::policy::run(c),
        Command::Doctor(a) => cmd::doctor::run(a),
        Command::Attest(c) => cmd::attest::run(c),
        Command::Server(a) => cmd::server::run(a),
        Command::Submit(a) => cmd::submit::run(a),
        Command::Logs(a) => cmd::logs::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Jobs(a) => cmd::jobs::run(a),
        Command::Cancel(a) => cmd::cancel::run(a),
        Command::Artifacts(a) => cmd::artifacts::run(a),
        Command::Runners(c) => cmd::runners::run(c),
        Command::ViewerToken(a) => cmd::viewer_token::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Agent(a) => cmd::agent::run(a),
        Command::GitlabDriver(c) => cmd::gitlab_driver::run(c),
        Command::GhaHook(a) => cmd::gha_hook::run(a),
        Command::Shell(a) => cmd::shell::run(a),
        Command::KeepJobFs(a) => drivers::keeper::keep(a),
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    /// clap checks a command's arguments (unique ids and groups, ...) only
    /// in debug builds and only for the command invoked: this checks them
    /// all, so a clash is a failed test rather than a panic of `pinfold
    /// exec` in a debug build.
    #[test]
    fn every_command_passes_clap_debug_asserts() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
