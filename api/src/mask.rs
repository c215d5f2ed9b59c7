//! Secret masking for logs that arrive in chunks.
//!
//! A secret can be split across two appends, so the masker holds back the
//! tail of what it has seen while that tail could still be the start of a
//! secret; the held bytes (`pending`) are stored with the job, so a server
//! restart does not lose or unmask them. Offsets the agent sees count the
//! bytes it sent; the stored log is the masked text.
//!
//! Each secret is masked in the forms a build prints it in: as is, base64
//! (standard and URL-safe alphabets, at each of the three byte alignments a
//! secret can have inside a larger encoded string; see [`forms`]) and
//! percent-encoded (upper- and lower-case hex, and with `+` for spaces).

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
    let all = forms(secrets);
    let secrets: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
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

/// Derived forms shorter than this are not masked: a few base64 characters
/// would match unrelated text.
const MIN_FORM: usize = 6;

/// Every form of every secret to mask: the value, its base64 encodings and
/// its percent-encodings, without duplicates and without empty values.
///
/// A secret embedded in a larger base64 string starts at byte offset 0, 1
/// or 2 of a 3-byte group; for each offset, only the characters that depend
/// on the secret's bytes alone are stable (the first one or two characters
/// mix in the preceding byte, the last one the following byte), so those
/// inner characters are the form masked. With no padding counted, padded
/// and unpadded encodings are both covered.
pub fn forms(secrets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut add = |v: Vec<u8>, derived: bool| {
        if !v.is_empty() && (!derived || v.len() >= MIN_FORM) && !out.contains(&v) {
            out.push(v);
        }
    };
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        add(s.clone(), false);
        for offset in 0..3usize {
            let mut buf = vec![0u8; offset];
            buf.extend_from_slice(s);
            let start = (offset * 8).div_ceil(6);
            let end = (offset + s.len()) * 8 / 6;
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                let enc = engine.encode(&buf);
                if start < end {
                    add(enc.as_bytes()[start..end].to_vec(), true);
                }
            }
        }
        for (hex, plus) in [
            (b"0123456789ABCDEF", false),
            (b"0123456789abcdef", false),
            (b"0123456789ABCDEF", true),
        ] {
            let mut enc = Vec::with_capacity(s.len() * 3);
            for &b in s {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    enc.push(b);
                } else if plus && b == b' ' {
                    enc.push(b'+');
                } else {
                    enc.extend_from_slice(&[b'%', hex[(b >> 4) as usize], hex[(b & 15) as usize]]);
                }
            }
            add(enc, true);
        }
    }
    out
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

    fn b64(data: &[u8], url: bool) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        if url {
            URL_SAFE.encode(data)
        } else {
            STANDARD.encode(data)
        }
    }

    #[test]
    fn masks_base64_at_every_alignment_and_in_both_alphabets() {
        // Bytes that encode to '+' and '/' (standard) or '-' and '_' (URL-safe).
        let secret = "s3cr3t?>>~~value";
        for prefix in ["", "a", "ab", "abc", "token:", "x:y:"] {
            for url in [false, true] {
                let encoded = b64(format!("{prefix}{secret}!").as_bytes(), url);
                let out = feed(&[&format!("auth {encoded} end")], &[secret]);
                assert!(out.contains("***"), "{prefix} {url}: {out}");
                // The characters that encode the secret's bytes alone are gone.
                let start = (prefix.len() * 8).div_ceil(6);
                let end = (prefix.len() + secret.len()) * 8 / 6;
                assert!(!out.contains(&encoded[start..end]), "{out}");
                assert!(out.len() < encoded.len(), "{out}");
            }
        }
        // `printf %s "$SECRET" | base64`: 16 bytes are 21 whole characters,
        // one that mixes in padding bits, and "==".
        let whole = b64(secret.as_bytes(), false);
        assert_eq!(
            feed(&[&format!("{whole}\n")], &[secret]),
            format!("***{}\n", &whole[21..])
        );
    }

    #[test]
    fn masks_percent_encoded_forms() {
        let secret = "p@ss w/rd&more";
        assert_eq!(feed(&["u=p%40ss%20w%2Frd%26more&x"], &[secret]), "u=***&x");
        assert_eq!(feed(&["u=p%40ss+w%2Frd%26more"], &[secret]), "u=***");
        assert_eq!(feed(&["u=p%40ss%20w%2frd%26more"], &[secret]), "u=***");
    }

    #[test]
    fn encoded_forms_are_masked_when_split_across_chunks() {
        let secret = "correct horse battery staple";
        let encoded = b64(secret.as_bytes(), false);
        let text = format!("key: {encoded}\n");
        // Every split point of the line.
        for at in 1..text.len() {
            let out = feed(&[&text[..at], &text[at..]], &[secret]);
            assert!(out.starts_with("key: ***"), "split at {at}: {out}");
            assert!(!out.contains(&encoded[..encoded.len() - 2]), "{out}");
        }
    }

    #[test]
    fn short_secrets_have_no_derived_forms() {
        let f = forms(&[b"ab".to_vec()]);
        assert_eq!(f, vec![b"ab".to_vec()]);
        assert!(forms(&[b"hunter2".to_vec()]).len() > 3);
    }

    #[test]
    fn holds_back_only_what_could_start_a_secret() {
        let s = vec![b"hunter2".to_vec()];
        let m = mask(b"", b"abc hun", &s, false);
        assert_eq!(m.emit, b"abc ");
        assert_eq!(m.pending, b"hun");
    }
}
