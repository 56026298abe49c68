//! The fuzz targets' bodies, one function per target (`fuzz_targets/<name>.rs` only hands
//! libFuzzer's bytes to it). None may panic, whatever the bytes. Each returns whether its
//! parsers accepted the input, so that the seed test below can tell a seed that still
//! reaches the translations from one a type change has made useless.

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use lyss_core::anthropic::{
    MessagesRequest, MessagesResponse, StreamFromOpenAi, StreamToOpenAi, request_from_openai,
    request_to_openai, response_from_openai, response_to_openai,
};
use lyss_core::cache::answer::{Collector, replay};
use lyss_core::openai::{ChatChunk, ChatRequest, ChatResponse};

/// An OpenAI chat request, then everything lyss does with one before the upstream: cache
/// keys, the semantic partition, token counting, and the Anthropic and Gemini translations.
pub fn chat_request(data: &[u8]) -> bool {
    let Ok(req) = serde_json::from_slice::<ChatRequest>(data) else {
        return false;
    };
    let _ = lyss_core::cache::exact_key("w:1:", "m", &req);
    let _ = lyss_core::cache::semantic_partition("w:1:", "m", &req);
    let _ = lyss_core::tokens::count_request("gpt-4o-mini", &req);
    if let Ok(m) = request_from_openai(&req, 4096) {
        let _ = serde_json::to_vec(&m);
    }
    let _ = lyss_core::provider::gemini::request_from_openai(&req);
    true
}

/// An Anthropic Messages request, translated to a chat request (the inbound `/v1/messages`
/// path) and back.
pub fn messages_request(data: &[u8]) -> bool {
    let Ok(req) = serde_json::from_slice::<MessagesRequest>(data) else {
        return false;
    };
    if let Ok(chat) = request_to_openai(req) {
        let _ = request_from_openai(&chat, 1024);
    }
    true
}

/// An upstream event stream, framed as lyss frames them, through every translator: Anthropic
/// events → OpenAI chunks → Anthropic events again (the inbound path), Gemini events →
/// chunks, and OpenAI chunks gathered into a cacheable answer and replayed. Accepted when
/// some event was read by one of them.
pub fn stream_translators(data: &[u8]) -> bool {
    // The body arrives in three network reads, split where the input's first two bytes say:
    // the SSE framing (the same `eventsource-stream` lyss reads upstreams with) must cope
    // with events, lines and UTF-8 characters cut anywhere.
    let (a, b) = match data {
        [x, y, rest @ ..] => {
            let n = rest.len().max(1);
            let (i, j) = (*x as usize % n, *y as usize % n);
            (i.min(j).min(rest.len()), i.max(j).min(rest.len()))
        }
        _ => return false,
    };
    let rest = &data[2..];
    let reads: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(rest[..a].to_vec()),
        Ok(rest[a..b].to_vec()),
        Ok(rest[b..].to_vec()),
    ];
    let events: Vec<_> = futures::executor::block_on(
        futures::stream::iter(reads)
            .eventsource()
            .collect::<Vec<_>>(),
    );
    let mut anthropic = StreamToOpenAi::new(1, true);
    let mut back = StreamFromOpenAi::new("m");
    let mut gemini = lyss_core::provider::gemini::StreamToOpenAi::new(1, true);
    let mut collected = Collector::default();
    let mut read = false;
    for event in events {
        let Ok(event) = event else {
            break;
        };
        let (name, payload) = (event.event.as_str(), &event.data);
        if let Ok((chunks, _)) = anthropic.on_event(name, payload) {
            read |= !chunks.is_empty();
            for c in &chunks {
                let _ = back.on_chunk(c);
            }
        }
        read |= gemini
            .on_event(payload)
            .is_ok_and(|(chunks, _)| !chunks.is_empty());
        if let Ok(chunk) = serde_json::from_str::<ChatChunk>(payload) {
            collected.push(&chunk);
            read = true;
        }
    }
    let _ = back.finish();
    if let Some(answer) = collected.finish() {
        let _ = replay(&answer, true);
    }
    read
}

/// An upstream answer through every response translation: Anthropic's Messages answer and
/// Gemini's `generateContent` answer into OpenAI's shape, and OpenAI's answer into
/// Anthropic's (the inbound `/v1/messages` path). Accepted when one of the three typed
/// parsers took it (Gemini's is read as untyped JSON, which nearly anything is).
pub fn vendor_responses(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(resp) = serde_json::from_slice::<MessagesResponse>(data) {
        let chat = response_to_openai(resp, 1);
        let _ = serde_json::to_vec(&response_from_openai(&chat, "m"));
        accepted = true;
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let chat = lyss_core::provider::gemini::response_to_openai(&value, 1);
        accepted |= chat.choices.iter().any(|c| c.message.content.is_some());
        let _ = serde_json::to_vec(&chat);
    }
    if let Ok(chat) = serde_json::from_slice::<ChatResponse>(data) {
        let _ = serde_json::to_vec(&response_from_openai(&chat, "m"));
        accepted = true;
    }
    accepted
}

/// A configuration file from arbitrary text.
pub fn config(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|text| toml::from_str::<lyss_core::Config>(text).is_ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    /// Every seed in `corpus/<target>` (and every crash input in `artifacts/<target>`, when a
    /// run left some) goes through its target on the stable toolchain, in CI: a fixed crash
    /// stays fixed, and each seed still gets past the parsers into the code it is there for.
    #[test]
    fn seeds_are_accepted_and_crash_inputs_stay_fixed() {
        type Target = fn(&[u8]) -> bool;
        let targets: [(&str, Target); 5] = [
            ("chat_request", super::chat_request),
            ("messages_request", super::messages_request),
            ("stream_translators", super::stream_translators),
            ("vendor_responses", super::vendor_responses),
            ("config", super::config),
        ];
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (name, target) in targets {
            let seeds = files(&root.join("corpus").join(name));
            assert!(!seeds.is_empty(), "{name} has no seeds");
            for seed in seeds {
                let data = std::fs::read(&seed).unwrap();
                assert!(target(&data), "{} is not accepted", seed.display());
            }
            for crash in files(&root.join("artifacts").join(name)) {
                target(&std::fs::read(&crash).unwrap());
            }
        }
    }

    fn files(dir: &Path) -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        files
    }
}
