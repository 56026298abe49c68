//! A custom `Provider` inside a Rust app, with a hard token budget enforced in-process.
//!
//! The provider here is a toy (it answers by echoing the question, in words and as a stream);
//! a real one would call a local model or an in-house service. Everything around it is lyss:
//! keys, allow-lists, the budget reservation before the call, settlement on the reported
//! usage, and the refusal once the budget is spent.
//!
//! `cargo run -p lyss-examples --example custom_provider`

use std::sync::Arc;

use async_trait::async_trait;
use lyss_core::models::{Model, ModelRegistry};
use lyss_core::policy::prelude::*;
use lyss_core::policy::{NewBudget, NewKey, Period, Scope, Unit};
use lyss_core::price::Price;
use lyss_core::provider::ChunkStream;
use lyss_core::wire::{
    ChatChunk, ChatRequest, ChatResponse, ChunkChoice, Content, Delta, EmbeddingsRequest,
    EmbeddingsResponse, Message, Role, Usage,
};
use lyss_core::{Call, ChatBody, Error, Lyss, Provider, Result, SqlitePolicy};

/// Answers "You said: …", counting one token per word.
struct Echo;

fn answer_to(req: &ChatRequest) -> (String, Usage) {
    let question = req
        .messages
        .last()
        .and_then(|m| m.content.as_ref())
        .map(Content::text)
        .unwrap_or_default();
    let answer = format!("You said: {question}");
    let words = |s: &str| s.split_whitespace().count() as u64;
    let usage = Usage {
        prompt_tokens: words(&question),
        completion_tokens: words(&answer),
        total_tokens: words(&question) + words(&answer),
        ..Usage::default()
    };
    (answer, usage)
}

#[async_trait]
impl Provider for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse> {
        let (answer, usage) = answer_to(req);
        Ok(ChatResponse::of(
            "echo-1", &req.model, answer, "stop", usage,
        ))
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<ChunkStream> {
        let (answer, usage) = answer_to(req);
        let chunk = |delta: Delta, finish: Option<&str>, usage: Option<Usage>| ChatChunk {
            id: "echo-1".into(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: req.model.clone(),
            choices: if usage.is_some() {
                Vec::new()
            } else {
                vec![ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish.map(str::to_owned),
                    extra: Default::default(),
                }]
            },
            usage,
            extra: Default::default(),
        };
        let mut chunks: Vec<Result<ChatChunk>> = answer
            .split_inclusive(' ')
            .map(|w| {
                Ok(chunk(
                    Delta {
                        content: Some(w.to_owned()),
                        ..Delta::default()
                    },
                    None,
                    None,
                ))
            })
            .collect();
        chunks.push(Ok(chunk(Delta::default(), Some("stop"), None)));
        // The pipeline always asks for usage: it bills what the provider reports.
        chunks.push(Ok(chunk(Delta::default(), None, Some(usage))));
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn embeddings(&self, _: &EmbeddingsRequest) -> Result<EmbeddingsResponse> {
        Err(Error::invalid("the echo provider has no embeddings"))
    }

    async fn list_models(&self) -> Result<Vec<String>> {
        Ok(vec!["echo-1".into()])
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let policy = Arc::new(SqlitePolicy::serve("sqlite::memory:").await?);
    policy.create_workspace("lab", &["echo".into()]).await?;
    policy.create_user("ada", "lab").await?;
    let key = policy
        .create_key(&NewKey {
            user: "ada".into(),
            ..NewKey::default()
        })
        .await?;
    // 40 tokens a month for Ada: a few questions, then a refusal.
    policy
        .set_budget(&NewBudget {
            scope: Scope::User,
            target: "ada".into(),
            unit: Unit::Tokens,
            limit: 40,
            period: Period::Monthly,
            tz: None,
            expires_at: None,
        })
        .await?;

    let mut models = ModelRegistry::default();
    models.insert(Model {
        name: "echo".into(),
        aliases: Vec::new(),
        provider: Arc::new(Echo),
        upstream: "echo-1".into(),
        price: Price::per_mtok(0.1, 0.2, 0.1),
        max_output_tokens: Some(20),
    })?;
    let lyss = Lyss::builder(policy).models(models).build();

    let call = Call {
        api_key: key.key.clone(),
        request_id: "example".into(),
        ..Call::default()
    };
    let questions = [
        "hello there",
        "what is a budget",
        "tell me more",
        "and again",
    ];
    for (i, question) in questions.iter().enumerate() {
        let req = ChatRequest {
            model: "echo".into(),
            messages: vec![Message::text(Role::User, *question)],
            stream: Some(i == 1),
            ..ChatRequest::default()
        };
        match lyss.chat(&call, req).await {
            Ok(reply) => {
                let text = match reply.body {
                    ChatBody::Complete(c) => c.text(),
                    ChatBody::Stream(mut s) => {
                        use futures::StreamExt as _;
                        let mut text = String::new();
                        while let Some(chunk) = s.next().await {
                            for c in chunk?.choices {
                                text.push_str(c.delta.content.as_deref().unwrap_or(""));
                            }
                        }
                        text
                    }
                };
                let left = reply
                    .headers
                    .iter()
                    .find(|(h, _)| *h == lyss_core::pipeline::BUDGET_REMAINING_HEADER)
                    .map_or("?", |(_, v)| v.as_str());
                // A stream's headers leave before its answer: they show the budget while the
                // request's reservation (prompt + output cap) holds.
                println!("{question:>18} → {text}  (budget left: {left})");
            }
            Err(e) => println!("{question:>18} → refused: {e}"),
        }
    }
    Ok(())
}

// The provider keeps the trait's contract: the suite every provider passes.
#[cfg(test)]
mod conformance {
    lyss_core::provider_conformance!(async {
        Some(std::sync::Arc::new(super::Echo) as std::sync::Arc<dyn lyss_core::Provider>)
    });
}
