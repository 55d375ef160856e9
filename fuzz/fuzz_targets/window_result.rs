//! See `pipeline_wire::fuzzing::window_result` for what this target feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipeline_wire::fuzzing::window_result(data));
