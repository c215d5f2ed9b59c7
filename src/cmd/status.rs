//! `pinfold status`: one job's state.

use pinfold_api::wire::JobInfo;

use crate::remote::{JobAt, exit_status};

/// Show a job's state, attempts and step results.
///
/// Exit status: 0 when the job could be read (whatever its state).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: JobAt,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let go = || -> anyhow::Result<()> {
        let info = a.at.remote.client()?.job(a.at.job)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&info)?);
        } else {
            print_job(&info);
        }
        Ok(())
    };
    exit_status("status", go())
}

fn print_job(j: &JobInfo) {
    println!("job {}: {}", j.id, j.state.as_str());
    if let Some(r) = &j.reason {
        println!("reason: {r}");
    }
    println!("image: {}", j.image);
    if !j.labels.is_empty() {
        println!("labels: {}", j.labels.join(","));
    }
    println!("attempts: {}", j.attempts);
    if let Some(r) = j.runner_id {
        println!("runner: {r}");
    }
    if j.cancel_requested {
        println!("cancel: requested");
    }
    println!("log: {} bytes", j.log_bytes);
    for s in &j.steps {
        let secs = match (s.started_at, s.finished_at) {
            (Some(a), Some(b)) => format!(" in {:.1}s", b.saturating_sub(a) as f64 / 1000.0),
            _ => String::new(),
        };
        let code = s.exit_code.map_or("-".to_string(), |c| c.to_string());
        println!("step {}: exit {code}{secs}", s.name);
    }
    if let Some(g) = j.verify_of {
        println!("verify: run of job {g}");
    }
    if let Some(v) = &j.verify {
        println!("verify: {} runs on different runners", v.runs);
        for r in &v.run_jobs {
            let runner = r.runner_id.map_or("-".to_string(), |x| x.to_string());
            println!(
                "  run {}: job {} {} on runner {runner}",
                r.run,
                r.job_id,
                r.state.as_str()
            );
        }
        if let Some(w) = &v.waiting {
            println!("waiting: {w}");
        }
        if let Some(d) = &v.verdict {
            println!(
                "verdict: {}",
                if d.reproducible {
                    "reproducible"
                } else {
                    "NOT reproducible"
                }
            );
            for a in &d.artifacts {
                let per: Vec<String> = a
                    .by_runner
                    .iter()
                    .map(|(r, s)| format!("runner {r} {}", s.as_deref().unwrap_or("missing")))
                    .collect();
                let mark = if a.identical { "same" } else { "DIFFERS" };
                println!("  {mark} {}: {}", a.name, per.join(", "));
            }
        }
    }
}
