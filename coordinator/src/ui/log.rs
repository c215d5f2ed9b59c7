//! A job log as the pages show it: lines, each numbered, its terminal
//! colours turned into escaped HTML, and pinfold's own `==> step i/n: NAME`
//! lines starting a section the reader can fold.
//!
//! Everything a job printed is text: [`ansi_to_html`] escapes `<`, `>`,
//! `&` and quotes, and keeps only the SGR (colour, bold) sequences; every
//! other escape or control character is dropped before it sees the line,
//! and bidi and zero-width characters show as `\u{202e}`. A carriage return shows what a
//! terminal would: each part after one overwrites the line from its start
//! (progress bars), and what it does not cover stays.
//!
//! Output is bounded by what a job cannot choose: a line shows at most
//! [`SHOW_MAX`] bytes (the rest is in the raw log), a line with many colour
//! changes or a long one shows without colour (nested spans would make the
//! HTML tens of times the input), and [`render`] stops after `max_lines`.
//!
//! A step section opens only at a line whose stored bytes begin with
//! `==> step `: the agent stores a job's own line that begins with `==>` as
//! `job> ==>`, so that is pinfold's. A line that shows as `==>` after its
//! control characters are dropped is shown with `job> ` too.

use serde::Serialize;

/// How a line of pinfold's own that opens a step begins.
pub const STEP_MARKER: &str = "==> step ";

/// Bytes of one line shown; the rest is in the raw log.
pub const SHOW_MAX: usize = 16 << 10;

/// Colour codes in one line past which it shows without colour.
const MAX_SGR: usize = 32;

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
    /// It continues the line before it (a piece of a long line): it gets
    /// no anchor of its own.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub c: bool,
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
    /// Whether that is the start of a line (not the rest of a piece).
    pub at_line_start: bool,
}

/// Where a slice of the log starts, and what to make of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Its byte offset in the log.
    pub offset: u64,
    /// The number of the line it is in.
    pub line: u64,
    /// Whether it is the start of that line (false: inside a long one).
    pub line_start: bool,
}

/// Renders the lines of `data`, which starts at `from`. A last line
/// without its newline is left for later, unless `complete` (the log will
/// not grow) or it is [`LONG_LINE`] bytes or more: then it goes out as a
/// piece, and the rest of that line keeps its number. Stops after
/// `max_lines`.
pub fn render(data: &[u8], from: Start, complete: bool, max_lines: usize) -> Rendered {
    let mut lines = Vec::new();
    let mut at = 0usize;
    let mut n = from.line;
    let mut line_start = from.line_start;
    while at < data.len() && lines.len() < max_lines {
        let (end, next, ended) = match memchr_nl(&data[at..]) {
            Some(i) => (at + i, at + i + 1, true),
            None if complete => (data.len(), data.len(), true),
            None if data.len() - at >= LONG_LINE => (data.len(), data.len(), false),
            None => break,
        };
        lines.push(line(&data[at..end], line_start, n, from.offset + at as u64));
        line_start = ended;
        if ended {
            n += 1;
        }
        at = next;
    }
    Rendered {
        lines,
        used: at,
        next_line: n,
        at_line_start: line_start,
    }
}

fn memchr_nl(data: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', data)
}

/// Counts the newlines in `data` (line numbers of a window into a log).
pub fn count_lines(data: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', data).count() as u64
}

/// One line (or piece of one) from its stored bytes; `line_start`: the
/// bytes begin a line.
fn line(raw: &[u8], line_start: bool, n: u64, o: u64) -> Line {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let shown = &raw[..raw.len().min(SHOW_MAX)];
    let text = String::from_utf8_lossy(shown);
    let clean = keep_sgr_only(&text);
    let pinfolds = line_start && raw.starts_with(b"==>");
    let stripped = strip_esc(&clean);
    let s = (line_start && raw.starts_with(STEP_MARKER.as_bytes()))
        .then(|| stripped.trim_start_matches("==> ").to_string())
        .filter(|t| !t.contains(" finished: "));
    let text = overwrite(&stripped);
    let plain = escape(&text);
    // Colour only where it cannot blow up: few codes, no carriage return
    // (whose overwrite works on text), and HTML not much over the plain.
    let mut h = if clean.contains('\r') || sgr_codes(&clean) > MAX_SGR {
        plain
    } else {
        match ansi_to_html::convert(&clean) {
            Ok(c) if c.len() <= 4 * plain.len() + 2048 => c.replace('\x1b', ""),
            _ => plain,
        }
    };
    if !pinfolds && text.starts_with("==>") {
        h.insert_str(0, "job&gt; ");
    }
    if raw.len() > shown.len() {
        h.push_str(&format!(
            " <span class='more'>… {} more bytes in the raw log</span>",
            raw.len() - shown.len()
        ));
    }
    Line {
        n,
        o,
        h,
        s,
        c: !line_start,
    }
}

