//! Arbitrary bytes as upstream answers through every response translation: see `lyss_fuzz::vendor_responses`.
//! Mutations are JSON-aware half the time: see `lyss_fuzz::mutate_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lyss_fuzz::vendor_responses(data);
});

lyss_fuzz::json_mutator!(include_str!("../dict/vendor_responses.dict"));
