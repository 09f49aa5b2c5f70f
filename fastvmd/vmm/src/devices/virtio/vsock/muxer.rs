//! The connection multiplexer: host listener, handshakes, connections, epoll
//! interest, and guest packet dispatch.
//!
//! All of it lives behind the device's mutex; the queue side (moving packets
//! between the muxer and the virtqueues) is in [`super::queues`].

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{Connection, State, Verdict};
use super::packet::{
    HOST_CID, Hdr, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, TYPE_STREAM,
};

/// Epoll token of the backend's wake-up eventfd.
pub const TOKEN_KICK: u64 = 0;
/// Epoll token of the host listener.
pub const TOKEN_LISTENER: u64 = 1;
/// First token given to a host stream.
const FIRST_STREAM_TOKEN: u64 = 2;
/// Longest accepted `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 32;
/// A host client must send its CONNECT line within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First host port given to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Bound of queued stand-alone packets (RSTs); TX processing pauses beyond it.
pub const MAX_CTRL_RX: usize = 1024;

/// Most connections (plus host clients handshaking) at a time.
const MAX_CONNS: usize = 1024;

/// Connection key: (host port, guest port).
pub type Key = (u32, u32);

/// A guest-initiated connection whose host socket must be connected outside
/// the lock.
#[derive(Debug)]
pub struct ConnectJob {
    pub key: Key,
    pub path: PathBuf,
    pub generation: u64,
}

/// A host client that has not sent its CONNECT line yet.
#[derive(Debug)]
struct Handshake {
    stream: UnixStream,
    buf: Vec<u8>,
    since: Instant,
}

/// All connections of one vsock device.
#[derive(Debug)]
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    epoll: Arc<Epoll>,
    listener: UnixListener,
    handshakes: HashMap<u64, Handshake>,
    pub(super) conns: HashMap<Key, Connection>,
    tokens: HashMap<u64, Key>,
    next_token: u64,
    next_local_port: u32,
    /// Stand-alone packets for the guest (RSTs).
    pub(super) ctrl_rx: VecDeque<Hdr>,
    /// Bumped whenever all connections are dropped, so stale connect jobs
    /// are discarded.
    generation: u64,
    /// A TRANSPORT_RESET event waits for an event queue buffer.
    pub(super) pending_reset_event: bool,
    /// The CID the guest had before a restore gave it a new one, until
    /// the guest sends under the new one (it has taken the transport
    /// reset): packets it still sends under the old identity belong to
    /// connections the reset drops, and are dropped as such.
    pub(super) previous_cid: Option<u64>,
    /// Guest packets dropped for their CIDs.
    pub(super) dropped: CidDrops,
    /// Set while a delivered TRANSPORT_RESET is not yet taken by the
    /// driver: (when it was delivered, the event queue's available index
    /// then). See [`Muxer::host_connects_held`].
    pub(super) reset_unacked: Option<(Instant, u16)>,
}

/// The longest host-initiated connections wait for the driver to take a
/// transport reset it was given.
pub const RESET_ACK_WAIT: Duration = Duration::from_secs(5);

/// Guest packets dropped for their addresses, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CidDrops {
    /// Sent under the guest's identity from before a restore.
    pub previous_identity: u64,
    /// Any other source or destination CID.
    pub bad: u64,
}

