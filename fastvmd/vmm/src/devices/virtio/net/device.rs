//! The [`Net`] device: virtio glue and the backend thread.
//!
//! Shared state (queues, the frame waiting for a buffer, the firewall's
//! flow table, the pause flag) sits behind one mutex. TX runs on the vCPU
//! thread that wrote QueueNotify (tap writes do not block). RX runs on the
//! backend thread, which waits on epoll for the tap and a kick eventfd, and
//! on the vCPU thread when the driver adds RX buffers. While the guest has
//! no RX buffer, the tap is taken out of the epoll set, so frames wait in
//! the tap's own queue instead of waking the thread in a loop.
//!
//! Pause (for a snapshot) sets a flag under the mutex; nothing touches the
//! queues or guest memory until resume, and the backend parks.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueState};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::NetError;
use super::rxtx::{Queues, RxBuffer, RxStop, process_rx, process_tx};
use crate::devices::virtio::{
    ActivateError, GuestMemory, Interrupt, VirtioDevice, VirtioDeviceState, epoll_with_kick,
    read_config_bytes, take_queues,
};
use crate::net::addr::Mac;
use crate::net::firewall::{FlowTable, FrameCounters, LivePolicy};
use crate::net::tap::Tap;

/// Virtio device ID of a network card.
const DEVICE_TYPE_NET: u32 = 1;
/// Largest size of the RX and TX queues.
const QUEUE_SIZES: [u16; 2] = [256; 2];
/// VIRTIO_NET_F_MAC: the configuration holds the MAC.
const F_MAC: u64 = 1 << 5;
/// VIRTIO_NET_F_STATUS: the configuration holds the link status.
const F_STATUS: u64 = 1 << 16;
/// VIRTIO_NET_S_LINK_UP.
const LINK_UP: u16 = 1;
const TOKEN_TAP: u64 = 0;
const TOKEN_KICK: u64 = 1;
/// Backend wake-up period (a safety net; events drive it).
const IDLE_POLL_MS: i32 = 1000;

#[derive(Debug, Default)]
struct Inner {
    queues: Option<Queues>,
    rx: RxBuffer,
    tx_scratch: Vec<u8>,
    /// What the guest opened, so that replies pass the firewall.
    flows: FlowTable,
    paused: bool,
    /// The tap is in the epoll set.
    tap_watched: bool,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    tap: Option<Tap>,
    epoll: Epoll,
    kick: EventFd,
    stop: AtomicBool,
    resumed: Condvar,
    policy: LivePolicy,
    counters: Arc<FrameCounters>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watch_tap(&self, inner: &mut Inner, on: bool) {
        let Some(tap) = &self.tap else { return };
        if inner.tap_watched == on {
            return;
        }
        let events = if on { EventSet::IN } else { EventSet::empty() };
        match self.epoll.ctl(
            ControlOperation::Modify,
            tap.as_raw_fd(),
            EpollEvent::new(events, TOKEN_TAP),
        ) {
            Ok(()) => inner.tap_watched = on,
            Err(e) => tracing::warn!("virtio-net: epoll: {e}"),
        }
    }

    /// Moves what can be moved from the tap to the guest now.
    fn service_rx(&self, inner: &mut Inner) {
        let Some(tap) = &self.tap else { return };
        let Inner {
            queues,
            rx,
            flows,
            paused,
            ..
        } = inner;
        let watch = match (queues, *paused) {
            (Some(q), false) => {
                let filter = self.policy.filter();
                process_rx(q, tap, rx, &filter, flows, &self.counters) == RxStop::TapEmpty
            }
            _ => false,
        };
        self.watch_tap(inner, watch);
    }

    fn service_tx(&self, inner: &mut Inner) {
        if inner.paused {
            return;
        }
        let Inner {
            queues,
            tx_scratch,
            flows,
            ..
        } = inner;
        if let Some(q) = queues {
            process_tx(q, self.tap.as_ref(), tx_scratch, flows, &self.counters);
        }
    }

