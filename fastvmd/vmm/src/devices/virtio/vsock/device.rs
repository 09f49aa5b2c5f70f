//! The [`Vsock`] device: virtio glue and the backend thread.
//!
//! Shared state ([`Muxer`] plus the queues once active) sits behind one
//! mutex. `queue_notify` runs on a vCPU thread and processes the queues
//! directly (host streams are non-blocking; data the host cannot take yet is
//! buffered). The backend thread, started by [`Vsock::new`], waits on epoll
//! (listener, host streams, and a kick eventfd), moves host data to the guest,
//! expires deadlines, and runs guest-initiated Unix connects; the vCPU kicks
//! it when there are connects to run. Nobody holds the lock across a blocking
//! call: epoll waits and connects run unlocked.
//!
//! Pause (for a snapshot) is a flag under the same mutex: `service` does
//! nothing while it is set, so once [`VirtioDevice::pause`] has taken and
//! released the lock no thread touches the queues or guest memory; the
//! backend thread parks on a condition variable until resume or drop.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueState};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::VsockError;
use super::muxer::{CidDrops, ConnectJob, Muxer, TOKEN_KICK, TOKEN_LISTENER};
use super::queues::Queues;
use crate::devices::virtio::{
    ActivateError, GuestMemory, Interrupt, VirtioDevice, VirtioDeviceState, epoll_with_kick,
    read_config_bytes, take_queues,
};

/// Virtio device ID of vsock.
const DEVICE_TYPE_VSOCK: u32 = 19;
/// Largest size of each of the three queues.
const QUEUE_SIZES: [u16; 3] = [256; 3];
/// Backend wake-up period while deadlines are pending.
const POLL_MS: i32 = 100;
/// Backend wake-up period otherwise (a safety net; events drive it).
const IDLE_POLL_MS: i32 = 1000;

/// State shared by the device and its backend thread.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) muxer: Muxer,
    queues: Option<Queues>,
    /// Guest-initiated connects for the backend thread to run unlocked.
    jobs: Vec<ConnectJob>,
    /// Paused for a snapshot: no queue or guest memory access.
    paused: bool,
}

impl Inner {
    /// Processes everything that can be processed now. Returns whether the
    /// backend thread has connects to run.
    fn service(&mut self) -> bool {
        if self.paused {
            return false;
        }
        if let Some(q) = self.queues.as_mut() {
            self.muxer.process_tx(q, &mut self.jobs);
            // Events first: a driver that has taken a reset releases the
            // host connections held for it (`Muxer::host_connects_held`).
            self.muxer.process_evq(q);
            self.muxer.process_rx(q);
        }
        self.muxer.sync_interest();
        !self.jobs.is_empty()
    }
}

