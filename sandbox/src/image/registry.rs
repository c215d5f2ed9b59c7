//! A pull-only client for the OCI distribution API: manifests and blobs by
//! digest, anonymous, bearer-token (WWW-Authenticate challenge → token
//! endpoint) and basic auth from the podman/docker auth files.
//!
//! Written on ureq rather than oci-client: oci-client is async (tokio +
//! reqwest + hyper) and hides the streaming we need to hash and unpack a
//! blob in one pass; the protocol subset pinfold uses is four requests.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;

use super::digest::Digest;

/// Errors from talking to a registry.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum RegistryError {
    /// The registry could not be reached.
    #[error(
        "registry {host} is unreachable ({source}); check the address, that it is up, and --insecure-registry for plain HTTP"
    )]
    Unreachable {
        host: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// The registry refused the credentials, or there were none.
    #[error(
        "registry {host} refused access to {repo} ({why}); log in with `podman login {host}` or set REGISTRY_AUTH_FILE"
    )]
    AuthRefused {
        host: String,
        repo: String,
        why: String,
    },
    /// The registry does not have what was asked for.
    #[error("registry {host} has no {what} in {repo}; check the reference")]
    NotFound {
        host: String,
        repo: String,
        what: String,
    },
    /// Any other HTTP status.
    #[error("registry {host}: GET {url} answered HTTP {status}")]
    Status {
        host: String,
        url: String,
        status: u16,
    },
    /// The auth file could not be read.
    #[error("auth file {path}: {why}; fix or remove it")]
    AuthFile { path: PathBuf, why: String },
    /// A plain-HTTP registry that was not allowed.
    #[error("{0}")]
    Other(String),
}

type Result<T> = std::result::Result<T, RegistryError>;

/// What `Accept` says for manifests: OCI and Docker schema2, indexes and images.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// An opened blob: the body, its length and its media type when the source says.
pub use super::archive::Opened;

/// A registry client for one repository.
pub struct Registry {
    host: String,
    repo: String,
    base: String,
    agent: ureq::Agent,
    basic: Option<String>,
    auth: Mutex<Option<String>>,
}

/// Whether `host` (`name[:port]`) is a loopback address.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Registry {
    /// A client for `host`/`repo`, with the credentials of the first of
    /// `auth_files` that has some. Plain HTTP only for a loopback host or one
    /// listed in `insecure`.
    pub fn new(
        host: &str,
        repo: &str,
        insecure: &[String],
        auth_files: &[PathBuf],
    ) -> Result<Registry> {
        let plain = is_loopback(host) || insecure.iter().any(|h| h == host);
        let api_host = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        let base = format!(
            "{}://{api_host}/v2/{repo}",
            if plain { "http" } else { "https" }
        );
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("pinfold/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Registry {
            host: host.to_owned(),
            repo: repo.to_owned(),
            base,
            agent,
            basic: basic_credentials(host, repo, auth_files)?,
            auth: Mutex::new(None),
        })
    }

    fn get(&self, url: &str, accept: Option<&str>) -> Result<ureq::http::Response<ureq::Body>> {
        let mut retried = false;
        loop {
            let mut req = self.agent.get(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            let auth = self.auth.lock().map(|a| a.clone()).unwrap_or(None);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            let resp = req.call().map_err(|e| RegistryError::Unreachable {
                host: self.host.clone(),
                source: Box::new(e),
            })?;
            let status = resp.status().as_u16();
            if status == 401 && !retried {
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let new = self.authenticate(&challenge)?;
                if let Ok(mut a) = self.auth.lock() {
                    *a = Some(new);
                }
                retried = true;
                continue;
            }
            return match status {
                200..=299 => Ok(resp),
                401 | 403 => Err(RegistryError::AuthRefused {
                    host: self.host.clone(),
                    repo: self.repo.clone(),
                    why: if self.basic.is_some() {
                        format!("HTTP {status} with the stored credentials")
                    } else {
                        format!("HTTP {status} and no credentials are stored for it")
                    },
                }),
                404 => Err(RegistryError::NotFound {
                    host: self.host.clone(),
                    repo: self.repo.clone(),
                    what: url.rsplit('/').next().unwrap_or("").to_owned(),
                }),
                s => Err(RegistryError::Status {
                    host: self.host.clone(),
                    url: url.to_owned(),
                    status: s,
                }),
            };
        }
    }

    /// Answers a `WWW-Authenticate` challenge with an `Authorization` value.
    fn authenticate(&self, challenge: &str) -> Result<String> {
        let refused = |why: String| RegistryError::AuthRefused {
            host: self.host.clone(),
            repo: self.repo.clone(),
            why,
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return self
                .basic
                .as_ref()
                .map(|b| format!("Basic {b}"))
                .ok_or_else(|| refused("it asks for a password and none is stored for it".into()));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(refused(format!("unsupported auth challenge {challenge:?}")));
        }
        let params = parse_challenge(params);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let realm = get("realm").ok_or_else(|| refused("bearer challenge without realm".into()))?;
        let mut req = self.agent.get(realm);
        if let Some(s) = get("service") {
            req = req.query("service", s);
        }
        let scope = get("scope")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("repository:{}:pull", self.repo));
        req = req.query("scope", &scope);
        if let Some(b) = &self.basic {
            req = req.header("Authorization", &format!("Basic {b}"));
        }
        let mut resp = req.call().map_err(|e| RegistryError::Unreachable {
            host: realm.to_owned(),
            source: Box::new(e),
        })?;
        if !resp.status().is_success() {
            return Err(refused(format!(
                "token endpoint answered HTTP {}",
                resp.status().as_u16()
            )));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| refused(format!("token endpoint: {e}")))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| refused(format!("token endpoint sent bad JSON: {e}")))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| refused("token endpoint sent no token".into()))?;
        Ok(format!("Bearer {token}"))
    }

    /// Resolves a tag to the digest of the manifest it names (one GET).
    pub fn resolve_tag(&self, tag: &str) -> Result<(Digest, Option<String>)> {
        let url = format!("{}/manifests/{tag}", self.base);
        let mut resp = self.get(&url, Some(MANIFEST_ACCEPT))?;
        let mt = resp.body().mime_type().map(str::to_owned);
        let body = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| {
                RegistryError::Other(format!(
                    "registry {}: reading manifest {tag}: {e}",
                    self.host
                ))
            })?;
        Ok((Digest::of(&body), mt))
    }

    /// Opens a manifest or a blob by digest. Returns the body, its
    /// Content-Length and its media type. The caller verifies.
    pub fn open(&self, digest: &Digest, manifest: bool) -> Result<Opened> {
        let url = format!(
            "{}/{}/{digest}",
            self.base,
            if manifest { "manifests" } else { "blobs" }
        );
        let resp = self.get(&url, manifest.then_some(MANIFEST_ACCEPT))?;
        let mt = resp.body().mime_type().map(str::to_owned);
        let len = resp.body().content_length();
        Ok((Box::new(resp.into_body().into_reader()), len, mt))
    }

    /// `host/repo`, for messages.
    pub fn name(&self) -> String {
        format!("{}/{}", self.host, self.repo)
    }
}

