//! What the client subcommands share: where the server is, the token,
//! following a job's log to its end, and turning a failed call into a
//! message.

use std::io::Write;
use std::time::Duration;

use pinfold_client::Client;

/// Options of every command that talks to a coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The coordinator's URL; or several, comma separated (coordinators on
    /// one database): the first that answers is used.
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
        let c = Client::new(&self.server, self.token.clone(), self.timeout);
        // Several coordinators: a one-shot command starts at one that answers.
        c.find_answering();
        Ok(c)
    }
}

/// The arguments of a command about one job at a coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct JobAt {
    /// The job id.
    pub job: u64,
    #[command(flatten)]
    pub remote: Remote,
}

/// Prints `err` for `cmd` and returns exit status 1.
pub fn fail(cmd: &str, err: &anyhow::Error) -> i32 {
    eprintln!("pinfold {cmd}: {}", one_line(err));
    1
}

/// `err` and its causes on one line, each cause once: a library error
/// that shows its source in its own message (`store: {0}`) also returns it
/// as its `source`, and `{:#}` would print it twice.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The exit status of `cmd` after `outcome`: 0, or 1 with the error
/// printed as [`fail`] does.
pub fn exit_status(cmd: &str, outcome: anyhow::Result<()>) -> i32 {
    match outcome {
        Ok(()) => 0,
        Err(e) => fail(cmd, &e),
    }
}

/// Streams the job's log to stdout until it ends (resuming after broken
/// connections), then returns how it ended. On a terminal the log's control
/// characters are shown escaped unless `raw`.
pub fn wait(client: &Client, job: u64, raw: bool) -> anyhow::Result<pinfold_api::wire::JobState> {
    let mut offset = 0;
    let mut stdout = crate::term::job_output(std::io::stdout(), &std::io::stdout(), raw);
    loop {
        match client.follow_log(job, offset, &mut stdout) {
            Ok(at) => offset = at,
            Err(e) => {
                tracing::warn!(%e, "log stream broke; resuming");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        }
        let info = client.job(job)?;
        if info.state.is_terminal() && offset >= info.log_bytes {
            stdout.flush()?;
            if let Some(r) = &info.reason {
                eprintln!("pinfold submit: job {job} {}: {r}", info.state.as_str());
            } else {
                eprintln!("pinfold submit: job {job} {}", info.state.as_str());
            }
            return Ok(info.state);
        }
        // The stream ended early (server shutting down): try again.
        std::thread::sleep(Duration::from_millis(500));
    }
}
