//! The exec channel protocol: Kubernetes' `v5.channel.k8s.io`, which both
//! `GET /v1/vms/{id}/exec/ws` (one WebSocket binary message per message)
//! and the socket's `execStream` (after its 101 answer, each message as
//! `u32 LE length` + the message, the length counting the channel byte)
//! speak.
//!
//! The first byte of a message is its channel: [`STDIN`] (client to
//! daemon), [`STDOUT`] and [`STDERR`] (daemon to client), [`STATUS`] (one
//! JSON `Status` when the command has ended, as Kubernetes sends it, with
//! FastVM's `exitCode` and `timedOut` beside; the session then closes),
//! [`RESIZE`] (client: `{"Width":W,"Height":H}`), [`CLOSE`] (client:
//! `[255, 0]` closes stdin). [`SIGNAL`] is FastVM's own (client:
//! `{"Signal":N}` sends signal N to the command's process group).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The WebSocket subprotocol spoken.
pub const SUBPROTOCOL: &str = "v5.channel.k8s.io";
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The outcome, as a Kubernetes `Status` (the "error" channel).
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;
/// FastVM's own: a signal to the command.
pub const SIGNAL: u8 = 5;
/// Closes the channel named by the message's second byte.
pub const CLOSE: u8 = 255;
/// Largest message either side accepts (a channel byte and 1 MiB).
pub const MAX_MESSAGE: usize = 1 + (1 << 20);

/// A [`RESIZE`] message's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// A [`SIGNAL`] message's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRequest {
    #[serde(rename = "Signal")]
    pub signal: i32,
}

/// The [`STATUS`] of a command that ended with `exit_code`.
pub fn exit_status(exit_code: i32, timed_out: bool) -> Value {
    let mut status = if exit_code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": if timed_out {
                format!("command timed out (exit code {exit_code})")
            } else {
                format!("command terminated with non-zero exit code: {exit_code}")
            },
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]},
        })
    };
    status["exitCode"] = json!(exit_code);
    status["timedOut"] = json!(timed_out);
    status
}

/// The [`STATUS`] of a session that failed before its command ended.
pub fn failure_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
    })
}

/// The exit code a [`STATUS`] carries: FastVM's `exitCode`, else
/// Kubernetes' `ExitCode` cause, else 0 for `Success`.
pub fn exit_code_of(status: &Value) -> Option<i32> {
    if let Some(code) = status.get("exitCode").and_then(Value::as_i64) {
        return i32::try_from(code).ok();
    }
    if status.get("status").and_then(Value::as_str) == Some("Success") {
        return Some(0);
    }
    status
        .pointer("/details/causes")?
        .as_array()?
        .iter()
        .find(|c| c.get("reason").and_then(Value::as_str) == Some("ExitCode"))?
        .get("message")?
        .as_str()?
        .parse()
        .ok()
}

/// One message (`channel` then `bytes`) framed for the socket.
pub fn frame(channel: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + bytes.len());
    out.extend_from_slice(&((1 + bytes.len()) as u32).to_le_bytes());
    out.push(channel);
    out.extend_from_slice(bytes);
    out
}

/// Why a socket message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("an exec message of {0} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("an exec message without a channel byte")]
    Empty,
}

/// Splits the socket's byte stream into messages.
#[derive(Debug, Default)]
pub struct MessageDecoder {
    buf: Vec<u8>,
}

impl MessageDecoder {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message as (channel, bytes), if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<(u8, Vec<u8>)>, MessageError> {
        let Some(head) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_MESSAGE {
            return Err(MessageError::TooLarge(len));
        }
        if len == 0 {
            return Err(MessageError::Empty);
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let channel = self.buf[4];
        let bytes = self.buf[5..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some((channel, bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_back_out_of_a_stream_in_pieces() {
        let mut bytes = frame(STDOUT, b"hello");
        bytes.extend(frame(STATUS, b"{}"));
        let mut dec = MessageDecoder::default();
        let mut got = Vec::new();
        for piece in bytes.chunks(3) {
            dec.push(piece);
            while let Some(m) = dec.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, [(STDOUT, b"hello".to_vec()), (STATUS, b"{}".to_vec())]);
    }

    #[test]
    fn empty_and_oversized_messages_are_refused() {
        let mut dec = MessageDecoder::default();
        dec.push(&0u32.to_le_bytes());
        assert_eq!(dec.next_message(), Err(MessageError::Empty));
        let mut dec = MessageDecoder::default();
        dec.push(&u32::MAX.to_le_bytes());
        assert!(matches!(dec.next_message(), Err(MessageError::TooLarge(_))));
    }

    #[test]
    fn statuses_carry_the_exit_code_both_ways() {
        assert_eq!(exit_code_of(&exit_status(0, false)), Some(0));
        assert_eq!(exit_code_of(&exit_status(42, false)), Some(42));
        let k8s = json!({"status": "Failure", "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}});
        assert_eq!(exit_code_of(&k8s), Some(3));
        assert_eq!(exit_code_of(&json!({"status": "Success"})), Some(0));
        assert_eq!(exit_code_of(&failure_status("gone")), None);
        assert_eq!(exit_status(124, true)["timedOut"], true);
    }
}
