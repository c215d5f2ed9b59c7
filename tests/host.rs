//! Installing on a runner host: the systemd units pass `systemd-analyze
//! verify`, the AppArmor profile parses (in AppArmor 4.x as shipped, and
//! in Debian 12's 3.0 less its 4.0 lines), the Debian package's maintainer
//! scripts are valid shell and its postinst allocates sub-id ranges without
//! clobbering any, and the package lists files that exist.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn units() -> PathBuf {
    repo().join("ci-templates/systemd")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (tests/setup.sh installs it)"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A root for `systemd-analyze verify --root`: this machine's system units
/// (the targets ours hang off), ours in /etc/systemd/system, and an
/// executable /usr/bin/pinfold so ExecStart= resolves.
fn stub_root(with_binary: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("lib/systemd")).unwrap();
    fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    fs::create_dir_all(r.join("usr/bin")).unwrap();
    let cp = run(Command::new("cp")
        .arg("-a")
        .arg("/lib/systemd/system")
        .arg(r.join("lib/systemd/")));
    assert!(cp.status.success(), "{}", text(&cp.stderr));
    for e in fs::read_dir(units()).unwrap() {
        let p = e.unwrap().path();
        fs::copy(
            &p,
            r.join("etc/systemd/system").join(p.file_name().unwrap()),
        )
        .unwrap();
    }
    if with_binary {
        let bin = r.join("usr/bin/pinfold");
        fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    }
    root
}

fn verify(root: &Path, unit: &str) -> Output {
    run(Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .arg(format!("--root={}", root.display()))
        .arg(unit))
}

#[test]
fn units_pass_systemd_analyze_verify_with_nothing_on_stderr() {
    let root = stub_root(true);
    // The template is verified through an instance.
    for unit in [
        "pinfold-agent.service",
        "pinfold-agent@ci.service",
        "pinfold-server.service",
    ] {
        let out = verify(root.path(), unit);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{unit}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    // The check can fail: an unknown key, and a missing binary, are reported.
    let server = root
        .path()
        .join("etc/systemd/system/pinfold-server.service");
    let mut bad = fs::read_to_string(&server).unwrap();
    bad.push_str("Bogus=1\n");
    fs::write(&server, bad).unwrap();
    let out = verify(root.path(), "pinfold-server.service");
    assert!(text(&out.stderr).contains("Bogus"), "{out:?}");
    let out = verify(stub_root(false).path(), "pinfold-agent.service");
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("/usr/bin/pinfold"), "{out:?}");
}

#[test]
fn agent_units_keep_what_the_sandbox_needs() {
    for unit in ["pinfold-agent.service", "pinfold-agent@.service"] {
        let t = fs::read_to_string(units().join(unit)).unwrap();
        let set: Vec<&str> = t
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains('='))
            .collect();
        for want in [
            "Delegate=yes",
            "User=pinfold",
            "KillMode=mixed",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "EnvironmentFile=-/etc/pinfold/agent.env",
        ] {
            assert!(set.contains(&want), "{unit} lacks {want}");
        }
        // Each of these breaks the sandbox (or newuidmap): see the unit's comments.
        for breaks in [
            "NoNewPrivileges=",
            "DynamicUser=",
            "PrivateUsers=",
            "RestrictNamespaces=",
            "SystemCallFilter=",
            "PrivateDevices=",
            "ProtectKernelTunables=",
            "ProtectControlGroups=",
            "CapabilityBoundingSet=",
        ] {
            assert!(
                !set.iter().any(|l| l.starts_with(breaks)),
                "{unit} sets {breaks}"
            );
            assert!(
                t.contains(breaks),
                "{unit} does not say why {breaks} is left out"
            );
        }
    }
}

#[test]
fn agent_units_set_only_variables_the_agent_reads() {
    let help = run(Command::new(env!("CARGO_BIN_EXE_pinfold")).args(["agent", "--help"]));
    let help = text(&help.stdout);
    for unit in ["pinfold-agent.service", "pinfold-agent@.service"] {
        let t = fs::read_to_string(units().join(unit)).unwrap();
        for l in t.lines().filter(|l| l.starts_with("Environment=")) {
            let name = l["Environment=".len()..].split('=').next().unwrap();
            assert!(
                help.contains(name),
                "{unit}: `pinfold agent` ignores {name}"
            );
        }
    }
    for name in [
        "PINFOLD_SERVER",
        "PINFOLD_AGENT_NAME",
        "PINFOLD_LABELS",
        "PINFOLD_CONCURRENCY",
        "PINFOLD_DRAIN",
        "PINFOLD_GRACE",
    ] {
        assert!(help.contains(&format!("[env: {name}")), "{name}: {help}");
    }
}

