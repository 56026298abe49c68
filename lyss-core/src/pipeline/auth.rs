//! Stages 1 and 2 — who is calling, and whether they may use the model they asked for.

use std::sync::Arc;

use super::Lyss;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::policy::Principal;

impl Lyss {
    /// Stage 1: the principal behind a key.
    pub async fn authenticate(&self, api_key: &str) -> Result<Arc<Principal>> {
        if api_key.is_empty() {
            return Err(Error::Unauthenticated(
                "You didn't provide an API key. Send it as `Authorization: Bearer lyss-sk-…`."
                    .into(),
            ));
        }
        let principal = self
            .keys
            .authenticate(self.policy.as_ref(), api_key)
            .await?;
        crate::telemetry::authenticated(&principal.key_id);
        Ok(principal)
    }

    /// Stage 2: the model, if it exists and the principal may use it.
    pub fn authorize(&self, principal: &Principal, model: &str) -> Result<Arc<Model>> {
        match self.models.get(model) {
            Some(m) if principal.allows(m) => Ok(m.clone()),
            _ => Err(Error::ModelNotFound(model.to_owned())),
        }
    }
}
