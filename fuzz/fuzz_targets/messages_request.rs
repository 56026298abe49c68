//! An Anthropic Messages request from arbitrary bytes, translated to a chat request (the
//! inbound `/v1/messages` path) and back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lyss_core::anthropic::{MessagesRequest, request_from_openai, request_to_openai};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<MessagesRequest>(data) else {
        return;
    };
    if let Ok(chat) = request_to_openai(req) {
        let _ = request_from_openai(&chat, 1024);
    }
});