fn parser(args: &[&str], profile: &Path) -> Output {
    run(Command::new("apparmor_parser").args(args).arg(profile))
}

/// Debian 13's apparmor_parser (AppArmor 4.1), as tests/apparmor4.sh
/// unpacks it under tests/.cache/apparmor4/root with Debian 13's libc:
/// started through that libc's own loader (Debian 12's libc is too old for
/// it), and given no parser.conf from this machine.
fn parser4() -> (Command, PathBuf) {
    let root = repo().join("tests/.cache/apparmor4/root");
    let bin = root.join("usr/sbin/apparmor_parser");
    assert!(
        bin.exists(),
        "no AppArmor 4 parser in tests/.cache/apparmor4: run `sudo bash tests/setup.sh`"
    );
    let mut cmd = Command::new(root.join("usr/lib64/ld-linux-x86-64.so.2"));
    cmd.arg("--library-path")
        .arg(root.join("usr/lib/x86_64-linux-gnu"))
        .arg(bin)
        .arg("--config-file=/dev/null")
        .env("LC_ALL", "C");
    (cmd, root)
}

/// `profile` through [`parser4`], with that tree's apparmor.d for the
/// includes and abi files and its features file. `-Q -K -T`: parse only, no
/// kernel, no cache.
fn parse4(profile: &Path) -> Output {
    let (mut cmd, root) = parser4();
    run(cmd
        .arg("--features-file")
        .arg(root.join("usr/share/apparmor-features/features"))
        .arg("--base")
        .arg(root.join("etc/apparmor.d"))
        .arg("-I")
        .arg(root.join("etc/apparmor.d"))
        .args(["-Q", "-K", "-T"])
        .arg(profile))
}

/// `profile` must fail to parse in the 4.x parser, with a parse error (not
/// a parser that did not start).
fn rejected4(profile: &Path, why: &str) {
    let out = parse4(profile);
    assert!(!out.status.success(), "the AppArmor 4 parser took {why}");
    let err = text(&out.stderr);
    assert!(err.contains("AppArmor parser error"), "{why}: {err}");
}

/// The profile needs AppArmor 4.0 (`abi <abi/4.0>`, the `userns` rule), so
/// Debian 13's 4.x parser, unpacked by tests/setup.sh, must parse it as
/// shipped. Debian 12's own parser is 3.0 and knows neither line: it must
/// reject the profile as shipped and parse everything else (a copy on abi
/// 3.0 without `userns`); a 4.x parser on the host parses it as shipped.
#[test]
fn apparmor_profile_parses() {
    let path = repo().join("ci-templates/apparmor/pinfold");
    let profile = fs::read_to_string(&path).unwrap();
    let rules: Vec<&str> = profile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules,
        [
            "abi <abi/4.0>,",
            "include <tunables/global>",
            "profile pinfold /usr/bin/pinfold flags=(unconfined) {",
            "userns,",
            "include if exists <local/pinfold>",
            "}",
            "profile pinfold-exec /usr/bin/pinfold-exec flags=(unconfined) {",
            "userns,",
            "include if exists <local/pinfold-exec>",
            "}",
        ]
    );
    let (mut cmd, _) = parser4();
    let version = run(cmd.arg("--version"));
    assert!(
        text(&version.stdout).starts_with("AppArmor parser version 4."),
        "the AppArmor 4 parser in tests/.cache/apparmor4 does not start ({}): rerun `sudo bash tests/setup.sh`",
        version.status
    );
    let out = parse4(&path);
    assert!(
        out.status.success(),
        "AppArmor 4 parser: {}",
        text(&out.stderr)
    );

    let version = text(&run(Command::new("apparmor_parser").arg("--version")).stdout);
    let major: u32 = version
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no version in {version:?}"));
    let opts = ["-Q", "-K", "-T"];
    let dir = tempfile::tempdir().unwrap();
    if major >= 4 {
        let out = parser(&opts, &path);
        assert!(out.status.success(), "{}", text(&out.stderr));
    } else {
        let out = parser(&opts, &path);
        assert!(!out.status.success(), "a 3.x parser took abi 4.0");
        let v3 = dir.path().join("pinfold");
        fs::write(
            &v3,
            profile
                .replace("abi <abi/4.0>,", "abi <abi/3.0>,")
                .replace("  userns,\n", ""),
        )
        .unwrap();
        let out = parser(&opts, &v3);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // The checks can fail: a misspelt flag (both parsers) and a misspelt
    // rule (the 4.x parser).
    let bad = dir.path().join("bad");
    fs::write(
        &bad,
        profile.replace("flags=(unconfined)", "flags=(unconfinde)"),
    )
    .unwrap();
    assert!(!parser(&opts, &bad).status.success());
    rejected4(&bad, "flags=(unconfinde)");
    fs::write(&bad, profile.replace("  userns,", "  usern,")).unwrap();
    rejected4(&bad, "`usern,`");
}

