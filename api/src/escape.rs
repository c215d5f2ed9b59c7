//! Making job output safe to show on a terminal.
//!
//! A job's bytes reach people through `pinfold logs`, `pinfold submit
//! --wait` and `pinfold run`. Written raw, they drive the terminal: OSC 52
//! writes the clipboard, CSI moves the cursor over earlier lines, C1 bytes do
//! the same on terminals that read 8-bit controls. [`Escaper`] rewrites them
//! in a visible, inert form:
//!
//! * C0 controls except `\n` and `\t`, and DEL: `\xNN` (`ESC` is `\x1b`, so
//!   an escape sequence shows as `\x1b]52;c;...` and does nothing);
//! * C1 controls, U+0080..U+009F: `\u{NN}`;
//! * Unicode bidirectional overrides and isolates (U+202A..U+202E,
//!   U+2066..U+2069), which reorder what a line appears to say: `\u{NNNN}`;
//! * bytes that are not UTF-8: `\xNN`, each.
//!
//! Everything else passes unchanged, backslashes included (the escaped form
//! is for eyes, not for parsing back). A UTF-8 sequence split across two
//! calls of [`Escaper::push`] is held back until its end arrives.

/// A streaming escaper: feed it the output in pieces as they arrive.
#[derive(Debug, Default, Clone)]
pub struct Escaper {
    /// The start of a UTF-8 sequence whose end has not arrived yet (≤ 3 bytes).
    pending: Vec<u8>,
}

/// Escapes a complete byte string at once.
pub fn escape(bytes: &[u8]) -> Vec<u8> {
    let mut e = Escaper::default();
    let mut out = Vec::with_capacity(bytes.len());
    e.push(bytes, &mut out);
    e.finish(&mut out);
    out
}

/// Whether a character is shown escaped.
fn dangerous(c: char) -> bool {
    matches!(c,
        '\0'..='\x08' | '\x0b'..='\x1f' | '\x7f'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_char(c: char, out: &mut Vec<u8>) {
    if !dangerous(c) {
        let mut b = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    } else if (c as u32) < 0x80 {
        push_byte(c as u8, out);
    } else {
        out.extend_from_slice(format!("\\u{{{:x}}}", c as u32).as_bytes());
    }
}

fn push_byte(b: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
}

impl Escaper {
    /// Escapes `input`, appending to `out`; may hold back up to 3 bytes of
    /// an unfinished UTF-8 sequence for the next call.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let joined;
        let mut rest: &[u8] = if self.pending.is_empty() {
            input
        } else {
            let mut j = std::mem::take(&mut self.pending);
            j.extend_from_slice(input);
            joined = j;
            &joined
        };
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    s.chars().for_each(|c| push_char(c, out));
                    return;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `good` is valid UTF-8: from_utf8 said so.
                    std::str::from_utf8(good)
                        .unwrap_or_default()
                        .chars()
                        .for_each(|c| push_char(c, out));
                    match e.error_len() {
                        Some(n) => {
                            bad[..n].iter().for_each(|&b| push_byte(b, out));
                            rest = &bad[n..];
                        }
                        None => {
                            // The input ends inside a sequence: wait for more.
                            self.pending = bad.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The stream is complete: bytes still held back are escaped as invalid.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        for b in std::mem::take(&mut self.pending) {
            push_byte(b, out);
        }
    }

    /// Whether bytes are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(b: &[u8]) -> String {
        String::from_utf8(escape(b)).expect("escaped output is UTF-8")
    }

    #[test]
    fn plain_text_newlines_and_tabs_pass() {
        assert_eq!(
            esc(b"hello\tworld\n\\x1b stays text\n"),
            "hello\tworld\n\\x1b stays text\n"
        );
        assert_eq!(esc("grüße, 日本, 🎉".as_bytes()), "grüße, 日本, 🎉");
    }

    #[test]
    fn terminal_sequences_are_made_inert() {
        // OSC 52 clipboard write, terminated by BEL and by ST.
        assert_eq!(esc(b"\x1b]52;c;ZXZpbA==\x07"), "\\x1b]52;c;ZXZpbA==\\x07");
        assert_eq!(
            esc(b"\x1b]52;c;ZXZpbA==\x1b\\"),
            "\\x1b]52;c;ZXZpbA==\\x1b\\"
        );
        // CSI cursor up and erase line, carriage return, backspace, DEL.
        assert_eq!(
            esc(b"\x1b[1A\x1b[2K\r\x08\x7f"),
            "\\x1b[1A\\x1b[2K\\x0d\\x08\\x7f"
        );
        assert_eq!(esc(b"\0\x0b\x0c\x1f"), "\\x00\\x0b\\x0c\\x1f");
    }

    #[test]
    fn c1_controls_and_bidi_overrides_are_escaped() {
        // U+009B is the 8-bit CSI, U+0085 NEL; U+00A0 is printable.
        assert_eq!(
            esc("\u{9b}1A\u{85}\u{80}\u{a0}".as_bytes()),
            "\\u{9b}1A\\u{85}\\u{80}\u{a0}"
        );
        assert_eq!(
            esc("a\u{202e}b\u{2066}c".as_bytes()),
            "a\\u{202e}b\\u{2066}c"
        );
    }

    #[test]
    fn invalid_utf8_is_escaped_byte_by_byte() {
        // A raw 0x9b byte (8-bit CSI on a Latin-1 terminal), a lone
        // continuation byte, an overlong encoding, a surrogate.
        assert_eq!(esc(b"\x9b1A"), "\\x9b1A");
        assert_eq!(esc(b"a\x80b"), "a\\x80b");
        assert_eq!(esc(b"\xc0\x80"), "\\xc0\\x80");
        assert_eq!(esc(b"\xed\xa0\x80"), "\\xed\\xa0\\x80");
        assert_eq!(esc(b"\xff\xfe"), "\\xff\\xfe");
    }

    #[test]
    fn sequences_split_across_pushes_are_joined() {
        let whole = "é🎉\u{9b}x".as_bytes();
        for cut1 in 0..whole.len() {
            for cut2 in cut1..whole.len() {
                let mut e = Escaper::default();
                let mut out = Vec::new();
                e.push(&whole[..cut1], &mut out);
                e.push(&whole[cut1..cut2], &mut out);
                e.push(&whole[cut2..], &mut out);
                e.finish(&mut out);
                assert_eq!(out, escape(whole), "cuts at {cut1} and {cut2}");
                assert_eq!(String::from_utf8(out).unwrap(), "é🎉\\u{9b}x");
            }
        }
    }

    #[test]
    fn an_unfinished_sequence_at_the_end_is_escaped() {
        let mut e = Escaper::default();
        let mut out = Vec::new();
        e.push(b"ok\xf0\x9f", &mut out);
        assert!(e.has_pending());
        assert_eq!(out, b"ok");
        e.finish(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "ok\\xf0\\x9f");
        // A bad byte after a held-back start is not swallowed.
        let mut e = Escaper::default();
        let mut out = Vec::new();
        e.push(b"\xe2", &mut out);
        e.push(b"A", &mut out);
        e.finish(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "\\xe2A");
    }

    #[test]
    fn no_output_byte_is_a_control() {
        let all: Vec<u8> = (0..=255u8).collect();
        let out = escape(&all);
        let s = String::from_utf8(out).unwrap();
        assert!(s.chars().all(|c| !dangerous(c)), "{s:?}");
        assert!(!s.contains('\x1b'));
    }
}
