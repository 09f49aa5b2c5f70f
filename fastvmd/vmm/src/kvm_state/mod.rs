//! KVM-held state of a VM for snapshots: every vCPU ([`vcpu`]) and the
//! VM-wide parts — interrupt controllers, PIT, clock ([`vm`]).

pub mod vcpu;
pub mod vm;

/// A KVM state ioctl failed.
#[derive(Debug, thiserror::Error)]
#[error("KVM {what}: {source}")]
pub struct KvmStateError {
    /// The operation, e.g. "get sregs" or "set irqchip (IOAPIC)".
    pub what: &'static str,
    /// The error KVM returned.
    pub source: kvm_ioctls::Error,
}

/// Wraps a KVM error with the operation that failed.
pub fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmStateError {
    move |source| KvmStateError { what, source }
}
