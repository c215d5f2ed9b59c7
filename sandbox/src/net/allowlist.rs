//! The destinations of network mode `allowlist`: `network.allow` entries and
//! the check the proxy makes before it dials.
//!
//! An entry is `HOST[:PORT]`:
//!
//! * `HOST` is a DNS name (`deb.debian.org`), a wildcard `*.NAME` matching
//!   every name below NAME but not NAME itself (`*.crates.io` matches
//!   `static.crates.io`), an IPv4 address (`198.51.100.7`) or a bracketed
//!   IPv6 address (`[2001:db8::1]`). Names compare case-insensitively,
//!   without a trailing dot.
//! * `PORT` is a number, or `*` for every port. Without it, 80 and 443.
//!
//! The check resolves the name itself (the job has no DNS) and then refuses
//! the addresses [`crate::net::ranges::refused`] refuses: loopback,
//! unspecified, multicast, broadcast, every other special-use range, cloud
//! metadata endpoints, and private, link-local, shared, benchmarking and
//! documentation ranges unless `network.allow_private` is set; an IPv6
//! address carrying IPv4 (NAT64, 6to4, Teredo, mapped, compatible) is judged
//! by the IPv4 address. So a listed name that resolves (or is rebound, or
//! synthesised by DNS64) to the host or the LAN is refused. An entry that names an address explicitly allows that
//! address whatever its range: `127.0.0.1:8080` reaches the host's own
//! loopback port 8080. The proxy connects to the very addresses checked
//! here, never resolving the name a second time.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::net::ranges;

/// Errors from parsing an entry or checking a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    /// An entry of `network.allow` is malformed.
    #[error(
        "entry {entry:?}: {reason}; write HOST[:PORT], e.g. \"deb.debian.org:443\", \"*.crates.io\", \"198.51.100.7:8080\" or \"[2001:db8::1]:443\""
    )]
    BadEntry {
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No entry names the destination.
    #[error("{host}:{port} is not in network.allow")]
    NotListed {
        /// Host as the job asked for it.
        host: String,
        /// Port.
        port: u16,
    },
    /// The name could not be resolved.
    #[error("{host}:{port}: cannot resolve the name: {reason}")]
    Unresolved {
        /// Host as the job asked for it.
        host: String,
        /// Port.
        port: u16,
        /// The resolver's message.
        reason: String,
    },
    /// Every address of the name is in a refused range.
    #[error(
        "{host}:{port} resolves only to refused addresses ({addrs}); name the address in network.allow to allow it"
    )]
    RefusedAddress {
        /// Host as the job asked for it.
        host: String,
        /// Port.
        port: u16,
        /// The addresses found.
        addrs: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// An exact name, lowercase, no trailing dot.
    Name(String),
    /// `*.example.org`, stored as `.example.org`.
    Below(String),
    /// An address literal.
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    /// No port written: 80 and 443.
    Web,
    /// `:*`.
    Any,
    /// One port.
    One(u16),
}

/// One parsed entry of `network.allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    host: HostPattern,
    port: PortPattern,
}

/// Lowercases a host and drops a trailing dot and IPv6 brackets.
fn normalize(host: &str) -> String {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.to_owned(),
        None => h,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Splits `HOST[:PORT]` where HOST may be `[v6]`.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        return match after {
            "" => Some((inner, None)),
            _ => Some((inner, Some(after.strip_prefix(':')?))),
        };
    }
    match s.split_once(':') {
        Some((h, p)) if !p.contains(':') => Some((h, Some(p))),
        Some(_) => None, // a bare IPv6 address: brackets are required
        None => Some((s, None)),
    }
}

impl AllowRule {
    /// Parses one entry (see the module docs for the syntax).
    pub fn parse(entry: &str) -> Result<AllowRule, AllowlistError> {
        let bad = |reason: &str| AllowlistError::BadEntry {
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        if entry.contains("://") || entry.contains('/') {
            return Err(bad("give a host, not a URL"));
        }
        let (host, port) = split_host_port(entry.trim())
            .ok_or_else(|| bad("an IPv6 address needs brackets: [2001:db8::1]:443"))?;
        let port = match port {
            None => PortPattern::Web,
            Some("*") => PortPattern::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => PortPattern::One(n),
                _ => return Err(bad("the port must be 1-65535 or *")),
            },
        };
        let host_n = normalize(host);
        let host = if let Ok(ip) = host_n.parse::<IpAddr>() {
            HostPattern::Addr(ip)
        } else if let Some(below) = host_n.strip_prefix("*.") {
            if !valid_name(below) {
                return Err(bad("the name after `*.` is not a valid DNS name"));
            }
            HostPattern::Below(format!(".{below}"))
        } else if host_n.contains('*') {
            return Err(bad("a wildcard may only be a leading `*.`"));
        } else if !valid_name(&host_n) {
            return Err(bad("the host is neither a DNS name nor an IP address"));
        } else {
            HostPattern::Name(host_n)
        };
        Ok(AllowRule { host, port })
    }

