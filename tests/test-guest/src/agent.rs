//! The agent server on vsock: one [`Session`] per connection, driven by
//! polling. Input is read while the connection's queued output is small
//! (so a host that sends faster than it reads is held back by its vsock
//! credit), and frames are taken from the session only as the peer's
//! credit lets them go, so large outputs, files and streams go out in
//! chunks while the main loop keeps serving everything else.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use fastvm_proto::agent::{AGENT_PORT, DATA_CHUNK, Decoder, Frame};
use test_guest::commands::{Disk, Env, Memory};
use test_guest::credit::PeerCredit;
use test_guest::files::FileStore;
use test_guest::network::Network;
use test_guest::program::Effect;
use test_guest::session::{self, Session};
use virtio_drivers::Error;
use virtio_drivers::device::socket::{SocketError, VsockAddr, VsockEvent, VsockEventType};

use crate::cpu;
use crate::devices::{self, Vsock};
use crate::println;

/// Name and version announced in `Ready`.
const AGENT_NAME: &str = concat!("test-guest ", env!("CARGO_PKG_VERSION"));
/// Largest packet body we send.
const MAX_CHUNK: usize = 16 * 1024;
/// Events handled per poll, so the console is never starved.
const EVENTS_PER_POLL: usize = 64;
/// Rounds of reading and sending per connection per poll, for the same reason.
const ROUNDS_PER_POLL: usize = 16;
/// Frames are taken from the session while less than this is unsent.
const OUT_LOW_WATER: usize = DATA_CHUNK;
/// Input is read while less than this is queued to send.
const MAX_BACKLOG: usize = 1 << 20;
/// How often to look for a CID change (a snapshot clone given a new CID),
/// in ms: two MMIO reads each time, so cheap, and a clone answers soon.
const CID_CHECK_MS: u64 = 5;
/// Grace period between flushing the poweroff reply and powering off, in ms.
const POWEROFF_GRACE_MS: u64 = 100;

/// One host connection.
struct Conn {
    peer: VsockAddr,
    port: u32,
    decoder: Decoder,
    session: Session,
    out: Vec<u8>,
    sent: usize,
    credit: PeerCredit,
    /// Shut the connection down once everything queued is sent.
    close_after_flush: bool,
    /// Power the VM off once everything queued is sent.
    poweroff_after_flush: bool,
    dead: bool,
}

impl Conn {
    fn queue(&mut self, frame: &Frame) {
        // Drop what was sent, so a stream that never lets the buffer empty
        // does not grow it (what is left unsent is small: see `send`).
        if self.sent > 0 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        match test_guest::wire::encode(frame) {
            // Take the buffer as is when nothing is pending (large results).
            Ok(bytes) if self.out.is_empty() => self.out = bytes,
            Ok(bytes) => self.out.extend_from_slice(&bytes),
            Err(e) => println!("agent: cannot encode a reply: {e}"),
        }
    }

    fn flushed(&self) -> bool {
        self.sent == self.out.len()
    }

    fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Bytes waiting to go out, encoded or not.
    fn backlog(&self) -> usize {
        self.unsent() + self.session.queued_bytes()
    }

    /// It takes no more frames (closing, or the VM powering off).
    fn stopped(&self) -> bool {
        self.close_after_flush || self.poweroff_after_flush
    }
}

/// What commands act on besides the connection.
pub struct Context<'a> {
    pub memory: &'a mut Memory,
    pub disk: Option<&'a mut dyn Disk>,
    pub files: &'a mut FileStore,
    /// The network the built-ins reach out on (`net-fetch`, `net-ping`).
    pub net: Option<&'a mut dyn Network>,
}

/// The vsock agent.
pub struct Agent {
    base: u64,
    vsock: Option<Vsock>,
    cid: u64,
    conns: Vec<Conn>,
    /// TSC at start: the sessions' clock counts ms from here.
    epoch: u64,
    next_cid_check: u64,
    /// TSC value after which the VM powers off.
    pub power_off_at: Option<u64>,
    /// The last [`Agent::poll`] handled a device event or left work undone.
    progressed: bool,
}

impl Agent {
    /// Starts listening on [`AGENT_PORT`] with the device at `base`.
    pub fn new(base: u64, mut vsock: Vsock) -> Self {
        vsock.listen(AGENT_PORT);
        Agent {
            base,
            cid: vsock.guest_cid(),
            vsock: Some(vsock),
            conns: Vec::new(),
            epoch: cpu::now(),
            next_cid_check: cpu::now() + cpu::ticks(CID_CHECK_MS),
            power_off_at: None,
            progressed: false,
        }
    }

