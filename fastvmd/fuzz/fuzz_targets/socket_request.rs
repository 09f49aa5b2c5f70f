//! Fuzz target: `fastvmd::fuzzing::socket_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fastvmd::fuzzing::socket_request(data));
