//! `pinfold jobs`: list jobs.

use crate::remote::{Remote, exit_status};

/// List jobs, newest first.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only jobs in this state (queued, running, succeeded, failed, timed_out, cancelled, error).
    #[arg(long)]
    state: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let go = || -> anyhow::Result<()> {
        let list = a.remote.client()?.jobs(a.state.as_deref(), a.limit)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(());
        }
        println!(
            "{:>8}  {:<10}  {:>8}  {:>10}  IMAGE",
            "ID", "STATE", "ATTEMPTS", "LOG"
        );
        for j in &list.jobs {
            println!(
                "{:>8}  {:<10}  {:>8}  {:>10}  {}",
                j.id,
                j.state.as_str(),
                j.attempts,
                j.log_bytes,
                j.image
            );
        }
        Ok(())
    };
    exit_status("jobs", go())
}
