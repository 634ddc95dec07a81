//! Container output to line events: line splitting, long-line cutting and the output tail.
//!
//! Docker delivers output as byte chunks that may end mid-line, mid-character or between
//! the `\r` and `\n` of a line end. [`LineSplitter`] turns them into lines: `\n`, `\r\n`
//! and a lone `\r` (how progress bars redraw a line) each end a line, so no redraw is
//! lost. A lone `\r` on an empty line ends nothing, because progress bars such as tqdm's
//! start every frame with one. A line that grows past [`MAX_LINE_BYTES`] is sent in
//! pieces, which bounds the memory held per stream whatever a step prints. The last
//! piece of a line is always sent as finished, even when the stream ends right after a
//! full piece. Bytes that are not UTF-8 are replaced with U+FFFD.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::events::{Event, OutputStream};

/// Maximum size of the piece of a line sent as one event.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Lines kept per step for the error message of a failed step.
pub const TAIL_LINES: usize = 20;

/// Maximum length of a line kept in the tail. Longer lines are shortened there, but not
/// in the log events.
const TAIL_LINE_CHARS: usize = 500;

/// A finished line, or a piece of a line that is longer than [`MAX_LINE_BYTES`].
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    /// True when the line goes on in the next piece.
    pub continued: bool,
}

/// Splits one byte stream into lines; see the module documentation for the rules.
#[derive(Debug)]
pub struct LineSplitter {
    buffer: Vec<u8>,
    /// Meaning of a `\n` right after the last byte, when that byte was a `\r`.
    carriage_return: CarriageReturn,
    /// A piece of the current line was sent, so its end must be sent too.
    in_long_line: bool,
    max_line_bytes: usize,
}

/// State after a `\r` that ended a chunk, whose meaning depends on the next byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CarriageReturn {
    /// The last byte was not a `\r`.
    None,
    /// The `\r` ended a line, so a `\n` right after it ends nothing new.
    EndedLine,
    /// The `\r` came on an empty line: with a `\n` after it, it is the end of a blank
    /// line in CRLF output, and otherwise it ends nothing.
    OnEmptyLine,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::with_max_line_bytes(MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    pub fn with_max_line_bytes(max_line_bytes: usize) -> Self {
        assert!(max_line_bytes >= 4, "a piece must hold one UTF-8 character");
        LineSplitter {
            buffer: Vec::new(),
            carriage_return: CarriageReturn::None,
            in_long_line: false,
            max_line_bytes,
        }
    }

    /// Adds a chunk of output and returns the lines it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        if rest.is_empty() {
            return lines;
        }
        let carriage_return = std::mem::replace(&mut self.carriage_return, CarriageReturn::None);
        if let Some(after_newline) = rest.strip_prefix(b"\n") {
            match carriage_return {
                CarriageReturn::None => {}
                CarriageReturn::EndedLine => rest = after_newline,
                CarriageReturn::OnEmptyLine => {
                    lines.push(self.take_line());
                    rest = after_newline;
                }
            }
        }
        while !rest.is_empty() {
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.append(rest, &mut lines);
                break;
            };
            self.append(&rest[..end], &mut lines);
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\n' {
                lines.push(self.take_line());
                continue;
            }
            let on_empty_line = self.buffer.is_empty() && !self.in_long_line;
            match (rest.first(), on_empty_line) {
                (Some(b'\n'), _) => {
                    lines.push(self.take_line());
                    rest = &rest[1..];
                }
                (Some(_), true) => {}
                (Some(_), false) => lines.push(self.take_line()),
                (None, true) => self.carriage_return = CarriageReturn::OnEmptyLine,
                (None, false) => {
                    lines.push(self.take_line());
                    self.carriage_return = CarriageReturn::EndedLine;
                }
            }
        }
        lines
    }

    /// Appends line content without terminators, sending a piece each time the buffer
    /// fills up.
    fn append(&mut self, mut content: &[u8], lines: &mut Vec<Line>) {
        while !content.is_empty() {
            let room = self.max_line_bytes - self.buffer.len();
            let taken = room.min(content.len());
            self.buffer.extend_from_slice(&content[..taken]);
            content = &content[taken..];
            if self.buffer.len() >= self.max_line_bytes {
                lines.push(self.take_piece());
            }
        }
    }

    /// Returns the unterminated last line, if any: called once the stream has ended.
    /// After a piece with nothing behind it, that is an empty line that ends the piece.
    pub fn finish(&mut self) -> Option<Line> {
        self.carriage_return = CarriageReturn::None;
        if self.buffer.is_empty() && !self.in_long_line {
            None
        } else {
            Some(self.take_line())
        }
    }

    /// Returns the buffer as a finished line and empties it. The buffer keeps its
    /// capacity, so the next line is read without growing it again.
    fn take_line(&mut self) -> Line {
        let text = String::from_utf8_lossy(&self.buffer).into_owned();
        self.buffer.clear();
        self.in_long_line = false;
        Line {
            text,
            continued: false,
        }
    }

    /// Cuts the full buffer at the last UTF-8 character boundary, so that a character
    /// split across pieces is not mangled, and keeps the rest for the next piece.
    fn take_piece(&mut self) -> Line {
        let cut = utf8_boundary(&self.buffer);
        let rest = self.buffer.split_off(cut);
        let piece = std::mem::replace(&mut self.buffer, rest);
        self.in_long_line = true;
        Line {
            text: String::from_utf8_lossy(&piece).into_owned(),
            continued: true,
        }
    }
}