    fn wait_while_paused(&self) {
        let mut inner = self.lock();
        while inner.paused && !self.stop.load(Ordering::SeqCst) {
            inner = self.resumed.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// What the monitor keeps of the NIC to change its policy and read its
/// counters while the device itself is owned by its transport.
#[derive(Debug, Clone)]
pub struct NetHandle {
    pub policy: LivePolicy,
    pub counters: Arc<FrameCounters>,
    pub mac: Mac,
    pub tap: Option<String>,
}

/// A virtio-net device backed by a tap (or by nothing: a NIC with its link
/// down, for a clone started without network).
#[derive(Debug)]
pub struct Net {
    mac: Mac,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Net {
    /// A NIC with `mac` on `tap`, enforcing `policy` on what it receives.
    pub fn new(mac: Mac, tap: Option<Tap>, policy: LivePolicy) -> Result<Net, NetError> {
        let (epoll, kick) = epoll_with_kick(TOKEN_KICK).map_err(NetError::EventSetup)?;
        if let Some(tap) = &tap {
            epoll
                .ctl(
                    ControlOperation::Add,
                    tap.as_raw_fd(),
                    EpollEvent::new(EventSet::empty(), TOKEN_TAP),
                )
                .map_err(NetError::EventSetup)?;
        }
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            tap,
            epoll,
            kick,
            stop: AtomicBool::new(false),
            resumed: Condvar::new(),
            policy,
            counters: Arc::default(),
        });
        let thread = match &shared.tap {
            Some(_) => {
                let backend = Arc::clone(&shared);
                Some(
                    crate::threads::spawn(
                        crate::seccomp::ThreadKind::Device,
                        "net-backend",
                        move || backend_loop(&backend),
                    )
                    .map_err(NetError::Thread)?,
                )
            }
            None => None,
        };
        Ok(Net {
            mac,
            shared,
            thread,
        })
    }

    /// The MAC the guest sees.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The policy in force (shared with [`NetHandle`]).
    pub fn policy(&self) -> &LivePolicy {
        &self.shared.policy
    }

    /// Flows in the firewall's table.
    #[cfg(test)]
    pub(super) fn flows_live(&self) -> usize {
        self.shared.lock().flows.len()
    }

    /// A handle for the monitor.
    pub fn handle(&self) -> NetHandle {
        NetHandle {
            policy: self.shared.policy.clone(),
            counters: Arc::clone(&self.shared.counters),
            mac: self.mac,
            tap: self.shared.tap.as_ref().map(|t| t.name().to_string()),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _inner = self.shared.lock();
            self.shared.resumed.notify_all();
        }
        let _ = self.shared.kick.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn backend_loop(shared: &Shared) {
    let mut events = vec![EpollEvent::default(); 4];
    while !shared.stop.load(Ordering::SeqCst) {
        shared.wait_while_paused();
        match shared.epoll.wait(IDLE_POLL_MS, &mut events) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("virtio-net: epoll wait: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let _ = shared.kick.read();
        let mut inner = shared.lock();
        shared.service_rx(&mut inner);
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_NET
    }

    fn features(&self) -> u64 {
        (1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1) | F_MAC | F_STATUS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let status = if self.shared.tap.is_some() {
            LINK_UP
        } else {
            0
        };
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac.0);
        config[6..].copy_from_slice(&status.to_le_bytes());
        read_config_bytes(&config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        _acked_features: u64,
    ) -> Result<(), ActivateError> {
        let [rx, tx] = take_queues(&mem, queues)?;
        let mut inner = self.shared.lock();
        inner.queues = Some(Queues {
            mem,
            rx,
            tx,
            interrupt,
        });
        self.shared.service_tx(&mut inner);
        self.shared.service_rx(&mut inner);
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        let mut inner = self.shared.lock();
        match index {
            0 => self.shared.service_rx(&mut inner),
            1 => self.shared.service_tx(&mut inner),
            _ => crate::guest_warn!(
                "virtio-net: notify for a queue that does not exist",
                index,
                "virtio-net: notify for a queue that does not exist"
            ),
        }
    }

    fn reset(&mut self) {
        let mut inner = self.shared.lock();
        inner.queues = None;
        inner.rx.clear();
        inner.flows.clear();
        self.shared.counters.publish_flows(&inner.flows);
        self.shared.watch_tap(&mut inner, false);
    }

    fn pause(&mut self) {
        self.shared.lock().paused = true;
    }

    fn resume(&mut self) {
        let mut inner = self.shared.lock();
        inner.paused = false;
        self.shared.resumed.notify_all();
        self.shared.service_tx(&mut inner);
        self.shared.service_rx(&mut inner);
    }

    fn save(&self) -> VirtioDeviceState {
        VirtioDeviceState::Net(self.save_state())
    }

    fn queue_states(&self) -> Vec<QueueState> {
        let inner = self.shared.lock();
        inner
            .queues
            .iter()
            .flat_map(|q| [q.rx.state(), q.tx.state()])
            .collect()
    }
}
