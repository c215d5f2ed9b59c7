//! `pinfold verify`: the real binary, as the unprivileged test user, runs
//! real jobs on a busybox OCI image several times under the variations,
//! compares artifacts, and `--bisect` names what flips a differing one.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use common::{busybox_image as image, host_sh as sh};

/// A directory the test user can write, with `job.yaml` (these steps and
/// `artifacts: [out/*]`) and a source tree `src/` (files a..e, sub/x).
fn setup(steps: &str) -> tempfile::TempDir {
    let d = common::user_dir();
    let dir = d.path();
    std::fs::write(
        dir.join("job.yaml"),
        format!("image: {}\nsteps:\n{steps}artifacts: [out/*]\n", image()),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("src/sub")).unwrap();
    for n in ["a", "b", "c", "d", "e", "sub/x"] {
        std::fs::write(dir.join("src").join(n), format!("file {n}\n")).unwrap();
    }
    sh(&format!("chmod -R a+rwX '{}'", dir.display()));
    d
}

struct Verified {
    code: i32,
    report: Value,
    stdout: String,
    stderr: String,
}

fn verify(dir: &Path, extra: &[&str]) -> Verified {
    verify_with(common::pinfold(), dir, extra)
}

/// [`verify`], which must exit `code` (else its output is shown).
#[track_caller]
fn verify_exits(dir: &Path, extra: &[&str], code: i32) -> Verified {
    let v = verify(dir, extra);
    assert_eq!(v.code, code, "{}\n{}", v.stdout, v.stderr);
    v
}

