//! Stage 3 — memory: remember the conversation, compress the prompt, recall into it.
//!
//! A chat client resends the whole conversation on every request. When memory works on a
//! request (always with `enabled = true`; with `"auto"` only on long prompts without tools,
//! and not while the provider's prompt cache makes the prompt cheaper sent whole), it keeps
//! the leading system prompt and the newest turns within `history_tokens`, and puts the user's
//! most relevant memories in place of the rest as one `user` message within `memory_tokens`,
//! just before the newest user message (so that the prompt's prefix stays cacheable by the
//! provider). Recalled text is quoted data, not instructions: it was said by the user (or to
//! them) and never gains a role with more authority, and each memory is one line inside the
//! block's tags, which it cannot close.
//!
//! The guarantee that makes dropping safe: every turn removed from the prompt is in the user's
//! memory, or durably in its queue, before the request goes upstream. The newest turns it drops
//! that lyss has not remembered yet are stored now (one batch, embedded together); the others
//! and the kept turns are queued and ingested off the request path. Both are idempotent per
//! turn ([`crate::memory::turn_hash`]), so resending a history costs one lookup, not a store,
//! per turn. The work one request may cause is bounded whatever it sends (see
//! [`Lyss::remember`]); if a turn it would drop cannot be stored or queued, nothing is
//! dropped: the request goes upstream as sent.

use time::OffsetDateTime;

use super::{Call, Lyss, prompt_cache};
use crate::config::{MemoryBudgets, MemoryMode};
use crate::memory::compress::{
    Gate, Window, material, only_asks, prompt_text, query, render_block, render_profile, text_of,
};
use crate::memory::traffic::{self, Traffic};
use crate::memory::{Hit, MemoryScope, MemoryStore, NewMemory, SearchQuery, TurnRole, profile};
use crate::models::Model;
use crate::policy::Principal;
use crate::tokens;
use crate::wire::{ChatRequest, Content, Message, Role};

/// Text of new turns one request hands to memory at most (newest first): ~200 passages,
/// about a second of one core for the local embedder, in the background — and more than a
/// long conversation seen whole for the first time holds (LOCOMO's longest: ~90 KiB).
const TAKEN_BYTES: usize = 128 * 1024;

/// Of those, the text embedded on the request path at most (the newest turns the request
/// drops): ~40 passages, about 150 ms. The other dropped turns are queued, durable as well.
const STORED_NOW_BYTES: usize = 24 * 1024;

/// Turns a user may have waiting in the memory queue; beyond it, new turns wait in the prompt
/// (and the prompt is not compressed) until the queue drains. The queue is claimed fairly
/// across users, so one user's flood delays only that user.
const WAITING_PER_USER: u64 = 512;

/// The profile's share of a prompt at most: a few lines that shape every answer, sent with
/// every conversational request (a prefix the provider's prompt cache keeps).
const PROFILE_TOKENS: u64 = 100;

/// How long the memory stage may take before the request goes on without it.
const MEMORY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Prompt tokens before and after the memory stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Compressed {
    pub original: u64,
    pub sent: u64,
}

/// What the memory stage works with for one request.
struct Ctx<'a> {
    store: &'a dyn MemoryStore,
    scope: MemoryScope,
    who: &'a Principal,
    call: &'a Call,
    model: &'a Model,
    /// The conversation the request continues ([`super::conversation_key`]).
    conversation: &'a str,
    now: OffsetDateTime,
}

