//! The runner's identity at a coordinator: the runner token stored per
//! server (registering once to get it, again when the server forgot the
//! runner) and the runner's public key the server holds.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pinfold_api::provenance::{self, SigningKey};
use pinfold_client::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{AgentError, Config};

/// What registering gave this runner, as kept on disk.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredToken {
    server: String,
    /// The runner's id at the server.
    pub(super) runner_id: u64,
    /// The runner's token.
    pub(super) token: String,
}

/// The file the runner token for `server` is kept in: one per server.
pub fn token_path(home: &Path, server: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(server.trim_end_matches('/').as_bytes()));
    home.join("agent").join(format!("runner-{}.json", &h[..16]))
}

/// The stored runner token for `cfg.server`, or (none stored, or `fresh`)
/// a new one from registering with `key`'s public half.
pub(super) fn runner_token(
    cfg: &Config,
    key: &SigningKey,
    fresh: bool,
) -> Result<StoredToken, AgentError> {
    let path = token_path(&cfg.home, &cfg.server);
    let terr = |source| AgentError::Token {
        path: path.clone(),
        source,
    };
    if !fresh {
        match std::fs::read(&path) {
            Ok(b) => {
                let t: StoredToken = serde_json::from_slice(&b)
                    .map_err(|e| terr(std::io::Error::other(e.to_string())))?;
                return Ok(t);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(terr(e)),
        }
    }
    let reg = Client::new(
        &cfg.server,
        cfg.registration_token.clone(),
        cfg.request_timeout,
    );
    let public = provenance::public_key_pem(&key.verifying_key())?;
    let r = reg
        .register_with_key(&cfg.name, &cfg.labels, Some(&public))
        .map_err(|source| AgentError::Register {
            server: cfg.server.clone(),
            source,
        })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(terr)?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(terr)?;
    let stored = StoredToken {
        server: cfg.server.clone(),
        runner_id: r.runner_id,
        token: r.token,
    };
    let body =
        serde_json::to_vec(&stored).map_err(|e| terr(std::io::Error::other(e.to_string())))?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .map_err(terr)?;
    std::fs::rename(&tmp, &path).map_err(terr)?;
    tracing::info!(runner_id = stored.runner_id, "registered");
    Ok(stored)
}

/// Makes sure the server holds this runner's key: a runner registered by an
/// older agent has none and sets it now; a different one (the key file was
/// replaced) means its provenance will be refused, which is only warned
/// about here (jobs still run; each job's log says it).
pub(super) fn ensure_key(client: &Client, key: &SigningKey) {
    let Ok(pem) = provenance::public_key_pem(&key.verifying_key()) else {
        return;
    };
    match client.set_runner_key(&pem) {
        Ok(_) => {}
        Err(e) if e.status() == Some(409) => tracing::warn!(
            %e,
            "the server holds another key for this runner: its provenance will be refused; \
             remove the runner token file to register again"
        ),
        Err(e) => tracing::warn!(%e, "could not check the runner's registered key"),
    }
}

/// Tells the server what this host enforces (the dashboard's runners page).
/// A server older than the endpoint answers 404; jobs run either way.
pub(super) fn send_facts(client: &Client, cfg: &Config) {
    let facts = pinfold_api::wire::RunnerFacts {
        version: env!("CARGO_PKG_VERSION").into(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        limits: match pinfold_sandbox::container::cgroup::detect() {
            pinfold_sandbox::container::cgroup::Mechanism::Cgroup(_) => "cgroup v2".into(),
            m => m.to_string().chars().take(500).collect(),
        },
        landlock_abi: pinfold_sandbox::kernel::landlock_abi(),
        policies: cfg
            .rt
            .ceiling
            .names()
            .into_iter()
            .map(String::from)
            .collect(),
    };
    if let Err(e) = client.set_runner_facts(&facts) {
        tracing::warn!(%e, "could not report this runner's sandbox facts to the server");
    }
}