impl Muxer {
    /// A muxer serving `listener` (already registered with `epoll`).
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        epoll: Arc<Epoll>,
        listener: UnixListener,
    ) -> Self {
        Muxer {
            guest_cid,
            uds_path,
            epoll,
            listener,
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            tokens: HashMap::new(),
            next_token: FIRST_STREAM_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            ctrl_rx: VecDeque::new(),
            generation: 0,
            pending_reset_event: false,
            previous_cid: None,
            dropped: CidDrops::default(),
            reset_unacked: None,
        }
    }

    /// The host port the next host-initiated connection gets (saved in
    /// snapshots so a restored device does not reuse recent ports).
    pub fn next_local_port(&self) -> u32 {
        self.next_local_port
    }

    /// Continues host port allocation at `port` (at least the first host
    /// port).
    pub fn set_next_local_port(&mut self, port: u32) {
        self.next_local_port = port.max(FIRST_LOCAL_PORT);
    }

    fn alloc_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_STREAM_TOKEN);
        t
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self.next_local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    /// Accepts every pending host client.
    pub fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() + self.handshakes.len() >= MAX_CONNS {
                        tracing::warn!("vsock: too many connections, host client refused");
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        tracing::warn!("vsock: host client: {e}");
                        continue;
                    }
                    let token = self.alloc_token();
                    let ev = EpollEvent::new(EventSet::IN, token);
                    if let Err(e) = self
                        .epoll
                        .ctl(ControlOperation::Add, stream.as_raw_fd(), ev)
                    {
                        tracing::warn!("vsock: epoll add: {e}");
                        continue;
                    }
                    let hs = Handshake {
                        stream,
                        buf: Vec::new(),
                        since: Instant::now(),
                    };
                    self.handshakes.insert(token, hs);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        tracing::warn!("vsock: accept: {e}");
                    }
                    return;
                }
            }
        }
    }

    /// An epoll event for a host stream.
    pub fn handle_event(&mut self, token: u64, ev: EventSet) {
        if self.handshakes.contains_key(&token) {
            self.handshake_readable(token);
        } else if let Some(&key) = self.tokens.get(&token) {
            self.conn_event(key, ev);
        }
    }

    fn close_handshake(&mut self, token: u64) {
        if let Some(hs) = self.handshakes.remove(&token) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                hs.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
    }

    fn handshake_readable(&mut self, token: u64) {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return;
        };
        let mut chunk = [0u8; MAX_CONNECT_LINE];
        loop {
            if hs.buf.contains(&b'\n') || hs.buf.len() > MAX_CONNECT_LINE {
                break;
            }
            match hs.stream.read(&mut chunk) {
                Ok(0) => return self.close_handshake(token),
                Ok(n) => hs.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close_handshake(token),
            }
        }
        let Some(nl) = hs.buf.iter().position(|&b| b == b'\n') else {
            if hs.buf.len() > MAX_CONNECT_LINE {
                tracing::warn!("vsock: host client sent an overlong CONNECT line");
                self.close_handshake(token);
            }
            return;
        };
        let port = parse_connect(&hs.buf[..nl]);
        let Some(port) = port else {
            tracing::warn!("vsock: host client sent a bad CONNECT line");
            return self.close_handshake(token);
        };
        let Some(hs) = self.handshakes.remove(&token) else {
            return;
        };
        let local = self.alloc_local_port(port);
        let mut conn = Connection::new(
            State::LocalInit,
            Some(hs.stream),
            token,
            self.guest_cid,
            local,
            port,
        );
        conn.push_early_rx(&hs.buf[nl + 1..]);
        conn.registered = Some(EventSet::IN);
        self.tokens.insert(token, (local, port));
        self.conns.insert((local, port), conn);
    }

    fn conn_event(&mut self, key: Key, ev: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if ev.contains(EventSet::ERROR) {
            return self.apply(key, Verdict::Reset);
        }
        if ev.contains(EventSet::IN) {
            conn.readable = true;
        }
        if ev.contains(EventSet::HANG_UP) {
            conn.hup = true;
            if conn.state == State::LocalInit {
                return self.apply(key, Verdict::Reset);
            }
        }
        if ev.intersects(EventSet::OUT | EventSet::HANG_UP) {
            let v = conn.flush_tx();
            self.apply(key, v);
        }
    }

    /// Acts on a connection's verdict.
    pub fn apply(&mut self, key: Key, verdict: Verdict) {
        match verdict {
            Verdict::Keep => {}
            Verdict::Reset => self.remove_conn(key, true),
            Verdict::Drop => self.remove_conn(key, false),
        }
    }

    /// Removes a connection (closing its host stream), optionally telling the
    /// guest with an RST.
    pub fn remove_conn(&mut self, key: Key, rst: bool) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        self.tokens.remove(&conn.token);
        if let (Some(_), Some(s)) = (conn.registered, &conn.stream) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                s.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        let guest_knows = conn.state != State::LocalInit || conn.request_sent;
        if rst && guest_knows {
            let hdr = conn.header(OP_RST);
            self.ctrl_rx.push_back(hdr);
        }
    }

    /// Drops every connection without telling the guest (device or
    /// transport reset); host clients still handshaking are kept.
    pub fn drop_all_conns(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove_conn(key, false);
        }
        self.ctrl_rx.clear();
        self.generation = self.generation.wrapping_add(1);
    }

    /// Expires handshakes and connections past their deadline.
    pub fn check_timeouts(&mut self, now: Instant) {
        let stale: Vec<u64> = self
            .handshakes
            .iter()
            .filter(|(_, hs)| now.duration_since(hs.since) > HANDSHAKE_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            tracing::debug!("vsock: host client handshake timed out");
            self.close_handshake(t);
        }
        let expired: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| now >= d))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            tracing::debug!(?key, "vsock: connection timed out");
            self.remove_conn(key, true);
        }
    }

    /// Whether something expires with time (handshakes, deadlines).
    pub fn has_timers(&self) -> bool {
        !self.handshakes.is_empty() || self.conns.values().any(|c| c.deadline.is_some())
    }

    /// Brings every connection's epoll registration up to date.
    pub fn sync_interest(&mut self) {
        for conn in self.conns.values_mut() {
            let want = conn.wanted_interest();
            if want == conn.registered {
                continue;
            }
            let Some(fd) = conn.stream.as_ref().map(|s| s.as_raw_fd()) else {
                conn.registered = None;
                continue;
            };
            let res = match (conn.registered, want) {
                (None, Some(w)) => {
                    self.epoll
                        .ctl(ControlOperation::Add, fd, EpollEvent::new(w, conn.token))
                }
                (Some(_), Some(w)) => {
                    self.epoll
                        .ctl(ControlOperation::Modify, fd, EpollEvent::new(w, conn.token))
                }
                (Some(_), None) => {
                    self.epoll
                        .ctl(ControlOperation::Delete, fd, EpollEvent::default())
                }
                (None, None) => Ok(()),
            };
            match res {
                Ok(()) => conn.registered = want,
                Err(e) => tracing::warn!("vsock: epoll update: {e}"),
            }
        }
    }

    /// Whether host-initiated connections must not be offered to the
    /// guest yet: a transport reset was delivered and the driver has not
    /// taken it (it refills the event queue once it has, at most
    /// [`RESET_ACK_WAIT`]). A connection the guest accepted before taking
    /// the reset would be reset on its side alone (Linux marks its sockets
    /// closed and tells no one), leaving the host waiting forever.
    pub fn host_connects_held(&self, now: Instant) -> bool {
        self.reset_unacked
            .is_some_and(|(since, _)| now.duration_since(since) < RESET_ACK_WAIT)
    }

    /// Dispatches one packet the guest sent.
    pub fn handle_guest_pkt(&mut self, hdr: Hdr, data: &[u8], jobs: &mut Vec<ConnectJob>) {
        if hdr.dst_cid == HOST_CID && Some(hdr.src_cid) == self.previous_cid {
            self.dropped.previous_identity += 1;
            tracing::debug!(
                src = hdr.src_cid,
                "vsock: packet under the guest's identity from before the restore, dropped"
            );
            return;
        }
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            self.dropped.bad += 1;
            crate::guest_warn!(
                "vsock: bad CIDs, dropped",
                src = hdr.src_cid,
                dst = hdr.dst_cid,
                "vsock: bad CIDs, dropped"
            );
            return;
        }
        // The guest speaks under its new identity: it took the reset.
        self.previous_cid = None;
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.type_ != TYPE_STREAM {
            crate::guest_warn!(
                "vsock: unsupported socket type",
                type_ = hdr.type_,
                "vsock: unsupported socket type"
            );
            if hdr.op != OP_RST {
                self.ctrl_rx.push_back(hdr.rst_reply());
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            if hdr.op == OP_REQUEST && self.conns.len() < MAX_CONNS {
                self.guest_connect(hdr, jobs);
            } else if hdr.op != OP_RST {
                self.ctrl_rx.push_back(hdr.rst_reply());
            }
            return;
        };
        conn.update_peer_credit(&hdr);
        let verdict = match hdr.op {
            OP_RESPONSE if conn.state == State::LocalInit && conn.request_sent => {
                conn.state = State::Established;
                conn.deadline = None;
                // Data may already wait in the socket: we did not poll it.
                conn.readable = true;
                let line = format!("OK {}\n", conn.local_port);
                match conn.stream.as_mut().map(|s| s.write_all(line.as_bytes())) {
                    Some(Ok(())) => Verdict::Keep,
                    _ => Verdict::Reset,
                }
            }
            OP_RW => conn.recv_from_guest(data),
            OP_SHUTDOWN => conn.peer_shutdown(hdr.flags),
            OP_RST => Verdict::Drop,
            OP_CREDIT_UPDATE => Verdict::Keep,
            OP_CREDIT_REQUEST => {
                conn.pending_credit_update = true;
                Verdict::Keep
            }
            op => {
                crate::guest_warn!("vsock: unexpected packet, resetting", op, state = ?conn.state, "vsock: unexpected packet, resetting");
                Verdict::Reset
            }
        };
        self.apply(key, verdict);
    }

    fn guest_connect(&mut self, hdr: Hdr, jobs: &mut Vec<ConnectJob>) {
        let key = (hdr.dst_port, hdr.src_port);
        let token = self.alloc_token();
        let mut conn = Connection::new(
            State::Connecting,
            None,
            token,
            self.guest_cid,
            hdr.dst_port,
            hdr.src_port,
        );
        conn.update_peer_credit(&hdr);
        self.conns.insert(key, conn);
        self.tokens.insert(token, key);
        let mut path = OsString::from(self.uds_path.as_os_str());
        path.push(format!("_{}", hdr.dst_port));
        jobs.push(ConnectJob {
            key,
            path: path.into(),
            generation: self.generation,
        });
    }

    /// Completes a guest-initiated connection once its host socket connect
    /// (done without the lock) finished.
    pub fn finish_connect(&mut self, job: ConnectJob, res: io::Result<UnixStream>) {
        if job.generation != self.generation {
            return;
        }
        let Some(conn) = self.conns.get_mut(&job.key) else {
            return;
        };
        if conn.state != State::Connecting {
            return;
        }
        let stream = res.and_then(|s| s.set_nonblocking(true).map(|()| s));
        match stream {
            Ok(s) => {
                conn.stream = Some(s);
                conn.state = State::Established;
                conn.pending_response = true;
                conn.readable = true;
            }
            Err(e) => {
                tracing::debug!(path = %job.path.display(), "vsock: guest connect refused: {e}");
                self.remove_conn(job.key, true);
            }
        }
    }
}

/// Parses `CONNECT <port>` (without the newline).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let port = line.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}
