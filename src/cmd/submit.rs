//! `pinfold submit`: send a job (and its source) to a coordinator.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use pinfold_api::JobSpec;
use pinfold_api::wire::SubmitRequest;
use pinfold_client::Client;

use crate::remote::{Remote, fail};

/// Submit a job file to a coordinator.
///
/// Prints the job id. With --wait, streams the job's log and exits with the
/// job's status: 0 succeeded, 1 a step failed, 124 timeout, 125 pinfold
/// failed (runner lost, image, sandbox), 130 cancelled. A `verify: N` job
/// exits 0 when its runs' artifacts are identical (reproducible), 1 when
/// they differ, or a run's own failure status when a run did not succeed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file (YAML).
    job: PathBuf,
    /// Directory sent as the job's /workspace (as a tar pinned by its sha256).
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
    /// A label the runner must have. Repeatable.
    #[arg(long = "label", value_name = "L")]
    labels: Vec<String>,
    /// Stream the log and exit with the job's status.
    #[arg(long)]
    wait: bool,
    /// With --wait, write the job's bytes as they are, control characters
    /// included (on a terminal they are shown escaped otherwise).
    #[arg(long, requires = "wait")]
    raw: bool,
    /// Print {"job_id": N} instead of the bare id.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    match submit(&a) {
        Ok(code) => code,
        Err(e) => fail("submit", &e),
    }
}

fn submit(a: &Args) -> anyhow::Result<i32> {
    let text =
        std::fs::read_to_string(&a.job).with_context(|| format!("reading {}", a.job.display()))?;
    // Refuse locally what the server would refuse, with the file's name.
    JobSpec::from_yaml(&text).with_context(|| a.job.display().to_string())?;
    let client = a.remote.client()?;
    let source_sha256 = match &a.source {
        Some(dir) => Some(upload_source(&client, dir)?),
        None => None,
    };
    let job = client.submit(&SubmitRequest {
        spec: text,
        labels: a.labels.clone(),
        source_sha256,
    })?;
    if a.json {
        println!("{}", serde_json::json!({ "job_id": job.job_id }));
    } else if a.wait {
        eprintln!("pinfold submit: job {}", job.job_id);
    } else {
        println!("{}", job.job_id);
    }
    if !a.wait {
        return Ok(0);
    }
    let state = crate::remote::wait(&client, job.job_id, a.raw)?;
    Ok(state.exit_code())
}

/// Tars `dir` into a temporary file (entries sorted, times and owners
/// zeroed, so the same tree gives the same digest), uploads it, returns the
/// digest.
fn upload_source(client: &Client, dir: &Path) -> anyhow::Result<String> {
    if !dir.is_dir() {
        bail!("--source {}: not a directory", dir.display());
    }
    let mut file = tempfile::tempfile().context("creating a temporary file")?;
    {
        let mut b = tar::Builder::new(&mut file);
        b.mode(tar::HeaderMode::Deterministic);
        b.follow_symlinks(false);
        add_dir(&mut b, dir, Path::new(""))?;
        b.finish().context("writing the source tar")?;
    }
    let sha = pinfold_agent::artifacts::hash_file(&mut file)?;
    client
        .upload_source(&sha, &file)
        .context("uploading the source")?;
    Ok(sha)
}

fn add_dir(b: &mut tar::Builder<&mut File>, root: &Path, rel: &Path) -> anyhow::Result<()> {
    let here = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&here)
        .with_context(|| format!("reading {}", here.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = rel.join(e.file_name());
        let full = root.join(&path);
        let kind = e.file_type()?;
        b.append_path_with_name(&full, &path)
            .with_context(|| format!("adding {}", full.display()))?;
        if kind.is_dir() {
            add_dir(b, root, &path)?;
        }
    }
    Ok(())
}
