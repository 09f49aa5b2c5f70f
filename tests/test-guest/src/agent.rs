//! The agent server on vsock: one state machine per connection, driven by
//! polling. Sends respect the peer's credit, so large replies go out in
//! chunks while the main loop keeps serving everything else.

use alloc::collections::VecDeque;
use alloc::string::ToString;
use alloc::vec::Vec;

use fastvm_proto::agent::{AGENT_PORT, Decoder, Frame, PROTOCOL_VERSION, Ready, TIMEOUT_EXIT_CODE};
use test_guest::commands::{self, Action, Disk, Memory, Output};
use test_guest::credit::PeerCredit;
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
/// How often to look for a CID change (a snapshot clone given a new CID),
/// in ms: two MMIO reads each time, so cheap, and a clone answers soon.
const CID_CHECK_MS: u64 = 5;
/// Grace period between flushing the poweroff reply and powering off, in ms.
const POWEROFF_GRACE_MS: u64 = 100;

/// A `sleep` in progress.
struct Waiting {
    start: u64,
    deadline: u64,
    output: Output,
    /// The request's timeout ends it before the sleep does.
    times_out: bool,
}

/// One host connection.
struct Conn {
    peer: VsockAddr,
    port: u32,
    decoder: Decoder,
    inbox: VecDeque<Frame>,
    out: Vec<u8>,
    sent: usize,
    credit: PeerCredit,
    waiting: Option<Waiting>,
    /// Shut the connection down once everything queued is sent.
    close_after_flush: bool,
    /// Power the VM off once everything queued is sent.
    poweroff_after_flush: bool,
    dead: bool,
}

impl Conn {
    fn queue(&mut self, frame: &Frame) {
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
}

/// What commands act on besides the connection.
pub struct Context<'a> {
    pub memory: &'a mut Memory,
    pub disk: Option<&'a mut dyn Disk>,
}

/// The vsock agent.
pub struct Agent {
    base: u64,
    vsock: Option<Vsock>,
    cid: u64,
    conns: Vec<Conn>,
    next_cid_check: u64,
    /// TSC value after which the VM powers off.
    pub power_off_at: Option<u64>,
    /// The last [`Agent::poll`] handled a device event.
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
        let now = cpu::now();
        let base = self.base;
        for conn in &mut self.conns {
            serve(conn, ctx, now, base);
            flush(vsock, conn);
            if conn.flushed() && !conn.dead {
                if conn.poweroff_after_flush && self.power_off_at.is_none() {
                    self.power_off_at = Some(now + cpu::ticks(POWEROFF_GRACE_MS));
                }
                if conn.close_after_flush {
                    let _ = vsock.shutdown(conn.peer, conn.port);
                    conn.dead = true;
                }
            }
        }
        self.conns.retain(|c| !c.dead);
    }

    /// Whether the last [`Agent::poll`] handled a device event.
    pub fn progressed(&self) -> bool {
        self.progressed
    }

    /// The TSC value of the agent's next timer (a `sleep` ending, the
    /// power-off grace), if one runs. Device events wake the guest through
    /// the monitor's idle port, so they need no timer.
    pub fn next_timer(&self) -> Option<u64> {
        let timers = self
            .conns
            .iter()
            .filter_map(|c| c.waiting.as_ref().map(|w| w.deadline));
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
                inbox: VecDeque::new(),
                out: Vec::new(),
                sent: 0,
                credit,
                waiting: None,
                close_after_flush: false,
                poweroff_after_flush: false,
                dead: false,
            };
            conn.queue(&Frame::Ready(Ready {
                version: PROTOCOL_VERSION,
                agent: AGENT_NAME.to_string(),
            }));
            conns.push(conn);
        }
        VsockEventType::Received { .. } => {
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while let Ok(n) = vsock.recv(peer, port, &mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            // Tell the host the space is free again.
            let _ = vsock.update_credit(peer, port);
            let Some(i) = idx else {
                return;
            };
            let conn = &mut conns[i];
            conn.decoder.push(&got);
            loop {
                match conn.decoder.next_frame() {
                    Ok(Some(frame)) => conn.inbox.push_back(frame),
                    Ok(None) => break,
                    Err(e) => {
                        conn.queue(&Frame::Error {
                            message: e.to_string(),
                        });
                        conn.close_after_flush = true;
                        break;
                    }
                }
            }
        }
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

/// Handles queued frames and finished sleeps of one connection; `base` is
/// the vsock device's MMIO window (for `mmio-spam`).
fn serve(conn: &mut Conn, ctx: &mut Context<'_>, now: u64, base: u64) {
    if conn.dead || conn.close_after_flush {
        return;
    }
    if let Some(w) = &conn.waiting {
        if now < w.deadline {
            return;
        }
        let w = conn.waiting.take().expect("checked above");
        let mut result = w.output.finish(cpu::ms_between(w.start, now));
        if w.times_out {
            result.exit_code = TIMEOUT_EXIT_CODE;
            result.timed_out = true;
        }
        conn.queue(&Frame::ExecResult(result));
    }
    while conn.waiting.is_none() && !conn.poweroff_after_flush {
        let Some(frame) = conn.inbox.pop_front() else {
            break;
        };
        match frame {
            Frame::Ping { nonce } => conn.queue(&Frame::Pong { nonce }),
            Frame::Exec(req) => {
                let start = cpu::now();
                let disk: Option<&mut dyn Disk> = match ctx.disk {
                    Some(ref mut d) => Some(&mut **d),
                    None => None,
                };
                match commands::run(&req, ctx.memory, disk) {
                    Action::Done(output) => {
                        let result = output.finish(cpu::ms_between(start, cpu::now()));
                        conn.queue(&Frame::ExecResult(result));
                    }
                    Action::Sleep { ms, output } => {
                        // Like guest-agent, the command ends at its timeout.
                        let limit = req.timeout_ms.filter(|t| *t < ms);
                        conn.waiting = Some(Waiting {
                            start,
                            deadline: start + cpu::ticks(limit.unwrap_or(ms)),
                            output,
                            times_out: limit.is_some(),
                        });
                    }
                    Action::PowerOff(output) => {
                        let result = output.finish(cpu::ms_between(start, cpu::now()));
                        conn.queue(&Frame::ExecResult(result));
                        conn.poweroff_after_flush = true;
                    }
                    Action::Crash => crate::io::crash(),
                    Action::BadMmio { writes, output } => {
                        for _ in 0..writes {
                            // SAFETY: `base` is the vsock device's MMIO
                            // window, mapped for user access at boot; its
                            // offset 0 (magic value) is read-only, so the
                            // monitor ignores the write (and warns).
                            unsafe { core::ptr::write_volatile(base as *mut u32, 0) };
                        }
                        let result = output.finish(cpu::ms_between(start, cpu::now()));
                        conn.queue(&Frame::ExecResult(result));
                    }
                }
            }
            other => {
                let message = alloc::format!("test-guest: unexpected frame {}", other.describe());
                conn.queue(&Frame::Error { message });
            }
        }
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
        conn.out.clear();
        conn.sent = 0;
    }
}
