//! `pinfold viewer-token`: mint a read-only token for the web pages.

use crate::remote::{Remote, exit_status};

/// Mint a token that signs in to the web pages (`/ui`) read-only: it sees
/// jobs, logs, artifacts and runners, and cannot cancel, revoke, or use the
/// API. Shown once; only its hash is stored. `--revoke-all` ends them all.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    remote: Remote,
    /// Print JSON (`{"token": "..."}`, or with --revoke-all
    /// `{"revoked": N, "sessions": M}`).
    #[arg(long)]
    json: bool,
    /// Revoke every viewer token instead, and sign every viewer out now.
    #[arg(long)]
    revoke_all: bool,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let go = || -> anyhow::Result<()> {
        if a.revoke_all {
            let r = a.remote.client()?.revoke_viewer_tokens()?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "revoked {} viewer tokens; signed out {} viewer sessions",
                    r.revoked, r.sessions
                );
            }
            return Ok(());
        }
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
