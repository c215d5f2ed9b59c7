//! `pinfold gha-hook`: the GitHub Actions runner's container hooks, one
//! call per run: its input and exit status. What each call does on this
//! host: [`crate::drivers::gha`]; the calls and what is refused:
//! [`pinfold_agent::gha`]; installing it: `ci-templates/github/README.md`.

use std::io::Read;

use pinfold_agent::gha::{self, Call};

pub use crate::drivers::gha::Args;
use crate::drivers::gha::{cleanup, prepare, step};

/// The hook input is one line of JSON; more than this is not the runner's.
const MAX_INPUT: u64 = 16 << 20;

/// Runs one hook call from stdin; returns the exit status.
pub fn run(a: Args) -> i32 {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().take(MAX_INPUT).read_to_string(&mut text) {
        eprintln!("pinfold gha-hook: reading stdin: {e}");
        return 1;
    }
    let (input, call) = match gha::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pinfold gha-hook: {e}");
            return 1;
        }
    };
    let result = match call {
        Call::PrepareJob(p) => prepare(&a, &p, input.response_file.as_deref()).map(|()| 0),
        Call::RunScriptStep(s) => step(&a, &s, input.state.as_ref()),
        Call::RunContainerStep(c) => Err(gha::container_step_refusal(&c).to_string()),
        Call::CleanupJob => cleanup(input.state.as_ref()).map(|()| 0),
    };
    match result {
        Ok(code) => code,
        Err(why) => {
            eprintln!("pinfold gha-hook {}: {why}", input.command);
            1
        }
    }
}
