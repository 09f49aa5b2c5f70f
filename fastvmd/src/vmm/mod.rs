//! The monitor: one KVM microVM per process.

pub mod devices;
