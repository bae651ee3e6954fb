//! Reading a plugin's log output, host side: bounded lines, then hclog-style
//! parsing into a level, a message and fields.
//!
//! Invariants: nothing here panics on any input; memory per reader is bounded by
//! [`MAX_LINE`] whatever the plugin writes (a longer line is cut and marked, the
//! rest of it skipped); bytes that are not UTF-8 are replaced, never rejected.

use std::io::{self, BufRead};

/// The longest log line kept; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 64 * 1024;

/// One line read by [`BoundedLines`].
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    /// The line without its newline, cut to the reader's limit.
    pub bytes: Vec<u8>,
    /// How many bytes were dropped from the end (0 if none).
    pub dropped: usize,
}

/// Splits a byte stream into lines of at most `max` bytes without ever holding
/// more than `max` bytes of one line.
pub struct BoundedLines<R> {
    inner: R,
    split: LineSplitter,
}

impl<R: BufRead> BoundedLines<R> {
    /// Lines of `inner`, each cut to `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        BoundedLines {
            inner,
            split: LineSplitter::new(max),
        }
    }

    /// The next line, `None` at end of input. A last line without newline counts.
    pub fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(self.split.finish());
            }
            let (used, line) = self.split.take(buf);
            self.inner.consume(used);
            if line.is_some() {
                return Ok(line);
            }
        }
    }
}

/// The state of [`BoundedLines`], for bytes that arrive in pieces (a
/// non-blocking pipe): the line so far, cut to `max` bytes.
pub struct LineSplitter {
    max: usize,
    bytes: Vec<u8>,
    dropped: usize,
    any: bool,
}

impl LineSplitter {
    /// Lines of at most `max` bytes.
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            max,
            bytes: Vec::new(),
            dropped: 0,
            any: false,
        }
    }

    /// Takes `buf` up to and including its first newline: how many bytes
    /// that was, and the line if it ended there.
    pub fn take(&mut self, buf: &[u8]) -> (usize, Option<Line>) {
        self.any |= !buf.is_empty();
        let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = self.max.saturating_sub(self.bytes.len());
        let keep = chunk.len().min(room);
        self.bytes.extend_from_slice(&chunk[..keep]);
        self.dropped += chunk.len() - keep;
        if !done {
            return (used, None);
        }
        if self.bytes.last() == Some(&b'\r') {
            self.bytes.pop();
        }
        (used, self.line())
    }

    /// Every line `buf` ends, in order.
    pub fn feed(&mut self, mut buf: &[u8], mut each: impl FnMut(Line)) {
        while !buf.is_empty() {
            let (used, line) = self.take(buf);
            buf = &buf[used..];
            if let Some(l) = line {
                each(l);
            }
        }
    }

    /// At end of input: the last line, if it had no newline.
    pub fn finish(&mut self) -> Option<Line> {
        self.line()
    }

    fn line(&mut self) -> Option<Line> {
        if !std::mem::take(&mut self.any) {
            return None;
        }
        Some(Line {
            bytes: std::mem::take(&mut self.bytes),
            dropped: std::mem::take(&mut self.dropped),
        })
    }
}

/// A parsed log line.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Level, from `@level` or a `[LEVEL]` prefix; Info when unknown.
    pub level: log::Level,
    /// The message text.
    pub message: String,
    /// Other fields in order of appearance (`@module` included), as display text.
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// The message followed by ` key=value` for each field, for plain-text logs.
    pub fn display_text(&self) -> String {
        let mut s = self.message.clone();
        for (k, v) in &self.fields {
            s.push(' ');
            s.push_str(k);
            s.push('=');
            if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
                s.push_str(&serde_json::Value::String(v.clone()).to_string());
            } else {
                s.push_str(v);
            }
        }
        s
    }
}

/// Turns a plugin's stderr lines into [`Record`]s, like go-plugin's host does,
/// remembering when a Go panic or fatal error started so the lines after it are
/// errors too.
#[derive(Default)]
pub struct Parser {
    in_crash: bool,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Parses one line (no newline). Never fails.
    pub fn parse(&mut self, line: &Line) -> Record {
        let text = String::from_utf8_lossy(&line.bytes);
        let mut rec = match parse_json(&text) {
            Some(r) => r,
            None => self.parse_plain(&text),
        };
        if line.dropped > 0 {
            rec.fields
                .push(("truncated_bytes".to_string(), line.dropped.to_string()));
        }
        rec
    }

