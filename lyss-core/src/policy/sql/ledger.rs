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
                let rows = sqlx::query(&$crate::policy::sql::queries::ledger_rows())
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
                use $crate::clock::unix_ms;
                use $crate::policy::GroupBy;
                use $crate::policy::sql::day_label;
                let sql = $crate::policy::sql::queries::usage(
                    query.by,
                    query.bucket,
                    query.key_id.is_some(),
                );
                let mut q = sqlx::query(&sql)
                    .bind(query.since.map(unix_ms))
                    .bind(query.until.map(unix_ms));
                if let Some(key) = &query.key_id {
                    q = q.bind(key.as_str());
                }
                let rows = q.fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|r| {
                        let grp: String = r.try_get("grp")?;
                        let bkt: i64 = r.try_get("bkt")?;
                        Ok($crate::policy::UsageRow {
                            bucket: match query.bucket {
                                Some(_) => Some($crate::clock::from_unix_ms(bkt)?),
                                None => None,
                            },
                            group: if query.by == GroupBy::Day {
                                day_label(&grp)
                            } else {
                                grp
                            },
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