#[derive(Debug)]
pub(super) struct Shared {
    inner: Mutex<Inner>,
    epoll: Arc<Epoll>,
    kick: EventFd,
    stop: AtomicBool,
    /// Signalled on resume and on stop, for a backend parked while paused.
    resumed: Condvar,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks the calling (backend) thread while the device is paused.
    fn wait_while_paused(&self) {
        let mut inner = self.lock();
        while inner.paused && !self.stop.load(Ordering::SeqCst) {
            inner = self.resumed.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn kick(&self) {
        if let Err(e) = self.kick.write(1) {
            tracing::warn!("vsock: kick: {e}");
        }
    }

    /// Backend thread: connects guest-initiated connections (unlocked, and
    /// never waiting: a listener whose backlog is full refuses at once
    /// rather than stall this thread), then completes them.
    fn run_jobs(&self) {
        loop {
            let jobs = std::mem::take(&mut self.lock().jobs);
            if jobs.is_empty() {
                return;
            }
            let done: Vec<_> = jobs
                .into_iter()
                .map(|job| {
                    let res = connect_without_waiting(&job.path);
                    (job, res)
                })
                .collect();
            let mut inner = self.lock();
            for (job, res) in done {
                inner.muxer.finish_connect(job, res);
            }
            inner.service();
        }
    }

    fn send_transport_reset(&self) {
        let mut inner = self.lock();
        inner.muxer.drop_all_conns();
        inner.muxer.pending_reset_event = true;
        drop(inner);
        self.service();
    }

    /// Processes everything now; wakes the backend if it has work.
    fn service(&self) {
        if self.lock().service() {
            self.kick();
        }
    }
}

/// A virtio-vsock device whose host side is a Unix socket (Firecracker's
/// hybrid vsock protocol, see the module docs).
#[derive(Debug)]
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    pub(super) shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Vsock {
    /// Creates the device for `guest_cid`, binds the host listener at
    /// `uds_path` and starts the backend thread. Host clients may connect
    /// right away; their connections wait until the driver is up.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Vsock, VsockError> {
        if guest_cid <= 2 || guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let listener = UnixListener::bind(&uds_path).map_err(|source| VsockError::Bind {
            path: uds_path.clone(),
            source,
        })?;
        match Self::start(guest_cid, &uds_path, listener) {
            Ok(dev) => Ok(dev),
            Err(e) => {
                let _ = std::fs::remove_file(&uds_path);
                Err(e)
            }
        }
    }

    fn start(guest_cid: u64, uds_path: &Path, listener: UnixListener) -> Result<Vsock, VsockError> {
        listener
            .set_nonblocking(true)
            .map_err(VsockError::EventSetup)?;
        let (epoll, kick) = epoll_with_kick(TOKEN_KICK).map_err(VsockError::EventSetup)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
            )
            .map_err(VsockError::EventSetup)?;
        let epoll = Arc::new(epoll);
        let muxer = Muxer::new(
            guest_cid,
            uds_path.to_path_buf(),
            Arc::clone(&epoll),
            listener,
        );
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                muxer,
                queues: None,
                jobs: Vec::new(),
                paused: false,
            }),
            epoll,
            kick,
            stop: AtomicBool::new(false),
            resumed: Condvar::new(),
        });
        let backend = Arc::clone(&shared);
        let thread = crate::threads::spawn(
            crate::seccomp::ThreadKind::Device,
            "vsock-backend",
            move || backend_loop(&backend),
        )
        .map_err(VsockError::Thread)?;
        Ok(Vsock {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            shared,
            thread: Some(thread),
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// Guest packets dropped so far for their CIDs.
    pub fn cid_drops(&self) -> CidDrops {
        self.shared.lock().muxer.dropped
    }

    /// Path of the host Unix listener.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Drops every connection and queues a VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
    /// event for the driver (delivered as soon as it has an event buffer).
    /// Used after restoring a snapshot.
    pub fn send_transport_reset(&self) {
        self.shared.send_transport_reset();
    }

    /// A handle that can send the transport reset once the device is boxed
    /// behind its transport (take it before handing the device over). It
    /// keeps the device's shared state, not its backend thread, alive.
    pub fn reset_handle(&self) -> VsockResetHandle {
        VsockResetHandle(Arc::clone(&self.shared))
    }
}

/// Sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET to a [`Vsock`] owned elsewhere.
#[derive(Debug, Clone)]
pub struct VsockResetHandle(Arc<Shared>);

impl VsockResetHandle {
    /// Same as [`Vsock::send_transport_reset`].
    pub fn send_transport_reset(&self) {
        self.0.send_transport_reset();
    }
}

/// A Unix stream connect that never blocks: a full backlog is EAGAIN.
pub(super) fn connect_without_waiting(path: &Path) -> std::io::Result<UnixStream> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&socket2::SockAddr::unix(path)?)?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(socket)))
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _inner = self.shared.lock();
            self.shared.resumed.notify_all();
        }
        self.shared.kick();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

fn backend_loop(shared: &Shared) {
    let mut events = vec![EpollEvent::default(); 64];
    let mut timeout = POLL_MS;
    while !shared.stop.load(Ordering::SeqCst) {
        shared.wait_while_paused();
        let n = match shared.epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("vsock: epoll wait: {e}");
                std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                continue;
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let mut inner = shared.lock();
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_KICK => {
                    let _ = shared.kick.read();
                }
                TOKEN_LISTENER => inner.muxer.accept(),
                token => inner.muxer.handle_event(token, ev.event_set()),
            }
        }
        inner.muxer.check_timeouts(Instant::now());
        inner.service();
        timeout = if inner.muxer.has_timers() {
            POLL_MS
        } else {
            IDLE_POLL_MS
        };
        drop(inner);
        shared.run_jobs();
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_VSOCK
    }

    fn features(&self) -> u64 {
        1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        _acked_features: u64,
    ) -> Result<(), ActivateError> {
        let [rx, tx, evq] = take_queues(&mem, queues)?;
        let mut inner = self.shared.lock();
        inner.queues = Some(Queues {
            mem,
            rx,
            tx,
            evq,
            interrupt,
        });
        drop(inner);
        self.shared.service();
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if usize::from(index) >= QUEUE_SIZES.len() {
            crate::guest_warn!(
                "vsock: notify for a queue that does not exist",
                index,
                "vsock: notify for a queue that does not exist"
            );
            return;
        }
        // Whatever the queue, everything is looked at: new RX buffers let
        // host data and stalled TX replies through, TX brings packets and
        // credit, EVQ buffers take a pending event.
        self.shared.service();
    }

    fn reset(&mut self) {
        let mut inner = self.shared.lock();
        inner.queues = None;
        inner.muxer.drop_all_conns();
        inner.muxer.pending_reset_event = false;
    }

    /// Sets the pause flag under the lock: the backend thread may finish an
    /// epoll round (accepting host clients, reading their CONNECT lines,
    /// writing guest data already taken to host streams) but moves nothing
    /// into or out of the queues, then parks until resume.
    fn pause(&mut self) {
        self.shared.lock().paused = true;
    }

    fn resume(&mut self) {
        self.shared.lock().paused = false;
        self.shared.resumed.notify_all();
        self.shared.service();
        self.shared.kick();
    }

    fn save(&self) -> VirtioDeviceState {
        VirtioDeviceState::Vsock(self.save_state())
    }

    fn queue_states(&self) -> Vec<QueueState> {
        let inner = self.shared.lock();
        inner
            .queues
            .iter()
            .flat_map(|q| [q.rx.state(), q.tx.state(), q.evq.state()])
            .collect()
    }
}
