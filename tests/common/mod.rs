//! Shared machinery for the end-to-end tests: the real `pinfold` binary run as
//! an unprivileged user, a busybox rootfs with a static probe, and helpers.
//!
//! CI runs as root. The sandbox must be exercised by an ordinary user, so when
//! the tests run as root every `pinfold` command runs as `pinfold-test`
//! (created by `tests/setup.sh`), from copies of the binary and fixtures in a
//! world-readable directory (the checkout may live under /root). Run as an
//! ordinary user, the tests use that user.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

pub const TEST_USER: &str = "pinfold-test";

pub struct Fixtures {
    /// Keeps the directory alive for the whole test binary.
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    /// The pinfold binary, copied where the test user can run it.
    pub pinfold: PathBuf,
    /// A busybox rootfs with /bin/probe, owned by the test user.
    pub rootfs: PathBuf,
    /// uid/gid to run as (None: the current user).
    pub user: Option<(u32, u32)>,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    for l in passwd.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == name {
            return Some((f[2].parse().ok()?, f[3].parse().ok()?));
        }
    }
    None
}

pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let status = Command::new("chown")
        .arg("-R")
        .arg("-h")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown -R {}", path.display());
}

fn find_busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox is not installed: run `sudo tests/setup.sh` (installs busybox-static)");
}

