//! The GitHub Actions runner's container hooks, the process side: the
//! operator's options, and what prepare_job, run_script_step and
//! cleanup_job do on this host (the job directory of [`super::jobdir`],
//! each step a step in the job container of [`super::keeper`]). The calls and what is refused:
//! [`pinfold_agent::gha`]; the command line: `cmd/gha_hook.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pinfold_agent::gha::{self, GhaError, HookState, JobState};
use pinfold_agent::hosted;
use pinfold_api::job::EnvName;
use pinfold_sandbox::ceiling::Ceiling;
use pinfold_sandbox::container::jobfs::Sizes;

use super::jobdir::{self, ImageRefused, ImageRules};
use super::keeper::{self, Stage, StageInputs};

/// Run GitHub Actions jobs in pinfold: the self-hosted runner's container
/// hooks (ACTIONS_RUNNER_CONTAINER_HOOKS).
///
/// The runner runs the hook script, ci-templates/github/pinfold-hook.js,
/// once per call, with one line of JSON on stdin (prepare_job,
/// run_script_step, run_container_step, cleanup_job); the script runs
/// `pinfold gha-hook`, whose options come from the runner's .env. Each job
/// runs in its own job container (the image of the job's `container:`,
/// digest-pinned), whose writable layer lives from prepare_job to
/// cleanup_job; every step runs in it under the operator's policy with the
/// runner's work directory at /__w. Services, container
/// `volumes:`/`options:`/`ports:` and container actions are refused with
/// one line.
///
/// Exit status: 0; the step's own exit code when a step fails (123-125 as
/// `pinfold exec`: a limit, the sandbox's refusal); 1 when the call is
/// refused or pinfold fails.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment: PINFOLD_HOME (job directories in $PINFOLD_HOME/gha), PINFOLD_POLICY, PINFOLD_GHA_ALLOW_TAG, PINFOLD_GHA_ALLOW_LOCAL_IMAGES, RUST_LOG."
)]
pub struct Args {
    /// The policy of every step: a name or a path. Steps that check out
    /// code (actions/checkout) need a policy whose network reaches GitHub,
    /// e.g. ci-templates/github/github-actions.toml.
    #[arg(
        long,
        value_name = "NAME|PATH",
        default_value = "untrusted",
        env = "PINFOLD_POLICY"
    )]
    policy: String,
    /// Let a job's image be a tag: it is resolved once, at prepare_job, and
    /// the digest is logged and used for every step. Without it a job's
    /// `container:` must be pinned (IMAGE@sha256:DIGEST).
    #[arg(long, env = "PINFOLD_GHA_ALLOW_TAG")]
    allow_tag: bool,
    /// Let a job's image be a local OCI layout or archive on this host
    /// (oci:, oci-archive:, docker-archive:). Without it a job may name only
    /// registry images: a path would let it read the runner's files.
    #[arg(long, env = "PINFOLD_GHA_ALLOW_LOCAL_IMAGES")]
    allow_local_images: bool,
    /// Between SIGTERM and SIGKILL when the runner cancels a step (it sends
    /// SIGINT, then SIGTERM after 7.5 s, then kills the hook).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

fn home() -> Result<PathBuf, String> {
    crate::env::settings()
        .home
        .clone()
        .ok_or_else(|| "cannot find a state directory: set PINFOLD_HOME".into())
}

pub fn prepare(a: &Args, p: &gha::PrepareJobArgs, response: Option<&Path>) -> Result<(), String> {
    let response =
        response.ok_or("the runner gave no responseFile: upgrade the runner (2.304 or later)")?;
    let c = gha::job_container(p).map_err(|e| e.to_string())?;
    let image = c.image.as_deref().expect("job_container checks it").trim();
    let env = gha::env_of(c.environment_variables.as_ref()).map_err(|e| e.to_string())?;
    if c.registry.as_ref().is_some_and(|r| !r.is_null()) {
        println!(
            "==> pinfold: the job container's `credentials:` are not used: pinfold pulls with this runner's own registry login, if any"
        );
    }
    let settings = crate::env::settings();
    let chosen = operator_policy(a)?;
    println!(
        "==> pinfold {}: preparing the job container",
        env!("CARGO_PKG_VERSION")
    );
    let rules = ImageRules {
        allow_tag: a.allow_tag,
        allow_local: a.allow_local_images,
        tag_flag: "gha-hook --allow-tag",
        local_flag: "gha-hook --allow-local-images",
        how: "container: IMAGE@sha256:DIGEST",
    };
    let pinned = jobdir::resolve_image(image, &rules, &settings).map_err(|e| match e {
        ImageRefused::Job(why) | ImageRefused::System(why) => why,
    })?;
    let id = hosted::new_id();
    let dir = home()?.join(gha::JOBS_DIR).join(&id);
    jobdir::create(&dir, &settings)?;
    let made = (|| {
        // Before any code of the job runs: the runner's directories as
        // they are now, which every step gets (and nothing else).
        let binds = hosted::pin_binds(gha::binds(c)).map_err(|e| e.to_string())?;
        JobState {
            image: pinned,
            env,
            binds,
        }
        .save(&dir)
        .map_err(|e| e.to_string())?;
        let fs = &chosen.policy.filesystem;
        let sizes = Sizes {
            layer: fs.writable_layer_size.0,
            workspace: fs.workspace_size.0,
        };
        // A self-hosted runner's job may run for 5 days; an hour on top.
        keeper::start(&dir, sizes, Duration::from_secs(5 * 86_400 + 3_600))?;
        // The runner needs to know; asking the image also proves that the
        // sandbox starts before the first step. The image's own /bin/sh
        // runs here, before the response file is written: it gets none of
        // the runner's directories, so it cannot touch that file.
        let alpine =
            match run_with(
                &dir,
                "test -e /etc/alpine-release",
                Run::Probe,
                &chosen.reference,
                a.grace,
            )? {
                Some(0) => true,
                Some(1) => false,
                _ => return Err(
                    "the job container did not start a shell (/bin/sh): the job's image needs one"
                        .into(),
                ),
            };
        write_response(response, &gha::prepare_response(&id, alpine).to_string())?;
        jobdir::ready(&dir)
    })();
    if let Err(e) = made {
        let _ = jobdir::remove(&dir, &settings);
        return Err(e);
    }
    println!("==> job container ready: policy {}", chosen.reference);
    Ok(())
}

