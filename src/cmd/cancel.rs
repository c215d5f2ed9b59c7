//! `pinfold cancel`: stop a job.

use crate::remote::{Remote, fail};

/// Cancel a job: a queued job ends at once; a running one is told through
/// its runner's next heartbeat (SIGTERM, a grace period, then SIGKILL).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job id.
    job: u64,
    #[command(flatten)]
    remote: Remote,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let go = || -> anyhow::Result<()> {
        let info = a.remote.client()?.cancel(a.job)?;
        if info.state.is_terminal() {
            println!("job {}: {}", info.id, info.state.as_str());
        } else {
            println!("job {}: cancel requested; its runner will stop it", info.id);
        }
        Ok(())
    };
    match go() {
        Ok(()) => 0,
        Err(e) => fail("cancel", &e),
    }
}
