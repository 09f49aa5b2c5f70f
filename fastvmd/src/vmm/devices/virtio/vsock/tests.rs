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
use crate::vmm::devices::virtio::{GuestMemory, Interrupt, VirtioDevice};

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

#[test]
fn host_connect_request_response_and_data() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    // The host client connects before the driver is up.
    let mut s = host_connect(&path, "CONNECT 5000\n");
    std::thread::sleep(Duration::from_millis(50));
    activate(&mut dev, &mem, &g);

    let (req, data) = g.recv(&mut dev);
    assert_eq!(req.op, OP_REQUEST);
    assert_eq!(req.type_, TYPE_STREAM);
    assert_eq!((req.src_cid, req.dst_cid), (HOST_CID, CID));
    assert_eq!(req.dst_port, 5000);
    assert!(req.src_port >= 1 << 30, "host port {}", req.src_port);
    assert!(req.buf_alloc > 0);
    assert!(data.is_empty());
    let local = req.src_port;

    g.send(&mut dev, ghdr(OP_RESPONSE, 5000, local), &[]);
    assert_eq!(read_line(&mut s), format!("OK {local}\n"));

    s.write_all(b"hello").unwrap();
    let (rw, data) = g.recv(&mut dev);
    assert_eq!(rw.op, OP_RW);
    assert_eq!((rw.src_port, rw.dst_port), (local, 5000));
    assert_eq!(data, b"hello");

    g.send(&mut dev, ghdr(OP_RW, 5000, local), b"world");
    assert_eq!(read_exact(&mut s, 5), b"world");
}

#[test]
fn guest_rst_closes_host_stream() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);
    let mut s = host_connect(&path, "CONNECT 77\n");
    let (req, _) = g.recv(&mut dev);
    assert_eq!(req.op, OP_REQUEST);
    g.send(&mut dev, ghdr(OP_RST, 77, req.src_port), &[]);
    expect_closed(&mut s);
    g.expect_quiet(&mut dev, Duration::from_millis(100));
}

#[test]
fn bad_connect_lines_close_host_stream() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);
    for line in [
        "HELLO\n",
        "CONNECT abc\n",
        "CONNECT \n",
        "CONNECT 99999999999\n",
        "CONNECT 1 2\n",
    ] {
        let mut s = host_connect(&path, line);
        expect_closed(&mut s);
    }
    // Overlong line without a newline.
    let mut s = host_connect(&path, &"x".repeat(100));
    expect_closed(&mut s);
    g.expect_quiet(&mut dev, Duration::from_millis(100));
}

#[test]
fn response_timeout_closes_host_stream() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);
    let mut s = host_connect(&path, "CONNECT 80\n");
    let (req, _) = g.recv(&mut dev);
    assert_eq!(req.op, OP_REQUEST);
    let start = Instant::now();
    expect_closed(&mut s);
    assert!(start.elapsed() >= Duration::from_millis(1500));
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (req.src_port, 80));
}

#[test]
fn guest_connect_to_missing_socket_gets_rst() {
    let mem = memory();
    let Setup { _dir, mut dev, .. } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);
    g.send(&mut dev, ghdr(OP_REQUEST, 1234, 9999), &[]);
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
    assert_eq!((rst.src_cid, rst.dst_cid), (HOST_CID, CID));
    assert_eq!((rst.src_port, rst.dst_port), (9999, 1234));
}

#[test]
fn guest_connect_to_host_listener() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut name = path.clone().into_os_string();
    name.push("_7000");
    let listener = UnixListener::bind(&name).unwrap();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);

    g.send(&mut dev, ghdr(OP_REQUEST, 1500, 7000), &[]);
    let (resp, _) = g.recv(&mut dev);
    assert_eq!(resp.op, OP_RESPONSE);
    assert_eq!((resp.src_port, resp.dst_port), (7000, 1500));
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();

    g.send(&mut dev, ghdr(OP_RW, 1500, 7000), b"ping");
    assert_eq!(read_exact(&mut s, 4), b"ping");
    s.write_all(b"pong").unwrap();
    let (rw, data) = g.recv(&mut dev);
    assert_eq!(rw.op, OP_RW);
    assert_eq!(data, b"pong");

    // Host closes: the guest is told with a SHUTDOWN, answers RST.
    drop(s);
    let (shut, _) = g.recv(&mut dev);
    assert_eq!(shut.op, OP_SHUTDOWN);
    assert_eq!(shut.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    g.send(&mut dev, ghdr(OP_RST, 1500, 7000), &[]);
    g.expect_quiet(&mut dev, Duration::from_millis(100));
}

