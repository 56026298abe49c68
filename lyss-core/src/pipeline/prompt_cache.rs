//! The provider's prompt cache as lyss left it: one key per caller and conversation, and which
//! conversations were lately sent upstream whole, so that the memory stage can tell when a
//! prompt sent as it is (its prefix read from the provider's cache) costs less than the same
//! prompt compressed and sent fresh.
//!
//! A provider that caches prompts bills a prefix it holds at a fraction of input (Anthropic a
//! tenth, OpenAI a half to a tenth): a 14,000-token history read from a warm Anthropic cache
//! costs about what a 1,400-token prompt sent fresh does. What lyss knows is its own: a
//! replica tracks what it sent, and a conversation it has not seen lately counts as cold (the
//! safe guess: compressing is then the cheaper choice).

use std::time::Duration;

use time::OffsetDateTime;
use xxhash_rust::xxh3::Xxh3;

use crate::policy::Principal;
use crate::price::Price;
use crate::wire::{ChatRequest, Content, ContentPart, KnownPart, Message, Role};

/// How long a provider keeps a prompt prefix after its last use: Anthropic's default lifetime,
/// renewed by every read. OpenAI keeps prefixes five to ten minutes, up to an hour off-peak.
pub(super) const LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The shortest prefix either vendor caches.
const MIN_CACHED: u64 = 1_024;

/// Anthropic finds a cached prefix only up to 20 content blocks before a breakpoint; a request
/// that adds more messages than this to what was sent finds nothing.
const LOOKBACK: usize = 20;

/// Conversations tracked at most; the least recently sent are forgotten first.
const CONVERSATIONS: u64 = 100_000;

/// One key per caller and conversation for the provider's prompt cache: the caller (and the
/// application's end user) and how the conversation opens (its system prompt and first user
/// message), so requests of one conversation reach the same cache while other callers' never
/// share it. Taken from the request as the client sent it, before memory rewrites it.
pub(super) fn conversation_key(who: &Principal, req: &ChatRequest) -> String {
    let mut h = Xxh3::new();
    for part in [
        who.workspace_id.as_str(),
        who.user_id.as_str(),
        req.user.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    let opening = req
        .messages
        .iter()
        .take_while(|m| m.role != Role::Assistant)
        .filter(|m| matches!(m.role, Role::System | Role::Developer | Role::User))
        .take(3);
    for m in opening {
        hash_content(&mut h, m.content.as_ref());
    }
    format!("lyss-{:016x}", h.digest())
}

/// Hashes a message's text in place (a prompt is hashed on every request).
fn hash_content(h: &mut Xxh3, content: Option<&Content>) {
    match content {
        Some(Content::Text(t)) => h.update(t.as_bytes()),
        Some(Content::Parts(parts)) => {
            for p in parts {
                if let ContentPart::Known(KnownPart::Text { text, .. }) = p {
                    h.update(text.as_bytes());
                }
            }
        }
        None => {}
    }
    h.update(&[0]);
}

/// The messages a prompt starts with, as a provider's cache would tell them apart.
fn fingerprint(messages: &[Message]) -> u64 {
    let mut h = Xxh3::new();
    for m in messages {
        hash_message(&mut h, m);
    }
    h.digest()
}

fn hash_message(h: &mut Xxh3, m: &Message) {
    h.update(&[m.role as u8]);
    hash_content(h, m.content.as_ref());
}

/// A conversation's last prompt sent whole: the prefixes a provider keeps of it, as (leading
/// messages, fingerprint) — the whole prompt, which the next turn extends, and all of it but
/// the newest message, which a regenerated answer or another question on the same history
/// shares (lyss marks both ends as Anthropic breakpoints; OpenAI caches any shared prefix).
#[derive(Clone, Copy)]
struct Sent {
    prefixes: [(usize, u64); 2],
    at: OffsetDateTime,
}

/// Which conversations lyss lately sent whole to which upstream model, by [`slot`].
pub(super) struct SentWhole(moka::sync::Cache<u64, Sent>);

/// One conversation at one upstream model, hashed: looking it up allocates nothing.
fn slot(conversation: &str, upstream: &str) -> u64 {
    let mut h = Xxh3::new();
    h.update(conversation.as_bytes());
    h.update(&[0]);
    h.update(upstream.as_bytes());
    h.digest()
}

impl Default for SentWhole {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(CONVERSATIONS)
                .time_to_idle(LIFETIME * 2)
                .build(),
        )
    }
}

impl SentWhole {
    /// Remembers that `messages` went to `upstream` whole at `now`.
    pub(super) fn record(
        &self,
        conversation: &str,
        upstream: &str,
        messages: &[Message],
        now: OffsetDateTime,
    ) {
        let Some((newest, before)) = messages.split_last() else {
            return;
        };
        let mut h = Xxh3::new();
        for m in before {
            hash_message(&mut h, m);
        }
        let all_but_newest = (before.len(), h.digest());
        hash_message(&mut h, newest);
        self.0.insert(
            slot(conversation, upstream),
            Sent {
                prefixes: [(messages.len(), h.digest()), all_but_newest],
                at: now,
            },
        );
    }

