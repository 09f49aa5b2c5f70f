//! Intel MultiProcessor Specification 1.4 tables: find the floating pointer
//! ("_MP_"), validate both checksums and count the processor entries.

use alloc::format;
use alloc::string::String;

/// Signature of the MP floating pointer structure.
pub const FLOATING_SIGNATURE: &[u8; 4] = b"_MP_";
/// Signature of the MP configuration table.
pub const CONFIG_SIGNATURE: &[u8; 4] = b"PCMP";
/// Length of the configuration table header.
pub const CONFIG_HEADER_LEN: usize = 44;

/// Wrapping byte sum; a valid MP structure sums to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// Offset within `region` of the first 16-byte aligned "_MP_" signature.
pub fn find_floating(region: &[u8]) -> Option<usize> {
    (0..region.len().saturating_sub(15))
        .step_by(16)
        .find(|&i| &region[i..i + 4] == FLOATING_SIGNATURE)
}

/// Validates a floating pointer (its 16 bytes at least) and returns the
/// physical address of the configuration table.
pub fn check_floating(fp: &[u8]) -> Result<u32, String> {
    if fp.len() < 16 || &fp[..4] != FLOATING_SIGNATURE {
        return Err("no _MP_ floating pointer".into());
    }
    let len = fp[8] as usize * 16;
    if len < 16 || len > fp.len() {
        return Err(format!("floating pointer length {len} is invalid"));
    }
    if checksum(&fp[..len]) != 0 {
        return Err("floating pointer checksum mismatch".into());
    }
    let addr = u32::from_le_bytes([fp[4], fp[5], fp[6], fp[7]]);
    if addr == 0 {
        return Err("no configuration table (default configuration)".into());
    }
    Ok(addr)
}

/// Base table length announced by a configuration table header.
pub fn config_len(header: &[u8]) -> Option<usize> {
    if header.len() < 6 || &header[..4] != CONFIG_SIGNATURE {
        return None;
    }
    Some(u16::from_le_bytes([header[4], header[5]]) as usize)
}

/// Validates a whole configuration table (base part) and returns how many
/// processor entries it lists.
pub fn check_config(table: &[u8]) -> Result<usize, String> {
    let len = config_len(table).ok_or("no PCMP configuration table")?;
    if len < CONFIG_HEADER_LEN || len > table.len() {
        return Err(format!("configuration table length {len} is invalid"));
    }
    let table = &table[..len];
    if checksum(table) != 0 {
        return Err("configuration table checksum mismatch".into());
    }
    let count = u16::from_le_bytes([table[34], table[35]]) as usize;
    let mut at = CONFIG_HEADER_LEN;
    let mut cpus = 0;
    for i in 0..count {
        let kind = *table
            .get(at)
            .ok_or_else(|| format!("entry {i} runs past the table"))?;
        let size = match kind {
            0 => 20,
            1..=4 => 8,
            other => return Err(format!("entry {i} has unknown type {other}")),
        };
        if at + size > len {
            return Err(format!("entry {i} runs past the table"));
        }
        if kind == 0 {
            cpus += 1;
        }
        at += size;
    }
    if cpus == 0 {
        return Err("no processor entries".into());
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn fix(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        bytes[at] = 0u8.wrapping_sub(checksum(bytes));
    }

    fn table(cpus: usize) -> Vec<u8> {
        let mut t = std::vec![0u8; CONFIG_HEADER_LEN];
        t[..4].copy_from_slice(CONFIG_SIGNATURE);
        t[6] = 4;
        for i in 0..cpus {
            let mut e = [0u8; 20];
            e[1] = i as u8;
            e[3] = 1 | if i == 0 { 2 } else { 0 };
            t.extend_from_slice(&e);
        }
        t.extend_from_slice(&[1, 0, b'I', b'S', b'A', 0, 0, 0]);
        t.extend_from_slice(&[2, 2, 0x11, 1, 0, 0, 0xc0, 0xfe]);
        let len = t.len() as u16;
        t[4..6].copy_from_slice(&len.to_le_bytes());
        t[34..36].copy_from_slice(&(cpus as u16 + 2).to_le_bytes());
        fix(&mut t, 7);
        t
    }

    #[test]
    fn finds_and_validates_a_firecracker_like_table() {
        let mut region = std::vec![0u8; 1024];
        let fp_at = 32;
        region[fp_at..fp_at + 4].copy_from_slice(FLOATING_SIGNATURE);
        region[fp_at + 4..fp_at + 8].copy_from_slice(&0x9fc10u32.to_le_bytes());
        region[fp_at + 8] = 1;
        region[fp_at + 9] = 4;
        fix(&mut region[fp_at..fp_at + 16], 10);
        assert_eq!(find_floating(&region), Some(fp_at));
        assert_eq!(check_floating(&region[fp_at..]), Ok(0x9fc10));
        assert_eq!(check_config(&table(2)), Ok(2));
        assert_eq!(check_config(&table(8)), Ok(8));
    }

    #[test]
    fn corruption_is_detected() {
        let mut t = table(2);
        t[50] ^= 1;
        assert!(check_config(&t).is_err());
        let mut fp = [0u8; 16];
        fp[..4].copy_from_slice(FLOATING_SIGNATURE);
        fp[4] = 1;
        fp[8] = 1;
        fp[10] = 5;
        assert!(check_floating(&fp).is_err());
        assert_eq!(find_floating(&[0u8; 64]), None);
        assert!(check_config(&table(0)).is_err());
    }
}
