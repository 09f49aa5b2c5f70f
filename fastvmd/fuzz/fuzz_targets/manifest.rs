//! Fuzz target: `fastvmd::fuzzing::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fastvmd::fuzzing::manifest(data));
