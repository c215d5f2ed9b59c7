//! A cluster that speaks only TLS, for the tests of `sslmode=verify-full`:
//! a CA and a server certificate made with Debian's `openssl` for the name
//! `localhost` only (not 127.0.0.1), a second CA that signed nothing of
//! this server's, and a `pg_hba.conf` with `hostssl` lines only, so that a
//! plain TCP connection is refused by the server itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{Cluster, run, run_as};

/// The TLS cluster and its certificates.
pub struct Tls {
    /// The cluster.
    pub cluster: Cluster,
    /// The CA certificate that signed the server's (PEM).
    pub ca: PathBuf,
    /// A CA certificate that signed nothing of this server's (PEM).
    pub other_ca: PathBuf,
    _dir: tempfile::TempDir,
}

/// The test binary's TLS cluster, started on first use.
pub fn cluster() -> &'static Tls {
    static C: OnceLock<Tls> = OnceLock::new();
    C.get_or_init(start)
}

/// `openssl ARGS` (split at spaces) in `dir`.
fn openssl(dir: &Path, args: &str) {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args.split_whitespace());
    run(&mut c, &format!("openssl {args}"));
}

/// A self-signed CA certificate and key `NAME.crt`, `NAME.key` in `dir`.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
             -subj /CN={name} -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign -keyout {name}.key -out {name}.crt"
        ),
    );
}

fn start() -> Tls {
    let dir = tempfile::Builder::new()
        .prefix("pinfold-pg-tls-")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    ca(d, "ca");
    ca(d, "other-ca");
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
         -keyout server.key -out server.csr",
    );
    openssl(
        d,
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
         -extfile server.ext -out server.crt",
    );
    // The server reads its key only when it is its own and private.
    let key = d.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(&key, Some(uid), Some(gid)).unwrap();
    }
    std::fs::write(
        d.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    let set = |k: &str, f: &str| format!("{k}={}", d.join(f).display());
    let settings = [
        "fsync=off".to_string(),
        "ssl=on".to_string(),
        set("ssl_cert_file", "server.crt"),
        set("ssl_key_file", "server.key"),
        set("hba_file", "pg_hba.conf"),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    Tls {
        cluster: Cluster::start(&settings),
        ca: d.join("ca.crt"),
        other_ca: d.join("other-ca.crt"),
        _dir: dir,
    }
}
