//! The snapshot's `disk`: a reflink (`FICLONE`) of the VM's disk image
//! where the file system supports it, else a sparse copy that keeps holes
//! (`SEEK_DATA`/`SEEK_HOLE` + `copy_file_range`, falling back to
//! read/write). [`grow_disk`] enlarges a clone's disk, never shrinks it.

use std::fs::{File, OpenOptions};
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
pub fn clone_disk(src: &Path, dst: &Path) -> io::Result<CloneKind> {
    let input = File::open(src)?;
    let output = OpenOptions::new().write(true).create_new(true).open(dst)?;
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
    let bytes_copied = copy_sparse_files(&input, &output)?;
    Ok(CloneKind::Sparse { bytes_copied })
}

/// Copies `src` to the new file `dst` (refuses to overwrite) without
/// reflinking, keeping holes; returns the data bytes copied. Used by
/// [`clone_disk`] as its fallback, and callable directly (tests force this
/// path with it).
pub fn sparse_copy(src: &Path, dst: &Path) -> io::Result<u64> {
    let input = File::open(src)?;
    let output = OpenOptions::new().write(true).create_new(true).open(dst)?;
    copy_sparse_files(&input, &output)
}

fn copy_sparse_files(input: &File, output: &File) -> io::Result<u64> {
    let len = input.metadata()?.len();
    output.set_len(len)?;
    let mut copied = 0;
    let mut use_cfr = true;
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
