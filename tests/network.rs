//! Network modes, proved from inside: `none` reaches nothing, `egress`
//! reaches an "outside world" host (a network namespace this test makes,
//! reached through routes into it, so no traffic leaves the machine) and
//! still cannot reach the host's own addresses, on-link prefixes and
//! gateways, special-use ranges, or the DNS forwarder on any port but 53.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

/// A network namespace with a veth to the host and an HTTP server on
/// 198.51.100.1:8080 serving `marker.txt`.
struct OutsideWorld {
    ns: String,
    host_if: String,
    server: Child,
    _dir: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    run_ok(
        Command::new("ip").args(args),
        &format!("ip {args:?} (iproute2)"),
    );
}

/// The tests share one subnet, so they take turns.
static WORLD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The outside world, once this test's turn comes (kept while the guard
/// lives); None, and the test is skipped, when not run as root.
fn outside_world() -> Option<(std::sync::MutexGuard<'static, ()>, OutsideWorld)> {
    if !is_root() {
        eprintln!("skipped: needs root to create the outside-world network namespace");
        return None;
    }
    let turn = WORLD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Some((turn, OutsideWorld::start()))
}

/// What `add_host_network` starts, and a host service on every address
/// (0.0.0.0) on `port`, open while this lives.
struct HostNetwork {
    dns: Child,
    _listener: std::net::TcpListener,
    port: u16,
}

/// The outside world made to look like a host's real network, with a host
/// service; None when skipped, as `outside_world`.
fn host_world() -> Option<(
    std::sync::MutexGuard<'static, ()>,
    OutsideWorld,
    HostNetwork,
)> {
    let (turn, world) = outside_world()?;
    let dns = world.add_host_network();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let net = HostNetwork {
        dns,
        _listener: listener,
        port,
    };
    Some((turn, world, net))
}