/// Returns the length of the longest prefix of `bytes` that does not end inside a
/// multi-byte UTF-8 character. Invalid bytes count as single characters.
fn utf8_boundary(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // A character is at most 4 bytes, so only the last 3 can start an unfinished one.
    for back in 1..=3.min(len) {
        let byte = bytes[len - back];
        let is_continuation = byte & 0b1100_0000 == 0b1000_0000;
        if is_continuation {
            continue;
        }
        let char_len = match byte {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if char_len > back { len - back } else { len };
    }
    len
}

/// Receives the output of one step's container, sends it as [`Event::Log`] events and
/// keeps the last lines for the step's error message.
///
/// Sending waits while the event channel is full, so a slow observer slows the reading
/// of container output instead of growing a queue without bound.
pub struct OutputSink {
    step: String,
    events: mpsc::Sender<Event>,
    stdout: LineSplitter,
    stderr: LineSplitter,
    tail: VecDeque<String>,
}

impl OutputSink {
    pub fn new(step: impl Into<String>, events: mpsc::Sender<Event>) -> Self {
        OutputSink {
            step: step.into(),
            events,
            stdout: LineSplitter::default(),
            stderr: LineSplitter::default(),
            tail: VecDeque::with_capacity(TAIL_LINES),
        }
    }

    /// Returns a new sink for the same step and observer, for notices that a task sends
    /// after this sink's output has ended.
    pub fn for_same_step(&self) -> OutputSink {
        OutputSink::new(self.step.clone(), self.events.clone())
    }

    /// Adds a chunk of output from `stream`.
    pub async fn write(&mut self, stream: OutputStream, chunk: &[u8]) {
        let lines = self.splitter(stream).push(chunk);
        for line in lines {
            self.emit(stream, line).await;
        }
    }

    /// Sends the unterminated last lines of both streams; called when the output ends.
    pub async fn finish(&mut self) {
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            if let Some(line) = self.splitter(stream).finish() {
                self.emit(stream, line).await;
            }
        }
    }

    /// Returns the last lines of output, oldest first, each shortened to a readable length.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    fn splitter(&mut self, stream: OutputStream) -> &mut LineSplitter {
        match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        }
    }

    async fn emit(&mut self, stream: OutputStream, line: Line) {
        self.remember(&line.text);
        let event = Event::Log {
            step: self.step.clone(),
            stream,
            line: line.text,
            continued: line.continued,
        };
        // A closed channel means the observer is gone. The output is still read so
        // the container can finish and be cleaned up.
        let _ = self.events.send(event).await;
    }

    /// Keeps a readable copy of `text` in the tail: without terminal colour codes, and
    /// not at all when it is only the frame of a drawn box (as rich tracebacks print),
    /// so the tail's lines carry text.
    fn remember(&mut self, text: &str) {
        // Only the start of a line is kept, so only the start is stripped: a step
        // that prints long lines pays for 500 characters per line, not for all.
        let (plain, cut) = strip_ansi_escapes(text, TAIL_LINE_CHARS);
        if is_frame_only(&plain) && (!cut || is_frame_only(&strip_ansi_escapes(text, usize::MAX).0))
        {
            return;
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        let shortened = if cut { format!("{plain}...") } else { plain };
        self.tail.push_back(shortened);
    }
}

