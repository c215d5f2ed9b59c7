//! The real `pinfold server` for the end-to-end tests (tests/coordinator.rs,
//! tests/agent.rs): on 127.0.0.1 over its own PINFOLD_HOME, with known
//! tokens and one server secret, and the CLI pointed at it as the admin.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub const BIN: &str = env!("CARGO_BIN_EXE_pinfold");
pub const ADMIN: &str = "pfa_e2e_admin_token";
pub const REG: &str = "pfg_e2e_registration_token";
/// The server secret DEPLOY_KEY, scoped to runners trusted with `deploy`.
pub const SECRET: &str = "s3cr3t-deploy-key";

/// `pinfold server` on 127.0.0.1:`port` over `home`, once it says it
/// listens; killed if it does not within 20 s.
pub fn spawn_server<S: AsRef<OsStr>>(home: &Path, port: u16, args: &[S]) -> Result<Child> {
    let mut child = Command::new(BIN)
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("PINFOLD_HOME", home)
        .env("PINFOLD_ADMIN_TOKEN", ADMIN)
        .env("PINFOLD_REGISTRATION_TOKEN", REG)
        .env("PINFOLD_SECRET_DEPLOY_KEY", SECRET)
        .env("PINFOLD_SECRETS_TO", "DEPLOY_KEY=deploy")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = child.stdout.take().context("server stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        bail!("server did not start");
    }
    Ok(child)
}

/// A port on 127.0.0.1 nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The CLI as the admin against the server at `url`.
pub fn admin_cli(url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("PINFOLD_SERVER", url).env("PINFOLD_TOKEN", ADMIN);
    c
}
