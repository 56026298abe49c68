//! Budgets and reservations in SQL ([`crate::policy::Budgets`]): reservations, top-ups and
//! settlements go through the writer task (`writer.rs`) or the counters; definitions are read
//! and written here.

/// Implements [`crate::policy::Budgets`] for a backend, on the writer task of `writer.rs`.
macro_rules! impl_sql_budgets {
    ($policy:ident, $pool:ty, $row:ty) => {
        /// Every budget's definition (for counters kept outside the tables).
        #[allow(dead_code)]
        pub(crate) async fn all_budgets(
            pool: &$pool,
        ) -> $crate::Result<Vec<$crate::policy::Budget>> {
            let rows = sqlx::query($crate::policy::sql::queries::ALL_BUDGETS)
                .fetch_all(pool)
                .await?;
            rows.iter().map(budget_from_row).collect()
        }

        fn budget_from_row(r: &$row) -> $crate::Result<$crate::policy::Budget> {
            use sqlx::Row as _;
            use $crate::policy::budget::{Period, Scope, Unit};
            let scope_id: String = r.try_get("scope_id")?;
            Ok($crate::policy::Budget {
                id: r.try_get("id")?,
                scope: Scope::parse(&r.try_get::<String, _>("scope")?)?,
                scope_name: scope_id.clone(),
                scope_id,
                unit: Unit::parse(&r.try_get::<String, _>("unit")?)?,
                limit: r.try_get("limit_amount")?,
                period: Period::parse(&r.try_get::<String, _>("period")?)?,
                tz: r.try_get("tz")?,
                expires_at: $crate::policy::sql::opt_ts(r.try_get("expires_at")?)?,
            })
        }

        #[async_trait::async_trait]
        impl $crate::policy::Budgets for $policy {
            async fn reserve(
                &self,
                payer: $crate::policy::Payer<'_>,
                ask: &$crate::policy::Ask,
                now: time::OffsetDateTime,
                ttl: std::time::Duration,
            ) -> $crate::Result<$crate::policy::Reservation> {
                if let Some(counters) = self.counters() {
                    return counters.reserve(payer, ask, now, ttl).await;
                }
                self.may_reserve()?;
                let payer = $crate::policy::budget::writer::OwnedPayer::from(payer);
                let ask = *ask;
                $crate::policy::budget::writer::submit(&self.writer, |done| {
                    $crate::policy::budget::writer::Job::Reserve {
                        payer,
                        ask,
                        now,
                        ttl,
                        done,
                    }
                })
                .await
            }

            async fn top_up(
                &self,
                reservation: &$crate::policy::Reservation,
                price: $crate::price::Price,
                want: u32,
            ) -> $crate::Result<u32> {
                if reservation.holds.is_empty() || want == 0 {
                    return Ok(want);
                }
                if let Some(counters) = self.counters() {
                    return counters.top_up(reservation, price, want).await;
                }
                $crate::policy::budget::writer::submit(&self.writer, |done| {
                    $crate::policy::budget::writer::Job::TopUp {
                        reservation: Box::new(reservation.clone()),
                        price,
                        want,
                        done,
                    }
                })
                .await
            }

            async fn settle(
                &self,
                reservation: &$crate::policy::Reservation,
                entry: &$crate::policy::LedgerEntry,
            ) -> $crate::Result<$crate::policy::BudgetLeft> {
                if let Some(counters) = self.counters() {
                    return counters.settle(reservation, entry).await;
                }
                $crate::policy::budget::writer::submit(&self.writer, |done| {
                    $crate::policy::budget::writer::Job::Settle {
                        reservation: Box::new(reservation.clone()),
                        entry: Box::new(entry.clone()),
                        done,
                    }
                })
                .await
            }

            async fn release_expired(&self, now: time::OffsetDateTime) -> $crate::Result<u64> {
                if let Some(counters) = self.counters() {
                    return counters.release_expired(now).await;
                }
                $crate::policy::budget::writer::submit(&self.writer, |done| {
                    $crate::policy::budget::writer::Job::Reap { now, done }
                })
                .await
            }

            async fn set_budget(
                &self,
                new: &$crate::policy::NewBudget,
            ) -> $crate::Result<$crate::policy::Budget> {
                use $crate::policy::sql::{new_id, now_secs};
                if new.limit < 0 {
                    return Err($crate::Error::invalid_param(
                        "a budget's limit cannot be negative",
                        "limit",
                    ));
                }
                // Rejects an unknown time zone before anything is stored.
                new.period
                    .bounds(time::OffsetDateTime::now_utc(), new.tz.as_deref())?;
                let scope_id = self.scope_id(new.scope, &new.target).await?;
                let id: String = sqlx::query_scalar($crate::policy::sql::queries::UPSERT_BUDGET)
                    .bind(new_id("b"))
                    .bind(new.scope.as_str())
                    .bind(&scope_id)
                    .bind(new.unit.as_str())
                    .bind(new.limit)
                    .bind(new.period.as_str())
                    .bind(&new.tz)
                    .bind(new.expires_at.map(|t| t.unix_timestamp()))
                    .bind(now_secs().unix_timestamp())
                    .fetch_one(&self.pool)
                    .await?;
                if let Some(counters) = self.counters() {
                    counters.definitions_changed();
                }
                Ok($crate::policy::Budget {
                    id,
                    scope: new.scope,
                    scope_name: new.target.clone(),
                    scope_id,
                    unit: new.unit,
                    limit: new.limit,
                    period: new.period,
                    tz: new.tz.clone(),
                    expires_at: new.expires_at,
                })
            }

            async fn delete_budget(&self, id: &str) -> $crate::Result<()> {
                let done = sqlx::query($crate::policy::sql::queries::DELETE_BUDGET)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::Error::NotFound(format!("budget `{id}`")));
                }
                if let Some(counters) = self.counters() {
                    counters.definitions_changed();
                }
                Ok(())
            }

            async fn budgets(
                &self,
                now: time::OffsetDateTime,
            ) -> $crate::Result<Vec<$crate::policy::BudgetStatus>> {
                use sqlx::Row as _;
                let rows = sqlx::query($crate::policy::sql::queries::BUDGETS_NAMED)
                    .fetch_all(&self.pool)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let mut budget = budget_from_row(r)?;
                    if let Some(name) = r.try_get::<Option<String>, _>("scope_name")? {
                        budget.scope_name = name;
                    }
                    let (period_start, resets) = budget.period.bounds(now, budget.tz.as_deref())?;
                    let (spent, reserved) =
                        sqlx::query_as::<_, (i64, i64)>($crate::policy::sql::queries::BUDGET_USAGE)
                            .bind(&budget.id)
                            .bind(period_start)
                            .fetch_optional(&self.pool)
                            .await?
                            .unwrap_or((0, 0));
                    out.push($crate::policy::BudgetStatus {
                        budget,
                        period_start,
                        resets_at: $crate::policy::sql::opt_ts(resets)?,
                        spent,
                        reserved,
                    });
                }
                if let Some(counters) = self.counters() {
                    counters.overlay(&mut out).await?;
                }
                Ok(out)
            }
        }
    };
}

pub(crate) use impl_sql_budgets;
