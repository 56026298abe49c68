//! The Responses API's stored conversations in SQL ([`crate::policy::Conversations`]).

/// Implements [`crate::policy::Conversations`] for a backend.
macro_rules! impl_sql_conversations {
    ($policy:ident) => {
        #[async_trait::async_trait]
        impl $crate::policy::Conversations for $policy {
            async fn save_response(
                &self,
                id: &str,
                user_id: &str,
                messages: &str,
                response: &str,
            ) -> $crate::Result<()> {
                sqlx::query($crate::policy::sql::queries::INSERT_RESPONSE)
                    .bind(id)
                    .bind(user_id)
                    .bind(messages)
                    .bind(response)
                    .bind($crate::clock::unix_ms(time::OffsetDateTime::now_utc()))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_response(&self, id: &str, user_id: &str) -> $crate::Result<String> {
                let found: Option<Option<String>> =
                    sqlx::query_scalar($crate::policy::sql::queries::RESPONSE)
                        .bind(id)
                        .bind(user_id)
                        .fetch_optional(&self.pool)
                        .await?;
                found
                    .flatten()
                    .ok_or_else(|| $crate::Error::NotFound(format!("response `{id}`")))
            }

            async fn delete_response(&self, id: &str, user_id: &str) -> $crate::Result<()> {
                let done = sqlx::query($crate::policy::sql::queries::DELETE_RESPONSE)
                    .bind(id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::Error::NotFound(format!("response `{id}`")));
                }
                Ok(())
            }

            async fn load_response(&self, id: &str, user_id: &str) -> $crate::Result<String> {
                use sqlx::Row as _;
                let row = sqlx::query($crate::policy::sql::queries::RESPONSE_MESSAGES)
                    .bind(id)
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
                match row {
                    Some(r) => Ok(r.try_get("messages")?),
                    None => Err($crate::Error::NotFound(format!("response `{id}`"))),
                }
            }
        }
    };
}

pub(crate) use impl_sql_conversations;
