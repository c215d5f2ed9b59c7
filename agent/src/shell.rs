//! `pinfold shell SCRIPT`: a custom `shell:` for GitHub Actions and
//! Forgejo/Gitea Actions steps (`defaults.run.shell: pinfold shell {0}`).
//!
//! The runner (GitHub's runner, act_runner with a `host` label, or act)
//! writes each `run:` step to a file and calls the shell with its path, in
//! the job's workspace, with the step's environment. `pinfold shell` turns
//! that into one `pinfold exec` (an `execve`, no process stays behind):
//!
//! * the workspace (`GITHUB_WORKSPACE`), `RUNNER_TEMP`, the script's
//!   directory and the directories of the file commands (`GITHUB_OUTPUT`,
//!   `GITHUB_ENV`, `GITHUB_PATH`, `GITHUB_STATE`, `GITHUB_STEP_SUMMARY`)
//!   are bound read-write at the same paths, so outputs, environment and
//!   PATH additions pass between steps as they do without a sandbox;
//!   `GITHUB_EVENT_PATH`'s directory is bound read-only;
//! * the step's environment goes in by name (`--env NAME`), except the
//!   names that steer the host side ([`crate::runner::reserved_name`]):
//!   `PATH` goes in by value, `HOME` not at all (the container's own, so the
//!   runner's home, its credentials and ssh keys stay outside);
//! * the script runs with `/bin/sh -e SCRIPT`, GitHub's `sh` shell; with
//!   `-c COMMAND` (Buildkite's command hook, Woodpecker's local backend)
//!   `/bin/sh -e -c COMMAND`, and only the current directory (their
//!   checkout, where the agent starts the step) is bound and is the working
//!   directory: there the `GITHUB_*` variables are the job's to set.
//!
//! A workflow can drop `shell:`, so this is for trusted repositories only
//! (see `ci-templates/forgejo/README.md`). This module plans, purely; the
//! binary reads the environment and executes the plan.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pinfold_sandbox::container::Bind;

/// Errors of planning a shell step.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// A path that must be bound contains `:`, which `--bind` cannot express.
    #[error(
        "{var} is {path:?}, which contains ':' and cannot be bound: give the runner a work directory without ':'"
    )]
    Colon {
        /// Which variable named it.
        var: &'static str,
        /// The path.
        path: String,
    },
    /// A path is not absolute.
    #[error("{var} is {path:?}, not an absolute path: run pinfold shell from an Actions runner")]
    Relative {
        /// Which variable named it.
        var: &'static str,
        /// The path.
        path: String,
    },
}

/// The variables whose directories are bound read-write.
pub const WRITABLE: &[&str] = &[
    "GITHUB_WORKSPACE",
    "RUNNER_TEMP",
    "GITHUB_OUTPUT",
    "GITHUB_ENV",
    "GITHUB_PATH",
    "GITHUB_STATE",
    "GITHUB_STEP_SUMMARY",
];

/// What `pinfold exec` gets for one step, after `exec` and the operator's
/// image/policy arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellPlan {
    /// The binds, outermost only.
    pub binds: Vec<Bind>,
    /// The working directory in the container.
    pub workdir: PathBuf,
    /// `--env` arguments: `NAME` (value from the environment) or
    /// `PATH=VALUE`.
    pub env_args: Vec<OsString>,
}

