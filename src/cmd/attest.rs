//! `pinfold attest`: signing keys and offline verification of provenance.

use std::path::{Path, PathBuf};

use pinfold_api::provenance;

/// Provenance: make signing keys, verify signed statements offline.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an Ed25519 signing key (PEM, mode 0600) and its public half (KEY.pub).
    Keygen {
        /// Where to write the private key; the public key goes to KEY.pub.
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Verify a DSSE-signed in-toto/SLSA statement with a public key and
    /// re-hash the artifacts it names. Exit 0 when everything matches, 1 when not.
    Verify {
        /// The provenance file (a DSSE envelope, JSON).
        file: PathBuf,
        /// The signer's public key (PEM).
        #[arg(long, value_name = "PUB")]
        key: PathBuf,
        /// Directory the artifact names are relative to [default: the file's directory].
        #[arg(long, value_name = "DIR")]
        artifacts: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).expect("the kernel's random source failed");
    s
}

fn verify(
    file: &Path,
    key: &Path,
    artifacts: Option<PathBuf>,
) -> Result<serde_json::Value, String> {
    let pem = std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let public =
        provenance::parse_public_key(&pem).map_err(|e| format!("{}: {e}", key.display()))?;
    crate::attestation::verify_with(file, &public, artifacts)
}

/// Runs the subcommand; returns the exit status.
pub fn run(c: Command) -> i32 {
    match c {
        Command::Keygen { out } => {
            if out.exists() {
                eprintln!(
                    "pinfold attest keygen: {} exists; choose another path",
                    out.display()
                );
                return 1;
            }
            match pinfold_agent::provenance::load_or_create_key(&out, seed) {
                Ok(_) => {
                    println!("wrote {} and {}.pub", out.display(), out.display());
                    0
                }
                Err(e) => {
                    eprintln!("pinfold attest keygen: {e}");
                    1
                }
            }
        }
        Command::Verify {
            file,
            key,
            artifacts,
            json,
        } => match verify(&file, &key, artifacts) {
            Ok(v) => {
                if json {
                    println!("{v:#}");
                } else {
                    println!(
                        "ok: signature by {} verifies; {} artifacts match; built by {}",
                        &v["keyid"].as_str().unwrap_or_default()[..16],
                        v["artifacts"].as_array().map_or(0, Vec::len),
                        v["builder"].as_str().unwrap_or_default()
                    );
                }
                0
            }
            Err(e) => {
                eprintln!("pinfold attest verify: {e}");
                1
            }
        },
    }
}
