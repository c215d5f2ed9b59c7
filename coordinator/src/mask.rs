//! Secret masking for logs that arrive in chunks.
//!
//! A secret can be split across two appends, so the masker holds back the
//! tail of what it has seen while that tail could still be the start of a
//! secret; the held bytes (`pending`) are stored with the job, so a server
//! restart does not lose or unmask them. Offsets the agent sees count the
//! bytes it sent; the stored log is the masked text.

use memchr::memmem;

/// What replaces a secret in a stored log.
pub const MASK: &[u8] = b"***";

/// The result of feeding bytes through the masker.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Masked {
    /// Bytes safe to store.
    pub emit: Vec<u8>,
    /// Bytes held back because they may begin a secret.
    pub pending: Vec<u8>,
}

/// Masks `pending + chunk` against `secrets`. With `last`, nothing is held
/// back (the log is complete).
pub fn mask(pending: &[u8], chunk: &[u8], secrets: &[Vec<u8>], last: bool) -> Masked {
    let secrets: Vec<&[u8]> = secrets
        .iter()
        .map(Vec::as_slice)
        .filter(|s| !s.is_empty())
        .collect();
    let mut data = Vec::with_capacity(pending.len() + chunk.len());
    data.extend_from_slice(pending);
    data.extend_from_slice(chunk);
    if secrets.is_empty() {
        return Masked {
            emit: data,
            pending: Vec::new(),
        };
    }
    // Every occurrence of every secret, then leftmost-longest without overlaps.
    let mut hits: Vec<(usize, usize)> = Vec::new();
    for s in &secrets {
        hits.extend(memmem::find_iter(&data, s).map(|at| (at, at + s.len())));
    }
    hits.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut emit = Vec::with_capacity(data.len());
    let mut pos = 0;
    for (start, end) in hits {
        if start < pos {
            continue;
        }
        emit.extend_from_slice(&data[pos..start]);
        emit.extend_from_slice(MASK);
        pos = end;
    }
    // Hold back the earliest suffix that is a proper prefix of a secret.
    let mut hold = data.len();
    if !last {
        let longest = secrets.iter().map(|s| s.len()).max().unwrap_or(0);
        let from = pos.max(data.len().saturating_sub(longest.saturating_sub(1)));
        for at in from..data.len() {
            let tail = &data[at..];
            if secrets
                .iter()
                .any(|s| s.len() > tail.len() && s.starts_with(tail))
            {
                hold = at;
                break;
            }
        }
    }
    emit.extend_from_slice(&data[pos..hold]);
    Masked {
        emit,
        pending: data[hold..].to_vec(),
    }
}

/// The line a capped log ends with.
pub fn truncation_marker(cap: u64) -> Vec<u8> {
    format!("\n[pinfold: log truncated: this server keeps at most {cap} bytes per job]\n")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&str], secrets: &[&str]) -> String {
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for c in chunks {
            let m = mask(&pending, c.as_bytes(), &secrets, false);
            out.extend(m.emit);
            pending = m.pending;
        }
        out.extend(mask(&pending, b"", &secrets, true).emit);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_and_split_secrets() {
        assert_eq!(feed(&["key=hunter2\n"], &["hunter2"]), "key=***\n");
        assert_eq!(feed(&["key=hun", "ter2\n"], &["hunter2"]), "key=***\n");
        assert_eq!(
            feed(&["h", "u", "n", "t", "e", "r", "2", "!"], &["hunter2"]),
            "***!"
        );
        assert_eq!(
            feed(&["a hunter2 b s3cr", "et c"], &["hunter2", "s3cret"]),
            "a *** b *** c"
        );
    }

    #[test]
    fn near_misses_are_released() {
        assert_eq!(feed(&["hunt", "ing\n"], &["hunter2"]), "hunting\n");
        // A prefix left at the very end is not a secret and is kept.
        assert_eq!(feed(&["done hunt"], &["hunter2"]), "done hunt");
        assert_eq!(feed(&["plain text"], &[]), "plain text");
    }

    #[test]
    fn overlapping_secrets_mask_the_longest() {
        assert_eq!(feed(&["xabcdx"], &["abc", "abcd"]), "x***x");
    }

    #[test]
    fn holds_back_only_what_could_start_a_secret() {
        let s = vec![b"hunter2".to_vec()];
        let m = mask(b"", b"abc hun", &s, false);
        assert_eq!(m.emit, b"abc ");
        assert_eq!(m.pending, b"hun");
    }
}
