//! Content digests (`sha256:<64 hex>`) and the readers that verify them while
//! the bytes stream: size first, then the hash, so nothing is trusted before
//! it has been checked byte for byte.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Errors from parsing or verifying a digest.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum DigestError {
    /// The text is not `sha256:` followed by 64 lower-case hex digits.
    #[error("bad digest {0:?}: write sha256: followed by 64 lower-case hex digits")]
    Parse(String),
    /// A blob is not the size its descriptor promised.
    #[error(
        "{what}: size is {actual} bytes, but its descriptor says {expected}; the source is corrupt or truncated"
    )]
    Size {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// A blob's bytes do not hash to the digest that names them.
    #[error(
        "{what}: content hashes to {actual}, not {expected}; the source is corrupt or was tampered with"
    )]
    Mismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
}

/// A sha256 content digest (the only algorithm pinfold accepts).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(h: Sha256) -> Digest {
        Digest {
            hex: to_hex(&h.finalize()),
        }
    }

    /// Checks that `bytes` hash to this digest.
    pub fn verify(&self, what: &str, bytes: &[u8]) -> Result<(), DigestError> {
        let actual = Digest::of(bytes);
        if actual != *self {
            return Err(DigestError::Mismatch {
                what: what.to_owned(),
                expected: self.clone(),
                actual,
            });
        }
        Ok(())
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError::Parse(s.to_owned()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::Parse(s.to_owned()));
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A reader that hashes and counts what passes through it, and fails as soon
/// as more bytes arrive than `limit` allows (a blob larger than its descriptor
/// is refused before it is read to the end).
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: Option<u64>,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`; `limit` is the most bytes it may yield.
    pub fn new(inner: R, limit: Option<u64>) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads what is left (trailing bytes count too) and returns the digest
    /// and the total size.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count))
    }

    /// Reads what is left, then checks the size (when given) and the digest.
    pub fn verify(self, what: &str, size: Option<u64>, digest: &Digest) -> Result<(), VerifyError> {
        let (actual, count) = self.finish()?;
        if let Some(expected) = size.filter(|s| *s != count) {
            return Err(DigestError::Size {
                what: what.to_owned(),
                expected,
                actual: count,
            }
            .into());
        }
        if actual != *digest {
            return Err(DigestError::Mismatch {
                what: what.to_owned(),
                expected: digest.clone(),
                actual,
            }
            .into());
        }
        Ok(())
    }
}

/// An I/O failure or a verification failure.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The content is not what its descriptor promised.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(limit) = self.limit.filter(|l| self.count > *l) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob is larger than the {limit} bytes its descriptor says"),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads all of `r` (at most `limit` bytes) and checks size and digest.
pub fn read_verified(
    r: impl Read,
    what: &str,
    size: Option<u64>,
    limit: u64,
    digest: &Digest,
) -> Result<Vec<u8>, VerifyError> {
    let cap = size.unwrap_or(limit).min(limit);
    let mut h = HashingReader::new(r, Some(cap));
    let mut buf = Vec::new();
    h.read_to_end(&mut buf)?;
    h.verify(what, size, digest)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_verify() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("sha256:ABC".parse::<Digest>().is_err());
        assert!("md5:00".parse::<Digest>().is_err());
        assert!(read_verified(&b"abc"[..], "x", Some(3), 10, &d).is_ok());
        assert!(read_verified(&b"abcd"[..], "x", Some(3), 10, &d).is_err());
        assert!(read_verified(&b"ab"[..], "x", Some(3), 10, &d).is_err());
    }
}
