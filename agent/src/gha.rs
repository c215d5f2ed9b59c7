//! GitHub Actions runner container hooks (`ACTIONS_RUNNER_CONTAINER_HOOKS`),
//! driven by `pinfold gha-hook`.
//!
//! The self-hosted runner calls the hook script once per call, each a new
//! process, with one line of JSON on stdin, `{command, responseFile, args,
//! state}` (the runner's `HookInput.cs`, camelCase), and reads the
//! response file it created empty (`HookResponse.cs`):
//!
//! * `prepare_job`: the job container (`args.container`, a `HookContainer`)
//!   and its services. The hook resolves the image (digest-pinned, or a
//!   tag where the operator allows tags), makes a job directory named by
//!   a random id and starts its keeper, which holds the job's writable
//!   layer between steps, and answers `{state: {jobId}, context:
//!   {container: {id, network}}, isAlpine}`; the runner requires `isAlpine`.
//! * `run_script_step`: one step, `entryPoint` with `entryPointArgs` (e.g.
//!   `sh -e /__w/_temp/GUID.sh`) in `workingDirectory`, with the step's
//!   `environmentVariables` and `prependPath`, in a `pinfold exec` attached
//!   to the job's layer, with the runner's `systemMountVolumes` bound (its
//!   `_work` at `/__w`, externals at `/__e` read-only, `/github/home`,
//!   `/github/workflow`) and never the Docker socket. The step's result
//!   is the hook's exit code.
//! * `cleanup_job`: stops the keeper and removes the directory.
//!
//! What the workflow can ask of a Docker-backed runner but not of this one
//! is refused with one line: `services:`, container `volumes:`,
//! `options:` and `ports:`, and container actions (`run_container_step`:
//! `docker://` and Dockerfile actions). A workflow names only its image;
//! the runner's operator chooses the policy.
//!
//! This module is the pure part (the JSON, what is refused, the mounts,
//! the step's command line); the binary does the processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pinfold_sandbox::container::Bind;
use serde::{Deserialize, Serialize};

/// Where the job directories are, under `PINFOLD_HOME`.
pub const JOBS_DIR: &str = "gha";
/// The runner's `_work` in the container, which every step shares.
pub const WORK: &str = "/__w";
/// The Docker socket the runner offers to mount: never bound.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Errors of the hook's input and bookkeeping, each one line saying what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum GhaError {
    /// stdin is not the runner's hook input.
    #[error(
        "stdin is not a runner hook call ({0}): set ACTIONS_RUNNER_CONTAINER_HOOKS to the hook script of ci-templates/github, which the runner runs with one line of JSON"
    )]
    Input(String),
    /// A command this hook does not know.
    #[error(
        "unknown hook command {0:?}: this pinfold knows prepare_job, run_script_step, run_container_step and cleanup_job; upgrade pinfold or the runner"
    )]
    Command(String),
    /// The workflow asks for something this runner does not do.
    #[error("{0}")]
    Unsupported(String),
    /// The state the runner passed back names no job of this hook.
    #[error(
        "the runner's hook state names no pinfold job ({0}): did prepare_job run on this runner, with this hook?"
    )]
    State(&'static str),
    /// The job directory's state file could not be read or written.
    #[error("{0} (did prepare_job run for this job?)")]
    JobState(#[from] crate::hosted::StateError),
}

/// The runner's hook input (`HookInput.cs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookInput {
    /// `prepare_job`, `run_script_step`, `run_container_step` or
    /// `cleanup_job`.
    pub command: String,
    /// The file the runner created (empty) for the response.
    pub response_file: Option<PathBuf>,
    /// The command's arguments.
    #[serde(default)]
    pub args: serde_json::Value,
    /// The `state` of the last response that had one (null for prepare_job).
    #[serde(default)]
    pub state: Option<serde_json::Value>,
}

/// A call, its arguments parsed.
#[derive(Debug, Clone)]
pub enum Call {
    /// `prepare_job`.
    PrepareJob(PrepareJobArgs),
    /// `run_script_step`.
    RunScriptStep(ScriptStepArgs),
    /// `run_container_step` (refused).
    RunContainerStep(HookContainer),
    /// `cleanup_job`.
    CleanupJob,
}

