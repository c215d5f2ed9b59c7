//! `pinfold artifacts`: download a job's artifacts.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::remote::{Remote, fail};

/// Download a job's artifacts into a directory, verifying each sha256.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job id.
    job: u64,
    /// Directory to write them into (created; names keep their sub-paths).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// List name, size and digest as JSON instead of human lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    match download(&a) {
        Ok(()) => 0,
        Err(e) => fail("artifacts", &e),
    }
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
    let client = a.remote.client()?;
    let list = client.artifacts(a.job)?;
    for art in &list.artifacts {
        let rel = Path::new(&art.name);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            bail!(
                "refusing artifact name {:?}: not a plain relative path",
                art.name
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
            .download_artifact(a.job, &art.name, &mut w)
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
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    }
    Ok(())
}
