//! FastVM daemon library: the per-VM monitor (`vmm`) and what the daemon
//! builds on it.

pub mod vmm;
