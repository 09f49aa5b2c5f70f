//! Entry points of the fuzz targets (`fastvmd/fuzz`, `cargo +nightly fuzz
//! run TARGET`): one function per parser of guest- or client-controlled
//! bytes. Each must return for any input without panicking, hanging or
//! allocating without bound. `fastvmd/tests/fuzz_corpus.rs` runs every
//! committed corpus input through them on stable, so `cargo test` replays
//! what fuzzing found.

mod virtio;

use std::path::Path;

pub use crate::vmm::fuzzing::{virtio_net, virtio_vsock};
pub use virtio::virtio_blk;

use fastvm_proto::agent::{Decoder, HEADER_LEN, MAX_PAYLOAD};
use fastvm_proto::socket::SocketRequest;

use crate::vmm::machine::snapshot::MachineState;
use crate::vmm::snapshot::{Manifest, decode_state, unwrap_vmstate};

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target, by name (the corpus directory and fuzz target names).
pub const TARGETS: &[(&str, Target)] = &[
    ("agent_frames", agent_frames),
    ("firewall_frame", firewall_frame),
    ("socket_request", socket_request),
    ("vmstate", vmstate),
    ("manifest", manifest),
    ("virtio_blk", virtio_blk),
    ("virtio_vsock", virtio_vsock),
    ("virtio_net", virtio_net),
];

/// Bytes from a malicious guest agent, fed to the host's frame decoder in
/// pieces of the sizes the first bytes pick; the decoder never holds more
/// than one frame's worth.
pub fn agent_frames(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split).max(1);
    let mut decoder = Decoder::new();
    for chunk in rest.chunks(piece) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                // The host drops a connection on a bad frame.
                Err(_) => return,
            }
        }
        assert!(decoder.pending() <= HEADER_LEN + MAX_PAYLOAD + piece);
    }
}

/// Ethernet frames from the outside world and from the guest: one frame
/// judged by a restricted policy with rules of every kind and by the open
/// one, then the same bytes as a sequence of frames each way through a flow
/// table (see [`crate::net::firewall::fuzz_frames`]).
pub fn firewall_frame(data: &[u8]) {
    crate::net::firewall::fuzz_frames(data);
}

/// A line a local socket client sends.
pub fn socket_request(data: &[u8]) {
    if let Ok(req) = fastvm_proto::socket::decode_frame::<SocketRequest>(data) {
        let _ = req.parsed_op();
    }
}

/// A snapshot's `vmstate`, which a restoring monitor reads before it
/// confines itself: the container, and the state behind a valid checksum
/// (whoever wrote the file could compute one), tried both in and out of
/// its container so the fuzzer need not forge CRCs.
pub fn vmstate(data: &[u8]) {
    if let Ok(payload) = unwrap_vmstate(Path::new("vmstate"), data) {
        let _ = decode_state::<MachineState>(payload);
    }
    let _ = decode_state::<MachineState>(data);
    if let Some(payload) = data.get(crate::vmm::snapshot::vmstate::VMSTATE_HEADER_LEN..) {
        let _ = decode_state::<MachineState>(payload);
    }
}

/// A snapshot's `manifest.json`.
pub fn manifest(data: &[u8]) {
    let _ = Manifest::parse(Path::new("manifest.json"), data);
}