    /// The CID the driver uses.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// One round of work: device events, queued frames, timers, sends.
    pub fn poll(&mut self, ctx: &mut Context<'_>) {
        self.progressed = false;
        self.check_cid();
        let Some(vsock) = self.vsock.as_mut() else {
            return;
        };
        for _ in 0..EVENTS_PER_POLL {
            match vsock.poll() {
                Ok(Some(event)) => {
                    self.progressed = true;
                    on_event(vsock, &mut self.conns, event);
                }
                Ok(None) => break,
                Err(e) => {
                    println!("agent: vsock poll error: {e}");
                    break;
                }
            }
        }
        let (epoch, base) = (self.epoch, self.base);
        for conn in &mut self.conns {
            if serve(vsock, conn, ctx, epoch, base) {
                // Work left for the next poll.
                self.progressed = true;
            }
            if conn.flushed() && !conn.dead {
                if conn.poweroff_after_flush && self.power_off_at.is_none() {
                    self.power_off_at = Some(cpu::now() + cpu::ticks(POWEROFF_GRACE_MS));
                }
                if conn.close_after_flush {
                    let _ = vsock.shutdown(conn.peer, conn.port);
                    conn.dead = true;
                }
            }
        }
        self.conns.retain(|c| !c.dead);
    }

    /// Whether the last [`Agent::poll`] handled a device event or left work
    /// for the next one (so the caller polls again before idling).
    pub fn progressed(&self) -> bool {
        self.progressed
    }

    /// The TSC value of the agent's next timer (a `sleep` ending, a
    /// `tick`, a timeout, the power-off grace), if one runs. Device events
    /// wake the guest through the monitor's idle port, so they need no timer.
    pub fn next_timer(&self) -> Option<u64> {
        let timers = self
            .conns
            .iter()
            .filter(|c| !c.dead && !c.stopped())
            .filter_map(|c| c.session.next_deadline())
            .map(|ms| self.epoch + cpu::ticks(ms));
        timers.chain(self.power_off_at).min()
    }

    /// When the periodic CID check is due (TSC).
    pub fn cid_check_due(&self) -> u64 {
        self.next_cid_check
    }

    /// Looks at the CID on the next poll (the monitor's epoch changed: this
    /// may be a clone with a new identity).
    pub fn check_cid_now(&mut self) {
        self.next_cid_check = 0;
    }

    /// Re-opens the device when its CID changed (a restored snapshot clone):
    /// old connections are gone with the old identity.
    fn check_cid(&mut self) {
        let now = cpu::now();
        if now < self.next_cid_check {
            return;
        }
        self.next_cid_check = now + cpu::ticks(CID_CHECK_MS);
        let cid = devices::current_cid(self.base);
        if cid == self.cid {
            return;
        }
        println!(
            "agent: vsock CID changed {} -> {cid}, re-initialising",
            self.cid
        );
        // The old driver must be gone (queues unset, device reset) before the new one starts.
        drop(self.vsock.take());
        self.conns.clear();
        let dev = test_guest::cmdline::MmioDevice {
            size: 0x1000,
            base: self.base,
            irq: 0,
        };
        match devices::transport(&dev).and_then(devices::open_vsock) {
            Ok(mut vsock) => {
                vsock.listen(AGENT_PORT);
                self.cid = vsock.guest_cid();
                self.vsock = Some(vsock);
            }
            Err(e) => {
                println!("agent: vsock re-initialisation failed: {e}");
                self.cid = cid;
            }
        }
    }
}

/// Applies one device event to the connection table.
fn on_event(vsock: &mut Vsock, conns: &mut Vec<Conn>, event: VsockEvent) {
    let (peer, port) = (event.source, event.destination.port);
    let idx = conns.iter().position(|c| c.peer == peer && c.port == port);
    if let Some(i) = idx {
        let status = &event.buffer_status;
        conns[i]
            .credit
            .update(status.buffer_allocation, status.forward_count);
    }
    match event.event_type {
        VsockEventType::ConnectionRequest => {
            // The manager accepted it (we listen on this port only).
            if let Some(i) = idx {
                conns.swap_remove(i);
            }
            let mut credit = PeerCredit::default();
            let status = &event.buffer_status;
            credit.update(status.buffer_allocation, status.forward_count);
            let mut conn = Conn {
                peer,
                port,
                decoder: Decoder::new(),
                session: Session::new(),
                out: Vec::new(),
                sent: 0,
                credit,
                close_after_flush: false,
                poweroff_after_flush: false,
                dead: false,
            };
            conn.queue(&session::ready(AGENT_NAME));
            conns.push(conn);
        }
        // Read when the connection is served (see `serve`).
        VsockEventType::Received { .. } => {}
        VsockEventType::Disconnected { .. } => {
            let mut buf = [0u8; 512];
            while matches!(vsock.recv(peer, port, &mut buf), Ok(n) if n > 0) {}
            if let Some(i) = idx {
                conns[i].dead = true;
            }
        }
        VsockEventType::Connected
        | VsockEventType::CreditRequest
        | VsockEventType::CreditUpdate => {}
    }
}

