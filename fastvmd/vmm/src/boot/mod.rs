//! The x86_64 Linux boot path: load the kernel (ELF vmlinux or bzImage) and
//! an optional initrd, write boot_params with the e820 map and command line,
//! the MP table, and give every vCPU its boot-time state.

pub mod cpuid;
pub mod mptable;
pub mod params;
pub mod regs;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::{BzImage, Elf, KernelLoader, KernelLoaderResult};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::layout;

/// Why the guest could not be set up for boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file could not be opened or read.
    #[error("cannot read kernel {path}: {source}")]
    KernelFile {
        path: String,
        source: std::io::Error,
    },
    /// The kernel is neither an ELF vmlinux nor a bzImage.
    #[error("kernel {0} is neither an ELF vmlinux nor a bzImage")]
    KernelFormat(String),
    /// The loader refused the image (bad segments, too big for guest memory, ...).
    #[error("cannot load kernel {path}: {source}")]
    KernelLoad {
        path: String,
        source: linux_loader::loader::Error,
    },
    /// The initrd could not be read or does not fit in guest memory.
    #[error("initrd {path}: {reason}")]
    Initrd { path: String, reason: String },
    /// The command line is too long or has invalid characters.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// Writing boot data into guest memory failed (guest memory too small).
    #[error("guest memory too small for boot data: {0}")]
    GuestMemory(String),
    /// The MP table does not fit or has too many vCPUs.
    #[error("MP table: {0}")]
    MpTable(#[from] mptable::MpTableError),
}

/// Where the boot vCPU starts.
#[derive(Debug, Clone, Copy)]
pub struct KernelEntry {
    /// 64-bit entry point.
    pub entry: GuestAddress,
}

/// The kind of kernel image, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    Elf,
    BzImage,
}

/// Looks at the magic numbers: `\x7fELF`, or "HdrS" at 0x202 for a bzImage.
pub fn kernel_kind(file: &mut File) -> std::io::Result<Option<KernelKind>> {
    let mut head = [0u8; 0x206];
    file.seek(SeekFrom::Start(0))?;
    let mut got = 0;
    while got < head.len() {
        let n = file.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    file.seek(SeekFrom::Start(0))?;
    if got >= 4 && head[..4] == *b"\x7fELF" {
        return Ok(Some(KernelKind::Elf));
    }
    if got >= 0x206 && head[0x202..0x206] == *b"HdrS" {
        return Ok(Some(KernelKind::BzImage));
    }
    Ok(None)
}

/// Loads the kernel into guest memory; returns its entry and the loader's
/// result (the bzImage setup header, if any).
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
) -> Result<(KernelEntry, KernelLoaderResult), BootError> {
    let shown = path.display().to_string();
    let io_err = |source| BootError::KernelFile {
        path: shown.clone(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let kind = kernel_kind(&mut file)
        .map_err(io_err)?
        .ok_or_else(|| BootError::KernelFormat(shown.clone()))?;
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let load_err = |source| BootError::KernelLoad {
        path: shown.clone(),
        source,
    };
    match kind {
        KernelKind::Elf => {
            let res = Elf::load(mem, None, &mut file, himem).map_err(load_err)?;
            Ok((
                KernelEntry {
                    entry: res.kernel_load,
                },
                res,
            ))
        }
        KernelKind::BzImage => {
            let res = BzImage::load(mem, None, &mut file, himem).map_err(load_err)?;
            // The 64-bit entry point sits 0x200 bytes into the protected-mode code.
            let entry = res.kernel_load.unchecked_add(0x200);
            Ok((KernelEntry { entry }, res))
        }
    }
}

/// Loads the initrd page-aligned as high in low RAM as it fits, above the
/// kernel; returns (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<(GuestAddress, usize), BootError> {
    let shown = path.display().to_string();
    let err = |reason: String| BootError::Initrd {
        path: shown.clone(),
        reason,
    };
    let mut file = File::open(path).map_err(|e| err(e.to_string()))?;
    let size = file.metadata().map_err(|e| err(e.to_string()))?.len() as usize;
    let low_end = mem.last_addr().raw_value().min(layout::MMIO_GAP_START - 1) + 1;
    let addr = low_end
        .checked_sub(size as u64)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end)
        .ok_or_else(|| err(format!("{size} bytes do not fit in guest memory")))?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size)
        .map_err(|e| err(e.to_string()))?;
    Ok((GuestAddress(addr), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal image in the bzImage layout: 4 setup sectors after the boot
    /// sector, then the protected-mode payload.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 5 * 512];
        image[0x1f1] = 4; // setup_sects
        image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x211] = 1; // loadflags: LOADED_HIGH
        image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        image.extend_from_slice(payload);
        image
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
    }

    #[test]
    fn bzimage_loads_at_1mib_and_enters_at_startup_64() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bzImage");
        let payload: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&fake_bzimage(&payload))
            .unwrap();
        let mem = memory();
        let (entry, res) = load_kernel(&mem, &path).unwrap();
        assert_eq!(entry.entry, GuestAddress(0x10_0200));
        let hdr = res.setup_header.expect("setup header");
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        let mut loaded = vec![0u8; payload.len()];
        mem.read_slice(&mut loaded, GuestAddress(0x10_0000))
            .unwrap();
        assert_eq!(loaded, payload);
    }

    #[test]
    fn unknown_format_and_missing_file_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notes");
        std::fs::write(&path, b"hello").unwrap();
        let err = load_kernel(&memory(), &path).unwrap_err().to_string();
        assert!(
            err.contains("neither an ELF vmlinux nor a bzImage"),
            "{err}"
        );
        let err = load_kernel(&memory(), &tmp.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read kernel"), "{err}");
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("initrd");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let mem = memory();
        let (addr, size) = load_initrd(&mem, &path, 0x20_0000).unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr.0 % 4096, 0);
        assert!(addr.0 + size as u64 <= 64 << 20 && addr.0 > (60 << 20));
        let err = load_initrd(&mem, &path, 64 << 20).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
    }
}
