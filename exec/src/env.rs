//! The environment the libraries do not read: pinfold's home and every
//! other path or setting the sandbox needs, read here once and passed
//! down (by this binary and by `pinfold`, whose `env` adds the runner's).

use std::path::PathBuf;

use pinfold_sandbox::Settings;

/// pinfold's state directory: `$PINFOLD_HOME`, else `$XDG_DATA_HOME/pinfold`,
/// else `~/.local/share/pinfold`. `None` only when no home can be found.
///
/// The one definition: every subcommand takes its home from here and hands
/// it to the libraries.
pub fn pinfold_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("PINFOLD_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(x).join("pinfold"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/pinfold"))
}

/// The registry credential files podman reads, in its order:
/// `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json` and `~/.docker/config.json`.
fn registry_auth_files() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut v = Vec::new();
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(PathBuf::from(r).join("containers/auth.json"));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(c) => v.push(PathBuf::from(c).join("containers/auth.json")),
        None => v.extend(
            home.as_ref()
                .map(|h| h.join(".config/containers/auth.json")),
        ),
    }
    v.extend(home.map(|h| h.join(".docker/config.json")));
    v
}

/// What the sandbox library needs from this process's environment.
pub fn settings() -> Settings {
    Settings {
        home: pinfold_home(),
        policy_path: std::env::var_os("PINFOLD_POLICY_PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        path: std::env::var_os("PATH"),
        root_idmap: std::env::var("PINFOLD_ROOT_IDMAP").ok(),
        platform: std::env::var("PINFOLD_PLATFORM").ok(),
        registry_auth_files: registry_auth_files(),
        term: std::env::var("TERM").ok(),
        proc_sys: None,
    }
}