#[test]
fn unknown_connection_gets_rst() {
    let mem = memory();
    let Setup { _dir, mut dev, .. } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);
    g.send(&mut dev, ghdr(OP_RW, 1111, 2222), b"data");
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (2222, 1111));
    // An RST for an unknown connection is not answered.
    g.send(&mut dev, ghdr(OP_RST, 1111, 2222), &[]);
    g.expect_quiet(&mut dev, Duration::from_millis(100));
}

#[test]
fn credit_limits_host_to_guest() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);
    let mut s = host_connect(&path, "CONNECT 42\n");
    let (req, _) = g.recv(&mut dev);
    let local = req.src_port;
    let mut resp = ghdr(OP_RESPONSE, 42, local);
    resp.buf_alloc = 100;
    g.send(&mut dev, resp, &[]);
    assert_eq!(read_line(&mut s), format!("OK {local}\n"));

    let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    s.write_all(&payload).unwrap();
    let mut got = Vec::new();
    while got.len() < 100 {
        let (rw, data) = g.recv(&mut dev);
        assert_eq!(rw.op, OP_RW);
        got.extend(data);
    }
    assert_eq!(got.len(), 100, "device exceeded the guest's credit");
    g.expect_quiet(&mut dev, Duration::from_millis(300));

    // The guest consumed 100 bytes.
    let mut upd = ghdr(OP_CREDIT_UPDATE, 42, local);
    upd.buf_alloc = 100;
    upd.fwd_cnt = 100;
    g.send(&mut dev, upd, &[]);
    while got.len() < 200 {
        let (rw, data) = g.recv(&mut dev);
        assert_eq!(rw.op, OP_RW);
        got.extend(data);
    }
    assert_eq!(got.len(), 200);
    g.expect_quiet(&mut dev, Duration::from_millis(300));
    assert_eq!(got, payload[..200]);

    // CREDIT_REQUEST is answered with our credit.
    let mut creq = ghdr(OP_CREDIT_REQUEST, 42, local);
    creq.buf_alloc = 100;
    creq.fwd_cnt = 100;
    g.send(&mut dev, creq, &[]);
    let (cu, _) = g.recv(&mut dev);
    assert_eq!(cu.op, OP_CREDIT_UPDATE);
    assert!(cu.buf_alloc > 0);
}

#[test]
fn guest_shutdown_closes_host_after_drain() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);
    let (mut s, local) = establish(&mut g, &mut dev, &path, 90);
    g.send(&mut dev, ghdr(OP_RW, 90, local), b"bye");
    let mut shut = ghdr(OP_SHUTDOWN, 90, local);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(&mut dev, shut, &[]);
    assert_eq!(read_exact(&mut s, 3), b"bye");
    expect_closed(&mut s);
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
}

#[test]
fn transport_reset_event_drops_connections() {
    let mem = memory();
    let Setup {
        _dir,
        path,
        mut dev,
    } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    let desc = SplitDescriptor::new(EV_BASE, 8, 2, 0);
    g.evq
        .add_desc_chains(&[RawDescriptor::from(desc)], 0)
        .unwrap();
    mem.write_obj(0xffff_ffffu32, GuestAddress(EV_BASE))
        .unwrap();
    activate(&mut dev, &mem, &g);
    let (mut s, _) = establish(&mut g, &mut dev, &path, 91);

    dev.send_transport_reset();
    assert_eq!(g.evq.used().idx().load(), 1);
    let elem = g.evq.used().ring().ref_at(0).unwrap().load();
    assert_eq!((elem.id(), elem.len()), (0, 4));
    let ev: u32 = mem.read_obj(GuestAddress(EV_BASE)).unwrap();
    assert_eq!(ev, EVENT_TRANSPORT_RESET);
    expect_closed(&mut s);
    g.expect_quiet(&mut dev, Duration::from_millis(100));
}

