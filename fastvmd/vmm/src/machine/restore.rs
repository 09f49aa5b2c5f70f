//! Building a [`Machine`] from a snapshot: guest memory mapped
//! copy-on-write from the snapshot's `memory`, KVM and device state
//! restored, a copy-on-write disk of the clone's own, a new vsock identity.

use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vmm_sys_util::eventfd::EventFd;

use super::boot::{legacy_devices, mmio_bus, nic, virtio_interrupt};
use super::restore_kvm::{KvmThread, RestoredKvm, SavedKvm};
use super::snapshot::MachineState;
use super::{Machine, Parts, VSOCK_SOCKET, VirtioSlot, VmSockets};
use crate::config::RestoreConfig;
use crate::devices::serial::SerialDevice;
use crate::devices::system::{I8042, PowerPort};
use crate::devices::virtio::blk::Block;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::{VirtioDevice, VirtioDeviceState};
use crate::exit::ExitEvent;
use crate::jail::JailIds;
use crate::lockdir::DirLock;
use crate::snapshot::{SnapshotReader, clone_disk, grow_disk, map_memory};
use crate::vcpu::WaitingVcpu;
use crate::{VmmError, memory, signals};

/// Name of the clone's disk inside its VM directory.
pub const CLONE_DISK: &str = "disk";

fn device_err(e: impl std::fmt::Display) -> VmmError {
    VmmError::Device(e.to_string())
}

/// Starts a restore's KVM thread ([`super::restore_kvm`]), SIGINT and
/// SIGTERM blocked first so that they reach only the thread that waits for
/// them. It needs nothing from the snapshot yet, so a monitor can start it
/// before it even parses its command line, and hand it to [`build`].
pub fn start_kvm() -> Result<KvmThread, VmmError> {
    signals::block_termination()?;
    KvmThread::spawn()
}

