//! Address classification: the one decision, for the allowlist proxy and for
//! the `egress` refusal rules alike.
//!
//! Every address is in one of three classes ([`Class`]):
//!
//! * [`Class::Public`]: globally reachable unicast. Reachable.
//! * [`Class::Private`]: ranges that networks are numbered from, which on a
//!   runner is the host's own LAN: RFC 1918, shared (100.64/10), link-local
//!   (169.254/16, fe80::/10), unique local (fc00::/7), benchmarking
//!   (198.18/15) and documentation (192.0.2/24, 198.51.100/24, 203.0.113/24,
//!   2001:db8::/32, 3fff::/20; labs and some CI networks, this project's
//!   included, are numbered from them). Reachable only with
//!   `network.allow_private = true`.
//! * [`Class::Never`]: everything else of the RFC 6890 special-purpose
//!   registries (this network 0/8, loopback, IETF protocol assignments
//!   192.0.0/24, the 6to4 relay anycast 192.88.99/24, multicast, reserved
//!   240/4, broadcast, AS112 and AMT, discard-only 100::/64, 2001::/23),
//!   every IPv6 address outside global unicast 2000::/3 that is not listed
//!   (site-local fec0::/10, multicast, SRv6 5f00::/16, the rest of ::/8),
//!   and the cloud metadata endpoints ([`METADATA`]). Never reachable,
//!   whatever `allow_private` says.
//!
//! An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible,
//! NAT64 per RFC 6052 in 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16,
//! Teredo 2001::/32) is judged by the IPv4 address it carries
//! ([`embedded_ipv4`]): `64:ff9b::a00:1` is 10.0.0.1.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How far an address may be reached (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Globally reachable unicast.
    Public,
    /// A range networks are numbered from: only with `allow_private`.
    Private,
    /// Never reachable from a job.
    Never,
}

/// An address prefix, `addr/len`, with the host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Net {
    /// The first address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Net {
    Net {
        addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        len,
    }
}

const fn v6(s: [u16; 8], len: u8) -> Net {
    Net {
        addr: IpAddr::V6(Ipv6Addr::new(
            s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
        )),
        len,
    }
}

/// An address as (its value, its width in bits: 32 or 128).
fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn from_bits(b: u128, width: u8) -> IpAddr {
    if width == 32 {
        IpAddr::V4(Ipv4Addr::from(b as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(b))
    }
}

fn mask(width: u8, len: u8) -> u128 {
    let all = if width == 32 {
        u32::MAX as u128
    } else {
        u128::MAX
    };
    match len {
        0 => 0,
        l if l >= width => all,
        l => all & !(all >> l),
    }
}

impl Net {
    /// `addr/len` with the host bits cleared; `None` if `len` is too long.
    pub fn new(addr: IpAddr, len: u8) -> Option<Net> {
        let (b, w) = bits(addr);
        (len <= w).then(|| Net {
            addr: from_bits(b & mask(w, len), w),
            len,
        })
    }

    /// The single address `ip`, as a /32 or /128.
    pub fn host(ip: IpAddr) -> Net {
        Net {
            addr: ip,
            len: bits(ip).1,
        }
    }

    /// Whether `ip` is in this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ((n, nw), (a, aw)) = (bits(self.addr), bits(ip));
        nw == aw && (n ^ a) & mask(nw, self.len) == 0
    }

    /// Whether `other` lies wholly inside this prefix.
    pub fn covers(&self, other: &Net) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }

    /// The two halves of this prefix.
    fn halves(&self) -> [Net; 2] {
        let (b, w) = bits(self.addr);
        let len = self.len + 1;
        let bit = 1u128 << (w - len);
        [
            Net {
                addr: from_bits(b, w),
                len,
            },
            Net {
                addr: from_bits(b | bit, w),
                len,
            },
        ]
    }
}

