//! Stored providers in SQL ([`crate::policy::ProviderStore`]).

/// Implements [`crate::policy::ProviderStore`] for a backend.
macro_rules! impl_sql_providers {
    ($policy:ident) => {
        #[async_trait::async_trait]
        impl $crate::policy::ProviderStore for $policy {
            async fn put_provider(&self, p: &$crate::policy::StoredProvider) -> $crate::Result<()> {
                use $crate::policy::sql::{setting_name, validate_name};
                validate_name("provider", &p.name)?;
                sqlx::query($crate::policy::sql::queries::UPSERT_PROVIDER)
                    .bind(&p.name)
                    .bind(setting_name(Some(p.kind)))
                    .bind(&p.base_url)
                    .bind(&p.api_key_env)
                    .bind(p.sealed_key.as_deref())
                    .bind(&p.api_version)
                    .bind(p.discover_models)
                    .bind(p.created_at.unix_timestamp())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_providers(&self) -> $crate::Result<Vec<$crate::policy::StoredProvider>> {
                use sqlx::Row as _;
                let rows = sqlx::query($crate::policy::sql::queries::PROVIDERS)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let kind: String = r.try_get("kind")?;
                        Ok($crate::policy::StoredProvider {
                            name: r.try_get("name")?,
                            kind: serde_json::from_value(serde_json::Value::String(kind)).map_err(
                                |e| $crate::Error::Internal(format!("stored provider kind: {e}")),
                            )?,
                            base_url: r.try_get("base_url")?,
                            api_key_env: r.try_get("api_key_env")?,
                            sealed_key: r.try_get("api_key_sealed")?,
                            api_version: r.try_get("api_version")?,
                            discover_models: r.try_get("discover_models")?,
                            created_at: $crate::clock::from_unix(r.try_get("created_at")?)?,
                        })
                    })
                    .collect()
            }

            async fn delete_provider(&self, name: &str) -> $crate::Result<()> {
                let done = sqlx::query($crate::policy::sql::queries::DELETE_PROVIDER)
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::Error::NotFound(format!("provider `{name}`")));
                }
                Ok(())
            }
        }
    };
}

pub(crate) use impl_sql_providers;
