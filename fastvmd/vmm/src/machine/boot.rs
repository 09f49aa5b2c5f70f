//! Builds a [`Machine`] from a configuration and boots the kernel: KVM VM,
//! guest memory, devices, boot data and vCPUs at the kernel entry.

use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Kvm, VmFd};
use linux_loader::cmdline::Cmdline;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::{Machine, Parts, VSOCK_SOCKET, VirtioSlot, VmSockets};
use crate::boot::{self, cpuid, mptable, params, regs};
use crate::bus::{Bus, BusError, SharedDevice};
use crate::config::VmConfig;
use crate::console::{ConsoleHub, ConsoleOut, ConsoleSerial};
use crate::devices::serial::SerialDevice;
use crate::devices::system::{I8042, PowerPort};
use crate::devices::virtio::blk::Block;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::{Net, NetHandle};
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::{Interrupt, MMIO_WINDOW, VirtioDevice};
use crate::exit::ExitEvent;
use crate::lockdir::DirLock;
use crate::wakeup::Wakeup;
use crate::{VmmError, layout, memory, signals};

pub(super) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |e| VmmError::Kvm(format!("{what}: {e}"))
}

fn device_err(e: BusError) -> VmmError {
    VmmError::Device(e.to_string())
}

fn cmdline_err(e: impl std::fmt::Display) -> VmmError {
    VmmError::Boot(boot::BootError::Cmdline(e.to_string()))
}

/// A KVM VM with guest memory, irqchip and PIT. Memory slots go in before
/// the irqchip exists: registering them afterwards costs milliseconds each.
pub(super) fn create_vm(
    kvm: &Kvm,
    make_memory: impl FnOnce(&VmFd) -> Result<GuestMemoryMmap, VmmError>,
) -> Result<(VmFd, GuestMemoryMmap), VmmError> {
    let vm = kvm.create_vm().map_err(kvm_err("create VM"))?;
    let mem = add_memory_and_chips(&vm, make_memory)?;
    Ok((vm, mem))
}

/// Gives a new VM its memory, then its irqchip and PIT.
pub(super) fn add_memory_and_chips(
    vm: &VmFd,
    make_memory: impl FnOnce(&VmFd) -> Result<GuestMemoryMmap, VmmError>,
) -> Result<GuestMemoryMmap, VmmError> {
    let mem = make_memory(vm)?;
    vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
        .map_err(kvm_err("set TSS address"))?;
    vm.create_irq_chip().map_err(kvm_err("create irqchip"))?;
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(kvm_err("create PIT"))?;
    Ok(mem)
}

/// Wires a device's interrupt eventfd to a GSI: at once when booting,
/// later on the KVM thread when restoring ([`super::restore_kvm`]).
pub(super) type IrqWiring<'a> = dyn FnMut(&EventFd, u32) -> Result<(), VmmError> + 'a;

/// Registers `fd` as the irqfd of `gsi` in `vm`.
pub(super) fn register_irqfd(vm: &VmFd, fd: &EventFd, gsi: u32) -> Result<(), VmmError> {
    vm.register_irqfd(fd, gsi)
        .map_err(|e| VmmError::Kvm(format!("register irqfd for GSI {gsi}: {e}")))
}

/// The port-I/O devices: serial console, i8042 and power port.
pub struct LegacyDevices {
    pub io_bus: Bus,
    pub serial: ConsoleSerial,
    pub hub: Arc<ConsoleHub>,
    pub i8042: Arc<Mutex<I8042>>,
    pub power: Arc<Mutex<PowerPort>>,
    /// Rung by interrupts and console input; idle vCPUs wait on it.
    pub wakeup: Arc<Wakeup>,
}

