//! Blobs in the PostgreSQL store's database, so that every coordinator
//! sharing it serves every blob: a blob is its row in `blobs` (size, chunk
//! count) and its content in 1 MiB rows of `blob_chunks`. An upload writes
//! its chunks and the row in one transaction, committed only when the
//! content hashes to the announced digest: a blob that is there is whole.
//! Uploads of one digest take turns (a transaction-scoped advisory lock):
//! the first stores it, the others only check what they sent.

use axum::body::{Body, Bytes};
use deadpool_postgres::Pool;
use futures_util::{Stream, StreamExt};

use super::{BlobError, Result, Tally};

/// The size of a stored chunk.
const CHUNK: usize = 1 << 20;

fn db(e: impl std::fmt::Display) -> BlobError {
    BlobError::Database(format!("postgresql: {e}"))
}

/// The blobs of one database.
pub(super) struct PgBlobs {
    pool: Pool,
}

impl PgBlobs {
    pub(super) fn new(pool: Pool) -> PgBlobs {
        PgBlobs { pool }
    }

    pub(super) async fn contains(&self, sha256: &str) -> Result<bool> {
        let c = self.pool.get().await.map_err(db)?;
        let row = c
            .query_opt("SELECT 1 FROM blobs WHERE sha256 = $1", &[&sha256])
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    /// Stores what `stream` brings under `sha256` once it is checked.
    pub(super) async fn put(
        &self,
        sha256: &str,
        mut stream: impl Stream<Item = std::result::Result<Bytes, axum::Error>> + Unpin,
        limit: u64,
    ) -> Result<u64> {
        let mut c = self.pool.get().await.map_err(db)?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&sha256],
        )
        .await
        .map_err(db)?;
        let stored = tx
            .query_opt("SELECT 1 FROM blobs WHERE sha256 = $1", &[&sha256])
            .await
            .map_err(db)?
            .is_some();
        let insert = "INSERT INTO blob_chunks (sha256, n, data) VALUES ($1, $2, $3)";
        let mut tally = Tally::new(limit);
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut n: i64 = 0;
        while let Some(piece) = stream.next().await {
            let piece = tally.add(piece)?;
            if stored {
                continue;
            }
            buf.extend_from_slice(&piece);
            while buf.len() >= CHUNK {
                let rest = buf.split_off(CHUNK);
                tx.execute(insert, &[&sha256, &n, &buf]).await.map_err(db)?;
                n += 1;
                buf = rest;
            }
        }
        let (size, actual) = tally.finish();
        if actual != sha256 {
            // Dropping the transaction rolls the chunks back.
            return Err(BlobError::DigestMismatch {
                expected: sha256.into(),
                actual,
            });
        }
        if stored {
            return Ok(size);
        }
        if !buf.is_empty() {
            tx.execute(insert, &[&sha256, &n, &buf]).await.map_err(db)?;
            n += 1;
        }
        tx.execute(
            "INSERT INTO blobs (sha256, size, chunks) VALUES ($1, $2, $3)",
            &[&sha256, &(size as i64), &n],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(size)
    }

    /// The blob's content, a chunk per query as the body is read.
    pub(super) async fn open_body(&self, sha256: &str) -> Result<(u64, Body)> {
        let c = self.pool.get().await.map_err(db)?;
        let row = c
            .query_opt(
                "SELECT size, chunks FROM blobs WHERE sha256 = $1",
                &[&sha256],
            )
            .await
            .map_err(db)?
            .ok_or_else(|| BlobError::Database(format!("no blob {sha256} in the database")))?;
        let (size, chunks): (i64, i64) = (row.get(0), row.get(1));
        drop(c);
        let (pool, sha) = (self.pool.clone(), sha256.to_string());
        let stream = futures_util::stream::unfold(0i64, move |n| {
            let (pool, sha) = (pool.clone(), sha.clone());
            async move {
                if n >= chunks {
                    return None;
                }
                let chunk = async {
                    let c = pool.get().await.map_err(std::io::Error::other)?;
                    let row = c
                        .query_one(
                            "SELECT data FROM blob_chunks WHERE sha256 = $1 AND n = $2",
                            &[&sha, &n],
                        )
                        .await
                        .map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(Bytes::from(row.get::<_, Vec<u8>>(0)))
                }
                .await;
                // After an error the stream ends (the body is cut short).
                let next = if chunk.is_ok() { n + 1 } else { chunks };
                Some((chunk, next))
            }
        });
        Ok((size as u64, Body::from_stream(stream)))
    }
}
