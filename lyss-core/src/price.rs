//! Prices and money: integer nano-dollars (1e-9 USD), so that sums in the ledger and budget
//! arithmetic are exact (1 USD per 1M tokens is 1,000 nano-USD per token), and the built-in
//! list prices of common models. Below the policy and the model registry, which both use it.

use crate::wire::Usage;

/// Nano-dollars (1e-9 USD).
pub type NanoUsd = i64;

/// Converts nano-dollars to dollars for display.
pub fn nano_to_usd(n: NanoUsd) -> f64 {
    n as f64 / 1e9
}

/// Prices of one model, in nano-USD per token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: NanoUsd,
    pub output: NanoUsd,
    /// A prompt token read from the provider's prompt cache.
    pub cached_input: NanoUsd,
    /// A prompt token written to the provider's prompt cache (Anthropic bills writes at 1.25×
    /// input; OpenAI's automatic caching writes at the input price).
    pub cache_write: NanoUsd,
}

impl Price {
    /// Builds a price from USD per 1M tokens; cache writes cost the input price.
    pub fn per_mtok(input: f64, output: f64, cached_input: f64) -> Self {
        Self {
            input: usd_per_mtok(input),
            output: usd_per_mtok(output),
            cached_input: usd_per_mtok(cached_input),
            cache_write: usd_per_mtok(input),
        }
    }

    /// The same price with cache writes at `usd` per 1M tokens.
    pub fn with_cache_write(self, usd: f64) -> Self {
        Self {
            cache_write: usd_per_mtok(usd),
            ..self
        }
    }

    /// USD per 1M tokens (input, output, cached input), for display.
    pub fn as_per_mtok(&self) -> (f64, f64, f64) {
        (
            per_mtok_usd(self.input),
            per_mtok_usd(self.output),
            per_mtok_usd(self.cached_input),
        )
    }

    /// USD per 1M tokens written to the provider's prompt cache, for display.
    pub fn cache_write_per_mtok(&self) -> f64 {
        per_mtok_usd(self.cache_write)
    }

    /// The most one prompt token can cost (fresh, or written to the cache): what a budget
    /// reserves per prompt token, so that a cache write never settles above its reservation.
    pub fn prompt_worst(&self) -> NanoUsd {
        self.input.max(self.cache_write).max(self.cached_input)
    }

    /// The cost of a request with this usage: cache reads at the cached price, cache writes at
    /// the write price, the rest of the prompt at the input price.
    pub fn cost(&self, usage: &Usage) -> NanoUsd {
        let cached = usage.cached_tokens().min(usage.prompt_tokens);
        let written = usage.cache_write_tokens().min(usage.prompt_tokens - cached);
        let fresh = usage.prompt_tokens - cached - written;
        let t = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        t(fresh)
            .saturating_mul(self.input)
            .saturating_add(t(cached).saturating_mul(self.cached_input))
            .saturating_add(t(written).saturating_mul(self.cache_write))
            .saturating_add(t(usage.completion_tokens).saturating_mul(self.output))
    }

    /// What the provider's prompt cache saved on a request with this usage, against the same
    /// prompt billed uncached: reads at a discount, less what writes cost above the input
    /// price (negative when a written prefix was never read back).
    pub fn prompt_cache_saving(&self, usage: &Usage) -> NanoUsd {
        let uncached = Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            ..Usage::default()
        };
        self.cost(&uncached).saturating_sub(self.cost(usage))
    }
}

fn usd_per_mtok(usd: f64) -> NanoUsd {
    (usd * 1000.0).round() as NanoUsd
}

fn per_mtok_usd(n: NanoUsd) -> f64 {
    n as f64 / 1000.0
}

