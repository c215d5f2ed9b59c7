//! `pinfold cancel`: stop a job.

use crate::remote::{JobAt, exit_status};

/// Cancel a job: a queued job ends at once; a running one is told through
/// its runner's next heartbeat (SIGTERM, a grace period, then SIGKILL).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    at: JobAt,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let go = || -> anyhow::Result<()> {
        let info = a.at.remote.client()?.cancel(a.at.job)?;
        if info.state.is_terminal() {
            println!("job {}: {}", info.id, info.state.as_str());
        } else {
            println!("job {}: cancel requested; its runner will stop it", info.id);
        }
        Ok(())
    };
    exit_status("cancel", go())
}
