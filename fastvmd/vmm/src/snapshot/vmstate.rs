//! The `vmstate` container: a small checked envelope around the monitor's
//! serialized vCPU/device state.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset 0   8 bytes  magic "FVMSTATE"
//! offset 8   u32      format version (VMSTATE_FORMAT_VERSION)
//! offset 12  u32      CRC32 (IEEE, crc32fast) of the payload
//! offset 16  u64      payload length in bytes
//! offset 24  ...      payload
//! ```
//!
//! Reading checks, in order: magic, version, length (truncated or extra
//! bytes), checksum. The payload itself is produced by [`encode_state`]
//! (bincode 1.3, compact and fixed-int) and read by [`decode_state`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::SnapshotError;

/// The 8-byte magic at the start of every `vmstate` file.
pub const VMSTATE_MAGIC: &[u8; 8] = b"FVMSTATE";
/// The container format version this build writes and reads.
pub const VMSTATE_FORMAT_VERSION: u32 = 1;
/// Size of the header before the payload.
pub const VMSTATE_HEADER_LEN: usize = 24;

/// Serializes `state` into a payload for [`wrap_vmstate`]/[`write_vmstate`].
pub fn encode_state<T: Serialize>(state: &T) -> Result<Vec<u8>, SnapshotError> {
    codec()
        .serialize(state)
        .map_err(|e| SnapshotError::StateCodec(e.to_string()))
}

/// bincode 1.3 with fixed-size little-endian integers, refusing trailing
/// bytes so a mismatched payload is not half-read.
fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

/// Deserializes a payload produced by [`encode_state`]; trailing bytes are
/// an error.
pub fn decode_state<T: DeserializeOwned>(payload: &[u8]) -> Result<T, SnapshotError> {
    codec()
        .deserialize(payload)
        .map_err(|e| SnapshotError::StateCodec(e.to_string()))
}

/// Puts `payload` in the container (header + payload).
pub fn wrap_vmstate(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VMSTATE_HEADER_LEN + payload.len());
    out.extend_from_slice(VMSTATE_MAGIC);
    out.extend_from_slice(&VMSTATE_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks a container read from `path` (used only in error messages) and
/// returns its payload.
pub fn unwrap_vmstate<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8], SnapshotError> {
    if bytes.len() < VMSTATE_MAGIC.len() || &bytes[..8] != VMSTATE_MAGIC {
        return Err(SnapshotError::StateMagic {
            path: path.to_owned(),
        });
    }
    if bytes.len() < VMSTATE_HEADER_LEN {
        return Err(SnapshotError::StateLength {
            path: path.to_owned(),
            actual: bytes.len() as u64,
            expected: VMSTATE_HEADER_LEN as u64,
        });
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let version = u32_at(8);
    if version != VMSTATE_FORMAT_VERSION {
        return Err(SnapshotError::StateVersion {
            path: path.to_owned(),
            found: version,
            supported: VMSTATE_FORMAT_VERSION,
        });
    }
    let stored = u32_at(12);
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let expected = (VMSTATE_HEADER_LEN as u64).saturating_add(len);
    if bytes.len() as u64 != expected {
        return Err(SnapshotError::StateLength {
            path: path.to_owned(),
            actual: bytes.len() as u64,
            expected,
        });
    }
    let payload = &bytes[VMSTATE_HEADER_LEN..];
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(SnapshotError::StateChecksum {
            path: path.to_owned(),
            stored,
            computed,
        });
    }
    Ok(payload)
}

/// Writes `payload` in its container to a new file at `path` (refuses to
/// overwrite). Durability is the caller's business
/// ([`super::SnapshotWriter::commit`] fsyncs everything).
pub fn write_vmstate(path: &Path, payload: &[u8]) -> Result<(), SnapshotError> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| SnapshotError::io("create", path, e))?;
    file.write_all(&wrap_vmstate(payload))
        .map_err(|e| SnapshotError::io("write", path, e))
}

/// Reads and verifies the container at `path`; returns the payload.
pub fn read_vmstate(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let mut bytes = std::fs::read(path).map_err(|e| SnapshotError::io("read", path, e))?;
    let len = unwrap_vmstate(path, &bytes)?.len();
    bytes.drain(..VMSTATE_HEADER_LEN);
    debug_assert_eq!(bytes.len(), len);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct State {
        regs: Vec<u64>,
        name: String,
        flag: Option<bool>,
    }

    fn sample() -> State {
        State {
            regs: vec![1, 2, 0xffff_ffff_ffff],
            name: "vcpu0".into(),
            flag: Some(true),
        }
    }

    #[test]
    fn round_trip_through_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vmstate");
        let payload = encode_state(&sample()).unwrap();
        write_vmstate(&path, &payload).unwrap();
        let read = read_vmstate(&path).unwrap();
        assert_eq!(read, payload);
        assert_eq!(decode_state::<State>(&read).unwrap(), sample());
        // Never overwrites.
        assert!(write_vmstate(&path, &payload).is_err());
    }

    #[test]
    fn decode_refuses_trailing_and_short_payloads() {
        let mut payload = encode_state(&sample()).unwrap();
        payload.push(0);
        assert!(matches!(
            decode_state::<State>(&payload),
            Err(SnapshotError::StateCodec(_))
        ));
        payload.truncate(payload.len() - 3);
        assert!(decode_state::<State>(&payload).is_err());
    }

    #[test]
    fn bad_magic() {
        let p = Path::new("vmstate");
        let mut bytes = wrap_vmstate(b"abc");
        bytes[0] = b'X';
        let err = unwrap_vmstate(p, &bytes).unwrap_err();
        assert!(matches!(err, SnapshotError::StateMagic { .. }), "{err}");
        assert!(err.to_string().contains("vmstate"));
        assert!(matches!(
            unwrap_vmstate(p, b"FVM"),
            Err(SnapshotError::StateMagic { .. })
        ));
    }

    #[test]
    fn unknown_version_names_both() {
        let mut bytes = wrap_vmstate(b"abc");
        bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
        let err = unwrap_vmstate(Path::new("vmstate"), &bytes).unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::StateVersion {
                    found: 7,
                    supported: 1,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains('7') && msg.contains('1'), "{msg}");
    }

    #[test]
    fn truncated_or_extended() {
        let p = Path::new("vmstate");
        let bytes = wrap_vmstate(&[5u8; 100]);
        let err = unwrap_vmstate(p, &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::StateLength {
                    actual: 123,
                    expected: 124,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("123 bytes"), "{err}");
        // Header itself cut short.
        assert!(matches!(
            unwrap_vmstate(p, &bytes[..20]),
            Err(SnapshotError::StateLength { actual: 20, .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            unwrap_vmstate(p, &longer),
            Err(SnapshotError::StateLength {
                actual: 125,
                expected: 124,
                ..
            })
        ));
    }

    #[test]
    fn checksum_mismatch() {
        let mut bytes = wrap_vmstate(&[5u8; 100]);
        bytes[50] ^= 1;
        let err = unwrap_vmstate(Path::new("vmstate"), &bytes).unwrap_err();
        assert!(matches!(err, SnapshotError::StateChecksum { .. }), "{err}");
    }

    #[test]
    fn empty_payload_is_fine() {
        let bytes = wrap_vmstate(&[]);
        assert_eq!(bytes.len(), VMSTATE_HEADER_LEN);
        assert_eq!(
            unwrap_vmstate(Path::new("v"), &bytes).unwrap(),
            &[] as &[u8]
        );
    }
}
