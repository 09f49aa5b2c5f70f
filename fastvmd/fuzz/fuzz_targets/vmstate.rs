//! Fuzz target: `fastvmd::fuzzing::vmstate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fastvmd::fuzzing::vmstate(data));
