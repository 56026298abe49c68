//! Stage 5 — rate limits: requests and tokens per minute on workspace, user and key.

use time::OffsetDateTime;

use super::Lyss;
use crate::error::Result;
use crate::policy::Principal;
use crate::ratelimit::Charge;

impl Lyss {
    /// Stage 5: charges the request on every rate limit of its workspace, user and key.
    pub(super) async fn rate_limit(
        &self,
        who: &Principal,
        tokens: u64,
        now: OffsetDateTime,
    ) -> Result<()> {
        if who.rate_limits.is_empty() {
            return Ok(());
        }
        let mut charges = Vec::with_capacity(who.rate_limits.len() * 2);
        for l in &who.rate_limits {
            let name = match l.scope {
                crate::policy::Scope::Workspace => &who.workspace_name,
                crate::policy::Scope::User => &who.user_name,
                crate::policy::Scope::Key => &who.key_id,
            };
            let scope = l.scope.as_str();
            if let Some(rpm) = l.rpm {
                charges.push(Charge {
                    bucket: format!("{scope}:{}:rpm", l.id),
                    label: format!("{scope} `{name}` ({rpm} requests per minute)"),
                    per_minute: rpm,
                    cost: 1,
                });
            }
            if let Some(tpm) = l.tpm {
                charges.push(Charge {
                    bucket: format!("{scope}:{}:tpm", l.id),
                    label: format!("{scope} `{name}` ({tpm} tokens per minute)"),
                    per_minute: tpm,
                    cost: tokens,
                });
            }
        }
        self.limiter.charge(&charges, now).await
    }
}
