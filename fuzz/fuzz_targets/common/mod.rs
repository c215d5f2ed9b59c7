//! What the parser targets share: the input as text, and the contract of a
//! parser whose output travels on (a round trip leaves it unchanged) and
//! whose refusals are shown to a person (one line).

#![allow(dead_code)] // each target uses what it needs

use std::fmt::{Debug, Display};

/// The fuzz input as text; None (nothing to check) when it is not UTF-8.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Checks one parse: an accepted value equals what `round_trip` makes of
/// it (which returns that and what to say if they differ); a refusal's
/// message is one line (`what` names it in the panic). Returns that
/// message.
pub fn check_parse<T: PartialEq + Debug, E: Display>(
    parsed: Result<T, E>,
    round_trip: impl FnOnce(&T) -> (T, String),
    what: &str,
) -> Option<String> {
    match parsed {
        Ok(value) => {
            let (again, changed) = round_trip(&value);
            assert_eq!(again, value, "{changed}");
            None
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{what} spans lines: {msg:?}");
            Some(msg)
        }
    }
}
