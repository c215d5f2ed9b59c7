//! The host's own network, read when an `egress` container starts: its
//! addresses, its on-link prefixes and its gateways. pasta carries the
//! job's connections out through host sockets, so each of these would be
//! reached from the host itself; `egress` refuses them by routing rules.
//!
//! Read without a subprocess or netlink dump of our own: `getifaddrs(3)`
//! for the addresses and their prefixes, `/proc/net/route` and
//! `/proc/net/ipv6_route` for on-link routes and gateways (the main table;
//! the IPv6 file lists every table). The reader must be in the host's
//! network namespace, i.e. the parent, before the container's is made.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::net::ranges::Net;

/// Errors reading the host's network.
#[derive(Debug, thiserror::Error)]
pub enum HostNetError {
    /// A /proc file could not be read.
    #[error("cannot read {path}: {source} (is /proc mounted?)")]
    Read {
        /// The file.
        path: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// getifaddrs failed.
    #[error("cannot list the host's addresses (getifaddrs): {0}")]
    Interfaces(nix::errno::Errno),
}

/// What the host's network is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNets {
    /// Every address of every interface (and point-to-point peers).
    pub own: Vec<IpAddr>,
    /// Prefixes reached without a gateway (interface prefixes, on-link routes).
    pub on_link: Vec<Net>,
    /// Every next hop of a route.
    pub gateways: Vec<IpAddr>,
}

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
const RTF_REJECT: u32 = 0x200;

/// Reads the host's network now.
pub fn read() -> Result<HostNets, HostNetError> {
    let mut h = HostNets::default();
    for ifa in nix::ifaddrs::getifaddrs().map_err(HostNetError::Interfaces)? {
        let Some(addr) = ifa.address.as_ref().and_then(sockaddr_ip) else {
            continue;
        };
        h.own.push(addr);
        if let Some(peer) = ifa.destination.as_ref().and_then(sockaddr_ip) {
            h.own.push(peer);
        }
        let len = ifa.netmask.as_ref().and_then(sockaddr_ip).map(|m| match m {
            IpAddr::V4(m) => u32::from(m).count_ones() as u8,
            IpAddr::V6(m) => u128::from(m).count_ones() as u8,
        });
        if let Some(net) = len.filter(|&l| l > 0).and_then(|l| Net::new(addr, l))
            && ifa.interface_name != "lo"
        {
            h.on_link.push(net);
        }
    }
    let v4 = read_proc("/proc/net/route")?;
    parse_route(&v4, &mut h);
    let v6 = read_proc("/proc/net/ipv6_route")?;
    parse_ipv6_route(&v6, &mut h);
    Ok(h)
}

/// A /proc file's text; empty when it does not exist (IPv6 disabled).
fn read_proc(path: &'static str) -> Result<String, HostNetError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(HostNetError::Read { path, source }),
    }
}

fn sockaddr_ip(s: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        Some(IpAddr::V4(a.ip()))
    } else {
        s.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip()))
    }
}

/// `/proc/net/route`: `Iface Destination Gateway Flags RefCnt Use Metric
/// Mask ...`, addresses as the hex of the in-memory (network order) u32.
fn parse_route(text: &str, h: &mut HostNets) {
    let hex4 = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(dst), Some(gw), Some(flags), Some(mask)) = (
            f.first(),
            f.get(1).and_then(|s| hex4(s)),
            f.get(2).and_then(|s| hex4(s)),
            f.get(3).and_then(|s| u32::from_str_radix(s, 16).ok()),
            f.get(7).and_then(|s| hex4(s)),
        ) else {
            continue;
        };
        if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 || *iface == "lo" {
            continue;
        }
        if flags & RTF_GATEWAY != 0 {
            h.gateways.push(IpAddr::V4(gw));
        } else {
            let len = u32::from(mask).count_ones() as u8;
            // A default route without a gateway (a tunnel) is not a LAN.
            if len > 0
                && let Some(n) = Net::new(IpAddr::V4(dst), len)
            {
                h.on_link.push(n);
            }
        }
    }
}

/// `/proc/net/ipv6_route`: `dest dest_len src src_len next_hop metric
/// refcnt use flags iface`, in hex.
fn parse_ipv6_route(text: &str, h: &mut HostNets) {
    let hex6 = |s: &str| u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dst), Some(len), Some(gw), Some(flags), Some(iface)) = (
            f.first().and_then(|s| hex6(s)),
            f.get(1).and_then(|s| u8::from_str_radix(s, 16).ok()),
            f.get(4).and_then(|s| hex6(s)),
            f.get(8).and_then(|s| u32::from_str_radix(s, 16).ok()),
            f.get(9),
        ) else {
            continue;
        };
        if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 || *iface == "lo" || dst.is_multicast() {
            continue;
        }
        if flags & RTF_GATEWAY != 0 || !gw.is_unspecified() {
            h.gateways.push(IpAddr::V6(gw));
        } else if len > 0
            && let Some(n) = Net::new(IpAddr::V6(dst), len)
        {
            h.on_link.push(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str, len: u8) -> Net {
        Net::new(s.parse().unwrap(), len).unwrap()
    }

    /// Runs `parse` on a route table that has one default route via
    /// `gateway` and one on-link network, `on_link`, among routes that
    /// count as neither.
    fn assert_routes(parse: fn(&str, &mut HostNets), text: &str, gateway: &str, on_link: Net) {
        let mut h = HostNets::default();
        parse(text, &mut h);
        assert_eq!(h.gateways, vec![gateway.parse::<IpAddr>().unwrap()]);
        assert_eq!(h.on_link, vec![on_link]);
    }

    #[test]
    fn proc_net_route_is_parsed() {
        // This CI machine's table, plus a reject route and a tunnel default.
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth0\t0000000A\t00000000\t0201\t0\t0\t0\t000000FF\t0\t0\t0\n\
tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_routes(parse_route, text, "192.0.2.1", net("192.0.2.0", 24));
    }

    #[test]
    fn proc_net_ipv6_route_is_parsed() {
        let text = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n\
fd000000000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo\n\
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0\n";
        assert_routes(parse_ipv6_route, text, "fd00::1", net("fd00::", 64));
    }

    #[test]
    fn the_host_is_read() {
        let h = read().unwrap();
        assert!(h.own.contains(&"127.0.0.1".parse().unwrap()), "{h:?}");
    }
}
