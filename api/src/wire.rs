//! JSON bodies of the coordinator protocol, endpoint by endpoint in
//! `docs/protocol.md`. Times are milliseconds since the Unix epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::JobSpec;
pub use crate::verdict::{ArtifactDigests, Verdict};

/// Every error response: `{"error": "..."}`, plus the log offset the server
/// expects when a log append was refused for a gap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
    /// For a refused log append: the offset the next chunk must start at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_offset: Option<u64>,
}

/// `POST /api/v1/runners` (registration token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// A human name for the runner (host name by default on the agent).
    pub name: String,
    /// Labels the runner offers; a job runs only on a runner with all its labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The runner's Ed25519 public key (SPKI PEM): the coordinator accepts
    /// only provenance signed by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Answer to a registration: the runner token is shown only here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The runner's id.
    pub runner_id: u64,
    /// The runner token (keep it secret; the server stores only its hash).
    pub token: String,
}

/// A runner as listed to the admin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerInfo {
    /// The runner's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Registration time.
    pub created_at: u64,
    /// Last lease request or heartbeat.
    pub last_seen: Option<u64>,
    /// Revoked runners are refused everywhere.
    pub revoked: bool,
}

/// `POST /api/v1/runners/{id}/labels` (admin token): the labels the admin
/// trusts a runner with. Only these unlock server secrets; the labels a
/// runner declares itself route jobs and unlock nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRequest {
    /// Labels to add.
    #[serde(default)]
    pub add: Vec<String>,
    /// Labels to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// The answer to a [`TrustRequest`]: the runner's trusted labels after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrustedLabels {
    /// The runner.
    pub runner_id: u64,
    /// Its admin-assigned labels, sorted.
    pub trusted_labels: Vec<String>,
}

/// `POST /api/v1/jobs` (admin token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The job file, as YAML text (validated by the server).
    pub spec: String,
    /// Labels a runner must have to take the job.
    #[serde(default)]
    pub labels: Vec<String>,
    /// sha256 of a source tar uploaded before with `PUT /api/v1/sources/{sha256}`.
    #[serde(default)]
    pub source_sha256: Option<String>,
}

/// Answer to a submit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// The new job's id.
    pub job_id: u64,
}

/// `POST /api/v1/runner/lease` (runner token): wait up to `wait_secs` for a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// How long to hold the request open when no job matches (capped by the server).
    #[serde(default)]
    pub wait_secs: u64,
}

/// A job leased to a runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    /// The job.
    pub job_id: u64,
    /// This attempt's id; every write of the job is fenced by it.
    pub attempt_id: u64,
    /// 1 for the first attempt, counting up on each requeue.
    pub attempt: u32,
    /// Renew with a heartbeat well before this many seconds pass.
    pub lease_ttl_secs: u64,
    /// Bearer token for this job and attempt only.
    pub job_token: String,
    /// The validated job.
    pub spec: JobSpec,
    /// sha256 of the source tar, fetched with `GET /api/v1/jobs/{id}/source`.
    pub source_sha256: Option<String>,
    /// Values of the job's secrets that the server holds.
    pub secrets: BTreeMap<String, String>,
    /// Bytes of log the server already has for this job (resume from here).
    pub log_offset: u64,
    /// The job file as submitted (recorded in the provenance).
    #[serde(default)]
    pub spec_yaml: String,
}

/// Answer to `POST /api/v1/jobs/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The lease now runs this many seconds from the heartbeat.
    pub lease_ttl_secs: u64,
    /// The job was cancelled: SIGTERM it, wait a grace period, SIGKILL, then finish as cancelled.
    pub cancel: bool,
}

/// Answer to a log append.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogAppendResponse {
    /// The offset the next chunk starts at (bytes received so far).
    pub offset: u64,
    /// The log reached the server's cap; further bytes are dropped.
    pub truncated: bool,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a runner.
    Queued,
    /// Leased to a runner.
    Running,
    /// Every step exited 0.
    Succeeded,
    /// A step failed.
    Failed,
    /// A timeout was hit.
    TimedOut,
    /// Cancelled by a user.
    Cancelled,
    /// pinfold itself failed (image, sandbox, runner lost...).
    Error,
}

