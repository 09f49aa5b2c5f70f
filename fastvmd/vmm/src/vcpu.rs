//! vCPU threads: each runs KVM_RUN in a loop, routing port I/O and MMIO
//! exits to the buses. Pause, resume and stop are coordinated through
//! [`VcpuControl`]; a real-time signal kicks a vCPU out of KVM_RUN.

use std::cell::Cell;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN, kvm_run};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use super::bus::{Bus, lock};
use super::control::RunState;
use super::exit::{ExitEvent, GuestRequest};
use super::wakeup::{IDLE_PORT, MAX_IDLE, Wakeup, requested_wait};

thread_local! {
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// Signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let ptr = KVM_RUN.with(|p| p.get());
    if !ptr.is_null() {
        // SAFETY: the pointer is this thread's own kvm_run mapping, set by the
        // vCPU loop before entering KVM_RUN and valid for the thread's life;
        // writing a u8 field is async-signal-safe.
        unsafe { (*ptr).immediate_exit = 1 };
    }
}

/// Installs the kick handler; call once before starting vCPUs.
pub fn install_kick_handler() -> Result<(), String> {
    register_signal_handler(kick_signal(), on_kick).map_err(|e| format!("signal handler: {e}"))
}

/// Shared run state of all vCPUs.
pub struct VcpuControl {
    state: Mutex<(RunState, usize)>,
    changed: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
    count: usize,
    /// Rung on every transition, so idle vCPUs see it.
    wakeup: Arc<Wakeup>,
}

impl VcpuControl {
    /// Control for `count` vCPUs, initially running; transitions ring
    /// `wakeup`.
    pub fn new(count: usize, wakeup: Arc<Wakeup>) -> Arc<Self> {
        Arc::new(VcpuControl {
            state: Mutex::new((RunState::Running, 0)),
            changed: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            count,
            wakeup,
        })
    }

    /// The current state.
    pub fn state(&self) -> RunState {
        lock(&self.state).0
    }

    fn kick_all(&self) {
        for t in lock(&self.threads).iter() {
            let _ = t.kill(kick_signal());
        }
        self.wakeup.ring();
    }

    /// Moves to `target` and waits until every vCPU is parked (for Paused)
    /// or has left its loop (for Stopping).
    fn transition(&self, target: RunState, timeout: Duration) -> Result<(), String> {
        {
            let mut st = lock(&self.state);
            st.0 = target;
        }
        self.changed.notify_all();
        let deadline = Instant::now() + timeout;
        loop {
            self.kick_all();
            let st = lock(&self.state);
            let (st, _) = self
                .changed
                .wait_timeout(st, Duration::from_millis(5))
                .unwrap_or_else(|p| p.into_inner());
            if st.0 != target {
                return Err(format!("state changed to {:?} meanwhile", st.0));
            }
            let settled = match target {
                RunState::Paused => st.1 == self.count,
                RunState::Stopping => lock(&self.threads).iter().all(|t| t.is_finished()),
                RunState::Running => true,
            };
            if settled {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("vCPUs did not reach {target:?} within {timeout:?}"));
            }
        }
    }

    /// Parks every vCPU.
    pub fn pause(&self) -> Result<(), String> {
        match self.state() {
            RunState::Paused => Err("the VM is already paused".into()),
            RunState::Stopping => Err("the VM is stopping".into()),
            RunState::Running => self.transition(RunState::Paused, Duration::from_secs(2)),
        }
    }

    /// Releases parked vCPUs.
    pub fn resume(&self) -> Result<(), String> {
        let mut st = lock(&self.state);
        match st.0 {
            RunState::Running => Err("the VM is not paused".into()),
            RunState::Stopping => Err("the VM is stopping".into()),
            RunState::Paused => {
                st.0 = RunState::Running;
                self.changed.notify_all();
                Ok(())
            }
        }
    }

    /// Stops every vCPU and joins their threads.
    pub fn stop(&self) {
        if let Err(e) = self.transition(RunState::Stopping, Duration::from_secs(5)) {
            tracing::warn!("stopping vCPUs: {e}");
        }
        for t in lock(&self.threads).drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }

    /// Blocks while paused; false once the vCPU should leave its loop.
    fn wait_runnable(&self) -> bool {
        let mut st = lock(&self.state);
        loop {
            match st.0 {
                RunState::Running => return true,
                RunState::Stopping => return false,
                RunState::Paused => {
                    st.1 += 1;
                    self.changed.notify_all();
                    while st.0 == RunState::Paused {
                        st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                    st.1 -= 1;
                }
            }
        }
    }
}

/// What a vCPU thread needs.
pub struct VcpuContext {
    pub index: u8,
    /// Locked by the vCPU thread around each KVM_RUN; snapshots lock it
    /// while the vCPU is parked.
    pub fd: Arc<Mutex<VcpuFd>>,
    pub io_bus: Arc<Bus>,
    pub mmio_bus: Arc<Bus>,
    pub control: Arc<VcpuControl>,
    /// Idle requests ([`IDLE_PORT`]) wait on it.
    pub wakeup: Arc<Wakeup>,
    /// This monitor's epoch, read by an idle `in` ([`super::wakeup`]).
    pub epoch: u32,
    pub events: Sender<ExitEvent>,
}

/// A thread for vCPU `index` (its name and stack size).
pub fn builder(index: u8) -> thread::Builder {
    thread::Builder::new()
        .name(format!("vcpu{index}"))
        .stack_size(256 << 10)
}

