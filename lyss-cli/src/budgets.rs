//! `lyss budget …` and `lyss limit …`

use clap::{Args, Subcommand};
use lyss_core::policy::{BudgetStatus, NewBudget, Period, Scope, Unit};
use lyss_core::price::nano_to_usd;
use time::OffsetDateTime;

use crate::Ctx;
use crate::keys::parse_expiry;
use crate::output::{print, when};

/// Exactly one of workspace, user or key.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A workspace (name or id).
    #[arg(long)]
    workspace: Option<String>,
    /// A user (name or id).
    #[arg(long)]
    user: Option<String>,
    /// A key (its public id).
    #[arg(long)]
    key: Option<String>,
}

impl Target {
    fn resolve(self) -> (Scope, String) {
        match (self.workspace, self.user, self.key) {
            (Some(w), _, _) => (Scope::Workspace, w),
            (_, Some(u), _) => (Scope::User, u),
            (_, _, Some(k)) => (Scope::Key, k),
            // clap's group guarantees one of the three.
            _ => (Scope::Key, String::new()),
        }
    }
}

/// Exactly one of a dollar or a token limit.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Amount {
    /// A limit in US dollars.
    #[arg(long)]
    usd: Option<f64>,
    /// A limit in tokens (prompt + completion).
    #[arg(long)]
    tokens: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create or replace the budget of a workspace, user or key. Hard: requests that would
    /// exceed it are refused before they are sent.
    Set {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        amount: Amount,
        /// none (default), daily, weekly or monthly — calendar-aligned.
        #[arg(long, default_value = "none")]
        period: String,
        /// Time zone for period boundaries (IANA name, e.g. Europe/Paris). Default UTC.
        #[arg(long)]
        tz: Option<String>,
        /// After this date (YYYY-MM-DD, 00:00 UTC) or RFC 3339 time the budget admits nothing.
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<OffsetDateTime>,
    },
    /// Budgets with what is spent, reserved and left in the current period.
    List,
    /// Delete a budget by id.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum LimitCmd {
    /// Set requests and/or tokens per minute for a workspace, user or key (omit both to clear).
    Set {
        #[command(flatten)]
        target: Target,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute (prompt + requested completion).
        #[arg(long)]
        tpm: Option<u32>,
    },
}

fn show(unit: Unit, amount: i64) -> String {
    match unit {
        Unit::Usd => format!("${:.4}", nano_to_usd(amount)),
        Unit::Tokens => amount.to_string(),
    }
}

fn row(b: &BudgetStatus) -> Vec<String> {
    let u = b.budget.unit;
    vec![
        b.budget.id.clone(),
        format!("{} {}", b.budget.scope.as_str(), b.budget.scope_name),
        u.as_str().into(),
        b.budget.period.as_str().into(),
        show(u, b.budget.limit),
        show(u, b.spent),
        show(u, b.reserved),
        show(u, b.remaining()),
        when(b.resets_at),
        when(b.budget.expires_at),
    ]
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let policy = ctx.policy().await?;
    match cmd {
        Cmd::Set {
            target,
            amount,
            period,
            tz,
            expires,
        } => {
            let (scope, target) = target.resolve();
            let (unit, limit) = match (amount.usd, amount.tokens) {
                (Some(usd), _) if usd.is_finite() && usd >= 0.0 => {
                    (Unit::Usd, (usd * 1e9).round() as i64)
                }
                (Some(_), _) => anyhow::bail!("--usd must be a positive amount"),
                (_, Some(t)) => (Unit::Tokens, i64::try_from(t)?),
                _ => anyhow::bail!("give --usd or --tokens"),
            };
            let budget = policy
                .set_budget(&NewBudget {
                    scope,
                    target,
                    unit,
                    limit,
                    period: Period::parse(&period)?,
                    tz,
                    expires_at: expires,
                })
                .await?;
            let all = policy.budgets(OffsetDateTime::now_utc()).await?;
            let status: Vec<_> = all
                .into_iter()
                .filter(|b| b.budget.id == budget.id)
                .collect();
            print(ctx.json, &status, HEADER, || {
                status.iter().map(row).collect()
            })
        }
        Cmd::List => {
            let all = policy.budgets(OffsetDateTime::now_utc()).await?;
            print(ctx.json, &all, HEADER, || all.iter().map(row).collect())
        }
        Cmd::Delete { id } => {
            policy.delete_budget(&id).await?;
            if !ctx.json {
                eprintln!("budget {id} deleted");
            }
            Ok(())
        }
    }
}

const HEADER: &[&str] = &[
    "id",
    "applies to",
    "unit",
    "period",
    "limit",
    "spent",
    "reserved",
    "left",
    "resets",
    "expires",
];

pub async fn run_limit(ctx: &Ctx, cmd: LimitCmd) -> anyhow::Result<()> {
    let policy = ctx.policy().await?;
    match cmd {
        LimitCmd::Set { target, rpm, tpm } => {
            let (scope, target) = target.resolve();
            policy.set_rate_limit(scope, &target, rpm, tpm).await?;
            if !ctx.json {
                let show = |v: Option<u32>| v.map_or("none".to_string(), |n| n.to_string());
                eprintln!(
                    "{} {target}: {} requests/min, {} tokens/min",
                    scope.as_str(),
                    show(rpm),
                    show(tpm)
                );
            }
            Ok(())
        }
    }
}
