//! One vsock stream connection: its host stream, state, buffers and credit.
//!
//! Flow control follows the virtio-vsock credit scheme. Guest to host: we
//! advertise [`BUF_ALLOC`] bytes and `fwd_cnt` (bytes written to the host
//! stream); the guest never has more than `BUF_ALLOC` bytes in flight, which
//! bounds `tx_buf`. Host to guest: we read from the host stream only as much as
//! the guest's credit (`peer_buf_alloc - (rx_cnt - peer_fwd_cnt)`) allows, into
//! `rx_buf`, bounded by [`RX_BUF_MAX`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use super::packet::{HOST_CID, Hdr, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// Receive buffer we advertise to the guest for each connection.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Bound of host data read ahead for the guest, per connection.
pub const RX_BUF_MAX: usize = 64 * 1024;
/// Send a CREDIT_UPDATE once this much was consumed since the last advertised
/// `fwd_cnt`.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// How long the guest has to answer a REQUEST (counted from the moment the
/// REQUEST is placed in the RX queue, so a slow-booting driver is waited for).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guest has to answer our SHUTDOWN with an RST, and how long
/// the host stream has to drain after the guest shut down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Guest-initiated: the host socket is being connected (no stream yet).
    Connecting,
    /// Host-initiated: REQUEST queued for or sent to the guest.
    LocalInit,
    /// Both sides agreed; data may flow.
    Established,
}

/// What became of a connection after an operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it.
    Keep,
    /// Drop it and send the guest an RST.
    Reset,
    /// Drop it silently (the guest already knows).
    Drop,
}

/// A vsock connection between a guest port and a host Unix stream.
#[derive(Debug)]
pub struct Connection {
    /// Host stream (none while `Connecting`).
    pub stream: Option<UnixStream>,
    /// Epoll token of the stream.
    pub token: u64,
    pub state: State,
    /// Host side port.
    pub local_port: u32,
    /// Guest side port.
    pub peer_port: u32,
    guest_cid: u64,
    /// Guest -> host bytes not yet written to the host stream.
    tx_buf: VecDeque<u8>,
    /// Guest bytes written to the host stream.
    fwd_cnt: u32,
    last_fwd_cnt_sent: u32,
    /// Host -> guest bytes read from the stream, not yet in the RX queue.
    rx_buf: VecDeque<u8>,
    /// Bytes sent to the guest.
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// The host stream has data we have not read (level seen by epoll).
    pub readable: bool,
    /// The host stream hung up (removed from epoll; read until EOF).
    pub hup: bool,
    /// Read returned EOF.
    rx_eof: bool,
    pub peer_shut_send: bool,
    pub peer_shut_rcv: bool,
    /// REQUEST was put in the RX queue.
    pub request_sent: bool,
    /// RESPONSE must be sent.
    pub pending_response: bool,
    /// CREDIT_UPDATE must be sent.
    pub pending_credit_update: bool,
    /// SHUTDOWN was sent (after host EOF).
    pub shutdown_sent: bool,
    /// When to give up (waiting for RESPONSE, or for RST after SHUTDOWN).
    pub deadline: Option<Instant>,
    /// Interest currently registered with epoll (None: not registered).
    pub registered: Option<EventSet>,
}

impl Connection {
    /// A connection in `state` for the given ports.
    pub fn new(
        state: State,
        stream: Option<UnixStream>,
        token: u64,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
    ) -> Self {
        Connection {
            stream,
            token,
            state,
            local_port,
            peer_port,
            guest_cid,
            tx_buf: VecDeque::new(),
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            rx_buf: VecDeque::new(),
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            readable: false,
            hup: false,
            rx_eof: false,
            peer_shut_send: false,
            peer_shut_rcv: false,
            request_sent: false,
            pending_response: false,
            pending_credit_update: false,
            shutdown_sent: false,
            deadline: None,
            registered: None,
        }
    }

