//! Ingestion with an extraction model, the Mem0 way but with one LLM call per turn: the model
//! sees the new turn and the scope's most similar memories and answers with the changes —
//! ADD a new fact, UPDATE or DELETE an existing memory, or NONE. Every change goes through the
//! store, so it lands in the history table.
//!
//! Existing memories are shown to the model under short numbers, never their ids, so a
//! hallucinated id cannot touch a memory outside the ones it was shown.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Memory, MemoryScope, MemoryStore, NewMemory, Queued, SearchQuery, is_known_as};
use crate::error::{Error, Result};
use crate::models::Model;
use crate::policy::budget::DEFAULT_OUTPUT_CAP;
use crate::policy::{Ask, LedgerEntry, Payer, Policy, Reservation};
use crate::tokens;
use crate::wire::{ChatRequest, Message, ResponseFormat, Role, Usage};

/// Existing memories shown to the model with each turn.
const SHOWN: usize = 8;

const INSTRUCTIONS: &str = "You maintain a user's long-term memory for an assistant. \
From the new message (said by the user, or by the assistant or a tool to the user), extract \
short, self-contained facts worth remembering about the user and their world: preferences, personal details, plans, decisions, people and things in their life. Write \
each fact in the third person (\"Prefers short answers\"), with absolute dates instead of \
relative ones, using the message date. Compare each fact with the existing memories, listed \
by number, and choose one operation per fact: ADD a new fact; UPDATE an existing memory the \
fact refines or changes (give its number and the full new text); DELETE an existing memory \
the message contradicts or retracts (give its number); NONE when it is already known. Greetings, \
questions and small talk hold no facts: answer with no operations. Reply with JSON only: \
{\"operations\": [{\"op\": \"ADD\", \"text\": \"...\"}, {\"op\": \"UPDATE\", \"id\": 1, \
\"text\": \"...\"}, {\"op\": \"DELETE\", \"id\": 2}, {\"op\": \"NONE\", \"id\": 3}]}";

/// One change the model asked for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "UPPERCASE")]
pub enum Operation {
    Add {
        text: String,
    },
    Update {
        #[serde(deserialize_with = "number")]
        id: usize,
        text: String,
    },
    Delete {
        #[serde(deserialize_with = "number")]
        id: usize,
    },
    None {},
}

/// A shown memory's number, written as a number or a string.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| serde::de::Error::custom("not a memory number")),
        Value::String(s) => s.trim().parse().map_err(serde::de::Error::custom),
        _ => Err(serde::de::Error::custom("not a memory number")),
    }
}

/// The operations in a model's answer. Code fences and prose around the JSON object are
/// tolerated; operations that do not parse are skipped. `None` when there is no JSON object.
pub fn parse_operations(answer: &str) -> Option<Vec<Operation>> {
    let start = answer.find('{')?;
    let end = answer.rfind('}')?;
    let value: Value = serde_json::from_str(answer.get(start..=end)?).ok()?;
    let ops = value
        .get("operations")
        .or_else(|| value.get("memory"))?
        .as_array()?;
    Some(
        ops.iter()
            .filter_map(|op| serde_json::from_value(op.clone()).ok())
            .collect(),
    )
}

/// Ingests queued turns through an extraction model.
pub struct Extractor {
    model: Arc<Model>,
    dedupe_similarity: f32,
    /// Where each extraction call is reserved and recorded (endpoint `memory`), when set,
    /// and how long its hold outlives a process that died mid-call.
    ledger: Option<(Arc<dyn Policy>, std::time::Duration)>,
}

/// What one turn changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub updated: usize,
    pub deleted: usize,
}

impl Extractor {
    /// Extracts with `model`; a new fact this similar to an existing memory is not added
    /// again, whatever the model said.
    pub fn new(model: Arc<Model>, dedupe: f32) -> Self {
        Self {
            model,
            dedupe_similarity: dedupe,
            ledger: None,
        }
    }

