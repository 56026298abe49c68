//! Upstream event streams from arbitrary bytes, framed as lyss frames them, through every
//! translator: Anthropic events →
//! OpenAI chunks → Anthropic events again (the inbound path), Gemini events → chunks, and
//! OpenAI chunks gathered into a cacheable answer and replayed. None may panic.
#![no_main]

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use libfuzzer_sys::fuzz_target;
use lyss_core::anthropic::{StreamFromOpenAi, StreamToOpenAi};
use lyss_core::cache::answer::{Collector, replay};
use lyss_core::openai::ChatChunk;

fuzz_target!(|data: &[u8]| {
    // The body arrives in three network reads, split where the input's first two bytes say:
    // the SSE framing (the same `eventsource-stream` lyss reads upstreams with) must cope
    // with events, lines and UTF-8 characters cut anywhere.
    let (a, b) = match data {
        [x, y, rest @ ..] => {
            let n = rest.len().max(1);
            let (i, j) = (*x as usize % n, *y as usize % n);
            (i.min(j).min(rest.len()), i.max(j).min(rest.len()))
        }
        _ => return,
    };
    let rest = &data[2..];
    let reads: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(rest[..a].to_vec()), Ok(rest[a..b].to_vec()), Ok(rest[b..].to_vec())];
    let events: Vec<_> = futures::executor::block_on(
        futures::stream::iter(reads).eventsource().collect::<Vec<_>>(),
    );
    let mut anthropic = StreamToOpenAi::new(1, true);
    let mut back = StreamFromOpenAi::new("m");
    let mut gemini = lyss_core::provider::gemini::StreamToOpenAi::new(1, true);
    let mut collected = Collector::default();
    for event in events {
        let Ok(event) = event else {
            break;
        };
        let (name, payload) = (event.event.as_str(), &event.data);
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