    fn parse_plain(&mut self, text: &str) -> Record {
        let trimmed = text.trim_start();
        if trimmed.starts_with("panic:")
            || trimmed.starts_with("fatal error:")
            || trimmed.starts_with("thread '") && trimmed.contains("panicked")
        {
            self.in_crash = true;
        }
        let (level, rest) = match split_level_prefix(trimmed) {
            Some((l, rest)) => (l, rest),
            None if self.in_crash => (log::Level::Error, text),
            None => (log::Level::Info, text),
        };
        Record {
            level,
            message: rest.trim_end().to_string(),
            fields: Vec::new(),
        }
    }
}

fn split_level_prefix(s: &str) -> Option<(log::Level, &str)> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find(']')?;
    let level = level_from_str(&rest[..end])?;
    Some((level, rest[end + 1..].trim_start()))
}

fn level_from_str(s: &str) -> Option<log::Level> {
    Some(match s.to_ascii_lowercase().as_str() {
        "trace" => log::Level::Trace,
        "debug" => log::Level::Debug,
        "info" => log::Level::Info,
        "warn" | "warning" => log::Level::Warn,
        "error" | "err" | "fatal" | "panic" | "crit" | "dpanic" => log::Level::Error,
        _ => return None,
    })
}

/// An hclog JSON line: an object with `@message` or `@level`.
fn parse_json(text: &str) -> Option<Record> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    // serde_json recursion is bounded (128 levels), so hostile nesting errors out.
    let serde_json::Value::Object(map) = serde_json::from_str(text).ok()? else {
        return None;
    };
    if !map.contains_key("@message") && !map.contains_key("@level") {
        return None;
    }
    let mut level = log::Level::Info;
    let mut message = String::new();
    let mut fields = Vec::new();
    for (k, v) in map {
        match k.as_str() {
            "@level" => {
                level = v
                    .as_str()
                    .and_then(level_from_str)
                    .unwrap_or(log::Level::Info);
            }
            "@message" => message = value_text(v),
            "@timestamp" => {}
            _ => fields.push((k.trim_start_matches('@').to_string(), value_text(v))),
        }
    }
    Some(Record {
        level,
        message,
        fields,
    })
}

