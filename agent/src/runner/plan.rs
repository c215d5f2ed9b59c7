//! Step planning, pure: what the job container's `pinfold exec` gets (its
//! program, arguments and whole environment) and what each step asks of
//! it (a [`StepRequest`]), from the job spec, the chosen policy, the run's [`RunOptions`] and the runner's [`HostEnv`].
//! Nothing here starts a process, touches a file or reads the
//! environment, so it is unit-tested without user namespaces; running the
//! plan is [`super`]'s job.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pinfold_api::JobSpec;
use pinfold_sandbox::container::IdMapMode;
use pinfold_sandbox::container::idmap::IdMapError;
use pinfold_sandbox::container::steps::StepRequest;

/// Environment names that change how the host-side `pinfold exec` (or the
/// dynamic loader under it) behaves.
pub fn reserved_name(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "TMPDIR",
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
        "REGISTRY_AUTH_FILE",
        "GLIBC_TUNABLES",
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "MALLOC_TRACE",
        "HOSTALIASES",
        "RES_OPTIONS",
        "LOCALDOMAIN",
        "TZDIR",
    ];
    EXACT.contains(&name)
        || ["PINFOLD_", "LD_", "RUST_", "CARGO_", "MALLOC_"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// What of the caller's environment the `pinfold exec` child keeps.
pub const PASS_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "PINFOLD_HOME",
    "XDG_DATA_HOME",
    "PINFOLD_POLICY_PATH",
    "PINFOLD_ROOT_IDMAP",
    "PINFOLD_USERNS",
    "PINFOLD_PLATFORM",
    "REGISTRY_AUTH_FILE",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "RUST_LOG",
];

/// The runner's own environment, as the binary read it: this crate reads
/// no environment variables.
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    /// The [`PASS_ENV`] variables that are set, in that order: each
    /// step's `pinfold exec` keeps them (and nothing else of the caller's).
    pub pass: Vec<(String, OsString)>,
    /// `PINFOLD_USERNS` (`None`: unset or not unicode, which is `auto`):
    /// the steps' id mapping, which the job file system must share.
    pub userns: Option<String>,
}

impl HostEnv {
    /// Reads what the runner needs of an environment through `var` (the
    /// binary passes `std::env::var_os`).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> HostEnv {
        HostEnv {
            pass: PASS_ENV
                .iter()
                .filter_map(|k| var(k).map(|v| (k.to_string(), v)))
                .collect(),
            userns: var("PINFOLD_USERNS").and_then(|v| v.into_string().ok()),
        }
    }

    /// The steps' id mapping (exec reads `PINFOLD_USERNS` too), so every
    /// id a step writes exists on the job file system.
    pub fn id_map_mode(&self) -> Result<IdMapMode, IdMapError> {
        match &self.userns {
            Some(m) => IdMapMode::parse(m),
            None => Ok(IdMapMode::Auto),
        }
    }
}

