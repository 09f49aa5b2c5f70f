//! Building a [`Machine`] from a snapshot: guest memory mapped
//! copy-on-write from the snapshot's `memory`, KVM and device state
//! restored, a copy-on-write disk of the clone's own, a new vsock identity.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use super::boot::{create_vm, kvm_err, legacy_devices, mmio_bus, nic, virtio_interrupt};
use super::snapshot::MachineState;
use super::{Machine, Parts, VSOCK_SOCKET, VirtioSlot, VmSockets};
use crate::vmm::config::RestoreConfig;
use crate::vmm::devices::serial::SerialDevice;
use crate::vmm::devices::system::{I8042, PowerPort};
use crate::vmm::devices::virtio::blk::Block;
use crate::vmm::devices::virtio::mmio::MmioTransport;
use crate::vmm::devices::virtio::net::Net;
use crate::vmm::devices::virtio::vsock::Vsock;
use crate::vmm::devices::virtio::{VirtioDevice, VirtioDeviceState};
use crate::vmm::exit::ExitEvent;
use crate::vmm::lockdir::DirLock;
use crate::vmm::snapshot::{SnapshotReader, clone_disk, grow_disk, map_memory};
use crate::vmm::{VmmError, memory, signals};

/// Name of the clone's disk inside its VM directory.
pub const CLONE_DISK: &str = "disk";

fn device_err(e: impl std::fmt::Display) -> VmmError {
    VmmError::Device(e.to_string())
}

/// What [`spawn_kvm_vm`]'s thread hands back.
type KvmVm = Result<(Kvm, VmFd, GuestMemoryMmap), VmmError>;

/// Opens KVM and creates the VM with the snapshot's memory mapped
/// copy-on-write, on a thread of its own.
fn spawn_kvm_vm(memory_path: PathBuf, memory_mib: u64) -> Result<JoinHandle<KvmVm>, VmmError> {
    let work = move || -> KvmVm {
        let kvm = Kvm::new().map_err(|e| VmmError::Kvm(format!("cannot open /dev/kvm: {e}")))?;
        let (vm, mem) = create_vm(&kvm, |vm| {
            let mem = map_memory(&memory_path, &memory::ranges(memory_mib << 20))?;
            memory::register(vm, &mem)?;
            Ok(mem)
        })?;
        Ok((kvm, vm, mem))
    };
    std::thread::Builder::new()
        .name("restore-vm".into())
        .spawn(work)
        .map_err(VmmError::Io)
}

/// Builds the clone described by `cfg`, its vCPUs where the snapshot left them.
pub fn build(cfg: &RestoreConfig) -> Result<(Machine, Receiver<ExitEvent>), VmmError> {
    cfg.validate()?;
    let started = Instant::now();
    let reader = SnapshotReader::open(&cfg.snapshot)?;
    let manifest = reader.manifest().clone();
    // The KVM VM and its memory are made on another thread meanwhile: on
    // this host each KVM call is slow, and they need only the manifest.
    let kvm_side = spawn_kvm_vm(reader.memory_path(), manifest.memory_mib)?;
    let state: MachineState = reader.decode_state()?;
    let vcpu_count = u8::try_from(manifest.vcpus)
        .ok()
        .filter(|n| usize::from(*n) == state.vcpus.len())
        .ok_or_else(|| {
            device_err(format!(
                "manifest says {} vCPUs, vmstate holds {}",
                manifest.vcpus,
                state.vcpus.len()
            ))
        })?;
    let dir_lock = DirLock::acquire(&cfg.dir)?;
    let sockets = VmSockets::bind(&cfg.dir)?;
    signals::block_termination()?;
    tracing::debug!("snapshot read at {:?}", started.elapsed());

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
    tracing::debug!("disk ready at {:?}", started.elapsed());

    let (kvm, vm, mem) = kvm_side
        .join()
        .map_err(|_| VmmError::Kvm("the VM setup thread panicked".into()))??;
    state.vm.restore(&vm)?;
    tracing::debug!("kvm vm ready at {:?}", started.elapsed());

    let (events_tx, events_rx) = channel::<ExitEvent>();
    let legacy = legacy_devices(
        &vm,
        |irq, out| SerialDevice::restore(irq, out, &state.serial).map_err(device_err),
        I8042::restore(events_tx.clone(), &state.i8042),
        PowerPort::restore(events_tx.clone(), &state.power),
    )?;
    let mut virtio = Vec::with_capacity(state.virtio.len());
    let mut resets = Vec::new();
    let mut net = None;
    for (index, saved) in state.virtio.iter().enumerate() {
        let (base, irq, interrupt) = virtio_interrupt(&vm, index, &legacy.wakeup)?;
        if (base, irq) != (saved.base, saved.irq) {
            return Err(device_err(format!(
                "virtio slot {index} was at {:#x} IRQ {}, expected {base:#x} IRQ {irq}",
                saved.base, saved.irq
            )));
        }
        let device: Box<dyn VirtioDevice> = match &saved.transport.device {
            VirtioDeviceState::Block(block) => {
                let path = disk_path
                    .as_deref()
                    .ok_or_else(|| device_err("vmstate has a disk but the snapshot has none"))?;
                Box::new(Block::restore(path, block).map_err(device_err)?)
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
        let transport = MmioTransport::restore(mem.clone(), device, interrupt, &saved.transport)?;
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
    tracing::debug!("devices ready at {:?}", started.elapsed());

    let mut vcpu_fds = Vec::with_capacity(state.vcpus.len());
    for (index, saved) in state.vcpus.iter().enumerate() {
        let fd = vm
            .create_vcpu(index as u64)
            .map_err(kvm_err("create vCPU"))?;
        saved.restore(&fd)?;
        vcpu_fds.push(Arc::new(Mutex::new(fd)));
    }
    tracing::debug!("vCPUs ready at {:?}", started.elapsed());

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
    Ok((machine, events_rx))
}