impl JobState {
    /// True once the job will not change again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    /// The exit status the CLI reports for a finished job (`pinfold run`'s
    /// convention: 0, 1 a step failed, 124 timeout, 125 pinfold failed, 130 cancelled).
    pub fn exit_code(self) -> i32 {
        match self {
            JobState::Succeeded => 0,
            JobState::Failed => 1,
            JobState::TimedOut => 124,
            JobState::Cancelled => 130,
            JobState::Error | JobState::Queued | JobState::Running => 125,
        }
    }

    /// The snake_case name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
            JobState::Cancelled => "cancelled",
            JobState::Error => "error",
        }
    }

    /// Parses [`JobState::as_str`].
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "timed_out" => JobState::TimedOut,
            "cancelled" => JobState::Cancelled,
            "error" => JobState::Error,
            _ => return None,
        })
    }
}

/// One step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepResult {
    /// The step's name.
    pub name: String,
    /// Its exit code (None when it never ran or was killed by a signal).
    pub exit_code: Option<i32>,
    /// Start time.
    pub started_at: Option<u64>,
    /// End time.
    pub finished_at: Option<u64>,
}

/// `POST /api/v1/jobs/{id}/finish` (job token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    /// The outcome: succeeded, failed, timed_out, cancelled or error.
    pub state: JobState,
    /// Why, for failures ("step build exited 2", "image pull failed: ...").
    #[serde(default)]
    pub reason: Option<String>,
    /// Per-step results in order.
    #[serde(default)]
    pub steps: Vec<StepResult>,
}

/// A job as the server reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job's id.
    pub id: u64,
    /// Where it is.
    pub state: JobState,
    /// Why it ended this way, when known.
    pub reason: Option<String>,
    /// Labels a runner must have.
    pub labels: Vec<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// The runner holding or that last held the job.
    pub runner_id: Option<u64>,
    /// A cancel was requested and not yet acknowledged by the runner.
    pub cancel_requested: bool,
    /// Submit time.
    pub created_at: u64,
    /// First lease time.
    pub started_at: Option<u64>,
    /// Finish time.
    pub finished_at: Option<u64>,
    /// Per-step results, once finished.
    pub steps: Vec<StepResult>,
    /// Bytes of (masked) log stored.
    pub log_bytes: u64,
    /// The image the job runs in.
    pub image: String,
    /// sha256 of the source tar, if any.
    pub source_sha256: Option<String>,
    /// For a `verify: N` job: its runs and, once they ended, the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyStatus>,
    /// For one run of a `verify: N` job: that job's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_of: Option<u64>,
}

/// The runs of a `verify: N` job and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyStatus {
    /// N: how many different runners run it.
    pub runs: u32,
    /// One entry per run, in order.
    pub run_jobs: Vec<VerifyRun>,
    /// While runs wait: why (e.g. too few distinct runners online).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Once every run succeeded: the comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// One run of a `verify: N` job: an ordinary job of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRun {
    /// 1-based.
    pub run: u32,
    /// The run's job id (its log, artifacts and provenance are there).
    pub job_id: u64,
    /// The run's state.
    pub state: JobState,
    /// The runner that holds or ran it.
    pub runner_id: Option<u64>,
}

/// `PUT /api/v1/runner/key` (runner token): a runner registered without a
/// key (an older agent) sets one, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerKeyRequest {
    /// SPKI PEM of the runner's Ed25519 key.
    pub public_key: String,
}

/// `GET /api/v1/runners/{id}/key`: a runner's registered public key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerKey {
    /// The runner.
    pub runner_id: u64,
    /// SPKI PEM.
    pub public_key: String,
    /// sha256 of the SPKI DER, hex (the DSSE `keyid`).
    pub keyid: String,
}

