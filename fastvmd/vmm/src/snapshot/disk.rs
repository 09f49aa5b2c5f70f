//! The snapshot's `disk`: a reflink (`FICLONE`) of the VM's disk image
//! where the file system supports it, else a sparse copy that keeps holes
//! (`SEEK_DATA`/`SEEK_HOLE` + `copy_file_range`, falling back to
//! read/write). [`grow_disk`] enlarges a clone's disk, never shrinks it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::SnapshotError;

/// How [`clone_disk`] made the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneKind {
    /// A reflink: the copy shares blocks with the source (instant).
    Reflink,
    /// A sparse copy; `bytes_copied` bytes of data were copied, holes kept.
    Sparse {
        /// Bytes of data copied.
        bytes_copied: u64,
    },
}

/// `FICLONE` = `_IOW(0x94, 9, int)` from `<linux/fs.h>`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Copies the disk image `src` to the new file `dst` (refuses to
/// overwrite): a reflink if the file system can, else [`sparse_copy`].
/// On failure `dst` is removed.
pub fn clone_disk(src: &Path, dst: &Path) -> io::Result<CloneKind> {
    let input = File::open(src)?;
    let output = OpenOptions::new().write(true).create_new(true).open(dst)?;
    clone_files(&input, &output).inspect_err(|_| {
        let _ = fs::remove_file(dst);
    })
}

/// [`clone_disk`] from a disk already open.
pub fn clone_disk_from(input: &File, dst: &Path) -> io::Result<CloneKind> {
    let output = OpenOptions::new().write(true).create_new(true).open(dst)?;
    clone_files(input, &output).inspect_err(|_| {
        let _ = fs::remove_file(dst);
    })
}

fn clone_files(input: &File, output: &File) -> io::Result<CloneKind> {
    // SAFETY: FICLONE takes the source descriptor as its argument; both
    // descriptors are open for the duration of the call.
    let rc = unsafe { libc::ioctl(output.as_raw_fd(), FICLONE as _, input.as_raw_fd()) };
    if rc == 0 {
        return Ok(CloneKind::Reflink);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(
            libc::EOPNOTSUPP
            | libc::ENOTTY
            | libc::EXDEV
            | libc::EINVAL
            | libc::ENOSYS
            | libc::EPERM,
        ) => {}
        _ => return Err(err),
    }
    let bytes_copied = copy_sparse_files(input, output, true)?;
    Ok(CloneKind::Sparse { bytes_copied })
}

/// Copies `src` to the new file `dst` (refuses to overwrite) without
/// reflinking, keeping holes; returns the data bytes copied. Used by
/// [`clone_disk`] as its fallback, and callable directly (tests force this
/// path with it). On failure `dst` is removed.
pub fn sparse_copy(src: &Path, dst: &Path) -> io::Result<u64> {
    let input = File::open(src)?;
    let output = OpenOptions::new().write(true).create_new(true).open(dst)?;
    copy_sparse_files(&input, &output, true).inspect_err(|_| {
        let _ = fs::remove_file(dst);
    })
}

/// The sparse copy; `use_cfr` false forces the pread/pwrite fallback.
fn copy_sparse_files(input: &File, output: &File, mut use_cfr: bool) -> io::Result<u64> {
    let len = input.metadata()?.len();
    output.set_len(len)?;
    let mut copied = 0;
    for (start, end) in data_ranges(input, 0, len)? {
        let mut off = start;
        while off < end {
            let n = if use_cfr {
                match copy_range(input, output, off, end - off) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
                        ) =>
                    {
                        use_cfr = false;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                copy_rw(input, output, off, end - off)?
            };
            off += n;
            copied += n;
        }
    }
    Ok(copied)
}

fn copy_range(input: &File, output: &File, off: u64, len: u64) -> io::Result<u64> {
    let mut off_in = off as libc::loff_t;
    let mut off_out = off as libc::loff_t;
    let len = len.min(1 << 30) as usize;
    // SAFETY: both descriptors are open; the offsets are valid pointers to
    // locals the kernel updates.
    let n = unsafe {
        libc::copy_file_range(
            input.as_raw_fd(),
            &mut off_in,
            output.as_raw_fd(),
            &mut off_out,
            len,
            0,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as u64)
    }
}

/// Copies up to `len` bytes at `off` with pread/pwrite; all-zero blocks
/// are skipped (left as holes in the sized output).
fn copy_rw(input: &File, output: &File, off: u64, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    let n = input.read_at(&mut buf, off)?;
    if n == 0 {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    if !super::memory::is_zero(&buf[..n]) {
        output.write_all_at(&buf[..n], off)?;
    }
    Ok(n as u64)
}

/// The data ranges of `file` within `[start, start + len)`, as offsets
/// relative to `start`, from `SEEK_DATA`/`SEEK_HOLE`. If the file system
/// cannot tell, the whole range is data.
pub(crate) fn data_ranges(file: &File, start: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let end = start + len;
    let fd = file.as_raw_fd();
    let seek = |off: u64, whence| {
        // SAFETY: lseek on an open descriptor; it only moves the offset.
        let r = unsafe { libc::lseek(fd, off as libc::off_t, whence) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u64)
        }
    };
    let mut out = Vec::new();
    let mut off = start;
    while off < end {
        let data = match seek(off, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && out.is_empty() => {
                return Ok(vec![(0, len)]);
            }
            Err(e) => return Err(e),
        };
        if data >= end {
            break;
        }
        let hole = seek(data, libc::SEEK_HOLE)?.min(end);
        out.push((data - start, hole - start));
        off = hole;
    }
    Ok(out)
}

