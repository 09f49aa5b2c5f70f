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
use fastvm_proto::api::FirewallPolicy;
use fastvm_proto::socket::SocketRequest;

use crate::net::firewall::Filter;
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

/// An Ethernet frame from the outside world, judged by a restricted policy
/// with rules of every kind (compiled once per process), and by the open one.
pub fn firewall_frame(data: &[u8]) {
    static RESTRICTED: std::sync::OnceLock<Filter> = std::sync::OnceLock::new();
    let filter = RESTRICTED.get_or_init(|| {
        let policy: FirewallPolicy = serde_json::from_str(
            r#"{"mode":"restricted","ingress":[
                {"protocol":"tcp","portStart":22},
                {"protocol":"udp","portStart":5000,"portEnd":5100,"sourceCidrs":["fd00::/8"]},
                {"protocol":"tcp","portStart":8000,"sourceCidrs":["2001:db8::1"]}
            ]}"#,
        )
        .expect("a valid policy");
        Filter::compile(&policy).expect("a valid policy")
    });
    let _ = filter.check_frame(data);
    let _ = Filter::open().check_frame(data);
    if data.len() > 14 {
        let _ = filter.check_ipv6(&data[14..]);
    }
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
