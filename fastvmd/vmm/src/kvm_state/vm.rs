//! VM-wide KVM state: the in-kernel PICs and IO-APIC, the PIT and the
//! kvm-clock.

use kvm_bindings::{
    KVM_CLOCK_TSC_STABLE, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    kvm_clock_data, kvm_irqchip, kvm_pit_state2,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::{KvmStateError, kvm_err};

/// Interrupt controllers, PIT and clock.
#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

impl std::fmt::Debug for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmState")
            .field("clock", &self.clock.clock)
            .finish_non_exhaustive()
    }
}

fn get_chip(vm: &VmFd, chip_id: u32, what: &'static str) -> Result<kvm_irqchip, KvmStateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip).map_err(kvm_err(what))?;
    Ok(chip)
}

impl VmState {
    /// Reads the state of a paused VM.
    pub fn save(vm: &VmFd) -> Result<VmState, KvmStateError> {
        Ok(VmState {
            pic_master: get_chip(vm, KVM_IRQCHIP_PIC_MASTER, "get irqchip (PIC master)")?,
            pic_slave: get_chip(vm, KVM_IRQCHIP_PIC_SLAVE, "get irqchip (PIC slave)")?,
            ioapic: get_chip(vm, KVM_IRQCHIP_IOAPIC, "get irqchip (IOAPIC)")?,
            pit: vm.get_pit2().map_err(kvm_err("get PIT"))?,
            clock: vm.get_clock().map_err(kvm_err("get clock"))?,
        })
    }

    /// Restores into a VM whose irqchip and PIT exist already.
    pub fn restore(&self, vm: &VmFd) -> Result<(), KvmStateError> {
        vm.set_pit2(&self.pit).map_err(kvm_err("set PIT"))?;
        let mut clock = self.clock;
        // KVM refuses flags it reports but does not take back.
        clock.flags &= !KVM_CLOCK_TSC_STABLE;
        vm.set_clock(&clock).map_err(kvm_err("set clock"))?;
        vm.set_irqchip(&self.pic_master)
            .map_err(kvm_err("set irqchip (PIC master)"))?;
        vm.set_irqchip(&self.pic_slave)
            .map_err(kvm_err("set irqchip (PIC slave)"))?;
        vm.set_irqchip(&self.ioapic)
            .map_err(kvm_err("set irqchip (IOAPIC)"))?;
        Ok(())
    }
}
