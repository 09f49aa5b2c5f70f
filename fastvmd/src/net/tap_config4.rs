//! The IPv4 half of a VM's tap on the host, with the interface ioctls:
//! the gateway address as a /32 on the tap (every tap has the same one:
//! the guest reaches it by ARP through its NIC) and a /32 route to the VM
//! through the tap.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An `AF_INET` datagram socket, the handle the ioctls act on.
fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are the same size, plain data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq_with(name: &str, addr: Ipv4Addr) -> io::Result<libc::ifreq> {
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
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    Ok(req)
}

fn set(sock: &OwnedFd, request: libc::c_ulong, req: &libc::ifreq) -> io::Result<()> {
    // SAFETY: the SIOCSIF* requests used here read one valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives tap `name` (already up) `gateway/32` and routes `vm/32` through
/// it, replacing a route to that address left elsewhere.
pub fn configure(name: &str, gateway: Ipv4Addr, vm: Ipv4Addr) -> Result<(), String> {
    let step = |what: &str, e: io::Error| format!("tap {name}: {what}: {e}");
    let sock = inet_socket().map_err(|e| step("socket", e))?;
    set(
        &sock,
        libc::SIOCSIFADDR,
        &ifreq_with(name, gateway).map_err(|e| step("name", e))?,
    )
    .map_err(|e| step(&format!("address {gateway}"), e))?;
    let mask = ifreq_with(name, Ipv4Addr::BROADCAST).map_err(|e| step("name", e))?;
    set(&sock, libc::SIOCSIFNETMASK, &mask).map_err(|e| step("netmask /32", e))?;
    let dev = std::ffi::CString::new(name)
        .map_err(|_| step("name", io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: rtentry is plain data; all zeros is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(vm);
    rt.rt_genmask = sockaddr_in(Ipv4Addr::BROADCAST);
    rt.rt_flags = libc::RTF_UP | libc::RTF_HOST;
    rt.rt_dev = dev.as_ptr() as *mut libc::c_char;
    let add = |rt: &libc::rtentry| {
        // SAFETY: SIOCADDRT reads one valid rtentry whose rt_dev points to
        // a NUL-terminated name alive for the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, rt) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    match add(&rt) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let mut stale = rt;
            stale.rt_dev = std::ptr::null_mut();
            // SAFETY: SIOCDELRT reads one valid rtentry (no device named).
            unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCDELRT, &stale) };
            add(&rt)
        }
        other => other,
    }
    .map_err(|e| step(&format!("route {vm}/32"), e))
}