impl Lyss {
    /// Runs the memory stage on a request when its workspace, mode and the caller allow it and
    /// it is conversation ([`traffic::classify`]); returns the prompt tokens before and after
    /// when it changed the prompt. Memory never fails a request: if the store is down the
    /// request goes on as sent (or without recall) and the log says why.
    ///
    /// - A long prompt (`auto`: longer than `history_tokens + memory_tokens`; `enabled = true`:
    ///   any) is compressed: the turns it drops are remembered, the user's memories recalled
    ///   in their place — when that saves materially ([`material`]).
    /// - A short one (`auto`) is remembered and gets only what recall finds relevant to it
    ///   ([`Gate`]) and the person's profile: a new chat, or a client that sends only its last
    ///   messages, knows what the person said before; a prompt nothing matches goes as sent.
    pub(super) async fn recall_and_compress(
        &self,
        who: &Principal,
        call: &Call,
        req: &mut ChatRequest,
        model: &Model,
        conversation: &str,
        now: OffsetDateTime,
    ) -> Option<Compressed> {
        // Memory never holds a request up for long: past its deadline (a store that does not
        // answer) the request goes as sent. Nothing is changed before the stage's last step,
        // which does not wait, so a stage cut short leaves the prompt as the client sent it.
        let staged = self.memory_stage(who, call, req, model, conversation, now);
        match tokio::time::timeout(MEMORY_DEADLINE, staged).await {
            Ok(done) => done,
            Err(_) => {
                tracing::warn!(request_id = %call.request_id, "memory did not answer in time: the request goes as sent");
                None
            }
        }
    }

    async fn memory_stage(
        &self,
        who: &Principal,
        call: &Call,
        req: &mut ChatRequest,
        model: &Model,
        conversation: &str,
        now: OffsetDateTime,
    ) -> Option<Compressed> {
        let store = self.memory.as_ref()?;
        if call.no_memory {
            return None;
        }
        let budgets = self.memory_config.budgets_for(&who.workspace_name)?;
        let last_user = req.messages.iter().rposition(|m| m.role == Role::User)?;
        if traffic::classify(req) != Traffic::Conversation {
            return None;
        }
        let cx = Ctx {
            store: store.as_ref(),
            scope: MemoryScope {
                workspace_id: who.workspace_id.clone(),
                user_id: who.user_id.clone(),
                end_user: crate::memory::end_user(req.user.as_deref()),
                agent: None,
            },
            who,
            call,
            model,
            conversation,
            now,
        };
        let long = match budgets.mode {
            MemoryMode::Auto => worth_compressing(req, &cx.model.upstream, &budgets),
            _ => Some(tokens::count_request(&cx.model.upstream, req)),
        };
        match long {
            Some(original) => self.compress(&cx, req, &budgets, last_user, original).await,
            None => self.recall_into_short(&cx, req, last_user).await,
        }
    }

    /// A short conversation prompt (`auto`): its new turns are queued for memory, and what
    /// recall finds relevant to its newest message, with the person's profile, is added to
    /// it. Untouched when nothing is.
    async fn recall_into_short(
        &self,
        cx: &Ctx<'_>,
        req: &mut ChatRequest,
        last_user: usize,
    ) -> Option<Compressed> {
        let window = Window::whole(req, last_user);
        let query = query(req, &window);
        let gate = Gate::for_message(&text_of(&req.messages[last_user]));
        // A question is searched by meaning at once. An ordinary turn first by its words alone:
        // only when they find something is it embedded (chit-chat that matches nothing costs a
        // keyword lookup, not an embedding — most turns).
        let asks = gate.asks;
        let held = prompt_text(&req.messages);
        let (_, _, profile) = tokio::join!(
            async {
                if asks {
                    self.embed_ahead(cx, &query).await
                }
            },
            self.remember(cx, req, &window, false),
            self.profile(cx, &held),
        );
        let hits = if asks {
            self.search(cx, query.clone(), true).await
        } else {
            let by_words = self.search(cx, query.clone(), false).await;
            if gate.admit(&query, &by_words).is_empty() {
                Vec::new()
            } else {
                self.search(cx, query.clone(), true).await
            }
        };
        // The profile and the block share what a message may add: a person with a profile
        // pays no more per turn than one without. What the profile quotes is not quoted again.
        let room = gate.tokens.saturating_sub(
            profile
                .as_deref()
                .map_or(0, |p| tokens::count_text(&cx.model.upstream, p)),
        );
        let held = with_profile(held, profile.as_deref());
        let block = render_block(&gate.admit(&query, &hits), &held, &cx.model.upstream, room);
        if block.is_none() && profile.is_none() {
            return None;
        }
        let original = tokens::count_request(&cx.model.upstream, req);
        let lead = window.lead;
        let asked = req.messages.split_off(last_user);
        let rest = req.messages.split_off(lead);
        req.messages
            .extend(profile.map(|p| Message::text(Role::User, p)));
        req.messages.extend(rest);
        req.messages
            .extend(block.map(|b| Message::text(Role::User, b)));
        req.messages.extend(asked);
        Some(Compressed {
            original,
            sent: tokens::count_request(&cx.model.upstream, req),
        })
    }

