//! Arbitrary bytes as an OpenAI chat request and everything lyss does with one before the upstream: see `lyss_fuzz::chat_request`.
//! Mutations are JSON-aware half the time: see `lyss_fuzz::mutate_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lyss_fuzz::chat_request(data);
});

lyss_fuzz::json_mutator!(include_str!("../dict/chat_request.dict"));
