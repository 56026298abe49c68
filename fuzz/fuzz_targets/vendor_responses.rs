//! Arbitrary bytes as upstream answers through every response translation: see `lyss_fuzz::vendor_responses`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lyss_fuzz::vendor_responses(data);
});