    fn port_matches(&self, port: u16) -> bool {
        match self.port {
            PortPattern::Web => port == 80 || port == 443,
            PortPattern::Any => true,
            PortPattern::One(p) => p == port,
        }
    }

    /// Whether the rule names `host` (normalized) at `port`.
    fn matches(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        self.port_matches(port)
            && match &self.host {
                HostPattern::Name(n) => n == host,
                HostPattern::Below(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
                HostPattern::Addr(a) => ip.is_some_and(|ip| canonical(ip) == canonical(*a)),
            }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The parsed `network.allow` of a policy with its `allow_private`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    rules: Vec<AllowRule>,
    allow_private: bool,
}

impl Allowlist {
    /// Parses every entry; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(
        entries: &[S],
        allow_private: bool,
    ) -> Result<Allowlist, AllowlistError> {
        Ok(Allowlist {
            rules: entries
                .iter()
                .map(|e| AllowRule::parse(e.as_ref()))
                .collect::<Result<_, _>>()?,
            allow_private,
        })
    }

    /// Drops every entry: nothing is reachable.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Checks `host:port` and returns the addresses the proxy may dial, in
    /// the resolver's order. `host` is as the job wrote it (a name, an IPv4
    /// address or a bracketed IPv6 address).
    pub fn check(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, AllowlistError> {
        self.check_with(host, port, |h, p| {
            (h, p)
                .to_socket_addrs()
                .map(|a| a.collect())
                .map_err(|e| e.to_string())
        })
    }

    /// [`Allowlist::check`] with the resolver given (for tests).
    fn check_with(
        &self,
        host: &str,
        port: u16,
        resolve: impl FnOnce(&str, u16) -> Result<Vec<SocketAddr>, String>,
    ) -> Result<Vec<SocketAddr>, AllowlistError> {
        let name = normalize(host);
        let ip = name.parse::<IpAddr>().ok();
        let not_listed = || AllowlistError::NotListed {
            host: host.to_owned(),
            port,
        };
        let rule = self
            .rules
            .iter()
            .find(|r| r.matches(&name, ip, port))
            .ok_or_else(not_listed)?;
        if let (HostPattern::Addr(_), Some(ip)) = (&rule.host, ip) {
            // The entry names this address: allowed whatever its range.
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if ip.is_none() && !valid_name(&name) {
            return Err(not_listed());
        }
        let found = match ip {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => resolve(&name, port).map_err(|reason| AllowlistError::Unresolved {
                host: host.to_owned(),
                port,
                reason,
            })?,
        };
        let ok: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| !ranges::refused(a.ip(), self.allow_private))
            .collect();
        if ok.is_empty() {
            return Err(AllowlistError::RefusedAddress {
                host: host.to_owned(),
                port,
                addrs: found
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::parse(entries, false).unwrap()
    }

    /// `host` on port 443, answered by `addr` alone, is refused for its address.
    fn assert_refused(l: &Allowlist, host: &str, addr: &str) {
        let err = l.check_with(host, 443, to(&[addr])).unwrap_err();
        assert!(
            matches!(err, AllowlistError::RefusedAddress { .. }),
            "{addr}: {err}"
        );
    }

    fn to(addrs: &[&str]) -> impl FnOnce(&str, u16) -> Result<Vec<SocketAddr>, String> {
        let v: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        move |_, port| Ok(v.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }

    #[test]
    fn entries_parse_or_say_why() {
        for ok in [
            "deb.debian.org",
            "deb.debian.org:443",
            "*.crates.io:443",
            "Example.ORG.:*",
            "198.51.100.7:8080",
            "[2001:db8::1]:443",
            "[::1]",
        ] {
            AllowRule::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("https://deb.debian.org", "not a URL"),
            ("deb.debian.org:0", "1-65535"),
            ("deb.debian.org:http", "1-65535"),
            ("2001:db8::1", "brackets"),
            ("foo.*.org", "leading"),
            ("*", "leading"),
            ("exa mple.org", "neither"),
            ("", "neither"),
        ] {
            let err = AllowRule::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains("HOST[:PORT]"), "{err}");
        }
    }

    #[test]
    fn names_ports_and_wildcards() {
        let l = list(&["deb.debian.org", "*.crates.io:443", "198.51.100.7:*"]);
        let public = || to(&["93.184.216.34"]);
        assert!(l.check_with("deb.debian.org", 443, public()).is_ok());
        assert!(l.check_with("DEB.debian.org.", 80, public()).is_ok());
        assert!(matches!(
            l.check_with("deb.debian.org", 8080, public()),
            Err(AllowlistError::NotListed { .. })
        ));
        assert!(l.check_with("static.crates.io", 443, public()).is_ok());
        assert!(l.check_with("crates.io", 443, public()).is_err());
        assert!(l.check_with("evilcrates.io", 443, public()).is_err());
        assert!(l.check_with("static.crates.io", 80, public()).is_err());
        assert!(l.check_with("198.51.100.7", 22, public()).is_ok());
        assert!(l.check_with("198.51.100.8", 22, public()).is_err());
        // A name that resolves to a listed address is not the address.
        assert!(
            l.check_with("example.org", 22, to(&["198.51.100.7"]))
                .is_err()
        );
    }

    #[test]
    fn names_resolving_to_refused_ranges_are_refused() {
        let l = list(&["deb.debian.org", "127.0.0.1:8080", "[::ffff:10.0.0.9]:80"]);
        for addr in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
        ] {
            assert_refused(&l, "deb.debian.org", addr);
        }
        // Mixed answers: only the public address is dialled.
        let ok = l
            .check_with("deb.debian.org", 443, to(&["10.0.0.1", "93.184.216.34"]))
            .unwrap();
        assert_eq!(ok, vec!["93.184.216.34:443".parse().unwrap()]);
        // Named explicitly: allowed.
        assert!(l.check_with("127.0.0.1", 8080, to(&[])).is_ok());
        assert!(l.check_with("10.0.0.9", 80, to(&[])).is_ok());
        // allow_private opens the private ranges, never loopback.
        let lp = Allowlist::parse(&["deb.debian.org"], true).unwrap();
        assert!(
            lp.check_with("deb.debian.org", 443, to(&["10.1.2.3"]))
                .is_ok()
        );
        assert!(
            lp.check_with("deb.debian.org", 443, to(&["127.0.0.1"]))
                .is_err()
        );
    }

    /// Issue 13 point 5: a listed wildcard name whose answer carries the LAN
    /// or the host inside IPv6 (a DNS64 network, or a hostile zone) is refused.
    #[test]
    fn ipv4_embedded_in_ipv6_answers_is_checked() {
        let l = list(&["*.example.org"]);
        for addr in [
            "64:ff9b::a00:1",                       // NAT64 of 10.0.0.1
            "64:ff9b::7f00:1",                      // NAT64 of 127.0.0.1
            "64:ff9b:1:a00:0:100::",                // NAT64 /48 of 10.0.0.1
            "2002:a00:1::1",                        // 6to4 of 10.0.0.1
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "::a00:1",                              // IPv4-compatible 10.0.0.1
            "::127.0.0.1",                          // IPv4-compatible 127.0.0.1
            "2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo client 10.0.0.1
            "fec0::1",                              // site-local
            "64:ff9b::a9fe:a9fe",                   // NAT64 of the metadata service
        ] {
            assert_refused(&l, "build.example.org", addr);
        }
        assert!(
            l.check_with("build.example.org", 443, to(&["64:ff9b::808:808"]))
                .is_ok()
        );
        // Metadata stays refused with allow_private.
        let lp = Allowlist::parse(&["*.example.org"], true).unwrap();
        for addr in ["169.254.169.254", "168.63.129.16", "fd00:ec2::254"] {
            assert!(
                lp.check_with("a.example.org", 80, to(&[addr])).is_err(),
                "{addr}"
            );
        }
    }
}
