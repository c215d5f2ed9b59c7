//! What the client subcommands share: where the server is, the token, and
//! turning a failed call into a message.

use std::time::Duration;

use pinfold_client::Client;

/// Options of every command that talks to a coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The coordinator's URL.
    #[arg(long, env = "PINFOLD_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The admin token (printed by `pinfold server` on its first start).
    #[arg(long, env = "PINFOLD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Give up on a request after this long (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl Remote {
    /// A client for these options.
    pub fn client(&self) -> anyhow::Result<Client> {
        if self.token.is_none() {
            anyhow::bail!("no token: pass --token or set PINFOLD_TOKEN");
        }
        Ok(Client::new(&self.server, self.token.clone(), self.timeout))
    }
}

/// Prints `err` for `cmd` and returns exit status 1.
pub fn fail(cmd: &str, err: &anyhow::Error) -> i32 {
    eprintln!("pinfold {cmd}: {err:#}");
    1
}
