//! `pinfold logs`: print a job's log.

use std::io::Write;

use crate::remote::{JobAt, exit_status};

/// Print a job's log (secrets masked); --follow streams it until the job ends.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep printing new output until the job ends.
    #[arg(short, long)]
    follow: bool,
    /// Write the job's bytes as they are, control characters included
    /// (on a terminal they are shown escaped otherwise).
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    at: JobAt,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let go = || -> anyhow::Result<()> {
        let client = a.at.remote.client()?;
        if a.follow {
            crate::remote::wait(&client, a.at.job, a.raw)?;
            return Ok(());
        }
        let mut out = crate::term::job_output(std::io::stdout(), &std::io::stdout(), a.raw);
        let mut offset = 0;
        loop {
            let (data, next, complete) = client.read_log(a.at.job, offset)?;
            out.write_all(&data)?;
            if data.is_empty() || complete {
                return Ok(out.flush()?);
            }
            offset = next;
        }
    };
    exit_status("logs", go())
}
