//! What identifies a flow: protocol, the guest's address and port (or ICMP
//! echo identifier), the remote address and port; hashed as a few packed
//! integers, which SipHash takes faster than a derived hash's many small
//! writes.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// TCP header flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// What a flow carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowProtocol {
    Tcp,
    Udp,
    /// ICMP or ICMPv6 echo: the "port" is the echo identifier.
    IcmpEcho,
}

impl FlowProtocol {
    /// The flow protocol of an `Upper::Ports` packet: TCP, else UDP.
    pub fn of_ports(protocol: u8) -> FlowProtocol {
        if protocol == super::packet::proto::TCP {
            FlowProtocol::Tcp
        } else {
            FlowProtocol::Udp
        }
    }
}

/// One flow, as seen from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub protocol: FlowProtocol,
    pub guest: IpAddr,
    /// TCP/UDP port of the guest, or the echo identifier.
    pub guest_port: u16,
    pub remote: IpAddr,
    /// TCP/UDP port of the remote end; 0 for echo.
    pub remote_port: u16,
}

impl Hash for FlowKey {
    /// The fields packed into a few integers: SipHash takes an integer
    /// write at a time, and a derived hash makes a dozen small ones (half
    /// the cost of a lookup).
    fn hash<H: Hasher>(&self, state: &mut H) {
        let protocol: u64 = match self.protocol {
            FlowProtocol::Tcp => 6,
            FlowProtocol::Udp => 17,
            FlowProtocol::IcmpEcho => 1,
        };
        let head =
            protocol | (u64::from(self.guest_port) << 16) | (u64::from(self.remote_port) << 32);
        match (self.guest, self.remote) {
            (IpAddr::V4(guest), IpAddr::V4(remote)) => {
                state.write_u64(head | 4 << 8);
                state.write_u64(u64::from(guest.to_bits()) << 32 | u64::from(remote.to_bits()));
            }
            (guest, remote) => {
                state.write_u64(head | 6 << 8);
                for addr in [guest, remote] {
                    let bits = match addr {
                        // Marked apart from the IPv4-mapped IPv6 address.
                        IpAddr::V4(a) => u128::from(a.to_bits()) | 1 << 127,
                        IpAddr::V6(a) => a.to_bits(),
                    };
                    state.write_u64(bits as u64);
                    state.write_u64((bits >> 64) as u64);
                }
            }
        }
    }
}
