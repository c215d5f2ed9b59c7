//! Content-addressed blobs: source tars and artifacts, stored once per
//! sha256, whoever uploads them. Beside the SQLite store they are files
//! under `blobs/sha256/<2 hex>/<64 hex>`; beside the PostgreSQL store they
//! are in the database ([`postgres`]), so that every coordinator sharing it
//! serves every blob.
//!
//! File uploads stream into `blobs/tmp/` while hashing, are checked against
//! the digest the client announced, fsynced, then renamed into place, so a
//! crash never leaves a partial blob under a digest name.

mod postgres;

use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The announced digest is not a sha256 in hex.
    #[error("bad digest {0:?}: expected 64 lowercase hex digits")]
    BadDigest(String),
    /// The content does not hash to the announced digest.
    #[error("sha256 mismatch: announced {expected}, received content hashes to {actual}")]
    DigestMismatch {
        /// What the client said.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The upload passed the size limit.
    #[error("upload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The request body broke off.
    #[error("upload interrupted: {0}")]
    Body(String),
    /// The database failed (PostgreSQL store).
    #[error("{0}")]
    Database(String),
    /// The store has no such blob, though a record names it.
    #[error("no blob {0} in the store")]
    Missing(String),
    /// The file system failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, BlobError>;

/// An upload's size and digest so far, and its limit.
struct Tally {
    size: u64,
    hasher: Sha256,
    limit: u64,
}

impl Tally {
    fn new(limit: u64) -> Tally {
        Tally {
            size: 0,
            hasher: Sha256::new(),
            limit,
        }
    }

    /// Counts and hashes the next piece of the body (refused past the
    /// limit); returns it.
    fn add(&mut self, piece: std::result::Result<Bytes, axum::Error>) -> Result<Bytes> {
        let piece = piece.map_err(|e| BlobError::Body(e.to_string()))?;
        self.size += piece.len() as u64;
        if self.size > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        self.hasher.update(&piece);
        Ok(piece)
    }

    /// The size and the sha256 in hex.
    fn finish(self) -> (u64, String) {
        (self.size, hex::encode(self.hasher.finalize()))
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BlobError + 'a {
    move |source| BlobError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Content-addressed blobs: a directory, or a PostgreSQL database.
pub struct BlobStore {
    root: PathBuf,
    db: Option<postgres::PgBlobs>,
}

impl BlobStore {
    /// The blobs in the PostgreSQL database of `pool` (the store's).
    pub fn postgres(pool: deadpool_postgres::Pool) -> BlobStore {
        BlobStore {
            root: PathBuf::new(),
            db: Some(postgres::PgBlobs::new(pool)),
        }
    }

    /// Opens (creating) the store at `root`, clearing uploads a crash left.
    pub fn open(root: &Path) -> Result<BlobStore> {
        let tmp = root.join("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        for d in [root.join("sha256"), tmp] {
            std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        Ok(BlobStore {
            root: root.to_path_buf(),
            db: None,
        })
    }

    /// Where the blob with `sha256` lives as a file (whether or not it
    /// exists).
    fn path(&self, sha256: &str) -> Result<PathBuf> {
        if !pinfold_api::is_sha256_hex(sha256) {
            return Err(BlobError::BadDigest(sha256.into()));
        }
        Ok(self.root.join("sha256").join(&sha256[..2]).join(sha256))
    }

    /// True when the blob is stored.
    pub async fn contains(&self, sha256: &str) -> Result<bool> {
        if !pinfold_api::is_sha256_hex(sha256) {
            return Err(BlobError::BadDigest(sha256.into()));
        }
        match &self.db {
            Some(db) => db.contains(sha256).await,
            None => Ok(self.path(sha256)?.is_file()),
        }
    }

    /// Streams `body` in, verifies it hashes to `sha256` and is at most
    /// `limit` bytes, and stores it. Returns its size. Storing content that
    /// is already there keeps the existing blob (deduplication).
    pub async fn put(&self, sha256: &str, body: Body, limit: u64) -> Result<u64> {
        let dest = self.path(sha256)?;
        if let Some(db) = &self.db {
            return db.put(sha256, body.into_data_stream(), limit).await;
        }
        let tmp = self.root.join("tmp").join(crate::token::new_token(""));
        let outcome = self.receive(&tmp, body.into_data_stream(), limit).await;
        let (size, actual) = match outcome {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if actual != sha256 {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(BlobError::DigestMismatch {
                expected: sha256.into(),
                actual,
            });
        }
        if dest.is_file() {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Ok(size);
        }
        let dir = dest.parent().expect("blob paths have a parent");
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io("create", dir))?;
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(io("rename into", &dest))?;
        Ok(size)
    }

    /// Writes what `stream` brings to `tmp`, hashing and counting it up to
    /// `limit` bytes; returns the size and the sha256 in hex.
    async fn receive(
        &self,
        tmp: &Path,
        mut stream: impl Stream<Item = std::result::Result<Bytes, axum::Error>> + Unpin,
        limit: u64,
    ) -> Result<(u64, String)> {
        let mut file = tokio::fs::File::create(tmp)
            .await
            .map_err(io("create", tmp))?;
        let mut tally = Tally::new(limit);
        while let Some(chunk) = stream.next().await {
            let chunk = tally.add(chunk)?;
            file.write_all(&chunk).await.map_err(io("write", tmp))?;
        }
        file.sync_all().await.map_err(io("fsync", tmp))?;
        Ok(tally.finish())
    }

    /// The blob's content as a response body, streamed from disk or the
    /// database.
    pub async fn open_body(&self, sha256: &str) -> Result<(u64, Body)> {
        let path = self.path(sha256)?;
        if let Some(db) = &self.db {
            return db.open_body(sha256).await;
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(io("open", &path))?;
        let size = file.metadata().await.map_err(io("stat", &path))?.len();
        // A 64 KiB read loop; tokio-util's ReaderStream would do the same
        // for one more dependency.
        let stream = futures_util::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; 64 << 10];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok((size, Body::from_stream(stream)))
    }
}
