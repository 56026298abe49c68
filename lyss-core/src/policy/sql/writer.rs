//! The budget writer in SQL: the budget transaction ([`crate::policy::budget::writer::BudgetTx`]) and
//! the writer task that commits reservations and settlements in groups (the protocol and the
//! algorithm it runs are in [`crate::policy::budget::writer`] and [`crate::policy::budget::state`]).

/// Implements the budget transaction and the writer task for a backend (`$begin` opens a write
/// transaction; `$locks_rows`: other writers run at the same time, so reads lock their rows).
macro_rules! impl_sql_writer {
    ($policy:ident, $db:ty, $pool:ty, $conn:ty, $begin:expr, $locks_rows:expr) => {
        struct Tx<'a>(&'a mut $conn);

        /// `FOR UPDATE` where other writers can run at the same time (Postgres); SQLite's
        /// `BEGIN IMMEDIATE` already serializes writers.
        const FOR_UPDATE: &str = if $locks_rows {
            $crate::policy::sql::queries::FOR_UPDATE
        } else {
            ""
        };

        impl $crate::policy::budget::writer::BudgetTx for Tx<'_> {
            async fn budgets_for(
                &mut self,
                scope_ids: &[&str],
            ) -> $crate::Result<Vec<$crate::policy::Budget>> {
                let mut q =
                    sqlx::QueryBuilder::<$db>::new($crate::policy::sql::queries::BUDGETS_OF_SCOPES);
                let mut ids = q.separated(", ");
                for id in scope_ids {
                    ids.push_bind(*id);
                }
                q.push(")");
                let rows = q.build().fetch_all(&mut *self.0).await?;
                rows.iter().map(budget_from_row).collect()
            }

            async fn usage_rows(
                &mut self,
                keys: &[&$crate::policy::budget::state::UsageKey],
            ) -> $crate::Result<Vec<($crate::policy::budget::state::UsageKey, (i64, i64))>> {
                // Creates missing rows and locks them (Postgres), in the order given.
                let mut q =
                    sqlx::QueryBuilder::<$db>::new($crate::policy::sql::queries::LOCK_USAGE_ROWS);
                q.push_values(keys, |mut row, (budget_id, start)| {
                    row.push_bind(budget_id).push_bind(*start);
                });
                q.push($crate::policy::sql::queries::LOCK_USAGE_ROWS_END);
                let rows = q
                    .build_query_as::<(String, i64, i64, i64)>()
                    .fetch_all(&mut *self.0)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(b, p, s, r)| ((b, p), (s, r)))
                    .collect())
            }

            async fn write_back(
                &mut self,
                w: &$crate::policy::budget::writer::WriteBack<'_>,
            ) -> $crate::Result<()> {
                if $locks_rows {
                    // Postgres: one statement, one round trip — each write a data-modifying
                    // `WITH` part (their rows never overlap), the ledger rows the main one.
                    let mut q = sqlx::QueryBuilder::<$db>::new("");
                    let mut parts = 0;
                    let mut part = |q: &mut sqlx::QueryBuilder<'_, $db>, name: &str| {
                        q.push(if parts == 0 { "WITH " } else { ", " });
                        q.push(name);
                        q.push(" AS (");
                        parts += 1;
                    };
                    if !w.usage.is_empty() {
                        part(&mut q, "u");
                        push_usage(&mut q, &w.usage);
                        q.push(")");
                    }
                    if !w.gone.is_empty() {
                        part(&mut q, "d");
                        push_delete_holds(&mut q, &w.gone);
                        q.push(")");
                    }
                    if !w.put.is_empty() {
                        part(&mut q, "h");
                        push_put_holds(&mut q, &w.put);
                        q.push(")");
                    }
                    if !w.ledger.is_empty() {
                        q.push(" ");
                        push_ledger(&mut q, &w.ledger);
                    } else if parts > 0 {
                        q.push($crate::policy::sql::queries::WITH_NOTHING_MORE);
                    } else {
                        return Ok(());
                    }
                    q.build().execute(&mut *self.0).await?;
                } else {
                    // SQLite has no writes inside `WITH`; its statements are calls into this
                    // process, not round trips.
                    if !w.usage.is_empty() {
                        let mut q = sqlx::QueryBuilder::<$db>::new("");
                        push_usage(&mut q, &w.usage);
                        q.build().execute(&mut *self.0).await?;
                    }
                    if !w.gone.is_empty() {
                        let mut q = sqlx::QueryBuilder::<$db>::new("");
                        push_delete_holds(&mut q, &w.gone);
                        q.build().execute(&mut *self.0).await?;
                    }
                    if !w.put.is_empty() {
                        let mut q = sqlx::QueryBuilder::<$db>::new("");
                        push_put_holds(&mut q, &w.put);
                        q.build().execute(&mut *self.0).await?;
                    }
                    if !w.ledger.is_empty() {
                        ledger_insert(&w.ledger)
                            .build()
                            .execute(&mut *self.0)
                            .await?;
                    }
                }
                Ok(())
            }

            async fn holds_of(
                &mut self,
                reservation_ids: &[&str],
            ) -> $crate::Result<Vec<$crate::policy::budget::state::HoldRow>> {
                let mut q =
                    sqlx::QueryBuilder::<$db>::new($crate::policy::sql::queries::HOLDS_BY_ID);
                let mut ids = q.separated(", ");
                for id in reservation_ids {
                    ids.push_bind(*id);
                }
                q.push(")");
                q.push(FOR_UPDATE);
                let rows = q
                    .build_query_as::<(String, String, i64, i64, i64)>()
                    .fetch_all(&mut *self.0)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(reservation_id, budget_id, period_start, amount, expires_at)| {
                            $crate::policy::budget::state::HoldRow {
                                reservation_id,
                                budget_id,
                                period_start,
                                amount,
                                expires_at,
                            }
                        },
                    )
                    .collect())
            }

            async fn expired_holds(
                &mut self,
                now: i64,
            ) -> $crate::Result<Vec<(String, String, i64)>> {
                Ok(sqlx::query_as::<_, (String, String, i64)>(
                    $crate::policy::sql::queries::EXPIRED_HOLDS,
                )
                .bind(now)
                .fetch_all(&mut *self.0)
                .await?)
            }
        }

        /// One multi-row `INSERT` of ledger rows, pushed onto `q`.
        fn push_ledger<'a>(
            q: &mut sqlx::QueryBuilder<'a, $db>,
            entries: &'a [&'a $crate::policy::LedgerEntry],
        ) {
            use $crate::clock::unix_ms;
            use $crate::policy::sql::to_i64;
            q.push($crate::policy::sql::queries::insert_ledger());
            q.push_values(entries, |mut row, e| {
                row.push_bind(unix_ms(e.at))
                    .push_bind(&e.request_id)
                    .push_bind(&e.workspace_id)
                    .push_bind(&e.user_id)
                    .push_bind(&e.key_id)
                    .push_bind(&e.endpoint)
                    .push_bind(&e.model)
                    .push_bind(&e.provider)
                    .push_bind(&e.upstream_model)
                    .push_bind(e.stream)
                    .push_bind(to_i64(e.prompt_tokens))
                    .push_bind(to_i64(e.prompt_tokens_original))
                    .push_bind(to_i64(e.completion_tokens))
                    .push_bind(to_i64(e.cached_tokens))
                    .push_bind(e.cost_nusd)
                    .push_bind(e.latency_ms)
                    .push_bind(i64::from(e.status))
                    .push_bind(&e.error)
                    .push_bind(&e.cache)
                    .push_bind(to_i64(e.saved_tokens))
                    .push_bind(e.saved_nusd)
                    .push_bind(e.memory_saved_nusd)
                    .push_bind(to_i64(e.cache_write_tokens))
                    .push_bind(e.prompt_cache_saved_nusd);
            });
        }

        /// One multi-row `INSERT` of ledger rows.
        fn ledger_insert<'a>(
            entries: &'a [&'a $crate::policy::LedgerEntry],
        ) -> sqlx::QueryBuilder<'a, $db> {
            let mut q = sqlx::QueryBuilder::<$db>::new("");
            push_ledger(&mut q, entries);
            q
        }

        /// Sets usage rows to these `(spent, reserved)`.
        fn push_usage<'a>(
            q: &mut sqlx::QueryBuilder<'a, $db>,
            rows: &'a [(&'a $crate::policy::budget::state::UsageKey, (i64, i64))],
        ) {
            q.push($crate::policy::sql::queries::SET_USAGE);
            q.push_values(rows, |mut row, ((budget_id, start), (spent, reserved))| {
                row.push_bind(budget_id)
                    .push_bind(*start)
                    .push_bind(*spent)
                    .push_bind(*reserved);
            });
            q.push($crate::policy::sql::queries::SET_USAGE_END);
        }

        /// Deletes holds: (reservation id, budget id).
        fn push_delete_holds<'a>(
            q: &mut sqlx::QueryBuilder<'a, $db>,
            keys: &'a [&'a (String, String)],
        ) {
            q.push($crate::policy::sql::queries::DELETE_HOLDS);
            let mut any = q.separated(" OR ");
            for (id, budget_id) in keys {
                any.push("(id = ");
                any.push_bind_unseparated(id);
                any.push_unseparated(" AND budget_id = ");
                any.push_bind_unseparated(budget_id);
                any.push_unseparated(")");
            }
        }

        /// Inserts holds, or sets the amount of those already there.
        pub(crate) fn push_put_holds<'a>(
            q: &mut sqlx::QueryBuilder<'a, $db>,
            holds: &'a [&'a $crate::policy::budget::state::HoldRow],
        ) {
            q.push($crate::policy::sql::queries::PUT_HOLDS);
            q.push_values(holds, |mut row, h| {
                row.push_bind(&h.reservation_id)
                    .push_bind(&h.budget_id)
                    .push_bind(h.period_start)
                    .push_bind(h.amount)
                    .push_bind(h.expires_at);
            });
            q.push($crate::policy::sql::queries::PUT_HOLDS_END);
        }

        /// Runs one batch in one transaction; outcomes are only valid if this returns `Ok`.
        async fn run_batch(
            pool: &$pool,
            jobs: &[$crate::policy::budget::writer::Job],
        ) -> $crate::Result<Vec<$crate::policy::budget::writer::Outcome>> {
            use $crate::policy::budget::writer::{self, Job, Outcome};
            // Only ledger rows (requests without budgets): one multi-row INSERT, which is its
            // own transaction — no BEGIN/COMMIT round trips.
            let rows_only: Option<Vec<&$crate::policy::LedgerEntry>> = jobs
                .iter()
                .map(|j| match j {
                    Job::Settle {
                        reservation, entry, ..
                    } if reservation.holds.is_empty() => Some(&**entry),
                    Job::Persist {
                        spend,
                        entry,
                        release: None,
                        ..
                    } if spend.is_empty() => Some(&**entry),
                    _ => None,
                })
                .collect();
            if let Some(entries) = rows_only {
                ledger_insert(&entries).build().execute(pool).await?;
                return Ok(entries
                    .iter()
                    .map(|_| Outcome::Settled($crate::policy::BudgetLeft::default()))
                    .collect());
            }
            let persisted: Option<Vec<_>> = jobs
                .iter()
                .map(|j| match j {
                    Job::Persist {
                        spend,
                        entry,
                        release,
                        ..
                    } => Some((spend, &**entry, release.as_deref())),
                    _ => None,
                })
                .collect();
            if let Some(persisted) = persisted {
                return persist(pool, &persisted).await;
            }
            let mut conn = pool.acquire().await?;
            sqlx::query($begin).execute(&mut *conn).await?;
            let result = writer::run_jobs(&mut Tx(&mut *conn), jobs).await;
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            if let Err(e) = sqlx::query(end).execute(&mut *conn).await {
                // Never hand a connection in an unknown transaction state back to the pool.
                conn.close_on_drop();
                return Err(e.into());
            }
            result
        }

        /// Settlements decided outside the tables ([`Job::Persist`](crate::policy::budget::writer::Job)):
        /// their spend added, their ledger rows appended and their hold rows deleted in one
        /// transaction sent as one call — on SQLite `BEGIN`, the statements and `COMMIT` in one
        /// trip to sqlx's worker thread; on Postgres one statement whose parts are `WITH`
        /// clauses. Spend goes to the usage rows in one global order (no deadlock between
        /// replicas) and only to budgets that still exist: a request whose budget was deleted
        /// while it ran still gets its ledger row.
        async fn persist(
            pool: &$pool,
            persisted: &[(
                &Vec<($crate::policy::budget::state::UsageKey, i64)>,
                &$crate::policy::LedgerEntry,
                Option<&str>,
            )],
        ) -> $crate::Result<Vec<$crate::policy::budget::writer::Outcome>> {
            let mut spend: std::collections::BTreeMap<
                &$crate::policy::budget::state::UsageKey,
                i64,
            > = std::collections::BTreeMap::new();
            for (key, spent) in persisted.iter().flat_map(|(s, _, _)| s.iter()) {
                *spend.entry(key).or_default() += spent;
            }
            let entries: Vec<&$crate::policy::LedgerEntry> =
                persisted.iter().map(|(_, e, _)| *e).collect();
            let released: Vec<&str> = persisted.iter().filter_map(|(_, _, r)| *r).collect();
            // Postgres: one statement (one round trip) whose writes are `WITH` parts; SQLite:
            // the transaction's statements in one call.
            let (open, between, close) = if $locks_rows {
                ("WITH ", ", ", "")
            } else {
                ("BEGIN IMMEDIATE; ", "; ", "; COMMIT")
            };
            let mut q = sqlx::QueryBuilder::<$db>::new(open);
            if !spend.is_empty() {
                q.push(if $locks_rows { "u AS (" } else { "" });
                q.push($crate::policy::sql::queries::ADD_SPEND);
                q.push_values(&spend, |mut row, ((budget_id, start), spent)| {
                    row.push_bind(budget_id).push_bind(*start).push_bind(*spent);
                });
                q.push($crate::policy::sql::queries::ADD_SPEND_END);
                q.push(if $locks_rows { ")" } else { "" });
            }
            if !released.is_empty() {
                if !spend.is_empty() {
                    q.push(between);
                }
                q.push(if $locks_rows { "d AS (" } else { "" });
                q.push($crate::policy::sql::queries::RELEASE_HOLDS);
                let mut ids = q.separated(", ");
                for id in &released {
                    ids.push_bind(*id);
                }
                q.push(")");
                q.push(if $locks_rows { ")" } else { "" });
            }
            if !spend.is_empty() || !released.is_empty() {
                q.push(if $locks_rows { " " } else { "; " });
            } else if $locks_rows {
                // Nothing but ledger rows: no `WITH`.
                q = sqlx::QueryBuilder::<$db>::new("");
            }
            push_ledger(&mut q, &entries);
            q.push(close);
            let mut conn = pool.acquire().await?;
            if let Err(e) = q.build().execute(&mut *conn).await {
                // Never hand a connection in an unknown transaction state back to the pool.
                if !$locks_rows && sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                    conn.close_on_drop();
                }
                return Err(e.into());
            }
            Ok(entries
                .iter()
                .map(|_| {
                    $crate::policy::budget::writer::Outcome::Settled(
                        $crate::policy::BudgetLeft::default(),
                    )
                })
                .collect())
        }

        async fn writer(
            pool: $pool,
            mut rx: tokio::sync::mpsc::Receiver<$crate::policy::budget::writer::Job>,
        ) {
            use $crate::policy::budget::writer::{MAX_BATCH, retryable};
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let mut attempt = 0;
                let result = loop {
                    match run_batch(&pool, &batch).await {
                        Err(e) if retryable(&e) && attempt < 5 => {
                            attempt += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                        }
                        other => break other,
                    }
                };
                match result {
                    Ok(outcomes) => {
                        for (job, o) in batch.drain(..).zip(outcomes) {
                            job.reply(Ok(o));
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            error = tracing::field::display(&e),
                            jobs = batch.len(),
                            "policy write failed"
                        );
                        let msg = e.to_string();
                        for job in batch.drain(..) {
                            job.reply(Err($crate::Error::Unavailable {
                                backend: "database",
                                message: msg.clone(),
                                contended: false,
                            }));
                        }
                    }
                }
            }
        }

        impl $policy {
            fn spawn_writer(
                pool: $pool,
            ) -> tokio::sync::mpsc::Sender<$crate::policy::budget::writer::Job> {
                let (tx, rx) =
                    tokio::sync::mpsc::channel(4 * $crate::policy::budget::writer::MAX_BATCH);
                tokio::spawn(writer(pool, rx));
                tx
            }
        }
    };
}

pub(crate) use impl_sql_writer;
