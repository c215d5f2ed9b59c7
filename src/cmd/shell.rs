//! `pinfold shell SCRIPT`: a custom `shell:` for GitHub Actions and
//! Forgejo/Gitea Actions steps; what it binds and passes:
//! [`pinfold_agent::shell`]; installing it: `ci-templates/forgejo/README.md`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// Run an Actions step's script in pinfold: `shell: pinfold shell {0}`.
///
/// Runs SCRIPT with `/bin/sh -e` (or `-c COMMAND` with `/bin/sh -e -c`) in
/// `pinfold exec` on the image (or rootfs) given, with the current
/// directory, the workspace, RUNNER_TEMP, the script's directory and the
/// file commands' directories (GITHUB_OUTPUT, GITHUB_ENV, GITHUB_PATH, ...)
/// bound at the same paths, the step's environment passed in, and HOME the
/// container's own. Also the command of Buildkite's hook and Woodpecker's
/// local-backend wrapper (ci-templates/buildkite, ci-templates/woodpecker). A workflow can remove `shell:`: use it for trusted
/// repositories only.
///
/// Exit status: the script's; 123-127 as `pinfold exec` (125: the sandbox
/// could not be set up).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment: PINFOLD_SHELL_IMAGE, PINFOLD_ROOTFS, PINFOLD_POLICY, PINFOLD_HOME, and the runner's GITHUB_WORKSPACE, RUNNER_TEMP, GITHUB_OUTPUT, GITHUB_ENV, GITHUB_PATH, GITHUB_STATE, GITHUB_STEP_SUMMARY, GITHUB_EVENT_PATH."
)]
pub struct Args {
    /// The image the step runs on (pinned: REPO@sha256:DIGEST, pulled when missing).
    #[arg(
        long,
        value_name = "REF",
        env = "PINFOLD_SHELL_IMAGE",
        required_unless_present = "rootfs",
        conflicts_with = "rootfs"
    )]
    image: Option<String>,
    /// A directory to use as the root file system instead of an image.
    #[arg(long, value_name = "DIR", env = "PINFOLD_ROOTFS")]
    rootfs: Option<PathBuf>,
    /// The policy: a name or a path.
    #[arg(
        long,
        value_name = "NAME|PATH",
        default_value = "default",
        env = "PINFOLD_POLICY"
    )]
    policy: String,
    /// Accepted for `sh -e -c` callers (Woodpecker's local backend); the
    /// script always runs with `-e`.
    #[arg(short = 'e')]
    _errexit: bool,
    /// Run COMMAND instead of a script file (Buildkite's $BUILDKITE_COMMAND,
    /// Woodpecker's step script).
    #[arg(short = 'c', value_name = "COMMAND", conflicts_with = "script")]
    command: Option<String>,
    /// The step's script: the runner's `{0}`.
    #[arg(required_unless_present = "command")]
    script: Option<PathBuf>,
}

/// Runs the subcommand: replaces this process with `pinfold exec`; returns
/// only on an error.
pub fn run(a: Args) -> i32 {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("pinfold shell: {e}");
        125
    };
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => return fail(&format!("the current directory: {e}")),
    };
    let script = a
        .script
        .as_ref()
        .map(|s| std::path::absolute(s).unwrap_or(s.clone()));
    let vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let plan = match pinfold_agent::shell::plan(script.as_deref(), &cwd, &vars) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(&format!("cannot find my own binary: {e}")),
    };
    let mut c = std::process::Command::new(exe);
    c.arg("exec");
    match (&a.image, &a.rootfs) {
        (Some(i), _) => c.arg("--image").arg(i),
        (None, Some(r)) => c.arg("--rootfs").arg(r),
        (None, None) => unreachable!("clap requires one"),
    };
    c.arg("--policy")
        .arg(&a.policy)
        .arg("--workdir")
        .arg(&plan.workdir);
    for b in &plan.binds {
        c.arg("--bind").arg(b.to_arg());
    }
    for e in &plan.env_args {
        c.arg("--env").arg(e);
    }
    c.args(["--", "/bin/sh", "-e"]);
    match (&a.command, &script) {
        (Some(cmd), _) => c.arg("-c").arg(cmd),
        (None, Some(s)) => c.arg(s),
        (None, None) => unreachable!("clap requires one"),
    };
    let e = c.exec();
    fail(&format!("starting pinfold exec: {e}"))
}
