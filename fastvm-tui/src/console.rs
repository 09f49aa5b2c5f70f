//! The inline console's state: a vt100 screen fed by the VM's serial bytes,
//! and the encoding of key presses into the bytes a terminal would send.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// The key that leaves the console (shown in the pane's title).
pub const ESCAPE_KEY_LABEL: &str = "Ctrl-]";

/// Smallest console screen (rows, columns), whatever the pane's size.
pub const MIN_SCREEN: (u16, u16) = (4, 8);

/// Scrollback lines kept by the console screen.
const SCROLLBACK: usize = 1000;

/// Whether `key` is the console's escape key (Ctrl-]).
pub fn is_escape(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL)
        && matches!(key.code, KeyCode::Char(']') | KeyCode::Char('5'))
}

/// An open console.
pub struct ConsolePane {
    /// The VM's id.
    pub vm_id: String,
    /// The VM's name, for the title.
    pub vm_name: String,
    /// The terminal emulator the serial bytes go through.
    pub parser: vt100::Parser,
    /// The daemon accepted the attach.
    pub attached: bool,
    /// The last byte fed ended in `\r` (so a following `\n` is not doubled).
    after_cr: bool,
}

impl ConsolePane {
    /// A pane for the VM, not attached yet.
    pub fn new(vm_id: impl Into<String>, vm_name: impl Into<String>) -> ConsolePane {
        ConsolePane {
            vm_id: vm_id.into(),
            vm_name: vm_name.into(),
            parser: vt100::Parser::new(24, 80, SCROLLBACK),
            attached: false,
            after_cr: false,
        }
    }

    /// Feeds console output to the screen. A bare `\n` also returns the
    /// cursor to the line start, as a terminal with `onlcr` would show it
    /// (serial consoles often send bare line feeds).
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut out = Vec::with_capacity(bytes.len() + 16);
        for &b in bytes {
            if b == b'\n' && !self.after_cr {
                out.push(b'\r');
            }
            out.push(b);
            self.after_cr = b == b'\r';
        }
        self.parser.process(&out);
    }

    /// Fits the screen to a pane of `rows` x `cols` cells. The screen keeps
    /// at least [`MIN_SCREEN`] (vt100 panics when a one-row screen wraps); a
    /// smaller pane shows its top-left corner.
    pub fn resize(&mut self, rows: u16, cols: u16) {
        let (rows, cols) = (rows.max(MIN_SCREEN.0), cols.max(MIN_SCREEN.1));
        if self.parser.screen().size() != (rows, cols) {
            self.parser.screen_mut().set_size(rows, cols);
        }
    }

    /// The screen's text, for tests and searches.
    pub fn text(&self) -> String {
        self.parser.screen().contents()
    }
}

/// The bytes a terminal sends for `key`; empty for keys with no encoding.
pub fn key_bytes(key: &KeyEvent) -> Vec<u8> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    let mut out = Vec::new();
    if alt {
        out.push(0x1b);
    }
    match key.code {
        KeyCode::Char(c) if ctrl => match c.to_ascii_lowercase() {
            c @ 'a'..='z' => out.push(c as u8 - b'a' + 1),
            '@' | ' ' | '2' => out.push(0),
            '[' | '3' => out.push(0x1b),
            '\\' | '4' => out.push(0x1c),
            ']' | '5' => out.push(0x1d),
            '^' | '6' => out.push(0x1e),
            '_' | '7' | '/' => out.push(0x1f),
            _ => {}
        },
        KeyCode::Char(c) => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        KeyCode::Enter => out.push(b'\r'),
        KeyCode::Tab => out.push(b'\t'),
        KeyCode::BackTab => out.extend_from_slice(b"\x1b[Z"),
        KeyCode::Backspace => out.push(0x7f),
        KeyCode::Esc => out.push(0x1b),
        KeyCode::Up => out.extend_from_slice(b"\x1b[A"),
        KeyCode::Down => out.extend_from_slice(b"\x1b[B"),
        KeyCode::Right => out.extend_from_slice(b"\x1b[C"),
        KeyCode::Left => out.extend_from_slice(b"\x1b[D"),
        KeyCode::Home => out.extend_from_slice(b"\x1b[H"),
        KeyCode::End => out.extend_from_slice(b"\x1b[F"),
        KeyCode::Insert => out.extend_from_slice(b"\x1b[2~"),
        KeyCode::Delete => out.extend_from_slice(b"\x1b[3~"),
        KeyCode::PageUp => out.extend_from_slice(b"\x1b[5~"),
        KeyCode::PageDown => out.extend_from_slice(b"\x1b[6~"),
        _ => {}
    }
    if alt && out.len() == 1 {
        out.clear();
    }
    out
}
