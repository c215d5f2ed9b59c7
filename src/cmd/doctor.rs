//! `pinfold doctor`: report whether and how well the sandbox can run here.

use pinfold_sandbox::doctor::{self, Status};

/// Check user namespaces, id mapping, overlayfs, Landlock, seccomp, cgroups
/// and user-mode networking on this machine, one line each with what to do.
///
/// Exit status: 0 when the sandbox can run (warnings included), 1 when it cannot.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let checks = doctor::run_checks(&crate::env::settings());
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if a.json {
        if !super::print_json("doctor", &checks) {
            return 1;
        }
    } else {
        for c in &checks {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("{tag} {}: {}", c.name, c.detail);
        }
        if failed {
            println!("the sandbox cannot run here: fix the FAIL lines above");
        }
    }
    i32::from(failed)
}
