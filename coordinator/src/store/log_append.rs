//! What a log append does, decided once for both stores: a pure function
//! of the log's stored state and the chunk. A chunk is sent from a byte
//! offset; bytes the server already has (a retried chunk) are skipped, a
//! gap is refused, secrets are masked across chunk boundaries (the bytes
//! that might begin a secret are held back as `pending`), and the log
//! stops at its cap with a marker. The store does the I/O: it writes what
//! [`Append::Store`] says and saves the new state in the same transaction.
//! A leaf: it uses no store module.

use std::borrow::Cow;

use pinfold_api::mask;

use super::{AppendOutcome, Result, StoreError};

/// A job's log as the store keeps it.
pub(super) struct LogState<'a> {
    /// Bytes received so far (where the next chunk starts).
    pub raw_len: u64,
    /// Bytes held back for masking.
    pub pending: &'a [u8],
    /// The log hit its cap: nothing more is stored.
    pub truncated: bool,
}

/// What an append does.
pub(super) enum Append<'a> {
    /// Every byte of the chunk was received before: nothing changes.
    Repeat(AppendOutcome),
    /// Store `emit` at the end of the log, capped (`None`: the log is
    /// already truncated, so nothing is stored), then keep `pending`
    /// unless that write truncated the log.
    Store {
        /// Bytes received after this chunk.
        raw_len: u64,
        /// The bytes for the log, masked.
        emit: Option<Cow<'a, [u8]>>,
        /// Bytes held back for the next chunk.
        pending: Vec<u8>,
    },
}

/// Plans appending `data`, sent from byte `offset`, to the log in `state`.
pub(super) fn plan<'a>(
    state: &LogState<'_>,
    offset: u64,
    data: &'a [u8],
    secrets: &[Vec<u8>],
) -> Result<Append<'a>> {
    if offset > state.raw_len {
        return Err(StoreError::LogGap {
            got: offset,
            expected: state.raw_len,
        });
    }
    let skip = (state.raw_len - offset) as usize;
    if skip >= data.len() {
        return Ok(Append::Repeat(AppendOutcome {
            offset: state.raw_len,
            truncated: state.truncated,
        }));
    }
    let new = &data[skip..];
    let raw_len = state.raw_len + new.len() as u64;
    let (emit, pending) = if state.truncated {
        (None, Vec::new())
    } else if secrets.is_empty() && state.pending.is_empty() {
        // Nothing to mask: the bytes are stored as they came.
        (Some(Cow::Borrowed(new)), Vec::new())
    } else {
        let m = mask::mask(state.pending, new, secrets, false);
        (Some(Cow::Owned(m.emit)), m.pending)
    };
    Ok(Append::Store {
        raw_len,
        emit,
        pending,
    })
}

/// What of `emit` fits in a log of `log_len` bytes capped at `cap`, and
/// the truncation marker to store after it when it does not all fit.
pub(super) fn capped(emit: &[u8], log_len: u64, cap: u64) -> (&[u8], Vec<u8>) {
    let room = cap.saturating_sub(log_len);
    if emit.len() as u64 > room {
        (&emit[..room as usize], mask::truncation_marker(cap))
    } else {
        (emit, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(raw_len: u64, pending: &[u8], truncated: bool) -> LogState<'_> {
        LogState {
            raw_len,
            pending,
            truncated,
        }
    }

    #[test]
    fn a_gap_is_refused() {
        let e = plan(&state(10, b"", false), 11, b"x", &[]).err().unwrap();
        assert!(matches!(
            e,
            StoreError::LogGap {
                got: 11,
                expected: 10
            }
        ));
    }

    #[test]
    fn a_retried_chunk_changes_nothing() {
        let Append::Repeat(out) = plan(&state(10, b"", true), 4, b"abcdef", &[]).unwrap() else {
            panic!("a chunk wholly received before is a repeat");
        };
        assert_eq!((out.offset, out.truncated), (10, true));
    }

    #[test]
    fn an_overlapping_chunk_stores_only_its_new_bytes() {
        let Append::Store {
            raw_len,
            emit,
            pending,
        } = plan(&state(4, b"", false), 2, b"cdefg", &[]).unwrap()
        else {
            panic!("new bytes are stored");
        };
        assert_eq!(
            (raw_len, emit.as_deref(), pending.len()),
            (7, Some(&b"efg"[..]), 0)
        );
    }

    #[test]
    fn a_truncated_log_stores_nothing_but_counts_the_bytes() {
        let Append::Store {
            raw_len,
            emit,
            pending,
        } = plan(&state(4, b"", true), 4, b"xyz", &[b"xy".to_vec()]).unwrap()
        else {
            panic!("new bytes are counted");
        };
        assert_eq!((raw_len, emit, pending.len()), (7, None, 0));
    }

    #[test]
    fn a_secret_split_across_chunks_is_masked() {
        let secrets = [b"hunter2".to_vec()];
        let Append::Store { emit, pending, .. } =
            plan(&state(0, b"", false), 0, b"pw=hunt", &secrets).unwrap()
        else {
            panic!("stored");
        };
        assert!(!emit.unwrap().windows(4).any(|w| w == b"hunt"));
        let Append::Store { emit, .. } =
            plan(&state(7, &pending, false), 7, b"er2!", &secrets).unwrap()
        else {
            panic!("stored");
        };
        let emit = emit.unwrap();
        assert!(!emit.windows(3).any(|w| w == b"er2"), "{emit:?}");
        assert!(emit.ends_with(b"!"));
    }

    #[test]
    fn the_cap_keeps_what_fits_and_adds_the_marker() {
        let (keep, marker) = capped(b"abcdef", 8, 10);
        assert_eq!(keep, b"ab");
        assert!(!marker.is_empty());
        let (keep, marker) = capped(b"ab", 8, 10);
        assert_eq!((keep, marker.len()), (&b"ab"[..], 0));
    }
}
