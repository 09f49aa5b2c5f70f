//! Fuzz target: `fastvmd::fuzzing::agent_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fastvmd::fuzzing::agent_frames(data));
