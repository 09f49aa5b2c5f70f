//! Frame encoding with a single buffer: the same bytes as
//! `fastvm_proto::agent::encode`, but the header is spliced into the JSON
//! buffer in place, so a multi-megabyte result is not copied twice; a
//! data frame (binary, never JSON) is laid out behind its header directly.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use fastvm_proto::agent::{
    Data, Frame, HEADER_LEN, KIND_DATA, KIND_JSON, MAGIC, MAX_DATA, MAX_PAYLOAD, PROTOCOL_VERSION,
};
use fastvm_proto::agent_stream::DATA_HEADER_LEN;

/// One frame, header included.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, String> {
    if let Frame::Data(data) = frame {
        return encode_data(data);
    }
    let mut out = serde_json::to_vec(frame).map_err(|e| e.to_string())?;
    let len = out.len();
    if len > MAX_PAYLOAD {
        return Err(alloc::format!("frame of {len} bytes exceeds {MAX_PAYLOAD}"));
    }
    out.splice(0..0, header(KIND_JSON, len));
    Ok(out)
}

/// A data frame: header, stream id, channel, bytes.
fn encode_data(data: &Data) -> Result<Vec<u8>, String> {
    if data.bytes.len() > MAX_DATA {
        return Err(alloc::format!(
            "data frame of {} bytes exceeds {MAX_DATA}",
            data.bytes.len()
        ));
    }
    let len = DATA_HEADER_LEN + data.bytes.len();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(&header(KIND_DATA, len));
    out.extend_from_slice(&data.id.to_le_bytes());
    out.push(data.channel);
    out.extend_from_slice(&data.bytes);
    Ok(out)
}

fn header(kind: u16, len: usize) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    header[6..8].copy_from_slice(&kind.to_le_bytes());
    header[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastvm_proto::agent::{self, Decoder, ExecResult};
    use std::vec;

    #[test]
    fn same_bytes_as_the_protocol_crate() {
        let frames = [
            Frame::Pong { nonce: 9 },
            Frame::ExecResult(ExecResult {
                exit_code: 3,
                stdout: "y\n".repeat(5000),
                stderr: "\u{0}\u{1}é".into(),
                ..ExecResult::default()
            }),
            Frame::Data(Data {
                id: u64::MAX - 3,
                channel: 2,
                bytes: vec![0, 255, b'{', 10],
            }),
            Frame::Data(Data {
                id: 0,
                channel: 1,
                bytes: vec![],
            }),
            Frame::Data(Data {
                id: 5,
                channel: 0,
                bytes: vec![7; MAX_DATA],
            }),
            Frame::StreamEnd { id: 5, channel: 1 },
        ];
        for f in &frames {
            let bytes = encode(f).unwrap();
            assert_eq!(bytes, agent::encode(f).unwrap());
            let mut dec = Decoder::new();
            dec.push(&bytes);
            assert_eq!(dec.next_frame().unwrap().as_ref(), Some(f));
        }
    }

    #[test]
    fn an_oversized_data_frame_is_refused() {
        let big = Frame::Data(Data {
            id: 1,
            channel: 1,
            bytes: vec![0; MAX_DATA + 1],
        });
        assert!(encode(&big).is_err());
    }
}
