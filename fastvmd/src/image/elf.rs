//! Just enough ELF reading to tell a static executable from a dynamic one:
//! a program interpreter (`PT_INTERP`) or `DT_NEEDED` entries in the
//! dynamic section mean it needs a loader and shared libraries.

/// How an executable is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linkage {
    /// The program interpreter, e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// Number of shared libraries it needs.
    pub needed: usize,
}

impl Linkage {
    /// Whether it runs with no loader and no shared library.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed == 0
    }
}

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Reads the linkage of a 64-bit little-endian ELF file.
pub fn linkage(bytes: &[u8]) -> Result<Linkage, String> {
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".into());
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let bad = || "truncated ELF header or program headers".to_string();
    let phoff = u64_at(bytes, 0x20).ok_or_else(bad)? as usize;
    let phentsize = u16_at(bytes, 0x36).ok_or_else(bad)? as usize;
    let phnum = u16_at(bytes, 0x38).ok_or_else(bad)? as usize;
    let mut out = Linkage {
        interpreter: None,
        needed: 0,
    };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32_at(bytes, ph).ok_or_else(bad)?;
        let offset = u64_at(bytes, ph + 8).ok_or_else(bad)? as usize;
        let filesz = u64_at(bytes, ph + 32).ok_or_else(bad)? as usize;
        let segment = bytes
            .get(offset..offset.saturating_add(filesz))
            .ok_or_else(|| "segment outside the file".to_string())?;
        match p_type {
            PT_INTERP => {
                let name = segment.split(|&b| b == 0).next().unwrap_or_default();
                out.interpreter = Some(String::from_utf8_lossy(name).into_owned());
            }
            PT_DYNAMIC => {
                for entry in segment.chunks_exact(16) {
                    let tag = u64_at(entry, 0).ok_or_else(bad)?;
                    if tag == DT_NULL {
                        break;
                    }
                    if tag == DT_NEEDED {
                        out.needed += 1;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_shell_is_dynamic() {
        // Debian's /bin/sh (dash) links glibc dynamically.
        let sh = std::fs::read("/bin/sh").unwrap();
        let l = linkage(&sh).unwrap();
        assert!(l.interpreter.is_some(), "{l:?}");
        assert!(l.needed > 0);
        assert!(!l.is_static());
    }

    #[test]
    fn the_test_binary_itself_is_static_pie() {
        // .cargo/config.toml links every binary static (crt-static).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let l = linkage(&me).unwrap();
        assert!(l.is_static(), "{l:?}");
    }

    #[test]
    fn the_static_test_guest_is_static() {
        let guest = std::fs::read(crate::TEST_GUEST_PATH).unwrap();
        assert!(linkage(&guest).unwrap().is_static());
    }

    #[test]
    fn the_test_guest_loads_at_its_entry_point() {
        use crate::vmm::boot::load_kernel;
        use crate::vmm::layout;
        use vm_memory::{GuestAddress, GuestMemoryMmap};
        let path = std::path::Path::new(crate::TEST_GUEST_PATH);
        let guest = std::fs::read(path).unwrap();
        let e_entry = u64::from_le_bytes(guest[24..32].try_into().unwrap());
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let (entry, res) = load_kernel(&memory, path).unwrap();
        assert_eq!(entry.entry, GuestAddress(e_entry));
        assert!(res.kernel_end > layout::HIMEM_START);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(linkage(b"nope").is_err());
        assert!(linkage(b"\x7fELF\x02\x01").is_err());
        let mut header = vec![0u8; 64];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        header[0x20] = 64; // program headers right after the header...
        header[0x36] = 56;
        header[0x38] = 1; // ...but none is there
        assert!(linkage(&header).is_err());
    }
}
