//! Workspace end-to-end tests of `fastvmd serve` with the real Linux guest.
//!
//! Where the host cannot boot Linux itself (PVM), the test boots L1 under
//! QEMU with emulated AMD SVM ([`fastvmd::nested`]); [`l1`] assembles that
//! L1 with `fastvmd`, the guest image and the `nested-scenario` binary, and
//! [`scenario`] is what runs inside: every step of the product path against
//! Linux guests, reported line by line in the format of [`report`]. The
//! monitor's own tests, which drive the `fastvmd vmm` binary, are in
//! `fastvmd/tests/`.

pub mod l1;
pub mod report;
pub mod scenario;
