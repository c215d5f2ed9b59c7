//! The job container's control channel: how a runner starts each step of
//! a job inside one long-lived container (`pinfold exec --control-fd N`).
//!
//! The runner makes a unix stream socket pair ([`Control::pair`]) and hands
//! one end to the container, whose init serves it (`init::serve`). For
//! each step the runner sends one [`StepRequest`] with the write end of the
//! step's output pipe attached (SCM_RIGHTS; it becomes the step's stdout
//! and stderr), and reads back one [`StepReply`] once the step and every
//! process it started are gone. Closing the runner's end ends the
//! container: init exits with the last step's status, and `pinfold exec`
//! reports how the container ended (a limit, a full disk) as it does for a
//! single command.
//!
//! A message is a little-endian `u32` length and that many bytes of JSON.
//! Hand-written: a length prefix and one `sendmsg` with SCM_RIGHTS are
//! the whole protocol, and no crate frames fd-carrying messages over a
//! blocking socket without pulling in an async runtime.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

/// The largest message either side accepts (a step's script and
/// environment travel in one).
pub const MAX_MESSAGE: usize = 8 << 20;

/// Errors on the control channel.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The other end is gone: the container ended (a limit, a setup
    /// failure, a kill), or the runner closed its end.
    #[error("the job container's control channel closed")]
    Closed,
    /// A system call on the socket failed.
    #[error("job container control channel: {0}")]
    Io(#[from] std::io::Error),
    /// A message could not be encoded or decoded.
    #[error("job container control channel: bad message: {0}")]
    Message(String),
}

/// One step to start in the job container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepRequest {
    /// The command and its arguments (looked up on the step's PATH).
    pub argv: Vec<String>,
    /// Set on top of the container's environment (the image's and
    /// pinfold's), in order; a later entry wins.
    pub env: Vec<(String, String)>,
    /// The step's wall-clock limit: when it passes, every process of the
    /// step is killed and the reply says `timed_out` (exit 124).
    pub timeout_ms: Option<u64>,
}

/// How a step ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepReply {
    /// `pinfold exec`'s exit status contract: the code, 128+N for signal
    /// N, 124 for a timeout, 125 when the step could not be set up, 126/127
    /// when its command cannot be executed / is not found.
    pub exit_code: i32,
    /// The step's timeout fired.
    pub timed_out: bool,
    /// Why the step did not start, one line as `pinfold exec` prints it.
    pub error: Option<String>,
}

/// One end of the control channel.
#[derive(Debug)]
pub struct Control(OwnedFd);

/// How far the other end of a [`Control`] has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// It may still send.
    Open,
    /// It shut its sending side (`shutdown(SHUT_WR)`) and still reads.
    ShutWrite,
    /// It closed its end (or died).
    Closed,
}

