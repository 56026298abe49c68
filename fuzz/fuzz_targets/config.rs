//! Arbitrary bytes as a configuration file: see `lyss_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lyss_fuzz::config(data);
});