/// Builds a busybox rootfs in `dir`: /bin/busybox + applet links, /bin/probe,
/// and a minimal /etc.
pub fn build_rootfs(dir: &Path, probe: &Path) {
    let busybox = find_busybox();
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(&busybox, dir.join("bin/busybox")).unwrap();
    let out = Command::new(&busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::copy(probe, dir.join("bin/probe")).unwrap();
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

fn compile_probe(out: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/probe.c");
    run_ok(
        Command::new("cc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(out)
            .arg(&src),
        "cc -static probe.c (install gcc and libc6-dev: sudo tests/setup.sh)",
    );
}

/// The `pinfold-exec` binary of this build: another package of the
/// workspace, so cargo builds it for its own tests, not for these; built
/// here (a no-op when it is fresh) so that it is never a stale one.
fn lean_exec() -> PathBuf {
    let pinfold = Path::new(env!("CARGO_BIN_EXE_pinfold"));
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build.args(["build", "--quiet", "-p", "pinfold-exec"]);
    if let Some(profile) = pinfold
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|p| p.to_str())
        && profile != "debug"
    {
        build.args(["--profile", profile]);
    }
    build.current_dir(env!("CARGO_MANIFEST_DIR"));
    run_ok(&mut build, "cargo build -p pinfold-exec");
    pinfold.with_file_name("pinfold-exec")
}

/// Runs `cmd` on the host; asserts it ran and succeeded, naming `what` and
/// its stderr.
#[track_caller]
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A tool of the PyPI venv that tests/setup.sh makes (tests/.venv).
pub fn venv(tool: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/.venv/bin")
        .join(tool);
    assert!(
        bin.exists(),
        "{} is missing: run `sudo bash tests/setup.sh`",
        bin.display()
    );
    bin
}

/// `check-jsonschema` with the built-in `schema` it ships (e.g.
/// `vendor.github-workflows`) on `file`.
pub fn check_jsonschema(schema: &str, file: &Path) -> Output {
    Command::new(venv("check-jsonschema"))
        .args(["--builtin-schema", schema])
        .arg(file)
        .output()
        .expect("run check-jsonschema")
}

/// Bytes of a child's output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command's stdout then its stderr, as text: what a person running it
/// at a terminal would read.
pub fn output_text(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

/// A process the test started (a server, an agent), killed and reaped when
/// dropped, so that a test failing half-way leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asserts that `out` exited 0, naming `what` with its output; returns its
/// stdout.
#[track_caller]
pub fn ok(out: &Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// After a CI driver's cleanup: the job's directory `dir` is gone and no
/// process names it (a keeper or a step left running).
#[track_caller]
pub fn assert_job_gone(dir: &Path) {
    assert!(!dir.exists(), "{} is left", dir.display());
    let left = processes_matching(&dir.to_string_lossy());
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// A CI driver's call refused before it ran the job's script: it exits
/// `code`, nothing the script prints (`marker`) is in its stdout, and its
/// stderr says `says`.
#[track_caller]
pub fn assert_refused_unrun(out: &Output, code: i32, marker: &str, says: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(!text(&out.stdout).contains(marker), "the script ran");
    assert!(err.contains(says), "{err}");
}

/// The probe's escapes a CI step runs to see the sandbox: each must print
/// `NAME: refused`.
pub const PROBES: &str = "mount unshare-user keyctl bpf ptrace-init io_uring_setup";

/// The log of a step that ran `/bin/probe` on each of `probes` (names
/// separated by spaces) and printed the Seccomp and NoNewPrivs lines of its
/// /proc/self/status: every escape was refused, and the step ran under the
/// seccomp filter with no way to gain privileges.
#[track_caller]
pub fn assert_step_sandboxed(log: &str, probes: &str) {
    for p in probes.split_whitespace() {
        assert!(log.contains(&format!("{p}: refused")), "{p}: {log}");
    }
    assert!(!log.contains("ALLOWED"), "{log}");
    assert!(
        log.contains("Seccomp:\t2") && log.contains("NoNewPrivs:\t1"),
        "{log}"
    );
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pinfold-tests-")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path().to_owned();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pinfold = root.join("pinfold");
        std::fs::copy(env!("CARGO_BIN_EXE_pinfold"), &pinfold).unwrap();
        std::fs::set_permissions(&pinfold, std::fs::Permissions::from_mode(0o755)).unwrap();
        // pinfold-exec beside it, as installed: the runner's job containers
        // run it (`runner::lean_exec`).
        let lean = root.join("pinfold-exec");
        std::fs::copy(lean_exec(), &lean).unwrap();
        std::fs::set_permissions(&lean, std::fs::Permissions::from_mode(0o755)).unwrap();
        let probe = root.join("probe");
        compile_probe(&probe);
        let rootfs = root.join("rootfs");
        build_rootfs(&rootfs, &probe);
        let user = if is_root() {
            let u = lookup_user(TEST_USER).unwrap_or_else(|| {
                panic!(
                    "running as root needs the user {TEST_USER}: run `sudo tests/setup.sh` first"
                )
            });
            chown_tree(&rootfs, u.0, u.1);
            Some(u)
        } else {
            None
        };
        // A static is never dropped: remove the directory (a copy of the
        // binary, the rootfs, every test's files) when the test binary exits,
        // or each run would leave ~165 MB in /tmp.
        extern "C" fn remove_fixtures() {
            if let Some(f) = F.get() {
                let _ = std::fs::remove_dir_all(&f.root);
            }
        }
        // SAFETY: registers a plain extern "C" fn with no arguments; it runs
        // at exit, after the test harness has joined its threads.
        unsafe { libc::atexit(remove_fixtures) };
        Fixtures {
            _dir: dir,
            root,
            pinfold,
            rootfs,
            user,
        }
    })
}

/// A fresh directory owned by the test user (for PINFOLD_HOME, binds…).
pub fn user_dir() -> tempfile::TempDir {
    let f = fixtures();
    let d = tempfile::Builder::new()
        .prefix("pf-")
        .tempdir_in(&f.root)
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some((uid, gid)) = f.user {
        chown_tree(d.path(), uid, gid);
    }
    d
}

/// `pinfold ARGS` as the test user, with a clean environment.
pub fn pinfold() -> Command {
    let f = fixtures();
    let mut c = pinfold_clean(&f.root.join("home"));
    if let Some((uid, gid)) = f.user {
        c.uid(uid).gid(gid);
    }
    c
}

/// `pinfold ARGS` as real root (skip the test unless [`is_root`]), with the
/// same clean environment: operators do run runners as root, and root's
/// containers map onto an unprivileged host range (`PINFOLD_ROOT_IDMAP`).
pub fn pinfold_as_root() -> Command {
    pinfold_clean(&fixtures().root.join("root-home"))
}

/// The fixtures' `pinfold` with a clean environment and `home` as
/// `PINFOLD_HOME`, as the caller.
fn pinfold_clean(home: &Path) -> Command {
    let f = fixtures();
    let mut c = Command::new(&f.pinfold);
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", &f.root)
        .env("PINFOLD_HOME", home)
        .current_dir(&f.root)
        .stdin(Stdio::null());
    c
}

/// `pinfold exec --rootfs <busybox> EXTRA... -- CMD...`, as the test user.
pub fn exec(extra: &[&str], cmd: &[&str]) -> Output {
    exec_cmd(extra, cmd).output().expect("run pinfold")
}

pub fn exec_cmd(extra: &[&str], cmd: &[&str]) -> Command {
    let f = fixtures();
    let mut c = pinfold();
    c.arg("exec")
        .arg("--rootfs")
        .arg(&f.rootfs)
        .args(extra)
        .arg("--")
        .args(cmd);
    c
}

/// `pinfold policy check POLICY` (a name or a file), as the test user.
pub fn policy_check(policy: impl AsRef<std::ffi::OsStr>) -> Output {
    pinfold()
        .args(["policy", "check"])
        .arg(policy)
        .output()
        .expect("run pinfold policy check")
}

/// `pinfold policy check POLICY` for a policy it must refuse: exit 1.
/// Returns stderr.
#[track_caller]
pub fn policy_refused(policy: impl AsRef<std::ffi::OsStr>) -> String {
    let out = policy_check(policy);
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `pinfold policy check POLICY` for a policy it must refuse: exit 1 and
/// one line on stderr naming each of `names` (the field, the bad value).
/// Returns that line.
#[track_caller]
pub fn assert_policy_refused_naming(policy: impl AsRef<std::ffi::OsStr>, names: &[&str]) -> String {
    let what = Path::new(policy.as_ref()).display().to_string();
    let out = policy_check(policy.as_ref());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    for name in names {
        assert!(err.contains(name), "{what}: {name} is not named: {err}");
    }
    assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
    err
}

/// Runs a shell snippet on the host (`sh -ec`); asserts it succeeds and
/// returns its trimmed stdout.
#[track_caller]
pub fn host_sh(script: &str) -> String {
    let o = run_ok(Command::new("sh").arg("-ec").arg(script), script);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Runs a shell snippet in the container; returns (exit code, stdout, stderr).
pub fn sh(extra: &[&str], script: &str) -> (i32, String, String) {
    let out = exec(extra, &["/bin/sh", "-c", script]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a shell snippet in the container; asserts it exits 0 (showing its
/// stderr if not) and returns its stdout.
#[track_caller]
pub fn sh_ok(extra: &[&str], script: &str) -> String {
    let (code, out, err) = sh(extra, script);
    assert_eq!(code, 0, "{err}");
    out
}

/// Runs the probe; asserts it reports the attempt refused.
#[track_caller]
pub fn assert_refused(extra: &[&str], probe: &[&str]) {
    let mut cmd = vec!["/bin/probe"];
    cmd.extend_from_slice(probe);
    let out = exec(extra, &cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "probe {probe:?} was not refused: stdout={stdout} stderr={}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("refused"), "{stdout}");
}

/// Host pids of `pid` and all its descendants (from /proc).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut children: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // The ppid is the second field after the parenthesised command.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                if let Some(ppid) = f.get(1).and_then(|s| s.parse().ok()) {
                    children.push((p, ppid));
                }
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(
            children
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// The real uid of a host process, as the host sees it.
pub fn host_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Host pids whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{p}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                v.push(p);
            }
        }
    }
    v
}

/// `pinfold ARGS` as the test user inside bubblewrap with `--disable-userns`:
/// pinfold then cannot create a user namespace, as on a host with
/// `user.max_user_namespaces=0`. `None` when bwrap is not installed.
pub fn pinfold_without_userns(args: &[&std::ffi::OsStr]) -> Option<Output> {
    if Command::new("bwrap").arg("--version").output().is_err() {
        eprintln!("skipped: bwrap is not installed (apt-get install bubblewrap)");
        return None;
    }
    let f = fixtures();
    let mut c = Command::new("bwrap");
    c.args([
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--",
    ])
    .arg(&f.pinfold)
    .args(args)
    .env("PINFOLD_HOME", f.root.join("home-no-userns"))
    .stdin(Stdio::null());
    if let Some((uid, gid)) = f.user {
        c.uid(uid).gid(gid);
    }
    Some(c.output().expect("run bwrap"))
}

/// Builds an OCI image with umoci in `fixtures().root/NAME`: an empty image
/// unpacked, `populate` run by sh with `$r` its rootfs, repacked; returns
/// `oci:DIR@sha256:D`.
pub fn umoci_image(name: &str, populate: &str) -> String {
    let root = fixtures().root.join(name);
    let script = format!(
        r#"
l={root}/layout; b={root}/bundle
umoci init --layout $l
umoci new --image $l:img
umoci unpack --rootless --image $l:img $b >/dev/null
r=$b/rootfs
{populate}
umoci repack --image $l:img $b >/dev/null
rm -rf $b
chmod -R a+rX {root}
python3 -c "import json;print(json.load(open('$l/index.json'))['manifests'][0]['digest'])"
"#,
        root = root.display()
    );
    let o = run_ok(
        Command::new("sh").arg("-ec").arg(&script),
        &format!("building the {name}"),
    );
    let d = String::from_utf8_lossy(&o.stdout).trim().to_string();
    format!("oci:{}/layout@{d}", root.display())
}

/// A busybox image built with umoci, once per test binary:
/// `oci:DIR@sha256:D` (no /etc/passwd: the verify user variation makes one).
pub fn busybox_image() -> &'static str {
    static IMG: OnceLock<String> = OnceLock::new();
    IMG.get_or_init(|| {
        umoci_image(
            "busybox-image",
            r#"mkdir -p $r/bin $r/tmp $r/etc
cp "$(command -v busybox)" $r/bin/busybox
for c in $($r/bin/busybox --list); do [ "$c" = busybox ] || ln -s busybox $r/bin/$c; done
chmod 1777 $r/tmp"#,
        )
    })
}

/// An OCI image of the fixtures' rootfs (busybox and the probe), built with
/// umoci: `oci:DIR@sha256:D`.
pub fn probe_image() -> &'static str {
    static IMG: OnceLock<String> = OnceLock::new();
    IMG.get_or_init(|| {
        umoci_image(
            "probe-image",
            &format!("rm -rf $r && cp -a {} $r", fixtures().rootfs.display()),
        )
    })
}