impl Control {
    /// A connected pair, both ends close-on-exec: the runner keeps the
    /// [`Control`], and the container gets the other end as its fd N
    /// (`pinfold exec --control-fd N`).
    pub fn pair() -> Result<(Control, OwnedFd), ControlError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io)?;
        Ok((Control(a), b))
    }

    /// Wraps a connected unix stream socket this process owns (the
    /// container's init; a job keeper's connection, which speaks the
    /// same framing).
    pub fn from_fd(fd: OwnedFd) -> Control {
        Control(fd)
    }

    /// Starts a step: `output` becomes its stdout and stderr.
    pub fn start(&self, req: &StepRequest, output: BorrowedFd<'_>) -> Result<(), ControlError> {
        self.send(req, &[output.as_raw_fd()])
    }

    /// The reply to the step started last, waiting at most `wait`
    /// (`None`: it is still running).
    pub fn reply(&self, wait: Duration) -> Result<Option<StepReply>, ControlError> {
        if !self.readable(wait)? {
            return Ok(None);
        }
        self.recv().map(|(r, _)| Some(r))
    }

    /// How far the other end has gone, now. By hand (libc's `poll`): nix's
    /// `PollFd::revents` has no POLLRDHUP and reads as `None` when the
    /// kernel sets it.
    pub fn peer(&self) -> Peer {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack, a zero timeout.
        if unsafe { libc::poll(&mut p, 1, 0) } <= 0 {
            return Peer::Open;
        }
        if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            Peer::Closed
        } else if p.revents & libc::POLLRDHUP != 0 {
            Peer::ShutWrite
        } else {
            Peer::Open
        }
    }

    /// Whether a message (or EOF) is waiting, within `wait`.
    pub fn readable(&self, wait: Duration) -> Result<bool, ControlError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(io(e)),
        }
    }

    /// Sends one message with `fds` attached.
    pub fn send<T: Serialize>(&self, msg: &T, fds: &[RawFd]) -> Result<(), ControlError> {
        let body = serde_json::to_vec(msg).map_err(|e| ControlError::Message(e.to_string()))?;
        if body.len() > MAX_MESSAGE {
            return Err(ControlError::Message(format!(
                "{} bytes, over the {} byte limit: shorten the step's script or environment",
                body.len(),
                MAX_MESSAGE
            )));
        }
        let head = (body.len() as u32).to_le_bytes();
        let iov = [IoSlice::new(&head), IoSlice::new(&body)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let sent = loop {
            match sendmsg::<()>(
                self.0.as_raw_fd(),
                &iov,
                if fds.is_empty() { &[] } else { &cmsg },
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(ControlError::Closed),
                other => break other.map_err(io)?,
            }
        };
        // A blocking stream socket takes the whole message at once unless
        // a signal interrupts it: write what is left.
        let all: Vec<u8> = head.iter().chain(&body).copied().collect();
        if sent < all.len() {
            self.file().write_all(&all[sent..]).map_err(closed)?;
        }
        Ok(())
    }

    /// Receives one message and the fds attached to it (close-on-exec).
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> Result<(T, Vec<OwnedFd>), ControlError> {
        let mut head = [0u8; 4];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let (got, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut head)];
            match recvmsg::<()>(
                self.0.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(ControlError::Closed),
                Err(e) => return Err(io(e)),
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg.cmsgs().map_err(io)? {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            // SAFETY: the kernel just installed these fds
                            // in our table (SCM_RIGHTS); nothing else owns them.
                            fds.extend(
                                raw.into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                    break (msg.bytes, fds);
                }
            }
        };
        if got == 0 {
            return Err(ControlError::Closed);
        }
        let mut f = self.file();
        f.read_exact(&mut head[got..]).map_err(closed)?;
        let len = u32::from_le_bytes(head) as usize;
        if len > MAX_MESSAGE {
            return Err(ControlError::Message(format!(
                "{len} bytes, over the {MAX_MESSAGE} byte limit"
            )));
        }
        let mut body = vec![0u8; len];
        f.read_exact(&mut body).map_err(closed)?;
        let msg =
            serde_json::from_slice(&body).map_err(|e| ControlError::Message(e.to_string()))?;
        Ok((msg, fds))
    }

    fn file(&self) -> std::mem::ManuallyDrop<std::fs::File> {
        // SAFETY: a File over our fd that is never dropped (ManuallyDrop),
        // so the fd stays owned by `self.0` alone.
        std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(self.0.as_raw_fd()) })
    }
}

impl AsFd for Control {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

fn io(e: Errno) -> ControlError {
    ControlError::Io(std::io::Error::from(e))
}

fn closed(e: std::io::Error) -> ControlError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset => ControlError::Closed,
        _ => ControlError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_fd_cross_and_a_closed_end_reads_as_closed() {
        let (a, b) = Control::pair().unwrap();
        let b = Control::from_fd(b);
        let (r, w) = nix::unistd::pipe().unwrap();
        let req = StepRequest {
            argv: vec!["/bin/sh".into(), "-c".into(), "x".repeat(300_000)],
            env: vec![("A".into(), "1".into())],
            timeout_ms: Some(5),
        };
        let t = std::thread::spawn(move || {
            a.start(&req, w.as_fd()).unwrap();
            drop(w);
            let reply = a.reply(Duration::from_secs(5)).unwrap();
            (req, reply)
        });
        let (got, fds): (StepRequest, _) = b.recv().unwrap();
        assert_eq!(fds.len(), 1);
        nix::unistd::write(&fds[0], b"hi").unwrap();
        drop(fds);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hi");
        b.send(
            &StepReply {
                exit_code: 3,
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        let (req, reply) = t.join().unwrap();
        assert_eq!(got, req);
        assert_eq!(reply.unwrap().exit_code, 3);
        drop(b);
        // (the runner's end, after the container is gone)
    }

    #[test]
    fn eof_is_closed_and_an_oversized_length_is_refused() {
        let (a, b) = Control::pair().unwrap();
        let b = Control::from_fd(b);
        nix::unistd::write(&a, &u32::MAX.to_le_bytes()).unwrap();
        assert!(matches!(
            b.recv::<StepRequest>(),
            Err(ControlError::Message(_))
        ));
        drop(a);
        assert!(matches!(b.recv::<StepRequest>(), Err(ControlError::Closed)));
    }
}
