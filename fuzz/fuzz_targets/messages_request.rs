//! Arbitrary bytes as an Anthropic Messages request, translated to a chat request and back: see `lyss_fuzz::messages_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lyss_fuzz::messages_request(data);
});