/// Grows the disk image at `path` to `gib` GiB (new space is a hole).
/// The same size is a no-op; a smaller size is refused with
/// [`SnapshotError::DiskShrink`], never truncating data.
pub fn grow_disk(path: &Path, gib: u64) -> Result<(), SnapshotError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| SnapshotError::io("open", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| SnapshotError::io("stat", path, e))?
        .len();
    let requested = gib.saturating_mul(1 << 30);
    if requested < size {
        return Err(SnapshotError::DiskShrink {
            path: path.to_owned(),
            size,
            requested,
        });
    }
    if requested > size {
        file.set_len(requested)
            .map_err(|e| SnapshotError::io("grow", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    /// A 64 MiB file with 4 KiB at 0, 1 MiB at 10 MiB and 4 KiB at the end.
    fn sparse_source(dir: &Path) -> (std::path::PathBuf, Vec<(u64, Vec<u8>)>) {
        let path = dir.join("src");
        let f = File::create(&path).unwrap();
        f.set_len(64 * MIB).unwrap();
        let pieces = vec![
            (0, vec![0xa5u8; 4096]),
            (10 * MIB, (0..MIB).map(|i| (i % 251) as u8 + 1).collect()),
            (64 * MIB - 4096, vec![0x5au8; 4096]),
        ];
        for (off, data) in &pieces {
            f.write_all_at(data, *off).unwrap();
        }
        f.sync_all().unwrap();
        (path, pieces)
    }

    fn check_copy(src: &Path, dst: &Path) {
        assert_eq!(fs::read(src).unwrap(), fs::read(dst).unwrap());
        let (s, d) = (fs::metadata(src).unwrap(), fs::metadata(dst).unwrap());
        assert_eq!(d.len(), 64 * MIB);
        // Holes kept: about as many blocks as the source (1 MiB + 8 KiB).
        assert!(
            d.blocks() * 512 <= s.blocks() * 512 + 256 * 1024,
            "{} blocks",
            d.blocks()
        );
        assert!(d.blocks() * 512 < 4 * MIB, "{} blocks", d.blocks());
    }

    #[test]
    fn data_ranges_finds_the_pieces() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, pieces) = sparse_source(tmp.path());
        let f = File::open(&src).unwrap();
        let ranges = data_ranges(&f, 0, 64 * MIB).unwrap();
        let data: u64 = ranges.iter().map(|(s, e)| e - s).sum();
        assert!((MIB + 8192..4 * MIB).contains(&data), "{ranges:?}");
        for (off, d) in &pieces {
            let end = off + d.len() as u64;
            assert!(
                ranges.iter().any(|&(s, e)| s <= *off && end <= e),
                "{ranges:?}"
            );
        }
        // Relative to a window start, clipped to it.
        let w = data_ranges(&f, 10 * MIB, MIB / 2).unwrap();
        assert_eq!(w, vec![(0, MIB / 2)]);
    }

    #[test]
    fn sparse_copy_keeps_holes_and_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, _) = sparse_source(tmp.path());
        let dst = tmp.path().join("dst");
        let copied = sparse_copy(&src, &dst).unwrap();
        assert!((MIB + 8192..4 * MIB).contains(&copied), "{copied}");
        check_copy(&src, &dst);
        // Never overwrites (and a refused copy leaves the target alone).
        assert!(sparse_copy(&src, &dst).is_err());
        assert!(clone_disk(&src, &dst).is_err());
        check_copy(&src, &dst);
        // A missing source creates nothing.
        let none = tmp.path().join("none");
        assert!(clone_disk(&none, &tmp.path().join("dst2")).is_err());
        assert!(!tmp.path().join("dst2").exists());
    }

    #[test]
    fn read_write_fallback_keeps_holes_and_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, _) = sparse_source(tmp.path());
        let dst = tmp.path().join("dst");
        let input = File::open(&src).unwrap();
        let output = File::create(&dst).unwrap();
        copy_sparse_files(&input, &output, false).unwrap();
        check_copy(&src, &dst);
    }

    #[test]
    fn clone_disk_either_way() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, _) = sparse_source(tmp.path());
        let dst = tmp.path().join("dst");
        let kind = clone_disk(&src, &dst).unwrap();
        println!("clone_disk on this file system: {kind:?}");
        check_copy(&src, &dst);
    }

    #[test]
    fn grow_and_refuse_to_shrink() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk");
        let f = File::create(&path).unwrap();
        f.set_len(MIB).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        grow_disk(&path, 2).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 2 << 30);
        grow_disk(&path, 2).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 2 << 30);
        let err = grow_disk(&path, 1).unwrap_err();
        assert!(
            matches!(err, SnapshotError::DiskShrink { size, requested, .. }
                if size == 2 << 30 && requested == 1 << 30),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("2147483648") && msg.contains("1073741824"),
            "{msg}"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), 2 << 30);
        assert_eq!(&fs::read(&path).unwrap()[..4], b"data");
        assert!(matches!(
            grow_disk(&tmp.path().join("none"), 1),
            Err(SnapshotError::Io { .. })
        ));
    }
}
