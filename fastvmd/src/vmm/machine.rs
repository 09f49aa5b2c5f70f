//! Assembles one microVM — KVM VM, guest memory, boot data, devices, vCPUs,
//! control and console sockets — runs it until something ends it, and tears
//! it down.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Kvm, VmFd};
use linux_loader::cmdline::Cmdline;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::boot::{self, cpuid, mptable, params, regs};
use super::bus::{Bus, SharedDevice};
use super::config::VmConfig;
use super::console::{self, ConsoleHub, ConsoleOut};
use super::control::{self, ControlTarget, RunState, Status};
use super::devices::serial::SerialDevice;
use super::devices::system::{I8042, PowerPort};
use super::devices::virtio::blk::Block;
use super::devices::virtio::mmio::MmioTransport;
use super::devices::virtio::vsock::Vsock;
use super::devices::virtio::{Interrupt, MMIO_WINDOW, VirtioDevice};
use super::exit::ExitEvent;
use super::lockdir::DirLock;
use super::vcpu::{self, VcpuContext, VcpuControl};
use super::{VmmError, layout, memory, signals};

/// File names inside the VM directory.
pub const CONTROL_SOCKET: &str = "control.sock";
pub const CONSOLE_SOCKET: &str = "console.sock";
pub const VSOCK_SOCKET: &str = "vsock.sock";

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |e| VmmError::Kvm(format!("{what}: {e}"))
}

/// The control socket's view of the running machine.
struct MonitorControl {
    vcpus: Arc<VcpuControl>,
    started: Instant,
    vcpu_count: u8,
    memory_mib: u64,
    stopping: AtomicBool,
    events: Mutex<Sender<ExitEvent>>,
}