    /// A long prompt: kept within `history_tokens`, the rest remembered and replaced by the
    /// memories that best match its newest message — if the saving is material.
    async fn compress(
        &self,
        cx: &Ctx<'_>,
        req: &mut ChatRequest,
        budgets: &MemoryBudgets,
        last_user: usize,
        original: u64,
    ) -> Option<Compressed> {
        let window = Window::of(req, &cx.model.upstream, last_user, budgets.history_tokens);
        // What the block may take: in `auto` no more than what is dropped, so the prompt can
        // only shrink (a long prompt that is all newest exchange is left alone).
        let block_tokens = match budgets.mode {
            MemoryMode::Auto => {
                let dropped = req.messages[window.lead..window.keep_from]
                    .iter()
                    .filter(|m| !matches!(m.role, Role::System | Role::Developer))
                    .map(|m| {
                        tokens::count_messages(&cx.model.upstream, std::slice::from_ref(m)) - 3
                    })
                    .sum::<u64>();
                if dropped == 0 {
                    return None;
                }
                dropped.min(budgets.memory_tokens)
            }
            _ => budgets.memory_tokens,
        };
        if budgets.mode == MemoryMode::Auto
            && self.whole_is_cheaper(cx, req, &window, original, block_tokens)
        {
            // Sent whole; its turns are queued, so that they need not be stored on the request
            // path when the conversation outgrows the provider's cache.
            self.remember(cx, req, &window, false).await;
            return None;
        }
        let query = query(req, &window);
        // The query is embedded (on another thread) while the turns are remembered; the
        // embedder keeps the vector, so the search finds it ready.
        let held = prompt_text(&req.messages);
        let (_, remembered, profile) = tokio::join!(
            self.embed_ahead(cx, &query),
            self.remember(cx, req, &window, true),
            self.profile(cx, &held),
        );
        if !remembered {
            return None;
        }
        let hits = self.search(cx, query, true).await;
        let kept = with_profile(
            prompt_text(&req.messages[window.keep_from..]),
            profile.as_deref(),
        );
        let block = render_block(&hits, &kept, &cx.model.upstream, block_tokens);
        let mut messages: Vec<Message> = req.messages[..window.lead].to_vec();
        messages.extend(profile.map(|p| Message::text(Role::User, p)));
        // Instructions given mid-conversation stay in force; they are not turns.
        messages.extend(
            req.messages[window.lead..window.keep_from]
                .iter()
                .filter(|m| matches!(m.role, Role::System | Role::Developer))
                .cloned(),
        );
        // The block goes last, just before the newest user message: what comes before it
        // (system prompt, profile, kept history) is then the same from one request to the
        // next where the conversation allows, a prefix the provider's prompt cache can serve.
        messages.extend(req.messages[window.keep_from..last_user].iter().cloned());
        messages.extend(block.map(|b| Message::text(Role::User, b)));
        messages.extend(req.messages[last_user..].iter().cloned());
        // Conversation traffic declares no tools: the prompt is its messages.
        let sent = tokens::count_messages(&cx.model.upstream, &messages);
        // `auto` rewrites a prompt only to save; `enabled = true` recalls into every prompt.
        if budgets.mode == MemoryMode::Auto && !material(original, sent) {
            return None;
        }
        req.messages = messages;
        Some(Compressed { original, sent })
    }

    /// In `auto`, whether this prompt costs less sent whole, its prefix read from the
    /// provider's prompt cache, than compressed and sent fresh (see [`super::prompt_cache`]).
    fn whole_is_cheaper(
        &self,
        cx: &Ctx<'_>,
        req: &ChatRequest,
        window: &Window,
        original: u64,
        block_tokens: u64,
    ) -> bool {
        let model = cx.model;
        if !model.provider.caches_prompts() {
            return false;
        }
        let warm =
            self.sent_whole
                .warm_messages(cx.conversation, &model.upstream, &req.messages, cx.now);
        if warm == 0 {
            return false;
        }
        let warm = tokens::count_messages(&model.upstream, &req.messages[..warm]);
        let kept = tokens::count_messages(&model.upstream, &req.messages[..window.lead])
            + tokens::count_messages(&model.upstream, &req.messages[window.keep_from..]);
        // The compressed prompt: instructions, kept history and a block at most this large.
        let compressed = kept + block_tokens + 3;
        prompt_cache::whole_is_cheaper(&model.price, original, warm, compressed)
    }

