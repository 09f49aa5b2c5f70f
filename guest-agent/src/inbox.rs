//! The host's frames as they arrive on a connection, in order, with a
//! bounded look-ahead for when the reader is stalled: while one stream's
//! input queue is full (a command that does not read its stdin), the frames
//! already on their way are read, the ones that must not wait behind it (a
//! `Signal`, a `Ping`) act at once, and the rest are kept, in order, up to
//! [`LOOKAHEAD_BYTES`]. Past that the reader simply waits: backpressure.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};

use fastvm_proto::agent::{Decoder, Frame, FrameError};

/// Bytes of frames read ahead (decoded or not) while the reader is stalled.
pub const LOOKAHEAD_BYTES: usize = 1 << 20;
/// What a JSON frame counts for against [`LOOKAHEAD_BYTES`].
const JSON_FRAME_COST: usize = 256;

/// What came next from the host.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// The stream of frames is out of step.
    Bad(FrameError),
    /// The host closed the connection.
    Closed,
}

/// Frames from one connection.
pub struct Inbox<S> {
    stream: S,
    decoder: Decoder,
    buf: Vec<u8>,
    ahead: VecDeque<Result<Frame, FrameError>>,
    ahead_bytes: usize,
    closed: bool,
    /// A bad frame was read ahead: nothing after it is decoded.
    broken: bool,
}

fn cost(item: &Result<Frame, FrameError>) -> usize {
    match item {
        Ok(Frame::Data(data)) => data.bytes.len() + JSON_FRAME_COST,
        _ => JSON_FRAME_COST,
    }
}

impl<S: Read + AsFd> Inbox<S> {
    pub fn new(stream: S) -> Inbox<S> {
        Inbox {
            stream,
            decoder: Decoder::new(),
            buf: vec![0u8; 64 * 1024],
            ahead: VecDeque::new(),
            ahead_bytes: 0,
            closed: false,
            broken: false,
        }
    }

    /// The connection the frames come from.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Whether the host has closed the connection (frames read ahead may
    /// still be waiting).
    pub fn host_closed(&self) -> bool {
        self.closed
    }

    /// The next frame, waiting for it to arrive.
    pub fn next_frame(&mut self) -> io::Result<Next> {
        if let Some(item) = self.ahead.pop_front() {
            self.ahead_bytes -= cost(&item);
            return Ok(match item {
                Ok(frame) => Next::Frame(frame),
                Err(e) => Next::Bad(e),
            });
        }
        if self.broken {
            return Ok(Next::Closed);
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return Ok(Next::Frame(frame)),
                Ok(None) => {}
                Err(e) => return Ok(Next::Bad(e)),
            }
            if self.closed {
                return Ok(Next::Closed);
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self.decoder.push(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what has already arrived, without waiting: `act_now` is offered
    /// each frame and returns `true` when it acted on it; the others are
    /// kept for [`Inbox::next_frame`]. Once the look-ahead is full only a hang-up
    /// is still noticed.
    pub fn read_ahead(
        &mut self,
        act_now: &mut dyn FnMut(&Frame) -> io::Result<bool>,
    ) -> io::Result<()> {
        loop {
            self.decode_ahead(act_now)?;
            if self.closed || self.broken {
                return Ok(());
            }
            let full = self.ahead_bytes + self.decoder.pending() >= LOOKAHEAD_BYTES;
            let events = if full {
                libc::POLLRDHUP
            } else {
                libc::POLLIN | libc::POLLRDHUP
            };
            let mut pfd = libc::pollfd {
                fd: self.stream.as_fd().as_raw_fd(),
                events,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd; a zero timeout never blocks.
            let n = unsafe { libc::poll(&mut pfd, 1, 0) };
            if n <= 0 {
                return Ok(());
            }
            let hung_up = pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0;
            if full {
                // The host is gone: what it sent last no longer matters.
                self.closed |= hung_up;
                return Ok(());
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self.decoder.push(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn decode_ahead(
        &mut self,
        act_now: &mut dyn FnMut(&Frame) -> io::Result<bool>,
    ) -> io::Result<()> {
        while !self.broken && self.ahead_bytes < LOOKAHEAD_BYTES {
            let item = match self.decoder.next_frame() {
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => {
                    if act_now(&frame)? {
                        continue;
                    }
                    Ok(frame)
                }
                Err(e) => {
                    self.broken = true;
                    Err(e)
                }
            };
            self.ahead_bytes += cost(&item);
            self.ahead.push_back(item);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastvm_proto::agent::{Data, encode};
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn urgent_frames_jump_ahead_and_the_rest_keep_their_order() {
        let (mut host, agent) = UnixStream::pair().unwrap();
        let mut inbox = Inbox::new(agent);
        let data = Frame::Data(Data {
            id: 1,
            channel: 0,
            bytes: vec![7; 1000],
        });
        for frame in [
            data.clone(),
            Frame::Signal { id: 1, signal: 2 },
            Frame::StreamEnd { id: 1, channel: 0 },
        ] {
            host.write_all(&encode(&frame).unwrap()).unwrap();
        }
        let mut acted = Vec::new();
        inbox
            .read_ahead(&mut |frame| {
                let urgent = matches!(frame, Frame::Signal { .. });
                if urgent {
                    acted.push(frame.clone());
                }
                Ok(urgent)
            })
            .unwrap();
        assert_eq!(acted, [Frame::Signal { id: 1, signal: 2 }]);
        assert!(matches!(inbox.next_frame().unwrap(), Next::Frame(f) if f == data));
        assert!(matches!(
            inbox.next_frame().unwrap(),
            Next::Frame(Frame::StreamEnd { id: 1, channel: 0 })
        ));
        drop(host);
        assert!(matches!(inbox.next_frame().unwrap(), Next::Closed));
        assert!(inbox.host_closed());
    }
}
