//! `pinfold server migrate`: moves a SQLite coordinator's whole state (its
//! database, its log files, its blob directory) into an empty PostgreSQL
//! database, then checks it: every table's row count, every log's bytes and
//! every blob's content, by sha256, read back from PostgreSQL.
//!
//! The rows are copied column by column with their ids, whatever the table
//! (the two schemas have the same tables and columns; PostgreSQL's column
//! types decide how each SQLite value is passed), in one transaction: a
//! failed migration leaves the database as empty as it was.

use std::path::{Path, PathBuf};

use deadpool_postgres::GenericClient;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};
use tokio_postgres::types::{ToSql, Type};

use super::{PgStore, Result, StoreError};

/// The tables, parents first (foreign keys).
const TABLES: &[&str] = &[
    "meta",
    "runners",
    "jobs",
    "attempts",
    "artifacts",
    "runner_keys",
    "provenance",
    "verify_groups",
    "verify_runs",
    "runner_trusted_labels",
];

/// Tables whose `id` is an identity column, moved past the copied ids.
const IDENTITIES: &[&str] = &["runners", "jobs", "attempts"];

/// The chunk size of logs and blobs in PostgreSQL.
const CHUNK: usize = 1 << 20;

/// What was moved (and then found again in PostgreSQL).
#[derive(Debug, Default)]
pub struct Migrated {
    /// Rows per table.
    pub rows: Vec<(&'static str, u64)>,
    /// Logs and their bytes.
    pub logs: (u64, u64),
    /// Blobs and their bytes.
    pub blobs: (u64, u64),
}

fn fail(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Moves the coordinator state in `dir` (a SQLite coordinator's
/// `$PINFOLD_HOME/coordinator`) into the empty PostgreSQL database at
/// `url`, and checks it there.
pub async fn sqlite_to_postgres(dir: &Path, url: &str) -> Result<Migrated> {
    let db = dir.join("coordinator.db");
    if !db.is_file() {
        return Err(StoreError::Config(format!(
            "{}: no coordinator database here (--from names a SQLite coordinator's directory, $PINFOLD_HOME/coordinator)",
            db.display()
        )));
    }
    let pg = PgStore::connect(url).await?;
    let mut c = pg.client().await?;
    let used = c
        .query_one(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM runners), (SELECT count(*) FROM meta)",
            &[],
        )
        .await?;
    let (jobs, runners, settings): (i64, i64, i64) = (used.get(0), used.get(1), used.get(2));
    if jobs + runners + settings > 0 {
        return Err(StoreError::Config(format!(
            "the database is not empty ({jobs} jobs, {runners} runners, {settings} settings: a coordinator has used it): migrate into a new, empty database"
        )));
    }
    let sqlite =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| StoreError::Open {
                path: db.clone(),
                source,
            })?;
    let tx = c.transaction().await?;
    let mut out = Migrated::default();
    for table in TABLES {
        let n = copy_table(&sqlite, &tx, table).await?;
        out.rows.push((table, n));
    }
    tx.execute(super::postgres::FILL_QUEUE, &[]).await?;
    for table in IDENTITIES {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) FROM {table}"
            ),
            &[],
        )
        .await?;
    }
    let logs = job_logs(&sqlite, dir)?;
    for (job, path, len) in &logs {
        let bytes = read_prefix(path, *len)?;
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            let at = (i * CHUNK) as i64;
            tx.execute(
                "INSERT INTO log_chunks (job_id, \"offset\", data) VALUES ($1, $2, $3)",
                &[&(*job as i64), &at, &chunk],
            )
            .await?;
        }
        out.logs.0 += 1;
        out.logs.1 += len;
    }
    let blobs = blob_files(&dir.join("blobs").join("sha256"))?;
    for (sha, path) in &blobs {
        let bytes = std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        if hex::encode(Sha256::digest(&bytes)) != *sha {
            return Err(fail(format!(
                "blob {}: its content does not hash to its name: the source directory is damaged",
                path.display()
            )));
        }
        let mut n = 0i64;
        for chunk in bytes.chunks(CHUNK) {
            tx.execute(
                "INSERT INTO blob_chunks (sha256, n, data) VALUES ($1, $2, $3)",
                &[sha, &n, &chunk],
            )
            .await?;
            n += 1;
        }
        tx.execute(
            "INSERT INTO blobs (sha256, size, chunks) VALUES ($1, $2, $3)",
            &[sha, &(bytes.len() as i64), &n],
        )
        .await?;
        out.blobs.0 += 1;
        out.blobs.1 += bytes.len() as u64;
    }
    tx.commit().await?;
    check(&sqlite, &pg, &out, &logs, &blobs).await.map_err(|e| {
        fail(format!(
            "{e}; the copy is committed but wrong: drop and recreate the database before migrating again"
        ))
    })?;
    Ok(out)
}

