//! The Kubernetes and Nomad templates: validated with the PyPI tools in
//! tests/.venv (tests/setup.sh) and checked for what the sandbox needs.
//! No cluster can run here (no network beyond the package registries), so
//! a pod is not started; what its fields mean is in the templates' README.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{output_text, venv};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kubernetes_validate(file: &Path) -> Output {
    Command::new(venv("kubernetes-validate"))
        .args(["-k", "1.33.0", "--strict"])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn the_kubernetes_manifests_validate_and_give_the_sandbox_what_it_needs() {
    let path = repo().join("ci-templates/kubernetes/agent.yaml");
    let out = kubernetes_validate(&path);
    assert!(out.status.success(), "{}", output_text(&out));
    let yaml = std::fs::read_to_string(&path).unwrap();
    // The check can fail: a misspelt field is refused under --strict.
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("agent.yaml");
    std::fs::write(
        &bad,
        yaml.replacen("      hostUsers: false", "      hostUser: false", 1),
    )
    .unwrap();
    assert!(!kubernetes_validate(&bad).status.success());
    // Both workloads: user-namespaced, unmasked /proc, the Localhost
    // profiles shipped beside them, a drain-long grace period, the token
    // from the Secret.
    let fields: String = yaml
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    for (needle, count) in [
        ("hostUsers: false", 2),
        ("procMount: Unmasked", 2),
        ("localhostProfile: pinfold.json", 2),
        ("localhostProfile: pinfold\n", 2),
        ("terminationGracePeriodSeconds: 660", 2),
        (
            "secretKeyRef: {name: pinfold-agent, key: registration-token}",
            2,
        ),
        ("emptyDir:", 4),
    ] {
        assert_eq!(fields.matches(needle).count(), count, "{needle}");
    }
    // The AppArmor profile it names is the one shipped.
    let aa = std::fs::read_to_string(repo().join("ci-templates/apparmor/pinfold")).unwrap();
    assert!(aa.contains("profile pinfold "), "{aa}");
    // The seccomp profile is JSON and blocks nothing pinfold's set-up
    // makes (its own, stricter filter is applied inside).
    let seccomp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("ci-templates/kubernetes/pinfold.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ALLOW");
    let denied: Vec<&str> = seccomp["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["names"].as_array().unwrap())
        .map(|n| n.as_str().unwrap())
        .collect();
    for needed in [
        "unshare",
        "clone",
        "clone3",
        "mount",
        "umount2",
        "pivot_root",
        "setns",
        "mount_setattr",
        "open_tree",
        "move_mount",
        "fsopen",
        "fsmount",
        "fsconfig",
        "landlock_create_ruleset",
        "landlock_add_rule",
        "landlock_restrict_self",
        "seccomp",
        "prctl",
        "sethostname",
    ] {
        assert!(!denied.contains(&needed), "{needed} is denied");
    }
    assert!(denied.contains(&"kexec_load") && denied.contains(&"init_module"));
}

#[test]
fn the_nomad_job_parses_and_runs_the_agent_with_raw_exec() {
    let path = repo().join("ci-templates/nomad/pinfold-agent.nomad.hcl");
    let script = r#"
import hcl2, json, sys
job = hcl2.load(open(sys.argv[1]))["job"][0]['"pinfold-agent"']
task = job["group"][0]['"agent"']["task"][0]['"agent"']
cfg = task["config"][0]
print(json.dumps({"type": job["type"], "driver": task["driver"], "command": cfg["command"],
                  "args": cfg["args"], "kill_timeout": task["kill_timeout"],
                  "token_in_env": "PINFOLD_REGISTRATION_TOKEN" in json.dumps(task["env"])}))
"#;
    let out = Command::new(venv("python"))
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "\"system\"");
    assert_eq!(v["driver"], "\"raw_exec\"");
    assert_eq!(v["command"], "\"/usr/bin/pinfold\"");
    assert_eq!(v["args"][0], "\"agent\"");
    assert_eq!(v["kill_timeout"], "\"11m\"");
    // The token comes from Nomad Variables, not the job file's env.
    assert_eq!(v["token_in_env"], false);
    // A broken file does not parse.
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.hcl");
    let body = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &bad,
        body.replacen("group \"agent\" {", "group \"agent\" ", 1),
    )
    .unwrap();
    let out = Command::new(venv("python"))
        .arg("-c")
        .arg(script)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
