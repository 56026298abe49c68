//! The memory conformance suite against SQLite + in-process HNSW, with the deterministic hash
//! embedder and with the real local model (required when `CI=true`); restarts keep memories.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod hash {
    lyss_core::memory_conformance!(async {
        Some(std::sync::Arc::new(
            lyss_core::memory::SqliteMemoryStore::connect(
                "sqlite::memory:",
                Some(std::sync::Arc::new(lyss_core::embed::HashEmbedder::new(
                    256,
                ))),
            )
            .await
            .expect("open"),
        )
            as std::sync::Arc<dyn lyss_core::memory::MemoryStore>)
    });
}

#[cfg(feature = "local-embeddings")]
mod local_model {
    lyss_core::memory_conformance!(async {
        let embedder = lyss_core::testing::services::local_embedder().await?;
        Some(std::sync::Arc::new(
            lyss_core::memory::SqliteMemoryStore::connect("sqlite::memory:", Some(embedder))
                .await
                .expect("open"),
        )
            as std::sync::Arc<dyn lyss_core::memory::MemoryStore>)
    });
}

mod keywords_only {
    lyss_core::memory_conformance!(async {
        Some(std::sync::Arc::new(
            lyss_core::memory::SqliteMemoryStore::connect("sqlite::memory:", None)
                .await
                .expect("open"),
        )
            as std::sync::Arc<dyn lyss_core::memory::MemoryStore>)
    });
}

#[tokio::test]
async fn a_restart_keeps_every_memory_and_answers_the_same_searches() {
    use lyss_core::memory::{
        MemoryScope, MemoryStore as _, NewMemory, SearchQuery, SqliteMemoryStore,
    };
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lyss.db").display());
    let embedder = Arc::new(lyss_core::embed::HashEmbedder::new(256));
    let ann = MemoryScope::user("ws", "ann");
    let q = SearchQuery {
        text: "what language does ann write".into(),
        limit: 3,
        min_similarity: 0.0,
    };
    let before = {
        let store = SqliteMemoryStore::connect(&url, Some(embedder.clone()))
            .await
            .unwrap();
        for i in 0..200 {
            let text = if i == 77 {
                "Ann writes Rust and Python".to_string()
            } else {
                format!("note number {i} about the weather")
            };
            store
                .add(
                    &ann,
                    &NewMemory {
                        text,
                        ..NewMemory::default()
                    },
                )
                .await
                .unwrap();
        }
        store.search(&ann, &q).await.unwrap()
    };
    let store = SqliteMemoryStore::connect(&url, Some(embedder))
        .await
        .unwrap();
    let after = store.search(&ann, &q).await.unwrap();
    assert_eq!(store.list(&ann, 1000).await.unwrap().len(), 200);
    let ids =
        |h: &[lyss_core::memory::Hit]| h.iter().map(|h| h.memory.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&before), ids(&after));
    assert_eq!(after[0].memory.text, "Ann writes Rust and Python");
}

