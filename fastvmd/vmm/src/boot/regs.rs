//! Boot-time vCPU state: identity page tables, GDT, segment and control
//! registers for 64-bit entry, general registers, FPU, MSRs and LAPIC.

use kvm_bindings::{Msrs, kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout;

/// Why a vCPU could not be given its boot state.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Writing page tables or the GDT into guest memory failed.
    #[error("cannot write boot tables to guest memory: {0}")]
    Memory(String),
    /// A KVM vCPU ioctl failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    /// KVM accepted fewer MSRs than given.
    #[error("KVM accepted {set} of {wanted} boot MSRs")]
    Msrs { set: usize, wanted: usize },
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, source }
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// GDT entries: null, 64-bit code, data, TSS.
const GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | (((limit as u64 & 0x000f_0000) >> 16) << 48)
        | ((flags as u64 & 0x0000_f0ff) << 40)
}

fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
    let limit = (entry & 0xffff) | (((entry >> 48) & 0xf) << 16);
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 {
            ((limit as u32) << 12) | 0xfff
        } else {
            limit as u32
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if (entry >> 47) & 1 == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// Page-table entry flags: present, writable, user.
const PTE_TABLE: u64 = 0x07;
/// 2 MiB page: present, writable, user, page size.
const PTE_2M_PAGE: u64 = 0x87;

/// Writes the GDT and identity page tables (first 1 GiB, 2 MiB pages).
///
/// The entries carry the user bit: Linux replaces these tables within its
/// first instructions and never runs user code on them, while a payload that
/// drops to CPL 3 (the test guest) can keep them instead of rebuilding a
/// map with hundreds of instructions that PVM hosts must emulate.
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let err = |e: vm_memory::GuestMemoryError| RegsError::Memory(e.to_string());
    for (i, entry) in GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::BOOT_GDT_START + 8 * i as u64))
            .map_err(err)?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT_START))
        .map_err(err)?;
    mem.write_obj(
        layout::PDPTE_START | PTE_TABLE,
        GuestAddress(layout::PML4_START),
    )
    .map_err(err)?;
    mem.write_obj(
        layout::PDE_START | PTE_TABLE,
        GuestAddress(layout::PDPTE_START),
    )
    .map_err(err)?;
    let mut pd = [0u8; 4096];
    for (i, chunk) in pd.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&(((i as u64) << 21) | PTE_2M_PAGE).to_le_bytes());
    }
    mem.write_slice(&pd, GuestAddress(layout::PDE_START))
        .map_err(err)
}

/// Segment and control registers for 64-bit entry.
pub fn setup_sregs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm("get sregs"))?;
    let code = segment_from_gdt(GDT[1], 1);
    let data = segment_from_gdt(GDT[2], 2);
    let tss = segment_from_gdt(GDT[3], 3);
    sregs.gdt.base = layout::BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT) - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs.cr3 = layout::PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    vcpu.set_sregs(&sregs).map_err(kvm("set sregs"))
}

/// General registers: entry point, boot stack, RSI = boot_params.
pub fn setup_regs(vcpu: &VcpuFd, entry: u64) -> Result<(), RegsError> {
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: layout::BOOT_STACK_POINTER,
        rbp: layout::BOOT_STACK_POINTER,
        rsi: layout::ZERO_PAGE_START,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("set regs"))
}

/// x87 control word and MXCSR at their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("set fpu"))
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;

/// The boot MSRs Linux expects (as Firecracker sets them).
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let list = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ];
    let entries: Vec<kvm_msr_entry> = list
        .iter()
        .map(|(index, data)| kvm_msr_entry {
            index: *index,
            data: *data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| RegsError::Msrs {
        set: 0,
        wanted: entries.len(),
    })?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm("set msrs"))?;
    if set != entries.len() {
        return Err(RegsError::Msrs {
            set,
            wanted: entries.len(),
        });
    }
    Ok(())
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &state.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        state.regs[offset + i] = *byte as _;
    }
}

fn delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// LINT0 as ExtINT and LINT1 as NMI, as the MP table says.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut state = vcpu.get_lapic().map_err(kvm("get lapic"))?;
    let lvt0 = lapic_reg(&state, APIC_LVT0);
    set_lapic_reg(&mut state, APIC_LVT0, delivery_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(&state, APIC_LVT1);
    set_lapic_reg(&mut state, APIC_LVT1, delivery_mode(lvt1, APIC_MODE_NMI));
    vcpu.set_lapic(&state).map_err(kvm("set lapic"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_segments_decode_like_firecracker() {
        let code = segment_from_gdt(GDT[1], 1);
        assert_eq!((code.selector, code.l, code.db, code.present), (8, 1, 0, 1));
        assert_eq!(code.limit, 0xffff_ffff);
        let data = segment_from_gdt(GDT[2], 2);
        assert_eq!((data.selector, data.type_, data.db), (16, 3, 1));
        assert_eq!(segment_from_gdt(GDT[0], 0).unusable, 1);
    }

    #[test]
    fn page_tables_identity_map_first_gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        write_boot_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(layout::PML4_START)).unwrap();
        assert_eq!(pml4, layout::PDPTE_START | PTE_TABLE);
        let pde511: u64 = mem
            .read_obj(GuestAddress(layout::PDE_START + 511 * 8))
            .unwrap();
        assert_eq!(pde511, (511 << 21) | PTE_2M_PAGE);
        assert_ne!(pde511 & 4, 0, "user bit set");
    }

    #[test]
    fn lvt_delivery_mode_bits() {
        assert_eq!(delivery_mode(0x0001_0000, APIC_MODE_EXTINT), 0x0001_0700);
        assert_eq!(delivery_mode(0x0000_0700, APIC_MODE_NMI), 0x0000_0400);
    }
}
