//! The guest's network: smoltcp over virtio-net, driven by polling.
//!
//! It takes the addresses the monitor put on the command line (IPv6 always,
//! IPv4 when given: see `test_guest::netcfg`) and serves, for the host's
//! tests, over both:
//! - TCP [`TCP_PORTS`]: a line `fastvm PORT\n` on connect, then an echo of
//!   whatever the peer sends, until the peer closes;
//! - TCP [`DISCARD_PORT`]: reads and drops everything (throughput);
//! - UDP [`UDP_PORTS`]: echo;
//! - ICMP echo (smoltcp answers it).
//!
//! The built-ins' outbound connections and pings are in [`client`].
//!
//! A snapshot clone gets a new MAC; the NIC's configuration space shows it,
//! and the guest moves to the IPv6 address of the new MAC within the same
//! /64 (see `test_guest::netcfg`), dropping its connections. Its IPv4
//! address stays the one of the command line it booted with: nothing tells
//! a restored guest another.

mod client;
mod phy;

use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;
use core::net::Ipv6Addr;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use test_guest::netcfg::{self, NetConfig};

use self::client::Clients;
use self::phy::{Nic, Phy};
use crate::cpu;
use crate::devices::Mmio;
use crate::println;

/// TCP ports answered with a greeting line, then echo.
pub const TCP_PORTS: [u16; 3] = [7000, 7001, 7002];
/// TCP port whose data is read and dropped.
pub const DISCARD_PORT: u16 = 9;
/// UDP echo ports.
pub const UDP_PORTS: [u16; 3] = [7000, 7001, 7002];
/// Receive buffer size (a full frame plus the virtio-net header).
const RX_BUFFER_LEN: usize = 2048;
/// How often to look for a new MAC (a snapshot clone), in ms.
const MAC_CHECK_MS: u64 = 5;
/// Offset of the device-specific config space in a virtio-mmio window.
const CONFIG_OFFSET: u64 = 0x100;
/// Listening sockets per TCP port, so a new connection is taken while the
/// previous one closes.
const SOCKETS_PER_PORT: usize = 2;

/// What a TCP socket serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    GreetEcho(u16),
    Discard,
}

/// The network stack and its services.
pub struct Net {
    base: u64,
    phy: Phy,
    iface: Interface,
    sockets: SocketSet<'static>,
    tcp: Vec<(Service, SocketHandle, bool)>,
    udp: Vec<SocketHandle>,
    config: NetConfig,
    mac: [u8; 6],
    boot: u64,
    next_mac_check: u64,
    clients: Clients,
}

fn read_mac(base: u64) -> [u8; 6] {
    let cfg = (base + CONFIG_OFFSET) as *const u8;
    let mut mac = [0u8; 6];
    for (i, b) in mac.iter_mut().enumerate() {
        // SAFETY: byte reads of the identity-mapped virtio-net config space
        // (the MAC is its first six bytes); volatile so each reaches the device.
        *b = unsafe { cfg.add(i).read_volatile() };
    }
    mac
}

