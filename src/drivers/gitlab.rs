//! GitLab Runner's Custom executor, the process side: each stage's
//! options, and what prepare, run and cleanup do on this host (the job
//! directory of [`super::jobdir`], each stage a step in the job container
//! of [`super::keeper`]).
//! The stages and what persists between them: [`pinfold_agent::gitlab`];
//! the command line: `cmd/gitlab_driver.rs`.

use std::path::PathBuf;
use std::time::Duration;

use pinfold_agent::gitlab::{self, StageEnd, StageKind, State};
use pinfold_sandbox::ceiling::Ceiling;
use pinfold_sandbox::container::Bind;
use pinfold_sandbox::container::jobfs::Sizes;

use super::jobdir::{self, ImageRefused, ImageRules};
use super::keeper::{self, Stage, StageInputs};

/// The stage's script, in the job directory (bound at [`gitlab::SCRIPT_DIR`]).
const SCRIPT_DIR: &str = "script";

/// Run GitLab CI jobs in pinfold: GitLab Runner's Custom executor.
///
/// Configure each stage in the runner's config.toml `[runners.custom]`:
/// `config_args = ["gitlab-driver", "config"]`, `prepare_args =
/// ["gitlab-driver", "prepare", ...]`, `run_args = ["gitlab-driver",
/// "run"]`, `cleanup_args = ["gitlab-driver", "cleanup"]` (see
/// ci-templates/gitlab/). The runner's operator chooses the policies and
/// whether tags may resolve, on prepare's command line; a job only names
/// its image.
///
/// Exit status (prepare, run, cleanup): 0; $BUILD_FAILURE_EXIT_CODE when the
/// job's script fails, hits a limit, or the job's image is refused;
/// $SYSTEM_FAILURE_EXIT_CODE when pinfold itself fails.
#[derive(Debug, clap::Subcommand)]
#[command(
    after_help = "Environment: PINFOLD_HOME (job directories in $PINFOLD_HOME/gitlab), PINFOLD_POLICY, PINFOLD_GITLAB_TRANSFER_POLICY, PINFOLD_GITLAB_ALLOW_TAG, PINFOLD_GITLAB_ALLOW_LOCAL_IMAGES, PINFOLD_GITLAB_DEFAULT_IMAGE, PINFOLD_GITLAB_RUNNER, RUST_LOG; from gitlab-runner: BUILD_FAILURE_EXIT_CODE, SYSTEM_FAILURE_EXIT_CODE, CUSTOM_ENV_CI_JOB_IMAGE, PINFOLD_GITLAB_JOB (set by config's job_env)."
)]
pub enum Command {
    /// config_exec: print the executor's configuration as JSON (builds_dir,
    /// cache_dir, hostname, driver, and a new job id in job_env).
    Config,
    /// prepare_exec: resolve the job's image (CUSTOM_ENV_CI_JOB_IMAGE) and
    /// start its job file system (writable layer and /builds, kept across
    /// stages).
    Prepare(PrepareArgs),
    /// run_exec: run the stage's SCRIPT in the job's sandbox.
    Run(RunArgs),
    /// cleanup_exec: stop everything the job left and remove it (also
    /// the directories of jobs whose cleanup never ran).
    Cleanup,
}

