//! Frame encoding with a single buffer: the same bytes as
//! `fastvm_proto::agent::encode`, but the header is spliced into the JSON
//! buffer in place, so a multi-megabyte result is not copied twice.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use fastvm_proto::agent::{Frame, HEADER_LEN, MAGIC, MAX_PAYLOAD, PROTOCOL_VERSION};

/// One frame, header included.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, String> {
    let mut out = serde_json::to_vec(frame).map_err(|e| e.to_string())?;
    let len = out.len();
    if len > MAX_PAYLOAD {
        return Err(alloc::format!("frame of {len} bytes exceeds {MAX_PAYLOAD}"));
    }
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    header[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    out.splice(0..0, header);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastvm_proto::agent::{self, ExecResult};

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
        ];
        for f in &frames {
            assert_eq!(encode(f).unwrap(), agent::encode(f).unwrap());
        }
    }
}
