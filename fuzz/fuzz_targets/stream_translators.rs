//! Upstream event streams from arbitrary bytes through every translator: Anthropic events →
//! OpenAI chunks → Anthropic events again (the inbound path), Gemini events → chunks, and
//! OpenAI chunks gathered into a cacheable answer and replayed. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lyss_core::anthropic::{StreamFromOpenAi, StreamToOpenAi};
use lyss_core::cache::answer::{Collector, replay};
use lyss_core::openai::ChatChunk;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut anthropic = StreamToOpenAi::new(1, true);
    let mut back = StreamFromOpenAi::new("m");
    let mut gemini = lyss_core::provider::gemini::StreamToOpenAi::new(1, true);
    let mut collected = Collector::default();
    for event in text.split("\n\n") {
        let mut name = "";
        let mut payload = String::new();
        for line in event.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim();
            } else if let Some(v) = line.strip_prefix("data:") {
                payload.push_str(v.trim_start());
            }
        }
        if let Ok((chunks, _)) = anthropic.on_event(name, &payload) {
            for c in &chunks {
                let _ = back.on_chunk(c);
            }
        }
        let _ = gemini.on_event(&payload);
        if let Ok(chunk) = serde_json::from_str::<ChatChunk>(&payload) {
            collected.push(&chunk);
        }
    }
    let _ = back.finish();
    if let Some(answer) = collected.finish() {
        let _ = replay(&answer, true);
    }
});
