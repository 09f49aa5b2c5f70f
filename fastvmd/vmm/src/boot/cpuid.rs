//! CPUID for each vCPU: what KVM supports, with topology (APIC IDs, CPU
//! count), the hypervisor bit, and the timing leaf 0x40000010 (TSC and APIC
//! bus frequency in kHz) filled in.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

/// Leaf with TSC kHz in EAX and APIC bus kHz in EBX (VMware / QEMU convention).
pub const TIMING_LEAF: u32 = 0x4000_0010;
const HYPERVISOR_BASE_LEAF: u32 = 0x4000_0000;
/// KVM's local APIC timer runs at 1 GHz.
const APIC_BUS_KHZ: u32 = 1_000_000;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// The vCPU's place in the machine.
#[derive(Debug, Clone, Copy)]
pub struct Topology {
    pub cpu_index: u8,
    pub cpu_count: u8,
    pub tsc_khz: u32,
}

fn bits_for(count: u8) -> u32 {
    (u32::from(count)).next_power_of_two().trailing_zeros()
}

/// Adjusts the supported entries for one vCPU.
pub fn filter_entries(entries: &mut Vec<kvm_cpuid_entry2>, topo: Topology) {
    let apic_id = u32::from(topo.cpu_index);
    let count = u32::from(topo.cpu_count);
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_00ff) | (apic_id << 24) | (count << 16) | (8 << 8);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            4 => {
                e.eax = (e.eax & 0x3ff) | (count.saturating_sub(1) << 26);
            }
            0xb | 0x1f => {
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 0x100;
                    }
                    1 => {
                        e.eax = bits_for(topo.cpu_count);
                        e.ebx = count;
                        e.ecx = 0x201;
                    }
                    n => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = n;
                    }
                }
                e.edx = apic_id;
            }
            HYPERVISOR_BASE_LEAF => e.eax = e.eax.max(TIMING_LEAF),
            _ => {}
        }
    }
    entries.retain(|e| e.function != TIMING_LEAF);
    if topo.tsc_khz != 0 {
        entries.push(kvm_cpuid_entry2 {
            function: TIMING_LEAF,
            eax: topo.tsc_khz,
            ebx: APIC_BUS_KHZ,
            ..Default::default()
        });
    }
}

/// The CPUID table for one vCPU, from KVM's supported set.
pub fn for_vcpu(supported: &CpuId, topo: Topology) -> Result<CpuId, String> {
    let mut entries = supported.as_slice().to_vec();
    filter_entries(&mut entries, topo);
    CpuId::from_entries(&entries).map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0xaa,
            ..Default::default()
        }
    }

    #[test]
    fn topology_hypervisor_bit_and_timing_leaf() {
        let mut entries = vec![
            leaf(1, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(HYPERVISOR_BASE_LEAF, 0),
        ];
        let topo = Topology {
            cpu_index: 3,
            cpu_count: 4,
            tsc_khz: 2_000_000,
        };
        filter_entries(&mut entries, topo);
        let l1 = entries.iter().find(|e| e.function == 1).unwrap();
        assert_eq!(l1.ebx >> 24, 3, "APIC ID");
        assert_eq!((l1.ebx >> 16) & 0xff, 4, "logical CPUs");
        assert_eq!(l1.ebx & 0xff, 0xaa, "brand index kept");
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        let b1 = entries
            .iter()
            .find(|e| e.function == 0xb && e.index == 1)
            .unwrap();
        assert_eq!((b1.eax, b1.ebx, b1.edx), (2, 4, 3));
        let base = entries
            .iter()
            .find(|e| e.function == HYPERVISOR_BASE_LEAF)
            .unwrap();
        assert!(base.eax >= TIMING_LEAF);
        let timing = entries.iter().find(|e| e.function == TIMING_LEAF).unwrap();
        assert_eq!((timing.eax, timing.ebx), (2_000_000, APIC_BUS_KHZ));
    }
}