    /// Whether memory weighs the provider's prompt cache for this caller's requests: in
    /// `auto`, where it decides per request what is worth compressing.
    pub(super) fn weighs_prompt_cache(&self, who: &Principal) -> bool {
        self.memory.is_some()
            && self
                .memory_config
                .budgets_for(&who.workspace_name)
                .is_some_and(|b| b.mode == MemoryMode::Auto)
    }

    /// Remembers every turn of the conversation that the user's memory does not hold yet:
    /// when `dropping`, the newest of the ones this request drops are stored now; the rest are
    /// queued (ingested off the request path). `true` when every turn the request drops is
    /// remembered or queued; `false` when one is neither (the store failed, or the request
    /// brought more new turns than one request may hand to memory): then nothing may be
    /// dropped.
    ///
    /// The work is bounded per request and per user, whatever the prompt holds: at most
    /// [`TAKEN_BYTES`] of new turns are taken (newest first), of which at most
    /// [`STORED_NOW_BYTES`] are embedded on the request path, and a user's queue holds at most
    /// [`WAITING_PER_USER`] turns. A client that sends a long history lyss never saw is served
    /// as sent while its turns are taken over the next requests.
    async fn remember(
        &self,
        cx: &Ctx<'_>,
        req: &ChatRequest,
        window: &Window,
        dropping: bool,
    ) -> bool {
        let (store, scope, now) = (cx.store, &cx.scope, cx.now);
        // The newest exchange and the one before it were said about now (a client that sends
        // its history every turn sent the one before as the newest a moment ago); when older
        // turns of a history lyss never saw were said, it cannot know.
        let recent = req.messages[window.lead..window.last_user]
            .iter()
            .rposition(|m| m.role == Role::User)
            .map_or(window.anchor, |p| (window.lead + p).min(window.anchor));
        let turns: Vec<(usize, NewMemory)> = req.messages[window.lead..]
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let position = window.lead + i;
                let said = (position >= recent).then_some(now);
                Some((position, as_turn(m, position, cx.call, said)?))
            })
            .collect();
        let hashes: Vec<u128> = turns.iter().filter_map(|(_, t)| t.turn_hash()).collect();
        let known = match store.remembered(scope, &hashes).await {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(error = %e, "memory unavailable: the request goes upstream as sent");
                return false;
            }
        };
        // The newest message of a long conversation is remembered when the client sends it
        // back as history: a regenerated, edited or abandoned one never is. In a short prompt
        // it is taken now — it may be the whole conversation ("remember that I …", a new chat
        // never continued) — unless it only asks: a question is no fact, and its answer comes
        // back as history if the chat goes on.
        let long = window.keep_from > window.lead;
        let newest_now = !long && !only_asks(&text_of(&req.messages[window.last_user]));
        let new: Vec<(usize, NewMemory)> = turns
            .into_iter()
            .filter(|(p, t)| {
                t.turn_hash().is_some_and(|h| !known.contains(&h))
                    && (*p < window.last_user || newest_now)
            })
            .collect();
        if new.is_empty() {
            return true;
        }
        let room = match store.waiting(scope).await {
            Ok(n) => WAITING_PER_USER.saturating_sub(n),
            Err(e) => {
                tracing::warn!(error = %e, "memory unavailable: the request goes upstream as sent");
                return false;
            }
        };
        let drops = |p: usize| dropping && p < window.keep_from;
        let plan = Intake::plan(&new, room, drops);
        if plan.left_out > 0 {
            tracing::info!(
                left_out = plan.left_out,
                taken = plan.now.len() + plan.queued.len(),
                "more new turns than one request may hand to memory: the rest wait in the prompt"
            );
        }
        let mut stored = Vec::with_capacity(plan.now.len());
        let mut queued = Vec::with_capacity(plan.queued.len());
        let mut statements = Vec::new();
        for (i, (_, t)) in new.into_iter().enumerate() {
            let taken = plan.now.contains(&i) || plan.queued.contains(&i);
            // What the person says about themselves joins their profile as the turn is taken.
            if taken && t.role == Some(TurnRole::User) {
                statements.extend(
                    profile::statements(&t.text)
                        .into_iter()
                        .map(|text| NewMemory {
                            text,
                            source: t.source.clone(),
                            occurred_at: t.occurred_at.or(Some(now)),
                            profile: true,
                            ..NewMemory::default()
                        }),
                );
            }
            if plan.now.contains(&i) {
                stored.push(t);
            } else if plan.queued.contains(&i) {
                queued.push(t);
            }
        }
        queued.extend(statements);
        if let Err(e) = store.add_turns(scope, &stored).await {
            tracing::warn!(error = %e, "could not remember the dropped turns: the request goes upstream as sent");
            return false;
        }
        match store.enqueue(scope, &queued, Some(&cx.who.key_id)).await {
            Ok(()) if !queued.is_empty() => self.turns_queued.notify_one(),
            Ok(()) => {}
            Err(e) => {
                // Not lost: the turns are still in the prompt, which then goes as sent.
                tracing::warn!(error = %e, "could not queue the new turns for memory");
                return plan.complete && !plan.drops_queued;
            }
        }
        plan.complete
    }

    /// Has the store embed the query ahead of its search ([`MemoryStore::prepare_search`]).
    async fn embed_ahead(&self, cx: &Ctx<'_>, query: &str) {
        if !query.trim().is_empty()
            && let Err(e) = cx.store.prepare_search(&cx.scope, query).await
        {
            tracing::debug!(error = %e, "query embedding failed; the search will say why");
        }
    }

    /// The user's memories that best match a query, best first (none when the store fails);
    /// by keywords alone unless `by_meaning`.
    async fn search(&self, cx: &Ctx<'_>, query: String, by_meaning: bool) -> Vec<Hit> {
        if query.trim().is_empty() {
            return Vec::new();
        }
        cx.store
            .search(
                &cx.scope,
                &SearchQuery {
                    text: query,
                    limit: self.memory_config.top_k,
                    // Above 1: no vector can match, so nothing is embedded.
                    min_similarity: if by_meaning {
                        self.memory_config.min_similarity
                    } else {
                        2.0
                    },
                },
            )
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "memory recall failed; answering without it");
                Vec::new()
            })
    }

    /// The person's profile as a block for this request (what `held`, the prompt's text, says
    /// already left out).
    async fn profile(&self, cx: &Ctx<'_>, held: &str) -> Option<String> {
        let facts = cx.store.profile(&cx.scope).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "profile unavailable; answering without it");
            Vec::new()
        });
        render_profile(&facts, held, &cx.model.upstream, PROFILE_TOKENS)
    }
}

