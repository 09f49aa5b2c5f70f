//! One microVM: the parts a running VM is made of ([`Machine`]), built from
//! a configuration ([`boot`]) or a snapshot ([`restore`]), then run until
//! something ends it; [`snapshot`] writes one of a running machine.

pub mod boot;
pub mod restore;
pub mod snapshot;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use super::bus::{Bus, lock};
use super::console::{self, ConsoleHub, ConsoleSerial};
use super::control::{self, ControlTarget, RunState, SnapshotInfo, Status};
use super::devices::system::{I8042, PowerPort};
use super::devices::virtio::mmio::MmioTransport;
use super::exit::ExitEvent;
use super::lockdir::DirLock;
use super::vcpu::{self, VcpuContext, VcpuControl};
use super::{VmmError, signals};

/// File names inside the VM directory.
pub const CONTROL_SOCKET: &str = "control.sock";
pub const CONSOLE_SOCKET: &str = "console.sock";
pub const VSOCK_SOCKET: &str = "vsock.sock";

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
    pub virtio: Vec<VirtioSlot>,
    /// The disk file served by virtio-blk, if any.
    pub disk_path: Option<PathBuf>,
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

    fn snapshot(&self, dir: &Path, resume: bool) -> Result<SnapshotInfo, String> {
        self.take_snapshot(dir, resume)
    }
}

/// Binds a socket in the VM directory, replacing a stale one.
pub fn bind(dir: &Path, name: &str) -> Result<UnixListener, VmmError> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(&path).map_err(|e| VmmError::Socket {
        path: path.display().to_string(),
        source: e,
    })
}

/// Boots the VM described by `cfg` and runs it until something ends it.
pub fn boot_and_run(cfg: &super::config::VmConfig) -> Result<ExitEvent, VmmError> {
    let (machine, events) = boot::build(cfg)?;
    run(machine, &cfg.dir, events)
}

/// Starts the VM from a snapshot and runs it until something ends it.
pub fn restore_and_run(cfg: &super::config::RestoreConfig) -> Result<ExitEvent, VmmError> {
    let (machine, events) = restore::build(cfg)?;
    run(machine, &cfg.dir, events)
}

/// Serves the sockets, starts the vCPUs and waits for what ends the VM.
pub fn run(
    machine: Machine,
    dir: &Path,
    events: Receiver<ExitEvent>,
) -> Result<ExitEvent, VmmError> {
    let machine = Arc::new(machine);
    let control_listener = bind(dir, CONTROL_SOCKET)?;
    let console_listener = bind(dir, CONSOLE_SOCKET)?;
    control::server::serve(control_listener, machine.clone()).map_err(VmmError::Io)?;
    console::serve(
        console_listener,
        machine.hub.clone(),
        machine.serial.clone(),
    );
    vcpu::install_kick_handler().map_err(VmmError::Kvm)?;
    let events_tx = lock(&machine.events).clone();
    for (index, fd) in machine.vcpu_fds.iter().enumerate() {
        vcpu::spawn(VcpuContext {
            index: index as u8,
            fd: fd.clone(),
            io_bus: machine.io_bus.clone(),
            mmio_bus: machine.mmio_bus.clone(),
            control: machine.vcpus.clone(),
            events: events_tx.clone(),
        })
        .map_err(VmmError::Io)?;
    }
    signals::forward_termination(events_tx)?;
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
