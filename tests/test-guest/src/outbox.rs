//! What one stream has to send, in order: bytes on a channel (handed out
//! as data frames of at most [`DATA_CHUNK`] bytes, small writes joined)
//! and whole frames (its end). The connection takes a frame at a time,
//! as the peer's credit allows, so nothing is encoded before it can go.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use fastvm_proto::agent::{DATA_CHUNK, Data, Frame};

#[derive(Debug)]
enum Item {
    Data {
        channel: u8,
        bytes: Vec<u8>,
        at: usize,
    },
    Frame(Frame),
}

/// One stream's queued output.
#[derive(Debug, Default)]
pub struct Outbox {
    items: VecDeque<Item>,
    /// Data bytes queued and not yet handed out.
    bytes: usize,
}

impl Outbox {
    /// Queues `bytes` on `channel`, joined to the last queued bytes when
    /// they are on the same channel and still fit one chunk.
    pub fn push_data(&mut self, channel: u8, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(Item::Data {
            channel: last,
            bytes: queued,
            at,
        }) = self.items.back_mut()
            && *last == channel
            && queued.len() - *at + bytes.len() <= DATA_CHUNK
        {
            queued.extend_from_slice(bytes);
        } else {
            self.push_vec(channel, bytes.to_vec());
            return;
        }
        self.bytes += bytes.len();
    }

    /// Queues `bytes` on `channel` without copying them.
    pub fn push_vec(&mut self, channel: u8, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.bytes += bytes.len();
        self.items.push_back(Item::Data {
            channel,
            bytes,
            at: 0,
        });
    }

    /// Queues a whole frame.
    pub fn push_frame(&mut self, frame: Frame) {
        self.items.push_back(Item::Frame(frame));
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Data bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next frame to send, data frames carrying stream `id`.
    pub fn pop(&mut self, id: u64) -> Option<Frame> {
        let item = self.items.front_mut()?;
        let Item::Data { channel, bytes, at } = item else {
            let Some(Item::Frame(frame)) = self.items.pop_front() else {
                unreachable!("the front item is a frame");
            };
            return Some(frame);
        };
        let channel = *channel;
        let n = (bytes.len() - *at).min(DATA_CHUNK);
        self.bytes -= n;
        let chunk = if *at == 0 && n == bytes.len() {
            core::mem::take(bytes)
        } else {
            let chunk = bytes[*at..*at + n].to_vec();
            *at += n;
            chunk
        };
        if *at >= bytes.len() {
            self.items.pop_front();
        }
        Some(Frame::Data(Data {
            id,
            channel,
            bytes: chunk,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn data(frame: Frame) -> (u64, u8, usize) {
        match frame {
            Frame::Data(d) => (d.id, d.channel, d.bytes.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_writes_join_and_big_ones_split() {
        let mut o = Outbox::default();
        o.push_data(1, b"ab");
        o.push_data(1, b"cd");
        o.push_data(2, b"e");
        o.push_vec(1, vec![7; DATA_CHUNK * 2 + 1]);
        o.push_frame(Frame::StreamEnd { id: 4, channel: 1 });
        assert_eq!(o.bytes(), 5 + DATA_CHUNK * 2 + 1);
        assert_eq!(
            o.pop(4),
            Some(Frame::Data(Data {
                id: 4,
                channel: 1,
                bytes: b"abcd".to_vec()
            }))
        );
        assert_eq!(data(o.pop(4).unwrap()), (4, 2, 1));
        assert_eq!(data(o.pop(4).unwrap()), (4, 1, DATA_CHUNK));
        assert_eq!(data(o.pop(4).unwrap()), (4, 1, DATA_CHUNK));
        assert_eq!(data(o.pop(4).unwrap()), (4, 1, 1));
        assert_eq!(o.bytes(), 0);
        assert_eq!(o.pop(4), Some(Frame::StreamEnd { id: 4, channel: 1 }));
        assert!(o.is_empty() && o.pop(4).is_none());
    }

    #[test]
    fn a_partly_sent_chunk_takes_more_bytes_up_to_a_chunk() {
        let mut o = Outbox::default();
        o.push_vec(1, vec![1; DATA_CHUNK + 10]);
        assert_eq!(data(o.pop(1).unwrap()).2, DATA_CHUNK);
        o.push_data(1, b"xyz");
        assert_eq!(data(o.pop(1).unwrap()).2, 13);
        assert!(o.is_empty());
    }
}