/// Kills a helper process and reaps it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl OutsideWorld {
    fn start() -> OutsideWorld {
        let id = std::process::id() % 100_000;
        let ns = format!("pf-out-{id}");
        let host_if = format!("pfh{id}");
        let peer_if = format!("pfo{id}");
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &ns]);
        ip(&["addr", "add", "198.51.100.2/24", "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &ns, "addr", "add", "198.51.100.1/24", "dev", &peer_if]);
        ip(&["-n", &ns, "link", "set", &peer_if, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("marker.txt"), "hello from outside\n").unwrap();
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "python3",
                "-m",
                "http.server",
                "--bind",
                "0.0.0.0",
                "8080",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the server answers (from the host side).
        for _ in 0..100 {
            if std::net::TcpStream::connect("198.51.100.1:8080").is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        OutsideWorld {
            ns,
            host_if,
            server,
            _dir: dir,
        }
    }
}

impl Drop for OutsideWorld {
    fn drop(&mut self) {
        stop(&mut self.server);
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A globally routable block the egress test routes into the outside world
/// with host routes (/32 and /30 only, checked before any packet is sent),
/// so none of its traffic leaves the machine. Public on purpose: a
/// documentation address would be refused as special-use whatever else
/// the rules did, and could not prove the host-derived rules.
const PUBLIC: &str = "192.0.43";

/// A DNS server for the outside world: answers every A query with
/// PUBLIC.80 (AAAA with no record), on UDP; accepts and closes on TCP.
const DNS_SERVER: &str = r#"
import socket, threading
def tcp():
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("0.0.0.0", 53)); t.listen(8)
    while True:
        c, _ = t.accept(); c.close()
threading.Thread(target=tcp, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 53))
while True:
    q, a = u.recvfrom(512)
    end = 12
    while q[end]: end += q[end] + 1
    end += 5
    is_a = q[end - 4:end - 2] == b"\x00\x01"
    r = q[:2] + b"\x81\x80\x00\x01" + (b"\x00\x01" if is_a else b"\x00\x00") + b"\x00\x00\x00\x00" + q[12:end]
    if is_a:
        r += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([192, 0, 43, 80])
    u.sendto(r, a)
"#;

impl OutsideWorld {
    /// Makes the outside world look like a host's real network (issue 13
    /// point 4): the host gets a public address of its own (PUBLIC.2) on
    /// the veth, an on-link public prefix (PUBLIC.8/30, a neighbour at .9),
    /// a gateway that is neither on-link nor special-use (PUBLIC.1, reached
    /// via 198.51.100.1) through which a public server (PUBLIC.80) is
    /// routed, and 169.254.1.1 (pasta's DNS forwarder address) routed into
    /// the outside world, so a connection pasta carries there is seen.
    /// Starts a DNS server on 198.51.100.1:53.
    fn add_host_network(&self) -> Child {
        let (ns, dev) = (self.ns.as_str(), self.host_if.as_str());
        let peer = dev.replace("pfh", "pfo");
        for a in ["1", "9", "80"] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{PUBLIC}.{a}/32"),
                "dev",
                &peer,
            ]);
        }
        ip(&["-n", ns, "addr", "add", "169.254.1.1/32", "dev", &peer]);
        ip(&["-n", ns, "route", "add", "default", "via", "198.51.100.2"]);
        ip(&["addr", "add", &format!("{PUBLIC}.2/32"), "dev", dev]);
        ip(&[
            "route",
            "add",
            &format!("{PUBLIC}.1/32"),
            "via",
            "198.51.100.1",
            "dev",
            dev,
        ]);
        ip(&[
            "route",
            "add",
            &format!("{PUBLIC}.80/32"),
            "via",
            &format!("{PUBLIC}.1"),
            "dev",
            dev,
            "onlink",
        ]);
        ip(&["route", "add", &format!("{PUBLIC}.8/30"), "dev", dev]);
        ip(&["route", "add", "169.254.1.1/32", "dev", dev]);
        // Nothing may leave the machine: every address used goes to the veth.
        for a in [
            format!("{PUBLIC}.1"),
            format!("{PUBLIC}.9"),
            format!("{PUBLIC}.80"),
            "169.254.1.1".into(),
        ] {
            let out = Command::new("ip")
                .args(["route", "get", &a])
                .output()
                .unwrap();
            let route = String::from_utf8_lossy(&out.stdout);
            assert!(
                route.contains(&format!("dev {dev}")),
                "{a} must route into the test's namespace: {route}"
            );
        }
        Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", DNS_SERVER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

/// `pinfold exec --policy POLICY -- sh -c SCRIPT` as the test user in a
/// mount namespace whose /etc/resolv.conf names `nameserver`: pasta
/// forwards the container's DNS there, so no query leaves the machine.
fn egress_sh(policy: &str, nameserver: &str, script: &str) -> (i32, String, String) {
    let f = fixtures();
    let (uid, gid) = f.user.expect("run as root");
    let d = user_dir();
    let resolv = d.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {nameserver}\n")).unwrap();
    let inner = format!(
        "mount --bind {} /etc/resolv.conf && exec setpriv --reuid={uid} --regid={gid} --clear-groups \"$@\"",
        resolv.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &inner, "sh"])
        .arg(&f.pinfold)
        .arg("exec")
        .arg("--rootfs")
        .arg(&f.rootfs)
        .args(["--policy", policy, "--", "/bin/sh", "-c", script])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", &f.root)
        .env("PINFOLD_HOME", f.root.join("home"))
        .current_dir(&f.root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The probe's line for `connect IP PORT`, labelled.
fn connect(label: &str, ip: &str, port: u16) -> String {
    format!("echo {label}; /bin/probe connect {ip} {port}; ")
}

/// What the probe said right after `label`.
fn after<'a>(out: &'a str, label: &str) -> &'a str {
    out.split_once(&format!("{label}\n"))
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap_or("(missing)")
}

