//! Host <-> guest agent protocol.
//!
//! The agent listens on vsock port [`AGENT_PORT`]. Each message is one frame:
//!
//! ```text
//! offset 0  u32 LE  magic  "FVA\0"
//! offset 4  u16 LE  protocol version (PROTOCOL_VERSION)
//! offset 6  u16 LE  kind: 0 a JSON frame, 1 a data frame (agent_stream)
//! offset 8  u32 LE  payload length in bytes (<= MAX_PAYLOAD)
//! offset 12 ...     payload: one JSON-encoded [`Frame`]
//! ```
//!
//! On connect the agent sends [`Frame::Ready`]. The host may then send
//! [`Frame::Ping`] (answered by [`Frame::Pong`]) or [`Frame::Exec`] (answered
//! by [`Frame::ExecResult`]: the API's `ExecVMResponse` and the exec's
//! `id`), [`Frame::SetClock`] or [`Frame::SetNetwork`] (answered by
//! [`Frame::Pong`]). One connection carries several execs at once: each
//! runs as it arrives, and its result, whenever it ends, carries the `id`
//! the host gave it (unique among the connection's running execs), while
//! pings and settings are answered meanwhile. The agent ends a command at
//! its `timeoutMs` and answers with `timedOut` set; a host that gets no
//! answer shortly after closes the connection, and the agent kills every
//! command the connection started.
//!
//! Agents that announce [`crate::agent_stream::STREAMS_VERSION`] also
//! speak streams (exec with live output and stdin, files, forwards): see
//! [`crate::agent_stream`].

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

pub use crate::agent_stream::{
    DATA_CHUNK, Data, ExecExit, ExecStart, KIND_DATA, KIND_JSON, MAX_DATA, STREAMS_VERSION,
    StreamError, StreamErrorKind, WindowSize,
};
use crate::agent_stream::{DATA_HEADER_LEN, decode_data_payload, encode_data_payload};

/// The vsock port the guest agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// Version of this frame format; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;
/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"FVA\0";
/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 12;
/// Largest payload either side accepts (64 MiB).
pub const MAX_PAYLOAD: usize = 64 << 20;
/// Default cap on captured stdout and stderr (each), when a request gives none.
pub const DEFAULT_OUTPUT_CAP: u64 = 4 << 20;
/// Exit code of a command stopped by its timeout (as `timeout(1)`), with
/// `timedOut` set.
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// One message between host and agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Frame {
    /// Sent by the agent first on every connection.
    Ready(Ready),
    /// Liveness probe from the host.
    Ping { nonce: u64 },
    /// The agent's answer to [`Frame::Ping`], echoing the nonce.
    Pong { nonce: u64 },
    /// Run a command.
    Exec(ExecRequest),
    /// The outcome of an [`Frame::Exec`].
    ExecResult(ExecResult),
    /// The agent could not act on the last frame (bad frame, unsupported op).
    Error { message: String },
    /// Sets the guest's wall clock to the host's (sent when a VM becomes
    /// ready, so a clone restored from a snapshot does not keep the
    /// snapshot's time). Answered by [`Frame::Pong`] with the same nonce;
    /// an agent that cannot set the clock answers [`Frame::Error`].
    #[serde(rename_all = "camelCase")]
    SetClock { nonce: u64, unix_ms: u64 },
    /// The guest's network: its NIC's MAC (a clone restored from a snapshot
    /// gets a new one), its IPv6 address with prefix length (`fd00::1/128`)
    /// and its gateway, and (when the host NATs IPv4 for it) its IPv4
    /// address with prefix length (`100.64.0.5/32`) and gateway, reached
    /// through the NIC though outside the /32. Sent when a VM with a NIC
    /// becomes ready; answered by [`Frame::Pong`], or [`Frame::Error`] by
    /// an agent that cannot apply it.
    #[serde(rename_all = "camelCase")]
    SetNetwork {
        nonce: u64,
        mac: String,
        ip6: String,
        gw6: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip4: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gw4: Option<String>,
    },
    /// Starts a streaming exec (see [`crate::agent_stream`]).
    ExecStart(ExecStart),
    /// How a streaming exec ended: its stream's last frame.
    ExecExit(ExecExit),
    /// No more bytes on `channel` of stream `id` (stdin's EOF, a file's or
    /// a forward's end).
    StreamEnd { id: u64, channel: u8 },
    /// A streaming exec's terminal has a new size.
    Resize { id: u64, cols: u16, rows: u16 },
    /// Sends `signal` to a streaming exec's process group (SIGINT for Ctrl-C).
    Signal { id: u64, signal: i32 },
    /// Writes the stream's bytes to `path` in the guest (absolute; parent
    /// directories made; replaced whole once the stream ends).
    FileWrite {
        id: u64,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// A [`Frame::FileWrite`] is in place, `bytes` long.
    FileDone { id: u64, bytes: u64 },
    /// Reads `path` in the guest out on the stream.
    FileRead { id: u64, path: String },
    /// The file a [`Frame::FileRead`] reads: its size and mode; its bytes follow.
    FileInfo { id: u64, size: u64, mode: u32 },
    /// Opens a TCP connection to `port` on the guest's loopback.
    Connect { id: u64, port: u16 },
    /// A [`Frame::Connect`] reached its service.
    Connected { id: u64 },
    /// A stream ended in failure: its last frame.
    StreamError(StreamError),
    /// Bytes of a stream: sent as a binary data frame, never as JSON.
    #[serde(skip)]
    Data(Data),
}

