//! The clients of the service loop: control clients (a JSON request per
//! line, answered in order) and console clients (their input goes to the
//! UART; output reaches them through the [`crate::console::ConsoleHub`]).
//! Reads never block the loop; a line or a reply that cannot move ends the
//! client, not the loop.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::{ConsolePart, MAX_CONTROL_CLIENTS};
use crate::bus::lock;
use crate::control::server::{MAX_LINE, handle_line};
use crate::control::{ControlTarget, Response};

/// What the loop does with a client after serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Go on as it is.
    Keep,
    /// Stop watching its input (the UART is full).
    Pause,
    /// Watch its input again.
    Listen,
    /// It is gone, or must go.
    Close,
}

/// What a control client past [`MAX_CONTROL_CLIENTS`] reads.
const TOO_MANY: &str = "control socket: too many clients";

pub enum Client {
    Control(ControlClient),
    Console(ConsoleClient),
}

impl Client {
    pub fn fd(&self) -> i32 {
        match self {
            Client::Control(c) => c.stream.as_raw_fd(),
            Client::Console(c) => c.reader.as_raw_fd(),
        }
    }

    /// Console input waits for room in the UART.
    pub fn has_pending_input(&self) -> bool {
        matches!(self, Client::Console(c) if c.has_pending())
    }

    /// The client is dropped: the console forgets it.
    pub fn gone(self) {
        if let Client::Console(c) = self {
            c.hub.detach(c.id);
        }
    }
}

/// A control connection with the part of a line read so far.
pub struct ControlClient {
    stream: UnixStream,
    line: Vec<u8>,
}

impl ControlClient {
    /// A client on `stream`; when there is no room (`room` false) it is
    /// told so and closed (`Ok(None)`).
    pub fn new(mut stream: UnixStream, room: bool) -> io::Result<Option<ControlClient>> {
        if !room {
            let refusal = Response::error(format!(
                "{TOO_MANY} (at most {MAX_CONTROL_CLIENTS}); try again later"
            ));
            let mut out = serde_json::to_vec(&refusal).map_err(io::Error::other)?;
            out.push(b'\n');
            let _ = stream.write_all(&out);
            return Ok(None);
        }
        stream.set_nonblocking(true)?;
        Ok(Some(ControlClient {
            stream,
            line: Vec::new(),
        }))
    }

    /// Reads what arrived and answers every whole line.
    pub fn serve(&mut self, target: &dyn ControlTarget) -> Step {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Step::Close,
                Ok(n) => {
                    self.line.extend_from_slice(&buf[..n]);
                    if let Some(step) = self.answer_lines(target) {
                        return step;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Step::Close,
            }
        }
    }

    /// Answers the whole lines read; `Some` when the client must go.
    fn answer_lines(&mut self, target: &dyn ControlTarget) -> Option<Step> {
        while let Some(end) = self.line.iter().position(|b| *b == b'\n') {
            if end > MAX_LINE {
                break;
            }
            let line: Vec<u8> = self.line.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let (response, stop) = handle_line(target, text);
            let sent = self.reply(&response);
            if stop {
                target.stop();
            }
            if !sent {
                return Some(Step::Close);
            }
        }
        if self.line.len() > MAX_LINE {
            self.reply(&Response::error(format!(
                "request longer than {MAX_LINE} bytes"
            )));
            return Some(Step::Close);
        }
        None
    }

    /// Sends one answer line; false when it cannot be sent whole (a client
    /// that does not read its answers is dropped).
    fn reply(&mut self, response: &Response) -> bool {
        let Ok(mut out) = serde_json::to_vec(response) else {
            return false;
        };
        out.push(b'\n');
        let mut rest = &out[..];
        let mut spins = 0;
        while !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && spins < 100 => {
                    spins += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        true
    }
}

/// A console connection: its reading side, and input the UART has not
/// taken yet.
pub struct ConsoleClient {
    reader: UnixStream,
    id: u64,
    hub: std::sync::Arc<crate::console::ConsoleHub>,
    pending: Vec<u8>,
}

impl ConsoleClient {
    /// Replays the recent output to `stream` and adds it to the hub;
    /// `Ok(None)` when the console has no room for it (it was told so).
    pub fn attach(stream: UnixStream, console: &ConsolePart) -> io::Result<Option<ConsoleClient>> {
        let reader = stream.try_clone()?;
        Ok(console.hub.attach(stream)?.map(|id| ConsoleClient {
            reader,
            id,
            hub: console.hub.clone(),
            pending: Vec::new(),
        }))
    }

    /// Reads what the client typed (without blocking: the stream the hub
    /// writes to stays blocking, with its write timeout) into the UART.
    pub fn read_input(&mut self, console: &ConsolePart) -> Step {
        let mut buf = [0u8; 1024];
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::recv(
                self.reader.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => Step::Close,
            n if n < 0 => match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Step::Keep,
                _ => Step::Close,
            },
            n => {
                self.pending.extend_from_slice(&buf[..n as usize]);
                self.offer_pending(console);
                if self.pending.is_empty() {
                    Step::Keep
                } else {
                    Step::Pause
                }
            }
        }
    }

    /// Input read and not yet taken by the UART.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Moves waiting input into the UART FIFO, as much as it takes.
    pub fn offer_pending(&mut self, console: &ConsolePart) -> Step {
        if self.pending.is_empty() {
            return Step::Keep;
        }
        let taken = lock(&console.serial).push_input(&self.pending);
        console.wakeup.ring();
        self.pending.drain(..taken);
        if self.pending.is_empty() {
            Step::Listen
        } else {
            Step::Keep
        }
    }
}