/// The serial console and the machine-control ports on a new port-I/O bus.
pub(super) fn legacy_devices(
    wire_irq: &mut IrqWiring,
    make_serial: impl FnOnce(EventFd, ConsoleOut) -> Result<SerialDevice<ConsoleOut>, VmmError>,
    i8042: I8042,
    power: PowerPort,
) -> Result<LegacyDevices, VmmError> {
    let hub = ConsoleHub::new();
    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(VmmError::Io)?;
    wire_irq(&serial_irq, layout::SERIAL_IRQ)?;
    let serial = Arc::new(Mutex::new(make_serial(
        serial_irq,
        ConsoleOut(hub.clone()),
    )?));
    let i8042 = Arc::new(Mutex::new(i8042));
    let power = Arc::new(Mutex::new(power));
    let mut io_bus = Bus::new();
    io_bus
        .insert(u64::from(layout::SERIAL_PORT), 8, serial.clone())
        .map_err(device_err)?;
    io_bus
        .insert(u64::from(layout::I8042_PORT), 5, i8042.clone())
        .map_err(device_err)?;
    io_bus
        .insert(u64::from(layout::POWER_PORT), 2, power.clone())
        .map_err(device_err)?;
    Ok(LegacyDevices {
        io_bus,
        serial,
        hub,
        i8042,
        power,
        wakeup: Arc::new(Wakeup::new()),
    })
}

/// Wires the interrupt of virtio slot `index` and returns it.
pub(super) fn virtio_interrupt(
    wire_irq: &mut IrqWiring,
    index: usize,
    wakeup: &Arc<Wakeup>,
) -> Result<(u64, u32, Arc<Interrupt>), VmmError> {
    let base = layout::VIRTIO_MMIO_BASE + index as u64 * MMIO_WINDOW;
    let irq = layout::VIRTIO_IRQ_BASE + index as u32;
    let irqfd = EventFd::new(EFD_NONBLOCK).map_err(VmmError::Io)?;
    wire_irq(&irqfd, irq)?;
    Ok((
        base,
        irq,
        Arc::new(Interrupt::new(irqfd).waking(wakeup.clone())),
    ))
}

/// Puts each transport on the MMIO bus.
pub(super) fn mmio_bus(slots: &[VirtioSlot]) -> Result<Bus, VmmError> {
    let mut bus = Bus::new();
    for slot in slots {
        let shared: SharedDevice = slot.transport.clone();
        bus.insert(slot.base, MMIO_WINDOW, shared)
            .map_err(device_err)?;
    }
    Ok(bus)
}

/// The NIC of `nic`: its tap (the one opened at start, else opened now,
/// created if missing), its policy compiled.
pub(super) fn nic(
    tap: Option<&str>,
    make: impl FnOnce(Option<crate::net::tap::Tap>) -> Result<Net, String>,
) -> Result<(Net, NetHandle), VmmError> {
    let tap = tap
        .map(|name| {
            crate::jail::take_early_tap(name).map_or_else(|| crate::net::tap::Tap::open(name), Ok)
        })
        .transpose()
        .map_err(|e| VmmError::Device(e.to_string()))?;
    let net = make(tap).map_err(VmmError::Device)?;
    let handle = net.handle();
    Ok((net, handle))
}

type Devices = (Vec<Box<dyn VirtioDevice>>, Option<NetHandle>);

fn virtio_devices(cfg: &VmConfig) -> Result<Devices, VmmError> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    if let Some(disk) = &cfg.disk {
        let block = Block::new(disk, false).map_err(|e| VmmError::Device(e.to_string()))?;
        devices.push(Box::new(block));
    }
    if let Some(cid) = cfg.vsock_cid {
        let vsock = Vsock::new(cid, cfg.dir.join(VSOCK_SOCKET))
            .map_err(|e| VmmError::Device(e.to_string()))?;
        devices.push(Box::new(vsock));
    }
    let mut handle = None;
    if let Some(c) = &cfg.nic {
        let (net, h) = nic(c.tap.as_deref(), |tap| {
            let policy = crate::net::firewall::LivePolicy::new(c.firewall.clone())
                .map_err(|e| format!("--firewall: {e}"))?;
            Net::new(c.mac, tap, policy).map_err(|e| e.to_string())
        })?;
        devices.push(Box::new(net));
        handle = Some(h);
    }
    Ok((devices, handle))
}