/// `prepare_job`'s arguments (`PrepareJobArgs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareJobArgs {
    /// The job container; null when the job has only services.
    pub container: Option<HookContainer>,
    /// The service containers.
    pub services: Option<Vec<HookContainer>>,
}

/// A container as the runner describes it (`HookContainer`). Null
/// properties arrive as `null`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookContainer {
    /// The image, as the workflow wrote it.
    pub image: Option<String>,
    /// A Dockerfile (container actions only).
    pub dockerfile: Option<String>,
    /// The entry point.
    pub entry_point: Option<String>,
    /// Its arguments.
    pub entry_point_args: Option<Vec<String>>,
    /// The container path of the workspace.
    pub working_directory: Option<String>,
    /// The workflow's `options:`.
    pub create_options: Option<String>,
    /// The workflow's `credentials:`.
    pub registry: Option<serde_json::Value>,
    /// The workflow's `env:` and the runner's.
    pub environment_variables: Option<BTreeMap<String, Option<String>>>,
    /// The workflow's `ports:`.
    pub port_mappings: Option<Vec<String>>,
    /// The runner's own directories.
    pub system_mount_volumes: Option<Vec<MountVolume>>,
    /// The workflow's `volumes:`.
    pub user_mount_volumes: Option<Vec<MountVolume>>,
}

/// A mount (`MountVolume`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountVolume {
    /// The workflow's text, for user mounts.
    pub user_provided_value: Option<String>,
    /// The host path (null for a Docker volume).
    pub source_volume_path: Option<String>,
    /// The path in the container.
    pub target_volume_path: Option<String>,
    /// Read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// `run_script_step`'s arguments (`ScriptStepArgs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptStepArgs {
    /// The program: a shell name (`sh`, `bash`, the workflow's `shell:`)
    /// or the runner's node (`/__e/node20/bin/node`).
    pub entry_point: Option<String>,
    /// Its arguments, split on spaces by the runner.
    pub entry_point_args: Option<Vec<String>>,
    /// The step's whole environment, in container paths.
    pub environment_variables: Option<BTreeMap<String, Option<String>>>,
    /// Directories to put before `PATH`, most recent first.
    pub prepend_path: Option<Vec<String>>,
    /// The step's working directory in the container.
    pub working_directory: Option<String>,
}

/// The JSON on stdin, parsed (the runner sends one line; the last line is
/// the call, as the runner's own hook library reads it).
pub fn parse(stdin: &str) -> Result<(HookInput, Call), GhaError> {
    let line = stdin
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| GhaError::Input("it is empty".into()))?;
    let input: HookInput = serde_json::from_str(line)
        .map_err(|e| GhaError::Input(format!("not the expected JSON: {}", serde_error(&e))))?;
    let args =
        |what: &str| GhaError::Input(format!("the arguments of {what} are not the expected JSON"));
    let a = if input.args.is_null() {
        serde_json::json!({})
    } else {
        input.args.clone()
    };
    let call = match input.command.as_str() {
        "prepare_job" => {
            Call::PrepareJob(serde_json::from_value(a).map_err(|_| args("prepare_job"))?)
        }
        "run_script_step" => {
            Call::RunScriptStep(serde_json::from_value(a).map_err(|_| args("run_script_step"))?)
        }
        "run_container_step" => Call::RunContainerStep(
            serde_json::from_value(a).map_err(|_| args("run_container_step"))?,
        ),
        "cleanup_job" => Call::CleanupJob,
        other => return Err(GhaError::Command(other.into())),
    };
    Ok((input, call))
}

/// serde_json's message without the input it quotes: only the category
/// and the position.
fn serde_error(e: &serde_json::Error) -> String {
    format!("{:?} at column {}", e.classify(), e.column())
}

