//! Streams between the host and the guest agent: an exec with live output,
//! stdin and a terminal; a file written into the guest or read out of it;
//! a TCP connection to a port inside the guest. Each is a stream `id` on
//! an agent connection: JSON frames of [`crate::agent::Frame`] start, steer
//! and end it, and binary data frames ([`Data`]) carry its bytes.
//!
//! An agent that speaks these announces [`STREAMS_VERSION`] (or later) in
//! its `Ready`; an older one is never sent them.
//!
//! # Data frames
//!
//! The frame header's reserved field (offset 6) says what the payload is:
//! [`KIND_JSON`] (every other frame) or [`KIND_DATA`], whose payload is
//!
//! ```text
//! offset 0  u64 LE  stream id
//! offset 8  u8      channel (CHANNEL_IN, CHANNEL_OUT, CHANNEL_ERR)
//! offset 9  ...     bytes (at most MAX_DATA)
//! ```
//!
//! # Exec
//!
//! ```text
//! host  -> ExecStart {id, argv, env, cwd, user, tty?, timeoutMs?}
//! host  -> data(id, 0, stdin bytes) ...   StreamEnd {id, channel: 0} (EOF)
//! host  -> Resize {id, cols, rows}        Signal {id, signal}
//! agent -> data(id, 1, stdout) data(id, 2, stderr) ...
//! agent -> ExecExit {id, exitCode, timedOut, durationMs}   (always last)
//! ```
//!
//! With `tty` the command runs on a pseudo-terminal of that size as the
//! leader of a new session (stderr is the terminal too: everything comes on
//! channel 1). A program that cannot be started exits 127 (126 when it is
//! not executable) with the reason on channel 2, as a shell answers. When
//! the host closes the connection the agent kills every process group its
//! streams started.
//!
//! # Files
//!
//! ```text
//! host  -> FileWrite {id, path, mode?}  data(id, 0, bytes) ...  StreamEnd {id, 0}
//! agent -> FileDone {id, bytes}          (written to a temporary file and renamed
//!                                         over `path` only after the end)
//! host  -> FileRead {id, path}
//! agent -> FileInfo {id, size, mode}  data(id, 1, bytes) ...  StreamEnd {id, 1}
//! ```
//!
//! # Forwards
//!
//! ```text
//! host  -> Connect {id, port}        (TCP to the guest's loopback)
//! agent -> Connected {id}
//! both  -> data(id, 0 to the guest / 1 from the guest)  StreamEnd {id, 0|1}
//! ```
//!
//! Any stream may end early with [`StreamError`] from the agent, whose
//! `kind` says what went wrong (the host turns it into a 4xx or a 5xx).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// `Ready.version` of an agent that speaks streams (version 1 spoke only
/// the buffered exec, pings and settings).
pub const STREAMS_VERSION: u16 = 2;
/// Frame kind (header offset 6): a JSON frame.
pub const KIND_JSON: u16 = 0;
/// Frame kind (header offset 6): a [`Data`] frame.
pub const KIND_DATA: u16 = 1;
/// Bytes of a data payload before its bytes: id (8) and channel (1).
pub const DATA_HEADER_LEN: usize = 9;
/// Most bytes one data frame carries; larger ones are refused.
pub const MAX_DATA: usize = 256 << 10;
/// What senders put in one data frame.
pub const DATA_CHUNK: usize = 32 << 10;

/// Channel of bytes going into the guest: stdin, a file's bytes, a
/// forward's bytes to the guest's service.
pub const CHANNEL_IN: u8 = 0;
/// Channel of bytes coming out: stdout (all of a TTY's output), a file's
/// bytes, a forward's bytes from the guest's service.
pub const CHANNEL_OUT: u8 = 1;
/// Channel of an exec's stderr (without a TTY).
pub const CHANNEL_ERR: u8 = 2;

/// Bytes of one stream on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub id: u64,
    pub channel: u8,
    pub bytes: Vec<u8>,
}

/// A terminal's size, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub cols: u16,
    pub rows: u16,
}

/// Starts a streaming exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecStart {
    /// The stream's id on its connection.
    pub id: u64,
    /// Program and arguments; never empty.
    pub argv: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the agent's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Who runs it (as [`crate::agent::ExecRequest::user`]); root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run on a pseudo-terminal of this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<WindowSize>,
    /// The agent ends the command (its process group) after this long, and
    /// answers `timedOut` with exit code 124.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// How a streaming exec ended; the last frame of its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecExit {
    pub id: u64,
    /// The command's exit status; 128 + N when signal N ended it.
    pub exit_code: i32,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub duration_ms: u64,
}

