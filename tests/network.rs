//! Network modes, proved from inside: `none` reaches nothing, `egress`
//! reaches an "outside world" host (a network namespace this test makes,
//! with a documentation-range address, so no traffic leaves the machine)
//! and still cannot reach private ranges or the host's loopback.

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
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tests share one subnet, so they take turns.
static WORLD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
                "198.51.100.1",
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
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn egress_reaches_the_outside_but_not_private_ranges_or_the_host() {
    if !is_root() {
        eprintln!("skipped: needs root to create the outside-world network namespace");
        return;
    }
    let _turn = WORLD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let world = OutsideWorld::start();
    let host_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    let script = format!(
        "/bin/probe http-get 198.51.100.1 8080 /marker.txt; \
         /bin/probe connect 10.1.2.3 80; /bin/probe connect 192.168.1.1 80; \
         /bin/probe connect 172.16.0.1 80; /bin/probe connect 169.254.169.254 80; \
         /bin/probe connect 127.0.0.1 {host_port}; cat /etc/resolv.conf"
    );
    let (code, out, err) = sh(&["--policy", "trusted"], &script);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains("hello from outside\n") && out.contains("http-get: ALLOWED"),
        "egress works: {out} {err}"
    );
    assert_eq!(
        out.matches("connect: refused (errno EACCES)").count(),
        4,
        "private ranges: {out}"
    );
    assert!(
        out.contains("connect: refused (errno ECONNREFUSED)"),
        "host loopback: {out}"
    );
    assert!(out.contains("nameserver 169.254.1.1"), "{out}");
    drop(world);
    assert!(
        processes_matching("pasta --config-net").is_empty(),
        "pasta stopped with the container"
    );
}

#[test]
fn none_reaches_nothing_and_the_stricter_mode_wins() {
    if !is_root() {
        eprintln!("skipped: needs root to create the outside-world network namespace");
        return;
    }
    let _turn = WORLD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _world = OutsideWorld::start();
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