/// Plans a step: `script` is the runner's `{0}` (`None` for `-c`), `cwd`
/// the directory the runner started the shell in, `vars` the step's
/// environment.
pub fn plan(
    script: Option<&Path>,
    cwd: &Path,
    vars: &[(OsString, OsString)],
) -> Result<ShellPlan, ShellError> {
    let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    // (path, writable, naming variable): directories to bind.
    let mut want: Vec<(PathBuf, bool, &'static str)> = Vec::new();
    let dir_of = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
    // The Actions runner's directories only for its `{0}` scripts: with -c
    // (Buildkite, Woodpecker) those variables are the job's to set, and a
    // job must not name host directories to bind.
    let actions = if script.is_some() { WRITABLE } else { &[] };
    for var in actions {
        if let Some(v) = get(var) {
            let p = PathBuf::from(v);
            let dir = if *var == "GITHUB_WORKSPACE" || *var == "RUNNER_TEMP" {
                p
            } else {
                dir_of(&p)
            };
            want.push((dir, true, var));
        }
    }
    if let Some(script) = script {
        want.push((dir_of(script), true, "the script"));
    }
    // Where the runner started the step: Buildkite's checkout, Woodpecker's
    // workspace (under GITHUB_WORKSPACE for Actions).
    want.push((cwd.to_path_buf(), true, "the current directory"));
    if let Some(v) = get("GITHUB_EVENT_PATH").filter(|_| script.is_some()) {
        want.push((dir_of(Path::new(v)), false, "GITHUB_EVENT_PATH"));
    }
    for (p, _, var) in &want {
        let s = p.to_string_lossy();
        if !p.is_absolute() {
            return Err(ShellError::Relative {
                var,
                path: s.into_owned(),
            });
        }
        if s.contains(':') {
            return Err(ShellError::Colon {
                var,
                path: s.into_owned(),
            });
        }
    }
    // Outermost first; a directory inside one already bound is covered (and
    // writable wins over read-only for the same directory).
    want.sort_by(|a, b| {
        a.0.components()
            .count()
            .cmp(&b.0.components().count())
            .then(b.1.cmp(&a.1))
    });
    let mut binds: Vec<Bind> = Vec::new();
    for (p, writable, _) in want {
        if p == Path::new("/") || binds.iter().any(|b| p.starts_with(&b.source)) {
            continue;
        }
        binds.push(Bind {
            source: p.clone(),
            dest: p,
            writable,
        });
    }
    let workdir = if binds.iter().any(|b| cwd.starts_with(&b.source)) {
        cwd.to_path_buf()
    } else {
        get("GITHUB_WORKSPACE")
            .map(PathBuf::from)
            .or_else(|| script.map(dir_of))
            .unwrap_or_else(|| PathBuf::from("/"))
    };
    let mut env_args = Vec::new();
    for (k, v) in vars {
        let Some(name) = k.to_str() else { continue };
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid || name == "HOME" {
            continue;
        }
        if name == "PATH" {
            let mut a = OsString::from("PATH=");
            a.push(v);
            env_args.push(a);
        } else if !crate::runner::reserved_name(name) {
            env_args.push(name.into());
        }
    }
    Ok(ShellPlan {
        binds,
        workdir,
        env_args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        v.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn the_runners_directories_are_bound_once_at_the_same_paths() {
        let v = vars(&[
            ("GITHUB_WORKSPACE", "/r/_work/repo/repo"),
            ("RUNNER_TEMP", "/r/_work/_temp"),
            (
                "GITHUB_OUTPUT",
                "/r/_work/_temp/_runner_file_commands/set_output_1",
            ),
            (
                "GITHUB_ENV",
                "/r/_work/_temp/_runner_file_commands/set_env_1",
            ),
            (
                "GITHUB_EVENT_PATH",
                "/r/_work/_temp/_github_workflow/event.json",
            ),
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/home/runner"),
            ("LD_PRELOAD", "/x.so"),
            ("PINFOLD_POLICY_PATH", "/evil"),
            ("CI", "true"),
            ("bad-name", "x"),
        ]);
        let p = plan(
            Some(Path::new("/r/_work/_temp/abc.sh")),
            Path::new("/r/_work/repo/repo/sub"),
            &v,
        )
        .unwrap();
        let binds: Vec<(&str, bool)> = p
            .binds
            .iter()
            .map(|b| {
                assert_eq!(b.source, b.dest);
                (b.source.to_str().unwrap(), b.writable)
            })
            .collect();
        assert_eq!(
            binds,
            [("/r/_work/_temp", true), ("/r/_work/repo/repo", true)]
        );
        assert_eq!(p.workdir, Path::new("/r/_work/repo/repo/sub"));
        let env: Vec<&str> = p.env_args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            env,
            [
                "GITHUB_WORKSPACE",
                "RUNNER_TEMP",
                "GITHUB_OUTPUT",
                "GITHUB_ENV",
                "GITHUB_EVENT_PATH",
                "PATH=/usr/bin:/bin",
                "CI"
            ]
        );
    }

    #[test]
    fn the_event_directory_alone_is_read_only_and_paths_with_colons_are_refused() {
        let v = vars(&[
            ("GITHUB_WORKSPACE", "/w"),
            ("GITHUB_EVENT_PATH", "/e/event.json"),
        ]);
        let p = plan(Some(Path::new("/s/1.sh")), Path::new("/"), &v).unwrap();
        assert!(
            p.binds
                .iter()
                .any(|b| b.source == Path::new("/e") && !b.writable)
        );
        assert_eq!(p.workdir, Path::new("/w"));
        // -c in a checkout (Buildkite, Woodpecker): the checkout is bound
        // and is the working directory.
        // A job's own GITHUB_* there name nothing to bind.
        let hostile = vars(&[
            ("GITHUB_WORKSPACE", "/home/agent/.ssh"),
            ("RUNNER_TEMP", "/etc"),
            ("GITHUB_EVENT_PATH", "/root/x"),
        ]);
        let p = plan(None, Path::new("/b/checkout"), &hostile).unwrap();
        assert_eq!(p.binds.len(), 1);
        assert!(p.binds[0].source == Path::new("/b/checkout") && p.binds[0].writable);
        assert_eq!(p.workdir, Path::new("/b/checkout"));
        let v = vars(&[("GITHUB_WORKSPACE", "/w:x")]);
        let e = plan(Some(Path::new("/s/1.sh")), Path::new("/"), &v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("GITHUB_WORKSPACE") && e.contains("':'"), "{e}");
        let e = plan(Some(Path::new("1.sh")), Path::new("/"), &[]).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
    }
}