/// How one run differs from a plain one (`pinfold verify` varies these
/// on purpose; [`Default`] is a plain run). Each field maps to a
/// `pinfold exec` flag or to how the step's process is started.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Where the workspace is mounted (and the working directory) in the
    /// container instead of `/workspace`.
    pub mount: Option<PathBuf>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--domainname`.
    pub domainname: Option<String>,
    /// `--umask`.
    pub umask: Option<u32>,
    /// `--reverse-env`.
    pub reverse_env: bool,
    /// Environment set before the job's own `env` (which wins on a clash).
    pub env: Vec<(String, String)>,
    /// Files written into the container's writable layer before the first
    /// step, by path relative to its root (e.g. `etc/passwd`).
    pub files: Vec<(PathBuf, String)>,
    /// Restrict the steps to this many CPUs (the first ones of the
    /// caller's affinity mask), with `sched_setaffinity` on the child.
    pub cpus: Option<usize>,
    /// Host paths bound into each step (`--bind SRC:DST[:rw]`), which the
    /// runner chooses (the GitLab driver's script and `gitlab-runner`),
    /// never the job. Paths with `:` cannot be expressed and are refused
    /// by exec.
    pub binds: Vec<pinfold_sandbox::container::Bind>,
}

/// What every step of one job shares.
pub struct StepInputs<'a> {
    /// The pinfold binary.
    pub exe: &'a Path,
    /// The job.
    pub spec: &'a JobSpec,
    /// Secret values by name.
    pub secrets: &'a BTreeMap<String, String>,
    /// The runner's environment.
    pub host: &'a HostEnv,
    /// The chosen policy, as `pinfold exec --policy` takes it.
    pub policy: &'a str,
    /// The job file system's socket.
    pub job_fs: &'a Path,
    /// Where exec writes the step's report.
    pub report: &'a Path,
    /// The lean `pinfold-exec` binary, when one is installed beside the
    /// pinfold binary: the job container runs it instead of `pinfold exec`
    /// (the same code, a smaller binary).
    pub lean: Option<&'a Path>,
}

/// One step's `pinfold exec` child, or a job container: started with
/// exactly `env` (nothing else of the caller's environment) and `args`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepPlan {
    /// The program (the pinfold binary).
    pub program: PathBuf,
    /// Its arguments, `exec` first.
    pub args: Vec<OsString>,
    /// Its whole environment, in the order set (a later entry wins).
    pub env: Vec<(OsString, OsString)>,
}

impl StepInputs<'_> {
    /// The job container: one `pinfold exec` for all of the job's steps,
    /// serving them on its fd [`CONTROL_FD`] (each step is a
    /// [`StepInputs::request`]).
    pub fn container(&self, o: &RunOptions) -> StepPlan {
        let (mut args, env) = self.exec(o);
        if self.lean.is_some() {
            args.remove(0); // `exec`: pinfold-exec has no subcommands
        }
        for a in ["--report".as_ref(), self.report.as_os_str()] {
            args.push(a.to_owned());
        }
        args.push("--control-fd".into());
        args.push(CONTROL_FD.to_string().into());
        StepPlan {
            program: self.lean.unwrap_or(self.exe).to_owned(),
            args,
            env,
        }
    }

    /// One step of the job container: `run` with `/bin/sh -e -c`, within
    /// `timeout`, with the job's env and secrets (values travel over the
    /// control channel: on no command line, in no host-side environment).
    pub fn request(&self, run: &str, timeout: Option<Duration>) -> StepRequest {
        let mut env: Vec<(String, String)> = self
            .spec
            .env
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
            .collect();
        for k in &self.spec.secrets {
            if let Some(v) = self.secrets.get(k.as_str()) {
                env.push((k.as_str().to_owned(), v.clone()));
            }
        }
        StepRequest {
            argv: ["/bin/sh", "-e", "-c", run].map(str::to_owned).to_vec(),
            env,
            // Under a millisecond still limits: never 0 (no limit).
            timeout_ms: timeout.map(|t| (t.as_millis() as u64).max(1)),
        }
    }

    /// What every `pinfold exec` of the job is given: its arguments up to
    /// the job's own env, and the host environment it keeps.
    fn exec(&self, o: &RunOptions) -> (Vec<OsString>, Vec<(OsString, OsString)>) {
        let mut args: Vec<OsString> = Vec::new();
        let env: Vec<(OsString, OsString)> = self
            .host
            .pass
            .iter()
            .map(|(k, v)| (k.into(), v.clone()))
            .collect();
        let mut arg = |a: &dyn AsRef<std::ffi::OsStr>| args.push(a.as_ref().to_owned());
        let mount = o
            .mount
            .clone()
            .unwrap_or_else(|| PathBuf::from("/workspace"));
        arg(&"exec");
        arg(&"--image");
        arg(&self.spec.image.as_str());
        arg(&"--policy");
        arg(&self.policy);
        arg(&"--job-fs");
        arg(&self.job_fs);
        arg(&"--workdir");
        arg(&mount);
        if let Some(n) = self.spec.network {
            arg(&"--network");
            arg(&n.as_str());
        }
        for a in pinfold_sandbox::ceiling::limit_args(&self.spec.limits) {
            arg(&a);
        }
        if let Some(h) = &o.hostname {
            arg(&"--hostname");
            arg(h);
        }
        if let Some(d) = &o.domainname {
            arg(&"--domainname");
            arg(d);
        }
        if let Some(m) = o.umask {
            arg(&"--umask");
            arg(&format!("{m:03o}"));
        }
        if o.reverse_env {
            arg(&"--reverse-env");
        }
        for b in &o.binds {
            arg(&"--bind");
            arg(&b.to_arg());
        }
        for (k, v) in &o.env {
            arg(&"--env");
            arg(&format!("{k}={v}"));
        }
        (args, env)
    }
}

/// The job container's fd for its control channel.
pub const CONTROL_FD: i32 = 3;

/// A step's time limit: its own and what is left of the job's, whichever
/// is shorter.
pub fn step_timeout(step: Option<Duration>, job_left: Option<Duration>) -> Option<Duration> {
    match (step, job_left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> JobSpec {
        JobSpec::from_yaml(yaml).unwrap()
    }

    const IMAGE: &str = "registry.example/busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn inputs<'a>(
        spec: &'a JobSpec,
        secrets: &'a BTreeMap<String, String>,
        host: &'a HostEnv,
    ) -> StepInputs<'a> {
        StepInputs {
            exe: Path::new("/usr/bin/pinfold"),
            spec,
            secrets,
            host,
            policy: "/etc/pinfold/ci.toml",
            job_fs: Path::new("/jobs/1/jobfs.sock"),
            report: Path::new("/jobs/1/step.json"),
            lean: None,
        }
    }

    fn strs(v: &[OsString]) -> Vec<&str> {
        v.iter().map(|a| a.to_str().unwrap()).collect()
    }

    fn env_of(p: &StepPlan) -> Vec<(&str, &str)> {
        p.env
            .iter()
            .map(|(k, v)| (k.to_str().unwrap(), v.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn a_job_container_runs_exec_with_the_chosen_policy_and_the_job_fs() {
        let s = spec(&format!(
            "image: {IMAGE}\nsteps:\n  - name: test\n    run: make test\n"
        ));
        let (secrets, host) = (BTreeMap::new(), HostEnv::default());
        let mut i = inputs(&s, &secrets, &host);
        let p = i.container(&RunOptions::default());
        assert_eq!(p.program, Path::new("/usr/bin/pinfold"));
        assert_eq!(
            strs(&p.args),
            [
                "exec",
                "--image",
                IMAGE,
                "--policy",
                "/etc/pinfold/ci.toml",
                "--job-fs",
                "/jobs/1/jobfs.sock",
                "--workdir",
                "/workspace",
                "--report",
                "/jobs/1/step.json",
                "--control-fd",
                "3",
            ]
        );
        assert!(p.env.is_empty(), "nothing of the caller's: {:?}", p.env);
        let r = i.request("make test", None);
        assert_eq!(r.argv, ["/bin/sh", "-e", "-c", "make test"]);
        assert_eq!(r.timeout_ms, None);
        // pinfold-exec, where it is installed, takes the same options
        // without the subcommand.
        i.lean = Some(Path::new("/usr/bin/pinfold-exec"));
        let lean = i.container(&RunOptions::default());
        assert_eq!(lean.program, Path::new("/usr/bin/pinfold-exec"));
        assert_eq!(lean.args[..], p.args[1..]);
    }

    #[test]
    fn env_values_and_secrets_travel_in_the_request_not_on_the_command_line() {
        let s = spec(&format!(
            "image: {IMAGE}\nenv:\n  GREETING: hello\n  PATH: /opt/bin\nsecrets: [DEPLOY_KEY, MISSING]\nsteps:\n  - name: test\n    run: make test\n"
        ));
        let secrets = BTreeMap::from([("DEPLOY_KEY".to_string(), "s3cret".to_string())]);
        let host = HostEnv::default();
        let i = inputs(&s, &secrets, &host);
        let p = i.container(&RunOptions::default());
        let leaked =
            |a: &str| a.contains("hello") || a.contains("s3cret") || a.contains("/opt/bin");
        assert!(!strs(&p.args).into_iter().any(leaked), "{:?}", p.args);
        assert!(p.env.is_empty(), "{:?}", p.env);
        // PATH too: it steers only the step, never the host-side exec.
        assert_eq!(
            i.request("make test", None).env,
            [
                ("GREETING".to_string(), "hello".to_string()),
                ("PATH".into(), "/opt/bin".into()),
                ("DEPLOY_KEY".into(), "s3cret".into())
            ]
        );
    }

    #[test]
    fn the_host_keeps_only_what_it_passes_and_options_map_to_flags() {
        let host = HostEnv::from_vars(|k| match k {
            "PATH" => Some("/usr/bin".into()),
            "PINFOLD_HOME" => Some("/var/lib/pinfold".into()),
            "SSH_AUTH_SOCK" | "AWS_SECRET_ACCESS_KEY" => Some("leak".into()),
            _ => None,
        });
        let s = spec(&format!(
            "image: {IMAGE}\nnetwork: none\nlimits:\n  pids: 64\nsteps:\n  - name: test\n    run: make test\n"
        ));
        let o = RunOptions {
            mount: Some("/build".into()),
            hostname: Some("h1".into()),
            domainname: Some("d1".into()),
            umask: Some(0o22),
            reverse_env: true,
            env: vec![("TZ".into(), "UTC".into())],
            binds: vec![pinfold_sandbox::container::Bind {
                source: "/tmp/s".into(),
                dest: "/.s".into(),
                writable: false,
            }],
            ..RunOptions::default()
        };
        let secrets = BTreeMap::new();
        let i = inputs(&s, &secrets, &host);
        let p = i.container(&o);
        assert_eq!(
            env_of(&p),
            [("PATH", "/usr/bin"), ("PINFOLD_HOME", "/var/lib/pinfold")]
        );
        let args = strs(&p.args);
        let after = |flag: &str| {
            let i = args.iter().position(|a| *a == flag).unwrap();
            args[i + 1]
        };
        assert_eq!(after("--workdir"), "/build");
        assert_eq!(after("--network"), "none");
        assert_eq!(after("--limit"), "pids=64");
        assert_eq!(after("--hostname"), "h1");
        assert_eq!(after("--domainname"), "d1");
        assert_eq!(after("--umask"), "022");
        assert_eq!(after("--env"), "TZ=UTC");
        assert_eq!(after("--bind"), "/tmp/s:/.s:ro");
        assert!(args.contains(&"--reverse-env"));
        // Under a millisecond still limits: never 0 (no limit).
        let r = i.request("make test", Some(Duration::from_micros(10)));
        assert_eq!(r.timeout_ms, Some(1));
    }

    #[test]
    fn userns_from_the_host_is_parsed_with_the_same_default() {
        assert_eq!(HostEnv::default().id_map_mode().unwrap(), IdMapMode::Auto);
        let single = HostEnv::from_vars(|k| (k == "PINFOLD_USERNS").then(|| "single".into()));
        assert_eq!(single.id_map_mode().unwrap(), IdMapMode::Single);
        assert_eq!(
            single.pass,
            [("PINFOLD_USERNS".to_string(), "single".into())]
        );
        let bad = HostEnv {
            userns: Some("both".into()),
            ..HostEnv::default()
        };
        let e = bad.id_map_mode().unwrap_err().to_string();
        assert!(e.contains("\"both\" is not understood"), "{e}");
    }

    #[test]
    fn a_step_gets_the_shorter_of_its_own_and_the_jobs_time_left() {
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(step_timeout(s(10), s(3)), s(3));
        assert_eq!(step_timeout(s(2), s(3)), s(2));
        assert_eq!(step_timeout(None, s(3)), s(3));
        assert_eq!(step_timeout(s(10), None), s(10));
        assert_eq!(step_timeout(None, None), None);
    }

    #[test]
    fn names_that_steer_the_host_side_are_reserved() {
        for n in [
            "PATH",
            "LD_PRELOAD",
            "PINFOLD_HOME",
            "GLIBC_TUNABLES",
            "TMPDIR",
        ] {
            assert!(reserved_name(n), "{n}");
        }
        for n in ["GREETING", "DEPLOY_KEY", "CI", "PATHS"] {
            assert!(!reserved_name(n), "{n}");
        }
    }
}