#[tokio::test]
async fn a_crash_between_the_answer_and_ingestion_loses_no_turn() {
    use lyss_core::memory::{
        MemoryScope, MemoryStore as _, NewMemory, Outbox as _, SqliteMemoryStore,
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lyss.db").display());
    let ann = MemoryScope::user("ws", "ann");
    {
        // The request path queues the turn before answering; then the process dies.
        let store = SqliteMemoryStore::connect(&url, None).await.unwrap();
        store
            .enqueue(
                &ann,
                &[NewMemory {
                    text: "I moved to Lyon last spring.".into(),
                    ..NewMemory::default()
                }],
                None,
            )
            .await
            .unwrap();
    }
    let store = SqliteMemoryStore::connect(&url, None).await.unwrap();
    assert_eq!(store.ingest_pending(10, 0.92).await.unwrap(), 1);
    assert_eq!(
        store.list(&ann, 10).await.unwrap()[0].text,
        "I moved to Lyon last spring."
    );
    assert_eq!(
        store.ingest_pending(10, 0.92).await.unwrap(),
        0,
        "taken exactly once"
    );
}

/// The embedder's inputs, recorded (a real embedder underneath).
struct Recording {
    inner: lyss_core::embed::HashEmbedder,
    seen: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl lyss_core::embed::Embedder for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    async fn embed(&self, texts: &[String]) -> lyss_core::Result<Vec<Vec<f32>>> {
        self.seen.lock().unwrap().extend_from_slice(texts);
        self.inner.embed(texts).await
    }
}

#[tokio::test]
async fn a_search_embeds_its_query_without_the_words_most_memories_say_once_prepared_ahead() {
    use lyss_core::embed::{CachedEmbedder, HashEmbedder};
    use lyss_core::memory::{
        MemoryScope, MemoryStore as _, NewMemory, SearchQuery, SqliteMemoryStore,
    };
    use std::sync::Arc;
    let recording = Arc::new(Recording {
        inner: HashEmbedder::new(256),
        seen: Default::default(),
    });
    let store = SqliteMemoryStore::connect(
        "sqlite::memory:",
        Some(Arc::new(CachedEmbedder::new(recording.clone(), 1 << 20))),
    )
    .await
    .unwrap();
    let ann = MemoryScope::user("ws", "ann");
    for i in 0..60 {
        let text = if i == 30 {
            "We went camping with the kids".to_string()
        } else {
            format!("Thanks, Caroline! That was note {i}")
        };
        let new = NewMemory {
            text,
            ..NewMemory::default()
        };
        store.add(&ann, &new).await.unwrap();
    }
    let asked = "What does Caroline do with her kids?";
    recording.seen.lock().unwrap().clear();
    store.prepare_search(&ann, asked).await.unwrap();
    // "Caroline" is in 59 of 60 memories: left out of what is embedded.
    let embedded = vec!["What does  do with her kids?".to_owned()];
    assert_eq!(*recording.seen.lock().unwrap(), embedded);
    let q = SearchQuery {
        text: asked.into(),
        limit: 3,
        min_similarity: 0.0,
    };
    let hits = store.search(&ann, &q).await.unwrap();
    // The search found the vector ready; its keywords still count every word.
    assert_eq!(*recording.seen.lock().unwrap(), embedded);
    assert_eq!(hits[0].memory.text, "We went camping with the kids");
}

#[tokio::test]
async fn a_question_naming_one_side_ranks_that_sides_turns_as_stored_and_after_a_restart() {
    use lyss_core::memory::{
        MemoryScope, MemoryStore as _, NewMemory, SearchQuery, SqliteMemoryStore, TurnRole,
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lyss.db").display());
    let ann = MemoryScope::user("ws", "ann");
    // The assistant praises Melanie's painting every fifth turn (the name and the word: the
    // best keyword matches); she says once what she painted.
    let mut turns = Vec::new();
    for i in 0..50_u32 {
        let said = match i {
            22 => "I painted a sunrise over the lake".to_owned(),
            _ => format!("note {i} about my day"),
        };
        let answer = match i {
            _ if i % 5 == 0 => format!("Wow, Melanie! Your painting {i} is lovely"),
            _ => format!("Reply {i} about your day"),
        };
        for (role, text) in [(TurnRole::User, said), (TurnRole::Assistant, answer)] {
            turns.push(NewMemory {
                text,
                role: Some(role),
                position: Some(turns.len() as u32),
                ..NewMemory::default()
            });
        }
    }
    let q = SearchQuery {
        text: "What did Melanie paint?".into(),
        limit: 5,
        min_similarity: 2.0,
    };
    let roles =
        |hits: Vec<lyss_core::memory::Hit>| hits.iter().map(|h| h.memory.role).collect::<Vec<_>>();
    let before = {
        let store = SqliteMemoryStore::connect(&url, None).await.unwrap();
        store.add_turns(&ann, &turns).await.unwrap();
        roles(store.search(&ann, &q).await.unwrap())
    };
    let store = SqliteMemoryStore::connect(&url, None).await.unwrap();
    let after = roles(store.search(&ann, &q).await.unwrap());
    // Melanie's own turns first: the one that says what she painted, and those that answer the
    // praise (they hold its words as context).
    assert_eq!(before[..3], [Some(TurnRole::User); 3], "{before:?}");
    assert_eq!(after, before);
}
