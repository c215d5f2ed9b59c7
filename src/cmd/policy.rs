//! `pinfold policy`: inspect policies.

use pinfold_sandbox::Policy;
use pinfold_sandbox::container::seccomp::Filters;

/// Inspect sandbox policies.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the effective policy (every field, defaults filled in) as TOML.
    Show {
        /// A shipped name (default, untrusted, trusted) or a path to a TOML file.
        name: String,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Validate a policy file and the seccomp profile it names; errors name
    /// the field. Exit 0 when valid, 1 when not.
    Check {
        /// A path to a TOML file (or a policy name).
        file: String,
    },
}

/// Runs the subcommand; returns the exit status.
pub fn run(c: Command) -> i32 {
    let settings = crate::env::settings();
    match c {
        Command::Show { name, json } => match Policy::load(&name, &settings.policy_dirs()) {
            Ok(p) => {
                if json {
                    if !super::print_json("policy show", &p) {
                        return 1;
                    }
                } else {
                    println!("# policy {name} from {}", p.source);
                    print!("{}", p.to_toml());
                }
                0
            }
            Err(e) => {
                report("show", &e);
                1
            }
        },
        Command::Check { file } => {
            let policy = match Policy::load(&file, &settings.policy_dirs()) {
                Ok(p) => p,
                Err(e) => {
                    report("check", &e);
                    return 1;
                }
            };
            match Filters::for_policy(&policy, &settings) {
                Ok(f) => {
                    println!(
                        "ok: {file} is valid ({}); seccomp profile {} compiles to {} filters",
                        policy.description,
                        f.profile,
                        f.programs.len()
                    );
                    0
                }
                Err(e) => {
                    eprintln!("pinfold policy check: {file}: field `seccomp.profile`: {e}");
                    1
                }
            }
        }
    }
}

/// A policy error for the operator's own `policy show`/`check` of a file
/// they chose: here (and only here) the parser's account, which may quote
/// the file, follows the position-only message.
fn report(verb: &str, e: &pinfold_sandbox::policy::PolicyError) {
    match e {
        pinfold_sandbox::policy::PolicyError::Parse { detail, .. } => {
            eprintln!("pinfold policy {verb}: {e}; the parser says: {detail}")
        }
        _ => eprintln!("pinfold policy {verb}: {e}"),
    }
}