/// The job container of a `prepare_job` call, or the one line saying
/// what of the workflow this runner does not do.
pub fn job_container(a: &PrepareJobArgs) -> Result<&HookContainer, GhaError> {
    let no = |s: &str| Err(GhaError::Unsupported(s.into()));
    if a.services.as_ref().is_some_and(|s| !s.is_empty()) {
        return no(
            "this runner runs the job in pinfold, which does not start `services:` yet: remove them from the job (or run the job on a runner with Docker)",
        );
    }
    let Some(c) = &a.container else {
        return no(
            "this runner runs jobs only in a job container: add `container: IMAGE@sha256:DIGEST` to the job",
        );
    };
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        return no("the job container names no image: set `container: IMAGE@sha256:DIGEST`");
    }
    if c.user_mount_volumes.as_ref().is_some_and(|v| !v.is_empty()) {
        return no(
            "the job container's `volumes:` are refused: a workflow may not bind the runner's files or volumes into its sandbox; remove them and use the workspace",
        );
    }
    if c.create_options
        .as_deref()
        .is_some_and(|o| !o.trim().is_empty())
    {
        return no(
            "the job container's `options:` are Docker's and this runner runs it in pinfold: remove them (the runner's operator sets the sandbox's policy)",
        );
    }
    if c.port_mappings.as_ref().is_some_and(|p| !p.is_empty()) {
        return no(
            "the job container's `ports:` are refused: a pinfold job container publishes no ports; remove them",
        );
    }
    Ok(c)
}

/// Why `run_container_step` is refused.
pub fn container_step_refusal(c: &HookContainer) -> GhaError {
    let what = if c.dockerfile.is_some() {
        "a Dockerfile action"
    } else {
        "a container action (`docker://` or an action whose `runs.using` is docker)"
    };
    GhaError::Unsupported(format!(
        "this step uses {what}, which this runner does not build or run yet: use a JavaScript or composite action, or `run:` the tool from the job container"
    ))
}

/// The runner's own directories to bind into every step, from
/// `systemMountVolumes`: each that exists on this host, never the Docker
/// socket (a job with it would own the host) nor a Docker volume.
pub fn binds(c: &HookContainer) -> Vec<Bind> {
    let mut out = Vec::new();
    for m in c.system_mount_volumes.iter().flatten() {
        let (Some(src), Some(dst)) = (&m.source_volume_path, &m.target_volume_path) else {
            continue;
        };
        let (src, dst) = (Path::new(src), Path::new(dst));
        if dst == Path::new(DOCKER_SOCKET)
            || src == Path::new(DOCKER_SOCKET)
            || !src.is_absolute()
            || !dst.is_absolute()
            || !src.is_dir()
        {
            continue;
        }
        out.push(Bind {
            source: src.to_owned(),
            dest: dst.to_owned(),
            writable: !m.read_only,
        });
    }
    out
}

/// A variable map from the runner, checked: names must be variable names.
pub fn env_of(
    vars: Option<&BTreeMap<String, Option<String>>>,
) -> Result<Vec<(String, String)>, GhaError> {
    let mut out = Vec::new();
    for (k, v) in vars.into_iter().flatten() {
        let Some(v) = v else { continue };
        let mut b = k.bytes();
        let ok = matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
            && b.all(|c| c == b'_' || c.is_ascii_alphanumeric());
        if !ok {
            return Err(GhaError::Unsupported(format!(
                "the step's environment has a variable named {k:?}, which a sandbox cannot pass: use letters, digits and _ in `env:` names"
            )));
        }
        out.push((k.clone(), v.clone()));
    }
    Ok(out)
}

/// The command line a step's `pinfold exec` runs with `/bin/sh -e -c`:
/// into the working directory, the prepended `PATH`, then the entry point
/// with its arguments, each quoted.
pub fn step_command(a: &ScriptStepArgs) -> Result<String, GhaError> {
    let entry = a
        .entry_point
        .as_deref()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| GhaError::Input("run_script_step has no entryPoint".into()))?;
    let mut s = String::new();
    if let Some(wd) = a.working_directory.as_deref().filter(|w| !w.is_empty()) {
        s += &format!("cd {} && ", quote(wd));
    }
    let prepend: Vec<&str> = a
        .prepend_path
        .iter()
        .flatten()
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .collect();
    if !prepend.is_empty() {
        s += &format!(
            "PATH={}:\"$PATH\" && export PATH && ",
            quote(&prepend.join(":"))
        );
    }
    s += "exec ";
    s += &quote(entry);
    for arg in a
        .entry_point_args
        .iter()
        .flatten()
        .filter(|a| !a.is_empty())
    {
        s.push(' ');
        s += &quote(arg);
    }
    Ok(s)
}

