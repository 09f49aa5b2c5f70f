//! One microVM: the parts a running VM is made of ([`Machine`]), built from
//! a configuration ([`boot`]) or a snapshot ([`restore`]), then run until
//! something ends it; [`snapshot`] writes one of a running machine.

pub mod boot;
pub mod restore;
pub mod restore_kvm;
pub mod snapshot;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use super::VmmError;
use super::bus::{Bus, lock};
use super::console::{ConsoleHub, ConsoleSerial};
use super::control::{ControlTarget, FirewallInfo, RunState, SnapshotInfo, Status};
use super::devices::system::{I8042, PowerPort};
use super::devices::virtio::mmio::MmioTransport;
use super::devices::virtio::net::NetHandle;
use super::exit::ExitEvent;
use super::jail::JailIds;
use super::lockdir::DirLock;
use super::seccomp::SeccompMode;
use super::service::{ConsolePart, ControlPart, Service};
use super::vcpu::{self, VcpuContext, VcpuControl, WaitingVcpu};
use super::wakeup::{self, Wakeup};

pub use fastvm_proto::monitor::{CONSOLE_SOCKET, CONTROL_SOCKET, VSOCK_SOCKET};

/// A virtio device on the MMIO bus.
pub struct VirtioSlot {
    pub base: u64,
    pub irq: u32,
    pub transport: Arc<Mutex<MmioTransport>>,
}

/// Everything a running VM is made of.
pub struct Machine {
    pub kvm: Kvm,
    pub vm: VmFd,
    pub mem: GuestMemoryMmap,
    pub vcpu_fds: Vec<Arc<Mutex<VcpuFd>>>,
    pub vcpus: Arc<VcpuControl>,
    pub io_bus: Arc<Bus>,
    pub mmio_bus: Arc<Bus>,
    pub serial: ConsoleSerial,
    pub hub: Arc<ConsoleHub>,
    pub i8042: Arc<Mutex<I8042>>,
    pub power: Arc<Mutex<PowerPort>>,
    /// Idle vCPUs wait on it ([`super::wakeup`]).
    pub wakeup: Arc<Wakeup>,
    pub virtio: Vec<VirtioSlot>,
    /// The NIC's policy and counters, when the VM has a NIC.
    pub net: Option<NetHandle>,
    /// The disk file served by virtio-blk, if any.
    pub disk_path: Option<PathBuf>,
    /// The same disk opened for snapshots to copy (its path may be outside
    /// the jail).
    pub disk_file: Option<std::fs::File>,
    /// The kernel booted (for the snapshot manifest; informative).
    pub kernel: String,
    /// MSRs saved in snapshots.
    pub msr_indices: Vec<u32>,
    pub vcpu_count: u8,
    pub memory_mib: u64,
    pub cmdline: String,
    pub started: Instant,
    pub stopping: AtomicBool,
    pub events: Mutex<Sender<ExitEvent>>,
    /// Held by a snapshot in progress, so two never overlap.
    pub snapshot_lock: Mutex<()>,
    /// The directory lock, held for the life of the machine.
    pub dir_lock: DirLock,
    /// Control and console listeners, bound as soon as the directory is ours.
    pub sockets: VmSockets,
}

/// The control and console listeners of a VM directory. Bound early, so
/// clients can connect while the VM is still being built; the socket files
/// go away with this value (a failed start leaves none behind).
pub struct VmSockets {
    dir: PathBuf,
    control: Option<UnixListener>,
    console: Option<UnixListener>,
    /// The service loop, once the console is served.
    service: Option<Service>,
}

impl VmSockets {
    /// Binds both sockets in `dir` (the caller holds its lock).
    pub fn bind(dir: &Path) -> Result<VmSockets, VmmError> {
        let mut sockets = VmSockets {
            dir: dir.to_path_buf(),
            control: None,
            console: None,
            service: None,
        };
        sockets.control = Some(bind(dir, CONTROL_SOCKET)?);
        sockets.console = Some(bind(dir, CONSOLE_SOCKET)?);
        Ok(sockets)
    }

    /// Starts the service loop serving the console (once; later calls do
    /// nothing), which can happen before the vCPUs exist: input waits in
    /// the serial port.
    pub fn serve_console(
        &mut self,
        hub: &Arc<ConsoleHub>,
        serial: &ConsoleSerial,
        wakeup: &Arc<Wakeup>,
    ) -> Result<(), VmmError> {
        if let Some(listener) = self.console.take() {
            let part = ConsolePart {
                listener,
                hub: hub.clone(),
                serial: serial.clone(),
                wakeup: wakeup.clone(),
            };
            self.service = Some(Service::start(Some(part)).map_err(VmmError::Io)?);
        }
        Ok(())
    }
}