/// Answer to `PUT /api/v1/jobs/{id}/provenance`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvenanceStored {
    /// The runner whose key verified it.
    pub runner_id: u64,
    /// The key's id.
    pub keyid: String,
    /// How many artifacts it attests.
    pub subjects: usize,
}

/// `PUT /api/v1/runner/facts`: what a runner's host can enforce, as its
/// agent found at start (shown on the dashboard's runners page).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerFacts {
    /// The agent's pinfold version.
    pub version: String,
    /// The host's kernel release.
    pub kernel: String,
    /// How step limits are enforced: `cgroup v2` or `fallback: WHY`.
    pub limits: String,
    /// The kernel's Landlock ABI (0: none).
    pub landlock_abi: u32,
    /// The policies the operator lets jobs choose (the first is the default).
    pub policies: Vec<String>,
}

/// `DELETE /api/v1/viewer-tokens`: what the revocation ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewerTokensRevoked {
    /// Viewer tokens that no longer sign in.
    pub revoked: u64,
    /// Viewer sessions signed out now.
    pub sessions: u64,
}

/// `POST /api/v1/viewer-tokens`: a new read-only token for the web pages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewerToken {
    /// The token (`pfv_...`), shown once.
    pub token: String,
}

/// `GET /api/v1/jobs` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobInfo>,
}

/// An uploaded artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// Its path relative to /workspace.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// sha256 of the content, hex.
    pub sha256: String,
}

/// `GET /api/v1/jobs/{id}/artifacts` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactList {
    /// Sorted by name.
    pub artifacts: Vec<ArtifactInfo>,
}

/// Why an artifact name is refused (by the agent, the coordinator and
/// `pinfold artifacts --out` alike: see [`check_artifact_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactNameError {
    /// Empty, absolute, over 1024 bytes, with an empty part or a control character.
    #[error(
        "artifact name {0:?} is not a plain relative path (no leading '/', empty parts or control characters, at most 1024 bytes)"
    )]
    NotPlain(String),
    /// A part starts with `.`: `..` climbs out, and hidden names such as
    /// `.git/hooks/pre-commit` or `.env` act on whoever unpacks them.
    #[error(
        "artifact name {0:?} has a part starting with '.'; hidden names (.git, .env, ..) are refused: rename it in the job"
    )]
    Hidden(String),
}

/// Checks an artifact name: a relative path of `/`-separated parts, none
/// empty, none starting with `.`, no control characters, at most 1024 bytes.
pub fn check_artifact_name(name: &str) -> Result<(), ArtifactNameError> {
    if name.is_empty()
        || name.len() > 1024
        || name.starts_with('/')
        || name.split('/').any(str::is_empty)
        || name.chars().any(char::is_control)
    {
        return Err(ArtifactNameError::NotPlain(name.to_string()));
    }
    if name.split('/').any(|c| c.starts_with('.')) {
        return Err(ArtifactNameError::Hidden(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod artifact_name_tests {
    use super::*;

    #[test]
    fn hidden_and_climbing_names_are_refused() {
        for bad in [
            ".git/hooks/pre-commit",
            "a/../b",
            ".env",
            "out/.x",
            "./a",
            "..",
        ] {
            assert_eq!(
                check_artifact_name(bad),
                Err(ArtifactNameError::Hidden(bad.into())),
                "{bad}"
            );
        }
        for bad in ["", "/etc/passwd", "a//b", "a/", "a\nb", "a\u{9b}b"] {
            assert_eq!(
                check_artifact_name(bad),
                Err(ArtifactNameError::NotPlain(bad.into())),
                "{bad:?}"
            );
        }
        for good in ["out/app", "dist/app-1.0.tar.gz", "a.b/c.d", "x"] {
            assert_eq!(check_artifact_name(good), Ok(()), "{good}");
        }
    }
}
