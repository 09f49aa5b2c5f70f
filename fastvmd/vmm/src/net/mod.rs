//! What a monitor runs of VM networking: the ingress packet filter
//! ([`firewall`]) its virtio-net device applies to every frame going to the
//! guest, the tap backend ([`tap`]) and addressing ([`addr`]: the /64, MACs,
//! addresses; [`addr4`]: IPv4 addresses for egress).

pub mod addr;
pub mod addr4;
pub mod firewall;
pub mod tap;