impl Drop for VmSockets {
    fn drop(&mut self) {
        for name in [CONTROL_SOCKET, CONSOLE_SOCKET] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }
}

/// What a builder (boot or restore) hands over to become a [`Machine`].
pub struct Parts {
    pub kvm: Kvm,
    pub vm: VmFd,
    pub mem: GuestMemoryMmap,
    pub vcpu_fds: Vec<Arc<Mutex<VcpuFd>>>,
    pub legacy: boot::LegacyDevices,
    pub virtio: Vec<VirtioSlot>,
    pub net: Option<NetHandle>,
    pub mmio_bus: Bus,
    pub disk_path: Option<PathBuf>,
    pub kernel: String,
    pub vcpu_count: u8,
    pub memory_mib: u64,
    pub cmdline: String,
    pub started: Instant,
    pub events: Sender<ExitEvent>,
    pub dir_lock: DirLock,
    pub sockets: VmSockets,
}

impl Machine {
    /// Puts the parts together, vCPUs not started yet.
    pub fn new(parts: Parts) -> Result<Machine, VmmError> {
        let disk_file = match &parts.disk_path {
            Some(path) => Some(
                std::fs::File::open(path)
                    .map_err(|e| VmmError::Device(format!("disk {}: {e}", path.display())))?,
            ),
            None => None,
        };
        Ok(Machine {
            disk_file,
            msr_indices: super::kvm_state::vcpu::msr_index_list(&parts.kvm)?,
            kvm: parts.kvm,
            vm: parts.vm,
            mem: parts.mem,
            vcpus: VcpuControl::new(parts.vcpu_fds.len(), parts.legacy.wakeup.clone()),
            vcpu_fds: parts.vcpu_fds,
            io_bus: Arc::new(parts.legacy.io_bus),
            mmio_bus: Arc::new(parts.mmio_bus),
            serial: parts.legacy.serial,
            hub: parts.legacy.hub,
            i8042: parts.legacy.i8042,
            power: parts.legacy.power,
            wakeup: parts.legacy.wakeup,
            virtio: parts.virtio,
            net: parts.net,
            disk_path: parts.disk_path,
            kernel: parts.kernel,
            vcpu_count: parts.vcpu_count,
            memory_mib: parts.memory_mib,
            cmdline: parts.cmdline,
            started: parts.started,
            stopping: AtomicBool::new(false),
            events: Mutex::new(parts.events),
            snapshot_lock: Mutex::new(()),
            dir_lock: parts.dir_lock,
            sockets: parts.sockets,
        })
    }
}

impl ControlTarget for Machine {
    fn status(&self) -> Status {
        let state = if self.stopping.load(Ordering::SeqCst) {
            RunState::Stopping
        } else {
            self.vcpus.state()
        };
        Status {
            state,
            vcpus: self.vcpu_count,
            memory_mib: self.memory_mib,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            pid: std::process::id(),
            guest_warnings: crate::guest_warn::counts(),
            jail_us: crate::jail::is_jailed().then(crate::jail::cost_us),
        }
    }

    fn pause(&self) -> Result<(), String> {
        self.vcpus.pause()
    }

    fn resume(&self) -> Result<(), String> {
        self.vcpus.resume()
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = lock(&self.events).send(ExitEvent::Stop("control request"));
    }

    fn snapshot(&self, name: &str, resume: bool) -> Result<SnapshotInfo, String> {
        self.take_snapshot(name, resume)
    }

    fn firewall(&self) -> Result<FirewallInfo, String> {
        let net = self.net.as_ref().ok_or("this VM has no NIC")?;
        let (rx_passed, rx_dropped, tx_frames) = net.counters.read();
        let flows = net.counters.read_flows();
        Ok(FirewallInfo {
            policy: net.policy.policy(),
            mac: net.mac.to_string(),
            tap: net.tap.clone(),
            rx_passed,
            rx_dropped,
            tx_frames,
            flows_live: flows.live,
            flows_evicted: flows.evicted,
            rx_replies: flows.replies,
        })
    }

    fn set_firewall(
        &self,
        policy: fastvm_proto::api::FirewallPolicy,
    ) -> Result<FirewallInfo, String> {
        let net = self.net.as_ref().ok_or("this VM has no NIC")?;
        net.policy.set(policy).map_err(|e| e.to_string())?;
        self.firewall()
    }
}

