//! The bytes the host sends into one stream (an exec's stdin, a file's
//! contents, a forward's bytes to its service), queued between the
//! connection's reader and the thread that consumes them. The queue holds
//! at most [`QUEUE_BYTES`] (one chunk more when empty), so a consumer that
//! does not keep up stalls the reader rather than growing memory.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Bytes one stream's queue holds before [`InputQueue::push`] says full.
pub const QUEUE_BYTES: usize = 256 << 10;

/// What [`InputQueue::push`] did with the bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// No room now: the bytes come back, to push again.
    Full(Vec<u8>),
    /// Nobody will take them any more (the stream ended or its consumer
    /// stopped): they are dropped.
    Closed,
}

/// What [`InputQueue::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop {
    Bytes(Vec<u8>),
    /// The host's end of input, after all its bytes.
    End,
    /// The stream was closed: stop, without finishing.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    ended: bool,
    closed: bool,
}

/// One stream's queue of input.
#[derive(Debug, Default)]
pub struct InputQueue {
    state: Mutex<State>,
    changed: Condvar,
}

impl InputQueue {
    pub fn new() -> InputQueue {
        InputQueue::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `bytes` if there is room.
    pub fn push(&self, bytes: Vec<u8>) -> Push {
        let mut state = self.lock();
        if state.closed || state.ended {
            return Push::Closed;
        }
        if state.bytes > 0 && state.bytes + bytes.len() > QUEUE_BYTES {
            return Push::Full(bytes);
        }
        if !bytes.is_empty() {
            state.bytes += bytes.len();
            state.chunks.push_back(bytes);
            self.changed.notify_all();
        }
        Push::Queued
    }

    /// The host's end of input: the consumer gets [`Pop::End`] after the
    /// bytes already queued.
    pub fn end(&self) {
        let mut state = self.lock();
        state.ended = true;
        self.changed.notify_all();
    }

    /// Closes the queue for both sides: queued bytes are dropped, the
    /// consumer gets [`Pop::Closed`] and pushes are refused.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.chunks.clear();
        state.bytes = 0;
        self.changed.notify_all();
    }

    /// Closes the queue unless the host has ended it: then the consumer
    /// still gets the rest of its bytes and the end.
    pub fn close_unless_ended(&self) {
        if !self.lock().ended {
            self.close();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until the next chunk, the end or the close.
    pub fn pop(&self) -> Pop {
        let mut state = self.lock();
        loop {
            if state.closed {
                return Pop::Closed;
            }
            if let Some(chunk) = state.chunks.pop_front() {
                state.bytes -= chunk.len();
                self.changed.notify_all();
                return Pop::Bytes(chunk);
            }
            if state.ended {
                return Pop::End;
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits at most `timeout` for room (or the close) after a
    /// [`Push::Full`].
    pub fn wait_room(&self, timeout: Duration) {
        let state = self.lock();
        if state.closed || state.bytes < QUEUE_BYTES {
            return;
        }
        let _ = self
            .changed
            .wait_timeout(state, timeout)
            .unwrap_or_else(|p| p.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_then_end_in_order_and_full_past_the_bound() {
        let queue = InputQueue::new();
        assert_eq!(queue.push(vec![1; QUEUE_BYTES + 5]), Push::Queued);
        assert_eq!(queue.push(vec![2]), Push::Full(vec![2]));
        assert_eq!(queue.pop(), Pop::Bytes(vec![1; QUEUE_BYTES + 5]));
        assert_eq!(queue.push(vec![2]), Push::Queued);
        queue.end();
        assert_eq!(queue.push(vec![3]), Push::Closed);
        assert_eq!(queue.pop(), Pop::Bytes(vec![2]));
        assert_eq!(queue.pop(), Pop::End);
    }

    #[test]
    fn close_drops_what_is_queued_and_wakes_the_consumer() {
        let queue = std::sync::Arc::new(InputQueue::new());
        let consumer = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.pop())
        };
        std::thread::sleep(Duration::from_millis(20));
        queue.close();
        assert_eq!(consumer.join().unwrap(), Pop::Closed);
        assert_eq!(queue.push(vec![1]), Push::Closed);
        assert!(queue.is_closed());
    }

    #[test]
    fn an_ended_queue_keeps_its_bytes_through_close_unless_ended() {
        let queue = InputQueue::new();
        queue.push(vec![1]);
        queue.end();
        queue.close_unless_ended();
        assert_eq!(queue.pop(), Pop::Bytes(vec![1]));
        assert_eq!(queue.pop(), Pop::End);
        let open = InputQueue::new();
        open.push(vec![1]);
        open.close_unless_ended();
        assert_eq!(open.pop(), Pop::Closed);
    }
}
