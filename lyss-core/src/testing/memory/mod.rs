//! The `MemoryStore` conformance suite; its outbox's cases are in `outbox.rs`.

use std::sync::Arc;

mod outbox;

pub use self::outbox::*;

use crate::error::Error;
use crate::memory::{MemoryScope, MemoryStore, NewMemory, SearchQuery, TurnRole, turn_hash};

/// Generates one test per case for a memory store, given an `async` block that returns a
/// fresh, empty `Some(Arc<dyn MemoryStore>)`, or `None` to skip.
#[macro_export]
macro_rules! memory_conformance {
    ($factory:expr) => {
        $crate::memory_conformance!(@cases $factory;
            add_get_update_delete_with_history,
            scopes_never_see_each_other,
            search_finds_by_meaning_and_by_keyword_within_a_limit,
            forget_removes_everything_of_a_user,
            queued_turns_are_claimed_by_one_worker_at_a_time,
            one_users_flood_does_not_hold_up_anothers_turns,
            conversation_turns_are_remembered_once,
            the_profile_is_the_live_statements_as_corrected,
            a_users_scopes_are_listed_with_their_counts,
            forgetting_one_scope_leaves_the_others,
            a_deleted_memorys_history_stays_in_its_scope,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(store): Option<::std::sync::Arc<dyn $crate::memory::MemoryStore>> = $factory.await else {
                    return;
                };
                $crate::testing::memory::$case(store).await;
            }
        )+
    };
}

pub(super) fn new(text: &str) -> NewMemory {
    NewMemory {
        text: text.into(),
        source: Some("test".into()),
        occurred_at: None,
        ..NewMemory::default()
    }
}

fn query(text: &str, limit: usize) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        limit,
        min_similarity: 0.2,
    }
}

pub async fn add_get_update_delete_with_history(store: Arc<dyn MemoryStore>) {
    let ann = MemoryScope::user("ws", "ann");
    let m = store
        .add(&ann, &new("I am a Python developer."))
        .await
        .expect("add");
    assert_eq!(store.get(&ann, &m.id).await.expect("get").text, m.text);
    let updated = store
        .update(&ann, &m.id, "I am a Rust developer now.")
        .await
        .expect("update");
    assert_eq!(updated.text, "I am a Rust developer now.");
    assert_eq!(updated.source.as_deref(), Some("test"));
    store
        .add(&ann, &new("I like short answers."))
        .await
        .expect("add");
    let listed = store.list(&ann, 10).await.expect("list");
    assert_eq!(listed.len(), 2);
    store.delete(&ann, &m.id).await.expect("delete");
    assert!(matches!(
        store.get(&ann, &m.id).await,
        Err(Error::NotFound(_))
    ));
    let events: Vec<String> = store
        .history(&ann, &m.id)
        .await
        .expect("history")
        .into_iter()
        .map(|h| h.event)
        .collect();
    assert_eq!(events, vec!["add", "update", "delete"]);
    assert!(store.add(&ann, &new("  ")).await.is_err());
}

