//! Checking a signed provenance file against the artifacts beside it: what
//! `pinfold attest verify` and `pinfold artifacts --verify` both print.

use std::path::{Path, PathBuf};

use pinfold_api::provenance::{self, Envelope};

/// Checks the envelope in `file` with `public` and re-hashes the artifacts
/// it names under `artifacts` (default: the file's directory).
pub fn verify_with(
    file: &Path,
    public: &provenance::VerifyingKey,
    artifacts: Option<PathBuf>,
) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let envelope: Envelope = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a DSSE envelope: {e}", file.display()))?;
    let statement = provenance::verify(&envelope, public).map_err(|e| e.to_string())?;
    let dir = artifacts.unwrap_or_else(|| file.parent().unwrap_or(Path::new(".")).to_owned());
    let mut checked = Vec::new();
    for s in &statement.subject {
        let Some(name) = &s.name else { continue };
        let Some(want) = s.digest.get("sha256") else {
            return Err(format!("subject {name} has no sha256 digest"));
        };
        if Path::new(name).is_absolute() || name.split('/').any(|c| c == "..") {
            return Err(format!(
                "subject name {name:?} leaves the artifact directory"
            ));
        }
        let got = std::fs::File::open(dir.join(name))
            .and_then(|mut f| pinfold_agent::artifacts::hash(&mut f))
            .map(|(_, sha)| sha)
            .map_err(|e| format!("artifact {name}: {e} (give --artifacts DIR)"))?;
        if &got != want {
            return Err(format!(
                "artifact {name}: sha256 {got} does not match the attested {want}"
            ));
        }
        checked.push(name.clone());
    }
    Ok(serde_json::json!({
        "verified": true,
        "keyid": provenance::key_id(public),
        "builder": statement.predicate.run_details.builder.id,
        "invocation": statement.predicate.run_details.metadata.invocation_id,
        "artifacts": checked,
        "dependencies": statement.predicate.build_definition.resolved_dependencies,
    }))
}
