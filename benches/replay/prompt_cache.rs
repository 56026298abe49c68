//! The provider's prompt cache, simulated from the prompts of one conversation as they reach
//! the upstream, and what they cost under a named price table.
//!
//! Two kinds of cache, as the vendors bill them (prompt tokens only: answers cost the same on
//! both sides of the comparison):
//! - OpenAI's automatic caching: a prompt of 1,024 tokens or more reads the prefix it shares
//!   with the conversation's previous request, in steps of 128 tokens, at the cached price;
//!   writing costs nothing extra.
//! - Anthropic's breakpoints: a prompt reads the longest prefix written before (at 0.1×
//!   input) and writes what it marks up to its breakpoint beyond that (at 1.25×). The
//!   breakpoint sits at the end of the prompt, or, for lyss's compressed prompts, just before
//!   its memory block (what lyss marks; see `anthropic::mark_cache_breakpoints`); prefixes
//!   under 1,024 tokens are not cached.
//!
//! Within a sitting nothing expires: a request finds the cache as the previous one left it, the
//! best case for the plain gateway (Anthropic's cache lives five minutes, OpenAI's five to
//! sixty). [`Cache::expire`] models the days between LOCOMO's sessions.

use lyss_core::price::{Price, builtin_price};
use lyss_core::tokens;
use lyss_core::wire::Message;
use serde_json::{Value, json};

/// The shortest prefix either vendor caches.
const MIN_CACHED: u64 = 1_024;

/// OpenAI caches in steps of this many tokens past the first 1,024.
const OPENAI_STEP: u64 = 128;

/// Anthropic looks for a written prefix at the block boundaries up to 20 blocks before a
/// breakpoint (a message is one block or more: counting messages is generous to the reader).
const LOOKBACK: usize = 20;

/// How one vendor caches and bills.
#[derive(Clone, Copy)]
pub struct Table {
    pub model: &'static str,
    price: Price,
    breakpoints: bool,
}

/// The tables the replay reports: OpenAI's and Anthropic's caching, each at its list price.
pub fn tables() -> Vec<Table> {
    [("gpt-4o-mini", false), ("claude-sonnet-4-5", true)]
        .into_iter()
        .map(|(model, breakpoints)| Table {
            model,
            price: builtin_price(model).expect("a built-in price"),
            breakpoints,
        })
        .collect()
}

/// A prompt as the cache sees it: its text, role by role.
pub struct Prompt {
    text: String,
    /// Its breakpoints, as (bytes of `text`, messages) before them: the ends of the last two
    /// messages before the memory block, else of the last two messages.
    marks: Vec<(usize, usize)>,
}

impl Prompt {
    /// `block_header` starts lyss's memory block, when the prompt has one.
    pub fn of(messages: &[Message], block_header: &str) -> Self {
        let mut text = String::new();
        let mut ends = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let content = m.content.as_ref().map(|c| c.text()).unwrap_or_default();
            if content.starts_with(block_header) {
                break;
            }
            text.push_str(&format!("<{:?}>{content}\n", m.role));
            ends.push((text.len(), i + 1));
        }
        let marks = ends[ends.len().saturating_sub(2)..].to_vec();
        for m in &messages[ends.len()..] {
            let content = m.content.as_ref().map(|c| c.text()).unwrap_or_default();
            text.push_str(&format!("<{:?}>{content}\n", m.role));
        }
        Self { text, marks }
    }
}

/// One side's spend (lyss, or the plain gateway) under one table.
#[derive(Default, Clone, Copy)]
pub struct Spend {
    pub tokens: u64,
    pub cached: u64,
    pub written: u64,
    /// Nano-USD with the provider's cache, and without it.
    pub nusd: i64,
    pub nusd_uncached: i64,
}

impl Spend {
    pub fn add(&mut self, o: &Spend) {
        self.tokens += o.tokens;
        self.cached += o.cached;
        self.written += o.written;
        self.nusd += o.nusd;
        self.nusd_uncached += o.nusd_uncached;
    }

    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.tokens,
            "cached_share": self.cached as f64 / self.tokens.max(1) as f64,
            "written_share": self.written as f64 / self.tokens.max(1) as f64,
            "usd": self.nusd as f64 / 1e9,
            "usd_uncached": self.nusd_uncached as f64 / 1e9,
        })
    }
}

/// One conversation's cache at one vendor.
pub struct Cache {
    table: Table,
    model: String,
    previous: Option<String>,
    /// Prefixes written so far (Anthropic): their text and how many messages they hold.
    written: Vec<(String, usize)>,
}

impl Cache {
    /// `model` names the tokenizer prompts are counted with.
    pub fn new(table: Table, model: &str) -> Self {
        Self {
            table,
            model: model.to_owned(),
            previous: None,
            written: Vec::new(),
        }
    }

    /// Forgets everything: the next request finds the cache cold (hours or days later).
    pub fn expire(&mut self) {
        self.previous = None;
        self.written.clear();
    }

    fn count(&self, text: &str) -> u64 {
        tokens::count_text(&self.model, text)
    }

    /// Bills one prompt, and leaves the cache as the provider would after it.
    pub fn bill(&mut self, prompt: &Prompt) -> Spend {
        let total = self.count(&prompt.text);
        let (cached, written) = if self.table.breakpoints {
            let Some(&(last, last_messages)) = prompt.marks.last() else {
                return self.settle(prompt, total, 0, 0);
            };
            let read = self
                .written
                .iter()
                .filter(|(w, messages)| {
                    last_messages <= messages + LOOKBACK && prompt.text.starts_with(w.as_str())
                })
                .map(|(w, _)| w.len())
                .max()
                .unwrap_or(0);
            let cached = if read > 0 {
                self.count(&prompt.text[..read])
            } else {
                0
            };
            // What the breakpoints mark beyond what was read is written, once.
            let marked = self.count(&prompt.text[..last]);
            let written = if marked >= MIN_CACHED && last > read {
                for &(end, messages) in &prompt.marks {
                    if end > read && self.count(&prompt.text[..end]) >= MIN_CACHED {
                        self.written.push((prompt.text[..end].to_owned(), messages));
                    }
                }
                marked - cached
            } else {
                0
            };
            (cached, written)
        } else {
            let shared = self
                .previous
                .as_deref()
                .map_or(0, |p| common_prefix(p, &prompt.text));
            let shared = self.count(&prompt.text[..shared]);
            let cached = if total >= MIN_CACHED && shared >= MIN_CACHED {
                MIN_CACHED + (shared - MIN_CACHED) / OPENAI_STEP * OPENAI_STEP
            } else {
                0
            };
            (cached, 0)
        };
        self.settle(prompt, total, cached, written)
    }

    /// The spend of a prompt of `total` tokens, `cached` read and `written` to the cache.
    fn settle(&mut self, prompt: &Prompt, total: u64, cached: u64, written: u64) -> Spend {
        self.previous = Some(prompt.text.clone());
        let p = &self.table.price;
        let n = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
        let fresh = total.saturating_sub(cached + written);
        Spend {
            tokens: total,
            cached,
            written,
            nusd: n(fresh) * p.input + n(cached) * p.cached_input + n(written) * p.cache_write,
            nusd_uncached: n(total) * p.input,
        }
    }
}

/// Bytes two texts share at their start, at a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}
