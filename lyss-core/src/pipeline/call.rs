//! Stage 7 — call the provider (the model's router: targets, retries, fallbacks, breakers),
//! then hand the answer to settlement (stage 8) and the cache (stage 9): whole, or relayed as
//! a stream that settles when it ends.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;

use super::budget::budget_headers;
use super::cache::CachePlan;
use super::settle::LedgerDraft;
use super::stream::{Growth, StreamRelay};
use super::{BUDGET_REMAINING_HEADER, ChatBody, ChatReply, Lyss, outlived};
use crate::cache::answer::Collector;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::policy::BudgetLeft;
use crate::tokens;
use crate::wire::{ChatRequest, StreamOptions, Usage};

/// A request past admission, ready for the upstream, with what the later stages need.
pub(super) struct Outgoing {
    pub req: ChatRequest,
    pub model: Arc<Model>,
    pub ledger: LedgerDraft,
    pub headers: Vec<(&'static str, String)>,
    /// Where the answer is cached, when it may be.
    pub cache: Option<CachePlan>,
    /// The request is cut here, before its reservation could be reaped.
    pub deadline: tokio::time::Instant,
    pub started: Instant,
    /// The prompt's tokens, when admission counted them.
    pub prompt_estimate: Option<u64>,
}

impl Lyss {
    /// A whole answer: settled, cached, returned. `sent` learns the request went upstream.
    pub(super) async fn answer(
        &self,
        out: Outgoing,
        sent: impl FnOnce(&ChatRequest),
    ) -> Result<ChatReply> {
        let Outgoing {
            req,
            model,
            mut ledger,
            mut headers,
            mut cache,
            deadline,
            started,
            ..
        } = out;
        let asked = Instant::now();
        let answer = tokio::time::timeout_at(deadline, model.provider.chat(&req))
            .await
            .unwrap_or_else(|_| Err(outlived(&model)));
        let upstream_time = asked.elapsed();
        match answer {
            Ok(resp) => {
                sent(&req);
                let usage = resp.usage.clone().unwrap_or_else(|| Usage {
                    prompt_tokens: tokens::count_request(&model.upstream, &req),
                    completion_tokens: resp
                        .choices
                        .iter()
                        .filter_map(|c| c.message.content.as_ref())
                        .map(|c| tokens::count_text(&model.upstream, &c.text()))
                        .sum(),
                    ..Usage::default()
                });
                let left = ledger.settle(&usage, 200, None).await?;
                headers.extend(budget_headers(&left));
                if let Some(plan) = &mut cache {
                    plan.store(&resp).await;
                }
                crate::telemetry::gateway_time(started.elapsed().saturating_sub(upstream_time));
                Ok(ChatReply {
                    body: ChatBody::Complete(resp),
                    headers,
                })
            }
            Err(e) => Err(ledger.failed(e).await),
        }
    }

    /// A stream, relayed chunk by chunk; it settles (and is cached) when the upstream's ends.
    pub(super) async fn stream(
        &self,
        out: Outgoing,
        sent: impl FnOnce(&ChatRequest),
    ) -> Result<ChatReply> {
        let (relay, headers) = self.relay(out, sent, None).await?;
        Ok(ChatReply {
            body: ChatBody::Stream(relay.into_stream()),
            headers,
        })
    }

    /// A whole answer whose reservation grows with it: asked for as a stream, so that the relay
    /// can count it and top the reservation up, and gathered into the completion the caller
    /// asked for.
    pub(super) async fn answer_gathered(
        &self,
        mut out: Outgoing,
        sent: impl FnOnce(&ChatRequest),
    ) -> Result<ChatReply> {
        out.req.stream = Some(true);
        out.req
            .stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
        let (settled, left) = tokio::sync::oneshot::channel();
        let (relay, mut headers) = self.relay(out, sent, Some(settled)).await?;
        let mut stream = relay.into_stream();
        let mut gathered = Collector::default();
        while let Some(chunk) = stream.next().await {
            gathered.push(&chunk?);
        }
        let resp = gathered.finish().ok_or_else(|| {
            Error::Internal("a gathered stream ended with no finished choice".into())
        })?;
        // Like any whole answer: what is left after settlement, not after reservation.
        if let Ok(left) = left.await {
            headers.retain(|(name, _)| *name != BUDGET_REMAINING_HEADER);
            headers.extend(budget_headers(&left));
        }
        Ok(ChatReply {
            body: ChatBody::Complete(resp),
            headers,
        })
    }

    /// Opens the upstream stream and the relay that settles it; `settled` learns what is left
    /// once it has.
    async fn relay(
        &self,
        out: Outgoing,
        sent: impl FnOnce(&ChatRequest),
        settled: Option<tokio::sync::oneshot::Sender<BudgetLeft>>,
    ) -> Result<(StreamRelay, Vec<(&'static str, String)>)> {
        let Outgoing {
            mut req,
            model,
            mut ledger,
            mut headers,
            cache,
            deadline,
            prompt_estimate,
            ..
        } = out;
        // Always ask upstream for usage; pass the usage chunk on only if the client asked.
        let client_wants_usage = req.wants_stream_usage();
        req.stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
        let upstream = tokio::time::timeout_at(deadline, model.provider.chat_stream(&req))
            .await
            .unwrap_or_else(|_| Err(outlived(&model)));
        let upstream = match upstream {
            Ok(s) => s,
            Err(e) => return Err(ledger.failed(e).await),
        };
        sent(&req);
        let prompt_estimate =
            prompt_estimate.unwrap_or_else(|| tokens::count_request(&model.upstream, &req));
        headers.extend(budget_headers(&ledger.reservation.left));
        let relay = StreamRelay {
            upstream,
            growth: Growth::of(&ledger.reservation, &model.upstream),
            ledger: Some(ledger),
            usage: None,
            prompt_estimate,
            completion_text: String::new(),
            finished: false,
            client_wants_usage,
            deadline,
            cache: cache.map(|plan| (plan, Collector::default())),
            settled,
        };
        Ok((relay, headers))
    }
}
