//! The exec pane's output: stdout and stderr bytes as they arrive, split into
//! lines, kept within [`MAX_LINES`] and [`MAX_BYTES`] (the oldest lines are
//! dropped and counted).

use std::collections::VecDeque;

/// Most lines kept.
pub const MAX_LINES: usize = 10_000;

/// Most bytes of text kept.
pub const MAX_BYTES: usize = 1 << 20;

/// Longest unfinished line kept before it is cut into a line of its own.
pub const MAX_LINE: usize = 64 << 10;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Where it came from.
    pub stream: Stream,
    /// Its text, without the line end.
    pub text: String,
}

/// The bounded output of one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    lines: VecDeque<OutputLine>,
    /// Bytes of text in `lines`.
    bytes: usize,
    /// Lines dropped to stay within the bounds.
    dropped: usize,
    /// Bytes after the last line end, per stream.
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
}

impl ExecOutput {
    /// Adds bytes read from `stream`.
    pub fn push(&mut self, stream: Stream, bytes: &[u8]) {
        for &b in bytes {
            let partial = self.partial_mut(stream);
            if b == b'\n' {
                let line = std::mem::take(partial);
                self.finish_line(stream, &line);
                continue;
            }
            partial.push(b);
            if partial.len() >= MAX_LINE {
                let line = std::mem::take(partial);
                self.finish_line(stream, &line);
            }
        }
    }

    /// Ends unfinished lines (the command has ended).
    pub fn flush(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(self.partial_mut(stream));
            if !line.is_empty() {
                self.finish_line(stream, &line);
            }
        }
    }

    /// Lines dropped so far to stay within the bounds.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Every line kept, then the unfinished ones (stdout's, stderr's).
    pub fn lines(&self) -> impl Iterator<Item = OutputLine> + '_ {
        let partial = [
            (Stream::Stdout, &self.partial_stdout),
            (Stream::Stderr, &self.partial_stderr),
        ]
        .into_iter()
        .filter(|(_, bytes)| !bytes.is_empty())
        .map(|(stream, bytes)| OutputLine {
            stream,
            text: line_text(bytes),
        });
        self.lines.iter().cloned().chain(partial)
    }

    /// All the text kept, lines joined by `\n` (for tests and searches).
    pub fn text(&self) -> String {
        self.lines().map(|l| l.text + "\n").collect()
    }

    fn partial_mut(&mut self, stream: Stream) -> &mut Vec<u8> {
        match stream {
            Stream::Stdout => &mut self.partial_stdout,
            Stream::Stderr => &mut self.partial_stderr,
        }
    }

    fn finish_line(&mut self, stream: Stream, bytes: &[u8]) {
        let text = line_text(bytes);
        self.bytes += text.len();
        self.lines.push_back(OutputLine { stream, text });
        while self.lines.len() > MAX_LINES || self.bytes > MAX_BYTES {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.text.len();
            self.dropped += 1;
        }
    }
}

/// A line's bytes as text: invalid UTF-8 replaced, a trailing `\r` removed.
fn line_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_pieces_and_streams_keep_their_order() {
        let mut out = ExecOutput::default();
        out.push(Stream::Stdout, b"tick 1\nti");
        out.push(Stream::Stderr, b"oops\r\n");
        out.push(Stream::Stdout, b"ck 2\npart");
        let lines: Vec<_> = out.lines().map(|l| (l.stream, l.text)).collect();
        assert_eq!(
            lines,
            [
                (Stream::Stdout, "tick 1".to_string()),
                (Stream::Stderr, "oops".to_string()),
                (Stream::Stdout, "tick 2".to_string()),
                (Stream::Stdout, "part".to_string()),
            ]
        );
        out.flush();
        assert_eq!(out.text(), "tick 1\noops\ntick 2\npart\n");
    }

    #[test]
    fn the_oldest_lines_are_dropped_beyond_the_line_bound() {
        let mut out = ExecOutput::default();
        for i in 0..MAX_LINES + 5 {
            out.push(Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        assert_eq!(out.dropped(), 5);
        assert_eq!(out.lines().count(), MAX_LINES);
        assert_eq!(out.lines().next().unwrap().text, "line 5");
    }

    #[test]
    fn the_oldest_lines_are_dropped_beyond_the_byte_bound() {
        let mut out = ExecOutput::default();
        let long = vec![b'x'; 1000];
        for _ in 0..2000 {
            out.push(Stream::Stdout, &long);
            out.push(Stream::Stdout, b"\n");
        }
        assert!(out.bytes <= MAX_BYTES);
        assert_eq!(out.dropped(), 2000 - MAX_BYTES / 1000);
    }

    #[test]
    fn a_line_without_an_end_is_cut_at_the_line_bound() {
        let mut out = ExecOutput::default();
        out.push(Stream::Stderr, &vec![b'y'; MAX_LINE + 3]);
        let lines: Vec<_> = out.lines().map(|l| l.text.len()).collect();
        assert_eq!(lines, [MAX_LINE, 3]);
    }
}
