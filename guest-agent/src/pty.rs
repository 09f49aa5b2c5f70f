//! Pseudo-terminals for streaming execs with a TTY: the master stays with
//! the agent (output read from it, input and `Resize` applied to it), the
//! slave becomes the command's stdin, stdout, stderr and controlling
//! terminal.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use fastvm_proto::agent::WindowSize;

/// The terminal's EOF character when its settings cannot be read (^D).
const DEFAULT_EOF: u8 = 4;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A new pseudo-terminal of `size`: (master, slave), both close-on-exec.
pub fn open(size: WindowSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: posix_openpt takes flags and returns a new fd or -1.
    let master = cvt(unsafe { libc::posix_openpt(flags) })?;
    // SAFETY: the fd was just opened and nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: grantpt and unlockpt act on the master fd we own.
    cvt(unsafe { libc::grantpt(master.as_raw_fd()) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::unlockpt(master.as_raw_fd()) })?;
    let slave = open_slave(&master, flags)?;
    resize(master.as_fd(), size)?;
    Ok((master, slave))
}

fn open_slave(master: &OwnedFd, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: TIOCGPTPEER on a master we own returns a new fd or -1.
    let peer = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if peer < 0 {
        // Kernels before 4.13: open the slave by name.
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: ptsname_r writes a NUL-terminated name of at most
        // `name.len()` bytes into `name`.
        let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: `name` holds the NUL-terminated path ptsname_r wrote.
        let path = unsafe { CStr::from_ptr(name.as_ptr()) };
        // SAFETY: open reads the path and returns a new fd or -1.
        let fd = cvt(unsafe { libc::open(path.as_ptr(), flags) })?;
        // SAFETY: the fd was just opened and nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(peer) })
}

/// Sets the terminal's size (the kernel sends SIGWINCH to its foreground
/// process group).
pub fn resize(master: BorrowedFd<'_>, size: WindowSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// The character that ends input on the terminal (its `VEOF`, ^D).
pub fn eof_char(master: BorrowedFd<'_>) -> u8 {
    // SAFETY: termios is plain data; all-zero is a valid value.
    let mut tio: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes one termios into `tio`.
    if unsafe { libc::tcgetattr(master.as_raw_fd(), &mut tio) } != 0 {
        return DEFAULT_EOF;
    }
    match tio.c_cc[libc::VEOF] {
        0 => DEFAULT_EOF,
        c => c,
    }
}

/// The terminal's foreground process group (where a key like ^C sends its
/// signal), if it has one.
pub fn foreground_group(master: BorrowedFd<'_>) -> Option<libc::pid_t> {
    // SAFETY: tcgetpgrp only queries the terminal behind the fd.
    let pgrp = unsafe { libc::tcgetpgrp(master.as_raw_fd()) };
    (pgrp > 0).then_some(pgrp)
}

/// In the child between fork and exec: a new session whose controlling
/// terminal is stdin (the slave). Only async-signal-safe calls.
pub fn become_session_leader() -> io::Result<()> {
    // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe and touch
    // no memory of the parent.
    unsafe {
        cvt(libc::setsid())?;
        cvt(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_terminal_has_its_size_and_eof_char() {
        let (master, slave) = open(WindowSize { cols: 81, rows: 25 }).unwrap();
        let mut ws: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
        let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_col, ws.ws_row), (81, 25));
        assert_eq!(eof_char(master.as_fd()), 4);
        assert_eq!(foreground_group(master.as_fd()), None);
    }
}