impl Net {
    /// Opens the NIC at `base` with the configuration on the command line.
    pub fn open(
        base: u64,
        transport: Mmio,
        config: NetConfig,
    ) -> Result<Net, alloc::string::String> {
        let nic = Nic::new(transport, RX_BUFFER_LEN).map_err(|e| alloc::format!("{e}"))?;
        let mac = read_mac(base);
        let mut phy = Phy(nic);
        let boot = cpu::now();
        let iface = new_iface(&mut phy, mac, &config, Instant::from_millis(0));
        let mut sockets = SocketSet::new(Vec::new());
        let mut tcp = Vec::new();
        for port in TCP_PORTS {
            for _ in 0..SOCKETS_PER_PORT {
                tcp.push((
                    Service::GreetEcho(port),
                    tcp_socket(&mut sockets, 4096, 4096),
                    false,
                ));
            }
        }
        tcp.push((
            Service::Discard,
            // A large window for the throughput measurement; it never sends.
            tcp_socket(&mut sockets, 256 * 1024, 64),
            false,
        ));
        let mut udp = Vec::new();
        for port in UDP_PORTS {
            let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]);
            let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]);
            let mut socket = udp::Socket::new(rx, tx);
            socket
                .bind(port)
                .map_err(|e| alloc::format!("UDP bind {port}: {e}"))?;
            udp.push(sockets.add(socket));
        }
        let mut net = Net {
            base,
            phy,
            iface,
            sockets,
            tcp,
            udp,
            config,
            mac,
            boot,
            next_mac_check: boot + cpu::ticks(MAC_CHECK_MS),
            clients: Clients::default(),
        };
        net.listen_all();
        println!(
            "net: {}/{} mac {}",
            net.address(),
            config.prefix_len,
            mac_text(mac)
        );
        if let Some(v4) = config.ipv4 {
            println!(
                "net: {}/{} via {} (on link: /{})",
                v4.addr, v4.prefix_len, v4.gateway, v4.link_prefix
            );
        }
        Ok(net)
    }

    /// The address in use.
    pub fn address(&self) -> Ipv6Addr {
        netcfg::address_for_mac(self.config.addr, self.mac)
    }

    fn now(&self) -> Instant {
        Instant::from_millis(cpu::ms_between(self.boot, cpu::now()) as i64)
    }

    fn listen_all(&mut self) {
        for (service, handle, greeted) in &mut self.tcp {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            if socket.state() == tcp::State::Closed {
                let port = match service {
                    Service::GreetEcho(p) => *p,
                    Service::Discard => DISCARD_PORT,
                };
                *greeted = false;
                if let Err(e) = socket.listen(port) {
                    println!("net: listen {port}: {e}");
                }
            }
        }
    }

    /// Moves frames and serves every socket; call from the main loop.
    pub fn poll(&mut self) {
        self.check_mac();
        let now = self.now();
        self.iface.poll(now, &mut self.phy, &mut self.sockets);
        let mut buf = [0u8; 2048];
        for (service, handle, greeted) in &mut self.tcp {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            match service {
                Service::GreetEcho(port) => {
                    if socket.may_send() && !*greeted {
                        let mut line = alloc::string::String::new();
                        let _ = writeln!(line, "fastvm {port}");
                        if socket.send_slice(line.as_bytes()).is_ok() {
                            *greeted = true;
                        }
                    }
                    while socket.can_recv()
                        && socket.send_capacity() - socket.send_queue() >= buf.len()
                    {
                        match socket.recv_slice(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let _ = socket.send_slice(&buf[..n]);
                            }
                        }
                    }
                }
                Service::Discard => {
                    while socket.can_recv() {
                        match socket.recv(|data| (data.len(), data.len())) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
            }
            if !socket.may_recv() && socket.state() == tcp::State::CloseWait {
                socket.close();
            }
        }
        for handle in &self.udp {
            let socket = self.sockets.get_mut::<udp::Socket>(*handle);
            while let Ok((n, meta)) = socket.recv_slice(&mut buf) {
                let _ = socket.send_slice(&buf[..n], meta.endpoint);
            }
        }
        self.poll_clients(now);
        self.listen_all();
        self.iface.poll(now, &mut self.phy, &mut self.sockets);
    }

    /// The TSC value when the stack next needs a poll (a retransmission, a
    /// neighbor discovery timer), if any; a value not in the future means
    /// it has work now. Arriving frames wake the guest through the NIC's
    /// interrupt, so they need no timer.
    pub fn next_timer(&mut self) -> Option<u64> {
        let stack = self.iface.poll_at(self.now(), &self.sockets);
        let at = match (stack, self.clients.next_timer()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.boot + cpu::ticks(at.total_millis().max(0) as u64))
    }

    /// When the periodic MAC check is due (TSC).
    pub fn mac_check_due(&self) -> u64 {
        self.next_mac_check
    }

    /// Looks at the MAC on the next poll (the monitor's epoch changed: this
    /// may be a clone with a new identity).
    pub fn check_mac_now(&mut self) {
        self.next_mac_check = 0;
    }

    /// A clone with a new MAC moves to the new MAC's address.
    fn check_mac(&mut self) {
        let now = cpu::now();
        if now < self.next_mac_check {
            return;
        }
        self.next_mac_check = now + cpu::ticks(MAC_CHECK_MS);
        let mac = read_mac(self.base);
        if mac == self.mac {
            return;
        }
        self.mac = mac;
        self.rebuild();
        println!("net: new mac {}, address {}", mac_text(mac), self.address());
    }

    /// Takes a new identity: every connection is dropped and the interface
    /// made again for the MAC and configuration now in use.
    fn rebuild(&mut self) {
        for (_, handle, _) in &self.tcp {
            self.sockets.get_mut::<tcp::Socket>(*handle).abort();
        }
        self.lose_clients();
        let at = self.now();
        self.iface = new_iface(&mut self.phy, self.mac, &self.config, at);
        self.listen_all();
    }

    /// Moves to `config` (a `setNetwork`'s) unless it is the one in use
    /// (the IPv6 address compared as this MAC makes it).
    pub(crate) fn apply(&mut self, config: NetConfig) {
        let effective = |c: &NetConfig| {
            (
                netcfg::address_for_mac(c.addr, self.mac),
                c.prefix_len,
                c.gateway,
                c.ipv4,
            )
        };
        if effective(&config) == effective(&self.config) {
            return;
        }
        self.config = config;
        self.rebuild();
        match config.ipv4 {
            Some(v4) => println!(
                "net: now {} and {}/{}",
                self.address(),
                v4.addr,
                v4.prefix_len
            ),
            None => println!("net: now {}", self.address()),
        }
    }
}

