//! `pinfold runners`: what the admin decides about runners.

use crate::remote::{Remote, exit_status};

/// Manage runners (admin token).
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Add or remove the labels the admin trusts a runner with, and print
    /// its set. Only these unlock server secrets (`pinfold server
    /// --secret-to`); the labels a runner declares at registration route
    /// jobs and unlock nothing.
    Label(LabelArgs),
}

/// `pinfold runners label`.
#[derive(Debug, clap::Args)]
pub struct LabelArgs {
    /// The runner id (`pinfold status` of its jobs, or the server's log).
    runner: u64,
    /// A label to trust it with. Repeatable, or comma separated.
    #[arg(long, value_name = "L", value_delimiter = ',')]
    add: Vec<String>,
    /// A label to take away. Repeatable, or comma separated.
    #[arg(long, value_name = "L", value_delimiter = ',')]
    remove: Vec<String>,
    /// Print {"runner_id", "trusted_labels"} instead of the labels.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

/// Runs the subcommand; returns the exit status.
pub fn run(c: Cmd) -> i32 {
    let Cmd::Label(a) = c;
    let go = || -> anyhow::Result<()> {
        let t = a
            .remote
            .client()?
            .trust_labels(a.runner, &a.add, &a.remove)?;
        if a.json {
            println!("{}", serde_json::to_string(&t)?);
        } else {
            println!(
                "runner {}: trusted labels [{}]",
                t.runner_id,
                t.trusted_labels.join(", ")
            );
        }
        Ok(())
    };
    exit_status("runners", go())
}
