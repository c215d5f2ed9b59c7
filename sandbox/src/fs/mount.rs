//! Mount propagation: the first step of every process that mounts in a
//! namespace of its own (the container, the job file system holder, the
//! doctor's overlay probe).

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};

/// Makes every mount of this mount namespace private (recursively), so
/// nothing mounted from here on propagates back to the host.
pub(crate) fn make_mounts_private() -> Result<(), Errno> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}