/// prepare's options: the operator's choices for every stage of the job.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// The policy of the stages that run the job's commands (prepare_script,
    /// step_script, after_script, ...): a name or a path.
    #[arg(
        long,
        value_name = "NAME|PATH",
        default_value = "untrusted",
        env = "PINFOLD_POLICY"
    )]
    policy: String,
    /// The policy of the stages that fetch or ship data (get_sources,
    /// restore_cache, download_artifacts, archive_cache*, upload_artifacts*),
    /// e.g. one with network for the GitLab server [default: --policy].
    #[arg(long, value_name = "NAME|PATH", env = "PINFOLD_GITLAB_TRANSFER_POLICY")]
    transfer_policy: Option<String>,
    /// Let a job's image be a tag: it is resolved once, at prepare, and the
    /// digest is logged and used for every stage. Without it a job's image
    /// must be pinned (REPO@sha256:DIGEST).
    #[arg(long, env = "PINFOLD_GITLAB_ALLOW_TAG")]
    allow_tag: bool,
    /// Let a job's image be a local OCI layout or archive on this host
    /// (oci:, oci-archive:, docker-archive:). Without it a job may name only
    /// registry images: a path would let it read the runner's files.
    #[arg(long, env = "PINFOLD_GITLAB_ALLOW_LOCAL_IMAGES")]
    allow_local_images: bool,
    /// The image of jobs that name none (pinned, or a tag with --allow-tag).
    #[arg(long, value_name = "REF", env = "PINFOLD_GITLAB_DEFAULT_IMAGE")]
    default_image: Option<String>,
    /// The gitlab-runner binary, bound read-only at
    /// /usr/local/bin/gitlab-runner into the transfer stages (sources,
    /// cache, artifacts), whose scripts run it by name [default: found in
    /// PATH].
    #[arg(long, value_name = "PATH", env = "PINFOLD_GITLAB_RUNNER")]
    gitlab_runner: Option<PathBuf>,
}

/// run's arguments, as gitlab-runner passes them.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The stage's script (written by gitlab-runner on the host).
    script: PathBuf,
    /// The stage's name (get_sources, step_script, after_script, ...).
    stage: String,
    /// Between SIGTERM and SIGKILL when gitlab-runner cancels the stage.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

/// A failed stage: which of GitLab's two codes, and the line saying why.
pub struct Fail(pub StageEnd, pub String);

fn system(why: impl std::fmt::Display) -> Fail {
    Fail(StageEnd::SystemFailure, why.to_string())
}

fn home() -> Result<PathBuf, Fail> {
    crate::env::settings()
        .home
        .clone()
        .ok_or_else(|| system("cannot find a state directory: set PINFOLD_HOME"))
}

fn job_dir() -> Result<PathBuf, Fail> {
    let id = std::env::var(gitlab::JOB_VAR).ok();
    gitlab::job_dir(&home()?, id.as_deref()).map_err(system)
}

pub fn prepare(a: &PrepareArgs) -> Result<StageEnd, Fail> {
    let dir = job_dir()?;
    let settings = crate::env::settings();
    // Both policies must load: an operator's error is a system failure.
    let transfer = a
        .transfer_policy
        .clone()
        .unwrap_or_else(|| a.policy.clone());
    let ceiling = Ceiling::new(
        &a.policy,
        std::slice::from_ref(&transfer),
        &settings.policy_dirs(),
    )
    .map_err(|e| system(format!("--policy/--transfer-policy: {e}")))?;
    let script = ceiling
        .choose(None, None, &Default::default())
        .map_err(system)?;
    // The transfer policy is the ceiling's last (its only one when both are the same).
    let last = ceiling.names().last().map(|n| n.to_string());
    let fetch = ceiling
        .choose(last.as_deref(), None, &Default::default())
        .map_err(system)?;
    let image = image_of_job(a)?;
    println!(
        "==> pinfold {}: preparing the job's sandbox",
        env!("CARGO_PKG_VERSION")
    );
    let rules = ImageRules {
        allow_tag: a.allow_tag,
        allow_local: a.allow_local_images,
        tag_flag: "gitlab-driver prepare --allow-tag",
        local_flag: "gitlab-driver prepare --allow-local-images",
        how: "image: REPO@sha256:DIGEST",
    };
    let pinned = jobdir::resolve_image(&image, &rules, &settings).map_err(|e| match e {
        ImageRefused::Job(why) => Fail(StageEnd::BuildFailure, why),
        ImageRefused::System(why) => system(why),
    })?;
    let runner_binary = a
        .gitlab_runner
        .clone()
        .or_else(|| settings.which("gitlab-runner", "/usr/local/bin:/usr/bin:/bin"));
    // The job file system is shared by both policies' stages: each exec
    // refuses one larger than its policy allows, so take the smaller sizes.
    let (s, f) = (&script.policy.filesystem, &fetch.policy.filesystem);
    let sizes = Sizes {
        layer: s.writable_layer_size.0.min(f.writable_layer_size.0),
        workspace: s.workspace_size.0.min(f.workspace_size.0),
    };
    // gitlab-runner retries config and prepare after a system failure (3
    // times): what an earlier attempt of this job left goes first.
    jobdir::create(&dir, &settings).map_err(system)?;
    State {
        image: pinned,
        policy: script.reference.clone(),
        transfer_policy: fetch.reference.clone(),
        runner_binary,
    }
    .save(&dir)
    .map_err(system)?;
    // The keeper ends by itself after the job's own timeout (at most a
    // week) and an hour, or a day, should cleanup never come.
    let lifetime = std::env::var("CUSTOM_ENV_CI_JOB_TIMEOUT")
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(86_400, |t| t.min(7 * 86_400) + 3_600);
    keeper::start(&dir, sizes, Duration::from_secs(lifetime)).map_err(system)?;
    jobdir::ready(&dir).map_err(system)?;
    println!(
        "==> sandbox ready: policy {} (transfer stages: {})",
        script.reference, fetch.reference
    );
    Ok(StageEnd::Success)
}

