//! Tests of the vsock device without KVM: the test thread plays the guest
//! driver on mock split queues in plain guest memory, and real Unix streams
//! play the host side.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::Queue;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_vsock::packet::PKT_HEADER_SIZE;
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::Vsock;
use super::packet::*;
use crate::devices::virtio::{GuestMemory, Interrupt, VirtioDevice};

mod connect;
mod flow;
mod persist;

const CID: u64 = 3;
const QSIZE: u16 = 256;
const RX_BUFS: u16 = 16;
const SLOT: u64 = 0x2000;
const RX_BASE: u64 = 0x10_0000;
const TX_BASE: u64 = 0x40_0000;
const EV_BASE: u64 = 0x80_0000;
const RX_DATA: u32 = 4096;
const WAIT: Duration = Duration::from_secs(3);
const HDR: usize = PKT_HEADER_SIZE;

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
}

/// The test's guest driver.
struct Guest<'a> {
    mem: &'a GuestMemory,
    rxq: MockSplitQueue<'a, GuestMemory>,
    txq: MockSplitQueue<'a, GuestMemory>,
    evq: MockSplitQueue<'a, GuestMemory>,
    rx_seen: u16,
    tx_next: u16,
}

impl<'a> Guest<'a> {
    fn new(mem: &'a GuestMemory) -> Self {
        Guest {
            mem,
            rxq: MockSplitQueue::create(mem, GuestAddress(0), QSIZE),
            txq: MockSplitQueue::create(mem, GuestAddress(0x4000), QSIZE),
            evq: MockSplitQueue::create(mem, GuestAddress(0x8000), QSIZE),
            rx_seen: 0,
            tx_next: 0,
        }
    }

    fn queues(&self) -> Vec<Queue> {
        vec![
            self.rxq.create_queue().unwrap(),
            self.txq.create_queue().unwrap(),
            self.evq.create_queue().unwrap(),
        ]
    }

    fn post_rx(&self, idx: u16) {
        let addr = RX_BASE + u64::from(idx) * SLOT;
        let desc = SplitDescriptor::new(addr, HDR as u32 + RX_DATA, 2, 0);
        self.rxq
            .add_desc_chains(&[RawDescriptor::from(desc)], idx)
            .unwrap();
    }

    fn post_rx_all(&self) {
        for i in 0..RX_BUFS {
            self.post_rx(i);
        }
    }

    /// Waits for one RX packet (and gives its buffer back to the device).
    fn try_recv(&mut self, dev: &mut Vsock, timeout: Duration) -> Option<(Hdr, Vec<u8>)> {
        let end = Instant::now() + timeout;
        loop {
            if self.rxq.used().idx().load() != self.rx_seen {
                break;
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let elem = self
            .rxq
            .used()
            .ring()
            .ref_at(usize::from(self.rx_seen % QSIZE))
            .unwrap()
            .load();
        self.rx_seen = self.rx_seen.wrapping_add(1);
        let id = elem.id() as u16;
        let addr = GuestAddress(RX_BASE + u64::from(id) * SLOT);
        let mut raw = [0u8; HDR];
        self.mem.read_slice(&mut raw, addr).unwrap();
        let hdr = Hdr::from_bytes(&raw);
        assert_eq!(elem.len() as usize, HDR + hdr.len as usize, "used length");
        let mut data = vec![0u8; hdr.len as usize];
        self.mem
            .read_slice(&mut data, addr.unchecked_add(HDR as u64))
            .unwrap();
        self.post_rx(id);
        dev.queue_notify(0);
        Some((hdr, data))
    }

    fn recv(&mut self, dev: &mut Vsock) -> (Hdr, Vec<u8>) {
        self.try_recv(dev, WAIT)
            .expect("no RX packet from the device")
    }

    fn expect_quiet(&mut self, dev: &mut Vsock, d: Duration) {
        if let Some((h, _)) = self.try_recv(dev, d) {
            panic!("unexpected RX packet {h:?}");
        }
    }

    /// Queues raw bytes as one TX descriptor and notifies.
    fn send_raw(&mut self, dev: &mut Vsock, bytes: &[u8], flags: u16) {
        let idx = self.tx_next % QSIZE;
        self.tx_next = self.tx_next.wrapping_add(1);
        let addr = TX_BASE + u64::from(idx % 64) * SLOT;
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        let desc = SplitDescriptor::new(addr, bytes.len() as u32, flags, 0);
        self.txq
            .add_desc_chains(&[RawDescriptor::from(desc)], idx)
            .unwrap();
        dev.queue_notify(1);
    }

    fn send(&mut self, dev: &mut Vsock, mut hdr: Hdr, data: &[u8]) {
        hdr.len = data.len() as u32;
        let mut bytes = hdr.to_bytes().to_vec();
        bytes.extend_from_slice(data);
        self.send_raw(dev, &bytes, 0);
    }
}

/// A header from the guest.
fn ghdr(op: u16, src_port: u32, dst_port: u32) -> Hdr {
    Hdr {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        type_: TYPE_STREAM,
        op,
        buf_alloc: 64 * 1024,
        ..Hdr::default()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    dev: Vsock,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vsock.sock");
    let dev = Vsock::new(CID, path.clone()).unwrap();
    Setup {
        _dir: dir,
        path,
        dev,
    }
}

/// A guest driver with every RX buffer posted, on an activated device.
fn active_guest<'a>(dev: &mut Vsock, mem: &'a GuestMemory) -> Guest<'a> {
    let g = Guest::new(mem);
    g.post_rx_all();
    activate(dev, mem, &g);
    g
}

fn activate(dev: &mut Vsock, mem: &GuestMemory, g: &Guest<'_>) {
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    dev.activate(mem.clone(), g.queues(), irq, 1 << 32).unwrap();
}

fn host_connect(path: &Path, line: &str) -> UnixStream {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    s
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        let n = s.read(&mut b).expect("reading the handshake reply");
        assert_eq!(n, 1, "stream closed before the reply line");
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

fn read_exact(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("reading host data");
    buf
}

/// Asserts the device closed the host stream (EOF or reset, not a timeout).
fn expect_closed(s: &mut UnixStream) {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("host stream not closed: {e}"),
        }
    }
}

/// Host-initiated connection up to the `OK` line; returns the stream and the
/// host-side port.
fn establish(g: &mut Guest<'_>, dev: &mut Vsock, path: &Path, port: u32) -> (UnixStream, u32) {
    let mut s = host_connect(path, &format!("CONNECT {port}\n"));
    let (req, _) = g.recv(dev);
    assert_eq!(req.op, OP_REQUEST);
    let local = req.src_port;
    g.send(dev, ghdr(OP_RESPONSE, port, local), &[]);
    assert_eq!(read_line(&mut s), format!("OK {local}\n"));
    (s, local)
}
