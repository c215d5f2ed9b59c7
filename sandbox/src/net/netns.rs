//! The container's network, set up by the child while it still holds
//! CAP_NET_ADMIN in its own user namespace (the job never does).
//!
//! * `none`: loopback up, nothing else exists.
//! * `allowlist`: the same, plus the proxy's listening socket, made here
//!   ([`proxy_listener`]) and handed to the parent (see [`super::proxy`]).
//! * `egress`: the parent has attached pasta (a user-mode stack, from
//!   Debian's `passt`) to the namespace before releasing the child; the
//!   child adds policy-routing rules that answer "prohibited" (EACCES) for
//!   every prefix the parent listed ([`egress_refusals`]): the special-use
//!   ranges and metadata endpoints of [`crate::net::ranges`], the host's own
//!   addresses, on-link prefixes and gateways (read by the parent from the
//!   host), for IPv4 and IPv6. The rules are checked by the kernel before
//!   any route: no packet for those ranges ever reaches pasta.
//!
//! pasta's DNS forwarder, 169.254.1.1, is reachable on port 53 (UDP and TCP)
//! only: two rules with `ipproto` and `dport` selectors (FIB rules match
//! ports since Linux 4.17; a TCP connect's and a UDP send's route lookup
//! carries the destination port) send those to the main table before the
//! /32 prohibit. The alternatives were weaker: Landlock's TCP rules cannot
//! refuse one port while allowing others and have nothing for UDP, pasta
//! has no option to refuse ports to its forwarder, and nftables would need
//! a tool (and a ruleset) in every exec.
//!
//! Netlink messages are built by hand: two message kinds (SIOCSIFFLAGS and
//! RTM_NEWRULE) do not justify an async rtnetlink stack in the exec path.
//! The rules go to the kernel in one batch (one sendmsg, the acks after).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};

use super::host::{HostNetError, HostNets};
use super::ranges::{self, Net};

/// The address pasta forwards DNS queries from (to the host's resolver).
pub(crate) const DNS_FORWARD: [u8; 4] = [169, 254, 1, 1];

/// The prefixes an `egress` container refuses (computed by the parent, in
/// the host's network namespace):
///
/// * always: the never-reachable special-use ranges and the metadata
///   endpoints ([`ranges::egress_refused`]), the host's own addresses, and
///   the DNS forwarder (but for port 53, see the module docs);
/// * unless `allow_private`: the private ranges, and the host's on-link
///   prefixes and gateways (its LAN, which `allow_private` opens).
///
/// `ipv6`: whether the host has IPv6 at all (no rule can be added otherwise).
pub(crate) fn egress_refusals(host: &HostNets, allow_private: bool, ipv6: bool) -> Vec<Net> {
    let mut nets = ranges::egress_refused(allow_private);
    nets.push(Net::host(DNS_FORWARD.into()));
    nets.extend(host.own.iter().map(|ip| Net::host(*ip)));
    if !allow_private {
        nets.extend(host.on_link.iter().copied());
        nets.extend(host.gateways.iter().map(|ip| Net::host(*ip)));
    }
    nets.retain(|n| ipv6 || n.addr.is_ipv4());
    ranges::coalesce(&mut nets);
    nets
}

