//! The guest physical memory map and fixed addresses of the x86_64 machine.
//!
//! Same layout as Firecracker's, so a Linux guest sees a familiar machine:
//! boot data in low memory, RAM from 0, a 1 GiB MMIO gap below 4 GiB, RAM
//! continuing above 4 GiB for larger guests.

/// GDT the vCPUs start with.
pub const BOOT_GDT_START: u64 = 0x500;
/// IDT the vCPUs start with (empty).
pub const BOOT_IDT_START: u64 = 0x520;
/// Linux `boot_params` ("zero page"); RSI points here at entry.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, PDPT, PD (first 1 GiB, 2 MiB pages).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line the zero page may announce.
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Start of the EBDA, where the MP table goes; usable low RAM ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// Kernels must be loaded at or above 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap (1 GiB below 4 GiB).
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio window; each device takes 4 KiB after it.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// GSI of the first virtio device; each device takes the next one.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// TSS area KVM needs on Intel hosts.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Local APIC and IO-APIC addresses announced in the MP table.
pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
pub const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
/// COM1: the console.
pub const SERIAL_PORT: u16 = 0x3f8;
pub const SERIAL_IRQ: u32 = 4;
/// i8042 command port: writing 0xfe resets (reboots) the machine.
pub const I8042_PORT: u16 = 0x60;
/// Power-off port: a 16-bit write of [`POWER_OFF_VALUE`] powers off, the
/// value QEMU's ACPI PM1a control block uses for S5.
pub const POWER_PORT: u16 = 0x604;
pub const POWER_OFF_VALUE: u16 = 0x2000;

/// Guest RAM ranges (start, length) for `size` bytes of memory, skipping the
/// MMIO gap.
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_GAP_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, size - MMIO_GAP_START)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_mmio_gap() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
        assert_eq!(ram_ranges(4 << 30), vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
    }
}
