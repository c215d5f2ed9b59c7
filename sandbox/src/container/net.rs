//! The container's network, set up by the child while it still holds
//! CAP_NET_ADMIN in its own user namespace (the job never does).
//!
//! * `none`: loopback up, nothing else exists.
//! * `allowlist`: the same, plus the proxy's listening socket, made here and
//!   handed to the parent (see [`super::proxy`]).
//! * `egress`: the parent has attached pasta (a user-mode stack, from
//!   Debian's `passt`) to the namespace before releasing the child; the
//!   child adds policy-routing rules that answer "prohibited" for private,
//!   link-local and shared ranges, so a job cannot reach the host's LAN,
//!   metadata services or the host itself through the gateway. The rules are
//!   checked by the kernel before any route: no packet for those ranges ever
//!   leaves the namespace.
//!
//! Netlink messages are built by hand: two message kinds (SIOCSIFFLAGS and
//! RTM_NEWRULE) do not justify an async rtnetlink stack in the exec path.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};

/// The address pasta forwards DNS queries from (to the host's resolver).
pub(crate) const DNS_FORWARD: [u8; 4] = [169, 254, 1, 1];

/// IPv4 ranges refused in `egress` unless the policy allows private ranges.
pub(crate) const PRIVATE_RANGES: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),
    ([10, 0, 0, 0], 8),
    ([100, 64, 0, 0], 10),
    ([169, 254, 0, 0], 16),
    ([172, 16, 0, 0], 12),
    ([192, 168, 0, 0], 16),
];

/// Brings `lo` up.
pub(crate) fn loopback_up() -> Result<(), Errno> {
    loopback_up_socket().map(drop)
}

/// Brings `lo` up; returns the socket it used (one of the namespace's own).
fn loopback_up_socket() -> Result<OwnedFd, Errno> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads a valid, initialised ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Errno::last());
    }
    Ok(sock)
}

/// A network namespace (loopback up) being made on a helper thread while the
/// child builds its mounts. The kernel takes about 1 ms to create one
/// (registering the loopback device, the per-namespace sysctl tables) and
/// bubblewrap pays it inside its clone, in series with everything else; a
/// second core does it here at the same time as the mounts. The child joins
/// the namespace with [`PendingNetns::enter`] before anything of the job
/// runs: nothing but pinfold's own setup runs in the host's namespace (where
/// the child holds no capability).
pub(crate) enum PendingNetns {
    /// Being made on the helper thread; it returns an fd of the namespace.
    Thread(std::thread::JoinHandle<Result<OwnedFd, Errno>>),
    /// No thread could be started (say, RLIMIT_NPROC is reached): `enter`
    /// makes the namespace in place, in series as before.
    Inline,
}

impl PendingNetns {
    pub(crate) fn start() -> Self {
        match std::thread::Builder::new()
            .name("netns".into())
            .stack_size(64 * 1024)
            .spawn(make_netns)
        {
            Ok(handle) => Self::Thread(handle),
            Err(e) => {
                tracing::debug!(error = %e, "no thread for the network namespace: making it in place");
                Self::Inline
            }
        }
    }

    /// Moves the calling thread into the new namespace, loopback up.
    pub(crate) fn enter(self) -> Result<(), Errno> {
        match self {
            Self::Thread(handle) => {
                let ns = handle.join().map_err(|_| Errno::EIO)??;
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            }
            Self::Inline => {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
                loopback_up()
            }
        }
    }
}

/// The helper thread: a network namespace with loopback up, as an fd.
fn make_netns() -> Result<OwnedFd, Errno> {
    // unshare(CLONE_NEWNET) moves only this thread; the namespace is owned
    // by the container's user namespace, where it holds every capability.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    let sock = loopback_up_socket()?;
    // SAFETY: SIOCGSKNS takes no argument and returns a new fd for the
    // network namespace of the socket, which this thread owns.
    let ns = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGSKNS) };
    if ns < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `ns` is a fresh fd returned by the kernel, owned by nobody else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ns) })
}

