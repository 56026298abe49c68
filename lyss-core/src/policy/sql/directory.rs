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
            async fn workspaces(
                &self,
                id: Option<&str>,
            ) -> $crate::Result<Vec<$crate::policy::Workspace>> {
                use $crate::clock::from_unix;
                use $crate::policy::sql::{json_list, workspace_cache};
                let rows = sqlx::query_as::<
                    _,
                    (
                        String,
                        String,
                        String,
                        i64,
                        Option<String>,
                        Option<i64>,
                        Option<String>,
                        Option<f64>,
                    ),
                >($crate::policy::sql::queries::WORKSPACES)
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
                sqlx::query_as::<_, (String, String)>($crate::policy::sql::queries::WORKSPACE_ID)
                    .bind(name_or_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| $crate::Error::NotFound(format!("workspace `{name_or_id}`")))
            }

            async fn user_id(&self, name_or_id: &str) -> $crate::Result<String> {
                sqlx::query_scalar::<_, String>($crate::policy::sql::queries::USER_ID)
                    .bind(name_or_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| $crate::Error::NotFound(format!("user `{name_or_id}`")))
            }

            async fn key_info(&self, id: &str) -> $crate::Result<$crate::policy::KeyInfo> {
                let row = sqlx::query(&$crate::policy::sql::queries::key_info())
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| $crate::Error::NotFound(format!("key `{id}`")))?;
                key_info_from_row(&row)
            }

            /// The id behind a scope's target (name or id; a key's public id).
            async fn scope_id(
                &self,
                scope: $crate::policy::Scope,
                target: &str,
            ) -> $crate::Result<String> {
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
                let invalid =
                    || $crate::Error::Unauthenticated("Incorrect API key provided.".into());
                let (id, secret) = keys::parse(key).ok_or_else(invalid)?;
                let row = sqlx::query($crate::policy::sql::queries::AUTHENTICATE)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(invalid)?;
                let hash: Vec<u8> = row.try_get("secret_hash")?;
                if !keys::verify(secret, &hash) {
                    return Err(invalid());
                }
                if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
                    return Err($crate::Error::Unauthenticated(
                        "This API key has been revoked.".into(),
                    ));
                }
                let limit = |scope: Scope,
                             id: String,
                             rpm: &str,
                             tpm: &str|
                 -> $crate::Result<Option<RateLimit>> {
                    let n = |c: &str| -> $crate::Result<Option<u32>> {
                        Ok(row
                            .try_get::<Option<i64>, _>(c)?
                            .map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX)))
                    };
                    let (rpm, tpm) = (n(rpm)?, n(tpm)?);
                    Ok((rpm.is_some() || tpm.is_some()).then_some(RateLimit {
                        scope,
                        id,
                        rpm,
                        tpm,
                    }))
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
                    return Err($crate::Error::Unauthenticated(
                        "This API key has expired.".into(),
                    ));
                }
                Ok(principal)
            }

            async fn create_workspace(
                &self,
                name: &str,
                models: &[String],
            ) -> $crate::Result<$crate::policy::Workspace> {
                use $crate::policy::sql::{new_id, now_secs, to_json, validate_name};
                validate_name("workspace", name)?;
                let ws = $crate::policy::Workspace {
                    id: new_id("ws"),
                    name: name.to_owned(),
                    models: models.to_vec(),
                    cache: Default::default(),
                    created_at: now_secs(),
                };
                sqlx::query($crate::policy::sql::queries::INSERT_WORKSPACE)
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
                sqlx::query($crate::policy::sql::queries::UPDATE_WORKSPACE)
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

            async fn create_user(
                &self,
                name: &str,
                workspace: &str,
            ) -> $crate::Result<$crate::policy::User> {
                use $crate::policy::sql::{new_id, now_secs, validate_name};
                validate_name("user", name)?;
                let (ws_id, ws_name) = self.workspace_id(workspace).await?;
                let user = $crate::policy::User {
                    id: new_id("u"),
                    name: name.to_owned(),
                    workspace: ws_name,
                    created_at: now_secs(),
                };
                sqlx::query($crate::policy::sql::queries::INSERT_USER)
                    .bind(&user.id)
                    .bind(&user.name)
                    .bind(&ws_id)
                    .bind(user.created_at.unix_timestamp())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| conflict(e, || format!("user `{name}`")))?;
                Ok(user)
            }

            async fn list_users(
                &self,
                workspace: Option<&str>,
            ) -> $crate::Result<Vec<$crate::policy::User>> {
                use $crate::clock::from_unix;
                let ws = match workspace {
                    Some(w) => Some(self.workspace_id(w).await?.0),
                    None => None,
                };
                let rows = sqlx::query_as::<_, (String, String, String, i64)>(
                    $crate::policy::sql::queries::USERS,
                )
                .bind(ws)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(id, name, workspace, created)| {
                        Ok($crate::policy::User {
                            id,
                            name,
                            workspace,
                            created_at: from_unix(created)?,
                        })
                    })
                    .collect()
            }

            async fn create_key(
                &self,
                new: &$crate::policy::NewKey,
            ) -> $crate::Result<$crate::policy::CreatedKey> {
                use $crate::policy::sql::{now_secs, to_json};
                let user_id = self.user_id(&new.user).await?;
                let material = $crate::policy::keys::generate();
                sqlx::query($crate::policy::sql::queries::INSERT_KEY)
                    .bind(&material.id)
                    .bind(&user_id)
                    .bind(&new.name)
                    .bind(&material.secret_hash[..])
                    .bind(new.models.as_deref().map(to_json))
                    .bind(new.expires_at.map(|t| t.unix_timestamp()))
                    .bind(now_secs().unix_timestamp())
                    .execute(&self.pool)
                    .await?;
                Ok($crate::policy::CreatedKey {
                    key: material.full,
                    info: self.key_info(&material.id).await?,
                })
            }

            async fn list_keys(
                &self,
                user: Option<&str>,
            ) -> $crate::Result<Vec<$crate::policy::KeyInfo>> {
                let user_id = match user {
                    Some(u) => Some(self.user_id(u).await?),
                    None => None,
                };
                let rows = sqlx::query(&$crate::policy::sql::queries::key_infos())
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(key_info_from_row).collect()
            }

            async fn revoke_key(&self, id: &str) -> $crate::Result<$crate::policy::KeyInfo> {
                sqlx::query($crate::policy::sql::queries::REVOKE_KEY)
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
                    Scope::Workspace => $crate::policy::sql::queries::SET_WORKSPACE_RATE,
                    Scope::User => $crate::policy::sql::queries::SET_USER_RATE,
                    Scope::Key => $crate::policy::sql::queries::SET_KEY_RATE,
                };
                sqlx::query(sql)
                    .bind(rpm.map(i64::from))
                    .bind(tpm.map(i64::from))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn open_session(
                &self,
                id: &str,
                expires: time::OffsetDateTime,
            ) -> $crate::Result<()> {
                let now = $crate::policy::sql::now_secs().unix_timestamp();
                // Sessions that ran out go when a new one opens: the table stays small.
                sqlx::query($crate::policy::sql::queries::DELETE_EXPIRED_SESSIONS)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                sqlx::query($crate::policy::sql::queries::INSERT_SESSION)
                    .bind($crate::policy::sql::session_hash(id))
                    .bind(expires.unix_timestamp())
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn session_open(
                &self,
                id: &str,
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let open = sqlx::query_scalar::<_, i64>($crate::policy::sql::queries::SESSION_OPEN)
                    .bind($crate::policy::sql::session_hash(id))
                    .bind(now.unix_timestamp())
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(open.is_some())
            }

            async fn end_session(&self, id: &str) -> $crate::Result<()> {
                sqlx::query($crate::policy::sql::queries::DELETE_SESSION)
                    .bind($crate::policy::sql::session_hash(id))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_sql_directory;
