//! Arbitrary bytes as an Ethernet frame and everything inside it: see `xtcp::fuzz::wire`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xtcp::fuzz::wire(data));
