//! Arbitrary bytes as upstream answers through every response translation: see `lyss_fuzz::vendor_responses`.
//! Mutations are JSON-aware half the time (`lyss_fuzz::mutate_json`), with the dictionary's words.
#![no_main]

use std::sync::LazyLock;

static WORDS: LazyLock<Vec<serde_json::Value>> =
    LazyLock::new(|| lyss_fuzz::dict_values(include_str!("../dict/vendor_responses.dict")));

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lyss_fuzz::vendor_responses(data);
});

libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    lyss_fuzz::mutate_json(data, size, max_size, seed, &WORDS)
        .unwrap_or_else(|| libfuzzer_sys::fuzzer_mutate(data, size, max_size))
});
