//! The directory in SQL: workspaces, users, keys and their limits ([`crate::policy::Directory`]).

/// Implements [`crate::policy::Directory`] for a backend.
macro_rules! impl_sql_directory {
    ($policy:ident, $row:ty) => {
        fn key_info_from_row(row: &$row) -> $crate::Result<$crate::policy::KeyInfo> {
            use sqlx::Row as _;
            use $crate::clock::from_unix;
            use $crate::policy::sql::{json_list, opt_ts};
            Ok($crate::policy::KeyInfo {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                user: row.try_get("user_name")?,
                workspace: row.try_get("ws_name")?,
                models: row
                    .try_get::<Option<String>, _>("models")?
                    .as_deref()
                    .map(json_list)
                    .transpose()?,
                expires_at: opt_ts(row.try_get("expires_at")?)?,
                revoked_at: opt_ts(row.try_get("revoked_at")?)?,
                created_at: from_unix(row.try_get("created_at")?)?,
            })
        }

        impl $policy {
            /// Every workspace, or the one with this id.
            async fn workspaces(&self, id: Option<&str>) -> $crate::Result<Vec<$crate::policy::Workspace>> {
                use $crate::clock::from_unix;
                use $crate::policy::sql::{json_list, workspace_cache};
                let rows = sqlx::query_as::<_, (String, String, String, i64, Option<String>, Option<i64>, Option<String>, Option<f64>)>(
                    "SELECT id, name, models, created_at, cache_mode, cache_ttl_secs, cache_scope, cache_threshold \
                     FROM workspaces WHERE $1 IS NULL OR id = $1 ORDER BY name",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(id, name, models, created, mode, ttl, scope, threshold)| {
                        Ok($crate::policy::Workspace {
                            id,
                            name,
                            models: json_list(&models)?,
                            cache: workspace_cache(mode, ttl, scope, threshold)?,
                            created_at: from_unix(created)?,
                        })
                    })
                    .collect()
            }

            async fn workspace_id(&self, name_or_id: &str) -> $crate::Result<(String, String)> {
                sqlx::query_as::<_, (String, String)>(
                    "SELECT id, name FROM workspaces WHERE name = $1 OR id = $1",
                )
                .bind(name_or_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| $crate::Error::NotFound(format!("workspace `{name_or_id}`")))
            }

            async fn user_id(&self, name_or_id: &str) -> $crate::Result<String> {
                sqlx::query_scalar::<_, String>("SELECT id FROM users WHERE name = $1 OR id = $1")
                    .bind(name_or_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| $crate::Error::NotFound(format!("user `{name_or_id}`")))
            }

            async fn key_info(&self, id: &str) -> $crate::Result<$crate::policy::KeyInfo> {
                let row = sqlx::query(&format!("{} WHERE k.id = $1", $crate::policy::sql::KEY_INFO_SELECT))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| $crate::Error::NotFound(format!("key `{id}`")))?;
                key_info_from_row(&row)
            }

            /// The id behind a scope's target (name or id; a key's public id).
            async fn scope_id(&self, scope: $crate::policy::Scope, target: &str) -> $crate::Result<String> {
                use $crate::policy::Scope;
                match scope {
                    Scope::Workspace => Ok(self.workspace_id(target).await?.0),
                    Scope::User => self.user_id(target).await,
                    Scope::Key => Ok(self.key_info(target).await?.id),
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::policy::Directory for $policy {
            async fn authenticate(&self, key: &str) -> $crate::Result<$crate::policy::Principal> {
                use sqlx::Row as _;
                use $crate::policy::sql::{json_list, opt_ts};
                use $crate::policy::{RateLimit, Scope, keys};
                let invalid = || $crate::Error::Unauthenticated("Incorrect API key provided.".into());
                let (id, secret) = keys::parse(key).ok_or_else(invalid)?;
                let row = sqlx::query(
                    "SELECT k.id, k.name, k.secret_hash, k.models, k.expires_at, k.revoked_at, \
                     k.rpm AS k_rpm, k.tpm AS k_tpm, u.id AS user_id, u.name AS user_name, \
                     u.rpm AS u_rpm, u.tpm AS u_tpm, w.id AS ws_id, w.name AS ws_name, \
                     w.models AS ws_models, w.rpm AS w_rpm, w.tpm AS w_tpm, \
                     w.cache_mode, w.cache_ttl_secs, w.cache_scope, w.cache_threshold, \
                     EXISTS (SELECT 1 FROM budgets b WHERE b.scope_id IN (k.id, u.id, w.id)) AS budgeted \
                     FROM api_keys k JOIN users u ON u.id = k.user_id \
                     JOIN workspaces w ON w.id = u.workspace_id WHERE k.id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(invalid)?;
                let hash: Vec<u8> = row.try_get("secret_hash")?;
                if !keys::verify(secret, &hash) {
                    return Err(invalid());
                }
                if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
                    return Err($crate::Error::Unauthenticated("This API key has been revoked.".into()));
                }
                let limit = |scope: Scope, id: String, rpm: &str, tpm: &str| -> $crate::Result<Option<RateLimit>> {
                    let n = |c: &str| -> $crate::Result<Option<u32>> {
                        Ok(row.try_get::<Option<i64>, _>(c)?.map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX)))
                    };
                    let (rpm, tpm) = (n(rpm)?, n(tpm)?);
                    Ok((rpm.is_some() || tpm.is_some()).then_some(RateLimit { scope, id, rpm, tpm }))
                };
                let key_id: String = row.try_get("id")?;
                let user_id: String = row.try_get("user_id")?;
                let ws_id: String = row.try_get("ws_id")?;
                let rate_limits = [
                    limit(Scope::Workspace, ws_id.clone(), "w_rpm", "w_tpm")?,
                    limit(Scope::User, user_id.clone(), "u_rpm", "u_tpm")?,
                    limit(Scope::Key, key_id.clone(), "k_rpm", "k_tpm")?,
                ]
                .into_iter()
                .flatten()
                .collect();
                let principal = $crate::policy::Principal {
                    key_id,
                    key_name: row.try_get("name")?,
                    user_id,
                    user_name: row.try_get("user_name")?,
                    workspace_id: ws_id,
                    workspace_name: row.try_get("ws_name")?,
                    workspace_models: json_list(&row.try_get::<String, _>("ws_models")?)?,
                    key_models: row
                        .try_get::<Option<String>, _>("models")?
                        .as_deref()
                        .map(json_list)
                        .transpose()?,
                    expires_at: opt_ts(row.try_get("expires_at")?)?,
                    budgeted: row.try_get("budgeted")?,
                    rate_limits,
                    workspace_cache: $crate::policy::sql::workspace_cache(
                        row.try_get("cache_mode")?,
                        row.try_get("cache_ttl_secs")?,
                        row.try_get("cache_scope")?,
                        row.try_get("cache_threshold")?,
                    )?,
                };
                if principal.expired(time::OffsetDateTime::now_utc()) {
                    return Err($crate::Error::Unauthenticated("This API key has expired.".into()));
                }
                Ok(principal)
            }

            async fn create_workspace(&self, name: &str, models: &[String]) -> $crate::Result<$crate::policy::Workspace> {
                use $crate::policy::sql::{new_id, now_secs, to_json, validate_name};
                validate_name("workspace", name)?;
                let ws = $crate::policy::Workspace {
                    id: new_id("ws"),
                    name: name.to_owned(),
                    models: models.to_vec(),
                    cache: Default::default(),
                    created_at: now_secs(),
                };
                sqlx::query("INSERT INTO workspaces (id, name, models, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&ws.id)
                    .bind(&ws.name)
                    .bind(to_json(&ws.models))
                    .bind(ws.created_at.unix_timestamp())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| conflict(e, || format!("workspace `{name}`")))?;
                Ok(ws)
            }

            async fn list_workspaces(&self) -> $crate::Result<Vec<$crate::policy::Workspace>> {
                self.workspaces(None).await
            }

            async fn update_workspace(
                &self,
                workspace: &str,
                update: &$crate::policy::WorkspaceUpdate,
            ) -> $crate::Result<$crate::policy::Workspace> {
                use $crate::policy::sql::{setting_name, to_json};
                update.cache.validate()?;
                let (id, _) = self.workspace_id(workspace).await?;
                let c = &update.cache;
                sqlx::query(
                    "UPDATE workspaces SET models = COALESCE($1, models), \
                     cache_mode = COALESCE($2, cache_mode), cache_ttl_secs = COALESCE($3, cache_ttl_secs), \
                     cache_scope = COALESCE($4, cache_scope), cache_threshold = COALESCE($5, cache_threshold) \
                     WHERE id = $6",
                )
                .bind(update.models.as_deref().map(to_json))
                .bind(setting_name(c.mode))
                .bind(c.ttl_secs.map($crate::policy::sql::to_i64))
                .bind(setting_name(c.scope))
                .bind(c.semantic_threshold.map(f64::from))
                .bind(&id)
                .execute(&self.pool)
                .await?;
                self.workspaces(Some(&id))
                    .await?
                    .pop()
                    .ok_or_else(|| $crate::Error::NotFound(format!("workspace `{workspace}`")))
            }

            async fn create_user(&self, name: &str, workspace: &str) -> $crate::Result<$crate::policy::User> {
                use $crate::policy::sql::{new_id, now_secs, validate_name};
                validate_name("user", name)?;
                let (ws_id, ws_name) = self.workspace_id(workspace).await?;
                let user = $crate::policy::User {
                    id: new_id("u"),
                    name: name.to_owned(),
                    workspace: ws_name,
                    created_at: now_secs(),
                };
                sqlx::query("INSERT INTO users (id, name, workspace_id, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&user.id)
                    .bind(&user.name)
                    .bind(&ws_id)
                    .bind(user.created_at.unix_timestamp())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| conflict(e, || format!("user `{name}`")))?;
                Ok(user)
            }

            async fn list_users(&self, workspace: Option<&str>) -> $crate::Result<Vec<$crate::policy::User>> {
                use $crate::clock::from_unix;
                let ws = match workspace {
                    Some(w) => Some(self.workspace_id(w).await?.0),
                    None => None,
                };
                let rows = sqlx::query_as::<_, (String, String, String, i64)>(
                    "SELECT u.id, u.name, w.name, u.created_at FROM users u \
                     JOIN workspaces w ON w.id = u.workspace_id \
                     WHERE $1 IS NULL OR u.workspace_id = $1 ORDER BY u.name",
                )
                .bind(ws)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(id, name, workspace, created)| {
                        Ok($crate::policy::User { id, name, workspace, created_at: from_unix(created)? })
                    })
                    .collect()
            }

            async fn create_key(&self, new: &$crate::policy::NewKey) -> $crate::Result<$crate::policy::CreatedKey> {
                use $crate::policy::sql::{now_secs, to_json};
                let user_id = self.user_id(&new.user).await?;
                let material = $crate::policy::keys::generate();
                sqlx::query(
                    "INSERT INTO api_keys (id, user_id, name, secret_hash, models, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&material.id)
                .bind(&user_id)
                .bind(&new.name)
                .bind(&material.secret_hash[..])
                .bind(new.models.as_deref().map(to_json))
                .bind(new.expires_at.map(|t| t.unix_timestamp()))
                .bind(now_secs().unix_timestamp())
                .execute(&self.pool)
                .await?;
                Ok($crate::policy::CreatedKey { key: material.full, info: self.key_info(&material.id).await? })
            }

            async fn list_keys(&self, user: Option<&str>) -> $crate::Result<Vec<$crate::policy::KeyInfo>> {
                let user_id = match user {
                    Some(u) => Some(self.user_id(u).await?),
                    None => None,
                };
                let rows = sqlx::query(&format!(
                    "{} WHERE $1 IS NULL OR k.user_id = $1 ORDER BY k.created_at, k.id",
                    $crate::policy::sql::KEY_INFO_SELECT
                ))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(key_info_from_row).collect()
            }

            async fn revoke_key(&self, id: &str) -> $crate::Result<$crate::policy::KeyInfo> {
                sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind($crate::policy::sql::now_secs().unix_timestamp())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                self.key_info(id).await
            }

            async fn set_rate_limit(
                &self,
                scope: $crate::policy::Scope,
                target: &str,
                rpm: Option<u32>,
                tpm: Option<u32>,
            ) -> $crate::Result<()> {
                use $crate::policy::Scope;
                let id = self.scope_id(scope, target).await?;
                let sql = match scope {
                    Scope::Workspace => "UPDATE workspaces SET rpm = $1, tpm = $2 WHERE id = $3",
                    Scope::User => "UPDATE users SET rpm = $1, tpm = $2 WHERE id = $3",
                    Scope::Key => "UPDATE api_keys SET rpm = $1, tpm = $2 WHERE id = $3",
                };
                sqlx::query(sql)
                    .bind(rpm.map(i64::from))
                    .bind(tpm.map(i64::from))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn open_session(&self, id: &str, expires: time::OffsetDateTime) -> $crate::Result<()> {
                let now = $crate::policy::sql::now_secs().unix_timestamp();
                // Sessions that ran out go when a new one opens: the table stays small.
                sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                sqlx::query("INSERT INTO admin_sessions (id_hash, expires_at, created_at) VALUES ($1, $2, $3)")
                    .bind($crate::policy::sql::session_hash(id))
                    .bind(expires.unix_timestamp())
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn session_open(&self, id: &str, now: time::OffsetDateTime) -> $crate::Result<bool> {
                Ok(sqlx::query_scalar::<_, i64>(
                    "SELECT expires_at FROM admin_sessions WHERE id_hash = $1 AND expires_at > $2",
                )
                .bind($crate::policy::sql::session_hash(id))
                .bind(now.unix_timestamp())
                .fetch_optional(&self.pool)
                .await?
                .is_some())
            }

            async fn end_session(&self, id: &str) -> $crate::Result<()> {
                sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
                    .bind($crate::policy::sql::session_hash(id))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_sql_directory;