/// Builds the clone described by `cfg`, its vCPUs where the snapshot left
/// them; vCPU 0 is to run on the returned thread. `early` is the KVM thread
/// when [`start_kvm`] was called already. With `jail`, the VM directory
/// becomes `/` once everything outside it is open, while the KVM thread
/// still works (the caller drops the ids afterwards).
pub fn build(
    cfg: &RestoreConfig,
    early: Option<KvmThread>,
    jail: Option<JailIds>,
) -> Result<(Machine, Receiver<ExitEvent>, WaitingVcpu), VmmError> {
    cfg.validate()?;
    let started = Instant::now();
    // KVM work starts first and runs beside everything else.
    let kvm_thread = match early {
        Some(thread) => thread,
        None => start_kvm()?,
    };
    let reader = SnapshotReader::open(&cfg.snapshot)?;
    let manifest = reader.manifest().clone();
    let MachineState {
        vcpus,
        vm: vm_state,
        serial,
        i8042,
        power,
        virtio: saved_virtio,
    } = reader.decode_state()?;
    let vcpu_count = u8::try_from(manifest.vcpus)
        .ok()
        .filter(|n| usize::from(*n) == vcpus.len())
        .ok_or_else(|| {
            device_err(format!(
                "manifest says {} vCPUs, vmstate holds {}",
                manifest.vcpus,
                vcpus.len()
            ))
        })?;
    let mem = map_memory(
        &reader.memory_path(),
        &memory::ranges(manifest.memory_mib << 20),
    )?;
    kvm_thread.send(SavedKvm {
        mem: mem.clone(),
        vm: vm_state,
        vcpus,
    });
    let dir_lock = DirLock::acquire(&cfg.dir)?;
    let sockets = VmSockets::bind(&cfg.dir)?;

    let disk_path = match reader.disk_path() {
        Some(source) => {
            let clone = cfg.dir.join(CLONE_DISK);
            clone_disk(&source, &clone).map_err(|e| {
                device_err(format!(
                    "cannot copy disk {} to {}: {e}",
                    source.display(),
                    clone.display()
                ))
            })?;
            if let Some(gib) = cfg.disk_gib {
                grow_disk(&clone, gib)?;
            }
            Some(clone)
        }
        None if cfg.disk_gib.is_some() => {
            return Err(device_err("--disk-gib: the snapshot has no disk"));
        }
        None => None,
    };
    tracing::debug!("directory and disk ready at {:?}", started.elapsed());

    // Interrupts are wired by the KVM thread once its irqchip exists.
    let mut irqs = Vec::new();
    let mut wire_irq = |fd: &EventFd, gsi| {
        irqs.push((fd.try_clone().map_err(VmmError::Io)?, gsi));
        Ok(())
    };
    let (events_tx, events_rx) = channel::<ExitEvent>();
    let legacy = legacy_devices(
        &mut wire_irq,
        |irq, out| SerialDevice::restore(irq, out, &serial).map_err(device_err),
        I8042::restore(events_tx.clone(), &i8042),
        PowerPort::restore(events_tx.clone(), &power),
    )?;
    let mut virtio = Vec::with_capacity(saved_virtio.len());
    let mut resets = Vec::new();
    let mut net = None;
    for (index, saved) in saved_virtio.iter().enumerate() {
        let (base, irq, interrupt) = virtio_interrupt(&mut wire_irq, index, &legacy.wakeup)?;
        if (base, irq) != (saved.base, saved.irq) {
            return Err(device_err(format!(
                "virtio slot {index} was at {:#x} IRQ {}, expected {base:#x} IRQ {irq}",
                saved.base, saved.irq
            )));
        }
        // A disk given larger than the one saved: the guest is told, and
        // its agent grows the file system onto the new space.
        let mut config_changed = false;
        let device: Box<dyn VirtioDevice> = match &saved.transport.device {
            VirtioDeviceState::Block(block) => {
                let path = disk_path
                    .as_deref()
                    .ok_or_else(|| device_err("vmstate has a disk but the snapshot has none"))?;
                let device = Block::restore(path, block).map_err(device_err)?;
                config_changed = device.capacity_sectors() > block.capacity_sectors;
                Box::new(device)
            }
            VirtioDeviceState::Vsock(vsock) => {
                let cid = cfg.vsock_cid.unwrap_or(vsock.guest_cid);
                let device =
                    Vsock::restore(cid, cfg.dir.join(VSOCK_SOCKET), vsock).map_err(device_err)?;
                resets.push(device.reset_handle());
                Box::new(device)
            }
            VirtioDeviceState::Net(state) => {
                let (device, handle) = nic(cfg.tap.as_deref(), |tap| {
                    Net::restore(state, cfg.mac, tap, cfg.firewall.clone())
                })?;
                net = Some(handle);
                Box::new(device)
            }
        };
        let mut transport =
            MmioTransport::restore(mem.clone(), device, interrupt, &saved.transport)?;
        if config_changed && transport.is_activated() {
            transport
                .notify_config_change()
                .map_err(|e| device_err(format!("configuration-change interrupt: {e}")))?;
        }
        virtio.push(VirtioSlot {
            base,
            irq,
            transport: Arc::new(Mutex::new(transport)),
        });
    }
    // Old connections end; the guest's listeners stay.
    for reset in resets {
        reset.send_transport_reset();
    }
    let mmio_bus = mmio_bus(&virtio)?;
    let mut sockets = sockets;
    sockets.serve_console(&legacy.hub, &legacy.serial, &legacy.wakeup)?;
    tracing::debug!("devices ready at {:?}", started.elapsed());
    if let Some(ids) = jail {
        let start = Instant::now();
        crate::jail::root::enter_root(ids)?;
        crate::jail::add_cost(start.elapsed());
        tracing::debug!("root entered in {:?}", start.elapsed());
    }

    let (RestoredKvm { kvm, vm, vcpu_fds }, vcpu0) = kvm_thread.restored(irqs)?;
    tracing::debug!("KVM VM and vCPUs ready at {:?}", started.elapsed());
    let machine = Machine::new(Parts {
        kvm,
        vm,
        mem,
        vcpu_fds,
        legacy,
        virtio,
        net,
        mmio_bus,
        disk_path,
        kernel: manifest.kernel.clone(),
        vcpu_count,
        memory_mib: manifest.memory_mib,
        cmdline: manifest.cmdline.clone(),
        started,
        events: events_tx,
        dir_lock,
        sockets,
    })?;
    Ok((machine, events_rx, vcpu0))
}
