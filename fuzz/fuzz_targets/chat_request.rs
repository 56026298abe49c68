//! Arbitrary bytes as an OpenAI chat request and everything lyss does with one before the upstream: see `lyss_fuzz::chat_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lyss_fuzz::chat_request(data);
});
