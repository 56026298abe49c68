//! Arbitrary bytes as the Responses API both ways: see `lyss_fuzz::responses_request`.
//! Mutations are JSON-aware half the time: see `lyss_fuzz::mutate_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lyss_fuzz::responses_request(data);
});

lyss_fuzz::json_mutator!(include_str!("../dict/responses_request.dict"));
