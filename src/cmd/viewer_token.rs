//! `pinfold viewer-token`: mint a read-only token for the web pages.

use crate::remote::{Remote, exit_status};

/// Mint a token that signs in to the web pages (`/ui`) read-only: it sees
/// jobs, logs, artifacts and runners, and cannot cancel, revoke, or use the
/// API. Shown once; only its hash is stored.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    remote: Remote,
    /// Print `{"token": "..."}` instead of the bare token.
    #[arg(long)]
    json: bool,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let go = || -> anyhow::Result<()> {
        let t = a.remote.client()?.viewer_token()?;
        if a.json {
            println!("{}", serde_json::to_string(&t)?);
        } else {
            println!("{}", t.token);
        }
        Ok(())
    };
    exit_status("viewer-token", go())
}
