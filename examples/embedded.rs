//! Embedding lyss-core in a Rust app: a chat through the whole pipeline, in-process, with no
//! HTTP server — your own model behind lyss's keys, budget, memory and ledger.
//!
//! A throwaway SQLite database holds the workspace, user and key; the user's memory is
//! an in-process store (keyword retrieval here: `examples/memory.rs` shows the local embedding
//! model). The model is a `Provider` of the app's own (a real one would call a local model or
//! an in-house service; this one answers from what lyss put in its prompt). Ada says something
//! in one chat; in a new chat her question reaches the model with it recalled.
//!
//! `cargo run -p lyss-examples --example embedded`

use std::sync::Arc;

use async_trait::async_trait;
use lyss_core::config::{MemoryConfig, MemoryMode};
use lyss_core::memory::SqliteMemoryStore;
use lyss_core::models::{Model, ModelRegistry};
use lyss_core::policy::prelude::*;
use lyss_core::policy::{LedgerQuery, NewKey};
use lyss_core::price::Price;
use lyss_core::provider::ChunkStream;
use lyss_core::wire::{
    ChatRequest, ChatResponse, Content, EmbeddingsRequest, EmbeddingsResponse, Message, Role, Usage,
};
use lyss_core::{Call, ChatBody, Error, Lyss, Provider, Result, SqlitePolicy};

/// The app's own model: it answers with the memories lyss recalled into its prompt, if any.
struct Recollection;

#[async_trait]
impl Provider for Recollection {
    fn name(&self) -> &str {
        "in-house"
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse> {
        let texts: Vec<String> = req
            .messages
            .iter()
            .filter_map(|m| m.content.as_ref().map(Content::text))
            .collect();
        // Lyss's memory block is a user message just before the newest user message.
        let recalled: Vec<&str> = req
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .filter_map(|m| m.content.as_ref())
            .flat_map(|c| match c {
                Content::Text(t) if t.starts_with("What you know about the user") => {
                    t.lines().filter(|l| l.starts_with("- ")).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        let answer = match recalled.as_slice() {
            [] => "Noted.".to_owned(),
            lines => format!("From what you told me: {}", lines.join(" ")),
        };
        let words = |s: &str| s.split_whitespace().count() as u64;
        let prompt_tokens = texts.iter().map(|t| words(t)).sum();
        let usage = Usage {
            prompt_tokens,
            completion_tokens: words(&answer),
            total_tokens: prompt_tokens + words(&answer),
            ..Usage::default()
        };
        Ok(ChatResponse::of(
            "in-house-1",
            &req.model,
            answer,
            "stop",
            usage,
        ))
    }

    async fn chat_stream(&self, _: &ChatRequest) -> Result<ChunkStream> {
        Err(Error::invalid("this example's model does not stream"))
    }

    async fn embeddings(&self, _: &EmbeddingsRequest) -> Result<EmbeddingsResponse> {
        Err(Error::invalid("this example's model has no embeddings"))
    }

    async fn list_models(&self) -> Result<Vec<String>> {
        Ok(vec!["recollection-1".into()])
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Governance: a workspace that may use one model, a user, her key (budgets: see
    // `custom_provider.rs`).
    let policy = Arc::new(SqlitePolicy::serve("sqlite::memory:").await?);
    policy
        .create_workspace("research", &["assistant".into()])
        .await?;
    policy.create_user("ada", "research").await?;
    let key = policy
        .create_key(&NewKey {
            user: "ada".into(),
            ..NewKey::default()
        })
        .await?;

    let mut models = ModelRegistry::default();
    models.insert(Model {
        name: "assistant".into(),
        aliases: Vec::new(),
        provider: Arc::new(Recollection),
        upstream: "recollection-1".into(),
        price: Price::per_mtok(1.0, 2.0, 0.1),
        max_output_tokens: Some(200),
    })?;
    // Memory on for every request: a new chat starts with what lyss knows of the user.
    let memory = SqliteMemoryStore::connect("sqlite::memory:", None).await?;
    let lyss = Lyss::builder(policy.clone())
        .models(models)
        .memory(
            Arc::new(memory),
            MemoryConfig {
                enabled: MemoryMode::On,
                ..MemoryConfig::default()
            },
        )
        .build();

    let call = Call {
        api_key: key.key.clone(),
        request_id: "example".into(),
        ..Call::default()
    };
    let ask = |question: &str| ChatRequest {
        model: "assistant".into(),
        messages: vec![Message::text(Role::User, question)],
        ..ChatRequest::default()
    };
    let answer = |body: ChatBody| match body {
        ChatBody::Complete(c) => c.text(),
        ChatBody::Stream(_) => unreachable!("not streamed"),
    };

    // One chat: Ada mentions her cat. Lyss queues the turn for her memory; a server ingests
    // the queue in the background (`lyss-server` does), an app can do it when it likes.
    let said = "My cat is called Turing and he hates Mondays.";
    let reply = lyss.chat(&call, ask(said)).await?;
    println!("ada: {said}\nmodel: {}", answer(reply.body));
    lyss.ingest_pending().await?;

    // A new chat: the question reaches the model with what she said recalled.
    let question = "What is my cat called?";
    let reply = lyss.chat(&call, ask(question)).await?;
    let text = answer(reply.body);
    println!("ada: {question}\nmodel: {text}");
    anyhow::ensure!(
        text.contains("Turing"),
        "the memory did not reach the model"
    );

    // Every request is in the ledger, priced.
    let rows = policy.ledger(&LedgerQuery::default()).await?;
    let spent: i64 = rows.iter().map(|r| r.cost_nusd).sum();
    println!(
        "{} requests in the ledger, {spent} nano-USD spent",
        rows.len()
    );
    Ok(())
}