    /// Charges every extraction call to the turn's workspace, user and key (when it came
    /// through one), like a request: its worst case is reserved on their budgets first (a
    /// turn whose budgets cannot take it is stored raw, at no cost), and it is settled into
    /// the ledger (endpoint `memory`). Memory is not free, and hard budgets cover it too.
    /// `hold_for` is the reservation's lifetime, as for requests.
    pub fn ledger(mut self, policy: Arc<dyn Policy>, hold_for: std::time::Duration) -> Self {
        self.ledger = Some((policy, hold_for));
        self
    }

    /// Ingests up to `max` queued turns, claiming one at a time (a claim outlives one
    /// extraction call, not a batch of them); returns how many it took. An upstream that is
    /// down or overloaded stops the batch (the turn goes back to the queue for the next run);
    /// an answer that is refused or unreadable stores the turn raw instead, so nothing is
    /// lost and the queue never sticks.
    pub async fn ingest_pending(&self, store: &dyn MemoryStore, max: usize) -> Result<usize> {
        let mut taken = 0;
        while taken < max {
            let Some(q) = store.claim(1, super::INGEST_LEASE).await?.pop() else {
                break;
            };
            let ingested = match self.ingest(store, &q).await {
                Ok(_) => store.complete(q.id).await,
                Err(e) => Err(e),
            };
            if let Err(e) = ingested {
                // Best effort: unreleased, it comes back when the lease runs out.
                let _ = store.release(q.id).await;
                return Err(e);
            }
            taken += 1;
        }
        Ok(taken)
    }

