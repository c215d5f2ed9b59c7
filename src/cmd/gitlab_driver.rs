//! `pinfold gitlab-driver`: GitLab Runner's Custom executor, its exit
//! codes and its config output. What each stage does on this host:
//! [`crate::drivers::gitlab`]; the stages and what persists between them:
//! [`pinfold_agent::gitlab`]; installing it: `ci-templates/gitlab/README.md`.

use pinfold_agent::gitlab::{self, StageEnd};

pub use crate::drivers::gitlab::Command;
use crate::drivers::gitlab::{Fail, cleanup, prepare, run_stage};

/// GitLab's exit codes, from the environment gitlab-runner gives the stages.
#[derive(Clone, Copy)]
struct Codes {
    build: i32,
    system: i32,
}

impl Codes {
    fn from_env() -> Result<Codes, String> {
        let get = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<i32>().ok())
                .ok_or_else(|| {
                    format!("{name} is not set: run `pinfold gitlab-driver` from gitlab-runner's [runners.custom], which sets it")
                })
        };
        Ok(Codes {
            build: get("BUILD_FAILURE_EXIT_CODE")?,
            system: get("SYSTEM_FAILURE_EXIT_CODE")?,
        })
    }

    fn of(self, end: StageEnd) -> i32 {
        match end {
            StageEnd::Success => 0,
            StageEnd::BuildFailure => self.build,
            StageEnd::SystemFailure => self.system,
        }
    }
}

/// Runs the subcommand; returns the exit status.
pub fn run(c: Command) -> i32 {
    let what = match &c {
        Command::Config => "config",
        Command::Prepare(_) => "prepare",
        Command::Run(_) => "run",
        Command::Cleanup => "cleanup",
    };
    if let Command::Config = c {
        return config();
    }
    let codes = match Codes::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pinfold gitlab-driver {what}: {e}");
            return 2;
        }
    };
    let result = match c {
        Command::Prepare(a) => prepare(&a),
        Command::Run(a) => run_stage(&a),
        Command::Cleanup => cleanup(),
        Command::Config => unreachable!("handled above"),
    };
    match result {
        Ok(end) => codes.of(end),
        Err(Fail(end, why)) => {
            eprintln!("pinfold gitlab-driver {what}: {why}");
            codes.of(end)
        }
    }
}

fn config() -> i32 {
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let out = gitlab::ConfigOutput::new(
        &pinfold_agent::hosted::new_id(),
        &hostname,
        env!("CARGO_PKG_VERSION"),
    );
    if super::print_json("gitlab-driver config", &out) {
        0
    } else {
        1
    }
}
