//! A job that another CI system's runner drives one call at a time
//! (`pinfold gitlab-driver`, `pinfold gha-hook`): its image, its
//! directory, and removing it all (the keeper that holds the job file
//! system and runs the job's container between calls: [`super::keeper`]).
//!
//! Each call is a new process, so what the job keeps lives in a directory
//! (0700) under `PINFOLD_HOME`: the caller's state file, `keeper.pid`, the
//! keeper's log and its socket, and the job file system's socket
//! ([`pinfold_sandbox::container::jobfs`]).

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinfold_agent::hosted;
use pinfold_sandbox::Settings;
use pinfold_sandbox::image::{ImageError, ImageRef, PullOptions, Store};

/// The keeper's pid file in the job directory.
pub(super) const KEEPER_PID: &str = "keeper.pid";
/// There from [`create`] until prepare has answered ([`ready`]). A marker
/// of the unfinished rather than of the finished: a directory made before
/// it existed (a job running across an upgrade) counts as prepared.
const PREPARING: &str = "preparing";
/// The keeper's stderr, in the job directory.
pub(super) const KEEPER_LOG: &str = "keeper.log";

/// Why an image cannot be used: the job's choice, or this host's failure.
#[derive(Debug)]
pub enum ImageRefused {
    /// The job named an image the operator does not allow.
    Job(String),
    /// The store or the registry failed.
    System(String),
}

/// What the operator lets a job's image be.
pub struct ImageRules<'a> {
    /// A tag, resolved once.
    pub allow_tag: bool,
    /// A path on this host (oci:, oci-archive:, docker-archive:).
    pub allow_local: bool,
    /// The operator's flags that allow tags and local images, named in the
    /// refusals (e.g. `gitlab-driver prepare --allow-tag`).
    pub tag_flag: &'a str,
    /// Likewise for local images.
    pub local_flag: &'a str,
    /// How the job names its image, in the refusals (e.g. `image:
    /// REPO@sha256:DIGEST` in .gitlab-ci.yml).
    pub how: &'a str,
}

/// Finds or pulls `image` under `rules`, saying on stdout what it did;
/// returns the pinned reference every step uses.
pub fn resolve_image(
    image: &str,
    rules: &ImageRules,
    settings: &Settings,
) -> Result<String, ImageRefused> {
    let r = ImageRef::parse_pinned(image, rules.allow_tag).map_err(|e| {
        ImageRefused::Job(format!(
            "{e} (for this runner, its operator allows tags with `{}`)",
            rules.tag_flag
        ))
    })?;
    if !r.is_registry() && !rules.allow_local {
        return Err(ImageRefused::Job(format!(
            "the job's image names a file on the runner, not a registry image: write `{}` (local images need the operator's `{}`)",
            rules.how, rules.local_flag
        )));
    }
    if let Some(host) = r.registry_host()
        && !rules.allow_local
        && host_is_local(host)
    {
        return Err(ImageRefused::Job(format!(
            "the job's image is on {host}, an address of this runner's own or private network, which a job may not make the runner reach: use a public registry (local sources need the operator's `{}`)",
            rules.local_flag
        )));
    }
    let system = |e: ImageError| ImageRefused::System(format!("image {image}: {e}"));
    let store = Store::open_default(settings).map_err(system)?;
    let t0 = Instant::now();
    let pinned_already = image.contains("@sha256:");
    // Cached only under this very name: the same digest under another name
    // (a private image the operator pulled, a local one) is not the job's
    // to use without its registry's say; pulling it is cheap when the
    // store has its blobs.
    if pinned_already && store.find_named(&r).map_err(system)?.is_some() {
        println!("==> image {image} (cached)");
        return Ok(image.to_string());
    }
    let opts = PullOptions {
        allow_tag: rules.allow_tag,
        ..PullOptions::default()
    };
    let rec = store.pull(&r, &opts).map_err(system)?;
    if pinned_already {
        println!("==> image {image} (fetched in {:.1?})", t0.elapsed());
        return Ok(image.to_string());
    }
    // The tag, resolved once: names[0] is `docker://HOST/REPO@DIGEST`.
    let pinned = rec
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| format!("{image}@{}", rec.root));
    println!(
        "==> image {image} resolved to {pinned} (the tag is not looked up again for this job)"
    );
    Ok(pinned)
}

