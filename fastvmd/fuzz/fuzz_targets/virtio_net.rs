//! Fuzz target: `fastvmd::fuzzing::virtio_net`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fastvmd::fuzzing::virtio_net(data));
