//! Fuzz target: `fastvmd::fuzzing::firewall_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fastvmd::fuzzing::firewall_frame(data));
