//! Long-term memory in a Rust app, without the server: remember what a user said, then recall
//! what matters for a new question.
//!
//! Uses the local embedding model when `scripts/fetch-models.sh` has fetched it, and keyword
//! retrieval otherwise. The store is a throwaway SQLite database.

use std::sync::Arc;

use lyss_core::embed::{Embedder, LocalEmbedder};
use lyss_core::memory::{MemoryScope, MemoryStore as _, NewMemory, SearchQuery, SqliteMemoryStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let embedder: Option<Arc<dyn Embedder>> =
        match tokio::task::spawn_blocking(LocalEmbedder::load_default).await? {
            Ok(model) => Some(Arc::new(model)),
            Err(e) => {
                eprintln!("keyword retrieval only: {e}");
                None
            }
        };
    let store = SqliteMemoryStore::connect("sqlite::memory:", embedder).await?;
    let ada = MemoryScope::user("research", "ada");
    for text in [
        "I'm a Python developer.",
        "I like short answers.",
        "My cat is called Turing.",
    ] {
        let new = NewMemory {
            text: text.into(),
            source: Some("example".into()),
            occurred_at: None,
            ..NewMemory::default()
        };
        store.add(&ada, &new).await?;
    }
    let query = SearchQuery {
        text: "Which language should I use for a quick script?".into(),
        limit: 2,
        min_similarity: 0.2,
    };
    for hit in store.search(&ada, &query).await? {
        println!("{:.3}  {}", hit.score, hit.memory.text);
    }
    // Another user of the same workspace sees none of it.
    let bob = MemoryScope::user("research", "bob");
    assert!(store.search(&bob, &query).await?.is_empty());
    Ok(())
}
