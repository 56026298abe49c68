//! The ledger in SQL: its rows and their sums ([`crate::policy::Ledger`]).

/// Implements [`crate::policy::Ledger`] for a backend.
macro_rules! impl_sql_ledger {
    ($policy:ident, $row:ty) => {
        fn ledger_from_row(r: &$row) -> $crate::Result<$crate::policy::LedgerEntry> {
            use sqlx::Row as _;
            let at_ms: i64 = r.try_get("at_ms")?;
            let n = |c: &str| -> $crate::Result<u64> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
            Ok($crate::policy::LedgerEntry {
                at: $crate::clock::from_unix_ms(at_ms)?,
                request_id: r.try_get("request_id")?,
                workspace_id: r.try_get("workspace_id")?,
                user_id: r.try_get("user_id")?,
                key_id: r.try_get("key_id")?,
                endpoint: r.try_get("endpoint")?,
                model: r.try_get("model")?,
                provider: r.try_get("provider")?,
                upstream_model: r.try_get("upstream_model")?,
                stream: r.try_get("stream")?,
                prompt_tokens: n("prompt_tokens")?,
                prompt_tokens_original: n("prompt_tokens_original")?,
                completion_tokens: n("completion_tokens")?,
                cached_tokens: n("cached_tokens")?,
                cost_nusd: r.try_get("cost_nusd")?,
                latency_ms: r.try_get("latency_ms")?,
                status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(0),
                error: r.try_get("error")?,
                cache: r.try_get("cache")?,
                saved_tokens: n("saved_tokens")?,
                saved_nusd: r.try_get("saved_nusd")?,
                memory_saved_nusd: r.try_get("memory_saved_nusd")?,
                cache_write_tokens: n("cache_write_tokens")?,
                prompt_cache_saved_nusd: r.try_get("prompt_cache_saved_nusd")?,
            })
        }

        #[async_trait::async_trait]
        impl $crate::policy::Ledger for $policy {
            async fn ledger(
                &self,
                query: &$crate::policy::LedgerQuery,
            ) -> $crate::Result<Vec<$crate::policy::LedgerEntry>> {
                use $crate::clock::unix_ms;
                use $crate::policy::sql::LEDGER_COLUMNS;
                let rows = sqlx::query(&format!(
                    "SELECT {LEDGER_COLUMNS} FROM usage_ledger \
                     WHERE ($1 IS NULL OR at_ms >= $1) AND ($2 IS NULL OR key_id = $2) \
                     AND ($4 IS NULL OR at_ms < $4) \
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(query.since.map(unix_ms))
                .bind(query.key_id.as_deref())
                .bind(i64::from(query.limit.unwrap_or(1000)))
                .bind(query.until.map(unix_ms))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(ledger_from_row).collect()
            }

            async fn usage(
                &self,
                query: &$crate::policy::UsageQuery,
            ) -> $crate::Result<Vec<$crate::policy::UsageRow>> {
                use sqlx::Row as _;
                use $crate::policy::GroupBy;
                use $crate::clock::unix_ms;
                use $crate::policy::sql::day_label;
                let group = match query.by {
                    GroupBy::Workspace => "COALESCE(w.name, l.workspace_id)",
                    GroupBy::User => "COALESCE(u.name, l.user_id)",
                    GroupBy::Key => "l.key_id",
                    GroupBy::Model => "l.model",
                    GroupBy::Day => "CAST(l.at_ms / 86400000 AS TEXT)",
                };
                // A time series groups by bucket too (integer division: the same on both
                // databases; UTC).
                let bucket = match query.bucket {
                    Some(b) => format!("(l.at_ms / {0}) * {0}", b.millis()),
                    // Not a bare `0`: in ORDER BY that names a column position.
                    None => "CAST(0 AS BIGINT)".to_owned(),
                };
                let rows = sqlx::query(&format!(
                    "SELECT {bucket} AS bkt, {group} AS grp, COUNT(*) AS requests, \
                     CAST(SUM(CASE WHEN l.status >= 400 THEN 1 ELSE 0 END) AS BIGINT) AS errors, \
                     CAST(SUM(l.prompt_tokens) AS BIGINT) AS prompt_tokens, \
                     CAST(SUM(l.completion_tokens) AS BIGINT) AS completion_tokens, \
                     CAST(SUM(l.cost_nusd) AS BIGINT) AS cost_nusd, \
                     CAST(SUM(l.prompt_tokens_original - l.prompt_tokens) AS BIGINT) AS memory_saved, \
                     CAST(SUM(l.memory_saved_nusd) AS BIGINT) AS memory_saved_nusd, \
                     CAST(SUM(CASE WHEN l.cache IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS cache_hits, \
                     CAST(SUM(l.saved_tokens) AS BIGINT) AS cache_saved_tokens, \
                     CAST(SUM(l.saved_nusd) AS BIGINT) AS cache_saved, \
                     CAST(SUM(l.cached_tokens) AS BIGINT) AS cached_tokens, \
                     CAST(SUM(l.cache_write_tokens) AS BIGINT) AS cache_write_tokens, \
                     CAST(SUM(l.prompt_cache_saved_nusd) AS BIGINT) AS prompt_cache_saved \
                     FROM usage_ledger l LEFT JOIN workspaces w ON w.id = l.workspace_id \
                     LEFT JOIN users u ON u.id = l.user_id \
                     WHERE ($1 IS NULL OR l.at_ms >= $1) AND ($2 IS NULL OR l.at_ms < $2) \
                     GROUP BY {bucket}, {group} ORDER BY {bucket}, {group}"
                ))
                .bind(query.since.map(unix_ms))
                .bind(query.until.map(unix_ms))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let grp: String = r.try_get("grp")?;
                        let bkt: i64 = r.try_get("bkt")?;
                        Ok($crate::policy::UsageRow {
                            bucket: match query.bucket {
                                Some(_) => Some(
                                    $crate::clock::from_unix_ms(bkt)?,
                                ),
                                None => None,
                            },
                            group: if query.by == GroupBy::Day { day_label(&grp) } else { grp },
                            requests: r.try_get("requests")?,
                            errors: r.try_get("errors")?,
                            prompt_tokens: r.try_get("prompt_tokens")?,
                            completion_tokens: r.try_get("completion_tokens")?,
                            cost_nusd: r.try_get("cost_nusd")?,
                            memory_saved_tokens: r.try_get("memory_saved")?,
                            memory_saved_nusd: r.try_get("memory_saved_nusd")?,
                            cache_hits: r.try_get("cache_hits")?,
                            cache_saved_tokens: r.try_get("cache_saved_tokens")?,
                            cache_saved_nusd: r.try_get("cache_saved")?,
                            cached_tokens: r.try_get("cached_tokens")?,
                            cache_write_tokens: r.try_get("cache_write_tokens")?,
                            prompt_cache_saved_nusd: r.try_get("prompt_cache_saved")?,
                        })
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use impl_sql_ledger;
