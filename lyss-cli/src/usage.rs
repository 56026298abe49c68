//! `lyss usage`

use clap::Args;
use lyss_core::models::nano_to_usd;
use lyss_core::policy::{GroupBy, UsageQuery};
use time::{Duration, OffsetDateTime};

use crate::Ctx;
use crate::output::print;

#[derive(Debug, Args)]
pub struct Cmd {
    /// Group by workspace, user, key, model or day.
    #[arg(long, default_value = "workspace", value_parser = parse_group)]
    by: GroupBy,
    /// Only the last N minutes/hours/days/weeks (30m, 24h, 7d, 4w) or since a date (YYYY-MM-DD).
    #[arg(long, value_parser = parse_since)]
    since: Option<OffsetDateTime>,
}

fn parse_group(s: &str) -> Result<GroupBy, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("`{s}`: use workspace, user, key, model or day"))
}

/// `7d`, `24h`, `30m`, `2w`, or a date / RFC 3339 time.
pub fn parse_since(s: &str) -> Result<OffsetDateTime, String> {
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    if let Ok(n) = n.parse::<i64>() {
        let d = match unit {
            "m" => Some(Duration::minutes(n)),
            "h" => Some(Duration::hours(n)),
            "d" => Some(Duration::days(n)),
            "w" => Some(Duration::weeks(n)),
            _ => None,
        };
        if let Some(d) = d {
            return Ok(OffsetDateTime::now_utc() - d);
        }
    }
    crate::keys::parse_expiry(s).map_err(|_| {
        format!("`{s}`: use 30m, 24h, 7d, 4w, a date (YYYY-MM-DD) or an RFC 3339 time")
    })
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let policy = ctx.policy().await?;
    let rows = policy
        .usage(&UsageQuery {
            by: cmd.by,
            since: cmd.since,
        })
        .await?;
    print(
        ctx.json,
        &rows,
        &[
            "group",
            "requests",
            "errors",
            "prompt tokens",
            "completion tokens",
            "cost $",
            "memory saved tokens",
            "cache hits",
            "cache saved $",
        ],
        || {
            let mut out: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.group.clone(),
                        r.requests.to_string(),
                        r.errors.to_string(),
                        r.prompt_tokens.to_string(),
                        r.completion_tokens.to_string(),
                        format!("{:.6}", nano_to_usd(r.cost_nusd)),
                        r.memory_saved_tokens.to_string(),
                        r.cache_hits.to_string(),
                        format!("{:.6}", nano_to_usd(r.cache_saved_nusd)),
                    ]
                })
                .collect();
            let sum = |f: fn(&lyss_core::policy::UsageRow) -> i64| rows.iter().map(f).sum::<i64>();
            out.push(vec![
                "total".into(),
                sum(|r| r.requests).to_string(),
                sum(|r| r.errors).to_string(),
                sum(|r| r.prompt_tokens).to_string(),
                sum(|r| r.completion_tokens).to_string(),
                format!("{:.6}", nano_to_usd(sum(|r| r.cost_nusd))),
                sum(|r| r.memory_saved_tokens).to_string(),
                sum(|r| r.cache_hits).to_string(),
                format!("{:.6}", nano_to_usd(sum(|r| r.cache_saved_nusd))),
            ]);
            out
        },
    )
}
