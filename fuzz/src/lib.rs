//! The fuzz targets' bodies, one function per target (`fuzz_targets/<name>.rs` only hands
//! libFuzzer's bytes to it). None may panic, whatever the bytes. Each returns whether its
//! parsers accepted the input, so that the seed test below can tell a seed that still
//! reaches the translations from one a type change has made useless. The JSON targets'
//! structure-aware mutator ([`mutate_json`], [`json_mutator!`]) lives here too.

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use lyss_core::cache::answer::{Collector, replay};
use lyss_core::dialects::messages::{StreamFromOpenAi, request_to_openai, response_from_openai};
use lyss_core::provider::anthropic::{
    MessagesRequest, MessagesResponse, StreamToOpenAi, request_from_openai, response_to_openai,
};
use lyss_core::wire::{ChatChunk, ChatRequest, ChatResponse};
use serde_json::Value;

/// An OpenAI chat request, then everything lyss does with one before the upstream: cache
/// keys, the semantic partition, token counting, and the Anthropic (with its cache
/// breakpoints) and Gemini translations.
pub fn chat_request(data: &[u8]) -> bool {
    let Ok(req) = serde_json::from_slice::<ChatRequest>(data) else {
        return false;
    };
    let _ = lyss_core::cache::exact_key("w:1:", "m", &req);
    let _ = lyss_core::cache::semantic_partition("w:1:", "m", "e", &req);
    let _ = lyss_core::tokens::count_request("gpt-4o-mini", &req);
    if let Ok(mut m) = request_from_openai(&req, 4096) {
        lyss_core::provider::anthropic::mark_cache_breakpoints(&req, &mut m);
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
    if let Ok((chat, _dropped)) = request_to_openai(req) {
        let _ = request_from_openai(&chat, 1024);
    }
    true
}

/// The Responses API both ways: a client's Responses request translated to a chat request
/// (the inbound `/v1/responses` path) and on to an upstream Responses request; and the same
/// bytes as an upstream's Responses answer and as one of its stream events, translated to a
/// completion and chunks. Accepted when one of the parsers took the input.
pub fn responses_request(data: &[u8]) -> bool {
    use lyss_core::dialects::responses::{
        Echo, ResponsesRequest, StreamToResponses, from_chat, output_message, to_chat,
    };
    use lyss_core::provider::openai::responses::{
        StreamToChat, chat_from_response, request_from_chat,
    };
    let mut accepted = false;
    if let Ok(req) = serde_json::from_slice::<ResponsesRequest>(data) {
        accepted = true;
        let mut tools = Default::default();
        if let Ok(t) = to_chat(&req, Vec::new()) {
            let _ = serde_json::to_vec(&request_from_chat(&t.chat));
            let _ = lyss_core::tokens::count_request("gpt-4o-mini", &t.chat);
            tools = t.tools;
        }
        let echo = Echo::new(&req, 0, tools);
        let mut stream = StreamToResponses::new(echo.clone());
        let _ = stream.finish();
        let answer = r#"{"choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "x", "tool_calls": [{"id": "c"}]}}]}"#;
        if let Ok(answer) = serde_json::from_str::<ChatResponse>(answer) {
            let _ = from_chat(&answer, &echo);
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        accepted = accepted || v.is_object();
        let answer = chat_from_response(&v);
        let _ = serde_json::to_vec(&answer);
        let _ = output_message(&v);
        let mut chunks = StreamToChat::new(true);
        let kind = v["type"].as_str().unwrap_or("").to_owned();
        let _ = chunks.on_event(&kind, &v);
        let _ = chunks.on_event("response.completed", &v);
    }
    accepted
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

/// Makes a target's mutations JSON-aware half the time ([`mutate_json`], with the words of the
/// dictionary text given), the other half libFuzzer's own.
#[macro_export]
macro_rules! json_mutator {
    ($dict:expr) => {
        static WORDS: std::sync::LazyLock<Vec<serde_json::Value>> =
            std::sync::LazyLock::new(|| $crate::dict_values($dict));

        libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
            $crate::mutate_json(data, size, max_size, seed, &WORDS)
                .unwrap_or_else(|| libfuzzer_sys::fuzzer_mutate(data, size, max_size))
        });
    };
}

/// The JSON strings, numbers and literals in a libFuzzer dictionary (`"\"role\""` is the string
/// `role`): the words [`mutate_json`] puts into documents.
pub fn dict_values(dict: &str) -> Vec<Value> {
    dict.lines()
        .filter_map(|line| line.trim().strip_prefix('"')?.strip_suffix('"'))
        .map(|entry| {
            entry
                .replace("\\\\", "\u{0}")
                .replace("\\\"", "\"")
                .replace('\u{0}', "\\")
        })
        .filter_map(|token| serde_json::from_str::<Value>(&token).ok())
        .filter(|v| !v.is_object() && !v.is_array())
        .collect()
}

/// A structure-aware mutation for targets that read JSON, or `None` to leave the step to
/// libFuzzer's byte mutations. Byte mutations seldom turn `"text"` into `1.5` or `[]` inside a
/// document that still parses, yet each derived deserializer branches on every field × JSON
/// type, duplicate and absence; those branches were where coverage still crept up after hours.
/// So one node of the parsed document is swapped for a value of another type, wrapped, or
/// given (or stripped of) a member named by the dictionary, and the document written back.
pub fn mutate_json(
    data: &mut [u8],
    size: usize,
    max_size: usize,
    seed: u32,
    words: &[Value],
) -> Option<usize> {
    let mut rng = fastrand::Rng::with_seed(seed.into());
    if rng.bool() {
        return None;
    }
    let mut doc = serde_json::from_slice::<Value>(data.get(..size)?).ok()?;
    let nodes = count_nodes(&doc);
    let node = nth_node(&mut doc, &mut rng.usize(..nodes))?;
    let word = |rng: &mut fastrand::Rng| words.get(rng.usize(..words.len().max(1))).cloned();
    let any = |rng: &mut fastrand::Rng| match rng.u8(..12) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => u64::MAX.into(),
        3 => i64::MIN.into(),
        4 => (-1).into(),
        5 => 1.5.into(),
        6 => 1e300.into(),
        7 => "é\n\u{1}".into(),
        8 => Value::Array(Vec::new()),
        9 => Value::Object(serde_json::Map::new()),
        _ => word(rng).unwrap_or_default(),
    };
    match (rng.u8(..4), node) {
        (0, Value::Object(map)) if !map.is_empty() => {
            let key = map.keys().nth(rng.usize(..map.len()))?.clone();
            map.remove(&key);
        }
        (1, Value::Object(map)) => {
            let key = match word(&mut rng) {
                Some(Value::String(key)) => key,
                _ => "type".to_owned(),
            };
            map.insert(key, any(&mut rng));
        }
        (0 | 1, Value::Array(items)) if !items.is_empty() => {
            let i = rng.usize(..items.len());
            if rng.bool() {
                items.remove(i);
            } else {
                items.push(items[i].clone());
            }
        }
        (2, node) => {
            let inner = node.take();
            *node = match word(&mut rng) {
                Some(Value::String(key)) if rng.bool() => serde_json::json!({ key: inner }),
                _ => Value::Array(vec![inner]),
            };
        }
        (_, node) => *node = any(&mut rng),
    }
    let out = serde_json::to_vec(&doc)
        .ok()
        .filter(|out| out.len() <= max_size)?;
    data.get_mut(..out.len())?.copy_from_slice(&out);
    Some(out.len())
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// The `n`th node in pre-order.
fn nth_node<'v>(v: &'v mut Value, n: &mut usize) -> Option<&'v mut Value> {
    if *n == 0 {
        return Some(v);
    }
    *n -= 1;
    match v {
        Value::Array(items) => items.iter_mut().find_map(|c| nth_node(c, n)),
        Value::Object(map) => map.values_mut().find_map(|c| nth_node(c, n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use serde_json::{Value, json};

    /// Every seed in `corpus/<target>` (and every crash input in `artifacts/<target>`, when a
    /// run left some) goes through its target on the stable toolchain, in CI: a fixed crash
    /// stays fixed, and each seed still gets past the parsers into the code it is there for.
    #[test]
    fn seeds_are_accepted_and_crash_inputs_stay_fixed() {
        type Target = fn(&[u8]) -> bool;
        let targets: [(&str, Target); 6] = [
            ("chat_request", super::chat_request),
            ("messages_request", super::messages_request),
            ("responses_request", super::responses_request),
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

    /// The JSON-aware mutator leaves half the steps to libFuzzer, and otherwise writes back a
    /// document that still parses and (nearly always) differs; non-JSON is never its to touch.
    #[test]
    fn json_mutations_keep_documents_parseable_and_change_them() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dict = std::fs::read_to_string(root.join("dict/vendor_responses.dict")).unwrap();
        let words = super::dict_values(&dict);
        for word in [json!("candidates"), json!(""), json!(null), json!(1e308)] {
            assert!(words.contains(&word), "{word} is missing from {words:?}");
        }
        let doc = std::fs::read(root.join("corpus/vendor_responses/gemini.json")).unwrap();
        let original: Value = serde_json::from_slice(&doc).unwrap();
        let (mut applied, mut changed) = (0, 0);
        for seed in 0..400 {
            let mut buf = doc.clone();
            buf.resize(4096, 0);
            let Some(n) = super::mutate_json(&mut buf, doc.len(), 4096, seed, &words) else {
                continue;
            };
            applied += 1;
            let mutated: Value = serde_json::from_slice(&buf[..n]).unwrap();
            changed += usize::from(mutated != original);
            let mut text = *b"not json";
            assert_eq!(super::mutate_json(&mut text, 8, 8, seed, &words), None);
            // The same step with room for 16 bytes only: a longer result is left to libFuzzer.
            let mut small = doc.clone();
            let fits = super::mutate_json(&mut small, doc.len(), 16, seed, &words);
            assert_eq!(fits, Some(n).filter(|&n| n <= 16), "seed {seed}");
        }
        assert!((100..300).contains(&applied), "{applied} of 400 applied");
        assert!(
            changed * 10 > applied * 8,
            "{changed} of {applied} changed the document"
        );
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
