//! What a crashed guest's vCPU looked like: the registers that say where
//! and in what mode a triple fault happened, for the crash message (the
//! guest left nothing on its console). On AMD, KVM resets the vCPU when it
//! reports the triple fault, so the state at the fault is lost: the
//! message says so rather than point at the reset vector.

use kvm_ioctls::VcpuFd;

/// One line of the vCPU's state: instruction and stack pointers, control
/// registers, EFER, the IDT and the code segment. Registers KVM cannot
/// read are left out, with why.
pub fn vcpu_state(vcpu: &VcpuFd) -> String {
    let regs = match vcpu.get_regs() {
        Ok(r) => format!("rip={:#x} rsp={:#x} rflags={:#x}", r.rip, r.rsp, r.rflags),
        Err(e) => format!("registers unreadable ({e})"),
    };
    let sregs = match vcpu.get_sregs() {
        Ok(s) => format!(
            "cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} idt={:#x}/{:#x} cs={:#x}",
            s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.idt.base, s.idt.limit, s.cs.selector
        ),
        Err(e) => format!("special registers unreadable ({e})"),
    };
    let reset = matches!(
        (vcpu.get_regs(), vcpu.get_sregs()),
        (Ok(r), Ok(s)) if r.rip == RESET_RIP && s.cs.selector == RESET_CS
    );
    if reset {
        format!("{regs} {sregs} (the vCPU's reset state: KVM reset it at the fault, as on AMD)")
    } else {
        format!("{regs} {sregs}")
    }
}

/// Where an x86 CPU starts after a reset: CS 0xf000, IP 0xfff0.
const RESET_RIP: u64 = 0xfff0;
const RESET_CS: u16 = 0xf000;

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::Kvm;

    #[test]
    fn names_the_instruction_pointer_and_control_registers() {
        let Ok(kvm) = Kvm::new() else {
            eprintln!("SKIP: no /dev/kvm on this host");
            return;
        };
        let vm = kvm.create_vm().expect("a VM");
        let vcpu = vm.create_vcpu(0).expect("a vCPU");
        let mut regs = vcpu.get_regs().expect("registers");
        regs.rip = 0xfff0_1234;
        vcpu.set_regs(&regs).expect("set registers");
        let line = vcpu_state(&vcpu);
        assert!(line.contains("rip=0xfff01234"), "{line}");
        for name in ["cr0=", "cr2=", "cr3=", "efer=", "idt="] {
            assert!(line.contains(name), "{name} missing from {line}");
        }
        assert!(!line.contains("reset state"), "{line}");
    }

    #[test]
    fn a_vcpu_in_its_reset_state_is_said_to_be_one() {
        let Ok(kvm) = Kvm::new() else {
            eprintln!("SKIP: no /dev/kvm on this host");
            return;
        };
        let vm = kvm.create_vm().expect("a VM");
        let vcpu = vm.create_vcpu(0).expect("a vCPU");
        let line = vcpu_state(&vcpu);
        assert!(line.contains("rip=0xfff0 "), "{line}");
        assert!(line.contains("reset state"), "{line}");
    }
}
