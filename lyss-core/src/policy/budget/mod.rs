//! Budgets: what they are, which period a moment falls in, and the admission arithmetic.
//!
//! Everything here is pure so that every policy backend admits and settles the same way; the
//! backends only make it atomic (one SQLite write transaction, one Postgres transaction).
//! Amounts are integers: nano-USD for USD budgets, tokens for token budgets.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{BudgetRefusal, Error, Result};
use crate::price::{NanoUsd, Price, nano_to_usd};

/// What a budget or a rate limit is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Workspace,
    User,
    Key,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Workspace => "workspace",
            Scope::User => "user",
            Scope::Key => "key",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "workspace" => Ok(Scope::Workspace),
            "user" => Ok(Scope::User),
            "key" => Ok(Scope::Key),
            other => Err(Error::invalid_param(
                format!("unknown scope `{other}` (workspace, user, key)"),
                "scope",
            )),
        }
    }
}

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Nano-dollars (display: USD).
    Usd,
    Tokens,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Usd => "usd",
            Unit::Tokens => "tokens",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "usd" => Ok(Unit::Usd),
            "tokens" => Ok(Unit::Tokens),
            other => Err(Error::invalid_param(
                format!("unknown unit `{other}` (usd, tokens)"),
                "unit",
            )),
        }
    }

    /// An amount for people: `$1.234567` or `1234 tokens`.
    pub fn show(self, amount: i64) -> String {
        match self {
            Unit::Usd => format!("${:.6}", nano_to_usd(amount)),
            Unit::Tokens => format!("{amount} tokens"),
        }
    }
}

/// How often a budget starts again. Periods are calendar-aligned (midnight, Monday, the 1st)
/// in the budget's time zone, UTC unless one is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    #[default]
    None,
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::None => "none",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Period::None),
            "daily" => Ok(Period::Daily),
            "weekly" => Ok(Period::Weekly),
            "monthly" => Ok(Period::Monthly),
            other => Err(Error::invalid_param(
                format!("unknown period `{other}` (none, daily, weekly, monthly)"),
                "period",
            )),
        }
    }

    /// The period containing `now`: its start (unix seconds; 0 for `None`) and, if it ends,
    /// when the next one begins.
    pub fn bounds(self, now: OffsetDateTime, tz: Option<&str>) -> Result<(i64, Option<i64>)> {
        use jiff::ToSpan as _;
        let bad = |e: jiff::Error| Error::Internal(format!("period arithmetic: {e}"));
        let tz = match tz {
            Some(name) => jiff::tz::TimeZone::get(name)
                .map_err(|e| Error::invalid_param(format!("time zone `{name}`: {e}"), "tz"))?,
            None => jiff::tz::TimeZone::UTC,
        };
        let date = jiff::Timestamp::from_second(now.unix_timestamp())
            .map_err(bad)?
            .to_zoned(tz.clone())
            .date();
        let (start, end) = match self {
            Period::None => return Ok((0, None)),
            Period::Daily => (date, date.tomorrow().map_err(bad)?),
            Period::Weekly => {
                let monday = date
                    .checked_sub(i64::from(date.weekday().to_monday_zero_offset()).days())
                    .map_err(bad)?;
                (monday, monday.checked_add(7.days()).map_err(bad)?)
            }
            Period::Monthly => {
                let first = date.first_of_month();
                (first, first.checked_add(1.month()).map_err(bad)?)
            }
        };
        let secs = |d: jiff::civil::Date| -> Result<i64> {
            Ok(d.to_zoned(tz.clone()).map_err(bad)?.timestamp().as_second())
        };
        Ok((secs(start)?, Some(secs(end)?)))
    }
}

/// A budget as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub id: String,
    pub scope: Scope,
    pub scope_id: String,
    /// The workspace, user or key id's readable name (for messages and tables).
    pub scope_name: String,
    pub unit: Unit,
    /// Nano-USD or tokens.
    pub limit: i64,
    pub period: Period,
    /// IANA time zone for period boundaries; UTC when unset.
    pub tz: Option<String>,
    /// After this instant the budget admits nothing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

