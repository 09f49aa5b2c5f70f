//! `sh`: a pty-less line-echo "shell" for terminal tests. It echoes its
//! input as a terminal in canonical mode would (a line end as `\r\n`,
//! erase as `\b \b`) and answers each whole line: `exit [N]` ends it,
//! `size` prints the window's `ROWS COLS`, an empty line gives a new
//! prompt and anything else is said back.

use alloc::format;
use alloc::vec::Vec;

use fastvm_proto::agent::WindowSize;

/// What the shell prints before each line.
pub const PROMPT: &[u8] = b"$ ";
/// Longest line kept (as Linux's terminal line buffer); bytes past it are dropped.
pub const MAX_LINE: usize = 4095;

/// The shell's state: the line being typed and the window's size.
#[derive(Debug, Clone, Default)]
pub struct Shell {
    line: Vec<u8>,
    size: Option<WindowSize>,
}

impl Shell {
    /// A shell on a terminal of `size` (none without a tty); its first
    /// output (the prompt) goes to `out`.
    pub fn start(size: Option<WindowSize>, out: &mut Vec<u8>) -> Self {
        out.extend_from_slice(PROMPT);
        Shell {
            line: Vec::new(),
            size,
        }
    }

    /// The terminal has a new size.
    pub fn resize(&mut self, size: WindowSize) {
        self.size = Some(size);
    }

    /// Takes typed bytes, echoing and answering into `out`; the exit code
    /// once the shell ends.
    pub fn input(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Option<i32> {
        for &b in bytes {
            match b {
                b'\r' | b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    let line = core::mem::take(&mut self.line);
                    if let Some(code) = self.answer(&line, out) {
                        return Some(code);
                    }
                    out.extend_from_slice(PROMPT);
                }
                0x7f | 0x08 => {
                    if self.line.pop().is_some() {
                        out.extend_from_slice(b"\x08 \x08");
                    }
                }
                // Ctrl-C: the line is dropped and a new prompt given, as bash does.
                0x03 => {
                    self.line.clear();
                    out.extend_from_slice(b"^C\r\n");
                    out.extend_from_slice(PROMPT);
                }
                // Ctrl-D on an empty line: end of input.
                0x04 if self.line.is_empty() => return Some(0),
                0x04 => {}
                _ if self.line.len() >= MAX_LINE => {}
                _ => {
                    self.line.push(b);
                    out.push(b);
                }
            }
        }
        None
    }

    /// Answers one whole line; the exit code when it ends the shell.
    fn answer(&self, line: &[u8], out: &mut Vec<u8>) -> Option<i32> {
        let text = core::str::from_utf8(line).unwrap_or("").trim();
        let mut words = text.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (None, _, _) if line.iter().all(u8::is_ascii_whitespace) => None,
            (Some("exit"), None, _) => Some(0),
            (Some("exit"), Some(code), None) => match code.parse::<i32>() {
                Ok(code) => Some(code),
                Err(_) => {
                    out.extend_from_slice(b"sh: exit: numeric argument required\r\n");
                    Some(2)
                }
            },
            (Some("size"), None, _) => {
                let size = self.size.unwrap_or(WindowSize { cols: 0, rows: 0 });
                out.extend_from_slice(format!("{} {}\r\n", size.rows, size.cols).as_bytes());
                None
            }
            _ => {
                out.extend_from_slice(b"you said: ");
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn typed(shell: &mut Shell, input: &[u8]) -> (std::string::String, Option<i32>) {
        let mut out = Vec::new();
        let code = shell.input(input, &mut out);
        (std::string::String::from_utf8(out).unwrap(), code)
    }

    #[test]
    fn echoes_answers_and_exits() {
        let mut out = Vec::new();
        let mut sh = Shell::start(None, &mut out);
        assert_eq!(out, b"$ ");
        assert_eq!(typed(&mut sh, b"hel"), ("hel".into(), None));
        assert_eq!(
            typed(&mut sh, b"lo\r"),
            ("lo\r\nyou said: hello\r\n$ ".into(), None)
        );
        assert_eq!(
            typed(&mut sh, b"size\n"),
            ("size\r\n0 0\r\n$ ".into(), None)
        );
        assert_eq!(typed(&mut sh, b"\r"), ("\r\n$ ".into(), None));
        assert_eq!(typed(&mut sh, b"exit\rmore"), ("exit\r\n".into(), Some(0)));
    }

    #[test]
    fn size_follows_the_window() {
        let mut out = Vec::new();
        let mut sh = Shell::start(Some(WindowSize { cols: 80, rows: 24 }), &mut out);
        assert_eq!(typed(&mut sh, b"size\r").0, "size\r\n24 80\r\n$ ");
        sh.resize(WindowSize {
            cols: 132,
            rows: 50,
        });
        assert_eq!(typed(&mut sh, b" size \r").0, " size \r\n50 132\r\n$ ");
    }

    #[test]
    fn control_keys_and_exit_codes() {
        let mut out = Vec::new();
        let mut sh = Shell::start(None, &mut out);
        assert_eq!(typed(&mut sh, b"ab\x7f").0, "ab\x08 \x08");
        assert_eq!(typed(&mut sh, b"\x7f\x7f").0, "\x08 \x08");
        assert_eq!(typed(&mut sh, b"x\x03").0, "x^C\r\n$ ");
        assert_eq!(typed(&mut sh, b"q\x04\x7f").1, None);
        assert_eq!(typed(&mut sh, b"\x04").1, Some(0));
        let mut sh = Shell::start(None, &mut out);
        assert_eq!(typed(&mut sh, b"exit 3\n").1, Some(3));
        let mut sh = Shell::start(None, &mut out);
        assert_eq!(typed(&mut sh, b"exit x\n").1, Some(2));
    }

    #[test]
    fn long_lines_are_cut() {
        let mut out = Vec::new();
        let mut sh = Shell::start(None, &mut out);
        let (echo, _) = typed(&mut sh, &vec![b'a'; MAX_LINE + 10]);
        assert_eq!(echo.len(), MAX_LINE);
    }
}
