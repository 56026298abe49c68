//! An OpenAI chat request from arbitrary bytes, then everything lyss does with one before the
//! upstream: cache keys, the semantic partition, token counting, and the Anthropic and Gemini
//! translations. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lyss_core::openai::ChatRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<ChatRequest>(data) else {
        return;
    };
    let _ = lyss_core::cache::exact_key("w:1:", "m", &req);
    let _ = lyss_core::cache::semantic_partition("w:1:", "m", &req);
    let _ = lyss_core::tokens::count_request("gpt-4o-mini", &req);
    if let Ok(m) = lyss_core::anthropic::request_from_openai(&req, 4096) {
        let _ = serde_json::to_vec(&m);
    }
    let _ = lyss_core::provider::gemini::request_from_openai(&req);
});