/// Any JSON value as display text: strings bare, the rest as JSON (a non-string
/// `@message`, which panics go-plugin's host, is just shown).
fn value_text(v: serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = BoundedLines::new(input, max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(l);
        }
        out
    }

    fn line(s: &str) -> Line {
        Line {
            bytes: s.as_bytes().to_vec(),
            dropped: 0,
        }
    }

    #[test]
    fn bounded_lines_cut_and_continue() {
        let ls = lines(b"abcdef\nxy\r\nlast", 4);
        assert_eq!(ls[0].bytes, b"abcd");
        assert_eq!(ls[0].dropped, 2);
        assert_eq!(ls[1].bytes, b"xy");
        assert_eq!(ls[2].bytes, b"last");
        assert_eq!(ls.len(), 3);
        assert!(lines(b"", 4).is_empty());
        assert_eq!(lines(b"\n", 4)[0].bytes, b"");
    }

    /// Bytes that arrive in pieces (a non-blocking pipe) split into the
    /// same lines as the whole stream read at once, wherever it is cut.
    #[test]
    fn pieces_split_into_the_lines_of_the_whole() {
        let input: &[u8] = b"abcdef\nxy\r\n\n\nlonger line here\nq\r\nlast";
        for max in [1, 4, 64] {
            let whole = lines(input, max);
            let mut rng = crate::testutil::Rng::new(max as u64);
            for _ in 0..200 {
                let mut split = LineSplitter::new(max);
                let mut got = Vec::new();
                let mut rest = input;
                while !rest.is_empty() {
                    let n = 1 + rng.below(rest.len().min(7));
                    split.feed(&rest[..n], |l| got.push(l));
                    rest = &rest[n..];
                }
                got.extend(split.finish());
                assert_eq!(got, whole, "max {max}");
            }
        }
        let mut split = LineSplitter::new(4);
        assert_eq!(split.finish(), None, "nothing read, no line");
    }

    #[test]
    fn bounded_lines_with_a_huge_line_through_a_small_buffer() {
        let mut input = vec![b'x'; 1 << 20];
        input.push(b'\n');
        input.extend_from_slice(b"next\n");
        let mut r = BoundedLines::new(io::BufReader::with_capacity(4096, &input[..]), 1000);
        let first = r.next_line().unwrap().unwrap();
        assert_eq!(first.bytes.len(), 1000);
        assert_eq!(first.dropped, (1 << 20) - 1000);
        assert_eq!(r.next_line().unwrap().unwrap().bytes, b"next");
    }

    #[test]
    fn parses_hclog_json() {
        let mut p = Parser::new();
        let r = p.parse(&line(
            r#"{"@level":"warn","@message":"slow","@module":"median","@timestamp":"2026-01-01T00:00:00.000000Z","ms":12,"who":"a b"}"#,
        ));
        assert_eq!(r.level, log::Level::Warn);
        assert_eq!(r.message, "slow");
        assert_eq!(
            r.fields,
            vec![
                ("module".to_string(), "median".to_string()),
                ("ms".to_string(), "12".to_string()),
                ("who".to_string(), "a b".to_string())
            ]
        );
        assert_eq!(r.display_text(), r#"slow module=median ms=12 who="a b""#);
    }

    #[test]
    fn non_string_message_and_unknown_level_do_not_break() {
        let mut p = Parser::new();
        let r = p.parse(&line(r#"{"@level":42,"@message":{"a":[1]}}"#));
        assert_eq!(r.level, log::Level::Info);
        assert_eq!(r.message, r#"{"a":[1]}"#);
    }

    #[test]
    fn plain_lines_and_go_panics() {
        let mut p = Parser::new();
        assert_eq!(p.parse(&line("[DEBUG] hello")).level, log::Level::Debug);
        assert_eq!(p.parse(&line("[DEBUG] hello")).message, "hello");
        assert_eq!(p.parse(&line("just text")).level, log::Level::Info);
        assert_eq!(p.parse(&line("{not json")).message, "{not json");
        assert_eq!(p.parse(&line("panic: boom")).level, log::Level::Error);
        assert_eq!(
            p.parse(&line("goroutine 1 [running]:")).level,
            log::Level::Error
        );
    }

    #[test]
    fn invalid_utf8_and_truncation_are_marked_not_fatal() {
        let mut p = Parser::new();
        let r = p.parse(&Line {
            bytes: vec![0xff, 0xfe, b'o', b'k'],
            dropped: 10,
        });
        assert_eq!(r.message, "\u{fffd}\u{fffd}ok");
        assert_eq!(
            r.fields,
            vec![("truncated_bytes".to_string(), "10".to_string())]
        );
    }

    /// Property: random bytes never panic the reader or the parser, and no line
    /// exceeds the bound.
    #[test]
    fn fuzz_never_panics_and_stays_bounded() {
        let mut rng = crate::testutil::Rng::new(42);
        let atoms: [&[u8]; 12] = [
            b"{",
            b"}",
            b"\"@level\":",
            b"\"@message\":",
            b"\n",
            b"[",
            b"]",
            b"\"",
            b"panic:",
            b"\xff",
            b"[ERROR]",
            b",",
        ];
        for _ in 0..5_000 {
            let mut input = Vec::new();
            for _ in 0..rng.below(40) {
                if rng.below(3) == 0 {
                    input.push(rng.below(256) as u8);
                } else {
                    input.extend_from_slice(atoms[rng.below(atoms.len())]);
                }
            }
            let mut p = Parser::new();
            for l in lines(&input, 16) {
                assert!(l.bytes.len() <= 16);
                let _ = p.parse(&l).display_text();
            }
        }
    }
}