/// Binds a socket in the VM directory, replacing a stale one.
fn bind(dir: &Path, name: &str) -> Result<UnixListener, VmmError> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(&path).map_err(|e| VmmError::Socket {
        path: path.display().to_string(),
        source: e,
    })
}

/// Boots the VM described by `cfg` and runs it until something ends it,
/// confined by `jail` (see [`super::jail`]) once built.
pub fn boot_and_run(
    cfg: &super::config::VmConfig,
    jail: Option<(JailIds, SeccompMode)>,
) -> Result<ExitEvent, VmmError> {
    let (machine, events) = boot::build(cfg)?;
    enter_jail(jail)?;
    run(machine, &cfg.dir, events, None)
}

fn enter_jail(jail: Option<(JailIds, SeccompMode)>) -> Result<(), VmmError> {
    if let Some((ids, seccomp)) = jail {
        let start = Instant::now();
        super::jail::root::enter(ids, seccomp)?;
        super::jail::add_cost(start.elapsed());
        tracing::debug!("jail entered in {:?}", start.elapsed());
    }
    Ok(())
}

/// Starts the VM from a snapshot and runs it until something ends it;
/// `early` is its KVM thread if [`restore::start_kvm`] made it already.
pub fn restore_and_run(
    cfg: &super::config::RestoreConfig,
    early: Option<restore_kvm::KvmThread>,
    jail: Option<(JailIds, SeccompMode)>,
) -> Result<ExitEvent, VmmError> {
    let (machine, events, vcpu0) = restore::build(cfg, early, jail.map(|(ids, _)| ids))?;
    if let Some((ids, seccomp)) = jail {
        let start = Instant::now();
        super::jail::root::drop_to(ids, seccomp)?;
        super::jail::add_cost(start.elapsed());
        tracing::debug!("ids dropped in {:?}", start.elapsed());
    }
    run(machine, &cfg.dir, events, Some(vcpu0))
}

/// Serves the sockets, starts the vCPUs (vCPU 0 on `vcpu0` when given, a
/// thread made earlier) and waits for what ends the VM. What the guest
/// needs first starts first: console, vCPUs, then control and signals.
pub fn run(
    machine: Machine,
    dir: &Path,
    events: Receiver<ExitEvent>,
    vcpu0: Option<WaitingVcpu>,
) -> Result<ExitEvent, VmmError> {
    let mut machine = machine;
    machine
        .sockets
        .serve_console(&machine.hub, &machine.serial, &machine.wakeup)?;
    let (Some(control_listener), Some(service)) = (
        machine.sockets.control.take(),
        machine.sockets.service.take(),
    ) else {
        return Err(VmmError::Device(
            "the control socket is already served".into(),
        ));
    };
    let machine = Arc::new(machine);
    vcpu::install_kick_handler().map_err(VmmError::Kvm)?;
    let events_tx = lock(&machine.events).clone();
    let epoch = wakeup::new_epoch();
    let mut vcpu0 = vcpu0;
    for (index, fd) in machine.vcpu_fds.iter().enumerate() {
        let ctx = VcpuContext {
            index: index as u8,
            fd: fd.clone(),
            io_bus: machine.io_bus.clone(),
            mmio_bus: machine.mmio_bus.clone(),
            control: machine.vcpus.clone(),
            wakeup: machine.wakeup.clone(),
            epoch,
            events: events_tx.clone(),
        };
        match vcpu0.take() {
            Some(waiting) => waiting.start(ctx),
            None => vcpu::spawn(ctx),
        }
        .map_err(VmmError::Io)?;
    }
    service
        .serve_control(ControlPart {
            listener: control_listener,
            target: machine.clone(),
            events: Some(events_tx),
        })
        .map_err(VmmError::Io)?;
    // Every thread is started: the main thread only waits and cleans up now.
    super::threads::confine_current(super::seccomp::ThreadKind::Main);
    tracing::info!(
        "VM running: {} vCPUs, {} MiB, started in {:?}",
        machine.vcpu_count,
        machine.memory_mib,
        machine.started.elapsed()
    );

    let event = events
        .recv()
        .unwrap_or(ExitEvent::Stop("lost event channel"));
    machine.stopping.store(true, Ordering::SeqCst);
    machine.vcpus.stop();
    for name in [CONTROL_SOCKET, CONSOLE_SOCKET, VSOCK_SOCKET] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    Ok(event)
}
