//! `pinfold doctor`: real checks on this machine, and a real failure.

mod common;

use common::*;

#[test]
fn doctor_reports_every_check_and_passes_here() {
    let out = pinfold().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for name in [
        "user namespaces",
        "id mapping",
        "overlayfs",
        "landlock",
        "seccomp",
        "cgroup v2",
        "user-mode networking",
        "policy default",
        "policy untrusted",
        "policy trusted",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name} line: {text}"));
        assert!(line.starts_with("ok") || line.starts_with("warn"), "{line}");
    }

    let out = pinfold().args(["doctor", "--json"]).output().unwrap();
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = checks.as_array().unwrap();
    assert!(checks.len() >= 7);
    assert!(checks.iter().all(|c| c["status"] != "fail"));
}

#[test]
fn doctor_fails_when_user_namespaces_are_disabled() {
    let Some(out) = pinfold_without_userns(&["doctor".as_ref()]) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("user namespaces"))
        .unwrap();
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("sysctl"), "says what to do: {line}");
}
