//! GitLab Runner's Custom executor, driven by `pinfold gitlab-driver`.
//!
//! GitLab Runner calls the driver once per stage, each a new process
//! (`config_exec`, `prepare_exec`, `run_exec SCRIPT STAGE` once per script
//! stage, `cleanup_exec`), and reads only their exit codes and output. What
//! a job keeps between stages lives in a job directory:
//!
//! * `config` makes a random job id and hands it back in `job_env`, which
//!   the runner sets (as `PINFOLD_GITLAB_JOB`, without the `CUSTOM_ENV_`
//!   prefix) in the environment of every later stage of this job and only
//!   this job. A job's own variables all carry that prefix, so a job cannot
//!   name another job's directory, as it could with `CI_JOB_ID` (a job's
//!   variables take precedence over predefined ones).
//! * `prepare` resolves the job's image (digest-pinned, or a tag resolved
//!   once where the operator allows tags), creates `HOME/gitlab/ID/` (0700)
//!   and starts a *keeper* there, a detached `pinfold keep-job-fs`
//!   that holds the job file system ([`pinfold_sandbox::container::jobfs`]):
//!   the writable layer and `/builds`, policy-sized tmpfs that persist
//!   across stages. [`State`] records what the stages need.
//! * `run` runs the stage's script as a step of the job container, which
//!   the keeper starts on that job file system under the operator's policy
//!   for the stage's kind ([`stage_kind`]) and keeps while the stages are
//!   of that kind: the transfer stages (sources, cache, artifacts) may be
//!   given a policy with network, the script stages never get more than
//!   the script policy.
//! * `cleanup` stops the keeper and any stage still running and removes the
//!   directory, and removes directories of jobs whose keeper is gone.
//!
//! This module is the pure part (stage kinds, the config answer, the state
//! file, how a stage's end maps to GitLab's exit codes); the binary does
//! the processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The job variable the driver's `config` answer sets for later stages.
pub const JOB_VAR: &str = "PINFOLD_GITLAB_JOB";
/// `builds_dir`: the job file system's workspace is mounted here.
pub const BUILDS_DIR: &str = "/builds";
/// `cache_dir`: inside the job's writable layer, so it lives as long as the
/// job (see `ci-templates/gitlab/README.md`, "Cache").
pub const CACHE_DIR: &str = "/cache";
/// Where the directory of the stage's script is bound (read-only) in the
/// job container.
pub const SCRIPT_DIR: &str = "/.pinfold-gitlab";
/// The stage's script, in the job container.
pub const SCRIPT: &str = "/.pinfold-gitlab/script";

/// Errors of the GitLab driver's bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum GitlabError {
    /// `PINFOLD_GITLAB_JOB` is missing or malformed.
    #[error(
        "{JOB_VAR} is {0}: run the driver from gitlab-runner's [runners.custom] (config_exec must be `pinfold gitlab-driver config`, whose job_env sets it)"
    )]
    JobId(&'static str),
    /// The state file could not be read or written.
    #[error("{0} (did prepare_exec run for this job?)")]
    State(#[from] crate::hosted::StateError),
}

/// What kind of stage a stage name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// Fetches or ships data for the job (sources, cache, artifacts):
    /// runs under the transfer policy, with the `gitlab-runner` binary that
    /// these stages' scripts call.
    Transfer,
    /// Runs the job's own commands (and anything unknown): the script
    /// policy.
    Script,
}

/// The stage names of GitLab Runner's `common.BuildStage` that fetch or
/// ship data. Every other name (`prepare_script`, `build_script`, which is
/// how the Custom executor passes `step_script`, other `step_*`,
/// `after_script`, `cleanup_file_variables`, and names a later runner
/// adds) is a [`StageKind::Script`].
pub const TRANSFER_STAGES: &[&str] = &[
    "get_sources",
    "clear_worktree",
    "restore_cache",
    "download_artifacts",
    "archive_cache",
    "archive_cache_on_failure",
    "upload_artifacts_on_success",
    "upload_artifacts_on_failure",
];

/// Where the `gitlab-runner` binary is bound in transfer stages: on the
/// `PATH` of every common image, as the stages' scripts call it by name.
pub const RUNNER_BINARY: &str = "/usr/local/bin/gitlab-runner";