/// Serves one connection: fires its timers, moves its programs on the
/// network on, takes the host's frames while little is queued to send, and
/// sends what its credit allows. `epoch` starts the session's clock;
/// `base` is the vsock device's MMIO window (for `mmio-spam`). Whether
/// work is left for the next poll.
fn serve(vsock: &mut Vsock, conn: &mut Conn, ctx: &mut Context<'_>, epoch: u64, base: u64) -> bool {
    if conn.dead {
        return false;
    }
    let clock = move || cpu::ms_between(epoch, cpu::now());
    if !conn.stopped() {
        conn.session.on_time(clock());
    }
    for _ in 0..ROUNDS_PER_POLL {
        if !conn.stopped() {
            conn.session.on_net(clock(), ctx.net.as_deref_mut());
        }
        let mut progress = false;
        while !conn.stopped() && conn.backlog() < MAX_BACKLOG {
            match conn.decoder.next_frame() {
                Ok(Some(frame)) => {
                    progress = true;
                    handle(conn, frame, ctx, &clock, base);
                }
                Ok(None) if receive(vsock, conn) > 0 => progress = true,
                Ok(None) => break,
                Err(e) => {
                    conn.queue(&Frame::Error {
                        message: e.to_string(),
                    });
                    conn.close_after_flush = true;
                }
            }
        }
        progress |= send(vsock, conn, clock());
        if !progress || conn.dead {
            return false;
        }
    }
    true
}

/// Acts on one frame from the host.
fn handle(
    conn: &mut Conn,
    frame: Frame,
    ctx: &mut Context<'_>,
    clock: &dyn Fn() -> u64,
    base: u64,
) {
    let mut env = Env {
        memory: &mut *ctx.memory,
        disk: match ctx.disk {
            Some(ref mut d) => Some(&mut **d),
            None => None,
        },
        files: &mut *ctx.files,
    };
    match conn.session.handle(frame, &mut env, clock) {
        Effect::None => {}
        Effect::Crash => crate::io::crash(),
        Effect::BadMmio(writes) => {
            for _ in 0..writes {
                // SAFETY: `base` is the vsock device's MMIO window, mapped
                // for user access at boot; its offset 0 (magic value) is
                // read-only, so the monitor ignores the write (and warns).
                unsafe { core::ptr::write_volatile(base as *mut u32, 0) };
            }
        }
        Effect::Network { nonce, config } => {
            let applied = match ctx.net.as_deref_mut() {
                Some(net) => net.reconfigure(config),
                None => Err(String::from("no network device")),
            };
            conn.session.answer(match applied {
                Ok(()) => Frame::Pong { nonce },
                Err(why) => Frame::Error {
                    message: format!("test-guest: setNetwork: {why}"),
                },
            });
        }
        Effect::PowerOff => {
            // Its exit goes out with everything queued before it; nothing after.
            for frame in conn.session.take_queued() {
                conn.queue(&frame);
            }
            conn.poweroff_after_flush = true;
        }
    }
}

/// Reads what the host sent into the decoder (one buffer's worth, so the
/// decoder stays small); the bytes read.
fn receive(vsock: &mut Vsock, conn: &mut Conn) -> usize {
    let mut buf = [0u8; 4096];
    match vsock.recv(conn.peer, conn.port, &mut buf) {
        Ok(n) if n > 0 => {
            conn.decoder.push(&buf[..n]);
            // Tell the host the space is free again.
            let _ = vsock.update_credit(conn.peer, conn.port);
            n
        }
        _ => 0,
    }
}

/// Takes frames from the session as the unsent output drains, and sends
/// what the peer's credit allows; whether anything was sent or taken.
fn send(vsock: &mut Vsock, conn: &mut Conn, now: u64) -> bool {
    let mut progress = false;
    loop {
        while !conn.stopped() && conn.unsent() < OUT_LOW_WATER {
            let Some(frame) = conn.session.next_frame(now) else {
                break;
            };
            conn.queue(&frame);
            progress = true;
        }
        let was = conn.unsent();
        flush(vsock, conn);
        if conn.dead || conn.unsent() == was {
            return progress;
        }
        progress = true;
    }
}

/// Sends as much queued output as the peer's credit allows.
fn flush(vsock: &mut Vsock, conn: &mut Conn) {
    while !conn.dead && !conn.flushed() {
        let left = conn.out.len() - conn.sent;
        let free = conn.credit.free() as usize;
        // With no known credit, let the driver decide: it asks the peer for an update.
        let n = if free > 0 { left.min(free) } else { left }.min(MAX_CHUNK);
        match vsock.send(conn.peer, conn.port, &conn.out[conn.sent..conn.sent + n]) {
            Ok(()) => {
                conn.sent += n;
                conn.credit.sent(n);
            }
            Err(Error::SocketDeviceError(SocketError::InsufficientBufferSpaceInPeer)) => return,
            Err(e) => {
                println!("agent: send failed, dropping connection: {e}");
                conn.dead = true;
            }
        }
    }
    if conn.flushed() && !conn.out.is_empty() {
        conn.sent = 0;
        if conn.out.capacity() > MAX_BACKLOG {
            // Give a large result's buffer back.
            conn.out = Vec::new();
        } else {
            conn.out.clear();
        }
    }
}