    /// Records the guest's credit information carried by every packet.
    pub fn update_peer_credit(&mut self, hdr: &Hdr) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
    }

    /// How many more bytes the guest can take.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Puts host bytes read before the connection was established (after the
    /// CONNECT line) in front of the stream's data.
    pub fn push_early_rx(&mut self, bytes: &[u8]) {
        self.rx_buf.extend(bytes);
    }

    /// The epoll interest this connection needs (None: keep it out of epoll).
    pub fn wanted_interest(&self) -> Option<EventSet> {
        if self.stream.is_none() || self.hup {
            return None;
        }
        let mut ev = EventSet::empty();
        if self.state == State::Established && !self.rx_eof && !self.readable {
            ev |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            ev |= EventSet::OUT;
        }
        Some(ev)
    }

    /// A header from host to guest for this connection.
    pub fn header(&mut self, op: u16) -> Hdr {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.pending_credit_update = false;
        Hdr {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Guest payload for the host stream.
    pub fn recv_from_guest(&mut self, data: &[u8]) -> Verdict {
        if self.state != State::Established || self.peer_shut_send {
            crate::guest_warn!(
                "vsock: RW in wrong state",
                port = self.local_port,
                "vsock: RW in wrong state"
            );
            return Verdict::Reset;
        }
        if self.tx_buf.len() + data.len() > BUF_ALLOC as usize {
            crate::guest_warn!(
                "vsock: guest exceeded its credit",
                port = self.local_port,
                "vsock: guest exceeded its credit"
            );
            return Verdict::Reset;
        }
        self.tx_buf.extend(data);
        self.flush_tx()
    }

    /// Writes buffered guest data to the host stream (non-blocking).
    pub fn flush_tx(&mut self) -> Verdict {
        let Some(stream) = self.stream.as_mut() else {
            return Verdict::Keep;
        };
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match stream.write(front) {
                Ok(0) => return Verdict::Reset,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(port = self.local_port, "vsock: host write: {e}");
                    return Verdict::Reset;
                }
            }
        }
        if self.fwd_cnt.wrapping_sub(self.last_fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD {
            self.pending_credit_update = true;
        }
        self.after_peer_shutdown()
    }

    /// Guest SHUTDOWN with `flags`.
    pub fn peer_shutdown(&mut self, flags: u32) -> Verdict {
        self.peer_shut_send |= flags & SHUTDOWN_SEND != 0;
        self.peer_shut_rcv |= flags & SHUTDOWN_RCV != 0;
        if self.peer_shut_send && self.peer_shut_rcv && self.deadline.is_none() {
            // Give the host stream a bounded time to take the rest.
            self.deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
        }
        self.after_peer_shutdown()
    }

    fn after_peer_shutdown(&mut self) -> Verdict {
        if !self.tx_buf.is_empty() || !self.peer_shut_send {
            return Verdict::Keep;
        }
        if self.peer_shut_rcv || self.shutdown_sent {
            // Fully closed and drained: the guest waits for our RST.
            return Verdict::Reset;
        }
        if let Some(s) = &self.stream {
            let _ = s.shutdown(Shutdown::Write);
        }
        Verdict::Keep
    }

    /// Reads host data into `rx_buf`, as far as the guest's credit allows.
    pub fn fill_rx(&mut self) -> Verdict {
        if self.state != State::Established || self.rx_eof || !(self.readable || self.hup) {
            return Verdict::Keep;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Verdict::Keep;
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
            let peer_credit = self.peer_buf_alloc.saturating_sub(in_flight);
            let credit = (peer_credit as usize).saturating_sub(self.rx_buf.len());
            let space = RX_BUF_MAX.saturating_sub(self.rx_buf.len()).min(credit);
            if space == 0 {
                return Verdict::Keep;
            }
            let want = space.min(chunk.len());
            match stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    self.rx_eof = true;
                    self.readable = false;
                    return Verdict::Keep;
                }
                Ok(n) => self.rx_buf.extend(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Verdict::Keep;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(port = self.local_port, "vsock: host read: {e}");
                    return Verdict::Reset;
                }
            }
        }
    }

    /// Whether the connection has a packet for the RX queue.
    pub fn has_rx(&self) -> bool {
        match self.state {
            State::Connecting => false,
            State::LocalInit => !self.request_sent,
            State::Established => {
                self.pending_response
                    || self.pending_credit_update
                    || (!self.rx_buf.is_empty() && self.peer_credit() > 0)
                    || (self.rx_eof && self.rx_buf.is_empty() && !self.shutdown_sent)
            }
        }
    }

    /// The next packet for the guest, with up to `room` payload bytes copied
    /// into `out`. Returns None if there is nothing to send.
    pub fn next_rx(&mut self, room: usize, out: &mut Vec<u8>) -> Option<Hdr> {
        out.clear();
        match self.state {
            State::Connecting => None,
            State::LocalInit if !self.request_sent => {
                self.request_sent = true;
                self.deadline = Some(Instant::now() + RESPONSE_TIMEOUT);
                Some(self.header(super::packet::OP_REQUEST))
            }
            State::LocalInit => None,
            State::Established => {
                if self.pending_response {
                    self.pending_response = false;
                    return Some(self.header(super::packet::OP_RESPONSE));
                }
                let n = self.rx_buf.len().min(room).min(self.peer_credit() as usize);
                if n > 0 {
                    out.extend(self.rx_buf.drain(..n));
                    self.rx_cnt = self.rx_cnt.wrapping_add(n as u32);
                    let mut hdr = self.header(super::packet::OP_RW);
                    hdr.len = n as u32;
                    return Some(hdr);
                }
                if self.rx_eof && self.rx_buf.is_empty() && !self.shutdown_sent {
                    self.shutdown_sent = true;
                    self.deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
                    let mut hdr = self.header(super::packet::OP_SHUTDOWN);
                    hdr.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
                    return Some(hdr);
                }
                if self.pending_credit_update {
                    return Some(self.header(super::packet::OP_CREDIT_UPDATE));
                }
                None
            }
        }
    }
}