/// `s` in single quotes for `/bin/sh`. By hand: a one-line rule, and the
/// quoting crates quote only when needed, which would make the command
/// line depend on the text.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `state` this hook hands the runner, which passes it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState {
    /// The job directory's id ([`crate::hosted::new_id`]).
    pub job_id: String,
}

impl HookState {
    /// The job directory under `home` that the runner's `state` names.
    pub fn job_dir(home: &Path, state: Option<&serde_json::Value>) -> Result<PathBuf, GhaError> {
        let state = state
            .filter(|s| !s.is_null())
            .ok_or(GhaError::State("it is empty"))?;
        let s: HookState =
            serde_json::from_value(state.clone()).map_err(|_| GhaError::State("no jobId"))?;
        if !crate::hosted::is_id(&s.job_id) {
            return Err(GhaError::State("not a job id this hook made"));
        }
        Ok(home.join(JOBS_DIR).join(s.job_id))
    }
}

/// `prepare_job`'s response (`HookResponse.cs`).
pub fn prepare_response(job_id: &str, is_alpine: bool) -> serde_json::Value {
    serde_json::json!({
        "state": HookState { job_id: job_id.into() },
        "context": {
            "container": { "id": format!("pinfold-{job_id}"), "network": "none" },
            "services": [],
        },
        "isAlpine": is_alpine,
    })
}

/// What `prepare_job` records for the steps, in the job directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// The image, pinned.
    pub image: String,
    /// The job container's environment (`container.env`), which every
    /// step starts from.
    pub env: Vec<(String, String)>,
    /// The runner's directories bound into every step, pinned at
    /// prepare_job ([`crate::hosted::check_binds`] before each step). The
    /// policy is not here: each call takes the operator's anew, so nothing
    /// a job could reach decides it.
    pub binds: Vec<crate::hosted::PinnedBind>,
}