    /// How many leading messages of `messages` the provider likely holds: the longest prefix
    /// kept of the last prompt sent whole, if that was within the cache's lifetime.
    pub(super) fn warm_messages(
        &self,
        conversation: &str,
        upstream: &str,
        messages: &[Message],
        now: OffsetDateTime,
    ) -> usize {
        let Some(sent) = self.0.get(&slot(conversation, upstream)) else {
            return 0;
        };
        if now - sent.at >= LIFETIME {
            return 0;
        }
        sent.prefixes
            .into_iter()
            .find(|&(n, fp)| {
                n > 0
                    && n <= messages.len()
                    && messages.len() - n <= LOOKBACK
                    && fingerprint(&messages[..n]) == fp
            })
            .map_or(0, |(n, _)| n)
    }
}

/// Whether a prompt of `whole` tokens, `warm` of them in the provider's cache, costs no more
/// sent as it is than compressed to about `compressed` tokens sent fresh. What is not read is
/// written (Anthropic bills writes at 1.25× input; OpenAI at input). Without a cache discount,
/// or without a cacheable warm prefix, compressing wins.
pub(super) fn whole_is_cheaper(price: &Price, whole: u64, warm: u64, compressed: u64) -> bool {
    if warm < MIN_CACHED || price.cached_input >= price.input {
        return false;
    }
    let cost = |tokens: u64, rate: i64| i128::from(tokens) * i128::from(rate);
    let sent_whole =
        cost(warm, price.cached_input) + cost(whole.saturating_sub(warm), price.cache_write);
    sent_whole <= cost(compressed, price.input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::builtin_price;

    fn conversation(turns: usize) -> Vec<Message> {
        let mut m = vec![Message::text(Role::System, "Be brief.")];
        for i in 0..turns {
            m.push(Message::text(Role::User, format!("question {i}")));
            m.push(Message::text(Role::Assistant, format!("answer {i}")));
        }
        m
    }

    #[test]
    fn a_conversation_is_warm_while_it_extends_what_was_sent_within_the_lifetime() {
        let sent = SentWhole::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let history = conversation(3);
        assert_eq!(sent.warm_messages("c", "m", &history, t0), 0);
        sent.record("c", "m", &history, t0);
        let next = conversation(4);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(sent.warm_messages("c", "m", &next, later), history.len());
        // Another question on the history sent: all but its newest message.
        let mut sibling = history.clone();
        *sibling.last_mut().unwrap() = Message::text(Role::Assistant, "answer 2, regenerated");
        assert_eq!(
            sent.warm_messages("c", "m", &sibling, later),
            history.len() - 1
        );
        // Another upstream model, another conversation, an edited history, a cold cache.
        assert_eq!(sent.warm_messages("c", "other", &next, later), 0);
        assert_eq!(sent.warm_messages("d", "m", &next, later), 0);
        let mut edited = next.clone();
        edited[1] = Message::text(Role::User, "question zero, reworded");
        assert_eq!(sent.warm_messages("c", "m", &edited, later), 0);
        assert_eq!(sent.warm_messages("c", "m", &next, t0 + LIFETIME), 0);
        // Far more new messages than a provider looks back over.
        assert_eq!(sent.warm_messages("c", "m", &conversation(20), later), 0);
    }

    #[test]
    fn whole_prompts_win_only_while_their_cached_prefix_is_cheaper_than_a_fresh_compressed_one() {
        let claude = builtin_price("claude-sonnet-4-5").unwrap();
        // 12,000 tokens read at 0.1× and 200 written at 1.25× cost less than 1,600 fresh.
        assert!(whole_is_cheaper(&claude, 12_200, 12_000, 1_600));
        // 20,000 read cost more.
        assert!(!whole_is_cheaper(&claude, 20_200, 20_000, 1_600));
        // Cold, or under the shortest cached prefix: compress.
        assert!(!whole_is_cheaper(&claude, 12_200, 0, 1_600));
        assert!(!whole_is_cheaper(&claude, 1_800, 1_000, 1_600));
        // At gpt-4o-mini's half-price reads a 3,000-token history is already dearer.
        let mini = builtin_price("gpt-4o-mini").unwrap();
        assert!(whole_is_cheaper(&mini, 3_000, 2_900, 1_600));
        assert!(!whole_is_cheaper(&mini, 3_400, 3_300, 1_600));
        // No discount for cached reads: nothing to weigh.
        let flat = Price::per_mtok(1.0, 1.0, 1.0);
        assert!(!whole_is_cheaper(&flat, 2_000, 1_900, 1_900));
    }
}
