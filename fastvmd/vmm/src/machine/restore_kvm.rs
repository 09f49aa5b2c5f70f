//! The KVM half of a restore, on the thread that then runs vCPU 0.
//!
//! `/dev/kvm` is opened by the caller (it must be open before the monitor
//! makes its VM directory `/`, which a restore does while this thread
//! still works); the thread creates the VM at once; once the main thread has
//! read the snapshot and mapped its memory, it registers the memory, adds
//! irqchip and PIT, restores their state and makes every vCPU where the
//! snapshot left it; it wires the devices' interrupts when the main thread
//! has built them, hands the VM over, and runs vCPU 0 when given its
//! context. Each KVM call is slow on a nested host, so all of this runs
//! beside the main thread's work (directory, disk, devices), and a vCPU
//! thread made this early costs nothing when the VM is ready.

use std::sync::mpsc::{Receiver, RecvError, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::boot::{add_memory_and_chips, kvm_err, register_irqfd};
use crate::kvm_state::vcpu::VcpuState;
use crate::kvm_state::vm::VmState;
use crate::vcpu::{self, VcpuContext, WaitingVcpu};
use crate::{VmmError, memory};

/// How long a hand-over between the two threads is awaited by polling
/// (yielding the core to anything else runnable) before sleeping. A thread
/// that sleeps lets its idle core halt, and on a nested host waking a
/// halted core costs ~0.1 ms, many milliseconds when the host is busy;
/// the waits here are shorter than that. The main thread waits for the
/// VM ~0.1-0.5 ms, this thread for vCPU 0's context ~0.1 ms.
const VM_WAIT_POLL: Duration = Duration::from_millis(2);
const CONTEXT_WAIT_POLL: Duration = Duration::from_micros(500);

/// What the main thread hands over once the snapshot is read and checked.
pub struct SavedKvm {
    /// The snapshot's memory, already mapped copy-on-write.
    pub mem: GuestMemoryMmap,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
}

/// The restored KVM VM and its vCPUs (not running yet).
pub struct RestoredKvm {
    pub kvm: Kvm,
    pub vm: VmFd,
    pub vcpu_fds: Vec<Arc<Mutex<VcpuFd>>>,
}

/// Device interrupts to wire: an eventfd and its GSI.
pub type Irqs = Vec<(EventFd, u32)>;

/// The main thread's end of the KVM thread.
pub struct KvmThread {
    saved: Sender<SavedKvm>,
    irqs: Sender<Irqs>,
    restored: Receiver<Result<RestoredKvm, VmmError>>,
    vcpu0: WaitingVcpu,
}

impl KvmThread {
    /// Starts the thread (named after vCPU 0, which it becomes); it creates
    /// the VM while the caller reads the snapshot. Dropped before
    /// [`KvmThread::restored`], the thread ends on its own.
    pub fn spawn() -> Result<KvmThread, VmmError> {
        let kvm = Kvm::new().map_err(|e| VmmError::Kvm(format!("cannot open /dev/kvm: {e}")))?;
        let (saved, saved_rx) = channel();
        let (irqs, irqs_rx) = channel();
        let (restored_tx, restored) = channel();
        let (context, context_rx) = channel::<VcpuContext>();
        let thread = vcpu::builder(0)
            .spawn(move || {
                let outcome = restore(kvm, &saved_rx, &irqs_rx);
                let ok = outcome.is_ok();
                if restored_tx.send(outcome).is_ok() && ok {
                    // Confined while the main thread finishes the jail and
                    // the devices, not after it hands over the vCPU.
                    crate::threads::confine_current(crate::seccomp::ThreadKind::Vcpu);
                    if let Ok(ctx) = recv_polling(&context_rx, CONTEXT_WAIT_POLL) {
                        vcpu::run(ctx);
                    }
                }
            })
            .map_err(VmmError::Io)?;
        Ok(KvmThread {
            saved,
            irqs,
            restored,
            vcpu0: WaitingVcpu { context, thread },
        })
    }

    /// Hands over the snapshot's parts; the thread goes on alone.
    pub fn send(&self, saved: SavedKvm) {
        // A send fails only when the thread already ended: its error comes
        // from `restored`.
        let _ = self.saved.send(saved);
    }

    /// Hands over the device interrupts and waits for the restored VM;
    /// the thread then waits to run vCPU 0.
    pub fn restored(self, irqs: Irqs) -> Result<(RestoredKvm, WaitingVcpu), VmmError> {
        let _ = self.irqs.send(irqs);
        let restored = recv_polling(&self.restored, VM_WAIT_POLL)
            .map_err(|_| VmmError::Kvm("the KVM restore thread ended early".into()))??;
        Ok((restored, self.vcpu0))
    }
}

/// Receives from `rx`, polling for up to `poll` before blocking; each
/// poll yields, so a thread on the same core is not held up.
fn recv_polling<T>(rx: &Receiver<T>, poll: Duration) -> Result<T, RecvError> {
    let until = Instant::now() + poll;
    loop {
        match rx.try_recv() {
            Ok(value) => return Ok(value),
            Err(TryRecvError::Disconnected) => return Err(RecvError),
            Err(TryRecvError::Empty) if Instant::now() < until => std::thread::yield_now(),
            Err(TryRecvError::Empty) => return rx.recv(),
        }
    }
}

fn restore(
    kvm: Kvm,
    saved: &Receiver<SavedKvm>,
    irqs: &Receiver<Irqs>,
) -> Result<RestoredKvm, VmmError> {
    let vm = kvm.create_vm().map_err(kvm_err("create VM"))?;
    let abandoned = |_| VmmError::Kvm("restore abandoned".into());
    let saved = saved.recv().map_err(abandoned)?;
    add_memory_and_chips(&vm, |vm| {
        memory::register(vm, &saved.mem)?;
        Ok(saved.mem)
    })?;
    saved.vm.restore(&vm)?;
    let mut vcpu_fds = Vec::with_capacity(saved.vcpus.len());
    for (index, state) in saved.vcpus.iter().enumerate() {
        let fd = vm
            .create_vcpu(index as u64)
            .map_err(kvm_err("create vCPU"))?;
        state.restore(&fd)?;
        vcpu_fds.push(Arc::new(Mutex::new(fd)));
    }
    for (fd, gsi) in irqs.recv().map_err(abandoned)? {
        register_irqfd(&vm, &fd, gsi)?;
    }
    Ok(RestoredKvm { kvm, vm, vcpu_fds })
}
