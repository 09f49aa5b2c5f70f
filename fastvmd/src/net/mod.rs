//! VM networking: the daemon's host configuration ([`host`], [`tap_config`],
//! [`tap_config4`], egress NAT in [`nat`])
//! and, from the monitor crate, the ingress packet filter ([`firewall`]),
//! the tap backend ([`tap`]) and addressing ([`addr`]).

pub use fastvm_vmm::net::{addr, firewall, tap};
pub mod host;
pub mod nat;
pub mod tap_config;
pub mod tap_config4;
