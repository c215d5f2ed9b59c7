//! The two pipes between the parent and the child.
//!
//! * go pipe: the parent writes one byte once the id maps are in place; EOF
//!   instead means the parent died, and the child exits. When the child
//!   writes its own maps it only checks, without waiting, that the write
//!   end is still open.
//! * error pipe: close-on-exec, held by the child and then the job until
//!   execve. A failing step writes one record `code \t step \t message \t hint`
//!   and exits; EOF with no record means the command was executed.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{pipe2, read, write};

use super::{ContainerError, Result};

/// A failure inside the child: which step, what went wrong, what to do.
#[derive(Debug)]
pub(crate) struct StepError {
    pub step: String,
    pub message: String,
    pub hint: Option<String>,
    pub code: i32,
}

impl StepError {
    /// A setup failure (exit status 125).
    pub fn new(step: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            step: step.into(),
            message: message.to_string(),
            hint: None,
            code: 125,
        }
    }

    /// Adds what the user should do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the exit status to report.
    pub fn code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }
}

/// Shorthand to turn an errno into a [`StepError`] naming the step.
pub(crate) trait Step<T> {
    fn step(self, step: &str) -> std::result::Result<T, StepError>;
}

impl<T> Step<T> for std::result::Result<T, Errno> {
    fn step(self, step: &str) -> std::result::Result<T, StepError> {
        self.map_err(|e| StepError::new(step, e.desc()))
    }
}

impl<T> Step<T> for std::io::Result<T> {
    fn step(self, step: &str) -> std::result::Result<T, StepError> {
        self.map_err(|e| StepError::new(step, e))
    }
}

pub(crate) fn pipe(what: &'static str) -> Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).map_err(|source| ContainerError::Parent {
        step: what,
        source,
        hint: None,
    })
}

/// A unix stream socket pair (close-on-exec), for passing an fd.
pub(crate) fn socket_pair(what: &'static str) -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| ContainerError::Parent {
        step: what,
        source,
        hint: None,
    })
}

/// The status pipe: init writes the job's exit status and full disks (8 bytes) when every
/// process of the container is gone. The read end is non-blocking and raises
/// SIGIO in this process when data arrives.
pub(crate) fn status_pipe() -> Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::AsRawFd;
    let (r, w) = pipe("status pipe")?;
    let fd = r.as_raw_fd();
    // SAFETY: fcntl on an fd we own, with integer arguments.
    let ok = unsafe {
        libc::fcntl(fd, libc::F_SETOWN, libc::getpid()) >= 0
            && libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK | libc::O_ASYNC) >= 0
    };
    if !ok {
        return Err(ContainerError::Parent {
            step: "set up the status pipe",
            source: Errno::last(),
            hint: None,
        });
    }
    Ok((r, w))
}

/// Parent: the status init reported, if it has: the job's exit code and
/// the disks init found full (`limits::FULL_*` bits).
pub(crate) fn read_status(r: &OwnedFd) -> Option<(i32, u32)> {
    let mut b = [0u8; 8];
    match read(r.as_fd(), &mut b) {
        Ok(8) => Some((
            i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        )),
        _ => None,
    }
}

/// Init: reports the job's status and the full disks (one atomic pipe write).
pub(crate) fn write_status(w: &OwnedFd, code: i32, full: u32) {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&code.to_ne_bytes());
    b[4..].copy_from_slice(&full.to_ne_bytes());
    let _ = write(w, &b);
}

/// Parent: lets the child go on.
pub(crate) fn release(go: &OwnedFd) -> Result<()> {
    write(go, b"1")
        .map(drop)
        .map_err(|source| ContainerError::Parent {
            step: "release the container",
            source,
            hint: None,
        })
}

/// Child: waits for the parent's go. Returns false when the parent is gone.
pub(crate) fn wait_for_go(go: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    loop {
        match read(go.as_fd(), &mut b) {
            Ok(1) => return true,
            Err(Errno::EINTR) => continue,
            _ => return false,
        }
    }
}

/// Child: whether the parent has exited (the go pipe's write end is closed),
/// without waiting.
pub(crate) fn parent_gone(go: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        go.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP)),
        Err(_) => true,
    }
}

fn clean(s: &str) -> String {
    s.replace(['\t', '\n'], " ")
}

/// Child: reports a failure to the parent.
pub(crate) fn report(err_pipe: impl AsFd, e: &StepError) {
    let record = format!(
        "{}\t{}\t{}\t{}",
        e.code,
        clean(&e.step),
        clean(&e.message),
        e.hint.as_deref().map(clean).unwrap_or_default()
    );
    let _ = write(err_pipe, record.as_bytes());
}

/// Parent: reads the error record, if any, until every write end is closed.
pub(crate) fn read_error(err_pipe: &OwnedFd) -> Option<ContainerError> {
    let mut buf = Vec::new();
    let mut file = std::fs::File::from(err_pipe.try_clone().ok()?);
    let _ = file.read_to_end(&mut buf);
    if buf.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.splitn(4, '\t');
    let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(125);
    let step = parts.next().unwrap_or("container setup").to_owned();
    let message = parts.next().unwrap_or("unknown failure").to_owned();
    let hint = parts.next().filter(|h| !h.is_empty()).map(str::to_owned);
    Some(ContainerError::Setup {
        step,
        message,
        hint,
        code,
    })
}

/// Sends `fds` over the UNIX socket `channel` (SCM_RIGHTS), with one byte
/// of data so the receiver can tell a message from EOF.
pub(crate) fn send_fds(channel: &impl AsRawFd, fds: &[RawFd]) -> std::result::Result<(), Errno> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [std::io::IoSlice::new(b"F")];
    loop {
        match sendmsg::<()>(
            channel.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(fds)],
            MsgFlags::empty(),
            None,
        ) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// Receives what [`send_fds`] sent (close-on-exec, at most 4 fds); empty
/// when the sender closed the socket without sending.
pub(crate) fn recv_fds(channel: &impl AsRawFd) -> std::result::Result<Vec<OwnedFd>, Errno> {
    use std::os::fd::FromRawFd;

    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = loop {
        match recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut out = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these fds in our table for
            // us (SCM_RIGHTS); nothing else owns them.
            out.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(out)
}
