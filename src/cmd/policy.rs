//! `pinfold policy`: inspect policies.

use pinfold_sandbox::Policy;

/// Inspect sandbox policies.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the effective policy (every field, defaults filled in) as TOML.
    Show {
        /// A shipped name (default, untrusted) or a path to a TOML file.
        name: String,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the subcommand; returns the exit status.
pub fn run(c: Command) -> i32 {
    match c {
        Command::Show { name, json } => match Policy::load(&name) {
            Ok(p) => {
                if json {
                    match serde_json::to_string_pretty(&p) {
                        Ok(s) => println!("{s}"),
                        Err(e) => {
                            eprintln!("pinfold policy show: {e}");
                            return 1;
                        }
                    }
                } else {
                    println!("# policy {name} from {}", p.source);
                    print!("{}", p.to_toml());
                }
                0
            }
            Err(e) => {
                eprintln!("pinfold policy show: {e}");
                1
            }
        },
    }
}
