//! The ioctl request numbers a jailed monitor may use after it confined
//! itself, by thread kind. Everything else (creating VMs, vCPUs, memory
//! slots, setting state) happened before, and is refused from then on.

#![allow(non_snake_case)]

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid2, kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

const KVMIO: u32 = 0xAE;

ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_io_nr!(KVM_CHECK_EXTENSION, KVMIO, 0x03);
ioctl_io_nr!(KVM_GET_TSC_KHZ, KVMIO, 0xa3);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
ioctl_ior_nr!(KVM_GET_FPU, KVMIO, 0x8c, kvm_fpu);
ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
ioctl_iowr_nr!(KVM_GET_CPUID2, KVMIO, 0x91, kvm_cpuid2);
ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_debugregs);
ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
ioctl_ior_nr!(KVM_GET_XSAVE2, KVMIO, 0xcf, kvm_xsave);
ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);
ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_irqchip);
ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_pit_state2);
ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_clock_data);
ioctl_iow_nr!(FICLONE, 0x94, 9, libc::c_int);

/// `FIONBIO`: what `set_nonblocking` on a socket uses.
const FIONBIO: u64 = libc::FIONBIO;

/// A request number as the kernel reads it (`unsigned int`).
fn request(number: u64) -> u32 {
    u32::try_from(number).expect("ioctl request numbers fit in 32 bits")
}

/// What a vCPU thread may ask of KVM: to run its vCPU, and to read its
/// registers for the report of a crash (`crate::crash_report`).
pub fn vcpu() -> Vec<u32> {
    [KVM_RUN(), KVM_GET_REGS(), KVM_GET_SREGS()]
        .into_iter()
        .map(request)
        .collect()
}

/// What a snapshot (on a control thread) reads from KVM, and the reflink
/// of the disk; sockets made non-blocking.
pub fn control() -> Vec<u32> {
    [
        KVM_CHECK_EXTENSION(),
        KVM_GET_TSC_KHZ(),
        KVM_GET_REGS(),
        KVM_GET_SREGS(),
        KVM_GET_FPU(),
        KVM_GET_MSRS(),
        KVM_GET_CPUID2(),
        KVM_GET_LAPIC(),
        KVM_GET_MP_STATE(),
        KVM_GET_VCPU_EVENTS(),
        KVM_GET_DEBUGREGS(),
        KVM_GET_XSAVE(),
        KVM_GET_XSAVE2(),
        KVM_GET_XCRS(),
        KVM_GET_IRQCHIP(),
        KVM_GET_PIT2(),
        KVM_GET_CLOCK(),
        FICLONE(),
    ]
    .into_iter()
    .chain([FIONBIO])
    .map(request)
    .collect()
}

/// Device backends and the console: sockets made non-blocking, nothing else.
pub fn sockets() -> Vec<u32> {
    vec![request(FIONBIO)]
}
