//! The root file system takes the whole disk: a VM created with a disk
//! larger than its image's file system, or a clone restored onto a larger
//! disk, gets the space without anyone running `resize2fs`.
//!
//! At boot the agent grows ext4 online to the size of the root's block
//! device (`EXT4_IOC_RESIZE_FS`, the ioctl `resize2fs` itself uses on a
//! mounted file system). A disk that grows later (the host restores a
//! snapshot onto a larger disk and raises virtio's configuration-change
//! interrupt) makes the kernel send a `change` uevent with `RESIZE=1`; a
//! thread listening for those grows the file system again. Nothing here
//! needs a tool from the image.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `EXT4_SUPER_MAGIC`, the `f_type` statfs reports for ext4.
const EXT4_SUPER_MAGIC: libc::__fsword_t = 0xEF53;
/// `EXT4_IOC_RESIZE_FS`: `_IOW('f', 16, __u64)`.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
/// Largest uevent the kernel sends (`UEVENT_BUFFER_SIZE`).
const UEVENT_MAX: usize = 2048;
/// The kernel's uevent multicast group.
const UEVENT_GROUP: u32 = 1;

/// A block device, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceNumber {
    pub major: u32,
    pub minor: u32,
}

/// What growing found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grown {
    /// The file system was resized to this many blocks (it may already
    /// have had them).
    To { blocks: u64, block_size: u64 },
    /// The root is not ext4 (an initramfs, say): nothing to do.
    NotExt4,
}

/// The device `/` is on.
pub fn root_device() -> io::Result<DeviceNumber> {
    let meta = std::fs::metadata("/")?;
    let dev = std::os::unix::fs::MetadataExt::dev(&meta);
    Ok(DeviceNumber {
        major: libc::major(dev),
        minor: libc::minor(dev),
    })
}

/// The size in bytes of block device `dev` (sysfs counts 512-byte sectors).
pub fn device_bytes(dev: DeviceNumber) -> io::Result<u64> {
    let path = format!("/sys/dev/block/{}:{}/size", dev.major, dev.minor);
    let text = std::fs::read_to_string(&path)?;
    let sectors: u64 = text
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("{path}: {:?} is not a number", text.trim())))?;
    sectors
        .checked_mul(512)
        .ok_or_else(|| io::Error::other(format!("{path}: {sectors} sectors overflow")))
}

/// Blocks of `block_size` that fit on a device of `device_bytes`.
pub fn blocks_for(device_bytes: u64, block_size: u64) -> Option<u64> {
    (block_size > 0).then(|| device_bytes / block_size)
}

/// Grows the ext4 file system mounted at `/` to the size of its device.
/// Asking for the size it already has does nothing; a device smaller than
/// the file system is refused by the kernel (it never shrinks).
pub fn grow() -> io::Result<Grown> {
    // SAFETY: statfs fills a zeroed struct through a valid pointer and a
    // NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c"/".as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.f_type != EXT4_SUPER_MAGIC {
        return Ok(Grown::NotExt4);
    }
    let block_size = u64::try_from(st.f_bsize).unwrap_or(0);
    let bytes = device_bytes(root_device()?)?;
    let blocks = blocks_for(bytes, block_size)
        .ok_or_else(|| io::Error::other("the root file system reports a block size of 0"))?;
    let root = std::fs::File::open("/")?;
    // SAFETY: the ioctl reads one u64 through a valid pointer; the
    // descriptor is open for the call's duration.
    let rc = unsafe { libc::ioctl(root.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks as *const u64) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Grown::To { blocks, block_size })
}

/// Whether uevent `msg` (`ACTION@DEVPATH\0KEY=VALUE\0…`) says block device
/// `dev` changed size.
pub fn is_resize_of(msg: &[u8], dev: DeviceNumber) -> bool {
    let fields = msg
        .split(|b| *b == 0)
        .filter_map(|f| std::str::from_utf8(f).ok());
    let (mut change, mut resize, mut block) = (false, false, false);
    let (mut major, mut minor) = (None, None);
    for field in fields {
        match field.split_once('=') {
            Some(("ACTION", v)) => change = v == "change",
            Some(("RESIZE", v)) => resize = v == "1",
            Some(("SUBSYSTEM", v)) => block = v == "block",
            Some(("MAJOR", v)) => major = v.parse::<u32>().ok(),
            Some(("MINOR", v)) => minor = v.parse::<u32>().ok(),
            _ => {}
        }
    }
    change && resize && block && major == Some(dev.major) && minor == Some(dev.minor)
}

