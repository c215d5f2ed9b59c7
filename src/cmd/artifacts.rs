//! `pinfold artifacts`: download a job's artifacts.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::remote::{JobAt, exit_status};

/// Download a job's artifacts into a directory, verifying each sha256.
///
/// The job's signed provenance (when its runner uploaded one) is written
/// beside them as DIR/provenance.intoto.json. Check it offline with
/// `pinfold attest verify DIR/provenance.intoto.json --key PUB`, PUB being
/// the runner's key saved with --key-out, or at once with --verify.
///
/// Exit status: 0 downloaded (and verified), 1 a download or verification failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write them into (created; names keep their sub-paths).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// List name, size and digest as JSON instead of human lines.
    #[arg(long)]
    json: bool,
    /// Check the provenance against the signing runner's key registered at
    /// the coordinator and re-hash the artifacts; fail when there is none.
    #[arg(long)]
    verify: bool,
    /// Write the signing runner's registered public key (PEM) to FILE.
    #[arg(long, value_name = "FILE")]
    key_out: Option<PathBuf>,
    #[command(flatten)]
    at: JobAt,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    exit_status("artifacts", download(&a))
}

/// Writes what it is given while hashing it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn download(a: &Args) -> anyhow::Result<()> {
    let client = a.at.remote.client()?;
    let list = client.artifacts(a.at.job)?;
    // Every name is checked before anything is written: a hostile server
    // (or runner) must not plant `.git/hooks/...` or climb out of --out.
    for art in &list.artifacts {
        pinfold_api::wire::check_artifact_name(&art.name)
            .with_context(|| format!("job {}: nothing written", a.at.job))?;
    }
    for art in &list.artifacts {
        let rel = Path::new(&art.name);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            bail!(
                "refusing artifact name {:?}: not a plain relative path",
                art.name
            );
        }
        if art.name == PROVENANCE_FILE {
            bail!(
                "job {} has an artifact named {PROVENANCE_FILE}, which would be overwritten by its provenance; rename it in the job",
                a.at.job
            );
        }
        let dest = a.out.join(rel);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let partial = dest.with_extension("pinfold-partial");
        let file =
            File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mut w = Hashing {
            inner: BufWriter::new(file),
            hash: Sha256::new(),
        };
        client
            .download_artifact(a.at.job, &art.name, &mut w)
            .with_context(|| format!("downloading {}", art.name))?;
        w.flush()?;
        let got = hex::encode(w.hash.finalize());
        if got != art.sha256 {
            let _ = std::fs::remove_file(&partial);
            bail!(
                "{}: sha256 mismatch: the server lists {}, the download hashes to {got}",
                art.name,
                art.sha256
            );
        }
        std::fs::rename(&partial, &dest)?;
        if !a.json {
            println!("{}  {}  {} bytes", art.sha256, art.name, art.size);
        }
    }
    let provenance = provenance(a, &client)?;
    if a.json {
        let mut v = serde_json::to_value(&list)?;
        v["provenance"] = provenance.unwrap_or(serde_json::Value::Null);
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

/// Writes the job's provenance beside the artifacts; with --key-out or
/// --verify fetches the signing runner's key. Returns a JSON summary.
fn provenance(
    a: &Args,
    client: &pinfold_client::Client,
) -> anyhow::Result<Option<serde_json::Value>> {
    let Some((runner, envelope)) = client.provenance(a.at.job)? else {
        if a.verify || a.key_out.is_some() {
            bail!(
                "job {} has no provenance to verify (no artifacts, not finished, or its runner has no key)",
                a.at.job
            );
        }
        if !a.json {
            eprintln!("pinfold artifacts: job {} has no provenance", a.at.job);
        }
        return Ok(None);
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let file = a.out.join(PROVENANCE_FILE);
    std::fs::write(&file, &envelope).with_context(|| format!("writing {}", file.display()))?;
    let mut summary = serde_json::json!({ "file": file, "runner_id": runner });
    if !a.verify && a.key_out.is_none() {
        if !a.json {
            println!("provenance  {}  signed by runner {runner}", file.display());
        }
        return Ok(Some(summary));
    }
    let key = client
        .runner_key(runner)
        .with_context(|| format!("fetching runner {runner}'s public key"))?;
    if let Some(out) = &a.key_out {
        std::fs::write(out, &key.public_key)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    summary["keyid"] = key.keyid.clone().into();
    if a.verify {
        let public = pinfold_api::provenance::parse_public_key(&key.public_key)?;
        let v = crate::attestation::verify_with(&file, &public, Some(a.out.clone()))
            .map_err(|e| anyhow::anyhow!("provenance of job {}: {e}", a.at.job))?;
        summary["verified"] = v;
        if !a.json {
            println!(
                "provenance  {}  verified: signed by runner {runner} (key {}), artifacts match",
                file.display(),
                &key.keyid[..16]
            );
        }
    } else if !a.json {
        println!("provenance  {}  signed by runner {runner}", file.display());
    }
    Ok(Some(summary))
}

/// The provenance's file name beside the artifacts (as `pinfold run --out` writes it).
const PROVENANCE_FILE: &str = "provenance.intoto.json";