/// [`verify`] with `pinfold` as the command (the test user's or root's).
fn verify_with(mut pinfold: Command, dir: &Path, extra: &[&str]) -> Verified {
    let o = pinfold
        .env("PINFOLD_HOME", dir.join("home"))
        .current_dir(dir)
        .args([
            "verify", "job.yaml", "--source", "src", "--out", "out", "--json",
        ])
        .args(extra)
        .output()
        .expect("run pinfold verify");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    Verified {
        code: o.status.code().unwrap_or(-1),
        report: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn applied(r: &Value) -> Vec<String> {
    r["variations"]["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

/// The report's entry for artifact `name`.
#[track_caller]
fn artifact<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no artifact {name}: {r:#}"))
}

fn flipped_by(r: &Value, name: &str) -> Vec<String> {
    let a = artifact(r, name);
    assert_eq!(a["identical"], false, "{a}");
    a["flipped_by"]
        .as_array()
        .unwrap_or_else(|| panic!("no flipped_by: {a}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// A build that is reproducible: a tar of the sources with fixed mtimes
/// (SOURCE_DATE_EPOCH), numeric owner 0, sorted names, gzip -n; plus the
/// things a careless build would embed, normalised.
#[test]
fn reproducible_job_is_identical_under_every_variation() {
    let d = setup(concat!(
        "  - name: build\n",
        "    run: |\n",
        "      mkdir -p out stage\n",
        "      for f in $(find . -path ./out -prune -o -path ./stage -prune -o -type f -print | sort); do cp $f stage/; done\n",
        "      chmod 644 stage/*\n",
        "      touch -d @$SOURCE_DATE_EPOCH stage/* stage\n",
        "      (cd stage && ls | sort > ../list) \n",
        "      tar -c -C stage -T list | gzip -n > out/src.tar.gz\n",
        "      echo built > out/app\n",
        "      chmod 644 out/app\n",
    ));
    let v = verify_exits(d.path(), &["--runs", "3"], 0);
    let r = &v.report;
    assert_eq!(r["verdict"], "reproducible");
    let names = applied(r);
    for n in [
        "build_path",
        "time",
        "hostname",
        "umask",
        "timezone",
        "locale",
        "user",
        "env_order",
        "home",
    ] {
        assert!(names.contains(&n.to_string()), "{n} not applied: {r:#}");
    }
    // cpus and dir_order depend on the machine; the report says which.
    let reported = names.len() + r["variations"]["not_applied"].as_array().unwrap().len();
    assert_eq!(reported, 11, "{r:#}");
    let arts = r["artifacts"].as_array().unwrap();
    assert_eq!(arts.len(), 2, "{r:#}");
    for a in arts {
        let ds = a["sha256"].as_array().unwrap();
        assert_eq!(ds.len(), 3);
        assert!(ds.iter().all(|x| x == &ds[0] && x.is_string()), "{a}");
    }
    // Every run wrote its artifacts and signed provenance.
    let key = d.path().join("home/keys/runner.key.pub");
    for k in 1..=3 {
        let run = d.path().join(format!("out/run-{k}"));
        let o = common::pinfold()
            .args(["attest", "verify"])
            .arg(run.join("provenance.intoto.json"))
            .arg("--key")
            .arg(&key)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(d.path().join("out/report.json").is_file());
}

/// Each job embeds one thing it must not; each is caught (exit 1) and
/// --bisect names the variation that flips it.
#[test]
fn time_hostname_and_umask_are_caught_and_named() {
    let d = setup(concat!(
        "  - name: build\n",
        "    run: |\n",
        "      mkdir -p out\n",
        "      date +%s > out/stamp\n",
        "      hostname > out/host; cat /proc/sys/kernel/domainname >> out/host\n",
        "      touch out/perm; stat -c %a out/perm > out/mode\n",
        "      echo same > out/same\n",
        "      if [ \"$(hostname)\" = pinfold ]; then echo x > out/only-in-control; fi\n",
    ));
    let v = verify_exits(d.path(), &["--bisect"], 1);
    let r = &v.report;
    assert_eq!(r["verdict"], "not reproducible");
    assert_eq!(flipped_by(r, "out/stamp"), ["time"]);
    assert_eq!(flipped_by(r, "out/host"), ["hostname"]);
    assert_eq!(flipped_by(r, "out/mode"), ["umask"]);
    let same = artifact(r, "out/same");
    assert_eq!(same["identical"], true);
    // Missing in a run is a difference too.
    assert_eq!(flipped_by(r, "out/only-in-control"), ["hostname"]);
    let missing = artifact(r, "out/only-in-control");
    assert!(missing["sha256"][1].is_null(), "{missing}");
    assert!(v.stderr.contains("flipped by: time"), "{}", v.stderr);
    // diffoscope (optional at run time; tests/setup.sh installs it).
    if Command::new("sh")
        .args(["-c", "command -v diffoscope"])
        .output()
        .unwrap()
        .status
        .success()
    {
        let a = artifact(r, "out/host");
        let file = d
            .path()
            .join(a["diffoscope"].as_str().expect("a diffoscope report"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("verify-2"), "{text}");
    } else {
        assert_eq!(r["diffoscope"], "not installed");
    }
}

#[test]
fn directory_order_and_the_rest_are_caught_and_named() {
    let d = setup(concat!(
        "  - name: build\n",
        "    run: |\n",
        "      mkdir -p out\n",
        "      find . -path ./out -prune -o -print > out/order\n",
        "      pwd > out/path\n",
        "      date +%H > out/hour\n",
        "      id -un > out/user || true\n",
        "      tr '\\0' '\\n' < /proc/$$/environ > out/env\n",
        "      nproc > out/cpus\n",
        "      echo $HOME > out/home\n",
        "      echo \"$LANG\" > out/lang\n",
    ));
    let v = verify_exits(d.path(), &["--bisect", "--vary=-time"], 1);
    let r = &v.report;
    let names = applied(r);
    assert!(!names.contains(&"time".to_string()));
    assert_eq!(flipped_by(r, "out/path"), ["build_path"]);
    assert_eq!(flipped_by(r, "out/hour"), ["timezone"]);
    assert_eq!(flipped_by(r, "out/user"), ["user"]);
    assert_eq!(flipped_by(r, "out/home"), ["home"]);
    assert_eq!(flipped_by(r, "out/lang"), ["locale"]);
    let env = flipped_by(r, "out/env");
    assert!(env.contains(&"env_order".to_string()), "{env:?}");
    if names.contains(&"dir_order".to_string()) {
        assert_eq!(flipped_by(r, "out/order"), ["dir_order"]);
    }
    if names.contains(&"cpus".to_string()) {
        assert_eq!(flipped_by(r, "out/cpus"), ["cpus"]);
    }
}

/// As real root, every run gets its source and the user variation's
/// `/etc/passwd` in its writable layer: both are written as the
/// containers' root, an unprivileged host id that may not search the
/// runner's 0700 job directory (both failed with EACCES before).
#[test]
fn verify_as_real_root_fills_every_run() {
    if !common::is_root() {
        eprintln!("skipped: needs to run as root");
        return;
    }
    let d = setup(
        "  - name: build\n    run: mkdir out; cat a sub/x > out/ax; id -un > out/user || echo none > out/user\n",
    );
    let v = verify_with(
        common::pinfold_as_root(),
        d.path(),
        &["--vary", "user,dir_order"],
    );
    assert_eq!(v.code, 1, "{}{}", v.stdout, v.stderr);
    let identical = |name: &str| {
        v.report["artifacts"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["name"] == name))
            .map(|a| a["identical"].clone())
    };
    assert_eq!(
        identical("out/ax"),
        Some(Value::Bool(true)),
        "{:#}",
        v.report
    );
    assert_eq!(
        identical("out/user"),
        Some(Value::Bool(false)),
        "{:#}",
        v.report
    );
}

#[test]
fn failing_step_is_125_and_bad_input_is_one_line() {
    let d = setup("  - name: build\n    run: mkdir -p out; echo x > out/x; exit 3\n");
    let v = verify_exits(d.path(), &["--vary", "hostname"], 125);
    assert_eq!(v.report["verdict"], "run failed");
    assert!(v.stderr.contains("step build exited 3"), "{}", v.stderr);

    let v = verify(d.path(), &["--vary", "hostname,tmie"]);
    assert_eq!(v.code, 2);
    let line = v.stderr.trim();
    assert!(
        !line.contains('\n') && line.contains("unknown variation \"tmie\""),
        "{line}"
    );

    for (args, line) in [
        (
            &["--runs", "1"][..],
            "pinfold verify: --runs 1: give at least 2 (run 1 is the control)",
        ),
        (
            &["--jobs", "0"][..],
            "pinfold verify: --jobs 0: give at least 1",
        ),
    ] {
        let v = verify(d.path(), args);
        assert_eq!(v.code, 2, "{args:?}");
        assert_eq!(v.stderr.trim(), line);
    }
    std::fs::remove_dir_all(d.path().join("src")).unwrap();
    let v = verify(d.path(), &[]);
    assert_eq!(v.code, 125);
    assert_eq!(
        v.stderr.trim(),
        "pinfold verify: --source src: not a directory"
    );

    std::fs::write(d.path().join("job.yaml"), "image: x\nstepz: []\n").unwrap();
    let v = verify(d.path(), &[]);
    assert_eq!(v.code, 125);
    let line = v.stderr.trim();
    assert!(
        !line.contains('\n') && line.starts_with("pinfold verify: job.yaml"),
        "{line}"
    );
}

/// The `pinfold exec` flags verify varies, seen from inside the container.
#[test]
fn exec_umask_domainname_and_reverse_env() {
    let (code, out, err) = common::sh(
        &[
            "--umask",
            "027",
            "--domainname",
            "example.invalid",
            "--reverse-env",
            "--env",
            "LAST_GIVEN=1",
        ],
        "umask; cat /proc/sys/kernel/domainname; tr '\\0' '\\n' < /proc/$$/environ | head -n 1; touch /tmp/f; stat -c %a /tmp/f",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["0027", "example.invalid", "LAST_GIVEN=1", "640"]
    );
    // Without the flags: the kernel's domain name, the given order.
    let (_, out, _) = common::sh(
        &["--umask", "022", "--env", "LAST_GIVEN=1"],
        "cat /proc/sys/kernel/domainname; tr '\\0' '\\n' < /proc/$$/environ | tail -n 1",
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["(none)", "LAST_GIVEN=1"]);

    let (code, _, err) = common::sh(&["--umask", "999"], "true");
    assert_eq!(code, 125);
    assert!(err.contains("not an octal mode"), "{err}");
    let (code, _, err) = common::sh(&["--domainname", "bad name"], "true");
    assert_eq!(code, 125);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("bad domain name"), "{err}");
}