/// Whether a registry host is this machine or a private network's:
/// `localhost`, or an address that is not public (loopback, private,
/// link-local, metadata). A name that resolves to one is not caught here.
fn host_is_local(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| pinfold_sandbox::net::ranges::refused(ip, false))
}

/// Creates the job directory `dir` afresh (0700): what an earlier attempt
/// of the same job left (a retried prepare) is stopped and removed first.
pub fn create(dir: &Path, settings: &Settings) -> Result<(), String> {
    if dir.exists() {
        remove(dir, settings)?;
    }
    let parent = dir.parent().expect("a job directory has a parent");
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            format!(
                "{}: {e} (is another prepare of this job running?)",
                dir.display()
            )
        })?;
    std::fs::write(dir.join(PREPARING), b"").map_err(|e| format!("{}: {e}", dir.display()))
}

/// Marks `dir` as prepared: its runner has (or is about to have) what it
/// needs to call cleanup. Until then a sweep may take it, keeper and all.
pub fn ready(dir: &Path) -> Result<(), String> {
    std::fs::remove_file(dir.join(PREPARING)).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Removes `dir`, then the job directories beside it whose cleanup never
/// came: a runner killed mid-job (the keeper is gone, so nothing else will
/// remove them), or a prepare killed before it answered (never [`ready`],
/// so the runner cannot name it to cleanup). A directory younger than ten
/// minutes may be a prepare still running, and is left; only names
/// [`hosted::is_id`] accepts are looked at.
pub fn remove_and_sweep(dir: &Path, settings: &Settings) -> Result<(), String> {
    remove(dir, settings)?;
    if let Some(parent) = dir.parent()
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        for e in entries.flatten() {
            let p = e.path();
            if !e.file_name().to_str().is_some_and(hosted::is_id) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > Duration::from_secs(600)));
            let abandoned = p.join(PREPARING).exists() || alive(&p, KEEPER_PID).is_none();
            if p != dir && old && abandoned {
                tracing::info!(dir = %p.display(), "removing a job directory left behind");
                let _ = remove(&p, settings);
            }
        }
    }
    Ok(())
}

/// The process in `dir/pid_file`, if it is still running and is this job's
/// (its command line names `dir`: a pid reused by another process is left
/// alone).
fn alive(dir: &Path, pid_file: &str) -> Option<Pid> {
    let pid: i32 = std::fs::read_to_string(dir.join(pid_file))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = dir.as_os_str().as_encoded_bytes();
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg.starts_with(needle));
    ours.then(|| Pid::from_raw(pid))
}

/// Stops the job's keeper, and with it the job's container and any step
/// running there (SIGTERM, then SIGKILL after 5 s), and removes its
/// directory.
pub fn remove(dir: &Path, settings: &Settings) -> Result<(), String> {
    if let Some(pid) = alive(dir, KEEPER_PID) {
        let _ = kill(pid, Signal::SIGTERM);
        let t = Instant::now();
        while alive(dir, KEEPER_PID).is_some() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if alive(dir, KEEPER_PID).is_some() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    if !dir.exists() {
        return Ok(());
    }
    // The keeper's holder may take a moment to let go of its mounts.
    let mut last = String::new();
    for _ in 0..50 {
        match pinfold_sandbox::image::owner::remove_run_dir(dir, settings) {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("removing {}: {last}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::host_is_local;

    #[test]
    fn registries_on_this_machine_or_a_private_network_are_local() {
        for h in [
            "localhost",
            "localhost:5000",
            "reg.localhost",
            "127.0.0.1:5000",
            "10.1.2.3",
            "192.168.0.1:443",
            "169.254.169.254",
            "[::1]:5000",
            "[::1]",
            "0.0.0.0",
        ] {
            assert!(host_is_local(h), "{h}");
        }
        for h in [
            "docker.io",
            "ghcr.io",
            "8.8.8.8:5000",
            "registry.example.com:5000",
        ] {
            assert!(!host_is_local(h), "{h}");
        }
    }
}
