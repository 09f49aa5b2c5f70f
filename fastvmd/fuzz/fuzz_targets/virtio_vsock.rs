//! Fuzz target: `fastvmd::fuzzing::virtio_vsock`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fastvmd::fuzzing::virtio_vsock(data));
