//! Network namespaces made by a test: a "host" namespace where the monitor
//! and its tap live, with IPv6 forwarding on, and a "client" namespace
//! joined to it by a veth pair (client `fd00:aaaa::2` and `::3`, host end
//! `fd00:aaaa::1`, the client's default route). The client side runs on a
//! thread that entered the client namespace. Both go away on drop.

use std::fs::File;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The client's first address (its default source).
pub const CLIENT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xaaaa, 0, 0, 0, 0, 0, 2);
/// The client's second address.
pub const CLIENT2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xaaaa, 0, 0, 0, 0, 0, 3);

/// Why the lab cannot be built here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    if std::fs::metadata("/dev/net/tun").is_err() {
        return Some("no /dev/net/tun".into());
    }
    if let Some(why) = fastvmd::net::host::tap_unavailable() {
        return Some(why);
    }
    None
}

/// The two namespaces.
pub struct NetLab {
    pub host: String,
    pub client: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetLab {
    /// Makes both namespaces; `tag` keeps concurrent tests apart.
    pub fn new(tag: &str) -> Result<NetLab, String> {
        let id = std::process::id();
        let lab = NetLab {
            host: format!("fvh{id}{tag}"),
            client: format!("fvc{id}{tag}"),
        };
        run(&["netns", "add", &lab.host])?;
        run(&["netns", "add", &lab.client])?;
        let (h, c) = (lab.host.as_str(), lab.client.as_str());
        // No duplicate address detection on the new links: while the veth's
        // link-local address is tentative (about a second) the host cannot
        // resolve the client, and forwarded answers wait.
        for ns in [h, c] {
            run(&[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.accept_dad=0",
            ])?;
        }
        for args in [
            vec!["-n", h, "link", "set", "lo", "up"],
            vec!["-n", c, "link", "set", "lo", "up"],
            vec![
                "-n", h, "link", "add", "vh", "type", "veth", "peer", "name", "vc", "netns", c,
            ],
            vec![
                "-n",
                h,
                "-6",
                "addr",
                "add",
                "fd00:aaaa::1/64",
                "dev",
                "vh",
                "nodad",
            ],
            vec!["-n", h, "link", "set", "vh", "up"],
            vec![
                "-n",
                c,
                "-6",
                "addr",
                "add",
                "fd00:aaaa::2/64",
                "dev",
                "vc",
                "nodad",
            ],
            vec![
                "-n",
                c,
                "-6",
                "addr",
                "add",
                "fd00:aaaa::3/64",
                "dev",
                "vc",
                "nodad",
            ],
            vec!["-n", c, "link", "set", "vc", "up"],
            vec![
                "-n",
                c,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd00:aaaa::1",
            ],
            vec![
                "netns",
                "exec",
                h,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.forwarding=1",
            ],
        ] {
            run(&args)?;
        }
        Ok(lab)
    }

    /// `ip netns exec HOST program args...`, to spawn.
    pub fn command_in_host(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host]).arg(program);
        cmd
    }

    /// Runs `ip -n HOST args...`.
    pub fn ip_host(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", self.host.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// What the daemon does for a VM: tap up, `fe80::1` on it, a /128 route.
    pub fn configure_tap(&self, tap: &str, vm: Ipv6Addr) -> Result<(), String> {
        self.ip_host(&["link", "set", "dev", tap, "up"])?;
        self.ip_host(&["-6", "addr", "add", "fe80::1/64", "dev", tap, "nodad"])?;
        self.ip_host(&["-6", "route", "add", &format!("{vm}/128"), "dev", tap])
    }

    /// Runs `f` on a thread inside the client namespace.
    pub fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.client);
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("open the client namespace");
            // SAFETY: setns on an open netns fd changes only this thread's namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        })
        .join()
        .expect("client thread panicked")
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        let _ = run(&["netns", "del", &self.client]);
        let _ = run(&["netns", "del", &self.host]);
    }
}

/// Connects to `[addr]:port` and reads the guest's greeting line.
pub fn tcp_greeting(addr: Ipv6Addr, port: u16, timeout: Duration) -> io::Result<String> {
    use std::io::{BufRead, BufReader};
    let stream = TcpStream::connect_timeout(&SocketAddr::from((addr, port)), timeout)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

/// Sends one datagram from `src` to `[addr]:port`; the echo, if one came
/// back within `timeout`.
pub fn udp_echo(src: Ipv6Addr, addr: Ipv6Addr, port: u16, timeout: Duration) -> Option<Vec<u8>> {
    let attempt = || -> io::Result<Vec<u8>> {
        let socket = UdpSocket::bind(SocketAddr::from((src, 0)))?;
        socket.set_read_timeout(Some(timeout))?;
        let payload = format!("udp {port} from {src}").into_bytes();
        socket.send_to(&payload, SocketAddr::from((addr, port)))?;
        let mut buf = [0u8; 1500];
        let (n, _) = socket.recv_from(&mut buf)?;
        Ok(buf[..n].to_vec())
    };
    match attempt() {
        Ok(echo) => Some(echo),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("UDP from {src} to [{addr}]:{port}: {e}"),
    }
}

/// Sends one ICMPv6 echo request to `addr` (raw socket: CAP_NET_RAW);
/// whether the reply came within `timeout`.
pub fn ping(addr: Ipv6Addr, timeout: Duration) -> bool {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain socket creation; the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) };
    assert!(
        raw >= 0,
        "raw ICMPv6 socket: {}",
        io::Error::last_os_error()
    );
    // SAFETY: `raw` is a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let id = (std::process::id() & 0xffff) as u16;
    // Echo request: type 128, code 0, checksum (the kernel fills it), id, seq.
    let mut request = vec![128u8, 0, 0, 0];
    request.extend_from_slice(&id.to_be_bytes());
    request.extend_from_slice(&1u16.to_be_bytes());
    request.extend_from_slice(b"fastvm ping");
    // SAFETY: an all-zero sockaddr_in6 is valid; family and address are set below.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as u16;
    sa.sin6_addr.s6_addr = addr.octets();
    // SAFETY: `request` and `sa` are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&sa as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    };
    assert_eq!(
        sent,
        request.len() as isize,
        "{}",
        io::Error::last_os_error()
    );
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) } <= 0 {
            return false;
        }
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        // Echo reply (129) with our id; the socket sees every ICMPv6 message.
        if n >= 8 && buf[0] == 129 && buf[4..6] == id.to_be_bytes() {
            return true;
        }
    }
    false
}