/// What a prompt holds once the profile block is added to it.
fn with_profile(mut held: String, profile: Option<&str>) -> String {
    if let Some(p) = profile {
        held.push('\n');
        held.push_str(p);
    }
    held
}

/// Whether `auto` compresses a conversation prompt — it is longer than memory's whole budget
/// (history plus block), so compressing it can only make it smaller — with its prompt tokens
/// when it does.
fn worth_compressing(req: &ChatRequest, upstream: &str, budgets: &MemoryBudgets) -> Option<u64> {
    let threshold = budgets.history_tokens + budgets.memory_tokens;
    // A token is at least one byte: a prompt this small needs no tokenizer to rule it out.
    let upper_bound: u64 = req
        .messages
        .iter()
        .map(|m| 4 + m.content.as_ref().map_or(0, content_bytes))
        .sum::<u64>()
        + 3;
    if upper_bound <= threshold {
        return None;
    }
    Some(tokens::count_request(upstream, req)).filter(|&n| n > threshold)
}

fn content_bytes(c: &Content) -> u64 {
    match c {
        Content::Text(t) => t.len() as u64,
        // Images and files count as much as the tokenizer says; the bound must stay above.
        Content::Parts(_) => u64::MAX / 4,
    }
}

mod intake;

use self::intake::{Intake, as_turn};

#[cfg(test)]
mod tests;