/// Builds the VM described by `cfg` with its vCPUs at the kernel entry.
pub fn build(cfg: &VmConfig) -> Result<(Machine, Receiver<ExitEvent>), VmmError> {
    cfg.validate()?;
    let dir_lock = DirLock::acquire(&cfg.dir)?;
    let sockets = VmSockets::bind(&cfg.dir)?;
    signals::block_termination()?;
    let started = Instant::now();

    let kvm = Kvm::new().map_err(|e| VmmError::Kvm(format!("cannot open /dev/kvm: {e}")))?;
    let (vm, mem) = create_vm(&kvm, |vm| memory::create(vm, cfg.memory_bytes()))?;
    tracing::debug!("kvm vm ready at {:?}", started.elapsed());

    let (events_tx, events_rx) = channel::<ExitEvent>();
    let mut wire_irq = |fd: &EventFd, gsi| register_irqfd(&vm, fd, gsi);
    let legacy = legacy_devices(
        &mut wire_irq,
        |irq, out| Ok(SerialDevice::new(irq, out)),
        I8042::new(events_tx.clone()),
        PowerPort::new(events_tx.clone()),
    )?;
    let mut cmdline = Cmdline::new(layout::CMDLINE_MAX_SIZE).map_err(cmdline_err)?;
    cmdline.insert_str(&cfg.cmdline).map_err(cmdline_err)?;
    let mut virtio = Vec::new();
    let (devices, net) = virtio_devices(cfg)?;
    for (index, device) in devices.into_iter().enumerate() {
        let (base, irq, interrupt) = virtio_interrupt(&mut wire_irq, index, &legacy.wakeup)?;
        let transport = MmioTransport::new(mem.clone(), device, interrupt);
        cmdline
            .add_virtio_mmio_device(MMIO_WINDOW, GuestAddress(base), irq, None)
            .map_err(cmdline_err)?;
        virtio.push(VirtioSlot {
            base,
            irq,
            transport: Arc::new(Mutex::new(transport)),
        });
    }
    let mmio_bus = mmio_bus(&virtio)?;
    tracing::debug!("devices ready at {:?}", started.elapsed());

    let (entry, loaded) = boot::load_kernel(&mem, &cfg.kernel)?;
    let initrd = match &cfg.initrd {
        Some(path) => Some(boot::load_initrd(&mem, path, loaded.kernel_end)?),
        None => None,
    };
    linux_loader::loader::load_cmdline(&mem, GuestAddress(layout::CMDLINE_START), &cmdline)
        .map_err(cmdline_err)?;
    let cmdline_text = cmdline.as_cstring().map_err(cmdline_err)?;
    params::write_boot_params(
        &mem,
        &params::BootParamsInput {
            mem_size: cfg.memory_bytes(),
            cmdline_len: cmdline_text.as_bytes_with_nul().len(),
            initrd,
            setup_header: loaded.setup_header,
        },
    )?;
    mptable::setup(&mem, cfg.vcpus).map_err(boot::BootError::from)?;
    regs::write_boot_tables(&mem)?;
    tracing::debug!("boot data ready at {:?}", started.elapsed());

    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("get supported CPUID"))?;
    let mut vcpu_fds = Vec::with_capacity(usize::from(cfg.vcpus));
    for index in 0..cfg.vcpus {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("create vCPU"))?;
        let topology = cpuid::Topology {
            cpu_index: index,
            cpu_count: cfg.vcpus,
            tsc_khz: fd.get_tsc_khz().unwrap_or(0),
        };
        let table = cpuid::for_vcpu(&supported, topology).map_err(VmmError::Kvm)?;
        fd.set_cpuid2(&table).map_err(kvm_err("set CPUID"))?;
        regs::setup_msrs(&fd)?;
        regs::setup_regs(&fd, entry.entry.0)?;
        regs::setup_sregs(&fd)?;
        regs::setup_fpu(&fd)?;
        regs::setup_lapic(&fd)?;
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
        disk_path: cfg.disk.clone(),
        kernel: cfg.kernel.display().to_string(),
        vcpu_count: cfg.vcpus,
        memory_mib: cfg.memory_mib,
        cmdline: cmdline_text.to_string_lossy().into_owned(),
        started,
        events: events_tx,
        dir_lock,
        sockets,
    })?;
    Ok((machine, events_rx))
}