const FR_ACT_TO_TBL: u8 = 1;
const FR_ACT_PROHIBIT: u8 = 8;
const FRA_DST: u16 = 1;
const FRA_PRIORITY: u16 = 6;

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// One RTM_NEWRULE message: `priority: to DST/LEN <action>`.
fn rule_message(seq: u32, dst: [u8; 4], len: u8, action: u8, priority: u32) -> Vec<u8> {
    let mut body = vec![
        libc::AF_INET as u8,
        len, // dst_len
        0,   // src_len
        0,   // tos
        if action == FR_ACT_TO_TBL {
            libc::RT_TABLE_MAIN
        } else {
            0
        },
        0,
        0,
        action,
    ];
    body.extend_from_slice(&0u32.to_ne_bytes()); // flags
    push_attr(&mut body, FRA_DST, &dst);
    push_attr(&mut body, FRA_PRIORITY, &priority.to_ne_bytes());
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_NEWRULE.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    msg.extend(body);
    msg
}

fn send_and_ack(sock: &OwnedFd, msg: &[u8]) -> Result<(), Errno> {
    // SAFETY: a zeroed sockaddr_nl with the family set addresses the kernel.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `msg` and `addr` are valid for the lengths passed.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(Errno::last());
    }
    let mut buf = [0u8; 512];
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 20 {
        return Err(if n < 0 { Errno::last() } else { Errno::EPROTO });
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind != libc::NLMSG_ERROR as u16 {
        return Err(Errno::EPROTO);
    }
    let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if err == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(-err))
    }
}

/// Refuses the private ranges (see [`PRIVATE_RANGES`]) with policy-routing
/// rules, keeping pasta's DNS forwarder reachable.
pub(crate) fn refuse_private_ranges() -> Result<(), Errno> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let mut seq = 1;
    send_and_ack(
        &sock,
        &rule_message(seq, DNS_FORWARD, 32, FR_ACT_TO_TBL, 90),
    )?;
    for (dst, len) in PRIVATE_RANGES {
        seq += 1;
        send_and_ack(&sock, &rule_message(seq, *dst, *len, FR_ACT_PROHIBIT, 100))?;
    }
    Ok(())
}

/// `allowlist`: creates the proxy's listening socket on
/// [`super::proxy::PROXY_ADDR`] in this (the container's) network namespace
/// and sends it to the parent over `channel` (SCM_RIGHTS); the parent serves
/// it from outside. Our copy is closed on return, so neither init nor the
/// job holds it.
pub(crate) fn hand_over_proxy_listener(channel: &OwnedFd) -> Result<(), Errno> {
    use nix::sys::socket::{
        Backlog, ControlMessage, MsgFlags, SockaddrIn, bind, listen, sendmsg, setsockopt, sockopt,
    };
    let listener = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&listener, sockopt::ReuseAddr, &true)?;
    let ([a, b, c, d], port) = super::proxy::PROXY_ADDR;
    bind(listener.as_raw_fd(), &SockaddrIn::new(a, b, c, d, port))?;
    listen(&listener, Backlog::new(128)?)?;
    let fds = [listener.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"L")];
    sendmsg::<()>(
        channel.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Parent: receives the listener sent by [`hand_over_proxy_listener`];
/// `None` when the child ended before sending it (its setup failed).
pub(crate) fn receive_proxy_listener(channel: &OwnedFd) -> Result<Option<OwnedFd>, Errno> {
    use std::os::fd::FromRawFd;

    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
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
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this fd in our table for us
            // (SCM_RIGHTS); nothing else owns it.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_message_layout() {
        let m = rule_message(7, [10, 0, 0, 0], 8, FR_ACT_PROHIBIT, 100);
        assert_eq!(m.len(), 16 + 12 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), libc::RTM_NEWRULE);
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(m[17], 8, "dst_len");
        assert_eq!(m[23], FR_ACT_PROHIBIT);
        assert_eq!(&m[32..36], &[10, 0, 0, 0], "FRA_DST payload");
    }
}