/// A socket on the kernel's uevents.
fn uevent_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers only.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_KOBJECT_UEVENT,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_nl is valid; fields set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = UEVENT_GROUP;
    // SAFETY: the pointer and length describe `addr`.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn report(when: &str, result: io::Result<Grown>) {
    if let Err(e) = result {
        eprintln!("guest-agent: growing the root file system ({when}): {e}");
    }
}

/// At boot: grows the root file system now (before exec is served, so the
/// first command sees the whole disk), then keeps a thread that grows it
/// whenever its disk grows.
pub fn start() {
    // Listening before the first grow: a resize in between is not missed.
    let socket = uevent_socket();
    report("at boot", grow());
    let Ok(dev) = root_device() else { return };
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            eprintln!("guest-agent: uevents: {e}; a disk grown later is not used");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("grow-root".into())
        .spawn(move || watch(socket, dev));
    if let Err(e) = spawned {
        eprintln!("guest-agent: grow-root thread: {e}");
    }
}

fn watch(socket: OwnedFd, dev: DeviceNumber) {
    let mut buf = [0u8; UEVENT_MAX];
    loop {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            // ENOBUFS: events were dropped; one of them may be ours.
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => report("after lost uevents", grow()),
                _ => {
                    eprintln!("guest-agent: uevents: {err}");
                    return;
                }
            }
            continue;
        }
        let msg = &buf[..n as usize];
        if is_resize_of(msg, dev) {
            report("its disk grew", grow());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VDA: DeviceNumber = DeviceNumber {
        major: 254,
        minor: 0,
    };

    fn uevent(fields: &[&str]) -> Vec<u8> {
        let mut msg = b"change@/devices/platform/virtio-mmio.0/virtio0/block/vda".to_vec();
        for f in fields {
            msg.push(0);
            msg.extend_from_slice(f.as_bytes());
        }
        msg
    }

    #[test]
    fn a_resize_of_the_root_disk_is_recognised() {
        let required = [
            "ACTION=change",
            "SUBSYSTEM=block",
            "MAJOR=254",
            "MINOR=0",
            "RESIZE=1",
        ];
        let mut all = required.to_vec();
        all.insert(4, "DEVNAME=vda");
        assert!(is_resize_of(&uevent(&all), VDA));
        for missing in required {
            let fewer: Vec<&str> = all.iter().copied().filter(|f| *f != missing).collect();
            assert!(!is_resize_of(&uevent(&fewer), VDA), "without {missing}");
        }
        let other = uevent(&[
            "ACTION=change",
            "SUBSYSTEM=block",
            "MAJOR=254",
            "MINOR=16",
            "RESIZE=1",
        ]);
        assert!(!is_resize_of(&other, VDA), "another disk");
        let added = uevent(&[
            "ACTION=add",
            "SUBSYSTEM=block",
            "MAJOR=254",
            "MINOR=0",
            "RESIZE=1",
        ]);
        assert!(!is_resize_of(&added, VDA), "not a change");
        assert!(!is_resize_of(b"\xff\xfe\0RESIZE=1", VDA));
    }

    #[test]
    fn the_block_count_is_the_whole_disk() {
        assert_eq!(blocks_for(20 << 30, 4096), Some(5 * 1024 * 1024));
        assert_eq!(blocks_for((1 << 30) + 4095, 4096), Some(262_144));
        assert_eq!(blocks_for(1 << 30, 0), None);
    }

    #[test]
    fn the_host_root_device_has_a_size() {
        // Any Linux host's root is on some device; a root on a pseudo
        // file system (overlay in a container) has no sysfs size.
        let dev = root_device().unwrap();
        match device_bytes(dev) {
            Ok(bytes) => assert!(bytes > 0),
            Err(e) => eprintln!(
                "SKIP the_host_root_device_has_a_size: / is on {}:{} with no sysfs size ({e})",
                dev.major, dev.minor
            ),
        }
    }
}
