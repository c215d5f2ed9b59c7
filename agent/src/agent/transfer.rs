//! What a job exchanges with the coordinator besides its log and
//! heartbeat: the source tar it downloads (checked against the lease's
//! sha256), the artifacts it uploads, and its provenance, built with the
//! one builder in [`crate::provenance`], signed with the runner key and
//! uploaded.

use std::io::Seek;
use std::path::Path;
use std::time::Duration;

use pinfold_api::provenance::{self, SigningKey};
use pinfold_api::wire::Lease;
use pinfold_client::Client;

use super::retry::{Cutoff, retry};
use crate::artifacts::Artifact;
use crate::runner::{Report, RunError, Workspace};

/// Fills the job's empty workspace with the lease's source: downloaded
/// into `dir/source.tar` (retried through transport errors for `ttl`, or
/// until `cutoff`), checked against the sha256 the lease pins, unpacked.
pub(super) fn fetch_source(
    jc: &Client,
    lease: &Lease,
    dir: &Path,
    ttl: Duration,
    cutoff: &Cutoff,
    ws: &Workspace<'_>,
) -> Result<(), RunError> {
    if let Some(src) = &lease.spec.source {
        return Err(RunError::Source(format!(
            "git sources ({}) are not supported by this agent yet",
            src.git
        )));
    }
    let Some(want) = &lease.source_sha256 else {
        return Ok(());
    };
    let tar_path = dir.join("source.tar");
    let mut f = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&tar_path)
        .map_err(|e| RunError::Source(e.to_string()))?;
    retry(ttl, cutoff, || {
        f.rewind()?;
        f.set_len(0)?;
        jc.download_source(lease.job_id, &mut f)
    })
    .map_err(|e| RunError::Source(format!("download: {e}")))?;
    let got = crate::artifacts::hash_file(&mut f).map_err(|e| RunError::Source(e.to_string()))?;
    if &got != want {
        return Err(RunError::Source(format!(
            "sha256 mismatch: the lease pins {want}, the download is {got}"
        )));
    }
    ws.write(|ws| crate::source::unpack(std::io::BufReader::new(f), ws))
        .map_err(|e| RunError::Source(e.to_string()))?;
    let _ = std::fs::remove_file(&tar_path);
    Ok(())
}

/// Uploads one artifact of job `id` with its sha256, resent from its
/// start through transport errors for `patience` (or until `cutoff`).
pub(super) fn upload_artifact(
    jc: &Client,
    id: u64,
    patience: Duration,
    cutoff: &Cutoff,
    a: &mut Artifact,
) -> Result<(), String> {
    retry(patience, cutoff, || {
        a.file.rewind()?;
        jc.upload_artifact(id, &a.name, &a.sha256, &mut a.file)
    })
    .map(drop)
    .map_err(|e| format!("upload failed: {e}"))
}

/// Who builds and signs a job's provenance: this runner at its server.
pub(super) struct Builder<'a> {
    /// The coordinator's URL.
    pub server: &'a str,
    /// This runner's id there.
    pub runner_id: u64,
    /// This runner's name.
    pub runner: &'a str,
    /// The policy a job that names none runs under.
    pub default_policy: &'a str,
    /// The runner key.
    pub key: &'a SigningKey,
}

/// Builds the job's in-toto/SLSA statement (subjects: the uploaded
/// artifacts), signs it with the runner key and uploads it (retried for
/// `ttl`, or until `cutoff`); returns the key id.
pub(super) fn attest(
    b: &Builder<'_>,
    jc: &Client,
    lease: &Lease,
    report: &Report,
    started_ms: u64,
    ttl: Duration,
    cutoff: &Cutoff,
) -> Result<String, String> {
    let server = b.server.trim_end_matches('/');
    let runner_id = b.runner_id;
    let mut internal = serde_json::Map::new();
    internal.insert("runner".into(), b.runner.into());
    internal.insert(
        "policy".into(),
        lease
            .spec
            .policy
            .as_ref()
            .map_or(b.default_policy, |p| p.as_str())
            .into(),
    );
    let statement = crate::provenance::statement(
        &lease.spec_yaml,
        lease.spec.image.as_str(),
        lease.source_sha256.as_deref(),
        report,
        &crate::provenance::Invocation {
            builder_id: &format!("{server}/api/v1/runners/{runner_id}"),
            invocation_id: &format!(
                "{server}/api/v1/jobs/{}#attempt-{}",
                lease.job_id, lease.attempt
            ),
            started_ms,
            finished_ms: pinfold_api::now_ms(),
        },
        internal,
    );
    let envelope = provenance::sign(&statement, b.key).map_err(|e| e.to_string())?;
    let body = serde_json::to_vec_pretty(&envelope).map_err(|e| e.to_string())?;
    let stored = retry(ttl, cutoff, || jc.upload_provenance(lease.job_id, &body))
        .map_err(|e| e.to_string())?;
    Ok(stored.keyid)
}
