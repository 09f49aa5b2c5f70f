//! Types shared by every FastVM crate. No I/O lives here.
//!
//! - [`agent`]: frames between the host and the agent inside a guest (also
//!   spoken by the freestanding test guest, so this crate builds with
//!   `no_std` + `alloc` when the default `std` feature is off).
//! - `api` (feature `std`): the public API's schemas (`openapi.yaml`) as
//!   serde types, and their validation.
//! - `socket` (feature `std`): request, response and event frames of the
//!   daemon's local Unix socket.
//! - `exec_channel` (feature `std`): the streaming exec's channel protocol
//!   (Kubernetes' `v5.channel.k8s.io`) and its framing on the socket.
//! - `monitor` (feature `std`): the daemon ↔ monitor contract: VM directory
//!   names, exit statuses, control requests and answers.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod agent;
pub mod agent_stream;
#[cfg(feature = "std")]
pub mod api;
#[cfg(feature = "std")]
pub mod exec_channel;
#[cfg(feature = "std")]
pub mod monitor;
#[cfg(feature = "std")]
pub mod socket;