/// The job's image: CUSTOM_ENV_CI_JOB_IMAGE, or the operator's default.
fn image_of_job(a: &PrepareArgs) -> Result<String, Fail> {
    std::env::var("CUSTOM_ENV_CI_JOB_IMAGE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| a.default_image.clone())
        .map(|s| s.trim().to_string())
        .ok_or_else(|| {
            Fail(
                StageEnd::BuildFailure,
                "the job names no image: set `image: REPO@sha256:DIGEST` in .gitlab-ci.yml (or the runner's operator sets --default-image)".into(),
            )
        })
}

pub fn run_stage(a: &RunArgs) -> Result<StageEnd, Fail> {
    let dir = job_dir()?;
    let state = State::load(&dir).map_err(system)?;
    let kind = gitlab::stage_kind(&a.stage);
    // The stage's script goes where the job container sees it: a directory
    // bound read-only at /.pinfold-gitlab for the whole container (a bind
    // of the script file itself would be a new container per stage).
    let scripts = dir.join(SCRIPT_DIR);
    let copy = || -> std::io::Result<()> {
        std::fs::create_dir_all(&scripts)?;
        let tmp = scripts.join(".script");
        std::fs::copy(&a.script, &tmp)?;
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        std::fs::rename(&tmp, scripts.join("script"))
    };
    copy().map_err(|e| system(format!("the stage's script {}: {e}", a.script.display())))?;
    let mut binds = vec![Bind {
        source: scripts,
        dest: gitlab::SCRIPT_DIR.into(),
        writable: false,
    }];
    if let (StageKind::Transfer, Some(b)) = (kind, &state.runner_binary) {
        binds.push(Bind {
            source: b.clone(),
            dest: gitlab::RUNNER_BINARY.into(),
            writable: false,
        });
    }
    // Stages of one kind share a container: the same policy and binds.
    let stage = Stage::new(
        &dir,
        StageInputs {
            image: &state.image,
            env: Default::default(),
            policy: state.policy_for(kind),
            mount: gitlab::BUILDS_DIR,
            binds,
            run: &gitlab::shell_command(),
            grace: a.grace,
        },
    )
    .map_err(system)?;
    // A cancel (SIGTERM to this process) stops the step with its grace; if
    // this process dies, the keeper kills the step at once.
    let out = keeper::run_step(&dir, &stage).map_err(system)?;
    let (code, end) = (out.code, gitlab::stage_end(out.code, out.report.as_ref()));
    if end == StageEnd::BuildFailure
        && let (Some(file), Some(code)) = (std::env::var_os("BUILD_EXIT_CODE_FILE"), code)
    {
        // The script's own code, which gitlab-runner reads when the driver
        // exits with BUILD_FAILURE_EXIT_CODE (`allow_failure: exit_codes`).
        let _ = std::fs::write(file, format!("{code}\n"));
    }
    if end == StageEnd::SystemFailure {
        return Err(system(format!(
            "stage {}: {}",
            a.stage,
            out.sandbox_failure()
        )));
    }
    Ok(end)
}

pub fn cleanup() -> Result<StageEnd, Fail> {
    let dir = job_dir()?;
    jobdir::remove_and_sweep(&dir, &crate::env::settings()).map_err(system)?;
    Ok(StageEnd::Success)
}