/// Starts the vCPU's thread.
pub fn spawn(ctx: VcpuContext) -> std::io::Result<()> {
    let control = ctx.control.clone();
    let handle = builder(ctx.index).spawn(move || run(ctx))?;
    adopt(&control, handle);
    Ok(())
}

/// A thread made before its vCPU could run, waiting for its context (the
/// restore's KVM thread becomes vCPU 0 this way).
pub struct WaitingVcpu {
    pub context: Sender<VcpuContext>,
    pub thread: JoinHandle<()>,
}

impl WaitingVcpu {
    /// Starts the vCPU on the waiting thread.
    pub fn start(self, ctx: VcpuContext) -> std::io::Result<()> {
        let control = ctx.control.clone();
        self.context
            .send(ctx)
            .map_err(|_| std::io::Error::other("the waiting vCPU thread is gone"))?;
        adopt(&control, self.thread);
        Ok(())
    }
}

/// Counts `handle` among the vCPU threads that are kicked and joined.
fn adopt(control: &VcpuControl, handle: JoinHandle<()>) {
    lock(&control.threads).push(handle);
}

/// Runs a vCPU on the calling thread until it stops.
pub fn run(ctx: VcpuContext) {
    crate::threads::confine_current(crate::seccomp::ThreadKind::Vcpu);
    let fd = ctx.fd.clone();
    let run_ptr: *mut kvm_run = lock(&fd).get_kvm_run();
    KVM_RUN.with(|p| p.set(run_ptr));
    // Generation 0: a ring before this thread started (console input during
    // a restore) ends the first idle wait at once instead of being missed.
    let mut seen = 0;
    let mut epoch_read = false;
    let mut io_pending = false;
    loop {
        if io_pending && ctx.control.state() != RunState::Running {
            complete_pending_io(&mut lock(&fd));
        }
        if !ctx.control.wait_runnable() {
            break;
        }
        let mut vcpu = lock(&fd);
        let mut idle = None;
        let exit = vcpu.run();
        io_pending = matches!(
            exit,
            Ok(VcpuExit::IoIn(..)
                | VcpuExit::IoOut(..)
                | VcpuExit::MmioRead(..)
                | VcpuExit::MmioWrite(..))
        );
        let event = match exit {
            Ok(VcpuExit::IoOut(IDLE_PORT, data)) => {
                idle = Some(requested_wait(data));
                None
            }
            Ok(VcpuExit::IoIn(IDLE_PORT, data)) => {
                let bytes = ctx.epoch.to_le_bytes();
                let n = data.len().min(4);
                data[..n].copy_from_slice(&bytes[..n]);
                idle = epoch_read.then_some(MAX_IDLE);
                epoch_read = true;
                None
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                ctx.io_bus.read(u64::from(port), data);
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                ctx.io_bus.write(u64::from(port), data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !ctx.mmio_bus.read(addr, data) {
                    tracing::debug!("vcpu{}: MMIO read at unmapped {addr:#x}", ctx.index);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !ctx.mmio_bus.write(addr, data) {
                    tracing::debug!("vcpu{}: MMIO write at unmapped {addr:#x}", ctx.index);
                }
                None
            }
            Ok(VcpuExit::Hlt) => Some(ExitEvent::Guest(GuestRequest::PowerOff)),
            Ok(VcpuExit::Shutdown) => Some(ExitEvent::Crashed(format!(
                "triple fault (KVM_EXIT_SHUTDOWN) on vcpu{}: {}",
                ctx.index,
                crate::crash_report::vcpu_state(&vcpu)
            ))),
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => Some(ExitEvent::Guest(GuestRequest::PowerOff)),
                KVM_SYSTEM_EVENT_RESET => Some(ExitEvent::Guest(GuestRequest::Reboot)),
                other => Some(ExitEvent::Crashed(format!("system event {other}"))),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(ExitEvent::Crashed(format!(
                "KVM entry failed on cpu {cpu}: reason {reason:#x}"
            ))),
            Ok(VcpuExit::InternalError) => Some(ExitEvent::Crashed("KVM internal error".into())),
            Ok(other) => {
                tracing::debug!("vcpu{}: unhandled exit {other:?}", ctx.index);
                None
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => Some(ExitEvent::Crashed(format!("KVM_RUN: {e}"))),
        };
        drop(vcpu);
        if let Some(wait) = idle {
            seen = ctx.wakeup.wait(seen, wait);
        }
        if let Some(event) = event {
            let _ = ctx.events.send(event);
            // Park until the monitor stops the VM.
            let mut st = lock(&ctx.control.state);
            while st.0 != RunState::Stopping {
                st = ctx
                    .control
                    .changed
                    .wait(st)
                    .unwrap_or_else(|p| p.into_inner());
            }
            break;
        }
    }
    KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
}

/// Finishes the port or MMIO access the last exit left half done (KVM
/// copies an `in` value into RAX and moves RIP past the instruction only on
/// the next KVM_RUN), so a parked vCPU's saved state never repeats or loses
/// an access. KVM_RUN with `immediate_exit` set does exactly that and
/// returns EINTR without running guest code.
fn complete_pending_io(vcpu: &mut VcpuFd) {
    vcpu.set_kvm_immediate_exit(1);
    match vcpu.run() {
        Err(e) if e.errno() == libc::EINTR => {}
        other => crate::guest_warn!(
            "completing pending I/O: unexpected",
            "completing pending I/O: unexpected {other:?}"
        ),
    }
    vcpu.set_kvm_immediate_exit(0);
}