impl Budget {
    /// `user ann daily budget of $5.000000`
    pub fn describe(&self) -> String {
        let period = match self.period {
            Period::None => String::new(),
            p => format!("{} ", p.as_str()),
        };
        format!(
            "{} `{}` {period}budget of {}",
            self.scope.as_str(),
            self.scope_name,
            self.unit.show(self.limit)
        )
    }
}

/// What is needed to create or replace a budget. One budget exists per
/// (scope, target, unit, period); setting it again replaces its limit, time zone and expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBudget {
    pub scope: Scope,
    /// Name or id of the workspace or user; public id of the key.
    pub target: String,
    pub unit: Unit,
    pub limit: i64,
    #[serde(default)]
    pub period: Period,
    #[serde(default)]
    pub tz: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A budget with its usage in the current period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    #[serde(flatten)]
    pub budget: Budget,
    /// Start of the current period (unix seconds; 0 when the budget has no period).
    pub period_start: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resets_at: Option<OffsetDateTime>,
    pub spent: i64,
    pub reserved: i64,
}

impl BudgetStatus {
    pub fn remaining(&self) -> i64 {
        self.budget.limit - self.spent - self.reserved
    }
}

/// The smallest answer worth sending: with less room than this the request is refused.
pub const MIN_OUTPUT_TOKENS: u32 = 16;

/// Output cap assumed for models whose own cap is not configured or built in.
pub const DEFAULT_OUTPUT_CAP: u32 = 16_384;

/// The worst case a request can cost, before it is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ask {
    pub prompt_tokens: u64,
    /// `max_completion_tokens` or `max_tokens` of the request, if set.
    pub requested_output: Option<u32>,
    /// The model's output cap.
    pub output_cap: u32,
    pub price: Price,
    /// `Some`: the answer is counted as it streams and its reservation topped up as it grows
    /// ([`crate::policy::Budgets::top_up`]), so a request without an output cap reserves only
    /// this first share of it. `None`: the whole possible answer is reserved up front.
    pub grows: Option<FirstShare>,
}

/// How much of an uncapped answer is reserved before it starts: `tokens`, but never more than
/// `share` of what the tightest budget has left — so that concurrent requests on a small budget
/// each get a turn instead of the first one holding all of it. An answer whose whole possible
/// length is itself within that share is reserved whole: growing it would gain nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstShare {
    pub tokens: u32,
    /// In (0, 1].
    pub share: f64,
}

impl Default for FirstShare {
    fn default() -> Self {
        Self {
            tokens: 512,
            share: 0.05,
        }
    }
}

/// What admission decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Output tokens reserved for.
    pub output: u32,
    /// The most output tokens the answer may grow to (`output` unless the ask grows).
    pub ceiling: u32,
    /// `Some(n)`: the request had no output cap and the budgets allow less than the model's —
    /// send `max_tokens = n` upstream.
    pub set_max_tokens: Option<u32>,
    /// Amount to reserve on each budget, in the order given.
    pub amounts: Vec<i64>,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// (fixed cost of the prompt, cost per output token) of a request on a budget.
fn costs(unit: Unit, ask: &Ask) -> (i64, i64) {
    let fixed = match unit {
        // A prompt may be written to the provider's cache, at more than the input price.
        Unit::Usd => to_i64(ask.prompt_tokens).saturating_mul(ask.price.prompt_worst()),
        Unit::Tokens => to_i64(ask.prompt_tokens),
    };
    (fixed, per_output_token(unit, &ask.price))
}

/// The amount a settled request spends on a budget of `unit`.
pub fn spend(unit: Unit, cost_nusd: NanoUsd, prompt_tokens: u64, completion_tokens: u64) -> i64 {
    match unit {
        Unit::Usd => cost_nusd,
        Unit::Tokens => to_i64(prompt_tokens.saturating_add(completion_tokens)),
    }
}

fn refused(s: &BudgetStatus, message: String, resets_at: Option<OffsetDateTime>) -> Error {
    Error::BudgetExceeded(Box::new(BudgetRefusal {
        message,
        budget_id: s.budget.id.clone(),
        scope: s.budget.scope.as_str(),
        scope_name: s.budget.scope_name.clone(),
        limit: s.budget.limit,
        unit: s.budget.unit.as_str(),
        spent: s.spent,
        reserved: s.reserved,
        resets_at,
    }))
}

