//! The provenance of a job's run, for every runner that records one: the
//! agent (uploaded to the coordinator), `pinfold run` and `pinfold verify`
//! (written beside the artifacts). One builder of the in-toto/SLSA
//! statement, and the runner key that signs it.

use std::path::{Path, PathBuf};

use pinfold_api::provenance::{self, JobRecord, ProvenanceError, SigningKey, Statement};

use crate::runner::Report;

/// Who made a run and when: what differs between the runners.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// The runner's identity (a URI).
    pub builder_id: &'a str,
    /// This run of the job.
    pub invocation_id: &'a str,
    /// Start, ms since the Unix epoch.
    pub started_ms: u64,
    /// Finish, ms since the Unix epoch.
    pub finished_ms: u64,
}

/// The statement of a finished run of the job `job_yaml` on `image` (a
/// pinned `name@sha256:…` reference), with the source tar of digest
/// `source_sha256` when it had one. Its subjects are the artifacts the
/// report lists; its internal parameters the run's final state, then
/// `internal` (the runner's settings worth recording).
pub fn statement(
    job_yaml: &str,
    image: &str,
    source_sha256: Option<&str>,
    report: &Report,
    by: &Invocation<'_>,
    internal: serde_json::Map<String, serde_json::Value>,
) -> Statement {
    let artifacts: Vec<(String, String)> = report
        .artifacts
        .iter()
        .map(|a| (a.name.clone(), a.sha256.clone()))
        .collect();
    let mut params = serde_json::Map::new();
    params.insert("state".into(), report.state.as_str().into());
    params.extend(internal);
    provenance::statement_for(&JobRecord {
        job_yaml,
        image: (image, image.rsplit_once("@sha256:").map_or("", |(_, d)| d)),
        source: source_sha256.map(|d| ("source.tar", "sha256", d)),
        artifacts: &artifacts,
        builder_id: by.builder_id,
        invocation_id: by.invocation_id,
        started_ms: by.started_ms,
        finished_ms: by.finished_ms,
        internal: params.into(),
    })
}

/// The identity a local run (`pinfold run`, `pinfold verify`) signs as.
pub fn local_builder_id() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("pinfold://{host}/run/uid/{}", nix::unistd::getuid())
}

/// The runner's signing key: `$PINFOLD_HOME/keys/runner.key` (PKCS#8 PEM,
/// 0600, made on first use, `runner.key.pub` beside it). The agent and the
/// local runs sign with the same identity.
pub fn key_path(home: &Path) -> PathBuf {
    home.join("keys/runner.key")
}

/// Reads the runner key under `home`, making it on first use.
pub fn runner_key(home: &Path) -> Result<SigningKey, ProvenanceError> {
    load_or_create_key(&key_path(home), || {
        let mut s = [0u8; 32];
        getrandom::fill(&mut s).expect("the kernel's random source failed");
        s
    })
}

/// Signs `statement` with the runner key under `home` and writes
/// `out/provenance.intoto.json`; returns that file and the public key's.
pub fn write_local(
    home: &Path,
    out: &Path,
    statement: &Statement,
) -> Result<(PathBuf, PathBuf), String> {
    let key = runner_key(home).map_err(|e| e.to_string())?;
    let envelope = provenance::sign(statement, &key).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let file = out.join("provenance.intoto.json");
    let json = serde_json::to_vec_pretty(&envelope).map_err(|e| e.to_string())?;
    std::fs::write(&file, json).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut pub_key = key_path(home).into_os_string();
    pub_key.push(".pub");
    Ok((file, pub_key.into()))
}

/// Reads the signing key at `path`, creating it (mode 0600, with `path.pub`
/// beside it) when missing. The agent, `pinfold run`, `pinfold verify` and
/// `pinfold attest keygen` all need the same key handling; `pinfold-api`
/// stays free of file I/O.
pub fn load_or_create_key(
    path: &std::path::Path,
    seed: impl FnOnce() -> [u8; 32],
) -> Result<SigningKey, ProvenanceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(pem) => return provenance::parse_private_key(&pem),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(ProvenanceError::Key(format!("{}: {e}", path.display())));
        }
        Err(_) => {}
    }
    let io = |e: std::io::Error| ProvenanceError::Key(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let key = provenance::signing_key_from_seed(seed());
    // Unique per call, not just per process: `pinfold verify` signs its
    // runs from several threads at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(provenance::private_key_pem(&key)?.as_bytes())
        .map_err(io)?;
    drop(f);
    // link(2) fails when the key already exists: of two racing runs, the
    // first wins and both use its key.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            let mut pub_path = path.as_os_str().to_owned();
            pub_path.push(".pub");
            std::fs::write(&pub_path, provenance::public_key_pem(&key.verifying_key())?)
                .map_err(io)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            provenance::parse_private_key(&std::fs::read_to_string(path).map_err(io)?)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racing_threads_make_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/runner.key");
        let keys: Vec<SigningKey> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || load_or_create_key(path, || [i; 32]).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for k in &keys {
            assert_eq!(
                k.to_bytes(),
                keys[0].to_bytes(),
                "every thread uses the winner's key"
            );
        }
        assert_eq!(
            load_or_create_key(&path, || [99; 32]).unwrap().to_bytes(),
            keys[0].to_bytes()
        );
    }
}
