//! Arbitrary bytes as upstream event streams through every stream translator: see `lyss_fuzz::stream_translators`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lyss_fuzz::stream_translators(data);
});