fn debian(name: &str) -> PathBuf {
    repo().join("ci-templates/debian").join(name)
}

#[test]
fn maintainer_scripts_are_valid_shell() {
    for script in ["postinst", "prerm", "postrm"] {
        let p = debian(script);
        for shell in ["sh", "bash"] {
            let out = run(Command::new(shell).arg("-n").arg(&p));
            assert!(
                out.status.success(),
                "{shell} -n {script}: {}",
                text(&out.stderr)
            );
        }
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
    }
}

/// Runs postinst's `add_subids pinfold` against `subuid` and `subgid` (the
/// files' contents; `None`: no file) and returns them afterwards.
fn add_subids(dir: &Path, subuid: Option<&str>, subgid: Option<&str>) -> (Output, String, String) {
    let (u, g) = (dir.join("subuid"), dir.join("subgid"));
    for (p, c) in [(&u, subuid), (&g, subgid)] {
        match c {
            Some(c) => fs::write(p, c).unwrap(),
            None => {
                let _ = fs::remove_file(p);
            }
        }
    }
    let out = run(Command::new("sh")
        .arg("-c")
        .arg(r#". "$0" && add_subids pinfold"#)
        .arg(debian("postinst"))
        .env("PINFOLD_POSTINST_LIB", "1")
        .env("SUBUID_FILE", &u)
        .env("SUBGID_FILE", &g));
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    (out, read(&u), read(&g))
}

fn ok(r: (Output, String, String)) -> (String, String) {
    assert!(r.0.status.success(), "{}", text(&r.0.stderr));
    (r.1, r.2)
}

#[test]
fn postinst_allocates_a_free_subid_range_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // No files: the first range at login.defs' SUB_UID_MIN.
    let (u, g) = ok(add_subids(d, None, None));
    assert_eq!(u, "pinfold:100000:65536\n");
    assert_eq!(g, u);
    // A second run changes nothing.
    let (u2, g2) = ok(add_subids(d, Some(&u), Some(&g)));
    assert_eq!((u2, g2), (u.clone(), g));

    // Above every existing range of both files, comments and a last line
    // without its newline included; nothing is rewritten.
    let uid = "alice:100000:65536\n# comment\n\nbob:300000:65536";
    let gid = "alice:100000:65536\ncarol:400000:1000\n";
    let (u, g) = ok(add_subids(d, Some(uid), Some(gid)));
    assert_eq!(u, format!("{uid}\npinfold:401000:65536\n"));
    assert_eq!(g, format!("{gid}pinfold:401000:65536\n"));

    // Ranges past 2^31 (mawk's %d would clamp them).
    let big = "x:3000000000:100000\n";
    let (u, _) = ok(add_subids(d, Some(big), Some("")));
    assert_eq!(u, format!("{big}pinfold:3000100000:65536\n"));

    // A range in one file only: the other gets one, clear of both.
    let (u, g) = ok(add_subids(d, Some("pinfold:200000:65536\n"), Some("")));
    assert_eq!(u, "pinfold:200000:65536\n");
    assert_eq!(g, "pinfold:265536:65536\n");

    // No room left: refused, nothing written.
    let full = "x:4294900000:60000\n";
    let (out, u, g) = add_subids(d, Some(full), Some(""));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no free range"), "{out:?}");
    assert_eq!((u.as_str(), g.as_str()), (full, ""));
}

#[test]
fn debian_package_lists_files_that_exist() {
    let cargo = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let meta = &cargo[cargo
        .find("[package.metadata.deb]")
        .expect("no deb metadata")..];
    let mut sources = 0;
    for l in meta.lines().map(str::trim).filter(|l| l.starts_with("[\"")) {
        let src = l.trim_start_matches("[\"").split('"').next().unwrap();
        if !src.starts_with("target/") {
            assert!(repo().join(src).exists(), "asset {src} is missing");
        }
        sources += 1;
    }
    assert!(sources >= 9, "{meta}");
    let missing: Vec<&str> = [
        "\"usr/bin/\"",
        "\"etc/pinfold/policies/\"",
        "\"lib/systemd/system/\"",
        "maintainer-scripts = \"ci-templates/debian/\"",
    ]
    .into_iter()
    .filter(|want| !meta.contains(want))
    .collect();
    assert!(missing.is_empty(), "the package lacks {missing:?}");
}