/// The kind of stage `name` is.
pub fn stage_kind(name: &str) -> StageKind {
    if TRANSFER_STAGES.contains(&name) {
        StageKind::Transfer
    } else {
        StageKind::Script
    }
}

/// The `config_exec` answer (GitLab Runner's `executors/custom/api.ConfigExecOutput`).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigOutput {
    /// Where the job's builds are, in the container.
    pub builds_dir: String,
    /// Where the local cache is, in the container.
    pub cache_dir: String,
    /// Whether several jobs share `builds_dir` (never: each job has its own).
    pub builds_dir_is_shared: bool,
    /// Shown in the job log as where it runs.
    pub hostname: String,
    /// Shown in the job log.
    pub driver: Driver,
    /// Set in the environment of every later stage of this job.
    pub job_env: BTreeMap<String, String>,
}

/// The driver's name and version in [`ConfigOutput`].
#[derive(Debug, Clone, Serialize)]
pub struct Driver {
    /// `pinfold`.
    pub name: String,
    /// The binary's version.
    pub version: String,
}

impl ConfigOutput {
    /// The answer for a new job with id `job` on host `hostname`.
    pub fn new(job: &str, hostname: &str, version: &str) -> ConfigOutput {
        ConfigOutput {
            builds_dir: BUILDS_DIR.into(),
            cache_dir: CACHE_DIR.into(),
            builds_dir_is_shared: false,
            hostname: hostname.into(),
            driver: Driver {
                name: "pinfold".into(),
                version: version.into(),
            },
            job_env: BTreeMap::from([(JOB_VAR.to_string(), job.to_string())]),
        }
    }
}

/// The job directory under `home` for the id in `PINFOLD_GITLAB_JOB`
/// (`None`: unset), checked to be one [`crate::hosted::new_id`] makes.
pub fn job_dir(home: &Path, id: Option<&str>) -> Result<PathBuf, GitlabError> {
    let id = id.ok_or(GitlabError::JobId("not set"))?;
    if !crate::hosted::is_id(id) {
        return Err(GitlabError::JobId("not a job id the driver made"));
    }
    Ok(jobs_dir(home).join(id))
}

/// Where the job directories are.
pub fn jobs_dir(home: &Path) -> PathBuf {
    home.join("gitlab")
}

/// What `prepare` records for the later stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The image, pinned (`REPO@sha256:…`, or `oci:DIR@sha256:…`).
    pub image: String,
    /// The policy of the script stages (a name or path from the operator).
    pub policy: String,
    /// The policy of the transfer stages.
    pub transfer_policy: String,
    /// The `gitlab-runner` binary bound into the stages that call it.
    pub runner_binary: Option<PathBuf>,
}

impl State {
    /// Writes the state into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), GitlabError> {
        Ok(crate::hosted::save_state(dir, self)?)
    }

    /// Reads the state from `dir`.
    pub fn load(dir: &Path) -> Result<State, GitlabError> {
        Ok(crate::hosted::load_state(dir)?)
    }

    /// The policy for a stage of `kind`.
    pub fn policy_for(&self, kind: StageKind) -> &str {
        match kind {
            StageKind::Transfer => &self.transfer_policy,
            StageKind::Script => &self.policy,
        }
    }
}

/// The command line the stage's `pinfold exec` runs with `/bin/sh -e -c`:
/// the script with bash where the image has it, else with sh, as GitLab's
/// Docker executor does for its bash shell (its scripts are written to run
/// under either).
pub fn shell_command() -> String {
    format!(
        "for b in /usr/local/bin/bash /usr/bin/bash /bin/bash; do if [ -x \"$b\" ]; then exec \"$b\" {SCRIPT}; fi; done; exec /bin/sh {SCRIPT}"
    )
}

/// How a stage ended, for GitLab Runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageEnd {
    /// The script succeeded: exit 0.
    Success,
    /// The job's script failed, ran out of a limit or time, or its image
    /// has no shell: exit `$BUILD_FAILURE_EXIT_CODE`.
    BuildFailure,
    /// pinfold could not run it: exit `$SYSTEM_FAILURE_EXIT_CODE`.
    SystemFailure,
}