/// The operator's policy (`--policy`), named anew at every call (a step in a
/// job container already running gets the policy as the container started
/// with it: see [`super::keeper`]).
fn operator_policy(a: &Args) -> Result<pinfold_sandbox::ceiling::Chosen, String> {
    let settings = crate::env::settings();
    Ceiling::new(&a.policy, &[], &settings.policy_dirs())
        .map_err(|e| format!("--policy: {e}"))?
        .choose(None, None, &Default::default())
        .map_err(|e| e.to_string())
}

/// Writes prepare_job's response into the file the runner created empty
/// under its `_work/_temp`: opened without following a symlink and
/// without creating anything, and only if it is a regular file.
fn write_response(path: &Path, body: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| format!("writing the response file {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(fail)?;
    if !f.metadata().map_err(fail)?.is_file() {
        return Err(format!(
            "the response file {} is not a regular file: refusing to write it",
            path.display()
        ));
    }
    f.write_all(body.as_bytes()).map_err(fail)
}

/// What runs in the job container.
enum Run {
    /// prepare_job's look at the image: no runner directory bound.
    Probe,
    /// A step, with its environment and the runner's directories.
    Step(Vec<(String, String)>),
}

/// Runs `run` with `/bin/sh -e -c` in the job container of `dir` under
/// `policy`; returns its exit code (`None`: killed), or why the sandbox
/// failed.
fn run_with(
    dir: &Path,
    run: &str,
    what: Run,
    policy: &str,
    grace: Duration,
) -> Result<Option<i32>, String> {
    let state = JobState::load(dir).map_err(|e| e.to_string())?;
    let (step_env, binds) = match what {
        Run::Probe => (Vec::new(), Vec::new()),
        Run::Step(env) => (
            env,
            hosted::check_binds(&state.binds).map_err(|e| e.to_string())?,
        ),
    };
    let mut env = std::collections::BTreeMap::new();
    for (k, v) in state.env.into_iter().chain(step_env) {
        env.insert(EnvName(k), v);
    }
    // Steps with the same binds share the job container (prepare's look
    // at the image has none, so the first step starts its own).
    let stage = Stage::new(
        dir,
        StageInputs {
            image: &state.image,
            env,
            policy,
            // The job file system's workspace: the runner's _work is bound
            // over it (systemMountVolumes), so every step shares the
            // runner's (which outlives the job: see the template's README).
            mount: gha::WORK,
            binds,
            run,
            grace,
        },
    )?;
    let out = keeper::run_step(dir, &stage)?;
    if out
        .report
        .as_ref()
        .is_none_or(|r| r.get("outcome").and_then(|o| o.as_str()) == Some("error"))
    {
        return Err(format!("the sandbox failed: {}", out.sandbox_failure()));
    }
    Ok(out.code)
}

pub fn step(
    a: &Args,
    s: &gha::ScriptStepArgs,
    state: Option<&serde_json::Value>,
) -> Result<i32, String> {
    let dir = HookState::job_dir(&home()?, state).map_err(|e| e.to_string())?;
    if !dir.exists() {
        return Err(GhaError::State("its job directory is gone").to_string());
    }
    let run = gha::step_command(s).map_err(|e| e.to_string())?;
    let env = gha::env_of(s.environment_variables.as_ref()).map_err(|e| e.to_string())?;
    let policy = operator_policy(a)?;
    // Killed by a signal (the runner's cancel): a failure.
    Ok(run_with(&dir, &run, Run::Step(env), &policy.reference, a.grace)?.unwrap_or(1))
}

pub fn cleanup(state: Option<&serde_json::Value>) -> Result<(), String> {
    let dir = HookState::job_dir(&home()?, state).map_err(|e| e.to_string())?;
    jobdir::remove_and_sweep(&dir, &crate::env::settings())
}
