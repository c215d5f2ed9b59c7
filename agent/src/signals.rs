//! SIGTERM and SIGINT turned into a flag the loops poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGTERM and SIGINT.
pub fn install() -> nix::Result<()> {
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; no other handler for these signals is relied on.
        unsafe { sigaction(s, &act) }?;
    }
    Ok(())
}

/// True once SIGTERM or SIGINT arrived.
pub fn received() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}

/// A job's stop flag, set to [`stop::CANCELLED`](crate::runner::stop::CANCELLED)
/// by a thread once SIGTERM or SIGINT arrives (call [`install`] first):
/// how `pinfold run` and `pinfold verify` cancel their jobs.
pub fn stop_flag() -> Arc<AtomicU8> {
    use crate::runner::stop;
    let flag = Arc::new(AtomicU8::new(stop::NONE));
    let set = flag.clone();
    std::thread::spawn(move || {
        while !received() {
            std::thread::sleep(Duration::from_millis(50));
        }
        set.store(stop::CANCELLED, Ordering::SeqCst);
    });
    flag
}