impl Frame {
    /// What kind of frame it is, with its nonce or exec id: short, for
    /// messages about a frame out of turn (never its whole payload).
    pub fn describe(&self) -> String {
        match self {
            Frame::Ready(_) => "ready".into(),
            Frame::Ping { nonce } => alloc::format!("ping {nonce}"),
            Frame::Pong { nonce } => alloc::format!("pong {nonce}"),
            Frame::Exec(req) => alloc::format!("exec {}", req.id),
            Frame::ExecResult(result) => alloc::format!("the result of exec {}", result.id),
            Frame::Error { .. } => "error".into(),
            Frame::SetClock { nonce, .. } => alloc::format!("setClock {nonce}"),
            Frame::SetNetwork { nonce, .. } => alloc::format!("setNetwork {nonce}"),
            Frame::ExecStart(start) => alloc::format!("execStart {}", start.id),
            Frame::ExecExit(exit) => alloc::format!("the exit of stream {}", exit.id),
            Frame::StreamEnd { id, channel } => alloc::format!("streamEnd {id}/{channel}"),
            Frame::Resize { id, .. } => alloc::format!("resize {id}"),
            Frame::Signal { id, .. } => alloc::format!("signal {id}"),
            Frame::FileWrite { id, .. } => alloc::format!("fileWrite {id}"),
            Frame::FileDone { id, .. } => alloc::format!("fileDone {id}"),
            Frame::FileRead { id, .. } => alloc::format!("fileRead {id}"),
            Frame::FileInfo { id, .. } => alloc::format!("fileInfo {id}"),
            Frame::Connect { id, .. } => alloc::format!("connect {id}"),
            Frame::Connected { id } => alloc::format!("connected {id}"),
            Frame::StreamError(e) => alloc::format!("the error of stream {}", e.id),
            Frame::Data(d) => {
                alloc::format!("{} bytes of stream {}/{}", d.bytes.len(), d.id, d.channel)
            }
        }
    }
}

/// What the agent says about itself when a connection opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    /// Protocol version the agent speaks.
    pub version: u16,
    /// Agent name and build, e.g. `guest-agent 0.1.0` or `test-guest 0.1.0`.
    pub agent: String,
}

/// A command to run in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    /// The exec's id on its connection, echoed in its result.
    #[serde(default)]
    pub id: u64,
    /// Program and arguments; never empty.
    pub argv: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the agent's own when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Who runs it (`name`, `uid`, `name:group`, `uid:gid`, as an image's
    /// `User`); root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Deadline in milliseconds, enforced by the host; informative for the agent.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Bytes of stdout to keep; the rest is dropped and `stdoutTruncated` set.
    #[serde(default = "default_cap")]
    pub max_stdout: u64,
    /// Bytes of stderr to keep; the rest is dropped and `stderrTruncated` set.
    #[serde(default = "default_cap")]
    pub max_stderr: u64,
}

fn default_cap() -> u64 {
    DEFAULT_OUTPUT_CAP
}

impl ExecRequest {
    /// A request for `argv` with default caps and no deadline.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            id: 0,
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            timeout_ms: None,
            max_stdout: DEFAULT_OUTPUT_CAP,
            max_stderr: DEFAULT_OUTPUT_CAP,
        }
    }
}

/// The outcome of a command: the fields of the API's `ExecVMResponse`, and
/// the id of the request it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// The [`ExecRequest::id`] it answers.
    #[serde(default)]
    pub id: u64,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
}

/// Collects output up to a cap and remembers whether anything was dropped.
#[derive(Debug, Clone, Default)]
pub struct CappedOutput {
    pub data: Vec<u8>,
    pub cap: usize,
    pub truncated: bool,
}

impl CappedOutput {
    /// An empty buffer that keeps at most `cap` bytes.
    pub fn new(cap: u64) -> Self {
        CappedOutput {
            data: Vec::new(),
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            truncated: false,
        }
    }