impl JobState {
    /// Writes the state into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), GhaError> {
        Ok(crate::hosted::save_state(dir, self)?)
    }

    /// Reads the state from `dir`.
    pub fn load(dir: &Path) -> Result<JobState, GhaError> {
        Ok(crate::hosted::load_state(dir)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runners_json_parses_with_its_field_names_and_nulls() {
        let line = r#"{"command":"prepare_job","responseFile":"/r/_work/_temp/_runner_hook_responses/1.json","args":{"container":{"image":"alpine@sha256:00","dockerfile":null,"entryPointArgs":[],"entryPoint":null,"workingDirectory":"/__w/r/r","createOptions":null,"registry":null,"environmentVariables":{"A":"1","N":null},"portMappings":[],"systemMountVolumes":[{"userProvidedValue":null,"sourceVolumePath":"/var/run/docker.sock","targetVolumePath":"/var/run/docker.sock","readOnly":false},{"userProvidedValue":null,"sourceVolumePath":"/","targetVolumePath":"/__e","readOnly":true}],"userMountVolumes":[]},"services":[]},"state":null}"#;
        let (input, call) = parse(&format!("\n{line}\n")).unwrap();
        assert_eq!(
            input.response_file.unwrap(),
            Path::new("/r/_work/_temp/_runner_hook_responses/1.json")
        );
        let Call::PrepareJob(a) = call else {
            panic!("{call:?}")
        };
        let c = job_container(&a).unwrap();
        assert_eq!(c.image.as_deref(), Some("alpine@sha256:00"));
        assert_eq!(
            env_of(c.environment_variables.as_ref()).unwrap(),
            vec![("A".to_string(), "1".to_string())]
        );
        // The socket is never bound; / stands in for an existing directory.
        let b = binds(c);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].dest, Path::new("/__e"));
        assert!(!b[0].writable);
    }

    #[test]
    fn what_a_workflow_cannot_ask_of_this_runner_is_one_line() {
        let img = || HookContainer {
            image: Some("alpine@sha256:00".into()),
            ..HookContainer::default()
        };
        let cases = [
            PrepareJobArgs {
                container: Some(img()),
                services: Some(vec![img()]),
            },
            PrepareJobArgs {
                container: None,
                services: None,
            },
            PrepareJobArgs {
                container: Some(HookContainer {
                    user_mount_volumes: Some(vec![MountVolume {
                        source_volume_path: Some("/home/runner/.ssh".into()),
                        target_volume_path: Some("/x".into()),
                        ..MountVolume::default()
                    }]),
                    ..img()
                }),
                services: None,
            },
            PrepareJobArgs {
                container: Some(HookContainer {
                    create_options: Some("--privileged".into()),
                    ..img()
                }),
                services: None,
            },
            PrepareJobArgs {
                container: Some(HookContainer {
                    port_mappings: Some(vec!["80:80".into()]),
                    ..img()
                }),
                services: None,
            },
        ];
        for a in &cases {
            let e = job_container(a).unwrap_err().to_string();
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(e.contains("remove") || e.contains("add"), "{e}");
        }
        let e = container_step_refusal(&HookContainer {
            dockerfile: Some("Dockerfile".into()),
            ..HookContainer::default()
        })
        .to_string();
        assert!(e.contains("Dockerfile"), "{e}");
        assert!(parse(r#"{"command":"run_job"}"#).is_err());
        let e = parse("{\"command\": \"secret-text-of-a-file").unwrap_err();
        assert!(!e.to_string().contains("secret-text"), "{e}");
        let e = env_of(Some(&BTreeMap::from([("A-B".into(), Some("1".into()))]))).unwrap_err();
        assert!(e.to_string().contains("\"A-B\""), "{e}");
    }

    #[test]
    fn a_step_runs_its_entry_point_quoted_in_its_directory_with_its_path() {
        let a = ScriptStepArgs {
            entry_point: Some("bash".into()),
            entry_point_args: Some(
                [
                    "--noprofile",
                    "--norc",
                    "-e",
                    "-o",
                    "pipefail",
                    "/__w/_temp/a'b.sh",
                    "",
                ]
                .map(String::from)
                .to_vec(),
            ),
            environment_variables: None,
            prepend_path: Some(vec!["/__w/_tool/go/bin".into(), "/opt/x".into()]),
            working_directory: Some("/__w/r/r".into()),
        };
        assert_eq!(
            step_command(&a).unwrap(),
            "cd '/__w/r/r' && PATH='/__w/_tool/go/bin:/opt/x':\"$PATH\" && export PATH && exec 'bash' '--noprofile' '--norc' '-e' '-o' 'pipefail' '/__w/_temp/a'\\''b.sh'"
        );
        let bare = ScriptStepArgs {
            entry_point: Some("sh".into()),
            ..ScriptStepArgs::default()
        };
        assert_eq!(step_command(&bare).unwrap(), "exec 'sh'");
        assert!(step_command(&ScriptStepArgs::default()).is_err());
    }

    #[test]
    fn the_state_names_only_a_job_this_hook_made() {
        let home = Path::new("/h");
        let id = crate::hosted::new_id();
        let r = prepare_response(&id, true);
        assert_eq!(r["isAlpine"], true);
        assert_eq!(
            HookState::job_dir(home, Some(&r["state"])).unwrap(),
            home.join("gha").join(&id)
        );
        for bad in [
            serde_json::Value::Null,
            serde_json::json!({"jobId": "../../etc"}),
            serde_json::json!({"other": 1}),
        ] {
            assert!(HookState::job_dir(home, Some(&bad)).is_err(), "{bad}");
        }
        assert!(HookState::job_dir(home, None).is_err());
    }
}