/// What went wrong with a stream, for the host to answer its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamErrorKind {
    /// No such file or directory (a 404).
    NotFound,
    /// The request cannot be done as asked: a relative path, a directory
    /// where a file is wanted, a port nothing listens on (a 400).
    Invalid,
    /// Too many streams at once (a 429).
    Busy,
    /// The guest failed otherwise: I/O error, no space (a 502).
    Failed,
}

/// A stream that ends in failure; the last frame of its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamError {
    pub id: u64,
    pub kind: StreamErrorKind,
    /// What went wrong, for the caller (never a host path: the agent knows none).
    pub message: String,
}

/// Encodes the payload of a data frame (header not included).
pub fn encode_data_payload(data: &Data) -> Vec<u8> {
    let mut out = Vec::with_capacity(DATA_HEADER_LEN + data.bytes.len());
    out.extend_from_slice(&data.id.to_le_bytes());
    out.push(data.channel);
    out.extend_from_slice(&data.bytes);
    out
}

/// Decodes the payload of a data frame.
pub fn decode_data_payload(payload: &[u8]) -> Result<Data, String> {
    if payload.len() < DATA_HEADER_LEN {
        return Err(alloc::format!(
            "data frame of {} bytes is shorter than its {DATA_HEADER_LEN}-byte header",
            payload.len()
        ));
    }
    let bytes = &payload[DATA_HEADER_LEN..];
    if bytes.len() > MAX_DATA {
        return Err(alloc::format!(
            "data frame carries {} bytes (at most {MAX_DATA})",
            bytes.len()
        ));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&payload[..8]);
    Ok(Data {
        id: u64::from_le_bytes(id),
        channel: payload[8],
        bytes: bytes.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Decoder, Frame, FrameError, HEADER_LEN, encode, parse_header_kind};
    use alloc::vec;

    #[test]
    fn data_and_json_frames_mix_on_one_stream() {
        let data = Frame::Data(Data {
            id: 7,
            channel: CHANNEL_ERR,
            bytes: vec![0, 255, b'\n', 1],
        });
        let end = Frame::StreamEnd { id: 7, channel: 2 };
        let mut bytes = encode(&data).unwrap();
        bytes.extend(encode(&end).unwrap());
        let mut dec = Decoder::new();
        for piece in bytes.chunks(3) {
            dec.push(piece);
        }
        assert_eq!(dec.next_frame().unwrap(), Some(data));
        assert_eq!(dec.next_frame().unwrap(), Some(end));
        assert_eq!(dec.next_frame().unwrap(), None);
    }

    #[test]
    fn oversized_short_and_unknown_frames_are_refused() {
        let big = Frame::Data(Data {
            id: 1,
            channel: 0,
            bytes: vec![0; MAX_DATA + 1],
        });
        assert!(matches!(encode(&big), Err(FrameError::TooLarge(_))));

        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&encode(&Frame::Ping { nonce: 1 }).unwrap()[..HEADER_LEN]);
        header[6..8].copy_from_slice(&KIND_DATA.to_le_bytes());
        header[8..12].copy_from_slice(&((DATA_HEADER_LEN + MAX_DATA + 1) as u32).to_le_bytes());
        assert!(matches!(
            parse_header_kind(&header),
            Err(FrameError::TooLarge(_))
        ));
        header[6..8].copy_from_slice(&9u16.to_le_bytes());
        assert!(matches!(
            parse_header_kind(&header),
            Err(FrameError::Payload(_))
        ));

        assert!(decode_data_payload(&[1, 2, 3]).is_err());
    }

    #[test]
    fn stream_frames_use_camel_case_names() {
        let start = Frame::ExecStart(ExecStart {
            id: 3,
            argv: vec!["sh".into()],
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            tty: Some(WindowSize { cols: 80, rows: 24 }),
            timeout_ms: Some(5),
        });
        let json = serde_json::to_string(&start).unwrap();
        assert_eq!(
            json,
            r#"{"type":"execStart","id":3,"argv":["sh"],"env":{},"tty":{"cols":80,"rows":24},"timeoutMs":5}"#
        );
        let err = Frame::StreamError(StreamError {
            id: 4,
            kind: StreamErrorKind::NotFound,
            message: "no such file".into(),
        });
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"type":"streamError","id":4,"kind":"notFound","message":"no such file"}"#
        );
        let exit: Frame =
            serde_json::from_str(r#"{"type":"execExit","id":3,"exitCode":130}"#).unwrap();
        assert_eq!(
            exit,
            Frame::ExecExit(ExecExit {
                id: 3,
                exit_code: 130,
                ..ExecExit::default()
            })
        );
    }
}
