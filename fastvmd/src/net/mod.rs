//! VM networking: the ingress packet filter ([`firewall`]) the monitor's
//! virtio-net device applies to every frame going to the guest, the tap
//! backend ([`tap`]), addressing ([`addr`]: the /64, MACs, addresses) and
//! the daemon's host configuration ([`host`]).

pub mod addr;
pub mod firewall;
pub mod host;
pub mod tap;
pub mod tap_config;
