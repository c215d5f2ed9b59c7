//! A job log as the pages show it: complete lines, each numbered, its
//! terminal colours turned into escaped HTML, and pinfold's own
//! `==> step i/n: NAME` lines starting a section the reader can fold.
//!
//! Everything a job printed is text: [`ansi_to_html`] escapes `<`, `>`,
//! `&` and quotes, and keeps only the SGR (colour, bold) sequences; every
//! other escape or control character is dropped before it sees the line.
//! A carriage return shows what a terminal would: the text after the last
//! one (progress bars).

use serde::Serialize;

/// How a line of pinfold's own that opens a step begins. The agent writes
/// job lines that begin with `==>` as `job> ==>`, so at the start of a
/// stored line this is always pinfold's.
pub const STEP_MARKER: &str = "==> step ";

/// One rendered line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Its 1-based number in the whole log.
    pub n: u64,
    /// The byte offset it starts at.
    pub o: u64,
    /// Its text as escaped HTML (colour spans only).
    pub h: String,
    /// When it opens a step: the step's title (plain text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s: Option<String>,
}

/// The longest piece of an unterminated line shown before its newline
/// arrives: a job that prints megabytes without a newline still shows up
/// (in pieces that share the line's number) instead of stalling the page.
pub const LONG_LINE: usize = 64 << 10;

/// What [`render`] made of a slice of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The lines (and pieces of a long line), in order.
    pub lines: Vec<Line>,
    /// Bytes of the slice consumed: where the next slice starts.
    pub used: usize,
    /// The number of the line that starts there.
    pub next_line: u64,
}

/// Renders the lines of `data`, which starts at byte `offset` of the log on
/// line number `first_line`. A last line without its newline is left for
/// later, unless `complete` (the log will not grow) or it is [`LONG_LINE`]
/// bytes or more: then it goes out as a piece, and the rest of that line
/// keeps its number.
pub fn render(data: &[u8], offset: u64, first_line: u64, complete: bool) -> Rendered {
    let mut lines = Vec::new();
    let mut at = 0usize;
    let mut n = first_line;
    while at < data.len() {
        let (end, next, ended) = match memchr_nl(&data[at..]) {
            Some(i) => (at + i, at + i + 1, true),
            None if complete => (data.len(), data.len(), true),
            None if data.len() - at >= LONG_LINE => (data.len(), data.len(), false),
            None => break,
        };
        let text = String::from_utf8_lossy(&data[at..end]);
        lines.push(line(&text, n, offset + at as u64));
        if ended {
            n += 1;
        }
        at = next;
    }
    Rendered {
        lines,
        used: at,
        next_line: n,
    }
}

fn memchr_nl(data: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', data)
}

/// Counts the newlines in `data` (line numbers of a window into a log).
pub fn count_lines(data: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', data).count() as u64
}

fn line(text: &str, n: u64, o: u64) -> Line {
    let text = text.strip_suffix('\r').unwrap_or(text);
    let text = text.rsplit('\r').next().unwrap_or(text);
    let clean = keep_sgr_only(text);
    let h = ansi_to_html::convert(&clean).unwrap_or_else(|_| escape(&strip_esc(&clean)));
    let s = clean
        .starts_with(STEP_MARKER)
        .then(|| strip_esc(&clean).trim_start_matches("==> ").to_string())
        .filter(|t| !t.contains(" finished: "));
    Line { n, o, h, s }
}

/// Drops every escape sequence but SGR (`ESC [ ... m`) and every control
/// character but tab: cursor moves, OSC titles and hyperlinks, bells.
fn keep_sgr_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    let mut seq = String::new();
                    for d in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&d) {
                            if d == 'm' && seq.chars().all(|x| x.is_ascii_digit() || x == ';') {
                                out.push_str("\x1b[");
                                out.push_str(&seq);
                                out.push('m');
                            }
                            break;
                        }
                        seq.push(d);
                    }
                }
                Some(']') => {
                    // OSC: up to BEL or ESC \.
                    chars.next();
                    while let Some(d) = chars.next() {
                        if d == '\x07' || (d == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn strip_esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_seq = false;
    for c in text.chars() {
        match (in_seq, c) {
            (false, '\x1b') => in_seq = true,
            (true, c) if c.is_ascii_alphabetic() => in_seq = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn escape(text: &str) -> String {
    maud::html! { (text) }.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_a_job_line_is_text() {
        let evil = b"<script>alert(1)</script>\n\"><img src=x onerror=alert(2)>\n";
        let r = render(evil, 0, 1, false);
        let lines = r.lines;
        assert_eq!((r.used, r.next_line), (evil.len(), 3));
        assert_eq!(lines[0].h, "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert!(!lines[1].h.contains('<') && !lines[1].h.contains('"'));
        assert_eq!((lines[1].n, lines[1].o), (2, 26));
    }

    #[test]
    fn colours_stay_and_other_escapes_go() {
        let lines = render(
            b"\x1b[31mred\x1b[0m \x1b]0;title\x07\x1b[2Jok\x1b]8;;http://x\x1b\\link\x07\n",
            0,
            1,
            false,
        )
        .lines;
        let h = &lines[0].h;
        assert!(
            h.contains("<span style='color:var(--red,#a00)'>red</span>"),
            "{h}"
        );
        assert!(h.ends_with(" oklink"), "{h}");
        assert!(!h.contains("title") && !h.contains('\x1b') && !h.contains('\x07'));
    }

    #[test]
    fn an_unfinished_line_waits_unless_the_log_is_complete() {
        let r = render(b"one\ntw", 100, 7, false);
        assert_eq!((r.lines.len(), r.used, r.next_line), (1, 4, 8));
        let r = render(b"one\ntw", 100, 7, true);
        assert_eq!((r.lines.len(), r.used, r.next_line), (2, 6, 9));
        let l = &r.lines[1];
        assert_eq!((l.n, l.o, l.h.as_str()), (8, 104, "tw"));
        // A line that never ends shows in pieces that keep its number.
        let mut long = b"a\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', LONG_LINE));
        let r = render(&long, 0, 1, false);
        assert_eq!((r.lines.len(), r.used, r.next_line), (2, long.len(), 2));
        assert_eq!((r.lines[1].n, r.lines[1].o), (2, 2));
        let r = render(b"xyz\nb\n", long.len() as u64, 2, false);
        assert_eq!((r.lines[0].n, r.lines[1].n, r.next_line), (2, 3, 4));
    }

    #[test]
    fn step_markers_open_sections_and_carriage_returns_overwrite() {
        let lines = render(
            b"==> step 1/2: build\n10%\r50%\r100%\r\n==> step 1/2: build finished: exit 0 (1s)\njob> ==> step 9/9: fake\n",
            0,
            1,
            false,
        )
        .lines;
        assert_eq!(lines[0].s.as_deref(), Some("step 1/2: build"));
        assert_eq!(lines[1].h, "100%");
        assert_eq!(lines[2].s, None);
        assert_eq!(lines[3].s, None);
        assert_eq!(count_lines(b"a\nb\nc"), 2);
    }
}
