//! Host tests of file streams: written whole at their end, read out in
//! chunks, bounded by the store, and read by the `file-*` built-ins.

use std::string::String;
use std::vec;
use std::vec::Vec;

use fastvm_proto::agent::{DATA_CHUNK, ExecRequest, Frame, StreamErrorKind};
use sha2::{Digest, Sha256};

use super::tests::{Harness, data, exit, stream_error};
use crate::files::{FileStore, STORE_BYTES};

fn write(h: &mut Harness, id: u64, path: &str, mode: Option<u32>, pieces: &[&[u8]]) -> Vec<Frame> {
    h.send(Frame::FileWrite {
        id,
        path: path.into(),
        mode,
    });
    for piece in pieces {
        h.data(id, piece);
    }
    h.end(id);
    h.frames()
}

/// Reads `path` out: its info frame, its bytes, and its last frame.
fn read(h: &mut Harness, id: u64, path: &str) -> (Frame, Vec<u8>, Frame) {
    h.send(Frame::FileRead {
        id,
        path: path.into(),
    });
    let mut frames = h.frames();
    let last = frames.pop().unwrap();
    let info = frames.remove(0);
    let mut bytes = Vec::new();
    for f in frames {
        let Frame::Data(d) = f else { panic!("{f:?}") };
        assert_eq!((d.id, d.channel), (id, 1));
        bytes.extend_from_slice(&d.bytes);
    }
    (info, bytes, last)
}

#[test]
fn a_file_goes_in_whole_and_comes_out_in_chunks() {
    let mut h = Harness::new();
    let big: Vec<u8> = (0..DATA_CHUNK * 2 + 7).map(|i| (i % 251) as u8).collect();
    let frames = write(
        &mut h,
        1,
        "/tmp/x/big",
        Some(0o755),
        &[&big[..10], &big[10..]],
    );
    assert_eq!(
        frames,
        [Frame::FileDone {
            id: 1,
            bytes: big.len() as u64
        }]
    );
    let (info, bytes, last) = read(&mut h, 2, "/tmp/x/big");
    assert_eq!(
        info,
        Frame::FileInfo {
            id: 2,
            size: big.len() as u64,
            mode: 0o755
        }
    );
    assert_eq!(bytes, big);
    assert_eq!(last, Frame::StreamEnd { id: 2, channel: 1 });
    // Written with no mode: 0644; empty files too.
    write(&mut h, 3, "/e", None, &[]);
    let (info, bytes, _) = read(&mut h, 4, "/e");
    assert_eq!(
        info,
        Frame::FileInfo {
            id: 4,
            size: 0,
            mode: 0o644
        }
    );
    assert!(bytes.is_empty());
}

#[test]
fn a_read_is_made_as_it_is_sent() {
    let mut h = Harness::new();
    write(&mut h, 1, "/f", None, &[&vec![1; DATA_CHUNK * 4]]);
    h.send(Frame::FileRead {
        id: 2,
        path: "/f".into(),
    });
    assert!(matches!(
        h.session.next_frame(0),
        Some(Frame::FileInfo { .. })
    ));
    assert!(matches!(h.session.next_frame(0), Some(Frame::Data(_))));
    assert_eq!(h.session.queued_bytes(), 0);
}

#[test]
fn a_file_is_replaced_only_at_its_end() {
    let mut h = Harness::new();
    write(&mut h, 1, "/f", None, &[b"old"]);
    h.send(Frame::FileWrite {
        id: 2,
        path: "/f".into(),
        mode: None,
    });
    h.data(2, b"new");
    assert_eq!(read(&mut h, 3, "/f").1, b"old");
    h.end(2);
    assert_eq!(h.frames(), [Frame::FileDone { id: 2, bytes: 3 }]);
    assert_eq!(read(&mut h, 3, "/f").1, b"new");
}

#[test]
fn bad_paths_and_missing_files_are_refused() {
    let mut h = Harness::new();
    for (id, path) in [(1, "rel/path"), (2, "/dir/"), (3, "/")] {
        h.send(Frame::FileWrite {
            id,
            path: path.into(),
            mode: None,
        });
        let frames = h.frames();
        assert_eq!(
            stream_error(id, &frames[0]).0,
            StreamErrorKind::Invalid,
            "{path}"
        );
        h.send(Frame::FileRead {
            id,
            path: path.into(),
        });
        let frames = h.frames();
        assert_eq!(
            stream_error(id, &frames[0]).0,
            StreamErrorKind::Invalid,
            "{path}"
        );
    }
    h.send(Frame::FileRead {
        id: 4,
        path: "/nope".into(),
    });
    let frames = h.frames();
    assert_eq!(stream_error(4, &frames[0]).0, StreamErrorKind::NotFound);
    // The data of a refused write goes nowhere.
    h.data(1, b"x");
    h.end(1);
    assert_eq!(h.frames(), []);
}

#[test]
fn a_write_past_the_store_fails_and_leaves_nothing() {
    let mut h = Harness::new();
    h.files = FileStore::new(100, 10);
    write(&mut h, 1, "/keep", None, &[&[7; 60]]);
    let frames = write(&mut h, 2, "/big", None, &[&[1; 30], &[2; 30], &[3; 30]]);
    let (kind, message) = stream_error(2, &frames[0]);
    assert_eq!(kind, StreamErrorKind::Failed);
    assert!(
        message.starts_with("no space left in the test guest's file store"),
        "{message}"
    );
    assert_eq!(frames.len(), 1);
    assert_eq!(
        (
            h.files.stored_bytes(),
            h.files.reserved_bytes(),
            h.files.len()
        ),
        (60, 0, 1)
    );
    // Replacing the kept file with as much is fine.
    let frames = write(&mut h, 3, "/keep", None, &[&[8; 100]]);
    assert_eq!(frames, [Frame::FileDone { id: 3, bytes: 100 }]);
    assert_eq!(STORE_BYTES, 16 << 20);
}

#[test]
fn a_closed_connection_drops_its_partial_writes() {
    let mut h = Harness::new();
    h.send(Frame::FileWrite {
        id: 1,
        path: "/p".into(),
        mode: None,
    });
    h.data(1, b"partial");
    assert_eq!(h.files.reserved_bytes(), 7);
    h.session = super::Session::new();
    assert_eq!((h.files.reserved_bytes(), h.files.len()), (0, 0));
}

#[test]
fn file_built_ins_read_the_store() {
    let mut h = Harness::new();
    write(&mut h, 1, "/data/blob", None, &[b"hello ", b"world"]);
    h.start(2, &["file-sha256", "/data/blob"], None);
    let sum: String = Sha256::digest(b"hello world")
        .iter()
        .map(|b| std::format!("{b:02x}"))
        .collect();
    assert_eq!(
        h.frames(),
        [data(2, 1, &std::format!("{sum}\n")), exit(2, 0, 0)]
    );
    assert_eq!(
        sum,
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    h.send(Frame::Exec(ExecRequest::new(["file-size", "/data/blob"])));
    assert!(matches!(&h.frames()[..], [Frame::ExecResult(r)] if r.stdout == "11\n"));
    h.start(3, &["file-size", "/data/none"], None);
    assert_eq!(
        h.frames(),
        [
            data(
                3,
                2,
                "test-guest: file-size: no such file: \"/data/none\"\n"
            ),
            exit(3, 1, 0)
        ]
    );
    h.start(4, &["file-sha256"], None);
    assert_eq!(h.frames()[1], exit(4, 2, 0));
    h.start(5, &["file-size", "relative"], None);
    assert_eq!(h.frames()[1], exit(5, 2, 0));
}
