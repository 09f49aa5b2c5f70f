//! The e820 memory map in Linux's `boot_params` (the "zero page") and the
//! sanity check the test guest prints at boot.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Offset of `e820_entries` (u8) in `boot_params`.
pub const ENTRIES_OFFSET: usize = 0x1e8;
/// Offset of `e820_table` in `boot_params`.
pub const TABLE_OFFSET: usize = 0x2d0;
/// Size of one table entry: `{u64 addr, u64 size, u32 type}`, packed.
pub const ENTRY_SIZE: usize = 20;
/// Capacity of the table in `boot_params`.
pub const MAX_ENTRIES: usize = 128;
/// Entry type of usable RAM.
pub const RAM: u32 = 1;

/// One e820 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// 1 = RAM, 2 = reserved, ...
    pub kind: u32,
}

/// What a passing check reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Number of entries in the table.
    pub entries: usize,
    /// Total usable RAM in bytes.
    pub ram_bytes: u64,
}

/// Reads the table out of a `boot_params` page (at least 4 KiB).
pub fn parse(zero_page: &[u8]) -> Result<Vec<Entry>, String> {
    let count = *zero_page
        .get(ENTRIES_OFFSET)
        .ok_or("boot_params too short")? as usize;
    if count > MAX_ENTRIES {
        return Err(format!("e820_entries={count} exceeds {MAX_ENTRIES}"));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = TABLE_OFFSET + i * ENTRY_SIZE;
        let raw = zero_page
            .get(at..at + ENTRY_SIZE)
            .ok_or("boot_params too short")?;
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[o..o + 8]);
            u64::from_le_bytes(b)
        };
        out.push(Entry {
            addr: u64_at(0),
            size: u64_at(8),
            kind: u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]),
        });
    }
    Ok(out)
}

/// End of the RAM entry that contains `addr`, read straight from a
/// `boot_params` page without allocating (used to size the heap).
pub fn ram_end_containing(zero_page: &[u8], addr: u64) -> Option<u64> {
    let count = (*zero_page.get(ENTRIES_OFFSET)? as usize).min(MAX_ENTRIES);
    (0..count).find_map(|i| {
        let at = TABLE_OFFSET + i * ENTRY_SIZE;
        let raw = zero_page.get(at..at + ENTRY_SIZE)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&raw[0..8]);
        let start = u64::from_le_bytes(b);
        b.copy_from_slice(&raw[8..16]);
        let end = start.checked_add(u64::from_le_bytes(b))?;
        let kind = u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]);
        (kind == RAM && start <= addr && addr < end).then_some(end)
    })
}

/// Checks the map is sane: at least one RAM entry, sorted, non-overlapping,
/// and RAM covering the loaded image `[image_start, image_end)`.
pub fn check(entries: &[Entry], image_start: u64, image_end: u64) -> Result<Summary, String> {
    if entries.is_empty() {
        return Err("no entries".into());
    }
    let mut prev_end = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let end = e
            .addr
            .checked_add(e.size)
            .ok_or_else(|| format!("entry {i} wraps around"))?;
        if i > 0 && e.addr < prev_end {
            return Err(format!(
                "entry {i} at {:#x} overlaps or is out of order",
                e.addr
            ));
        }
        prev_end = end;
    }
    let ram: Vec<&Entry> = entries.iter().filter(|e| e.kind == RAM).collect();
    if ram.is_empty() {
        return Err("no usable RAM entry".into());
    }
    let covered = ram
        .iter()
        .any(|e| e.addr <= image_start && image_end <= e.addr + e.size);
    if !covered {
        return Err(format!(
            "image {image_start:#x}..{image_end:#x} is not inside one RAM entry"
        ));
    }
    Ok(Summary {
        entries: entries.len(),
        ram_bytes: ram.iter().map(|e| e.size).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn page(entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[ENTRIES_OFFSET] = entries.len() as u8;
        for (i, (a, s, k)) in entries.iter().enumerate() {
            let at = TABLE_OFFSET + i * ENTRY_SIZE;
            p[at..at + 8].copy_from_slice(&a.to_le_bytes());
            p[at + 8..at + 16].copy_from_slice(&s.to_le_bytes());
            p[at + 16..at + 20].copy_from_slice(&k.to_le_bytes());
        }
        p
    }

    #[test]
    fn firecracker_like_map_passes() {
        let p = page(&[
            (0, 0x9fc00, 1),
            (0x9fc00, 0x400, 2),
            (0x100000, 127 << 20, 1),
        ]);
        let e = parse(&p).unwrap();
        assert_eq!(e.len(), 3);
        let s = check(&e, 0x100_0000, 0x120_0000).unwrap();
        assert_eq!(
            ram_end_containing(&p, 0x120_0000),
            Some(0x100000 + (127 << 20))
        );
        assert_eq!(ram_end_containing(&p, 0x9fd00), None);
        assert_eq!(s.entries, 3);
        assert_eq!(s.ram_bytes, 0x9fc00 + (127 << 20));
    }

    #[test]
    fn bad_maps_fail() {
        assert!(check(&[], 0, 1).is_err());
        let overlap = parse(&page(&[(0, 0x2000, 1), (0x1000, 0x1000, 1)])).unwrap();
        assert!(check(&overlap, 0, 1).is_err());
        let unsorted = parse(&page(&[(0x100000, 0x1000, 1), (0, 0x1000, 1)])).unwrap();
        assert!(check(&unsorted, 0, 1).is_err());
        let no_ram = parse(&page(&[(0, 0x1000, 2)])).unwrap();
        assert!(check(&no_ram, 0, 1).is_err());
        let small = parse(&page(&[(0x100000, 0x100000, 1)])).unwrap();
        assert!(check(&small, 0x100_0000, 0x100_1000).is_err());
        let mut p = page(&[]);
        p[ENTRIES_OFFSET] = 200;
        assert!(parse(&p).is_err());
    }
}
