//! `lyss usage`

use clap::Args;
use lyss_core::policy::{Bucket, GroupBy, UsageQuery, UsageRow};
use lyss_core::price::nano_to_usd;
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
    /// A time series: one row per group and hour or day (UTC).
    #[arg(long, value_parser = parse_bucket)]
    bucket: Option<Bucket>,
    /// No charts under the table.
    #[arg(long)]
    no_chart: bool,
}

fn parse_bucket(s: &str) -> Result<Bucket, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("`{s}`: use hour or day"))
}

/// Bars for a sparkline, lowest to highest.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of `values` (a space for 0, so quiet days read as gaps).
pub fn sparkline(values: &[i64]) -> String {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|&v| {
            if v <= 0 {
                ' '
            } else {
                let i = ((v as f64 / max as f64) * (BARS.len() - 1) as f64).round() as usize;
                BARS[i.min(BARS.len() - 1)]
            }
        })
        .collect()
}

/// Per group: spend, requests and savings per day over the period, as sparklines.
fn charts(daily: &[UsageRow], since: OffsetDateTime, until: OffsetDateTime) -> String {
    let day = |t: OffsetDateTime| t.unix_timestamp().div_euclid(86_400);
    let (first, last) = (day(since), day(until));
    let days = usize::try_from(last - first + 1).unwrap_or(1).clamp(1, 400);
    let mut groups: Vec<&str> = daily.iter().map(|r| r.group.as_str()).collect();
    groups.dedup();
    groups.sort_unstable();
    groups.dedup();
    let width = groups
        .iter()
        .map(|g| g.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "per day, {} → {} (UTC)\n{:width$}  {:days$}  {:days$}  {:days$}\n",
        since.date(),
        until.date(),
        "",
        "spend",
        "requests",
        "saved (memory + cache + provider cache)",
    );
    for g in groups {
        let mut series = [vec![0i64; days], vec![0i64; days], vec![0i64; days]];
        for r in daily.iter().filter(|r| r.group == g) {
            let Some(b) = r.bucket else { continue };
            let Ok(i) = usize::try_from(day(b) - first) else {
                continue;
            };
            if i < days {
                series[0][i] += r.cost_nusd;
                series[1][i] += r.requests;
                series[2][i] +=
                    r.cache_saved_nusd + r.memory_saved_nusd + r.prompt_cache_saved_nusd;
            }
        }
        out.push_str(&format!(
            "{g:width$}  {}  {}  {}\n",
            sparkline(&series[0]),
            sparkline(&series[1]),
            sparkline(&series[2])
        ));
    }
    out
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
            bucket: cmd.bucket,
            ..Default::default()
        })
        .await?;
    if let Some(bucket) = cmd.bucket {
        return print(
            ctx.json,
            &rows,
            &[
                "from",
                "group",
                "requests",
                "cost $",
                "memory saved $",
                "cache saved $",
                "provider cache saved $",
            ],
            || {
                rows.iter()
                    .map(|r| {
                        vec![
                            r.bucket.map_or_else(String::new, |b| match bucket {
                                Bucket::Day => b.date().to_string(),
                                Bucket::Hour => format!("{} {:02}:00", b.date(), b.hour()),
                            }),
                            r.group.clone(),
                            r.requests.to_string(),
                            format!("{:.6}", nano_to_usd(r.cost_nusd)),
                            format!("{:.6}", nano_to_usd(r.memory_saved_nusd)),
                            format!("{:.6}", nano_to_usd(r.cache_saved_nusd)),
                            format!("{:.6}", nano_to_usd(r.prompt_cache_saved_nusd)),
                        ]
                    })
                    .collect()
            },
        );
    }
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
            "memory saved $",
            "cache hits",
            "cache saved $",
            "provider cached tokens",
            "provider cache writes",
            "provider cache saved $",
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
                        format!("{:.6}", nano_to_usd(r.memory_saved_nusd)),
                        r.cache_hits.to_string(),
                        format!("{:.6}", nano_to_usd(r.cache_saved_nusd)),
                        r.cached_tokens.to_string(),
                        r.cache_write_tokens.to_string(),
                        format!("{:.6}", nano_to_usd(r.prompt_cache_saved_nusd)),
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
                format!("{:.6}", nano_to_usd(sum(|r| r.memory_saved_nusd))),
                sum(|r| r.cache_hits).to_string(),
                format!("{:.6}", nano_to_usd(sum(|r| r.cache_saved_nusd))),
                sum(|r| r.cached_tokens).to_string(),
                sum(|r| r.cache_write_tokens).to_string(),
                format!("{:.6}", nano_to_usd(sum(|r| r.prompt_cache_saved_nusd))),
            ]);
            out
        },
    )?;
    if !ctx.json && !cmd.no_chart && !rows.is_empty() {
        let until = OffsetDateTime::now_utc();
        // Two weeks by default: enough to see a trend in one line.
        let since = cmd.since.unwrap_or(until - Duration::days(13));
        let daily = policy
            .usage(&UsageQuery {
                by: if cmd.by == GroupBy::Day {
                    GroupBy::Workspace
                } else {
                    cmd.by
                },
                since: Some(since),
                bucket: Some(Bucket::Day),
                ..Default::default()
            })
            .await?;
        print!("\n{}", charts(&daily, since, until));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_largest_value_and_leave_gaps_for_nothing() {
        assert_eq!(sparkline(&[0, 1, 4, 8]), " ▂▅█");
        assert_eq!(sparkline(&[5, 5]), "██");
        assert_eq!(sparkline(&[]), "");
    }
}