/// `k="v", k2=v2` → pairs.
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, r)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, r) = if let Some(r) = r.strip_prefix('"') {
            match r.find('"') {
                Some(i) => (&r[..i], &r[i + 1..]),
                None => (r, ""),
            }
        } else {
            match r.find(',') {
                Some(i) => (&r[..i], &r[i..]),
                None => (r, ""),
            }
        };
        out.push((k, v.to_owned()));
        rest = r.trim_start_matches([',', ' ']);
    }
    out
}

/// The base64 `user:password` for `host`/`repo`, from the first of
/// `auth_files` that has an entry (most specific key wins: `host/repo`, …, `host`).
fn basic_credentials(host: &str, repo: &str, auth_files: &[PathBuf]) -> Result<Option<String>> {
    let mut keys = Vec::new();
    let mut scope = format!("{host}/{repo}");
    loop {
        keys.push(scope.clone());
        match scope.rfind('/') {
            Some(i) => scope.truncate(i),
            None => break,
        }
    }
    keys.push(format!("https://{host}"));
    keys.push(format!("http://{host}"));
    if host == "docker.io" {
        keys.push("https://index.docker.io/v1/".into());
    }
    for path in auth_files {
        let path = path.clone();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(RegistryError::AuthFile {
                    path,
                    why: e.to_string(),
                });
            }
        };
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| RegistryError::AuthFile {
                path: path.clone(),
                why: format!("not JSON: {e}"),
            })?;
        let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
            continue;
        };
        for k in &keys {
            if let Some(a) = auths
                .get(k)
                .and_then(|e| e.get("auth"))
                .and_then(|a| a.as_str())
            {
                // Validate it decodes, so a broken file fails here with its name.
                base64::engine::general_purpose::STANDARD
                    .decode(a)
                    .map_err(|e| RegistryError::AuthFile {
                        path: path.clone(),
                        why: format!("auths.{k}.auth is not base64: {e}"),
                    })?;
                return Ok(Some(a.to_owned()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_and_loopback() {
        let p =
            parse_challenge(r#"realm="https://a/token",service="reg",scope="repository:x/y:pull""#);
        assert_eq!(p[0], ("realm".into(), "https://a/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:x/y:pull".into()));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("example.com:5000"));
    }
}
