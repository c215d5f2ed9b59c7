//! Handler tests against the SQLite store in a temporary directory (the
//! cases: api/cases.rs, which api_postgres.rs runs against PostgreSQL).

mod common;

/// The store the cases run against: SQLite.
mod store {
    use std::path::Path;

    /// No `--store`: SQLite in the state directory.
    pub fn url() -> Option<String> {
        None
    }

    /// Every byte the store keeps under `dir`.
    pub fn stored(dir: &Path, _url: Option<&str>) -> Vec<u8> {
        let db = std::fs::read(dir.join("coordinator.db")).unwrap();
        let wal = std::fs::read(dir.join("coordinator.db-wal")).unwrap_or_default();
        [db, wal].concat()
    }
}

include!("api/cases.rs");
