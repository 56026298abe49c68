//! Upstream answers from arbitrary bytes through every response translation: Anthropic's
//! Messages answer and Gemini's `generateContent` answer into OpenAI's shape, and OpenAI's
//! answer into Anthropic's (the inbound `/v1/messages` path). None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lyss_core::anthropic::{MessagesResponse, response_from_openai, response_to_openai};
use lyss_core::openai::ChatResponse;

fuzz_target!(|data: &[u8]| {
    if let Ok(resp) = serde_json::from_slice::<MessagesResponse>(data) {
        let chat = response_to_openai(resp, 1);
        let _ = serde_json::to_vec(&response_from_openai(&chat, "m"));
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let chat = lyss_core::provider::gemini::response_to_openai(&value, 1);
        let _ = serde_json::to_vec(&chat);
    }
    if let Ok(chat) = serde_json::from_slice::<ChatResponse>(data) {
        let _ = serde_json::to_vec(&response_from_openai(&chat, "m"));
    }
});
