//! A whole stack fed frames, time and application calls decoded from the input: see `xtcp::fuzz::stack`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xtcp::fuzz::stack(data));
