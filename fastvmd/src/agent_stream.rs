//! One stream (an exec with live output, a file, a forward) on an agent
//! connection of its own: the connection's two halves used at once, the
//! frames read with the same sans-IO [`Decoder`] and bounds as every agent
//! connection. A connection per stream gives each stream the vsock's own
//! flow control (a slow reader holds up nobody else), and closing it is
//! how the agent learns that the client went away (it then kills what the
//! stream started).

use fastvm_proto::agent::{self, Decoder, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::agent::{AgentError, closed_mid_frame};

/// Bytes read from the agent at a time.
const READ_CHUNK: usize = 64 << 10;

/// A stream's agent connection, past its `ready`.
pub struct AgentStream {
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

/// The agent's frames, as they come.
pub struct StreamReader {
    half: OwnedReadHalf,
    decoder: Decoder,
    buf: Vec<u8>,
}

/// Frames to the agent, each whole.
pub struct StreamWriter {
    half: OwnedWriteHalf,
}

impl AgentStream {
    /// `stream` with what its decoder already holds.
    pub fn new(stream: UnixStream, decoder: Decoder) -> AgentStream {
        let (read, write) = stream.into_split();
        AgentStream {
            reader: StreamReader {
                half: read,
                decoder,
                buf: vec![0u8; READ_CHUNK],
            },
            writer: StreamWriter { half: write },
        }
    }
}

impl StreamReader {
    /// The next frame; an error when the connection ends (the agent never
    /// ends a stream by closing, it sends the stream's last frame first).
    pub async fn next(&mut self) -> Result<Frame, AgentError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            match self.half.read(&mut self.buf).await? {
                0 => return Err(closed_mid_frame(&self.decoder)),
                n => self.decoder.push(&self.buf[..n]),
            }
        }
    }
}

impl StreamWriter {
    /// Sends one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), AgentError> {
        let bytes = agent::encode(frame)?;
        self.half.write_all(&bytes).await?;
        Ok(())
    }

    /// Sends `bytes` on `channel` of stream `id`, in data frames of at most
    /// [`agent::DATA_CHUNK`].
    pub async fn send_data(
        &mut self,
        id: u64,
        channel: u8,
        bytes: &[u8],
    ) -> Result<(), AgentError> {
        for chunk in bytes.chunks(agent::DATA_CHUNK) {
            let data = agent::Data {
                id,
                channel,
                bytes: chunk.to_vec(),
            };
            self.send(&Frame::Data(data)).await?;
        }
        Ok(())
    }
}