fn refusal(s: &BudgetStatus, why: &str) -> Error {
    let resets = s
        .resets_at
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(|t| format!(" It resets at {t}."))
        .unwrap_or_else(|| " It does not reset.".into());
    let message = format!(
        "Budget exceeded: {} ({why}; spent {}, reserved {}).{resets}",
        s.budget.describe(),
        s.budget.unit.show(s.spent),
        s.budget.unit.show(s.reserved),
    );
    refused(s, message, s.resets_at)
}

/// Decides whether every budget admits the request, and how much to reserve on each.
/// All or nothing: one refusing budget refuses the request.
pub fn admit(states: &[BudgetStatus], ask: &Ask, now: OffsetDateTime) -> Result<Admitted> {
    // The largest output every budget can pay for.
    let mut affordable = u64::MAX;
    let mut tightest: Option<&BudgetStatus> = None;
    for s in states {
        if let Some(exp) = s.budget.expires_at
            && exp <= now
        {
            let message = format!("Budget expired: {} expired at {exp}.", s.budget.describe());
            return Err(refused(s, message, None));
        }
        let (fixed, per_out) = costs(s.budget.unit, ask);
        let room = s.remaining().saturating_sub(fixed);
        if room < 0 {
            return Err(refusal(s, "the prompt alone does not fit"));
        }
        let here = if per_out == 0 {
            u64::MAX
        } else {
            (room / per_out) as u64
        };
        if here < affordable {
            affordable = here;
            tightest = Some(s);
        }
    }
    let (ceiling, set_max_tokens) = match ask.requested_output {
        Some(req) => {
            if u64::from(req) > affordable
                && let Some(s) = tightest
            {
                return Err(refusal(
                    s,
                    &format!("max_tokens {req} does not fit; at most {affordable} would"),
                ));
            }
            (req, None)
        }
        None if affordable >= u64::from(ask.output_cap) => (ask.output_cap, None),
        None => {
            let n = affordable as u32;
            if n < MIN_OUTPUT_TOKENS
                && let Some(s) = tightest
            {
                return Err(refusal(s, "not even a minimal answer fits"));
            }
            (n, Some(n))
        }
    };
    // An answer that may grow reserves its whole ceiling when that is a small share of what
    // is left (nothing to gain), and only a first share of it otherwise.
    let output = match (ask.grows, ask.requested_output) {
        (Some(first), None) => {
            let share = (affordable.min(u64::from(u32::MAX)) as f64 * first.share) as u64;
            if u64::from(ceiling) <= share {
                ceiling
            } else {
                let first = u64::from(first.tokens)
                    .min(share)
                    .max(u64::from(MIN_OUTPUT_TOKENS));
                ceiling.min(first as u32)
            }
        }
        _ => ceiling,
    };
    let amounts = states
        .iter()
        .map(|s| {
            let (fixed, per_out) = costs(s.budget.unit, ask);
            fixed.saturating_add(i64::from(output).saturating_mul(per_out))
        })
        .collect();
    Ok(Admitted {
        output,
        ceiling,
        set_max_tokens,
        amounts,
    })
}

/// Cost of one more output token on a budget of `unit`.
pub fn per_output_token(unit: Unit, price: &Price) -> i64 {
    match unit {
        Unit::Usd => price.output,
        Unit::Tokens => 1,
    }
}

/// The most output tokens, up to `want`, that fit in every budget's `room` (what it has left
/// after spent and reserved) — a top-up is all or nothing across budgets, token by token.
pub fn grant(rooms: &[(Unit, i64)], price: &Price, want: u32) -> u32 {
    rooms
        .iter()
        .map(|&(unit, room)| match per_output_token(unit, price) {
            0 => u64::from(want),
            per => (room.max(0) / per) as u64,
        })
        .fold(u64::from(want), u64::min) as u32
}

pub(crate) mod state;
pub(crate) mod writer;

#[cfg(test)]
mod tests;
