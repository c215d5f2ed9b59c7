//! Blobs in the PostgreSQL store's database, so that every coordinator
//! sharing it serves every blob: a blob is its row in `blobs` (size, chunk
//! count) and its content in 1 MiB rows of `blob_chunks`.
//!
//! An upload is staged first: each 1 MiB of the body is its own row of
//! `blob_uploads` under an upload id, written with a connection taken from
//! the pool for that one statement, so a slow upload holds no connection
//! and no transaction while its body trickles in. Once the body hashes to
//! the announced digest, one short transaction moves the staged rows under
//! the digest and adds the `blobs` row (under a transaction-scoped lock per
//! digest: of two uploads of one digest, the second finds the blob and
//! only drops its staging). A blob that is there is whole, and an uploader
//! that lies about the digest never writes under it. Staged rows of an
//! upload that fails are deleted; those a killed coordinator left are
//! deleted a day later, when a coordinator starts.

use axum::body::{Body, Bytes};
use deadpool_postgres::Pool;
use futures_util::{Stream, StreamExt};

use super::{BlobError, Result, Tally};

/// The size of a stored chunk.
const CHUNK: usize = 1 << 20;

/// A database error: a retry may succeed (the database out of reach).
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

    /// Stages one chunk of an upload.
    async fn stage(&self, upload: i64, n: i64, data: &[u8]) -> Result<()> {
        let c = self.pool.get().await.map_err(db)?;
        c.execute(
            "INSERT INTO blob_uploads (upload, n, data) VALUES ($1, $2, $3)",
            &[&upload, &n, &data],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Drops an upload's staged chunks.
    async fn drop_upload(&self, upload: i64) {
        if let Ok(c) = self.pool.get().await {
            let _ = c
                .execute("DELETE FROM blob_uploads WHERE upload = $1", &[&upload])
                .await;
        }
    }

    /// Stores what `stream` brings under `sha256` once it is checked.
    pub(super) async fn put(
        &self,
        sha256: &str,
        stream: impl Stream<Item = std::result::Result<Bytes, axum::Error>> + Unpin,
        limit: u64,
    ) -> Result<u64> {
        let upload: i64 = {
            let c = self.pool.get().await.map_err(db)?;
            c.query_one("SELECT nextval('blob_upload_ids')", &[])
                .await
                .map_err(db)?
                .get(0)
        };
        let staged = self.receive(upload, stream, limit).await;
        let (size, actual, chunks) = match staged {
            Ok(v) => v,
            Err(e) => {
                self.drop_upload(upload).await;
                return Err(e);
            }
        };
        if actual != sha256 {
            self.drop_upload(upload).await;
            return Err(BlobError::DigestMismatch {
                expected: sha256.into(),
                actual,
            });
        }
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
        if !stored {
            tx.execute(
                "INSERT INTO blob_chunks (sha256, n, data) \
                 SELECT $1, n, data FROM blob_uploads WHERE upload = $2",
                &[&sha256, &upload],
            )
            .await
            .map_err(db)?;
            tx.execute(
                "INSERT INTO blobs (sha256, size, chunks) VALUES ($1, $2, $3)",
                &[&sha256, &(size as i64), &chunks],
            )
            .await
            .map_err(db)?;
        }
        tx.execute("DELETE FROM blob_uploads WHERE upload = $1", &[&upload])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(size)
    }

    /// Stages the body in chunks; its size, sha256 and chunk count.
    async fn receive(
        &self,
        upload: i64,
        mut stream: impl Stream<Item = std::result::Result<Bytes, axum::Error>> + Unpin,
        limit: u64,
    ) -> Result<(u64, String, i64)> {
        let mut tally = Tally::new(limit);
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut n: i64 = 0;
        while let Some(piece) = stream.next().await {
            buf.extend_from_slice(&tally.add(piece)?);
            while buf.len() >= CHUNK {
                let rest = buf.split_off(CHUNK);
                self.stage(upload, n, &buf).await?;
                n += 1;
                buf = rest;
            }
        }
        if !buf.is_empty() {
            self.stage(upload, n, &buf).await?;
            n += 1;
        }
        let (size, actual) = tally.finish();
        Ok((size, actual, n))
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
            .ok_or_else(|| BlobError::Missing(sha256.to_string()))?;
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