/// Built-in list prices (USD per 1M tokens: input, output, cached input, cache write) for
/// common models. Config overrides any of them per model.
const BUILTIN_PRICES: &[(&str, f64, f64, f64, f64)] = &[
    ("gpt-5", 1.25, 10.0, 0.125, 1.25),
    ("gpt-5-mini", 0.25, 2.0, 0.025, 0.25),
    ("gpt-5-nano", 0.05, 0.40, 0.005, 0.05),
    ("gpt-4.1", 2.0, 8.0, 0.50, 2.0),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10, 0.40),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025, 0.10),
    ("gpt-4o", 2.50, 10.0, 1.25, 2.50),
    ("gpt-4o-mini", 0.15, 0.60, 0.075, 0.15),
    ("o3", 2.0, 8.0, 0.50, 2.0),
    ("o3-mini", 1.10, 4.40, 0.55, 1.10),
    ("o4-mini", 1.10, 4.40, 0.275, 1.10),
    ("text-embedding-3-small", 0.02, 0.0, 0.02, 0.02),
    ("text-embedding-3-large", 0.13, 0.0, 0.13, 0.13),
    // Anthropic: reads at 0.1× input, five-minute cache writes at 1.25×.
    ("claude-opus-4-1", 15.0, 75.0, 1.50, 18.75),
    ("claude-sonnet-4-5", 3.0, 15.0, 0.30, 3.75),
    ("claude-sonnet-4", 3.0, 15.0, 0.30, 3.75),
    ("claude-haiku-4-5", 1.0, 5.0, 0.10, 1.25),
    ("claude-3-5-haiku", 0.80, 4.0, 0.08, 1.0),
];

/// The built-in price of an upstream model, if lyss knows it. Dated snapshots
/// (`gpt-4o-mini-2024-07-18`) match their base name.
pub fn builtin_price(upstream: &str) -> Option<Price> {
    BUILTIN_PRICES
        .iter()
        .filter(|(name, ..)| {
            upstream == *name
                || upstream.strip_prefix(name).is_some_and(|rest| {
                    rest.starts_with('-') && rest[1..].starts_with(|c: char| c.is_ascii_digit())
                })
        })
        .max_by_key(|(name, ..)| name.len())
        .map(|&(_, i, o, c, w)| Price::per_mtok(i, o, c).with_cache_write(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PromptTokensDetails;

    #[test]
    fn builtin_prices_match_snapshots_but_not_other_models() {
        let p = builtin_price("gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(p, Price::per_mtok(0.15, 0.60, 0.075));
        assert_eq!(builtin_price("gpt-4o").unwrap().input, 2500);
        assert!(builtin_price("gpt-4o-minister").is_none());
        assert!(builtin_price("llama3.2").is_none());
    }

    #[test]
    fn anthropic_cache_writes_cost_more_than_input_and_reads_less() {
        let p = builtin_price("claude-sonnet-4-5-20250929").unwrap();
        assert_eq!((p.input, p.cached_input, p.cache_write), (3000, 300, 3750));
        let mut extra = serde_json::Map::new();
        extra.insert("cache_creation_tokens".into(), 1000.into());
        let u = Usage {
            prompt_tokens: 3000,
            completion_tokens: 0,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(1500),
                extra,
            }),
            ..Default::default()
        };
        // 500 fresh × 3000 + 1500 read × 300 + 1000 written × 3750
        assert_eq!(p.cost(&u), 1_500_000 + 450_000 + 3_750_000);
        // Uncached the prompt is 9,000,000: the cache saved 3,300,000.
        assert_eq!(p.prompt_cache_saving(&u), 9_000_000 - 5_700_000);
        assert_eq!(p.prompt_worst(), 3750);
        // A write never read back is a loss.
        let written_only = Usage {
            prompt_tokens: 1000,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(0),
                extra: [("cache_creation_tokens".to_owned(), 1000.into())]
                    .into_iter()
                    .collect(),
            }),
            ..Default::default()
        };
        assert_eq!(p.prompt_cache_saving(&written_only), -750_000);
    }

    #[test]
    fn cost_bills_cached_tokens_at_cached_price() {
        let p = Price::per_mtok(1.0, 2.0, 0.5);
        let u = Usage {
            prompt_tokens: 1000,
            completion_tokens: 10,
            total_tokens: 1010,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(400),
                ..Default::default()
            }),
            ..Default::default()
        };
        // 600 × 1000 + 400 × 500 + 10 × 2000 nano-USD
        assert_eq!(p.cost(&u), 600_000 + 200_000 + 20_000);
    }
}
