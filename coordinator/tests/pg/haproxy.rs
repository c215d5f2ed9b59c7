//! Debian's haproxy in front of several coordinators, for the tests and
//! benchmarks that run more than one (tests/setup.sh installs it): started
//! on a free port of 127.0.0.1 with a generated configuration, killed when
//! dropped.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running haproxy.
pub struct Haproxy {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// haproxy balancing (round robin) over the coordinators on `backends`,
    /// once a request through it reaches one.
    pub fn start(backends: &[u16]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        // Health checks every 200 ms (the coordinators' /healthz, which
        // asks the database), a dead server out after two; a request whose
        // server is gone is sent to another (redispatch, retry-on), whatever
        // its method: the protocol is idempotent (leases fenced, log
        // offsets, digests).
        let mut cfg = format!(
            "global\n  maxconn 4000\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 90s\n  timeout server 90s\n  timeout check 5s\n  \
             retries 3\n  option redispatch 1\n  retry-on conn-failure empty-response response-timeout\n  \
             option http-buffer-request\n\
             frontend front\n  bind 127.0.0.1:{port}\n  default_backend coordinators\n\
             backend coordinators\n  balance roundrobin\n  option httpchk GET /healthz\n"
        );
        for (i, b) in backends.iter().enumerate() {
            cfg.push_str(&format!(
                "  server c{i} 127.0.0.1:{b} check inter 200ms fall 2 rise 2\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        super::run(
            Command::new("haproxy").arg("-c").arg("-f").arg(&path),
            "haproxy -c (tests/setup.sh installs haproxy)",
        );
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent. haproxy dies with the thread that started it, also when a
        // test panics past its Drop.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("haproxy");
        let h = Haproxy {
            child,
            port,
            _dir: dir,
        };
        let t = Instant::now();
        let health = pinfold_client::Client::new(&h.url(), None, Duration::from_secs(2));
        while health.health().is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "haproxy did not reach a coordinator"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        h
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
