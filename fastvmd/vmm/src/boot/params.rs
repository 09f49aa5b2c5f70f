//! boot_params ("zero page"): e820 map, command line pointer, initrd.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::BootError;
use crate::layout;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;

/// The e820 map for a guest with `mem_size` bytes of RAM: low RAM up to the
/// EBDA, the MP table area reserved, and RAM from 1 MiB on (split by the MMIO gap).
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, layout::EBDA_START, E820_RAM),
        (
            layout::EBDA_START,
            layout::HIMEM_START - layout::EBDA_START,
            E820_RESERVED,
        ),
    ];
    for (start, len) in layout::ram_ranges(mem_size) {
        let start = start.max(layout::HIMEM_START);
        let end = if start == layout::HIMEM_START {
            len
        } else {
            start + len
        };
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

/// Everything boot_params needs besides the memory map.
#[derive(Debug, Clone, Copy)]
pub struct BootParamsInput {
    pub mem_size: u64,
    pub cmdline_len: usize,
    pub initrd: Option<(GuestAddress, usize)>,
    pub setup_header: Option<setup_header>,
}

/// Builds boot_params and writes it to the zero page.
pub fn write_boot_params(mem: &GuestMemoryMmap, input: &BootParamsInput) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(hdr) = input.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = input.cmdline_len as u32;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    if let Some((addr, size)) = input.initrd {
        params.hdr.ramdisk_image = addr.0 as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = e820_map(input.mem_size);
    if map.len() > params.e820_table.len() {
        return Err(BootError::GuestMemory("too many e820 entries".into()));
    }
    for (i, (addr, size, type_)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *type_,
        };
    }
    params.e820_entries = map.len() as u8;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(layout::ZERO_PAGE_START)),
        mem,
    )
    .map_err(|e| BootError::GuestMemory(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn e820_covers_ram_and_skips_gap() {
        let map = e820_map(128 << 20);
        assert_eq!(map[0], (0, layout::EBDA_START, E820_RAM));
        assert_eq!(
            map[2],
            (
                layout::HIMEM_START,
                (128 << 20) - layout::HIMEM_START,
                E820_RAM
            )
        );
        let big = e820_map(6 << 30);
        assert_eq!(big[3], (4 << 30, 3 << 30, E820_RAM));
        for pair in big.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "sorted, no overlap");
        }
    }

    #[test]
    fn zero_page_has_magic_cmdline_and_e820() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let input = BootParamsInput {
            mem_size: 64 << 20,
            cmdline_len: 42,
            initrd: Some((GuestAddress(0x200_0000), 0x1000)),
            setup_header: None,
        };
        write_boot_params(&mem, &input).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ p.hdr.cmd_line_ptr }, layout::CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x200_0000);
        assert_eq!(p.e820_entries, 3);
    }
}