/// Copies every row of `table` with its columns as they are named in SQLite.
async fn copy_table(
    sqlite: &rusqlite::Connection,
    tx: &impl GenericClient,
    table: &str,
) -> Result<u64> {
    let mut st = sqlite.prepare(&format!("SELECT * FROM {table}"))?;
    let cols: Vec<String> = st.column_names().map(str::to_string).collect();
    let quoted: Vec<String> = cols.iter().map(|c| format!("\"{c}\"")).collect();
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            quoted.join(", "),
            marks.join(", ")
        ))
        .await?;
    let types: Vec<Type> = insert.params().to_vec();
    let mut rows = st.query([])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(cols.len());
        for (i, ty) in types.iter().enumerate() {
            values.push(value(row.get_ref(i)?, ty, table, &cols[i])?);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect();
        tx.execute(&insert, &refs).await?;
        n += 1;
    }
    Ok(n)
}

/// A SQLite value as the PostgreSQL column of type `ty` takes it.
fn value(
    v: ValueRef<'_>,
    ty: &Type,
    table: &str,
    col: &str,
) -> Result<Box<dyn ToSql + Sync + Send>> {
    let bad = || {
        fail(format!(
            "{table}.{col}: a {} value does not fit {ty}",
            v.data_type()
        ))
    };
    Ok(
        match (*ty == Type::INT8, *ty == Type::TEXT, *ty == Type::BYTEA, v) {
            (true, _, _, ValueRef::Integer(i)) => Box::new(i),
            (true, _, _, ValueRef::Null) => Box::new(None::<i64>),
            (_, true, _, ValueRef::Text(t)) => {
                Box::new(String::from_utf8(t.to_vec()).map_err(|_| bad())?)
            }
            (_, true, _, ValueRef::Null) => Box::new(None::<String>),
            (_, _, true, ValueRef::Blob(b)) => Box::new(b.to_vec()),
            (_, _, true, ValueRef::Text(t)) => Box::new(t.to_vec()),
            (_, _, true, ValueRef::Null) => Box::new(None::<Vec<u8>>),
            _ => return Err(bad()),
        },
    )
}

/// Each job's log file and how many of its bytes are committed.
fn job_logs(sqlite: &rusqlite::Connection, dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>> {
    let mut st = sqlite.prepare("SELECT id, log_len FROM jobs WHERE log_len > 0 ORDER BY id")?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (id, len) = r?;
        out.push((id, dir.join("logs").join(format!("{id}.log")), len));
    }
    Ok(out)
}

/// The first `len` bytes of `path` (bytes past them were never committed).
fn read_prefix(path: &Path, len: u64) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    if (bytes.len() as u64) < len {
        return Err(fail(format!(
            "{}: {} bytes, the database says {len}: the source directory is damaged",
            path.display(),
            bytes.len()
        )));
    }
    bytes.truncate(len as usize);
    Ok(bytes)
}

/// Every blob file under `root` (`<2 hex>/<64 hex>`), by digest.
fn blob_files(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root) else {
        return Ok(out);
    };
    for d in dirs.flatten() {
        for f in std::fs::read_dir(d.path())
            .map_err(|e| fail(format!("{}: {e}", d.path().display())))?
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if pinfold_api::is_sha256_hex(&name) {
                out.push((name, f.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads everything back from PostgreSQL: the row counts, each log's and
/// each blob's sha256 against the source's.
async fn check(
    sqlite: &rusqlite::Connection,
    pg: &PgStore,
    out: &Migrated,
    logs: &[(u64, PathBuf, u64)],
    blobs: &[(String, PathBuf)],
) -> Result<()> {
    let c = pg.client().await?;
    for (table, n) in &out.rows {
        let src: i64 =
            sqlite.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        let dst: i64 = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        if src != dst || dst as u64 != *n {
            return Err(fail(format!(
                "after the copy, {table} has {dst} rows in PostgreSQL and {src} in SQLite"
            )));
        }
    }
    let digest_of = |rows: Vec<tokio_postgres::Row>| {
        let mut h = Sha256::new();
        let mut len = 0u64;
        for r in rows {
            let d: Vec<u8> = r.get(0);
            len += d.len() as u64;
            h.update(&d);
        }
        (len, hex::encode(h.finalize()))
    };
    for (job, path, len) in logs {
        let rows = c
            .query(
                "SELECT data FROM log_chunks WHERE job_id = $1 ORDER BY \"offset\"",
                &[&(*job as i64)],
            )
            .await?;
        let want = hex::encode(Sha256::digest(read_prefix(path, *len)?));
        if digest_of(rows) != (*len, want) {
            return Err(fail(format!(
                "after the copy, job {job}'s log differs in PostgreSQL"
            )));
        }
    }
    for (sha, _) in blobs {
        let rows = c
            .query(
                "SELECT data FROM blob_chunks WHERE sha256 = $1 ORDER BY n",
                &[sha],
            )
            .await?;
        if digest_of(rows).1 != *sha {
            return Err(fail(format!(
                "after the copy, blob {sha} differs in PostgreSQL"
            )));
        }
    }
    Ok(())
}
