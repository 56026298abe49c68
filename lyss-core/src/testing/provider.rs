//! The `Provider` conformance suite: the contract on the trait ([`crate::provider::Provider`])
//! that holds whatever the upstream — a vendor's API behind a fake speaking its wire format
//! (`lyss-core/tests/provider_conformance.rs`, which also checks each vendor's errors), or an
//! app's own provider (the examples' `custom_provider.rs`).
//!
//! The provider under test must answer the same question the same way (fakes do): the suite
//! compares a stream with a whole answer.

use std::sync::Arc;

use futures::StreamExt as _;

use crate::error::Error;
use crate::provider::Provider;
use crate::wire::{ChatRequest, EmbeddingVector, EmbeddingsRequest, Usage};

/// Generates one test per case for a provider, given an `async` block that returns
/// `Some(Arc<dyn Provider>)`, or `None` to skip.
#[macro_export]
macro_rules! provider_conformance {
    ($factory:expr) => {
        $crate::provider_conformance!(@cases $factory;
            a_whole_answer_has_text_and_a_finish_reason,
            a_stream_says_what_the_whole_answer_says_then_its_usage,
            calls_share_the_provider_across_tasks,
            embeddings_are_one_vector_per_input_or_a_clear_refusal,
            the_model_list_names_each_model_once,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(provider): Option<::std::sync::Arc<dyn $crate::provider::Provider>> = $factory.await else {
                    return;
                };
                $crate::testing::provider::$case(provider).await;
            }
        )+
    };
}

/// The suite's question, as the pipeline sends it (usage asked for on a stream).
pub fn question(stream: bool) -> ChatRequest {
    serde_json::from_value(serde_json::json!({
        "model": "up-model",
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": stream,
        "stream_options": if stream { serde_json::json!({"include_usage": true}) } else { serde_json::Value::Null },
    }))
    .expect("a chat request")
}

/// A whole answer's text, finish reasons and usage.
async fn whole(provider: &dyn Provider) -> (String, Vec<String>, Option<Usage>) {
    let answer = provider.chat(&question(false)).await.expect("chat");
    assert!(!answer.choices.is_empty(), "an answer has a choice");
    let text = answer
        .choices
        .iter()
        .filter_map(|c| c.message.content.as_ref().map(|c| c.text()))
        .collect();
    let finish = answer
        .choices
        .iter()
        .filter_map(|c| c.finish_reason.clone())
        .collect();
    (text, finish, answer.usage)
}

pub async fn a_whole_answer_has_text_and_a_finish_reason(provider: Arc<dyn Provider>) {
    let (text, finish, usage) = whole(provider.as_ref()).await;
    assert!(!text.is_empty(), "the answer says something");
    assert_eq!(finish, ["stop"]);
    if let Some(u) = usage {
        assert!(
            u.completion_tokens > 0,
            "an answer that says something used tokens: {u:?}"
        );
    }
}

pub async fn a_stream_says_what_the_whole_answer_says_then_its_usage(provider: Arc<dyn Provider>) {
    let (answer, _, whole_usage) = whole(provider.as_ref()).await;
    let mut stream = provider.chat_stream(&question(true)).await.expect("stream");
    let (mut text, mut finish, mut usage) = (String::new(), Vec::new(), None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("a chunk");
        // Usage comes last: nothing is said after it.
        assert!(usage.is_none(), "a chunk after the usage chunk: {chunk:?}");
        for c in &chunk.choices {
            text.extend(c.delta.content.as_deref());
            finish.extend(c.finish_reason.clone());
        }
        usage = chunk.usage;
    }
    assert_eq!(text, answer, "the stream, in order, is the answer");
    assert_eq!(finish, ["stop"], "one finish reason");
    // Usage was asked for; a provider passes on what its upstream reports and invents none,
    // so a stream reports what the same whole answer reports.
    if let Some(whole_usage) = whole_usage {
        let usage = usage.expect("the usage chunk asked for");
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (whole_usage.prompt_tokens, whole_usage.completion_tokens)
        );
    }
}

pub async fn calls_share_the_provider_across_tasks(provider: Arc<dyn Provider>) {
    let (answer, _, _) = whole(provider.as_ref()).await;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let provider = provider.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    whole(provider.as_ref()).await.0
                } else {
                    let mut stream = provider.chat_stream(&question(true)).await.expect("stream");
                    let mut text = String::new();
                    while let Some(chunk) = stream.next().await {
                        for c in &chunk.expect("a chunk").choices {
                            text.extend(c.delta.content.as_deref());
                        }
                    }
                    text
                }
            })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.expect("join"),
            answer,
            "no call sees another's state"
        );
    }
}

pub async fn embeddings_are_one_vector_per_input_or_a_clear_refusal(provider: Arc<dyn Provider>) {
    let req: EmbeddingsRequest =
        serde_json::from_value(serde_json::json!({"model": "up-model", "input": "hello"}))
            .expect("an embeddings request");
    match provider.embeddings(&req).await {
        Ok(out) => {
            assert_eq!(out.data.len(), 1, "one vector for one input");
            match &out.data[0].embedding {
                EmbeddingVector::Float(v) => assert!(!v.is_empty(), "a vector has dimensions"),
                other => panic!("floats were asked for: {other:?}"),
            }
        }
        // A provider without embeddings says so as the caller's error (400), not a failure.
        Err(Error::InvalidRequest { .. }) => {}
        Err(other) => panic!("neither embeddings nor a clear refusal: {other:?}"),
    }
}

pub async fn the_model_list_names_each_model_once(provider: Arc<dyn Provider>) {
    let models = provider.list_models().await.expect("models");
    assert!(models.iter().all(|m| !m.is_empty()), "{models:?}");
    let mut unique = models.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), models.len(), "each model once: {models:?}");
}
