//! The monitor: one KVM microVM per process (the `fastvm-vmm` binary).
//!
//! [`machine::run`] builds the VM from a [`config::VmConfig`] and runs it
//! until the guest powers off, reboots or crashes, or the host stops it.
//! This crate is the monitor and nothing else: it links no HTTP, SQLite or
//! terminal code, which keeps its seccomp allow lists short and its memory
//! small. [`net`] is the part of VM networking a monitor runs (the tap,
//! the ingress filter, MACs and addresses); the daemon uses it too.

pub mod boot;
pub mod bus;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod crash_report;
pub mod devices;
pub mod exit;
pub mod exit_record;
pub mod fuzzing;
pub mod guest_warn;
pub mod host;
pub mod jail;
pub mod kvm_state;
pub mod layout;
pub mod lockdir;
pub mod log_cap;
pub mod machine;
pub mod memory;
pub mod net;
pub mod seccomp;
pub mod service;
pub mod signals;
pub mod snapshot;
pub mod threads;
pub mod vcpu;
pub mod wakeup;

/// The monitor binary's file name; the daemon looks for it next to its own.
pub const MONITOR_PROGRAM: &str = "fastvm-vmm";

/// What `fastvm-vmm --version` says: the version and the build id (a hash
/// of the sources and settings it was built from), by which the daemon
/// knows a monitor program from another build.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (build ",
    env!("FASTVM_VMM_BUILD"),
    ")"
);

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