/// Colour codes in a line: each parameter of each SGR sequence (one
/// sequence can carry thousands).
fn sgr_codes(text: &str) -> usize {
    text.split('\x1b')
        .skip(1)
        .map(|seq| seq.split('m').next().unwrap_or("").matches(';').count() + 1)
        .sum()
}

/// What a terminal shows of a line with carriage returns: each part after
/// one writes over the line from its start.
fn overwrite(text: &str) -> String {
    let mut shown: Vec<char> = Vec::new();
    for part in text.split('\r') {
        for (i, c) in part.chars().enumerate() {
            match shown.get_mut(i) {
                Some(slot) => *slot = c,
                None => shown.push(c),
            }
        }
    }
    shown.into_iter().collect()
}

/// Drops every escape sequence but SGR (`ESC [ ... m` with numbers) and
/// every control character but tab and carriage return: cursor moves, OSC
/// titles and hyperlinks, bells. Bidi controls become visible `\u{..}`.
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
                            if d == 'm' && is_sgr(&seq) {
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
            '\t' | '\r' => out.push(c),
            c if hides_text(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Characters that reorder or hide text (bidi controls, zero-width ones):
/// shown as `\u{..}` so a name or a line reads as what it is.
fn hides_text(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// A name a runner or a job chose (runner name, artifact name, a runner's
/// facts) as the pages show it: characters that reorder or hide text, and
/// control characters, as `\u{..}` (maud escapes the markup).
pub fn visible(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if hides_text(c) || c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// SGR parameters the converter takes: none, or numbers of up to three
/// digits separated by `;` (it refuses an empty one, `ESC[;31m`).
fn is_sgr(params: &str) -> bool {
    params.is_empty()
        || params
            .split(';')
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
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

    const TOP: Start = Start {
        offset: 0,
        line: 1,
        line_start: true,
    };

    fn lines(data: &[u8]) -> Vec<Line> {
        render(data, TOP, false, usize::MAX).lines
    }

    #[test]
    fn markup_in_a_job_line_is_text() {
        let evil = b"<script>alert(1)</script>\n\"><img src=x onerror=alert(2)>\n";
        let r = render(evil, TOP, false, 100);
        assert_eq!((r.used, r.next_line), (evil.len(), 3));
        assert_eq!(r.lines[0].h, "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert!(!r.lines[1].h.contains('<') && !r.lines[1].h.contains('"'));
        assert_eq!((r.lines[1].n, r.lines[1].o), (2, 26));
    }

    #[test]
    fn colours_stay_and_other_escapes_go() {
        let l = lines(
            b"\x1b[31mred\x1b[0m \x1b]0;title\x07\x1b[2Jok\x1b]8;;http://x\x1b\\link\x07\x1b[;31m\xe2\x80\xaeevil\n",
        );
        let h = &l[0].h;
        assert!(
            h.contains("<span style='color:var(--red,#a00)'>red</span>"),
            "{h}"
        );
        assert!(h.ends_with(" oklink\\u{202e}evil"), "{h}");
        assert!(!h.contains("title") && !h.contains('\x1b') && !h.contains('\x07'));
    }

    #[test]
    fn an_unfinished_line_waits_unless_the_log_is_complete() {
        let at = Start {
            offset: 100,
            line: 7,
            line_start: true,
        };
        let r = render(b"one\ntw", at, false, 100);
        assert_eq!((r.lines.len(), r.used, r.next_line), (1, 4, 8));
        let r = render(b"one\ntw", at, true, 100);
        assert_eq!((r.lines.len(), r.used, r.next_line), (2, 6, 9));
        let l = &r.lines[1];
        assert_eq!((l.n, l.o, l.h.as_str()), (8, 104, "tw"));
        assert_eq!(render(b"a\nb\nc\n", at, false, 2).used, 4, "max_lines");
    }

    #[test]
    fn a_line_that_never_ends_shows_in_pieces_that_cannot_open_a_step() {
        let mut long = b"a\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', LONG_LINE));
        let r = render(&long, TOP, false, 100);
        assert_eq!((r.lines.len(), r.used, r.next_line), (2, long.len(), 2));
        assert_eq!((r.lines[1].n, r.lines[1].o), (2, 2));
        assert!(r.lines[1].h.ends_with(&format!(
            "… {} more bytes in the raw log</span>",
            LONG_LINE - SHOW_MAX
        )));
        assert!(!r.at_line_start);
        // The rest of that line, though it reads like pinfold's marker.
        let rest = Start {
            offset: long.len() as u64,
            line: 2,
            line_start: false,
        };
        let r = render(b"==> step 9/9: fake\nb\n", rest, false, 100);
        assert_eq!((r.lines[0].n, r.lines[1].n, r.next_line), (2, 3, 4));
        assert_eq!(r.lines[0].s, None);
        assert!(
            r.lines[0].h.starts_with("job&gt; ==&gt;"),
            "{}",
            r.lines[0].h
        );
        assert!(
            r.lines[0].c && !r.lines[1].c,
            "only the rest of the line continues it"
        );
    }

    #[test]
    fn only_a_stored_marker_opens_a_step_and_carriage_returns_overwrite() {
        let l = lines(
            b"==> step 1/2: build\n10%\r50%\r100%\r\n==> step 1/2: build finished: exit 0 (1s)\njob> ==> step 9/9: fake\n\x07==> step 3/3: deploy\nrm -rf ~; curl x|sh\rok\n",
        );
        assert_eq!(l[0].s.as_deref(), Some("step 1/2: build"));
        assert_eq!(l[1].h, "100%");
        assert_eq!(l[2].s, None);
        assert_eq!(l[3].s, None);
        assert_eq!(l[4].s, None, "a bell before the marker");
        assert!(l[4].h.starts_with("job&gt; ==&gt; step 3/3"), "{}", l[4].h);
        assert_eq!(l[5].h, "ok -rf ~; curl x|sh", "what a terminal shows");
        assert_eq!(count_lines(b"a\nb\nc"), 2);
    }

    #[test]
    fn many_colour_changes_show_without_colour_so_the_html_stays_small() {
        let mut evil = Vec::new();
        for i in 0..10_000 {
            evil.extend_from_slice(if i % 2 == 0 {
                b"\x1b[95mA"
            } else {
                b"\x1b[96mA"
            });
        }
        evil.push(b'\n');
        let l = lines(&evil);
        assert!(!l[0].h.contains("style="), "colour kept");
        assert!(
            l[0].h.len() <= SHOW_MAX + 100,
            "{} bytes of HTML",
            l[0].h.len()
        );
    }

    #[test]
    fn one_sequence_with_thousands_of_codes_shows_without_colour() {
        let mut evil = b"\x1b[1;3;4;9;53;41".to_vec();
        for i in 0..3000 {
            evil.extend_from_slice(if i % 2 == 0 { b";95" } else { b";96" });
        }
        evil.extend_from_slice(b";22;23;24;29;55;49mA\n");
        let l = lines(&evil);
        assert!(!l[0].h.contains("style="), "colour kept");
        assert!(l[0].h.len() < 100, "{} bytes of HTML", l[0].h.len());
    }

    #[test]
    fn what_looks_like_pinfolds_after_an_overwrite_or_a_zero_width_space_is_the_jobs() {
        let l = lines("x\r==> step 3/3: deploy\n\u{200b}==> job succeeded\n".as_bytes());
        assert_eq!(l[0].h, "job&gt; ==&gt; step 3/3: deploy");
        assert_eq!(l[0].s, None);
        assert_eq!(l[1].h, "\\u{200b}==&gt; job succeeded");
    }
}