/// [`egress_refusals`] for the host as it is now: read in the host's
/// network namespace when a container starts (addresses and routes change
/// over time).
pub(crate) fn egress_refusals_now(allow_private: bool) -> Result<Vec<Net>, HostNetError> {
    let host = super::host::read()?;
    let ipv6 = std::path::Path::new("/proc/net/if_inet6").exists();
    Ok(egress_refusals(&host, allow_private, ipv6))
}

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
const FRA_IP_PROTO: u16 = 22;
const FRA_DPORT_RANGE: u16 = 24;
/// Exceptions (the DNS forwarder's port 53) are looked at first.
const PRIO_EXCEPTION: u32 = 90;
const PRIO_REFUSE: u32 = 100;

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// One RTM_NEWRULE message: `priority: to DST [ipproto P dport N] <action>`.
fn rule_message(seq: u32, dst: Net, port: Option<(u8, u16)>, action: u8, priority: u32) -> Vec<u8> {
    let (family, addr) = match dst.addr {
        std::net::IpAddr::V4(a) => (libc::AF_INET, a.octets().to_vec()),
        std::net::IpAddr::V6(a) => (libc::AF_INET6, a.octets().to_vec()),
    };
    let mut body = vec![
        family as u8,
        dst.len, // dst_len
        0,       // src_len
        0,       // tos
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
    push_attr(&mut body, FRA_DST, &addr);
    push_attr(&mut body, FRA_PRIORITY, &priority.to_ne_bytes());
    if let Some((proto, dport)) = port {
        push_attr(&mut body, FRA_IP_PROTO, &[proto]);
        let range: Vec<u8> = [dport.to_ne_bytes(), dport.to_ne_bytes()].concat();
        push_attr(&mut body, FRA_DPORT_RANGE, &range);
    }
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

/// Sends `count` messages in one buffer and reads their acks; the first
/// error the kernel reports is the result.
fn send_batch(sock: &OwnedFd, batch: &[u8], count: usize) -> Result<(), Errno> {
    // SAFETY: a zeroed sockaddr_nl with the family set addresses the kernel.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `batch` and `addr` are valid for the lengths passed.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            batch.as_ptr().cast(),
            batch.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(Errno::last());
    }
    let mut acked = 0;
    let mut first_err = None;
    let mut buf = vec![0u8; 16 * 1024];
    while acked < count {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(Errno::last());
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= 20 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < 16 || len > rest.len() || kind != libc::NLMSG_ERROR as u16 {
                return Err(Errno::EPROTO);
            }
            let err = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
            if err != 0 && first_err.is_none() {
                first_err = Some(Errno::from_raw(-err));
            }
            acked += 1;
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
        if n == 0 {
            return Err(Errno::EPROTO);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The rules of an `egress` container: 169.254.1.1 port 53 (UDP, TCP) to
/// the main table, then "prohibit" for each of `refused`.
fn egress_rules(refused: &[Net]) -> (Vec<u8>, usize) {
    let mut batch = Vec::new();
    let mut seq = 0;
    let dns = Net::host(DNS_FORWARD.into());
    for proto in [libc::IPPROTO_UDP, libc::IPPROTO_TCP] {
        seq += 1;
        batch.extend(rule_message(
            seq,
            dns,
            Some((proto as u8, 53)),
            FR_ACT_TO_TBL,
            PRIO_EXCEPTION,
        ));
    }
    for net in refused {
        seq += 1;
        batch.extend(rule_message(seq, *net, None, FR_ACT_PROHIBIT, PRIO_REFUSE));
    }
    (batch, seq as usize)
}

/// Refuses `refused` (see [`egress_refusals`]) with policy-routing rules,
/// keeping pasta's DNS forwarder reachable on port 53.
pub(crate) fn refuse_ranges(refused: &[Net]) -> Result<(), Errno> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let (batch, count) = egress_rules(refused);
    send_batch(&sock, &batch, count)
}

/// `allowlist`: creates the proxy's listening socket on
/// [`super::proxy::PROXY_ADDR`] in this (the container's) network
/// namespace. The child sends it to the parent, which serves it from
/// outside, and closes its own copy, so neither init nor the job holds it.
pub(crate) fn proxy_listener() -> Result<OwnedFd, Errno> {
    use nix::sys::socket::{Backlog, SockaddrIn, bind, listen, setsockopt, sockopt};
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
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_message_layout() {
        let ten = Net::new([10, 0, 0, 0].into(), 8).unwrap();
        let m = rule_message(7, ten, None, FR_ACT_PROHIBIT, 100);
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
        // The DNS exception: ipproto and a one-port dport range.
        let dns = Net::host(DNS_FORWARD.into());
        let m = rule_message(1, dns, Some((17, 53)), FR_ACT_TO_TBL, 90);
        assert_eq!(m.len(), 16 + 12 + 8 + 8 + 8 + 8);
        assert_eq!(&m[44..48], &[5, 0, 22, 0], "FRA_IP_PROTO header");
        assert_eq!(m[48], 17);
        assert_eq!(u16::from_ne_bytes([m[54], m[55]]), FRA_DPORT_RANGE);
        assert_eq!(u16::from_ne_bytes([m[56], m[57]]), 53);
        assert_eq!(u16::from_ne_bytes([m[58], m[59]]), 53);
        let v6 = Net::new("fc00::".parse().unwrap(), 7).unwrap();
        let m = rule_message(2, v6, None, FR_ACT_PROHIBIT, 100);
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(
            u16::from_ne_bytes([m[28], m[29]]),
            20,
            "FRA_DST of 16 bytes"
        );
    }

    #[test]
    fn egress_refuses_the_host_and_allow_private_keeps_it_refused() {
        let host = HostNets {
            own: vec!["203.0.113.7".parse().unwrap(), "2a00::7".parse().unwrap()],
            on_link: vec![Net::new("93.184.0.0".parse().unwrap(), 24).unwrap()],
            gateways: vec!["93.184.1.1".parse().unwrap()],
        };
        let covered = |nets: &[Net], a: &str| nets.iter().any(|n| n.contains(a.parse().unwrap()));
        let strict = egress_refusals(&host, false, true);
        let open = egress_refusals(&host, true, true);
        // Each address with the refusals that must cover it: `strict`
        // without allow_private, `open` with it.
        for (nets, a) in [
            (&strict, "203.0.113.7"),
            (&strict, "2a00::7"),
            (&strict, "93.184.0.9"),
            (&strict, "93.184.1.1"),
            (&strict, "10.1.2.3"),
            (&strict, "169.254.1.1"),
            (&strict, "169.254.169.254"),
            (&strict, "168.63.129.16"),
            (&strict, "192.0.2.1"),
            (&strict, "fec0::1"),
            (&open, "203.0.113.7"),
            (&open, "2a00::7"),
            (&open, "169.254.1.1"),
            (&open, "168.63.129.16"),
            (&open, "127.0.0.1"),
        ] {
            assert!(covered(nets, a), "{a}");
        }
        assert!(!covered(&strict, "8.8.8.8"));
        for a in ["93.184.0.9", "93.184.1.1", "10.1.2.3", "192.168.1.1"] {
            assert!(!covered(&open, a), "{a}: allow_private opens the LAN");
        }
        assert!(
            egress_refusals(&host, false, false)
                .iter()
                .all(|n| n.addr.is_ipv4())
        );
        let (batch, count) = egress_rules(&strict);
        assert_eq!(count, strict.len() + 2);
        assert!(batch.len() > count * 36);
    }
}
