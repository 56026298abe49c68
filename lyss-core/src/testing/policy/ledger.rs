//! The ledger's part of the `Policy` conformance suite: rows, their sums, kept conversations.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::*;
use crate::policy::{GroupBy, LedgerEntry, LedgerQuery, Policy, Reservation, UsageQuery};

pub async fn ledger_rows_are_durable_and_read_back(policy: Arc<dyn Policy>) {
    let entry = |i: u64| LedgerEntry {
        at: OffsetDateTime::now_utc(),
        request_id: format!("req-{i}"),
        workspace_id: "ws".into(),
        user_id: "u".into(),
        key_id: if i.is_multiple_of(2) { "even" } else { "odd" }.into(),
        endpoint: "chat".into(),
        model: "m1".into(),
        provider: "p".into(),
        upstream_model: "up".into(),
        stream: i.is_multiple_of(3),
        prompt_tokens: i,
        prompt_tokens_original: i,
        completion_tokens: 2 * i,
        cached_tokens: 0,
        cost_nusd: 1000 * i as i64,
        latency_ms: 1.5,
        status: 200,
        error: None,
        cache: None,
        saved_tokens: 0,
        saved_nusd: 0,
        memory_saved_nusd: 0,
        cache_write_tokens: i / 2,
        prompt_cache_saved_nusd: -(i as i64),
    };
    // Many concurrent writers: every row lands exactly once.
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let policy = policy.clone();
            tokio::spawn(async move { policy.settle(&Reservation::default(), &entry(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("record");
    }
    let rows = policy
        .ledger(&LedgerQuery {
            limit: Some(10_000),
            ..LedgerQuery::default()
        })
        .await
        .expect("read");
    assert_eq!(rows.len(), 200);
    let total: i64 = rows.iter().map(|r| r.cost_nusd).sum();
    assert_eq!(total, 1000 * (0..200).sum::<i64>());
    let odd = policy
        .ledger(&LedgerQuery {
            key_id: Some("odd".into()),
            limit: Some(10_000),
            ..LedgerQuery::default()
        })
        .await
        .expect("read odd");
    assert_eq!(odd.len(), 100);
    let one = rows
        .iter()
        .find(|r| r.request_id == "req-9")
        .expect("row 9");
    assert_eq!(one, &{
        let mut e = entry(9);
        e.at = one.at;
        e
    });
    // A window: `since` inclusive, `until` exclusive, to the millisecond.
    let at = time::macros::datetime!(2020-01-01 00:00:00.5 UTC);
    let old = LedgerEntry {
        at,
        request_id: "req-old".into(),
        ..entry(1)
    };
    policy
        .settle(&Reservation::default(), &old)
        .await
        .expect("record old");
    let ms = Duration::milliseconds(1);
    let window = |since: OffsetDateTime, until: OffsetDateTime| {
        let policy = policy.clone();
        async move {
            policy
                .ledger(&LedgerQuery {
                    since: Some(since),
                    until: Some(until),
                    ..LedgerQuery::default()
                })
                .await
                .expect("window")
                .into_iter()
                .map(|r| r.request_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(window(at, at + ms).await, ["req-old"]);
    assert_eq!(window(at - ms, at).await, Vec::<String>::new());
    assert_eq!(
        window(at + ms, at + Duration::seconds(1)).await,
        Vec::<String>::new()
    );
}

pub async fn usage_reports_group_the_ledger(policy: Arc<dyn Policy>) {
    let (who, _) = principal(policy.as_ref()).await;
    for (p, c) in [(10, 1), (20, 2), (30, 3)] {
        let mut e = spent_entry(&who, p, c);
        if p == 30 {
            e.status = 502;
            e.model = "m2".into();
        }
        policy
            .settle(&Reservation::default(), &e)
            .await
            .expect("record");
    }
    let by_ws = policy
        .usage(&UsageQuery {
            by: GroupBy::Workspace,
            since: None,
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(by_ws.len(), 1);
    assert_eq!(by_ws[0].group, "team");
    assert_eq!((by_ws[0].requests, by_ws[0].errors), (3, 1));
    assert_eq!(
        (by_ws[0].prompt_tokens, by_ws[0].completion_tokens),
        (60, 6)
    );
    assert_eq!(by_ws[0].cost_nusd, 60 * 1000 + 6 * 2000);
    let by_model = policy
        .usage(&UsageQuery {
            by: GroupBy::Model,
            since: None,
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(
        by_model
            .iter()
            .map(|r| r.group.as_str())
            .collect::<Vec<_>>(),
        vec!["m1", "m2"]
    );
    let by_user = policy
        .usage(&UsageQuery {
            by: GroupBy::User,
            since: None,
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(by_user[0].group, "ann");
    let by_day = policy
        .usage(&UsageQuery {
            by: GroupBy::Day,
            since: None,
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(
        by_day[0].group,
        OffsetDateTime::now_utc().date().to_string()
    );
    let future = policy
        .usage(&UsageQuery {
            by: GroupBy::Key,
            since: Some(OffsetDateTime::now_utc() + Duration::hours(1)),
            ..Default::default()
        })
        .await
        .expect("usage");
    assert!(future.is_empty());

    // A time series: rows an hour apart land in their own hour; `until` bounds it.
    let mut old = spent_entry(&who, 5, 5);
    old.at -= Duration::hours(3);
    old.memory_saved_nusd = 777;
    old.cached_tokens = 3;
    old.cache_write_tokens = 2;
    old.prompt_cache_saved_nusd = -55;
    policy
        .settle(&Reservation::default(), &old)
        .await
        .expect("record");
    let series = policy
        .usage(&UsageQuery {
            by: GroupBy::Model,
            bucket: Some(crate::policy::Bucket::Hour),
            ..Default::default()
        })
        .await
        .expect("usage");
    let hour = |t: OffsetDateTime| {
        t.replace_minute(0)
            .and_then(|t| t.replace_second(0))
            .and_then(|t| t.replace_nanosecond(0))
            .unwrap()
    };
    let first = &series[0];
    assert_eq!(
        (first.bucket, first.requests, first.memory_saved_nusd),
        (Some(hour(old.at)), 1, 777)
    );
    // Provider prompt caching is summed too (a write that saved nothing is a negative saving).
    assert_eq!(
        (
            first.cached_tokens,
            first.cache_write_tokens,
            first.prompt_cache_saved_nusd
        ),
        (3, 2, -55)
    );
    assert!(
        series[1..]
            .iter()
            .all(|r| r.bucket == Some(hour(OffsetDateTime::now_utc()))
                || r.bucket == Some(hour(OffsetDateTime::now_utc() - Duration::minutes(1))))
    );
    assert_eq!(series.iter().map(|r| r.requests).sum::<i64>(), 4);
    let until = policy
        .usage(&UsageQuery {
            by: GroupBy::Workspace,
            until: Some(OffsetDateTime::now_utc() - Duration::hours(1)),
            ..Default::default()
        })
        .await
        .expect("usage");
    assert_eq!(until[0].requests, 1);

    // One key's rows only: another key's spend is not summed in.
    let mut other = spent_entry(&who, 7, 7);
    other.key_id = "another-key".into();
    policy
        .settle(&Reservation::default(), &other)
        .await
        .expect("record");
    let mine = |key: &str| UsageQuery {
        by: GroupBy::Key,
        key_id: Some(key.into()),
        ..Default::default()
    };
    let own = policy.usage(&mine(&who.key_id)).await.expect("usage");
    assert_eq!(own.len(), 1);
    assert_eq!(
        (own[0].group.as_str(), own[0].requests),
        (who.key_id.as_str(), 4)
    );
    let theirs = policy.usage(&mine("another-key")).await.expect("usage");
    assert_eq!((theirs.len(), theirs[0].prompt_tokens), (1, 7));
    assert!(
        policy
            .usage(&mine("no-such-key"))
            .await
            .expect("usage")
            .is_empty()
    );
}
