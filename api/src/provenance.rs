//! Provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate,
//! signed with Ed25519 in a DSSE envelope.
//!
//! * Statement: <https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md>
//! * SLSA Provenance v1: <https://slsa.dev/spec/v1.0/provenance>
//! * DSSE: <https://github.com/secure-systems-lab/dsse/blob/master/envelope.md>
//!
//! Pure functions: building, signing and checking a statement. Reading and
//! writing keys and files is the caller's business. Keys travel as PEM
//! (PKCS#8 private, SPKI public), which openssl and cosign read too.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, Verifier};
/// The key types, re-exported so callers need no ed25519 dependency of their own.
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of SLSA Provenance v1.
pub const SLSA_PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The `buildType` of a pinfold job.
pub const BUILD_TYPE: &str = "https://github.com/pinfold/pinfold/job/v1";

/// Errors from signing or verifying provenance.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// A key could not be parsed.
    #[error("bad key: {0} (expected a PEM Ed25519 key)")]
    Key(String),
    /// The envelope or statement is malformed.
    #[error("malformed attestation: {0}")]
    Malformed(String),
    /// No signature verifies with the given key.
    #[error(
        "signature does not verify with the given key: the attestation was altered or signed by another key"
    )]
    BadSignature,
    /// The statement is not an in-toto v1 / SLSA v1 statement.
    #[error("not an in-toto v1 SLSA v1 statement: {0}")]
    Schema(String),
}

/// An in-toto resource descriptor (subjects and dependencies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDescriptor {
    /// A name (artifact path relative to the output directory) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// … or a URI (image reference, git URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Algorithm → lowercase hex digest.
    pub digest: BTreeMap<String, String>,
}

impl ResourceDescriptor {
    /// A named artifact with its sha256.
    pub fn artifact(name: &str, sha256: &str) -> Self {
        Self {
            name: Some(name.to_owned()),
            uri: None,
            digest: BTreeMap::from([("sha256".to_owned(), sha256.to_owned())]),
        }
    }

    /// A dependency by URI with one digest (`sha256`, or `gitCommit`).
    pub fn dependency(uri: &str, algorithm: &str, digest: &str) -> Self {
        Self {
            name: None,
            uri: Some(uri.to_owned()),
            digest: BTreeMap::from([(algorithm.to_owned(), digest.to_owned())]),
        }
    }
}

/// An in-toto Statement v1 carrying SLSA Provenance v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// What was built.
    pub subject: Vec<ResourceDescriptor>,
    /// Always [`SLSA_PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// How it was built.
    pub predicate: Provenance,
}

/// SLSA Provenance v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// What the build was asked to do, from what.
    pub build_definition: BuildDefinition,
    /// Who ran it, when.
    pub run_details: RunDetails,
}

/// SLSA `buildDefinition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    /// [`BUILD_TYPE`].
    pub build_type: String,
    /// The job file, as submitted.
    pub external_parameters: serde_json::Value,
    /// Settings of the runner (policy, variations of a verify run).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub internal_parameters: serde_json::Value,
    /// The image by digest and the source by digest or commit.
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// SLSA `runDetails`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    /// The runner's identity.
    pub builder: Builder,
    /// Invocation id and times.
    pub metadata: BuildMetadata,
}

/// SLSA `builder`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Builder {
    /// A URI naming the runner.
    pub id: String,
}

/// SLSA `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    /// The job and attempt.
    pub invocation_id: String,
    /// RFC 3339.
    pub started_on: String,
    /// RFC 3339.
    pub finished_on: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// [`PAYLOAD_TYPE`].
    pub payload_type: String,
    /// base64 of the statement's JSON.
    pub payload: String,
    /// One signature per key.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// sha256 of the signer's public key (SPKI DER), hex.
    pub keyid: String,
    /// base64 of the Ed25519 signature over the PAE.
    pub sig: String,
}

/// DSSE pre-authentication encoding: what is actually signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

/// A fresh signing key from 32 random bytes (the caller supplies them).
pub fn signing_key_from_seed(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}

/// PEM (PKCS#8) of a signing key.
pub fn private_key_pem(key: &SigningKey) -> Result<String, ProvenanceError> {
    key.to_pkcs8_pem(Default::default())
        .map(|z| z.to_string())
        .map_err(|e| ProvenanceError::Key(e.to_string()))
}

/// PEM (SPKI) of a public key.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, ProvenanceError> {
    key.to_public_key_pem(Default::default())
        .map_err(|e| ProvenanceError::Key(e.to_string()))
}

/// Parses a PEM signing key.
pub fn parse_private_key(pem: &str) -> Result<SigningKey, ProvenanceError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| ProvenanceError::Key(e.to_string()))
}

