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