#[test]
fn egress_reaches_the_outside_but_not_the_hosts_network() {
    // With a host service on every address (0.0.0.0): what the host's own
    // addresses would expose.
    let Some((_turn, world, mut net)) = host_world() else {
        return;
    };
    let host_port = net.port;
    let refused: Vec<(&str, String, u16)> = vec![
        ("lan-neighbour", "198.51.100.1".into(), 8080),
        ("onlink-public", format!("{PUBLIC}.9"), 8080),
        ("gateway", format!("{PUBLIC}.1"), 8080),
        ("host-own-public", format!("{PUBLIC}.2"), host_port),
        ("host-own-lan", "198.51.100.2".into(), host_port),
        ("dns-forwarder-other-port", "169.254.1.1".into(), 8080),
        ("rfc1918-10", "10.1.2.3".into(), 80),
        ("rfc1918-192", "192.168.1.1".into(), 80),
        ("rfc1918-172", "172.16.0.1".into(), 80),
        ("metadata", "169.254.169.254".into(), 80),
    ];
    let mut script = format!("/bin/probe http-get {PUBLIC}.80 8080 /marker.txt; ");
    for (label, ip, port) in &refused {
        script += &connect(label, ip, *port);
    }
    script += &connect("dns-forwarder-tcp-53", "169.254.1.1", 53);
    script += &connect("host-loopback", "127.0.0.1", host_port);
    script += "nslookup outside.test 2>&1; echo \"dns=$?\"; \
               nslookup -port=5353 outside.test 169.254.1.1 2>&1; echo \"dns-5353=$?\"; \
               cat /etc/resolv.conf";
    let (code, out, err) = egress_sh("trusted", "198.51.100.1", &script);
    stop(&mut net.dns);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains("hello from outside\n") && out.contains("http-get: ALLOWED"),
        "egress reaches a public host through a gateway: {out} {err}"
    );
    for (label, ip, port) in &refused {
        assert_eq!(
            after(&out, label),
            "connect: refused (errno EACCES)",
            "{label} {ip}:{port}: {out}"
        );
    }
    // The DNS forwarder: port 53 passes the rules (TCP reaches the outside
    // world's server through pasta), and a query is answered.
    assert_eq!(
        after(&out, "dns-forwarder-tcp-53"),
        "connect: ALLOWED",
        "{out}"
    );
    assert!(
        out.contains(&format!("Address: {PUBLIC}.80")) && out.contains("dns=0"),
        "{out}"
    );
    assert!(!out.contains("dns-5353=0"), "{out}");
    assert_eq!(
        after(&out, "host-loopback"),
        "connect: refused (errno ECONNREFUSED)",
        "the container's own loopback, not the host's: {out}"
    );
    assert!(out.contains("nameserver 169.254.1.1"), "{out}");
    drop(world);
    assert!(
        processes_matching("pasta --config-net").is_empty(),
        "pasta stopped with the container"
    );
}

#[test]
fn allow_private_opens_the_lan_but_never_the_host() {
    let Some((_turn, world, mut net)) = host_world() else {
        return;
    };
    let host_port = net.port;
    let d = user_dir();
    let policy = d.path().join("private.toml");
    std::fs::write(
        &policy,
        "description = \"test: egress with allow_private\"\n[network]\nmode = \"egress\"\nallow_private = true\n",
    )
    .unwrap();
    let script = connect("lan-neighbour", "198.51.100.1", 8080)
        + &connect("gateway", &format!("{PUBLIC}.1"), 8080)
        + &connect("host-own-public", &format!("{PUBLIC}.2"), host_port)
        + &connect("host-own-lan", "198.51.100.2", host_port)
        + &connect("dns-forwarder-other-port", "169.254.1.1", 8080)
        + "true";
    let (code, out, err) = egress_sh(policy.to_str().unwrap(), "198.51.100.1", &script);
    stop(&mut net.dns);
    assert_eq!(code, 0, "{out} {err}");
    for label in ["lan-neighbour", "gateway"] {
        assert_eq!(
            after(&out, label),
            "connect: ALLOWED",
            "{label}: {out} {err}"
        );
    }
    for label in [
        "host-own-public",
        "host-own-lan",
        "dns-forwarder-other-port",
    ] {
        assert_eq!(
            after(&out, label),
            "connect: refused (errno EACCES)",
            "{label}: {out}"
        );
    }
    drop(world);
}

