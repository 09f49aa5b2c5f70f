//! Configures a VM's tap on the host with the kernel's interface ioctls (no
//! process per step): link up, `fe80::1/64` as the guest's gateway without
//! duplicate address detection, and a /128 route to the VM through the tap.

use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An `AF_INET6` datagram socket, the handle the interface ioctls act on.
fn inet6_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn if_index(name: &str) -> io::Result<libc::c_int> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: if_nametoindex reads one NUL-terminated string.
    match unsafe { libc::if_nametoindex(cname.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i as libc::c_int),
    }
}

fn link_up(sock: &OwnedFd, name: &str) -> io::Result<()> {
    let mut req = ifreq_for(name)?;
    // SAFETY: SIOCGIFFLAGS fills the flags member of a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the flags member of the union was just filled by the kernel.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn add_address(sock: &OwnedFd, index: libc::c_int, addr: Ipv6Addr, len: u32) -> io::Result<()> {
    let req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        ifr6_prefixlen: len,
        ifr6_ifindex: index,
    };
    // SAFETY: SIOCSIFADDR on an AF_INET6 socket reads one valid in6_ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's `struct in6_rtmsg` (`linux/ipv6_route.h`; the libc crate's
/// has private fields).
#[repr(C)]
#[derive(Clone, Copy)]
struct In6RtMsg {
    dst: [u8; 16],
    src: [u8; 16],
    gateway: [u8; 16],
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

fn host_route(index: libc::c_int, dst: Ipv6Addr) -> In6RtMsg {
    In6RtMsg {
        dst: dst.octets(),
        src: [0; 16],
        gateway: [0; 16],
        kind: 0,
        dst_len: 128,
        src_len: 0,
        metric: 1,
        info: 0,
        flags: u32::from(libc::RTF_UP | libc::RTF_HOST),
        ifindex: index,
    }
}

fn route(sock: &OwnedFd, request: libc::c_ulong, rt: &In6RtMsg) -> io::Result<()> {
    // SAFETY: SIOCADDRT/SIOCDELRT on an AF_INET6 socket read one valid in6_rtmsg.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, rt) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings tap `name` up with `gateway/64` (no duplicate address detection;
/// already there is fine) and routes `vm/128` through it (replacing a route
/// to that address left elsewhere).
pub fn configure(name: &str, gateway: Ipv6Addr, vm: Ipv6Addr) -> Result<(), String> {
    let step = |what: &str, e: io::Error| format!("tap {name}: {what}: {e}");
    let sock = inet6_socket().map_err(|e| step("socket", e))?;
    link_up(&sock, name).map_err(|e| step("link up", e))?;
    let dad = format!("/proc/sys/net/ipv6/conf/{name}/accept_dad");
    std::fs::write(&dad, "0").map_err(|e| step("turning off address detection", e))?;
    let index = if_index(name).map_err(|e| step("index", e))?;
    match add_address(&sock, index, gateway, 64) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
            return Err(step(&format!("address {gateway}/64"), e));
        }
        _ => {}
    }
    let rt = host_route(index, vm);
    match route(&sock, libc::SIOCADDRT, &rt) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // SIOCDELRT matches the destination, whatever the device.
            let mut stale = rt;
            stale.ifindex = 0;
            let _ = route(&sock, libc::SIOCDELRT, &stale);
            route(&sock, libc::SIOCADDRT, &rt)
        }
        other => other,
    }
    .map_err(|e| step(&format!("route {vm}/128"), e))
}