/// The IPv4 special-purpose ranges (RFC 6890 and the IANA registry since).
pub const IPV4: &[(Net, Class)] = &[
    (v4(0, 0, 0, 0, 8), Class::Never),          // "this network"
    (v4(10, 0, 0, 0, 8), Class::Private),       // RFC 1918
    (v4(100, 64, 0, 0, 10), Class::Private),    // shared address space (CGN)
    (v4(127, 0, 0, 0, 8), Class::Never),        // loopback
    (v4(169, 254, 0, 0, 16), Class::Private),   // link-local
    (v4(172, 16, 0, 0, 12), Class::Private),    // RFC 1918
    (v4(192, 0, 0, 0, 24), Class::Never),       // IETF protocol assignments, DS-Lite
    (v4(192, 0, 2, 0, 24), Class::Private),     // TEST-NET-1
    (v4(192, 31, 196, 0, 24), Class::Never),    // AS112-v4
    (v4(192, 52, 193, 0, 24), Class::Never),    // AMT
    (v4(192, 88, 99, 0, 24), Class::Never),     // 6to4 relay anycast
    (v4(192, 168, 0, 0, 16), Class::Private),   // RFC 1918
    (v4(192, 175, 48, 0, 24), Class::Never),    // direct delegation AS112
    (v4(198, 18, 0, 0, 15), Class::Private),    // benchmarking
    (v4(198, 51, 100, 0, 24), Class::Private),  // TEST-NET-2
    (v4(203, 0, 113, 0, 24), Class::Private),   // TEST-NET-3
    (v4(224, 0, 0, 0, 4), Class::Never),        // multicast
    (v4(240, 0, 0, 0, 4), Class::Never),        // reserved
    (v4(255, 255, 255, 255, 32), Class::Never), // limited broadcast
];

/// The IPv6 ranges, longest match wins; an address matching none is
/// [`Class::Never`]. The forms that carry IPv4 are in [`embedded_ipv4`].
pub const IPV6: &[(Net, Class)] = &[
    (v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3), Class::Public), // global unicast
    (v6([0x0100, 0, 0, 0, 0, 0, 0, 0], 64), Class::Never), // discard-only
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), Class::Never), // IETF protocol assignments
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), Class::Private), // documentation
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), Class::Private), // documentation (RFC 9637)
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Class::Private), // unique local
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Class::Private), // link-local
];

/// The IPv6 prefixes whose addresses carry an IPv4 address.
pub const IPV6_EMBEDDING: &[Net] = &[
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),    // IPv4-mapped
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96),         // IPv4-compatible (deprecated)
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), // NAT64 well-known prefix
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // NAT64 local use (RFC 8215)
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),    // 6to4
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),    // Teredo
];

/// Cloud metadata and host-agent endpoints: never reachable, even with
/// `allow_private` (they hand out the machine's credentials).
pub const METADATA: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), // AWS, GCP, Azure, OCI, OpenStack, DO, Hetzner
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 253)), // AWS VPC resolver
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 123)), // AWS time sync
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),   // AWS ECS task credentials
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),  // AWS EKS pod identity
    IpAddr::V4(Ipv4Addr::new(169, 254, 0, 23)),    // Tencent Cloud
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),   // Azure WireServer
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)), // Alibaba Cloud
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)), // AWS IMDS
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253)), // AWS resolver
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x123)), // AWS time sync
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)), // AWS EKS pod identity
    IpAddr::V6(Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254)), // GCP
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xc1, 0, 0, 0, 0, 0xa9fe, 0xa9fe)), // OCI
];