#[test]
fn none_reaches_nothing_and_the_stricter_mode_wins() {
    let Some((_turn, _world)) = outside_world() else {
        return;
    };
    // The job asks for none under a policy that allows egress: none wins.
    let (code, out, _) = sh(
        &["--policy", "trusted", "--network", "none"],
        "/bin/probe connect 198.51.100.1 8080",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("refused (errno ENETUNREACH)"), "{out}");
    // The default policy's none, too.
    assert_refused(&[], &["connect", "198.51.100.1", "8080"]);
}

#[test]
fn a_mode_more_open_than_the_policy_is_refused() {
    let out = exec(&["--network", "egress"], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more open than the policy"), "{err}");
    let out = exec(&["--network", "everywhere"], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
}

/// A host-loopback HTTP server (the "host's own services"), answering every
/// request with `body`; returns its port.
fn host_http_server(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// Writes an `allowlist` policy refusing loopback TCP (as `untrusted` does).
fn allowlist_policy(dir: &std::path::Path, allow: &[String]) -> String {
    let path = dir.join("allowlist.toml");
    let list: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        &path,
        format!(
            "description = \"test: allowlist\"\n[network]\nmode = \"allowlist\"\nloopback_tcp = false\nallow = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn allowlist_reaches_listed_hosts_only_through_the_proxy() {
    let Some((_turn, _world)) = outside_world() else {
        return;
    };
    let named = host_http_server("hello from the host loopback\n");
    let unnamed = host_http_server("the host loopback must stay out of reach\n");
    let d = user_dir();
    let policy = allowlist_policy(
        d.path(),
        &[
            "198.51.100.1:8080".into(),
            format!("127.0.0.1:{named}"),
            format!("localhost:{unnamed}"),
        ],
    );
    // Tools that honour no_proxy would go to the container's own loopback
    // for 127.0.0.1/localhost; these requests are meant for the proxy.
    let script = format!(
        "echo \"proxy=$http_proxy\"; \
         wget -q -O - http://198.51.100.1:8080/marker.txt; echo \"get=$?\"; \
         printf 'CONNECT 198.51.100.1:8080 HTTP/1.1\\r\\n\\r\\nGET /marker.txt HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 3128; echo \"connect=$?\"; \
         wget -q -O - http://198.51.100.1:8081/ 2>&1; echo \"unlisted=$?\"; \
         env -u no_proxy -u NO_PROXY wget -q -O - http://127.0.0.1:{named}/ 2>&1; echo \"named=$?\"; \
         env -u no_proxy -u NO_PROXY wget -q -O - http://localhost:{unnamed}/ 2>&1; echo \"rebound=$?\"; \
         /bin/probe connect 198.51.100.1 8080; /bin/probe connect 127.0.0.1 {named}; \
         /bin/probe connect 127.0.0.1 3128; \
         nslookup outside.test 198.51.100.1 2>&1; echo \"dns-direct=$?\"; \
         nslookup outside.test 2>&1; echo \"dns=$?\"; cat /etc/resolv.conf"
    );
    let (code, out, err) = sh(&["--policy", &policy], &script);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("proxy=http://127.0.0.1:3128\n"), "{out}");
    // Listed: fetched through the proxy, by absolute URI and by CONNECT.
    assert!(
        out.contains("hello from outside\nget=0"),
        "wget through the proxy: {out} {err}"
    );
    assert!(
        out.contains("HTTP/1.1 200 Connection established") && out.contains("connect=0"),
        "CONNECT tunnel: {out} {err}"
    );
    assert_eq!(out.matches("hello from outside").count(), 2, "{out}");
    // Not listed: 403, and logged once on stderr naming host:port and the policy.
    assert!(out.contains("403 Forbidden"), "{out}");
    assert!(!out.contains("unlisted=0"), "{out}");
    let refusals: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("network allowlist: refused"))
        .collect();
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("198.51.100.1:8081") && l.contains("allowlist.toml")),
        "refusal logged: {err}"
    );
    // An address named explicitly is reachable, even the host's loopback;
    // a name that resolves to loopback is not.
    assert!(
        out.contains("hello from the host loopback\nnamed=0"),
        "{out} {err}"
    );
    assert!(!out.contains("must stay out of reach"), "{out}");
    assert!(!out.contains("rebound=0"), "{out}");
    assert!(
        refusals
            .iter()
            .any(|l| l.contains(&format!("localhost:{unnamed}")) && l.contains("loopback")),
        "rebinding refusal logged: {err}"
    );
    assert_eq!(refusals.len(), 2, "one line per refusal: {err}");
    // Direct connections fail (Landlock allows connect to the proxy's port only).
    assert_eq!(
        out.matches("connect: refused (errno EACCES)").count(),
        2,
        "direct connections: {out}"
    );
    assert!(out.contains("connect: ALLOWED"), "the proxy's port: {out}");
    // No DNS from inside: no server configured, and no route to any.
    assert!(
        out.contains("Network is unreachable\ndns-direct=1"),
        "{out}"
    );
    assert!(!out.contains("dns=0"), "{out}");
    assert!(out.contains("no name server"), "{out}");
}

