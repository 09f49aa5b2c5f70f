//! The streams open on one connection (see `fastvm_proto::agent_stream`):
//! execs, file writes and reads, forwards, each under the id the host gave
//! it. The registry routes the host's frames to them, refuses a duplicate
//! id or one stream past [`MAX_STREAMS`], and stops them all when the host
//! hangs up. A stream leaves the registry just before its last frame goes
//! out, so the host may reuse its id as soon as it has seen that frame.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use fastvm_proto::agent::{Data, Frame, StreamError, StreamErrorKind, WindowSize};

use crate::session::{Writer, send};
use crate::stream_input::InputQueue;

/// Streams one connection may have open at once; past it `StreamError`
/// `busy`.
pub const MAX_STREAMS: usize = 64;

/// One open stream, as the connection's reader steers it.
pub trait Stream: Send + Sync {
    /// Where the host's bytes for it go (channel 0); `None` when it takes none.
    fn input(&self) -> Option<&InputQueue> {
        None
    }
    /// The host's end of input (`StreamEnd` on channel 0); `true` when the
    /// stream is over with it.
    fn end_input(&self) -> bool {
        if let Some(input) = self.input() {
            input.end();
        }
        false
    }
    /// The host's `Signal`; `Err` says why it could not be sent.
    fn signal(&self, _signal: i32) -> Result<(), String> {
        Ok(())
    }
    /// The host's `Resize`.
    fn resize(&self, _size: WindowSize) {}
    /// The host closed the connection: stop whatever the stream started.
    fn hang_up(&self);
}

/// The registry of one connection's open streams.
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<u64, Arc<dyn Stream>>>,
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<dyn Stream>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a stream `id` may open now (checked again by
    /// [`Streams::insert`]; only the connection's reader opens streams).
    pub fn check_room(&self, id: u64) -> Result<(), StreamError> {
        let open = self.lock();
        if open.contains_key(&id) {
            return Err(stream_error(
                id,
                StreamErrorKind::Invalid,
                format!("stream {id} is already open on this connection"),
            ));
        }
        if open.len() >= MAX_STREAMS {
            return Err(stream_error(
                id,
                StreamErrorKind::Busy,
                format!("{MAX_STREAMS} streams are already open on this connection"),
            ));
        }
        Ok(())
    }

    /// Opens stream `id`.
    pub fn insert(&self, id: u64, stream: Arc<dyn Stream>) -> Result<(), StreamError> {
        self.check_room(id)?;
        self.lock().insert(id, stream);
        Ok(())
    }

    pub fn get(&self, id: u64) -> Option<Arc<dyn Stream>> {
        self.lock().get(&id).cloned()
    }

    /// Closes stream `id`: its id is free again, and its input refused
    /// unless the host has ended it (what the host sent is still consumed).
    pub fn remove(&self, id: u64) {
        let removed = self.lock().remove(&id);
        if let Some(input) = removed.as_ref().and_then(|s| s.input()) {
            input.close_unless_ended();
        }
    }

    /// The host hung up: every stream stops.
    pub fn hang_up_all(&self) {
        let all: Vec<_> = self.lock().drain().map(|(_, s)| s).collect();
        for stream in all {
            stream.hang_up();
            if let Some(input) = stream.input() {
                input.close();
            }
        }
    }
}

/// What a stream's threads need of their connection: its writer and its
/// registry.
#[derive(Clone)]
pub struct StreamCtx {
    pub writer: Writer,
    pub streams: Arc<Streams>,
}

impl StreamCtx {
    pub fn new(writer: Writer) -> StreamCtx {
        StreamCtx {
            writer,
            streams: Arc::new(Streams::default()),
        }
    }

    /// Sends one whole frame.
    pub fn send(&self, frame: &Frame) -> io::Result<()> {
        send(&self.writer, frame)
    }

    /// Sends `bytes` of stream `id` on `channel` as one data frame.
    pub fn data(&self, id: u64, channel: u8, bytes: &[u8]) -> io::Result<()> {
        self.send(&Frame::Data(Data {
            id,
            channel,
            bytes: bytes.to_vec(),
        }))
    }

    /// Ends stream `id` with its `last` frame.
    pub fn finish(&self, id: u64, last: &Frame) -> io::Result<()> {
        self.streams.remove(id);
        self.send(last)
    }

    /// Ends stream `id` in failure.
    pub fn fail(&self, id: u64, kind: StreamErrorKind, message: String) -> io::Result<()> {
        self.finish(id, &Frame::StreamError(stream_error(id, kind, message)))
    }
}

/// A [`StreamError`] of stream `id`.
pub fn stream_error(id: u64, kind: StreamErrorKind, message: String) -> StreamError {
    StreamError { id, kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Idle(InputQueue);

    impl Stream for Idle {
        fn input(&self) -> Option<&InputQueue> {
            Some(&self.0)
        }
        fn hang_up(&self) {}
    }

    #[test]
    fn duplicates_and_streams_past_the_cap_are_refused() {
        let streams = Streams::default();
        for id in 0..MAX_STREAMS as u64 {
            streams
                .insert(id, Arc::new(Idle(InputQueue::new())))
                .unwrap();
        }
        let dup = streams.check_room(3).unwrap_err();
        assert_eq!(dup.kind, StreamErrorKind::Invalid);
        let busy = streams.check_room(1000).unwrap_err();
        assert_eq!(busy.kind, StreamErrorKind::Busy);
        let input = streams.get(3).unwrap();
        streams.remove(3);
        assert!(input.input().unwrap().is_closed());
        assert!(streams.get(3).is_none());
        streams
            .insert(1000, Arc::new(Idle(InputQueue::new())))
            .unwrap();
        streams.hang_up_all();
        assert!(streams.get(1000).is_none());
    }
}
