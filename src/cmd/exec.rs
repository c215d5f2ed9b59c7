//! `pinfold exec`: run one command in a hardened rootless container. The
//! run is `pinfold-exec`'s ([`pinfold_exec::run`]); this command adds the
//! fetch of a pinned image the store lacks.

/// Run a command in a hardened rootless container.
///
/// Exit status: the command's own; 128+N when it dies of signal N; 123 when
/// a resource limit of the policy ended it (memory, pids, CPU time, a full
/// writable layer or /tmp; the reason is printed); 124 when --timeout fires;
/// 125 when the sandbox could not be set up; 126/127 when the command cannot
/// be executed / is not found.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    exec: pinfold_exec::ExecArgs,
    #[command(flatten)]
    fetch: crate::fetch::FetchArgs,
}

/// Runs the subcommand; returns the exit status.
pub fn run(a: Args) -> i32 {
    let fetch = a.fetch;
    pinfold_exec::run(a.exec, &|store, image| {
        crate::fetch::resolve(store, image, &fetch)
    })
}