#[test]
fn allowlist_tunnels_end_with_the_job() {
    if !is_root() {
        eprintln!("skipped: needs root to reach the host loopback as another user");
        return;
    }
    // A host service that holds each connection open until its peer closes,
    // then reports how long that took.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            use std::io::Read;
            let _ = tx.send("accepted");
            let mut buf = [0u8; 256];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send("closed");
        }
    });
    let d = user_dir();
    let policy = allowlist_policy(d.path(), &[format!("127.0.0.1:{port}")]);
    // The tunnel stays open (nc keeps reading) until the container is killed.
    let script = format!(
        "(printf 'CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n'; sleep 60) | nc 127.0.0.1 3128 & sleep 60"
    );
    let started = std::time::Instant::now();
    let (code, _, err) = sh(&["--policy", &policy, "--timeout", "2s"], &script);
    assert_eq!(code, 124, "{err}");
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(5)),
        Ok("accepted"),
        "the tunnel was opened: {err}"
    );
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(5)),
        Ok("closed"),
        "the proxy closed the tunnel when the job ended"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        processes_matching(&policy).is_empty(),
        "pinfold exec and its proxy are gone"
    );
}

#[test]
fn allowlist_entries_are_checked_with_the_field_named() {
    let d = user_dir();
    for (entry, why) in [
        ("https://deb.debian.org/", "not a URL"),
        ("deb.debian.org:99999", "1-65535"),
        ("foo.*.org", "wildcard"),
    ] {
        let path = allowlist_policy(d.path(), &[entry.into()]);
        assert_policy_refused_naming(&path, &["network.allow", entry, why]);
    }
    let path = allowlist_policy(
        d.path(),
        &["*.crates.io:443".into(), "deb.debian.org".into()],
    );
    let out = policy_check(&path);
    assert!(out.status.success(), "{out:?}");
    // A job may narrow egress to allowlist, never widen allowlist to egress.
    let out = exec(&["--policy", &path, "--network", "egress"], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more open than the policy"));
    let none = d.path().join("none.toml");
    std::fs::write(
        &none,
        "[network]\nmode = \"none\"\nallow = [\"deb.debian.org\"]\n",
    )
    .unwrap();
    assert!(policy_refused(&none).contains("network.allow"));
}