#[test]
fn malformed_tx_packets_are_dropped() {
    let mem = memory();
    let Setup { _dir, mut dev, .. } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);
    // Too short for a header.
    g.send_raw(&mut dev, &[0u8; 10], 0);
    // Write-only TX descriptor.
    g.send_raw(&mut dev, &ghdr(OP_RW, 1, 2).to_bytes(), 2);
    // Header claims far more payload than there is.
    let mut h = ghdr(OP_RW, 1, 2);
    h.len = 1 << 30;
    g.send_raw(&mut dev, &h.to_bytes(), 0);
    let mut h = ghdr(OP_RW, 1, 2);
    h.len = 1000;
    g.send_raw(&mut dev, &h.to_bytes(), 0);
    // Wrong CIDs are dropped silently.
    let mut h = ghdr(OP_RW, 1, 2);
    h.src_cid = 77;
    g.send_raw(&mut dev, &h.to_bytes(), 0);
    assert_eq!(g.txq.used().idx().load(), 5, "every TX buffer returned");
    g.expect_quiet(&mut dev, Duration::from_millis(100));
    // Still serving: an unknown connection gets its RST.
    g.send(&mut dev, ghdr(OP_RW, 3, 4), b"x");
    let (rst, _) = g.recv(&mut dev);
    assert_eq!(rst.op, OP_RST);
}

#[test]
fn config_and_identity() {
    let Setup { _dir, dev, .. } = setup();
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.features(), 1 << 32);
    assert_eq!(dev.queue_max_sizes(), &[256, 256, 256]);
    let mut cfg = [0xaau8; 12];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..8], &CID.to_le_bytes());
    assert_eq!(&cfg[8..], &[0; 4]);
    assert!(Vsock::new(2, _dir.path().join("other")).is_err());
}

#[test]
fn bulk_data_both_ways_with_credit_updates() {
    let mem = memory();
    let Setup { _dir, path, mut dev } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);
    let (s, local) = establish(&mut g, &mut dev, &path, 95);

    // Host -> guest: 200 KiB while the guest advertises 64 KiB and returns
    // credit as it consumes.
    let payload: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut writer = s.try_clone().unwrap();
    let expected = payload.clone();
    let t = std::thread::spawn(move || writer.write_all(&payload).unwrap());
    let mut got = Vec::new();
    let mut advertised = 0usize;
    while got.len() < expected.len() {
        let (rw, data) = g.recv(&mut dev);
        assert_eq!(rw.op, OP_RW);
        got.extend(data);
        assert!(got.len() - advertised <= 64 * 1024, "beyond the guest's credit");
        if got.len() - advertised >= 16 * 1024 {
            let mut upd = ghdr(OP_CREDIT_UPDATE, 95, local);
            upd.fwd_cnt = got.len() as u32;
            g.send(&mut dev, upd, &[]);
            advertised = got.len();
        }
    }
    t.join().unwrap();
    assert_eq!(got, expected);

    // Guest -> host: 128 KiB before the host reads anything (within our
    // advertised buffer), then the host reads it all.
    let chunk: Vec<u8> = (0..4096u32).map(|i| (i % 13) as u8).collect();
    for _ in 0..32 {
        g.send(&mut dev, ghdr(OP_RW, 95, local), &chunk);
    }
    let mut s = s;
    for _ in 0..32 {
        assert_eq!(read_exact(&mut s, chunk.len()), chunk);
    }
    // Consuming that much makes the device advertise its fwd_cnt.
    let end = Instant::now() + WAIT;
    loop {
        let (h, _) = g.recv(&mut dev);
        if h.fwd_cnt == 128 * 1024 {
            break;
        }
        assert!(Instant::now() < end, "no credit update");
    }
}

#[test]
fn device_reset_closes_host_streams() {
    let mem = memory();
    let Setup { _dir, path, mut dev } = setup();
    let mut g = Guest::new(&mem);
    g.post_rx_all();
    activate(&mut dev, &mem, &g);
    let (mut s, _) = establish(&mut g, &mut dev, &path, 96);
    dev.reset();
    expect_closed(&mut s);
    // The listener survives a reset: a new client waits for activation.
    let _s2 = host_connect(&path, "CONNECT 97\n");
}
