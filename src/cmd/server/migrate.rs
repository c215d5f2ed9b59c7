//! `pinfold server migrate`: a SQLite coordinator's state into PostgreSQL.

use std::path::PathBuf;

use anyhow::Context;

/// `migrate`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SQLite coordinator: sqlite:DIR (its $PINFOLD_HOME/coordinator)
    /// or sqlite:DIR/coordinator.db.
    #[arg(long, value_name = "sqlite:PATH", value_parser = parse_from)]
    from: PathBuf,
    /// The empty PostgreSQL database (postgres://USER@HOST:PORT/DB).
    #[arg(long, value_name = "URL", value_parser = pinfold_coordinator::store::parse_url)]
    to: String,
}

fn parse_from(s: &str) -> Result<PathBuf, String> {
    let p = s
        .strip_prefix("sqlite:")
        .ok_or("expected sqlite:PATH (a SQLite coordinator's directory)")?;
    let p = PathBuf::from(p);
    Ok(if p.file_name().is_some_and(|n| n == "coordinator.db") {
        p.parent().map(PathBuf::from).unwrap_or_default()
    } else {
        p
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let moved = rt
        .block_on(pinfold_coordinator::store::migrate::sqlite_to_postgres(
            &a.from, &a.to,
        ))
        .with_context(|| {
            format!(
                "migrating into {}",
                pinfold_coordinator::store::redact(&a.to)
            )
        })?;
    for (table, n) in &moved.rows {
        println!("{table}: {n} rows");
    }
    println!("logs: {} ({} bytes)", moved.logs.0, moved.logs.1);
    println!("blobs: {} ({} bytes)", moved.blobs.0, moved.blobs.1);
    println!("checked: every row count, log and blob (sha256) read back from PostgreSQL");
    Ok(())
}
