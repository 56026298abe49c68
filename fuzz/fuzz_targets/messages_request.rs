//! Arbitrary bytes as an Anthropic Messages request, translated to a chat request and back: see `lyss_fuzz::messages_request`.
//! Mutations are JSON-aware half the time: see `lyss_fuzz::mutate_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lyss_fuzz::messages_request(data);
});

lyss_fuzz::json_mutator!(include_str!("../dict/messages_request.dict"));
