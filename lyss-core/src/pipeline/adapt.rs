//! Stage 2, second half — fit the request to its model's upstream: what it cannot run or carry
//! is dropped (and said in a response header), an output cap above the model's is lowered.

use super::{Call, DROPPED_HEADER, Endpoint, Lyss, OUTPUT_CAPPED_HEADER, budget};
use crate::config::BuiltinTools;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::wire::ChatRequest;

impl Lyss {
    /// Fits a request to what its model's upstream takes, and says what changed (response
    /// headers, and the log): built-in tools the upstream cannot run are dropped (or the
    /// request refused, as configured), an output cap above the model's own is lowered to it,
    /// and what the request's dialect could not carry is listed.
    pub(super) fn adapt(
        &self,
        call: &Call,
        req: &mut ChatRequest,
        model: &Model,
    ) -> Result<Vec<(&'static str, String)>> {
        let mut dropped = call.dropped.clone();
        if let Some(builtin) = &req.builtin_tools
            && !model.provider.runs_builtin_tools()
        {
            let kinds: Vec<String> = builtin
                .iter()
                .map(|t| format!("tools[{}]", t["type"].as_str().unwrap_or("?")))
                .collect();
            if self.builtin_tools == BuiltinTools::Refuse {
                return Err(Error::invalid_param(
                    format!(
                        "{} run only on OpenAI's Responses API; model `{}` is served elsewhere",
                        kinds.join(", "),
                        model.name
                    ),
                    "tools",
                ));
            }
            tracing::info!(model = %model.name, tools = %kinds.join(", "), "built-in tools the upstream cannot run: answered without them");
            dropped.extend(kinds);
            req.builtin_tools = None;
        }
        // What lyss itself translated from another dialect's reasoning and verbosity controls
        // goes only to models that take them (OpenAI's reasoning families): another model
        // would refuse the request over a field its client never sent.
        if call.endpoint != Endpoint::Chat && !budget::openai_reasoning(&model.upstream) {
            for field in ["reasoning_effort", "verbosity"] {
                if req.extra.remove(field).is_some() {
                    dropped.push(field.to_owned());
                }
            }
        }
        let mut notes = Vec::new();
        if let Some(cap) = model.max_output_tokens {
            let asked = req.max_completion_tokens.or(req.max_tokens);
            if let Some(n) = asked.filter(|&n| n > cap) {
                for field in [&mut req.max_tokens, &mut req.max_completion_tokens] {
                    if field.is_some_and(|f| f > cap) {
                        *field = Some(cap);
                    }
                }
                tracing::info!(model = %model.name, asked = n, cap, "output cap lowered to the model's own");
                notes.push((OUTPUT_CAPPED_HEADER, format!("asked={n}, sent={cap}")));
            }
        }
        if !dropped.is_empty() {
            tracing::debug!(request_id = %call.request_id, dropped = %dropped.join(", "), "fields lyss could not carry upstream");
            notes.push((DROPPED_HEADER, dropped.join(", ")));
        }
        Ok(notes)
    }
}

pub(super) fn validate_chat(req: &ChatRequest) -> Result<()> {
    if req.messages.is_empty() {
        return Err(Error::invalid_param(
            "`messages` must contain at least one message.",
            "messages",
        ));
    }
    Ok(())
}
