//! One vCPU's complete state: registers, FPU/SSE/AVX (xsave), XCRs, debug
//! registers, LAPIC, MSRs, pending events, MP state and CPUID. Saved while
//! the vCPU is parked, restored before it first runs.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state,
    kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

use super::{KvmStateError, kvm_err};

/// Everything KVM holds for one vCPU.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("rip", &self.regs.rip)
            .field("msrs", &self.msrs.len())
            .field("cpuid", &self.cpuid.len())
            .finish_non_exhaustive()
    }
}

/// MSRs KVM can save for this host, from KVM_GET_MSR_INDEX_LIST.
pub fn msr_index_list(kvm: &Kvm) -> Result<Vec<u32>, KvmStateError> {
    Ok(kvm
        .get_msr_index_list()
        .map_err(kvm_err("get MSR index list"))?
        .as_slice()
        .to_vec())
}

/// Reads every MSR in `indices` that KVM can read. KVM_GET_MSRS stops at
/// the first MSR it cannot read; that one is skipped and reading goes on.
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, KvmStateError> {
    let mut saved = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| KvmStateError {
            what: "build MSR list",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let read = fd.get_msrs(&mut msrs).map_err(kvm_err("get MSRs"))?;
        saved.extend_from_slice(&msrs.as_slice()[..read]);
        rest = &rest[(read + 1).min(rest.len())..];
    }
    Ok(saved)
}

impl VcpuState {
    /// Reads the state of a parked vCPU.
    pub fn save(fd: &VcpuFd, msr_indices: &[u32]) -> Result<VcpuState, KvmStateError> {
        Ok(VcpuState {
            mp_state: fd.get_mp_state().map_err(kvm_err("get MP state"))?,
            regs: fd.get_regs().map_err(kvm_err("get regs"))?,
            sregs: fd.get_sregs().map_err(kvm_err("get sregs"))?,
            xsave: fd.get_xsave().map_err(kvm_err("get xsave"))?,
            xcrs: fd.get_xcrs().map_err(kvm_err("get XCRs"))?,
            debugregs: fd.get_debug_regs().map_err(kvm_err("get debug regs"))?,
            lapic: fd.get_lapic().map_err(kvm_err("get LAPIC"))?,
            msrs: read_msrs(fd, msr_indices)?,
            events: fd.get_vcpu_events().map_err(kvm_err("get vCPU events"))?,
            cpuid: fd
                .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
                .map_err(kvm_err("get CPUID"))?
                .as_slice()
                .to_vec(),
        })
    }

    /// Gives a new vCPU this state (Firecracker's order: CPUID first, events last).
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), KvmStateError> {
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|_| KvmStateError {
            what: "build CPUID",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        fd.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
        fd.set_mp_state(self.mp_state)
            .map_err(kvm_err("set MP state"))?;
        fd.set_regs(&self.regs).map_err(kvm_err("set regs"))?;
        fd.set_sregs(&self.sregs).map_err(kvm_err("set sregs"))?;
        // SAFETY: the buffer came from KVM_GET_XSAVE on a vCPU of the same
        // host CPU (the snapshot's CPU fingerprint was checked), so its size
        // and layout are what KVM_SET_XSAVE expects.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(kvm_err("set xsave"))?;
        fd.set_xcrs(&self.xcrs).map_err(kvm_err("set XCRs"))?;
        fd.set_debug_regs(&self.debugregs)
            .map_err(kvm_err("set debug regs"))?;
        fd.set_lapic(&self.lapic).map_err(kvm_err("set LAPIC"))?;
        let msrs = Msrs::from_entries(&self.msrs).map_err(|_| KvmStateError {
            what: "build MSR list",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let set = fd.set_msrs(&msrs).map_err(kvm_err("set MSRs"))?;
        if set != self.msrs.len() {
            let failed = self.msrs.get(set).map_or(0, |m| m.index);
            tracing::warn!(
                "KVM took {set} of {} MSRs; MSR {failed:#x} refused",
                self.msrs.len()
            );
        }
        fd.set_vcpu_events(&self.events)
            .map_err(kvm_err("set vCPU events"))?;
        Ok(())
    }
}
