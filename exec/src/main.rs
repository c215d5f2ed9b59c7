//! `pinfold-exec`: see the library ([`pinfold_exec`]).

use clap::Parser;

/// Run a command, or a job container's steps, in a hardened rootless
/// container: `pinfold exec` without the image fetch (the image must be in
/// the store), built small for the runner's job containers.
///
/// Exit status: the command's own; 128+N when it dies of signal N; 123 when
/// a resource limit of the policy ended it; 124 when --timeout fires; 125
/// when the sandbox could not be set up; 126/127 when the command cannot be
/// executed / is not found.
#[derive(Debug, Parser)]
#[command(name = "pinfold-exec", version)]
struct Cli {
    /// Log what pinfold does (debug level); RUST_LOG overrides.
    #[arg(short, long)]
    verbose: bool,
    #[command(flatten)]
    exec: pinfold_exec::ExecArgs,
}

fn main() {
    let cli = Cli::parse();
    let default = if cli.verbose {
        "pinfold_exec=debug,pinfold_sandbox=debug"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    std::process::exit(pinfold_exec::run(cli.exec, &|store, image| {
        store.find(image)
    }));
}

#[cfg(test)]
mod tests {
    /// clap's own checks of the arguments (see pinfold's).
    #[test]
    fn the_arguments_pass_clap_debug_asserts() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