pub async fn scopes_never_see_each_other(store: Arc<dyn MemoryStore>) {
    let ann = MemoryScope::user("ws", "ann");
    let bob = MemoryScope::user("ws", "bob");
    let ann_in_app = MemoryScope {
        end_user: Some("customer-7".into()),
        ..ann.clone()
    };
    let secret = store
        .add(&ann, &new("My bank PIN is 4321 and I live in Lyon."))
        .await
        .expect("add");
    store
        .add(&ann_in_app, &new("Customer 7 prefers email."))
        .await
        .expect("add");
    store
        .add(&bob, &new("Bob likes chess."))
        .await
        .expect("add");
    for probe in ["bank PIN Lyon", "where does the user live"] {
        let hits = store.search(&bob, &query(probe, 10)).await.expect("search");
        assert!(
            hits.iter().all(|h| !h.memory.text.contains("PIN")),
            "{probe}: {hits:?}"
        );
    }
    assert!(matches!(
        store.get(&bob, &secret.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.update(&bob, &secret.id, "x").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.delete(&bob, &secret.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.history(&bob, &secret.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        store
            .list(&bob, 10)
            .await
            .expect("list")
            .iter()
            .all(|m| m.id != secret.id)
    );
    // A narrowed scope is its own: the app's end-user does not see the user's own memories.
    let narrowed = store.list(&ann_in_app, 10).await.expect("list");
    assert_eq!(narrowed.len(), 1);
    assert!(matches!(
        store.get(&ann_in_app, &secret.id).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        store.get(&ann, &secret.id).await.expect("own").id,
        secret.id
    );
}

pub async fn search_finds_by_meaning_and_by_keyword_within_a_limit(store: Arc<dyn MemoryStore>) {
    let ann = MemoryScope::user("ws", "ann");
    for text in [
        "I am a Python developer working on data pipelines.",
        "I prefer short answers without preamble.",
        "My daughter's name is Léa and she plays the violin.",
        "I moved to Lyon in 2023.",
        "Our team deploys on Kubernetes every Friday.",
    ] {
        store.add(&ann, &new(text)).await.expect("add");
    }
    let hits = store
        .search(&ann, &query("violin lessons for Léa", 3))
        .await
        .expect("search");
    assert_eq!(
        hits[0].memory.text,
        "My daughter's name is Léa and she plays the violin."
    );
    assert!(hits.len() <= 3);
    let by_keyword = store
        .search(&ann, &query("Kubernetes", 1))
        .await
        .expect("search");
    assert_eq!(by_keyword.len(), 1);
    assert!(by_keyword[0].memory.text.contains("Kubernetes"));
    assert!(
        store
            .search(&ann, &query("anything", 0))
            .await
            .expect("search")
            .is_empty()
    );
}

pub async fn forget_removes_everything_of_a_user(store: Arc<dyn MemoryStore>) {
    let ann = MemoryScope::user("ws", "ann");
    let ann_agent = MemoryScope {
        agent: Some("support".into()),
        ..ann.clone()
    };
    let bob = MemoryScope::user("ws", "bob");
    let m = store
        .add(&ann, &new("I am allergic to peanuts."))
        .await
        .expect("add");
    store
        .add(&ann_agent, &new("Ticket 42 is open."))
        .await
        .expect("add");
    store
        .add(&bob, &new("Bob likes chess."))
        .await
        .expect("add");
    assert_eq!(store.forget(&ann).await.expect("forget"), 2);
    assert!(store.list(&ann, 10).await.expect("list").is_empty());
    assert!(store.list(&ann_agent, 10).await.expect("list").is_empty());
    assert!(
        store
            .search(&ann, &query("peanuts allergy", 5))
            .await
            .expect("search")
            .is_empty()
    );
    assert!(matches!(
        store.history(&ann, &m.id).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.list(&bob, 10).await.expect("bob").len(), 1);
}

fn turn(role: TurnRole, position: u32, text: &str) -> NewMemory {
    NewMemory {
        text: text.into(),
        source: Some("req-1".into()),
        role: Some(role),
        position: Some(position),
        ..NewMemory::default()
    }
}

pub async fn conversation_turns_are_remembered_once(store: Arc<dyn MemoryStore>) {
    use std::time::Duration;
    let ann = MemoryScope::user("ws", "ann");
    let said = turn(
        TurnRole::User,
        1,
        "I moved to Lyon with my two cats last spring.",
    );
    let answer = turn(
        TurnRole::Assistant,
        2,
        "Lyon is lovely; the cats must enjoy the light.",
    );
    let hashes = [
        said.turn_hash().expect("a turn"),
        answer.turn_hash().expect("a turn"),
    ];
    assert_eq!(hashes[0], turn_hash(TurnRole::User, &said.text));
    assert!(
        store
            .remembered(&ann, &hashes)
            .await
            .expect("remembered")
            .is_empty()
    );

    let added = store
        .add_turns(&ann, &[said.clone(), answer.clone(), said.clone()])
        .await
        .expect("add turns");
    assert_eq!(added.len(), 2, "a turn given twice is stored once");
    assert_eq!(added[1].role, Some(TurnRole::Assistant));
    assert_eq!(added[1].position, Some(2));
    assert_eq!(
        store
            .remembered(&ann, &hashes)
            .await
            .expect("remembered")
            .len(),
        2
    );
    // Resending the same history stores nothing.
    assert!(
        store
            .add_turns(&ann, &[said.clone(), answer.clone()])
            .await
            .expect("again")
            .is_empty()
    );
    assert_eq!(store.list(&ann, 10).await.expect("list").len(), 2);
    // The same words said by the other side are another turn.
    let echoed = turn(TurnRole::Assistant, 3, &said.text);
    assert_eq!(
        store.add_turns(&ann, &[echoed]).await.expect("echo").len(),
        1
    );

    // Assistant turns are searchable like the user's, and say who said them.
    let found = store
        .search(&ann, &query("cats light Lyon", 5))
        .await
        .expect("search");
    assert!(
        found
            .iter()
            .any(|h| h.memory.role == Some(TurnRole::Assistant) && h.memory.text == answer.text)
    );
    let got = store.get(&ann, &added[0].id).await.expect("get");
    assert_eq!(
        (got.role, got.position, got.source.as_deref()),
        (Some(TurnRole::User), Some(1), Some("req-1"))
    );

    // A long turn becomes consecutive passages, each a piece of it, in order.
    let long_text = (0..40)
        .map(|i| format!("Step {i} of the recipe: stir the sauce gently and taste it again."))
        .collect::<Vec<_>>()
        .join(" ");
    let long = store
        .add_turns(&ann, &[turn(TurnRole::Assistant, 4, &long_text)])
        .await
        .expect("long");
    assert!(long.len() > 1, "one passage for {} bytes", long_text.len());
    let mut rest = long_text.as_str();
    for p in &long {
        assert!(p.text.len() <= 640 && p.position == Some(4));
        let at = rest
            .find(&p.text)
            .expect("each passage is the turn's own text, in order");
        rest = &rest[at + p.text.len()..];
    }

    // Role-less text is no conversation turn.
    assert!(matches!(
        store.add_turns(&ann, &[new("a fact")]).await,
        Err(Error::InvalidRequest { .. })
    ));

    // Queued turns: one queued copy per turn; completing one remembers it.
    let next = turn(TurnRole::User, 5, "My sister Ida visits in June.");
    store
        .enqueue(&ann, &[next.clone(), next.clone()], None)
        .await
        .expect("enqueue");
    store
        .enqueue(&ann, std::slice::from_ref(&next), None)
        .await
        .expect("enqueue again");
    let queued = store
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(queued.len(), 1, "queued once");
    assert_eq!(queued[0].turn, next);
    store.complete(queued[0].id).await.expect("complete");
    let next_hash = next.turn_hash().expect("a turn");
    assert!(
        store
            .remembered(&ann, &[next_hash])
            .await
            .expect("remembered")
            .contains(&next_hash)
    );
    // Raw ingestion stores a queued turn with its role, once.
    let later = turn(
        TurnRole::Assistant,
        6,
        "I hope Ida enjoys the Fête des Lumières.",
    );
    store
        .enqueue(&ann, std::slice::from_ref(&later), Some("key-1"))
        .await
        .expect("enqueue");
    assert_eq!(store.ingest_pending(10, 0.92).await.expect("ingest"), 1);
    store
        .enqueue(&ann, std::slice::from_ref(&later), Some("key-1"))
        .await
        .expect("enqueue again");
    assert_eq!(store.ingest_pending(10, 0.92).await.expect("ingest"), 1);
    let ida: Vec<_> = store
        .list(&ann, 50)
        .await
        .expect("list")
        .into_iter()
        .filter(|m| m.text == later.text)
        .collect();
    assert_eq!(ida.len(), 1);
    assert_eq!(ida[0].role, Some(TurnRole::Assistant));

    // A deleted turn stays deleted when the client sends it again; "forget me" forgets the
    // turns too, so a resent conversation is remembered afresh.
    store.delete(&ann, &added[0].id).await.expect("delete");
    assert!(
        store
            .add_turns(&ann, std::slice::from_ref(&said))
            .await
            .expect("resent")
            .is_empty()
    );
    store.forget(&ann).await.expect("forget");
    assert!(
        store
            .remembered(&ann, &hashes)
            .await
            .expect("remembered")
            .is_empty()
    );
    assert_eq!(
        store.add_turns(&ann, &[said]).await.expect("afresh").len(),
        1
    );
    // Another user's identical turn is theirs.
    let bob = MemoryScope::user("ws", "bob");
    assert_eq!(
        store.add_turns(&bob, &[answer]).await.expect("bob").len(),
        1
    );
}

pub async fn the_profile_is_the_live_statements_as_corrected(store: Arc<dyn MemoryStore>) {
    let ann = MemoryScope::user("ws", "ann");
    let profile = |text: &str| NewMemory {
        profile: true,
        ..new(text)
    };
    let city = store
        .add(&ann, &profile("I live in Lyon."))
        .await
        .expect("add");
    let diet = store
        .add(&ann, &profile("I am vegetarian."))
        .await
        .expect("add");
    store
        .add(&ann, &new("I went hiking on Sunday."))
        .await
        .expect("add");
    store
        .update(&ann, &city.id, "I live in Grenoble.")
        .await
        .expect("update");
    store.delete(&ann, &diet.id).await.expect("delete");
    let texts: Vec<String> = store
        .profile(&ann)
        .await
        .expect("profile")
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, vec!["I live in Grenoble."]);
    let bob = MemoryScope::user("ws", "bob");
    assert!(store.profile(&bob).await.expect("profile").is_empty());
}

pub async fn a_users_scopes_are_listed_with_their_counts(store: Arc<dyn MemoryStore>) {
    let ann = MemoryScope::user("ws", "ann");
    let phone = MemoryScope {
        end_user: Some("ann-phone".into()),
        ..ann.clone()
    };
    let agent = MemoryScope {
        agent: Some("coder".into()),
        ..phone.clone()
    };
    for (scope, n) in [(&phone, 2), (&ann, 1), (&agent, 3)] {
        for i in 0..n {
            store
                .add(scope, &new(&format!("memory {i} of {scope:?}")))
                .await
                .expect("add");
        }
    }
    store
        .add(&MemoryScope::user("ws", "bob"), &new("Bob's"))
        .await
        .expect("add");
    store
        .add(
            &MemoryScope::user("other", "ann"),
            &new("another workspace's ann"),
        )
        .await
        .expect("add");
    let listed = store.scopes("ws", "ann").await.expect("scopes");
    assert_eq!(listed, vec![(ann.clone(), 1), (phone, 2), (agent, 3)]);
    store.forget(&ann).await.expect("forget");
    assert!(store.scopes("ws", "ann").await.expect("scopes").is_empty());
    assert_eq!(store.scopes("ws", "bob").await.expect("scopes").len(), 1);
}

pub async fn forgetting_one_scope_leaves_the_others(store: Arc<dyn MemoryStore>) {
    let ann = MemoryScope::user("ws", "ann");
    let phone = MemoryScope {
        end_user: Some("ann-phone".into()),
        ..ann.clone()
    };
    let own = store
        .add(&ann, &new("My bike is blue."))
        .await
        .expect("add");
    store
        .update(&ann, &own.id, "My bike is green.")
        .await
        .expect("update");
    let gone = store
        .add(&phone, &new("My phone is a Fairphone."))
        .await
        .expect("add");
    store.delete(&phone, &gone.id).await.expect("delete");
    store
        .add(&phone, &new("My phone case is red."))
        .await
        .expect("add");
    let said = NewMemory {
        role: Some(TurnRole::User),
        ..new("I charge my phone at night.")
    };
    store
        .add_turns(&phone, std::slice::from_ref(&said))
        .await
        .expect("turns");
    let queued = NewMemory {
        role: Some(TurnRole::User),
        ..new("My phone has a cracked screen.")
    };
    store
        .enqueue(&phone, &[queued], None)
        .await
        .expect("enqueue");

    assert_eq!(store.forget_scope(&phone).await.expect("forget"), 2);
    assert!(store.list(&phone, 10).await.expect("list").is_empty());
    assert!(
        matches!(
            store.history(&phone, &gone.id).await,
            Err(Error::NotFound(_))
        ),
        "a deleted memory's history goes too"
    );
    let hash = said.turn_hash().expect("a turn");
    assert!(
        store
            .remembered(&phone, &[hash])
            .await
            .expect("remembered")
            .is_empty()
    );
    assert_eq!(store.waiting(&phone).await.expect("waiting"), 0);
    // The user's own scope is untouched, history and all.
    let kept = store.list(&ann, 10).await.expect("list");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].text, "My bike is green.");
    assert_eq!(
        store.history(&ann, &own.id).await.expect("history").len(),
        2
    );
}

pub async fn a_deleted_memorys_history_stays_in_its_scope(store: Arc<dyn MemoryStore>) {
    let ann = MemoryScope::user("ws", "ann");
    let (phone, laptop) = (
        MemoryScope {
            end_user: Some("ann-phone".into()),
            ..ann.clone()
        },
        MemoryScope {
            end_user: Some("ann-laptop".into()),
            ..ann.clone()
        },
    );
    // A conversation turn's memory and a fact's, each deleted again.
    let said = NewMemory {
        role: Some(TurnRole::User),
        ..new("I keep my passport in the blue drawer.")
    };
    let turn = store
        .add_turns(&phone, std::slice::from_ref(&said))
        .await
        .expect("turns")
        .remove(0);
    let fact = store
        .add(&phone, &new("My PIN hint is the dog's name."))
        .await
        .expect("add");
    for m in [&turn, &fact] {
        store.delete(&phone, &m.id).await.expect("delete");
        let events: Vec<String> = store
            .history(&phone, &m.id)
            .await
            .expect("history")
            .into_iter()
            .map(|h| h.event)
            .collect();
        assert_eq!(events, ["add", "delete"], "its own scope reads it");
        // Another end-user of the same key, and the key's own scope, read nothing of it.
        for other in [&laptop, &ann] {
            assert!(
                matches!(store.history(other, &m.id).await, Err(Error::NotFound(_))),
                "{other:?} read {}'s history",
                m.text
            );
        }
    }
    // Forgetting the scope takes the history of what was deleted before along.
    store.forget_scope(&phone).await.expect("forget");
    for m in [&turn, &fact] {
        assert!(
            matches!(store.history(&phone, &m.id).await, Err(Error::NotFound(_))),
            "{} outlived forgetting its scope",
            m.text
        );
    }
}
