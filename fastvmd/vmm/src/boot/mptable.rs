//! Intel MultiProcessor Specification 1.4 table: tells the guest how many
//! CPUs there are and how the IO-APIC is wired. Linux uses it when there is no
//! ACPI (as in every FastVM guest).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout;

/// Most vCPUs a FastVM guest can have.
pub const MAX_VCPUS: u8 = 32;
/// IO-APIC pins announced, one interrupt source entry each.
const IOAPIC_PINS: u8 = 24;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const SPEC_REV: u8 = 4;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
/// Family 6 signature and the FPU + APIC feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
const MP_IRQ_INT: u8 = 0;
const MP_IRQ_NMI: u8 = 1;
const MP_IRQ_EXTINT: u8 = 3;

/// Why the MP table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    /// More vCPUs than the table (and FastVM) supports.
    #[error("{0} vCPUs requested, at most {MAX_VCPUS} supported")]
    TooManyCpus(u8),
    /// The table does not fit in guest memory.
    #[error("cannot write to guest memory: {0}")]
    Write(String),
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The table bytes for `num_cpus` CPUs, to be placed at `base`: the floating
/// pointer followed by the configuration table.
pub fn build(num_cpus: u8, base: u64) -> Result<Vec<u8>, MpTableError> {
    if num_cpus == 0 || num_cpus > MAX_VCPUS {
        return Err(MpTableError::TooManyCpus(num_cpus));
    }
    let ioapic_id = num_cpus + 1;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..num_cpus {
        entries.extend_from_slice(&[0, cpu, APIC_VERSION]);
        entries.push(CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&layout::IO_APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    count += 1;
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[3, MP_IRQ_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    entries.extend_from_slice(&[4, MP_IRQ_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, MP_IRQ_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = 44 + entries.len();
    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.extend_from_slice(&[SPEC_REV, 0]);
    table.extend_from_slice(b"FASTVM  ");
    table.extend_from_slice(b"000000000000");
    table.extend_from_slice(&0u32.to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&layout::APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes());
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&((base + 16) as u32).to_le_bytes());
    out.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the table at the start of the EBDA.
pub fn setup(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), MpTableError> {
    let bytes = build(num_cpus, layout::EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(layout::EBDA_START))
        .map_err(|e| MpTableError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn checksums_and_one_processor_entry_per_cpu() {
        for cpus in [1u8, 2, 7, MAX_VCPUS] {
            let t = build(cpus, layout::EBDA_START).unwrap();
            assert_eq!(&t[..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
            let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
            let cfg = &t[(ptr - layout::EBDA_START) as usize..];
            assert_eq!(&cfg[..4], b"PCMP");
            let len = u16::from_le_bytes([cfg[4], cfg[5]]) as usize;
            assert_eq!(sum(&cfg[..len]), 0, "config table checksum");
            // Walk the entries: processors are 20 bytes, the rest 8.
            let (mut off, mut cpu_entries) = (44, 0);
            while off < len {
                if cfg[off] == 0 {
                    cpu_entries += 1;
                    off += 20;
                } else {
                    off += 8;
                }
            }
            assert_eq!(cpu_entries, cpus as usize);
            assert!(16 + len <= (layout::HIMEM_START - layout::EBDA_START) as usize);
        }
    }

    #[test]
    fn zero_or_too_many_cpus_are_refused() {
        assert!(build(0, 0).is_err());
        assert!(build(MAX_VCPUS + 1, 0).is_err());
    }
}