/// The end of a stage from `pinfold exec`'s exit code (`None`: killed by a
/// signal) and its `--report` (`None`: it wrote none). The report tells a
/// script that exits 125 itself from a sandbox that could not be set up.
pub fn stage_end(code: Option<i32>, report: Option<&serde_json::Value>) -> StageEnd {
    let Some(report) = report else {
        return StageEnd::SystemFailure;
    };
    if report.get("outcome").and_then(|o| o.as_str()) == Some("error") {
        return StageEnd::SystemFailure;
    }
    match code {
        Some(0) => StageEnd::Success,
        _ => StageEnd::BuildFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_stages_are_known_and_everything_else_is_a_script() {
        assert_eq!(stage_kind("get_sources"), StageKind::Transfer);
        assert_eq!(
            stage_kind("upload_artifacts_on_failure"),
            StageKind::Transfer
        );
        for s in [
            "prepare_script",
            "step_script",
            "build_script",
            "step_release",
            "after_script",
            "cleanup_file_variables",
            "get_sources_and_more",
            "",
        ] {
            assert_eq!(stage_kind(s), StageKind::Script, "{s}");
        }
    }

    #[test]
    fn config_answer_has_the_executor_fields() {
        let v = serde_json::to_value(ConfigOutput::new("ab", "host1", "0.1.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "builds_dir": "/builds",
                "cache_dir": "/cache",
                "builds_dir_is_shared": false,
                "hostname": "host1",
                "driver": {"name": "pinfold", "version": "0.1.0"},
                "job_env": {"PINFOLD_GITLAB_JOB": "ab"},
            })
        );
    }

    #[test]
    fn only_driver_made_job_ids_name_a_directory() {
        let home = Path::new("/h");
        let id = crate::hosted::new_id();
        assert_eq!(
            job_dir(home, Some(&id)).unwrap(),
            home.join("gitlab").join(&id)
        );
        assert_ne!(crate::hosted::new_id(), id);
        for bad in [
            "",
            "42",
            "../../../../etc/passwd/aaaaaaaaaaaaaa",
            "0123456789ABCDEF0123456789abcdef",
        ] {
            assert!(job_dir(home, Some(bad)).is_err(), "{bad}");
        }
        let e = job_dir(home, None).unwrap_err().to_string();
        assert!(e.contains("not set") && e.contains("config_exec"), "{e}");
    }

    #[test]
    fn stage_ends_tell_the_job_from_pinfold() {
        let exited = |c: i32| serde_json::json!({"outcome": "exited", "exit_code": c});
        assert_eq!(stage_end(Some(0), Some(&exited(0))), StageEnd::Success);
        assert_eq!(stage_end(Some(1), Some(&exited(1))), StageEnd::BuildFailure);
        // A script that exits 125 itself is still the job's failure.
        assert_eq!(
            stage_end(Some(125), Some(&exited(125))),
            StageEnd::BuildFailure
        );
        let limit = serde_json::json!({"outcome": "limit_exceeded", "exit_code": 123});
        assert_eq!(stage_end(Some(123), Some(&limit)), StageEnd::BuildFailure);
        let error = serde_json::json!({"outcome": "error", "exit_code": 125});
        assert_eq!(stage_end(Some(125), Some(&error)), StageEnd::SystemFailure);
        assert_eq!(stage_end(Some(125), None), StageEnd::SystemFailure);
        assert_eq!(stage_end(None, None), StageEnd::SystemFailure);
    }

    #[test]
    fn state_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let s = State {
            image: "r/x@sha256:00".into(),
            policy: "untrusted".into(),
            transfer_policy: "fetch".into(),
            runner_binary: Some("/usr/bin/gitlab-runner".into()),
        };
        s.save(d.path()).unwrap();
        assert_eq!(State::load(d.path()).unwrap(), s);
        assert_eq!(s.policy_for(StageKind::Script), "untrusted");
        assert_eq!(s.policy_for(StageKind::Transfer), "fetch");
        let e = State::load(Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("prepare_exec"), "{e}");
    }
}
