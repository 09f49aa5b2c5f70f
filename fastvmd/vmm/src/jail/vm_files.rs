//! Reading and opening files in a VM directory from outside the jail. The
//! jailed monitor owns its directory, so a file there may have been
//! replaced by a symlink to a host file, a FIFO that would block an open,
//! or something huge: every open here refuses links, never blocks, accepts
//! regular files only, and every read is bounded.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens `path` with `options`, refusing a symlink (ELOOP) and anything but
/// a regular file.
pub fn open_regular(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// At most `max` bytes from the start of `path`; more is an error.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path, OpenOptions::new().read(true))?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: larger than {max} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// The last `max` bytes of `path` (all of it when smaller).
pub fn read_tail(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut file = open_regular(path, OpenOptions::new().read(true))?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_big_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "host").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert_eq!(
            read_capped(&link, 100).unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
        let fifo = tmp.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo of a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_capped(&fifo, 100).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let big = tmp.path().join("big");
        std::fs::write(&big, vec![b'x'; 1000]).unwrap();
        assert!(read_capped(&big, 999).is_err());
        assert_eq!(read_capped(&big, 1000).unwrap().len(), 1000);
        std::fs::write(&big, b"0123456789").unwrap();
        assert_eq!(read_tail(&big, 4).unwrap(), b"6789");
    }
}
