//! `pinfold attest`: keys made by the CLI, a statement signed by the library
//! the runners use, verified offline by the CLI, and every tamper caught.

mod common;

use common::*;
use pinfold_api::provenance;
use sha2::{Digest, Sha256};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn signed_provenance_verifies_offline_and_tampering_fails() {
    let d = user_dir();
    let key = d.path().join("runner.key");
    let out = pinfold()
        .args(["attest", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pub_key = d.path().join("runner.key.pub");
    assert!(
        std::fs::read_to_string(&pub_key)
            .unwrap()
            .contains("BEGIN PUBLIC KEY")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let artifacts = d.path().join("out");
    std::fs::create_dir_all(artifacts.join("bin")).unwrap();
    std::fs::write(artifacts.join("bin/app"), b"the build output").unwrap();
    let digest = hex(&Sha256::digest(b"the build output"));
    let record = provenance::JobRecord {
        job_yaml: "image: oci:/x@sha256:00\nsteps: []\n",
        image: ("oci:/x@sha256:00", &"0".repeat(64)),
        source: Some(("source.tar", "sha256", &"1".repeat(64))),
        artifacts: &[("bin/app".to_owned(), digest)],
        builder_id: "https://pinfold.local/runner/test",
        invocation_id: "job-1/attempt-1",
        started_ms: 1_700_000_000_000,
        finished_ms: 1_700_000_005_000,
        internal: serde_json::json!({"policy": "default"}),
    };
    let signing = provenance::parse_private_key(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let envelope = provenance::sign(&provenance::statement_for(&record), &signing).unwrap();
    let file = artifacts.join("provenance.intoto.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&envelope).unwrap()).unwrap();

    let verify = |file: &std::path::Path, key: &std::path::Path| {
        pinfold()
            .args(["attest", "verify"])
            .arg(file)
            .arg("--key")
            .arg(key)
            .output()
            .unwrap()
    };
    let ok = verify(&file, &pub_key);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("1 artifacts match"));

    // A flipped byte in an artifact.
    std::fs::write(artifacts.join("bin/app"), b"the build outpuT").unwrap();
    let bad = verify(&file, &pub_key);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("does not match"),
        "{bad:?}"
    );
    std::fs::write(artifacts.join("bin/app"), b"the build output").unwrap();

    // A flipped byte in the envelope's payload.
    let mut env = envelope.clone();
    let mut chars: Vec<u8> = env.payload.into_bytes();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == b'A' { b'B' } else { b'A' };
    env.payload = String::from_utf8(chars).unwrap();
    let tampered = d.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&env).unwrap()).unwrap();
    let bad = pinfold()
        .args(["attest", "verify"])
        .arg(&tampered)
        .arg("--key")
        .arg(&pub_key)
        .arg("--artifacts")
        .arg(&artifacts)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("signature") || err.contains("malformed"),
        "{err}"
    );

    // Another key.
    let other = d.path().join("other.key");
    assert!(
        pinfold()
            .args(["attest", "keygen", "--out"])
            .arg(&other)
            .status()
            .unwrap()
            .success()
    );
    let bad = verify(&file, &d.path().join("other.key.pub"));
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("signature does not verify"));
}
