//! A Linux tap device opened through `/dev/net/tun`: Ethernet frames, each
//! preceded by a 12-byte virtio-net header (`IFF_VNET_HDR`, the layout of
//! virtio 1.x), no offloads. Opening a name that does not exist creates the
//! tap (CAP_NET_ADMIN needed); it goes away when the last descriptor closes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Size of the virtio-net header in front of each frame.
pub const VNET_HDR_LEN: usize = 12;
/// `IFNAMSIZ`: interface names are at most 15 bytes plus NUL.
const IFNAMSIZ: usize = 16;

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// `_IOR('T', 210, unsigned int)`.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;

/// `struct ifreq` with the name and the flags member of its union.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// An open tap.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// Why a tap could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, too long or has a NUL or '/'.
    #[error("tap name {0:?}: 1 to 15 bytes, no NUL or '/'")]
    BadName(String),
    /// `/dev/net/tun` cannot be opened.
    #[error("/dev/net/tun: {0}")]
    Open(io::Error),
    /// A descriptor handed over is not a tap set up as [`Tap::open`] does.
    #[error("descriptor {fd}: {why}")]
    NotATap { fd: RawFd, why: String },
    /// An ioctl was refused (EPERM: no CAP_NET_ADMIN; EBUSY: in use).
    #[error("tap {name}: {what}: {source}")]
    Ioctl {
        name: String,
        what: &'static str,
        source: io::Error,
    },
}

impl Tap {
    /// Opens (creating if needed) tap `name`, non-blocking.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['\0', '/']) {
            return Err(TapError::BadName(name.into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let err = |what| {
            let source = io::Error::last_os_error();
            TapError::Ioctl {
                name: name.into(),
                what,
                source,
            }
        };
        let fd = file.as_raw_fd();
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is
        // (40 bytes, name then flags); the fd is the open tun device.
        if unsafe { libc::ioctl(fd, TUNSETIFF, &mut req as *mut IfReq) } < 0 {
            return Err(err("TUNSETIFF"));
        }
        configure_queue(&file, name)?;
        Ok(Tap {
            file,
            name: name.into(),
        })
    }

    /// Takes over a tap opened by someone else (the daemon hands each
    /// monitor its tap, so the monitor needs no CAP_NET_ADMIN), after
    /// checking it is one: a tap, no packet information, vnet headers.
    pub fn from_fd(fd: OwnedFd) -> Result<Tap, TapError> {
        let raw = fd.as_raw_fd();
        let not = |why: String| TapError::NotATap { fd: raw, why };
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: TUNGETIFF writes a `struct ifreq`, which `req` is.
        if unsafe { libc::ioctl(raw, TUNGETIFF, &mut req as *mut IfReq) } < 0 {
            return Err(not(format!(
                "not an attached tun/tap: {}",
                io::Error::last_os_error()
            )));
        }
        let wanted = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if req.flags & wanted != wanted {
            return Err(not(format!(
                "flags {:#x}, wanted a tap with {wanted:#x}",
                req.flags
            )));
        }
        let len = req.name.iter().position(|b| *b == 0).unwrap_or(IFNAMSIZ);
        let name = String::from_utf8_lossy(&req.name[..len]).into_owned();
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no pointers.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(not(format!(
                "cannot make it non-blocking: {}",
                io::Error::last_os_error()
            )));
        }
        let file = File::from(fd);
        configure_queue(&file, &name)?;
        Ok(Tap { file, name })
    }

    /// A stand-in for a tap: `fd` reads and writes one frame (header
    /// included) per call, like a seqpacket socket, and is not checked to be
    /// a tap. For the fuzz harness and tests of the receive and transmit
    /// paths; a monitor only takes taps through [`Tap::from_fd`].
    pub fn from_frame_socket(fd: OwnedFd, name: &str) -> Tap {
        Tap {
            file: File::from(fd),
            name: name.into(),
        }
    }

    /// The descriptor, to hand to another process.
    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.file)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (header included); `WouldBlock` when none is queued.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame (header included).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }
}

/// Frames carry a virtio-net header and no offloads.
fn configure_queue(file: &File, name: &str) -> Result<(), TapError> {
    let fd = file.as_raw_fd();
    let err = |what| TapError::Ioctl {
        name: name.into(),
        what,
        source: io::Error::last_os_error(),
    };
    let hdr_len = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
    if unsafe { libc::ioctl(fd, TUNSETVNETHDRSZ, &hdr_len as *const libc::c_int) } < 0 {
        return Err(err("TUNSETVNETHDRSZ"));
    }
    // SAFETY: TUNSETOFFLOAD takes its flags by value; 0 turns every offload off.
    if unsafe { libc::ioctl(fd, TUNSETOFFLOAD, 0 as libc::c_uint) } < 0 {
        return Err(err("TUNSETOFFLOAD"));
    }
    Ok(())
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread in a new network namespace of its own (tap
    /// names there cannot clash with the host's), or prints SKIP.
    fn in_own_netns(test: &str, f: impl FnOnce() + Send + 'static) {
        let ok = std::thread::spawn(move || {
            // SAFETY: unshare only changes this thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f();
            Ok(())
        })
        .join()
        .expect("test thread panicked");
        if let Err(e) = ok {
            eprintln!("SKIP {test}: cannot make a network namespace: {e}");
        }
    }

    #[test]
    fn opens_a_tap_and_refuses_bad_names_and_a_second_owner() {
        for bad in ["", "0123456789abcdef", "a/b", "a\0b"] {
            assert!(
                matches!(Tap::open(bad), Err(TapError::BadName(_))),
                "{bad:?}"
            );
        }
        in_own_netns("opens_a_tap", || {
            let tap = match Tap::open("fvmtest0") {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("SKIP opens_a_tap: {e}");
                    return;
                }
            };
            assert_eq!(tap.name(), "fvmtest0");
            let mut buf = [0u8; 2048];
            let e = tap.read_frame(&mut buf).unwrap_err();
            assert!(
                e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EIO),
                "{e}"
            );
            let busy = Tap::open("fvmtest0").unwrap_err().to_string();
            assert!(busy.contains("TUNSETIFF"), "{busy}");
        });
    }
}
