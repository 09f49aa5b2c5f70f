//! The monitor: one KVM microVM per process (`fastvmd vmm`).
//!
//! [`machine::run`] builds the VM from a [`config::VmConfig`] and runs it
//! until the guest powers off, reboots or crashes, or the host stops it.

pub mod boot;
pub mod bus;
pub mod config;
pub mod console;
pub mod control;
pub mod devices;
pub mod exit;
pub mod exit_record;
pub mod guest_warn;
pub mod host;
pub mod jail;
pub mod kvm_state;
pub mod layout;
pub mod lockdir;
pub mod log_cap;
pub mod machine;
pub mod memory;
pub mod seccomp;
pub mod signals;
pub mod snapshot;
pub mod threads;
pub mod vcpu;
pub mod wakeup;

/// Why a monitor could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The configuration was refused before anything was created.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The VM directory cannot be used.
    #[error("--dir {path}: {reason}")]
    Dir { path: String, reason: String },
    /// KVM refused an operation (or `/dev/kvm` is unusable).
    #[error("KVM: {0}")]
    Kvm(String),
    /// Guest memory could not be mapped or registered.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The kernel, initrd or boot data could not be set up.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// A vCPU's boot registers could not be set.
    #[error(transparent)]
    Regs(#[from] boot::regs::RegsError),
    /// A device could not be created or placed.
    #[error("device: {0}")]
    Device(String),
    /// A socket in the VM directory could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    /// A snapshot cannot be read, or is refused.
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    /// Saved device state does not fit the device.
    #[error("device state: {0}")]
    Persist(#[from] devices::PersistError),
    /// KVM refused saved vCPU or VM state.
    #[error(transparent)]
    KvmState(#[from] kvm_state::KvmStateError),
    /// The monitor could not confine itself (and does not run unconfined).
    #[error(transparent)]
    Jail(#[from] jail::JailError),
    /// Another OS error (threads, eventfds, signals).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
