//! [`crate::memory::Outbox`]: turns queued, claimed fairly, each by one worker.

use std::sync::Arc;

use super::new;
use crate::memory::{MemoryScope, MemoryStore, NewMemory};

pub async fn queued_turns_are_claimed_by_one_worker_at_a_time(store: Arc<dyn MemoryStore>) {
    use std::time::Duration;
    let ann = MemoryScope::user("ws", "ann");
    let lease = Duration::from_secs(60);
    for i in 0..3 {
        // The first came through a key, the others did not (an import).
        let key = (i == 0).then_some("key-1");
        store
            .enqueue(&ann, &[new(&format!("turn {i}"))], key)
            .await
            .expect("enqueue");
    }
    let texts =
        |q: &[crate::memory::Queued]| q.iter().map(|q| q.turn.text.clone()).collect::<Vec<_>>();
    let first = store.claim(2, lease).await.expect("claim");
    assert_eq!(texts(&first), ["turn 0", "turn 1"], "oldest first");
    assert_eq!(first[0].key_id.as_deref(), Some("key-1"));
    assert_eq!(first[1].key_id, None);
    let second = store.claim(10, lease).await.expect("claim");
    assert_eq!(
        texts(&second),
        ["turn 2"],
        "claimed turns are not handed out again"
    );
    // A failed ingestion gives its turn back; the others stay claimed.
    store.release(first[1].id).await.expect("release");
    assert_eq!(
        texts(&store.claim(10, lease).await.expect("claim")),
        ["turn 1"]
    );
    for q in first.iter().chain(&second) {
        store.complete(q.id).await.expect("complete");
    }
    assert!(store.claim(10, lease).await.expect("claim").is_empty());

    // A claimer that died: its lease runs out and the turn comes back.
    store
        .enqueue(&ann, &[new("orphan")], None)
        .await
        .expect("enqueue");
    let orphan = store
        .claim(1, Duration::from_millis(50))
        .await
        .expect("claim");
    assert_eq!(texts(&orphan), ["orphan"]);
    assert!(store.claim(1, lease).await.expect("claim").is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = store.claim(1, lease).await.expect("claim");
    assert_eq!(texts(&again), ["orphan"]);
    store.complete(again[0].id).await.expect("complete");

    // Workers racing over one queue: every turn is taken exactly once.
    for i in 0..40 {
        store
            .enqueue(&ann, &[new(&format!("race {i}"))], None)
            .await
            .expect("enqueue");
    }
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.claim(3, lease).await.expect("claim");
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|q| q.id));
                }
            })
        })
        .collect();
    let mut taken = Vec::new();
    for w in workers {
        taken.extend(w.await.expect("join"));
    }
    let total = taken.len();
    taken.sort_unstable();
    taken.dedup();
    assert_eq!((total, taken.len()), (40, 40), "each turn once");
}

pub async fn one_users_flood_does_not_hold_up_anothers_turns(store: Arc<dyn MemoryStore>) {
    use std::time::Duration;
    let lease = Duration::from_secs(60);
    let (ann, bob) = (
        MemoryScope::user("ws", "ann"),
        MemoryScope::user("ws", "bob"),
    );
    let ann_app = MemoryScope {
        end_user: Some("app-user".into()),
        ..ann.clone()
    };
    let flood: Vec<NewMemory> = (0..50).map(|i| new(&format!("ann {i}"))).collect();
    store.enqueue(&ann, &flood, None).await.expect("enqueue");
    store
        .enqueue(&ann_app, &[new("ann's app user")], None)
        .await
        .expect("enqueue");
    store
        .enqueue(&bob, &[new("bob 0"), new("bob 1")], None)
        .await
        .expect("enqueue");
    // Counted per workspace user, across their end-users; claimed ones still wait.
    assert_eq!(store.waiting(&ann).await.expect("waiting"), 51);
    assert_eq!(store.waiting(&ann_app).await.expect("waiting"), 51);
    assert_eq!(store.waiting(&bob).await.expect("waiting"), 2);
    let texts =
        |q: &[crate::memory::Queued]| q.iter().map(|q| q.turn.text.clone()).collect::<Vec<_>>();
    let first = store.claim(4, lease).await.expect("claim");
    assert_eq!(
        texts(&first),
        ["ann 0", "ann 1", "bob 0", "bob 1"],
        "users take turns; each user's turns in order"
    );
    assert_eq!(store.waiting(&bob).await.expect("waiting"), 2);
    for q in &first {
        store.complete(q.id).await.expect("complete");
    }
    assert_eq!(store.waiting(&bob).await.expect("waiting"), 0);
    let rest = store.claim(100, lease).await.expect("claim");
    assert_eq!(rest.len(), 49);
    assert_eq!(rest[0].turn.text, "ann 2");
    assert!(texts(&rest).contains(&"ann's app user".to_owned()));
}
