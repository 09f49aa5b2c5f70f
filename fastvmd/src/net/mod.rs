//! VM networking on the host side: the ingress packet filter
//! ([`firewall`]) applied by the monitor's virtio-net device to every frame
//! going to the guest.

pub mod firewall;