impl ControlTarget for MonitorControl {
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
        let _ = super::bus::lock(&self.events).send(ExitEvent::Stop("control request"));
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

/// A virtio device waiting for its MMIO window.
struct PendingVirtio {
    device: Box<dyn VirtioDevice>,
}

fn attach_virtio(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    mmio_bus: &mut Bus,
    cmdline: &mut Cmdline,
    devices: Vec<PendingVirtio>,
) -> Result<(), VmmError> {
    for (i, pending) in devices.into_iter().enumerate() {
        let base = layout::VIRTIO_MMIO_BASE + i as u64 * MMIO_WINDOW;
        let irq = layout::VIRTIO_IRQ_BASE + i as u32;
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(VmmError::Io)?;
        vm.register_irqfd(&irqfd, irq)
            .map_err(kvm_err("register virtio irqfd"))?;
        let interrupt = Arc::new(Interrupt::new(irqfd));
        let transport = MmioTransport::new(mem.clone(), pending.device, interrupt);
        let shared: SharedDevice = Arc::new(Mutex::new(transport));
        mmio_bus
            .insert(base, MMIO_WINDOW, shared)
            .map_err(|e| VmmError::Device(e.to_string()))?;
        cmdline
            .add_virtio_mmio_device(MMIO_WINDOW, GuestAddress(base), irq, None)
            .map_err(|e| VmmError::Boot(boot::BootError::Cmdline(e.to_string())))?;
    }
    Ok(())
}

fn build_cmdline(cfg: &VmConfig) -> Result<Cmdline, VmmError> {
    let mut cmdline = Cmdline::new(layout::CMDLINE_MAX_SIZE)
        .map_err(|e| VmmError::Boot(boot::BootError::Cmdline(e.to_string())))?;
    cmdline
        .insert_str(&cfg.cmdline)
        .map_err(|e| VmmError::Boot(boot::BootError::Cmdline(e.to_string())))?;
    Ok(cmdline)
}

/// Builds the VM described by `cfg`, runs it, and returns what ended it.
pub fn run(cfg: &VmConfig) -> Result<ExitEvent, VmmError> {
    cfg.validate()?;
    let _lock = DirLock::acquire(&cfg.dir)?;
    signals::block_termination()?;
    let started = Instant::now();

    let kvm = Kvm::new().map_err(|e| VmmError::Kvm(format!("cannot open /dev/kvm: {e}")))?;
    let vm = kvm.create_vm().map_err(kvm_err("create VM"))?;
    // Memory slots go in before the irqchip exists: registering them
    // afterwards costs milliseconds per slot.
    let mem = memory::create(&vm, cfg.memory_bytes())?;
    vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
        .map_err(kvm_err("set TSS address"))?;
    vm.create_irq_chip().map_err(kvm_err("create irqchip"))?;
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(kvm_err("create PIT"))?;
    tracing::debug!("kvm vm ready at {:?}", started.elapsed());

    let (events_tx, events_rx) = channel::<ExitEvent>();
    let hub = ConsoleHub::new();
    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(VmmError::Io)?;
    vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)
        .map_err(kvm_err("register serial irqfd"))?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        serial_irq,
        ConsoleOut(hub.clone()),
    )));
    let mut io_bus = Bus::new();
    let device_err = |e: super::bus::BusError| VmmError::Device(e.to_string());
    io_bus
        .insert(u64::from(layout::SERIAL_PORT), 8, serial.clone())
        .map_err(device_err)?;
    io_bus
        .insert(
            u64::from(layout::I8042_PORT),
            5,
            Arc::new(Mutex::new(I8042::new(events_tx.clone()))),
        )
        .map_err(device_err)?;
    io_bus
        .insert(
            u64::from(layout::POWER_PORT),
            2,
            Arc::new(Mutex::new(PowerPort::new(events_tx.clone()))),
        )
        .map_err(device_err)?;

    let mut virtio = Vec::new();
    if let Some(disk) = &cfg.disk {
        let block = Block::new(disk, false).map_err(|e| VmmError::Device(e.to_string()))?;
        virtio.push(PendingVirtio {
            device: Box::new(block),
        });
    }
    if let Some(cid) = cfg.vsock_cid {
        let vsock = Vsock::new(cid, cfg.dir.join(VSOCK_SOCKET))
            .map_err(|e| VmmError::Device(e.to_string()))?;
        virtio.push(PendingVirtio {
            device: Box::new(vsock),
        });
    }
    let mut cmdline = build_cmdline(cfg)?;
    tracing::debug!("devices ready at {:?}", started.elapsed());
    let mut mmio_bus = Bus::new();
    attach_virtio(&vm, &mem, &mut mmio_bus, &mut cmdline, virtio)?;

    let (entry, loaded) = boot::load_kernel(&mem, &cfg.kernel)?;
    let initrd = match &cfg.initrd {
        Some(path) => Some(boot::load_initrd(&mem, path, loaded.kernel_end)?),
        None => None,
    };
    linux_loader::loader::load_cmdline(&mem, GuestAddress(layout::CMDLINE_START), &cmdline)
        .map_err(|e| VmmError::Boot(boot::BootError::Cmdline(e.to_string())))?;
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes_with_nul().len())
        .unwrap_or(0);
    params::write_boot_params(
        &mem,
        &params::BootParamsInput {
            mem_size: cfg.memory_bytes(),
            cmdline_len,
            initrd,
            setup_header: loaded.setup_header,
        },
    )?;
    mptable::setup(&mem, cfg.vcpus).map_err(boot::BootError::from)?;
    regs::write_boot_tables(&mem)?;
    tracing::debug!("boot data ready at {:?}", started.elapsed());

    let vcpus = VcpuControl::new(usize::from(cfg.vcpus));
    let target = Arc::new(MonitorControl {
        vcpus: vcpus.clone(),
        started,
        vcpu_count: cfg.vcpus,
        memory_mib: cfg.memory_mib,
        stopping: AtomicBool::new(false),
        events: Mutex::new(events_tx.clone()),
    });
    control::server::serve(bind(&cfg.dir, CONTROL_SOCKET)?, target.clone())
        .map_err(VmmError::Io)?;
    console::serve(bind(&cfg.dir, CONSOLE_SOCKET)?, hub, serial);
    tracing::debug!("sockets ready at {:?}", started.elapsed());

    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("get supported CPUID"))?;
    vcpu::install_kick_handler().map_err(VmmError::Kvm)?;
    tracing::debug!("cpuid ready at {:?}", started.elapsed());
    let io_bus = Arc::new(io_bus);
    let mmio_bus = Arc::new(mmio_bus);
    for index in 0..cfg.vcpus {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("create vCPU"))?;
        let tsc_khz = fd.get_tsc_khz().unwrap_or(0);
        let table = cpuid::for_vcpu(
            &supported,
            cpuid::Topology {
                cpu_index: index,
                cpu_count: cfg.vcpus,
                tsc_khz,
            },
        )
        .map_err(VmmError::Kvm)?;
        fd.set_cpuid2(&table).map_err(kvm_err("set CPUID"))?;
        regs::setup_msrs(&fd)?;
        regs::setup_regs(&fd, entry.entry.0)?;
        regs::setup_sregs(&fd)?;
        regs::setup_fpu(&fd)?;
        regs::setup_lapic(&fd)?;
        vcpu::spawn(VcpuContext {
            index,
            fd,
            io_bus: io_bus.clone(),
            mmio_bus: mmio_bus.clone(),
            control: vcpus.clone(),
            events: events_tx.clone(),
        })
        .map_err(VmmError::Io)?;
    }
    signals::forward_termination(events_tx)?;
    tracing::info!(
        "VM running: {} vCPUs, {} MiB, started in {:?}",
        cfg.vcpus,
        cfg.memory_mib,
        started.elapsed()
    );

    let event = events_rx
        .recv()
        .unwrap_or(ExitEvent::Stop("lost event channel"));
    target.stopping.store(true, Ordering::SeqCst);
    vcpus.stop();
    remove_sockets(&cfg.dir);
    Ok(event)
}

fn remove_sockets(dir: &Path) {
    for name in [CONTROL_SOCKET, CONSOLE_SOCKET, VSOCK_SOCKET] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}
