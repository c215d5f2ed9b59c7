//! A real PostgreSQL server for the tests: Debian's `postgresql` package
//! (tests/setup.sh installs it), a cluster of its own made with `initdb` in
//! a temporary directory and run on a free port of 127.0.0.1, as an
//! unprivileged user (`pinfold-test` when the tests run as root, as
//! PostgreSQL refuses root). Nothing depends on a system service. One
//! cluster per test binary, one database per test; the server dies with
//! the test process (PR_SET_PDEATHSIG).

#![allow(dead_code)] // each test binary uses its own part

pub mod haproxy;
pub mod tls;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running cluster.
pub struct Cluster {
    /// Where its data, socket and log are.
    pub dir: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    pid: AtomicU32,
    bin: PathBuf,
    data: PathBuf,
    settings: Vec<String>,
    who: Option<(u32, u32)>,
    next: AtomicU32,
    _tmp: tempfile::TempDir,
}

/// The user the cluster runs as (and its superuser's name).
pub const USER: &str = "pinfold";

/// The test binary's cluster, started on first use: no fsync (a test's
/// data need not survive a crash of the machine).
pub fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(|| Cluster::start(&["fsync=off"]))
}

/// Debian's newest PostgreSQL server binaries.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("no /usr/lib/postgresql: install postgresql (tests/setup.sh does)")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server under /usr/lib/postgresql")
        .1
}

/// (uid, gid) to run the server as: pinfold-test's when we are root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "pinfold-test"])
            .output()
            .expect("id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the pinfold-test user (tests/setup.sh makes it)")
    };
    Some((id("-u"), id("-g")))
}

fn as_user(c: &mut Command, who: Option<(u32, u32)>) {
    // SAFETY: setgroups/setgid/setuid and prctl are async-signal-safe and
    // touch no memory of the parent; the death signal is set after the
    // credential change, which would clear it.
    unsafe {
        c.pre_exec(move || {
            if let Some((uid, gid)) = who
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `cmd` (`what`, in a panic's message) to its end; its stdout.
/// Panics, with what it printed, unless it ran and succeeded.
#[track_caller]
pub fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
    match cmd.output() {
        Ok(out) if out.status.success() => out.stdout,
        Ok(out) => panic!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// A port on 127.0.0.1 nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A new cluster whose server runs with `settings` (`name=value`) on
    /// top of its defaults.
    pub fn start(settings: &[&str]) -> Cluster {
        let bin = bin_dir();
        let who = run_as();
        let tmp = tempfile::Builder::new()
            .prefix("pinfold-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if let Some((uid, gid)) = who {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.join("data");
        let mut init = Command::new(bin.join("initdb"));
        init.args(["-D"])
            .arg(&data)
            .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null());
        as_user(&mut init, who);
        run(&mut init, "initdb");
        let port = free_port();
        let c = Cluster {
            dir,
            port,
            pid: AtomicU32::new(0),
            bin,
            data,
            settings: settings.iter().map(|s| s.to_string()).collect(),
            who,
            next: AtomicU32::new(0),
            _tmp: tmp,
        };
        c.launch();
        c
    }

    /// Starts the server on the cluster's data, port and settings, and
    /// waits until it accepts connections. From a thread that lives as
    /// long as the process, so that the death signal fires when the process
    /// ends, not when the test that happened to start it does.
    fn launch(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        if let Some((uid, gid)) = self.who {
            std::os::unix::fs::chown(self.dir.join("server.log"), Some(uid), Some(gid)).unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (b, d, sock, port) = (
            self.bin.clone(),
            self.data.clone(),
            self.dir.clone(),
            self.port,
        );
        let (settings, who) = (self.settings.clone(), self.who);
        std::thread::spawn(move || {
            let mut server = Command::new(b.join("postgres"));
            server
                .arg("-D")
                .arg(&d)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&sock)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=300",
                ])
                .args(settings.iter().flat_map(|s| ["-c", s.as_str()]))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            as_user(&mut server, who);
            let child = server.spawn();
            let _ = tx.send(child.map(|c| c.id()));
            loop {
                std::thread::park();
            }
        });
        let pid = rx.recv().unwrap().expect("starting postgres");
        self.pid.store(pid, Ordering::SeqCst);
        self.wait_ready();
    }

    /// The server's (postmaster's) pid.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// Stops the server (a fast shutdown: open connections are cut) and
    /// waits until it is gone.
    pub fn stop(&self) {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) and waitpid(2) of our own child, by pid.
        unsafe {
            libc::kill(pid, libc::SIGINT);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }

    /// Starts the server again after [`Cluster::stop`].
    pub fn start_again(&self) {
        self.launch();
    }

    fn wait_ready(&self) {
        let t = Instant::now();
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "postgres did not start: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `psql` on database `db` with `sql`; panics on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args([
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]);
        let out = run(&mut psql, &format!("psql {sql}"));
        String::from_utf8_lossy(&out).trim().to_string()
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's binaries (pg_ctl, psql).
    pub fn bin(&self) -> &Path {
        &self.bin
    }
}