/// Parses a PEM public key.
pub fn parse_public_key(pem: &str) -> Result<VerifyingKey, ProvenanceError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| ProvenanceError::Key(e.to_string()))
}

/// The key id: sha256 of the SPKI DER encoding, hex.
pub fn key_id(key: &VerifyingKey) -> String {
    let der = key
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_else(|_| key.as_bytes().to_vec());
    hex::encode(Sha256::digest(der))
}

/// Signs a statement into a DSSE envelope.
pub fn sign(statement: &Statement, key: &SigningKey) -> Result<Envelope, ProvenanceError> {
    let payload =
        serde_json::to_vec(statement).map_err(|e| ProvenanceError::Malformed(e.to_string()))?;
    let sig = key.sign(&pae(PAYLOAD_TYPE, &payload));
    Ok(Envelope {
        payload_type: PAYLOAD_TYPE.to_owned(),
        payload: B64.encode(&payload),
        signatures: vec![EnvelopeSignature {
            keyid: key_id(&key.verifying_key()),
            sig: B64.encode(sig.to_bytes()),
        }],
    })
}

/// Verifies an envelope's signature with `key` and returns its statement,
/// checked against the in-toto v1 and SLSA v1 field sets.
pub fn verify(envelope: &Envelope, key: &VerifyingKey) -> Result<Statement, ProvenanceError> {
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(ProvenanceError::Malformed(format!(
            "payloadType {:?}, expected {PAYLOAD_TYPE:?}",
            envelope.payload_type
        )));
    }
    let payload = B64
        .decode(&envelope.payload)
        .map_err(|e| ProvenanceError::Malformed(format!("payload is not base64: {e}")))?;
    let signed = pae(&envelope.payload_type, &payload);
    let ok = envelope.signatures.iter().any(|s| {
        B64.decode(&s.sig)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .is_some_and(|sig| key.verify(&signed, &sig).is_ok())
    });
    if !ok {
        return Err(ProvenanceError::BadSignature);
    }
    let raw: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|e| ProvenanceError::Malformed(e.to_string()))?;
    check_schema(&raw)?;
    serde_json::from_value(raw).map_err(|e| ProvenanceError::Schema(e.to_string()))
}

/// Checks the required fields of in-toto Statement v1 and SLSA Provenance v1
/// on the raw JSON (so extra fields a newer writer adds do not fail).
pub fn check_schema(v: &serde_json::Value) -> Result<(), ProvenanceError> {
    let fail = |m: &str| Err(ProvenanceError::Schema(m.to_owned()));
    if v["_type"] != STATEMENT_TYPE {
        return fail("_type is not https://in-toto.io/Statement/v1");
    }
    let Some(subjects) = v["subject"].as_array().filter(|s| !s.is_empty()) else {
        return fail("subject must be a non-empty list");
    };
    for s in subjects {
        let digest = s["digest"].as_object();
        if digest.is_none_or(|d| d.is_empty() || d.values().any(|x| !x.is_string())) {
            return fail("every subject needs a digest map of strings");
        }
        if s["name"].as_str().is_none() && s["uri"].as_str().is_none() {
            return fail("every subject needs a name or uri");
        }
    }
    if v["predicateType"] != SLSA_PREDICATE_TYPE {
        return fail("predicateType is not https://slsa.dev/provenance/v1");
    }
    let p = &v["predicate"];
    if p["buildDefinition"]["buildType"].as_str().is_none() {
        return fail("predicate.buildDefinition.buildType is required");
    }
    if !p["buildDefinition"]["externalParameters"].is_object() {
        return fail("predicate.buildDefinition.externalParameters must be an object");
    }
    if let Some(deps) = p["buildDefinition"]["resolvedDependencies"].as_array() {
        for d in deps {
            if d["uri"].as_str().is_none() && d["name"].as_str().is_none() {
                return fail("every resolvedDependency needs a uri or name");
            }
        }
    }
    if p["runDetails"]["builder"]["id"].as_str().is_none() {
        return fail("predicate.runDetails.builder.id is required");
    }
    Ok(())
}

/// What a finished job contributes to its provenance.
#[derive(Debug, Clone)]
pub struct JobRecord<'a> {
    /// The job file as submitted (recorded as externalParameters).
    pub job_yaml: &'a str,
    /// The image reference and its manifest digest (`sha256:…` or bare hex).
    pub image: (&'a str, &'a str),
    /// The source: (uri, algorithm, digest), e.g. ("source.tar", "sha256", hex)
    /// or (git URL, "gitCommit", sha).
    pub source: Option<(&'a str, &'a str, &'a str)>,
    /// Artifacts: (name relative to the output directory, sha256 hex).
    pub artifacts: &'a [(String, String)],
    /// The runner's identity (a URI).
    pub builder_id: &'a str,
    /// Job and attempt.
    pub invocation_id: &'a str,
    /// Start and finish, ms since the Unix epoch.
    pub started_ms: u64,
    /// See `started_ms`.
    pub finished_ms: u64,
    /// Runner-side settings worth recording (policy, verify variations).
    pub internal: serde_json::Value,
}

