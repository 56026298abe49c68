//! The conversations lyss keeps for the Responses API: each answered response (unless
//! `store: false`) saves its turns — the previous ones, its input and its output, not its
//! instructions — under its id, for its user only, so that `previous_response_id` works
//! whatever the upstream ([`crate::policy::Conversations::save_response`]).

use std::sync::Arc;

use serde_json::Value;

use super::{ResponsesRequest, input_messages, output_message};
use crate::error::{Error, Result};
use crate::pipeline::{Call, Lyss};
use crate::policy::Policy;
use crate::wire::Message;

/// A Responses request's place in a kept conversation.
pub struct Conversation {
    /// The turns it continues (`previous_response_id`), oldest first.
    pub history: Vec<Message>,
    /// Where its answer is kept; `None` with `store: false`.
    pub keep: Option<Keep>,
}

/// Where an answered conversation is kept: the user it belongs to and its turns so far.
pub struct Keep {
    policy: Arc<dyn Policy>,
    user_id: String,
    turns: Vec<Message>,
}

impl Keep {
    /// Saves the conversation with the response's output under the response's id. A failure
    /// is logged, not returned: the answer is paid for and delivered either way.
    pub async fn save(mut self, response: &Value) {
        self.turns.push(output_message(response));
        let id = response["id"].as_str().unwrap_or_default();
        let saved = match serde_json::to_string(&self.turns) {
            Ok(json) => {
                self.policy
                    .save_response(id, &self.user_id, &json, &response.to_string())
                    .await
            }
            Err(e) => Err(Error::Internal(e.to_string())),
        };
        if let Err(e) = saved {
            tracing::error!(error = %e, response = id, "could not keep the conversation for previous_response_id");
        }
    }
}

impl Lyss {
    /// The conversation a Responses request continues — its `previous_response_id`'s turns,
    /// the caller's user's only (another user's id is as unknown as a missing one: a 400 on
    /// `previous_response_id`) — and where its answer will be kept.
    pub async fn conversation(&self, call: &Call, req: &ResponsesRequest) -> Result<Conversation> {
        let who = self.authenticate(&call.api_key).await?;
        let policy = self.policy().clone();
        let history: Vec<Message> = match &req.previous_response_id {
            Some(id) => {
                let saved = policy
                    .load_response(id, &who.user_id)
                    .await
                    .map_err(|e| match e {
                        Error::NotFound(_) => Error::invalid_param(
                            format!("Previous response with id '{id}' not found."),
                            "previous_response_id",
                        ),
                        other => other,
                    })?;
                serde_json::from_str(&saved)
                    .map_err(|e| Error::Internal(format!("stored response {id}: {e}")))?
            }
            None => Vec::new(),
        };
        let keep = match req.stores() {
            true => {
                let mut turns = history.clone();
                turns.extend(input_messages(req)?);
                Some(Keep {
                    policy,
                    user_id: who.user_id.clone(),
                    turns,
                })
            }
            false => None,
        };
        Ok(Conversation { history, keep })
    }
}