/// Removes terminal escape sequences: CSI sequences such as colours (`ESC [ ... letter`)
/// and other two-byte escapes. Returns at most `max_chars` characters of the result,
/// and whether more followed.
fn strip_ansi_escapes(text: &str, max_chars: usize) -> (String, bool) {
    let mut plain = String::with_capacity(text.len().min(max_chars));
    let mut count = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            if count == max_chars {
                return (plain, true);
            }
            plain.push(c);
            count += 1;
            continue;
        }
        if chars.next_if_eq(&'[').is_some() {
            // Parameters and intermediates run until a final byte in '@'..='~'.
            for next in chars.by_ref() {
                if ('@'..='~').contains(&next) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    (plain, false)
}

/// True for a line made only of whitespace and box-drawing characters.
fn is_frame_only(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_whitespace() || ('\u{2500}'..='\u{257f}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: Vec<Line>) -> Vec<String> {
        lines.into_iter().map(|l| l.text).collect()
    }

    #[test]
    fn splitter_joins_partial_lines_across_chunks() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"hel").is_empty());
        assert_eq!(texts(s.push(b"lo\nwor")), vec!["hello"]);
        assert_eq!(texts(s.push(b"ld\n")), vec!["world"]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn splitter_treats_crlf_as_one_line_end() {
        let mut s = LineSplitter::default();
        assert_eq!(texts(s.push(b"a\r")), vec!["a"]);
        assert_eq!(texts(s.push(b"\nb\r\n")), vec!["b"]);
    }

    #[test]
    fn splitter_keeps_every_progress_redraw() {
        let mut s = LineSplitter::default();
        let lines = texts(s.push(b" 10%\r 50%\r100%\n"));
        assert_eq!(lines, vec![" 10%", " 50%", "100%"]);
    }

    #[test]
    fn splitter_skips_carriage_return_on_empty_line() {
        let mut s = LineSplitter::default();
        assert_eq!(texts(s.push(b"\r  0%\r 50%\n\r")), vec!["  0%", " 50%"]);
        assert_eq!(texts(s.push(b"100%\n")), vec!["100%"]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn splitter_keeps_blank_crlf_line() {
        let mut s = LineSplitter::default();
        assert_eq!(texts(s.push(b"a\r\n\r")), vec!["a"]);
        assert_eq!(texts(s.push(b"\nb\r\n")), vec!["", "b"]);
    }

    #[test]
    fn splitter_ends_line_cut_at_piece_boundary() {
        let mut s = LineSplitter::with_max_line_bytes(8);
        let lines = s.push(b"01234567");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].continued);
        let last = s.finish().expect("the cut line must be ended");
        assert_eq!(last.text, "");
        assert!(!last.continued);
    }

    #[test]
    fn splitter_keeps_empty_lines() {
        let mut s = LineSplitter::default();
        assert_eq!(texts(s.push(b"a\n\nb\n")), vec!["a", "", "b"]);
    }

    #[test]
    fn splitter_flushes_unterminated_last_line() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"no newline").is_empty());
        assert_eq!(s.finish().unwrap().text, "no newline");
    }

    #[test]
    fn splitter_cuts_long_line_without_loss() {
        let mut s = LineSplitter::with_max_line_bytes(8);
        let mut lines = s.push(b"0123456789abcdefXYZ\n");
        assert_eq!(lines.len(), 3);
        assert!(lines[0].continued);
        assert!(lines[1].continued);
        assert!(!lines[2].continued);
        let whole: String = lines.drain(..).map(|l| l.text).collect();
        assert_eq!(whole, "0123456789abcdefXYZ");
    }

    #[test]
    fn splitter_never_splits_a_character() {
        let mut s = LineSplitter::with_max_line_bytes(4);
        // "aé€" is 1 + 2 + 3 bytes; no piece may end inside the 3-byte euro sign.
        let lines = s.push("aé€b\n".as_bytes());
        let whole: String = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(whole, "aé€b");
        assert!(lines.iter().all(|l| !l.text.contains('\u{fffd}')));
    }

    #[test]
    fn splitter_memory_stays_bounded() {
        let mut s = LineSplitter::with_max_line_bytes(1024);
        let chunk = vec![b'x'; 4096];
        let mut total = 0;
        for _ in 0..100 {
            total += s.push(&chunk).iter().map(|l| l.text.len()).sum::<usize>();
            assert!(s.buffer.len() < 1024);
        }
        total += s.finish().map_or(0, |l| l.text.len());
        assert_eq!(total, 409_600);
    }

    /// Splits `input` one byte at a time, by the rules of the module documentation.
    fn split_bytewise(input: &[u8], max_line_bytes: usize) -> Vec<(Vec<u8>, bool)> {
        let mut lines = Vec::new();
        let mut line = Vec::new();
        let mut in_long_line = false;
        // Some(true): the last byte was a `\r` on an empty line; Some(false): it was a
        // `\r` that ended a line.
        let mut carriage_return: Option<bool> = None;
        for &byte in input {
            let after = carriage_return.take();
            match byte {
                b'\n' if after == Some(false) => {}
                b'\n' => {
                    lines.push((std::mem::take(&mut line), false));
                    in_long_line = false;
                }
                b'\r' if line.is_empty() && !in_long_line => carriage_return = Some(true),
                b'\r' => {
                    lines.push((std::mem::take(&mut line), false));
                    in_long_line = false;
                    carriage_return = Some(false);
                }
                _ => {
                    line.push(byte);
                    if line.len() == max_line_bytes {
                        lines.push((std::mem::take(&mut line), true));
                        in_long_line = true;
                    }
                }
            }
        }
        if !line.is_empty() || in_long_line {
            lines.push((line, false));
        }
        lines
    }

    #[test]
    fn splitter_matches_bytewise_split_at_every_chunk_boundary() {
        let input = b"\rab\r\ncd\r\r\n\nefghijklmnop\rq\n\r\r\nrstuvwxyz0123456789\r\n\r01234567";
        let expected = split_bytewise(input, 8);
        for cut in 0..=input.len() {
            let mut s = LineSplitter::with_max_line_bytes(8);
            let mut lines = s.push(&input[..cut]);
            lines.extend(s.push(&input[cut..]));
            lines.extend(s.finish());
            let lines: Vec<(Vec<u8>, bool)> = lines
                .into_iter()
                .map(|l| (l.text.into_bytes(), l.continued))
                .collect();
            assert_eq!(lines, expected, "chunks cut at byte {cut}");
        }
    }

    #[test]
    fn splitter_replaces_invalid_utf8() {
        let mut s = LineSplitter::default();
        assert_eq!(texts(s.push(b"a\xffb\n")), vec!["a\u{fffd}b"]);
    }

    #[test]
    fn ansi_escapes_are_stripped() {
        let strip = |text| strip_ansi_escapes(text, usize::MAX).0;
        assert_eq!(strip("\u{1b}[37mStep\u{1b}[0m done"), "Step done");
        assert_eq!(strip("\u{1b}[38;5;105mx\u{1b}[0m"), "x");
        assert_eq!(strip("plain"), "plain");
    }

    #[test]
    fn ansi_strip_stops_at_max_chars() {
        assert_eq!(
            strip_ansi_escapes("\u{1b}[31mabc\u{1b}[0m", 3),
            ("abc".to_string(), false)
        );
        assert_eq!(
            strip_ansi_escapes("\u{1b}[31mabcd\u{1b}[0m", 3),
            ("abc".to_string(), true)
        );
    }

    #[tokio::test]
    async fn tail_skips_frames_and_colours() {
        let (tx, _rx) = mpsc::channel(100);
        let mut sink = OutputSink::new("s", tx);
        sink.write(
            OutputStream::Stderr,
            "\u{1b}[31mValueError: bad\u{1b}[0m\n".as_bytes(),
        )
        .await;
        sink.write(OutputStream::Stderr, "╰──────────╯\n".as_bytes())
            .await;
        sink.write(OutputStream::Stderr, "   \n".as_bytes()).await;
        assert_eq!(sink.tail(), vec!["ValueError: bad"]);
    }

    #[tokio::test]
    async fn tail_shortens_long_lines() {
        let (tx, _rx) = mpsc::channel(100);
        let mut sink = OutputSink::new("s", tx);
        let long = "x".repeat(TAIL_LINE_CHARS + 1);
        sink.write(OutputStream::Stdout, format!("{long}\n").as_bytes())
            .await;
        let frame_then_text = format!("{}text\n", "─".repeat(TAIL_LINE_CHARS));
        sink.write(OutputStream::Stdout, frame_then_text.as_bytes())
            .await;
        let tail = sink.tail();
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[0], format!("{}...", "x".repeat(TAIL_LINE_CHARS)));
        assert_eq!(tail[1], format!("{}...", "─".repeat(TAIL_LINE_CHARS)));
    }

    #[tokio::test]
    async fn sink_keeps_last_lines_as_tail() {
        let (tx, mut rx) = mpsc::channel(1000);
        let mut sink = OutputSink::new("train", tx);
        for i in 0..30 {
            sink.write(OutputStream::Stdout, format!("line {i}\n").as_bytes())
                .await;
        }
        sink.write(OutputStream::Stderr, b"last words").await;
        sink.finish().await;
        let tail = sink.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().unwrap(), "last words");
        assert_eq!(tail.first().unwrap(), "line 11");
        drop(sink);
        let mut count = 0;
        while rx.recv().await.is_some() {
            count += 1;
        }
        assert_eq!(count, 31);
    }
}
