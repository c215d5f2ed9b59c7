//! One module per subcommand.
pub mod agent;
pub mod artifacts;
pub mod attest;
pub mod cancel;
pub mod doctor;
pub mod exec;
pub mod gha_hook;
pub mod gitlab_driver;
pub mod image;
pub mod jobs;
pub mod logs;
pub mod policy;
pub mod run;
pub mod runners;
pub mod server;
pub mod shell;
pub mod status;
pub mod submit;
pub mod verify;
pub mod viewer_token;

use std::sync::Arc;

use pinfold_sandbox::Settings;
use pinfold_sandbox::ceiling::Ceiling;

/// The runner's policy ceiling, shared by `agent`, `run` and `verify`: the
/// operator's choice, which a job file can only narrow.
#[derive(Debug, clap::Args)]
pub struct CeilingArgs {
    /// The policy jobs run under when their job file names none: a name
    /// (default, untrusted, trusted, or NAME.toml in the policy search path)
    /// or a path to a TOML file.
    #[arg(
        long = "policy",
        value_name = "NAME|PATH",
        default_value = "default",
        env = "PINFOLD_POLICY"
    )]
    policy: String,
    /// Another policy a job may pick with `policy: NAME` (a file is known by
    /// its name without .toml). A job never names a path, and never gets
    /// more than the policy it picks. Repeatable.
    #[arg(
        long = "allow-policy",
        value_name = "NAME|PATH",
        env = "PINFOLD_ALLOW_POLICIES",
        value_delimiter = ','
    )]
    allow: Vec<String>,
}

impl CeilingArgs {
    /// Loads and checks every allowed policy (an operator's error, at
    /// start), names searched in the policy directories of `settings`.
    pub fn load(&self, settings: &Settings) -> Result<Arc<Ceiling>, String> {
        Ceiling::new(&self.policy, &self.allow, &settings.policy_dirs())
            .map(Arc::new)
            .map_err(|e| format!("--policy/--allow-policy: {e}"))
    }
}

/// Prints `v` as pretty JSON on stdout (`--json`). When it cannot be
/// written as JSON, says so as `pinfold CMD: ERROR` on stderr and returns
/// false.
pub fn print_json(cmd: &str, v: &impl serde::Serialize) -> bool {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            true
        }
        Err(e) => {
            eprintln!("pinfold {cmd}: {e}");
            false
        }
    }
}