    /// Applies one turn's operations. A conversation turn the scope remembers already (it
    /// dropped out of a prompt before its extraction ran, and was stored raw then) is skipped.
    pub async fn ingest(&self, store: &dyn MemoryStore, q: &Queued) -> Result<Changes> {
        // A profile statement is already one short fact, in the person's words.
        if q.turn.profile {
            return self.raw(store, q).await;
        }
        if let Some(hash) = q.turn.turn_hash()
            && store.remembered(&q.scope, &[hash]).await?.contains(&hash)
        {
            return Ok(Changes::default());
        }
        let shown = shown(store, q).await?;
        let operations = match self.ask(q, &shown).await {
            Ok(Some(ops)) => ops,
            Ok(None) => {
                tracing::warn!(model = %self.model.name, "extraction answer unreadable; turn stored raw");
                return self.raw(store, q).await;
            }
            Err(e) if retryable(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "extraction refused; turn stored raw");
                return self.raw(store, q).await;
            }
        };
        let ids: HashMap<usize, &str> = shown
            .iter()
            .enumerate()
            .map(|(i, m)| (i + 1, m.id.as_str()))
            .collect();
        let mut changes = Changes::default();
        for op in operations {
            match op {
                Operation::Add { text } => {
                    if self.add(store, &q.scope, q, text).await? {
                        changes.added += 1;
                    }
                }
                Operation::Update { id, text } => match ids.get(&id) {
                    Some(id) if !text.trim().is_empty() => {
                        store.update(&q.scope, id, text.trim()).await?;
                        changes.updated += 1;
                    }
                    _ => {}
                },
                Operation::Delete { id } => {
                    if let Some(id) = ids.get(&id) {
                        match store.delete(&q.scope, id).await {
                            Ok(()) => changes.deleted += 1,
                            // Already gone (deleted twice in one answer): nothing to do.
                            Err(Error::NotFound(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Operation::None {} => {}
            }
        }
        Ok(changes)
    }

    async fn ask(&self, q: &Queued, shown: &[Memory]) -> Result<Option<Vec<Operation>>> {
        let mut listed = String::from("Existing memories:");
        if shown.is_empty() {
            listed.push_str(" none");
        }
        for (i, m) in shown.iter().enumerate() {
            listed.push_str(&format!("\n{}. {}", i + 1, m.text));
        }
        let date = q
            .turn
            .occurred_at
            .map_or_else(|| "unknown".to_owned(), |t| t.date().to_string());
        let mut req = ChatRequest {
            model: self.model.upstream.clone(),
            messages: vec![
                Message::text(Role::System, INSTRUCTIONS),
                Message::text(
                    Role::User,
                    format!(
                        "{listed}\n\nNew message (date {date}, said by {}):\n{}",
                        q.turn.role.map_or("the user", |r| match r {
                            super::TurnRole::User => "the user",
                            super::TurnRole::Assistant => "the assistant",
                            super::TurnRole::Tool => "a tool",
                        }),
                        q.turn.text
                    ),
                ),
            ],
            response_format: Some(ResponseFormat::JsonObject),
            max_tokens: Some(512),
            extra: json!({"temperature": 0})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ..ChatRequest::default()
        };
        let prompt_tokens = tokens::count_request(&self.model.upstream, &req);
        let reservation = self.reserve(q, &req, prompt_tokens).await?;
        if let Some(n) = reservation.set_max_tokens {
            req.max_tokens = Some(n);
        }
        let started = std::time::Instant::now();
        let answer = match self.model.provider.chat(&req).await {
            Ok(answer) => answer,
            Err(e) => {
                let (status, usage) = crate::settlement::failure(&e, prompt_tokens);
                let entry = self.entry(q, &usage, started, status, Some(e.to_string()));
                self.record(&reservation, entry).await;
                return Err(e);
            }
        };
        let text = answer
            .choices
            .first()
            .and_then(|c| c.message.content.as_ref())
            .map(|c| c.text())
            .unwrap_or_default();
        // An upstream that reports no usage is billed what lyss counts, as for requests.
        let usage = answer.usage.clone().unwrap_or_else(|| Usage {
            prompt_tokens,
            completion_tokens: tokens::count_text(&self.model.upstream, &text),
            ..Usage::default()
        });
        self.record(&reservation, self.entry(q, &usage, started, 200, None))
            .await;
        Ok(parse_operations(&text))
    }

    /// Holds the call's worst case on the workspace's, user's and key's budgets (none
    /// without a ledger). A refusal is not retryable: the turn is then stored raw.
    async fn reserve(
        &self,
        q: &Queued,
        req: &ChatRequest,
        prompt_tokens: u64,
    ) -> Result<Reservation> {
        let Some((policy, hold_for)) = &self.ledger else {
            return Ok(Reservation::default());
        };
        let ask = Ask {
            prompt_tokens,
            requested_output: req.max_tokens,
            output_cap: self.model.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_CAP),
            price: self.model.price,
            grows: None,
        };
        policy
            .reserve(
                Self::payer(q),
                &ask,
                time::OffsetDateTime::now_utc(),
                *hold_for,
            )
            .await
    }

    /// Who pays for extracting a turn: the turn's own workspace, user and key (ids for
    /// names).
    fn payer(q: &Queued) -> Payer<'_> {
        Payer {
            workspace_id: &q.scope.workspace_id,
            user_id: &q.scope.user_id,
            key_id: q.key_id.as_deref().unwrap_or_default(),
            workspace_name: &q.scope.workspace_id,
            user_name: &q.scope.user_id,
        }
    }

    fn entry(
        &self,
        q: &Queued,
        usage: &Usage,
        started: std::time::Instant,
        status: u16,
        error: Option<String>,
    ) -> LedgerEntry {
        let payer = Self::payer(q);
        let request_id = q.turn.source.as_deref().unwrap_or_default();
        LedgerEntry {
            status,
            error,
            // Memory's own cost: what its extraction calls spend is taken off what it saved.
            memory_saved_nusd: -self.model.price.cost(usage),
            ..LedgerEntry::new(payer, request_id, "memory", &self.model.name, started)
                .with_usage(&self.model, usage)
        }
    }

    /// Settles the call's reservation into the ledger; a database that is down is retried
    /// in the background, as for requests (the memory work goes on).
    async fn record(&self, reservation: &Reservation, entry: LedgerEntry) {
        let Some((policy, _)) = &self.ledger else {
            return;
        };
        crate::settlement::finished(&entry);
        if let Err(e) = crate::settlement::settle_or_retry(policy, reservation, &entry).await {
            tracing::warn!(error = %e, "could not record an extraction call in the ledger");
        }
    }

    /// Adds a fact unless the scope already knows it; returns whether it was added.
    async fn add(
        &self,
        store: &dyn MemoryStore,
        scope: &MemoryScope,
        q: &Queued,
        text: String,
    ) -> Result<bool> {
        let new = NewMemory {
            text: text.trim().to_owned(),
            source: q.turn.source.clone(),
            occurred_at: q.turn.occurred_at,
            profile: q.turn.profile,
            ..NewMemory::default()
        };
        if new.text.is_empty() || is_known_as(store, scope, &new, self.dedupe_similarity).await? {
            return Ok(false);
        }
        store.add(scope, &new).await?;
        Ok(true)
    }

    /// Stores the turn as said: a conversation turn as one (its passages), anything else
    /// unless the scope knows it already.
    async fn raw(&self, store: &dyn MemoryStore, q: &Queued) -> Result<Changes> {
        if q.turn.role.is_some() {
            let added = store
                .add_turns(&q.scope, std::slice::from_ref(&q.turn))
                .await?;
            return Ok(Changes {
                added: added.len(),
                ..Changes::default()
            });
        }
        let added = self.add(store, &q.scope, q, q.turn.text.clone()).await?;
        Ok(Changes {
            added: usize::from(added),
            ..Changes::default()
        })
    }
}

/// The memories shown to the model with a turn: the most similar ones, topped up with the
/// newest (a contradiction need not share a word with what it contradicts: "I eat fish now"
/// against "Is vegetarian").
async fn shown(store: &dyn MemoryStore, q: &Queued) -> Result<Vec<Memory>> {
    let query = SearchQuery {
        text: q.turn.text.clone(),
        limit: SHOWN,
        min_similarity: 0.0,
    };
    let mut shown: Vec<Memory> = store
        .search(&q.scope, &query)
        .await?
        .into_iter()
        .map(|h| h.memory)
        .collect();
    if shown.len() < SHOWN {
        for m in store.list(&q.scope, SHOWN).await? {
            if shown.len() < SHOWN && !shown.iter().any(|s| s.id == m.id) {
                shown.push(m);
            }
        }
    }
    Ok(shown)
}

/// Failures worth another try later: the upstream is down, slow or overloaded.
fn retryable(e: &Error) -> bool {
    match e {
        Error::UpstreamUnavailable { .. } | Error::UpstreamTimeout { .. } => true,
        Error::Upstream { status, .. } => *status == 429 || *status >= 500,
        Error::Unavailable { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_parse_from_fenced_json_and_bad_ones_are_skipped() {
        let answer = "```json\n{\"operations\": [{\"op\": \"ADD\", \"text\": \"Likes tea\"}, \
                      {\"op\": \"UPDATE\", \"id\": \"2\", \"text\": \"Lives in Lyon\"}, \
                      {\"op\": \"DELETE\", \"id\": 3}, {\"op\": \"NONE\", \"id\": 1}, \
                      {\"op\": \"EXPLODE\"}, {\"op\": \"UPDATE\", \"id\": \"x\", \"text\": \"?\"}]}\n```";
        assert_eq!(
            parse_operations(answer),
            Some(vec![
                Operation::Add {
                    text: "Likes tea".into()
                },
                Operation::Update {
                    id: 2,
                    text: "Lives in Lyon".into()
                },
                Operation::Delete { id: 3 },
                Operation::None {},
            ])
        );
        assert_eq!(parse_operations("I cannot help with that."), None);
        assert_eq!(parse_operations("{\"operations\": []}"), Some(vec![]));
    }
}