/// What an IPv6 address carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedded {
    /// An ordinary IPv6 address.
    No,
    /// The IPv4 address it carries.
    V4(Ipv4Addr),
    /// In an embedding prefix, but not laid out as its RFC says (e.g. a
    /// 64:ff9b:1::/48 address with a non-zero u-octet or suffix): refused,
    /// since where a translator would send it cannot be known.
    Malformed,
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` (/96) and
/// `64:ff9b:1:AABB:00CC:DD00::` (/48, RFC 6052 section 2.2), 6to4
/// `2002:AABB:CCDD::/48`, and Teredo `2001:0:S:S:F:P:~C:~C` (the client's
/// address, inverted, in the last 32 bits).
pub fn embedded_ipv4(a: Ipv6Addr) -> Embedded {
    let o = a.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let ip = IpAddr::V6(a);
    let [mapped, compat, wkp, local, six_to_four, teredo] = IPV6_EMBEDDING else {
        unreachable!("six embedding prefixes")
    };
    if mapped.contains(ip) || compat.contains(ip) || wkp.contains(ip) {
        Embedded::V4(last)
    } else if local.contains(ip) {
        if o[8] == 0 && o[11..].iter().all(|&b| b == 0) {
            Embedded::V4(Ipv4Addr::new(o[6], o[7], o[9], o[10]))
        } else {
            Embedded::Malformed
        }
    } else if six_to_four.contains(ip) {
        Embedded::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else if teredo.contains(ip) {
        Embedded::V4(Ipv4Addr::from(!u32::from(last)))
    } else {
        Embedded::No
    }
}

fn longest_match(table: &[(Net, Class)], ip: IpAddr, default: Class) -> Class {
    table
        .iter()
        .filter(|(n, _)| n.contains(ip))
        .max_by_key(|(n, _)| n.len)
        .map_or(default, |(_, c)| *c)
}

/// The class of `ip` (see the module docs). IPv6 addresses carrying IPv4
/// are classed by the IPv4 address.
pub fn classify(ip: IpAddr) -> Class {
    if METADATA.contains(&ip) {
        return Class::Never;
    }
    match ip {
        IpAddr::V4(_) => longest_match(IPV4, ip, Class::Public),
        IpAddr::V6(a) => match embedded_ipv4(a) {
            Embedded::V4(v4) => classify(IpAddr::V4(v4)),
            Embedded::Malformed => Class::Never,
            Embedded::No => longest_match(IPV6, ip, Class::Never),
        },
    }
}

/// The decision: whether a job may reach `ip`, given `allow_private`.
pub fn refused(ip: IpAddr, allow_private: bool) -> bool {
    match classify(ip) {
        Class::Public => false,
        Class::Private => !allow_private,
        Class::Never => true,
    }
}

/// `whole` minus `holes`, as the fewest prefixes (holes nest or are disjoint).
fn subtract(whole: Net, holes: &[Net], out: &mut Vec<Net>) {
    if holes.iter().any(|h| h.covers(&whole)) {
        return;
    }
    if !holes.iter().any(|h| whole.covers(h)) {
        out.push(whole);
        return;
    }
    for half in whole.halves() {
        subtract(half, holes, out);
    }
}

/// The prefixes an `egress` container refuses by routing rules, whatever
/// the host: the same decision as [`refused`], as prefixes a rule can
/// match. A routing rule cannot look inside an address, so the IPv6 forms
/// that carry IPv4 (NAT64, 6to4, Teredo, compatible) are refused whole in
/// egress; pasta gives the container IPv4, which reaches the same hosts.
/// IPv4-mapped addresses are routed as IPv4 by the kernel, under the IPv4 rules.
pub fn egress_refused(allow_private: bool) -> Vec<Net> {
    let mut out: Vec<Net> = IPV4
        .iter()
        .filter(|(_, c)| *c == Class::Never || (*c == Class::Private && !allow_private))
        .map(|(n, _)| *n)
        .collect();
    // IPv6: everything outside the reachable classes, as prefixes.
    let mut open: Vec<Net> = IPV6
        .iter()
        .filter(|(_, c)| *c == Class::Public || (*c == Class::Private && allow_private))
        .map(|(n, _)| *n)
        .collect();
    // Inside 2000::/3 the longest match decides: subtract the refused
    // sub-ranges from the open ones first.
    let closed: Vec<Net> = IPV6
        .iter()
        .filter(|(n, c)| !open.contains(n) && *c != Class::Public)
        .map(|(n, _)| *n)
        .chain(IPV6_EMBEDDING.iter().copied())
        .collect();
    let mut open_parts = Vec::new();
    for n in open.drain(..) {
        let inner: Vec<Net> = closed.iter().filter(|c| n.covers(c)).copied().collect();
        subtract(n, &inner, &mut open_parts);
    }
    subtract(v6([0; 8], 0), &open_parts, &mut out);
    out.extend(METADATA.iter().map(|ip| Net::host(*ip)));
    out
}

/// Drops every prefix that another in the list covers (and duplicates).
pub fn coalesce(nets: &mut Vec<Net>) {
    nets.sort_by_key(|n| (bits(n.addr).1, n.len, bits(n.addr).0));
    let mut kept: Vec<Net> = Vec::with_capacity(nets.len());
    for n in nets.drain(..) {
        if !kept.iter().any(|k| k.covers(&n)) {
            kept.push(n);
        }
    }
    *nets = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn class(s: &str) -> Class {
        classify(ip(s))
    }

    /// Addresses and their classes: IPv4, then IPv6.
    const CLASSES: &[(&str, Class)] = &[
        ("0.1.2.3", Class::Never),
        ("127.0.0.1", Class::Never),
        ("192.0.0.8", Class::Never),
        ("192.88.99.1", Class::Never),
        ("224.0.0.1", Class::Never),
        ("239.255.255.250", Class::Never),
        ("240.0.0.1", Class::Never),
        ("255.255.255.255", Class::Never),
        ("192.31.196.1", Class::Never),
        ("169.254.169.254", Class::Never),
        ("168.63.129.16", Class::Never),
        ("100.100.100.200", Class::Never),
        ("169.254.170.2", Class::Never),
        ("10.0.0.1", Class::Private),
        ("100.64.0.1", Class::Private),
        ("169.254.1.2", Class::Private),
        ("172.31.255.255", Class::Private),
        ("192.168.1.1", Class::Private),
        ("192.0.2.1", Class::Private),
        ("198.18.0.1", Class::Private),
        ("198.19.255.255", Class::Private),
        ("198.51.100.1", Class::Private),
        ("203.0.113.9", Class::Private),
        ("8.8.8.8", Class::Public),
        ("1.1.1.1", Class::Public),
        ("172.32.0.1", Class::Public),
        ("100.128.0.1", Class::Public),
        ("198.20.0.1", Class::Public),
        ("::", Class::Never),
        ("::1", Class::Never),
        ("100::1", Class::Never),
        ("2001:2::1", Class::Never),
        ("2001:10::1", Class::Never),
        ("fec0::1", Class::Never),
        ("ff02::1", Class::Never),
        ("5f00::1", Class::Never),
        ("4000::1", Class::Never),
        ("::ffff:0:1.2.3.4", Class::Never),
        ("fd00:ec2::254", Class::Never),
        ("fd12::1", Class::Private),
        ("fe80::1", Class::Private),
        ("2001:db8::1", Class::Private),
        ("3fff::1", Class::Private),
        ("2a00:1450::1", Class::Public),
        ("2606:4700::1111", Class::Public),
        ("2001:4860::8888", Class::Public),
    ];

    /// Checks the class of each address of [`CLASSES`] in one family.
    fn assert_classes(family: fn(&IpAddr) -> bool) {
        for (a, want) in CLASSES.iter().filter(|(a, _)| family(&ip(a))) {
            assert_eq!(class(a), *want, "{a}");
        }
    }

    #[test]
    fn ipv4_classes() {
        assert_classes(IpAddr::is_ipv4);
    }

    #[test]
    fn ipv6_classes() {
        assert_classes(IpAddr::is_ipv6);
    }

    /// Point 5 of issue 13: every form that carries IPv4 is judged by it.
    #[test]
    fn embedded_ipv4_is_extracted_from_every_form() {
        for (v6, v4) in [
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("::10.0.0.1", "10.0.0.1"),
            ("::127.0.0.1", "127.0.0.1"),
            ("64:ff9b::10.0.0.1", "10.0.0.1"),
            ("64:ff9b::7f00:1", "127.0.0.1"),
            // RFC 6052 /48: bits 48-63, the zero u-octet, bits 72-87.
            ("64:ff9b:1:a00:0:100::", "10.0.0.1"),
            ("64:ff9b:1:7f00:0:100::", "127.0.0.1"),
            ("64:ff9b:1:808:8:800::", "8.8.8.8"),
            ("2002:a00:1::1", "10.0.0.1"),
            ("2002:7f00:1:5::9", "127.0.0.1"),
            ("2002:808:808::1", "8.8.8.8"),
            // Teredo: server 65.54.227.120, client 10.0.0.1 inverted.
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
        ] {
            let v4: Ipv4Addr = v4.parse().unwrap();
            let a: Ipv6Addr = v6.parse().unwrap();
            assert_eq!(embedded_ipv4(a), Embedded::V4(v4), "{v6}");
            assert_eq!(classify(IpAddr::V6(a)), classify(IpAddr::V4(v4)), "{v6}");
        }
        // The wildcard-name attack: a DNS64 answer pointing at the LAN or
        // the host is refused; one pointing at a public address is not.
        for a in [
            "64:ff9b::a00:1",
            "64:ff9b:1:a00:0:100::",
            "2002:a00:1::",
            "::a00:1",
            "::7f00:1",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(refused(ip(a), false), "{a}");
        }
        for a in ["64:ff9b::a9fe:a9fe", "::7f00:1"] {
            assert!(refused(ip(a), true), "{a}: never, even with allow_private");
        }
        assert!(refused(ip("64:ff9b::a00:1"), false));
        assert!(!refused(ip("64:ff9b::a00:1"), true));
        for a in [
            "64:ff9b::808:808",
            "2002:808:808::1",
            "64:ff9b:1:808:8:800::",
        ] {
            assert!(!refused(ip(a), false), "{a}");
        }
        // A /48 NAT64 address not laid out per RFC 6052 (here 10.0.0.1 in
        // the last 32 bits behind a public-looking /48 part) is refused.
        let odd: Ipv6Addr = "64:ff9b:1:808:8:800:a00:1".parse().unwrap();
        assert_eq!(embedded_ipv4(odd), Embedded::Malformed);
        assert!(refused(IpAddr::V6(odd), true));
        assert_eq!(embedded_ipv4("2a00::1".parse().unwrap()), Embedded::No);
    }

    #[test]
    fn allow_private_opens_private_only() {
        assert!(refused(ip("10.1.2.3"), false));
        assert!(!refused(ip("10.1.2.3"), true));
        assert!(!refused(ip("fd12::1"), true));
        for a in [
            "127.0.0.1",
            "169.254.169.254",
            "fd00:ec2::254",
            "fec0::1",
            "224.0.0.1",
        ] {
            assert!(refused(ip(a), true), "{a}");
        }
        assert!(!refused(ip("8.8.8.8"), false));
    }

    /// Addresses to compare the decision and the egress prefixes on: the
    /// edges and middle of every listed range, the metadata endpoints and a
    /// few public ones.
    fn samples() -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = METADATA.to_vec();
        let nets = IPV4
            .iter()
            .chain(IPV6)
            .map(|(n, _)| *n)
            .chain(IPV6_EMBEDDING.iter().copied());
        for n in nets {
            let (b, w) = bits(n.addr);
            let host = !mask(w, n.len) & mask(w, w);
            for x in [
                b,
                b | host,
                b | (host >> 1),
                b.wrapping_sub(1) & mask(w, w),
                (b | host) + 1,
            ] {
                if x <= mask(w, w) {
                    v.push(from_bits(x, w));
                }
            }
        }
        v.extend(["8.8.8.8", "2a00:1450::1", "fec0::1", "5f00::1", "ff02::1"].map(ip));
        v
    }

    #[test]
    fn egress_prefixes_agree_with_the_decision() {
        for ap in [false, true] {
            let mut nets = egress_refused(ap);
            coalesce(&mut nets);
            for a in samples() {
                let by_rule = nets.iter().any(|n| n.contains(a));
                let embeds = matches!(a, IpAddr::V6(v6) if embedded_ipv4(v6) != Embedded::No);
                if embeds {
                    // Refused whole in egress (a rule cannot look inside;
                    // the kernel routes IPv4-mapped ones as IPv4).
                    assert!(by_rule, "{a}");
                } else {
                    assert_eq!(by_rule, refused(a, ap), "{a} allow_private={ap}");
                }
            }
        }
    }

    #[test]
    fn nets_and_coalescing() {
        let n = Net::new(ip("10.1.2.3"), 8).unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(ip("10.255.0.1")) && !n.contains(ip("11.0.0.1")));
        assert!(!n.contains(ip("::ffff:10.0.0.1")), "families never mix");
        assert!(Net::new(ip("10.0.0.0"), 33).is_none());
        let mut v = vec![
            Net::host(ip("10.0.0.5")),
            n,
            Net::new(ip("192.168.0.0"), 16).unwrap(),
            n,
        ];
        coalesce(&mut v);
        assert_eq!(v.len(), 2, "{v:?}");
        let mut parts = Vec::new();
        subtract(
            v6([0; 8], 0),
            &[v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3)],
            &mut parts,
        );
        assert_eq!(parts.len(), 3, "{parts:?}");
    }
}