    /// Appends what fits and flags the rest as dropped.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.data.len());
        let take = room.min(bytes.len());
        self.data.extend_from_slice(&bytes[..take]);
        if take < bytes.len() {
            self.truncated = true;
        }
    }

    /// The kept bytes as text (invalid UTF-8 is replaced).
    pub fn into_string(self) -> String {
        match String::from_utf8(self.data) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The first four bytes are not [`MAGIC`]: the peer does not speak this protocol.
    BadMagic,
    /// The peer speaks another protocol version.
    Version(u16),
    /// The announced payload is larger than [`MAX_PAYLOAD`].
    TooLarge(usize),
    /// The payload is not a valid JSON [`Frame`].
    Payload(String),
    /// A whole frame arrived but its payload is not one this side knows (a
    /// frame type from a newer peer, say); the decoder has moved past it,
    /// so the connection is still in step.
    Skipped(String),
}

impl FrameError {
    /// Whether the stream is still in step after this error: the next
    /// frame can be read.
    pub fn in_step(&self) -> bool {
        matches!(self, FrameError::Skipped(_))
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic => write!(f, "not an agent frame (bad magic)"),
            FrameError::Version(v) => write!(
                f,
                "agent protocol version {v} is not supported (expected {PROTOCOL_VERSION})"
            ),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds the {MAX_PAYLOAD}-byte limit")
            }
            FrameError::Payload(e) => write!(f, "malformed frame payload: {e}"),
            FrameError::Skipped(e) => write!(f, "frame not understood (skipped): {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// Encodes one frame, header included.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let (kind, payload) = match frame {
        Frame::Data(data) => {
            if data.bytes.len() > MAX_DATA {
                return Err(FrameError::TooLarge(DATA_HEADER_LEN + data.bytes.len()));
            }
            (KIND_DATA, encode_data_payload(data))
        }
        _ => (
            KIND_JSON,
            serde_json::to_vec(frame).map_err(|e| FrameError::Payload(e.to_string()))?,
        ),
    };
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Parses a frame header and returns the payload length it announces.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<usize, FrameError> {
    parse_header_kind(header).map(|(_, len)| len)
}

/// Parses a frame header: the payload's kind ([`KIND_JSON`] or
/// [`KIND_DATA`]) and length.
pub fn parse_header_kind(header: &[u8; HEADER_LEN]) -> Result<(u16, usize), FrameError> {
    if header[0..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = u16::from_le_bytes([header[6], header[7]]);
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    let max = match kind {
        KIND_JSON => MAX_PAYLOAD,
        KIND_DATA => DATA_HEADER_LEN + MAX_DATA,
        other => {
            return Err(FrameError::Payload(alloc::format!(
                "unknown frame kind {other}"
            )));
        }
    };
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    Ok((kind, len))
}

/// Decodes a payload (the bytes after the header).
pub fn decode_payload(payload: &[u8]) -> Result<Frame, FrameError> {
    serde_json::from_slice(payload).map_err(|e| FrameError::Payload(e.to_string()))
}

/// Incremental decoder for a byte stream that carries frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet consumed by a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.buf[..HEADER_LEN]);
        let (kind, len) = parse_header_kind(&header)?;
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = &self.buf[HEADER_LEN..HEADER_LEN + len];
        let frame = match kind {
            KIND_DATA => decode_data_payload(payload).map(Frame::Data),
            _ => serde_json::from_slice(payload).map_err(|e| e.to_string()),
        };
        self.buf.drain(..HEADER_LEN + len);
        frame.map(Some).map_err(FrameError::Skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn exec_round_trip_through_decoder_in_pieces() {
        let mut req = ExecRequest::new(["echo", "hi"]);
        req.env.insert("A".to_string(), "1".to_string());
        req.timeout_ms = Some(5000);
        let bytes = encode(&Frame::Exec(req.clone())).unwrap();
        let mut dec = Decoder::new();
        for chunk in bytes.chunks(5) {
            assert!(dec.pending() < bytes.len());
            dec.push(chunk);
        }
        assert_eq!(dec.next_frame().unwrap(), Some(Frame::Exec(req)));
        assert_eq!(dec.next_frame().unwrap(), None);
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn result_uses_the_api_field_names_and_its_exec_id() {
        let res = ExecResult {
            id: 5,
            exit_code: 3,
            stdout: "o".into(),
            stderr: "e".into(),
            timed_out: false,
            stdout_truncated: true,
            stderr_truncated: false,
            duration_ms: 7,
        };
        let json = serde_json::to_value(Frame::ExecResult(res)).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec![
                "durationMs",
                "exitCode",
                "id",
                "stderr",
                "stderrTruncated",
                "stdout",
                "stdoutTruncated",
                "timedOut",
                "type"
            ]
        );
        assert_eq!(json["id"], 5);
    }

    #[test]
    fn a_frame_without_an_exec_id_is_exec_0() {
        let json = r#"{"type":"exec","argv":["true"]}"#;
        let frame: Frame = serde_json::from_str(json).unwrap();
        assert_eq!(frame, Frame::Exec(ExecRequest::new(["true"])));
        let json = r#"{"type":"execResult","exitCode":0,"stdout":"","stderr":"","timedOut":false,"stdoutTruncated":false,"stderrTruncated":false,"durationMs":1}"#;
        match serde_json::from_str(json).unwrap() {
            Frame::ExecResult(r) => assert_eq!((r.id, r.duration_ms), (0, 1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_frame_is_described_without_its_payload() {
        let mut result = ExecResult {
            id: 9,
            ..ExecResult::default()
        };
        result.stdout = "x".repeat(1 << 20);
        assert_eq!(Frame::ExecResult(result).describe(), "the result of exec 9");
        assert_eq!(Frame::Pong { nonce: 2 }.describe(), "pong 2");
    }

    #[test]
    fn bad_magic_version_and_size_are_refused() {
        let mut bytes = encode(&Frame::Ping { nonce: 1 }).unwrap();
        let mut dec = Decoder::new();
        bytes[0] = b'X';
        dec.push(&bytes);
        assert_eq!(dec.next_frame(), Err(FrameError::BadMagic));

        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4..6].copy_from_slice(&9u16.to_le_bytes());
        assert_eq!(parse_header(&header), Err(FrameError::Version(9)));
        header[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        header[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse_header(&header),
            Err(FrameError::TooLarge(u32::MAX as usize))
        );
    }

    #[test]
    fn capped_output_keeps_the_prefix_and_flags_the_rest() {
        let mut out = CappedOutput::new(4);
        out.push(b"ab");
        assert!(!out.truncated);
        out.push(b"cdef");
        assert!(out.truncated);
        assert_eq!(out.into_string(), "abcd");
    }

    #[test]
    fn set_clock_uses_camel_case_fields() {
        let frame = Frame::SetClock {
            nonce: 7,
            unix_ms: 1_700_000_000_000,
        };
        let json = serde_json::to_string(&frame).unwrap();
        assert_eq!(
            json,
            r#"{"type":"setClock","nonce":7,"unixMs":1700000000000}"#
        );
        assert_eq!(decode_payload(json.as_bytes()).unwrap(), frame);
    }

    #[test]
    fn set_network_uses_camel_case_fields() {
        let frame = Frame::SetNetwork {
            nonce: 3,
            mac: "02:00:00:00:00:01".into(),
            ip6: "fd00::1/128".into(),
            gw6: "fe80::1".into(),
            ip4: None,
            gw4: None,
        };
        let json = serde_json::to_string(&frame).unwrap();
        assert_eq!(
            json,
            r#"{"type":"setNetwork","nonce":3,"mac":"02:00:00:00:00:01","ip6":"fd00::1/128","gw6":"fe80::1"}"#
        );
        assert_eq!(decode_payload(json.as_bytes()).unwrap(), frame);
    }

    #[test]
    fn missing_optional_fields_take_defaults() {
        let frame = decode_payload(br#"{"type":"exec","argv":["x"]}"#).unwrap();
        assert_eq!(frame, Frame::Exec(ExecRequest::new(["x"])));
    }

    /// A frame whose payload is `json`, under a valid header.
    fn raw_frame(json: &str) -> Vec<u8> {
        let mut out = encode(&Frame::Ping { nonce: 0 }).unwrap()[..HEADER_LEN].to_vec();
        out[8..12].copy_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
        out
    }

    #[test]
    fn a_frame_of_an_unknown_type_is_skipped_and_the_next_one_read() {
        let mut dec = Decoder::new();
        dec.push(&raw_frame(r#"{"type":"fromTheFuture","x":1}"#));
        dec.push(&encode(&Frame::Ping { nonce: 7 }).unwrap());
        let err = dec.next_frame().unwrap_err();
        assert!(err.in_step(), "{err:?}");
        assert!(err.to_string().contains("fromTheFuture"), "{err}");
        assert_eq!(dec.next_frame().unwrap(), Some(Frame::Ping { nonce: 7 }));
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn a_bad_header_is_out_of_step() {
        let mut dec = Decoder::new();
        dec.push(b"GET / HTTP/1.1\r\n\r\n");
        let err = dec.next_frame().unwrap_err();
        assert!(!err.in_step(), "{err:?}");
    }
}