/// A TCP socket with `rx` and `tx` bytes of buffer. Every buffer page is
/// touched when it is made, and a guest's first touch of a page is slow
/// under nested KVM, so buffers are only as large as their use needs.
fn tcp_socket(sockets: &mut SocketSet<'static>, rx: usize, tx: usize) -> SocketHandle {
    sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; rx]),
        tcp::SocketBuffer::new(vec![0; tx]),
    ))
}

/// The interface: the IPv6 address of `mac` and its link-local one, the
/// IPv4 address (its subnet widened to hold the gateway: see
/// `test_guest::netcfg`), and a default route for each.
fn new_iface(phy: &mut Phy, mac: [u8; 6], config: &NetConfig, now: Instant) -> Interface {
    let hw = HardwareAddress::Ethernet(EthernetAddress(mac));
    let mut iface_config = Config::new(hw);
    // Initial sequence numbers and the like differ from boot to boot.
    iface_config.random_seed = cpu::now();
    let mut iface = Interface::new(iface_config, phy, now);
    let addr = netcfg::address_for_mac(config.addr, mac);
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(addr), config.prefix_len));
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(netcfg::link_local(mac)), 64));
        if let Some(v4) = config.ipv4
            && addrs
                .push(IpCidr::new(IpAddress::Ipv4(v4.addr), v4.link_prefix))
                .is_err()
        {
            println!("net: no room for the IPv4 address");
        }
    });
    if let Some(gw) = config.gateway
        && iface.routes_mut().add_default_ipv6_route(gw).is_err()
    {
        println!("net: cannot add the default IPv6 route");
    }
    if let Some(v4) = config.ipv4
        && iface
            .routes_mut()
            .add_default_ipv4_route(v4.gateway)
            .is_err()
    {
        println!("net: cannot add the default IPv4 route");
    }
    iface
}

fn mac_text(m: [u8; 6]) -> alloc::string::String {
    alloc::format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0],
        m[1],
        m[2],
        m[3],
        m[4],
        m[5]
    )
}