/// Builds the statement for a finished job.
pub fn statement_for(job: &JobRecord<'_>) -> Statement {
    let external = serde_json::json!({ "jobFile": job.job_yaml });
    let mut deps = vec![ResourceDescriptor::dependency(
        job.image.0,
        "sha256",
        job.image.1.trim_start_matches("sha256:"),
    )];
    if let Some((uri, alg, digest)) = job.source {
        deps.push(ResourceDescriptor::dependency(uri, alg, digest));
    }
    Statement {
        type_: STATEMENT_TYPE.to_owned(),
        subject: job
            .artifacts
            .iter()
            .map(|(n, d)| ResourceDescriptor::artifact(n, d))
            .collect(),
        predicate_type: SLSA_PREDICATE_TYPE.to_owned(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.to_owned(),
                external_parameters: external,
                internal_parameters: job.internal.clone(),
                resolved_dependencies: deps,
            },
            run_details: RunDetails {
                builder: Builder {
                    id: job.builder_id.to_owned(),
                },
                metadata: BuildMetadata {
                    invocation_id: job.invocation_id.to_owned(),
                    started_on: rfc3339(job.started_ms),
                    finished_on: rfc3339(job.finished_ms),
                },
            },
        },
    }
}

/// RFC 3339 (UTC, seconds) of a time in milliseconds since the Unix epoch.
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> Statement {
        Statement {
            type_: STATEMENT_TYPE.into(),
            subject: vec![ResourceDescriptor::artifact("out/app", &"ab".repeat(32))],
            predicate_type: SLSA_PREDICATE_TYPE.into(),
            predicate: Provenance {
                build_definition: BuildDefinition {
                    build_type: BUILD_TYPE.into(),
                    external_parameters: serde_json::json!({"job": {"steps": []}}),
                    internal_parameters: serde_json::Value::Null,
                    resolved_dependencies: vec![ResourceDescriptor::dependency(
                        "docker://127.0.0.1:5000/busybox@sha256:00",
                        "sha256",
                        &"00".repeat(32),
                    )],
                },
                run_details: RunDetails {
                    builder: Builder {
                        id: "https://pinfold.local/runner/1".into(),
                    },
                    metadata: BuildMetadata {
                        invocation_id: "job-1-attempt-1".into(),
                        started_on: rfc3339(0),
                        finished_on: rfc3339(1_700_000_000_000),
                    },
                },
            },
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = signing_key_from_seed([7; 32]);
        let env = sign(&statement(), &key).unwrap();
        assert_eq!(verify(&env, &key.verifying_key()).unwrap(), statement());

        // A flipped byte in the payload breaks the signature.
        let mut bad = env.clone();
        let mut payload = B64.decode(&bad.payload).unwrap();
        payload[20] ^= 1;
        bad.payload = B64.encode(&payload);
        assert!(matches!(
            verify(&bad, &key.verifying_key()),
            Err(ProvenanceError::BadSignature)
        ));

        // Another key does not verify it.
        let other = signing_key_from_seed([8; 32]);
        assert!(matches!(
            verify(&env, &other.verifying_key()),
            Err(ProvenanceError::BadSignature)
        ));
    }

    #[test]
    fn pem_round_trip() {
        let key = signing_key_from_seed([9; 32]);
        let pem = private_key_pem(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(parse_private_key(&pem).unwrap().to_bytes(), key.to_bytes());
        let pubpem = public_key_pem(&key.verifying_key()).unwrap();
        assert_eq!(parse_public_key(&pubpem).unwrap(), key.verifying_key());
        assert_eq!(key_id(&key.verifying_key()).len(), 64);
    }

    #[test]
    fn schema_checks_name_the_field() {
        let mut v = serde_json::to_value(statement()).unwrap();
        check_schema(&v).unwrap();
        v["predicateType"] = "https://example/other".into();
        assert!(
            check_schema(&v)
                .unwrap_err()
                .to_string()
                .contains("predicateType")
        );
        let mut v = serde_json::to_value(statement()).unwrap();
        v["subject"] = serde_json::json!([]);
        assert!(
            check_schema(&v)
                .unwrap_err()
                .to_string()
                .contains("subject")
        );
    }

    #[test]
    fn pae_matches_the_spec_example() {
        // From the DSSE spec: PAE("http://example.com/HelloWorld", "hello world").
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
